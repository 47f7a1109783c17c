"""One rule for "which op is attention" (bench/trackers/flops.py), used by the FLOP counter, the sequence
pipeline's FLOPs and the profiler's categories, so that FLOPs and the profile cannot disagree on a step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.core import steps
from bench.core.cases import Case
from bench.trackers import flops

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, kernel, batched", [
    ("aten::_scaled_dot_product_flash_attention", True, False),        # the profiler's naming
    ("aten._scaled_dot_product_efficient_attention.default", True, False),  # the FLOP counter's
    ("aten::_flash_attention_forward", True, False),
    ("aten.bmm", False, True), ("aten::baddbmm", False, True),
    ("aten::mm", False, False), ("aten.addmm", False, False), ("aten::matmul", False, False),
])
def test_the_rule_reads_both_namings(name, kernel, batched):
    assert flops.is_attention_kernel(name) is kernel and flops.is_batched_matmul(name) is batched


def test_the_profiler_and_the_sequence_flops_use_the_same_rule():
    from bench.core import sequence_metrics
    from bench.profile import attribution

    assert attribution.is_attention_kernel is flops.is_attention_kernel
    assert attribution.is_attention_module is flops.is_attention_module
    assert sequence_metrics.attention_flops_counted is flops.attention_flops_counted


def rule_copies(root: Path = REPO) -> list[str]:
    """Places outside trackers/flops.py that spell a fused attention op's marker: a second rule. (``bmm`` is
    left out: roofline.py lists it among the matmuls, which it is; it is attention only inside an attention module.)"""
    found = []
    for path in sorted((root / "bench").rglob("*.py")):
        if path.relative_to(root).as_posix() == "bench/trackers/flops.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in flops.FUSED_ATTENTION_MARKERS:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.value!r}")
    return found


def test_no_second_rule_for_attention_ops():
    assert not rule_copies()


@pytest.mark.parametrize("mode, checkpointing", [("infer", False), ("train", False), ("train", True), ("embed", False)])
def test_eager_attention_counted_is_the_shapes_attention(mode, checkpointing):
    """Eager attention runs as bmm inside the attention modules: the rule counts exactly the analytic
    QK^T and PV FLOPs of the step (x3 trained, x4 with checkpointing's recompute), no more, no less."""
    case = Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode=mode, batch=2,
                checkpointing=checkpointing)
    scenario = steps.prepare(case, torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        scenario.eager_step()
    counted = flops.attention_flops_counted(counter.get_flop_counts(), scenario.model)
    assert counted == pytest.approx(flops.attention_flops(scenario.model, case.hw, case.batch, mode, checkpointing))


def test_a_batched_matmul_outside_attention_is_not_attention():
    """The sequence pipeline's LSTM head (a linear over (B, T, hidden)) runs a bmm: not attention."""
    counts = {"Global": {"aten.bmm": 10, "aten.addmm": 5}, "Pipe.lstm.head": {"aten.bmm": 10}}
    model = torch.nn.Sequential()
    assert flops.attention_flops_counted(counts, model) == 0
