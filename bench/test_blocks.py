"""Our transformer Block against torch.nn.TransformerEncoderLayer, same shape, CPU fp32.

Both are pre-LN blocks of the same width, heads and MLP width (GELU, no dropout), so they hold
the same parameters and do the same arithmetic; the comparison shows what our layout costs
against PyTorch's own (which has a fused inference fast path).

    pytest bench/test_blocks.py          # pytest-benchmark tables, one group per case and pass
    python bench/test_blocks.py          # ours / PyTorch's median time per case (torch.utils.benchmark)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from ae_models.layers import Block


@dataclass(frozen=True)
class Case:
    name: str
    dim: int
    heads: int
    mlp_ratio: float
    tokens: int
    batch: int = 8

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)


CASES = (
    Case("small-800tok", dim=256, heads=4, mlp_ratio=2.0, tokens=800),  # 1280x152 at patch 16: 80x10
    Case("small-169tok", dim=256, heads=4, mlp_ratio=2.0, tokens=169),  # 201x201 at patch 16: 13x13
)
IMPLS = ("ours", "pytorch")


class TorchBlock(nn.Module):
    """``nn.TransformerEncoderLayer`` with our Block's call signature (``x -> (x, None)``)."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(case.dim, case.heads, dim_feedforward=case.hidden, dropout=0.0,
                                                activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor):
        return self.layer(x), None


def make_block(impl: str, case: Case) -> nn.Module:
    if impl == "ours":
        return Block(case.dim, case.heads, case.mlp_ratio, dropout=0.0, attention="auto")
    if impl == "pytorch":
        return TorchBlock(case)
    raise ValueError(f"unknown block implementation {impl!r}; choose one of {', '.join(IMPLS)}")


def make_input(case: Case, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(case.batch, case.tokens, case.dim, requires_grad=requires_grad)


def forward_fn(block: nn.Module, x: torch.Tensor):
    block.eval()

    def run():
        with torch.inference_mode():
            return block(x)[0]

    return run


def forward_backward_fn(block: nn.Module, x: torch.Tensor):
    block.train()  # dropout is 0: train mode only keeps PyTorch off its inference fast path

    def run():
        block.zero_grad(set_to_none=True)
        x.grad = None
        block(x)[0].sum().backward()

    return run


def _cases_and_impls(kind: str):
    return [pytest.param(case, impl, id=f"{case.name}-{impl}", marks=pytest.mark.benchmark(group=f"block-{kind}-{case.name}"))
            for case in CASES for impl in IMPLS]


def test_blocks_have_the_same_parameter_count():
    for case in CASES:
        counts = {impl: sum(p.numel() for p in make_block(impl, case).parameters()) for impl in IMPLS}
        assert counts["ours"] == counts["pytorch"], (case.name, counts)


@pytest.mark.parametrize("case, impl", _cases_and_impls("fwd"))
def test_block_forward(benchmark, case, impl):
    torch.manual_seed(0)
    block, x = make_block(impl, case), make_input(case)
    benchmark.extra_info.update(impl=impl, tokens=case.tokens, dim=case.dim, heads=case.heads, batch=case.batch)
    out = benchmark.pedantic(forward_fn(block, x), rounds=10, warmup_rounds=2)
    assert out.shape == x.shape


@pytest.mark.parametrize("case, impl", _cases_and_impls("fwd-bwd"))
def test_block_forward_backward(benchmark, case, impl):
    torch.manual_seed(0)
    block, x = make_block(impl, case), make_input(case, requires_grad=True)
    benchmark.extra_info.update(impl=impl, tokens=case.tokens, dim=case.dim, heads=case.heads, batch=case.batch)
    benchmark.pedantic(forward_backward_fn(block, x), rounds=6, warmup_rounds=1)
    assert x.grad is not None and x.grad.shape == x.shape


def compare(min_run_time: float = 1.0) -> list[tuple[str, str, float, float, float]]:
    """``(case, pass, ours_s, pytorch_s, ours / pytorch)`` medians, timed with torch.utils.benchmark."""
    from torch.utils.benchmark import Timer

    rows = []
    for case in CASES:
        for kind, make_fn, grad in (("fwd", forward_fn, False), ("fwd-bwd", forward_backward_fn, True)):
            medians = {}
            for impl in IMPLS:
                torch.manual_seed(0)
                fn = make_fn(make_block(impl, case), make_input(case, requires_grad=grad))
                fn()  # warm-up
                timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(),
                              label=f"block-{kind}-{case.name}", sub_label=impl)
                medians[impl] = timer.blocked_autorange(min_run_time=min_run_time).median
            rows.append((case.name, kind, medians["ours"], medians["pytorch"], medians["ours"] / medians["pytorch"]))
    return rows


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, batch {CASES[0].batch}")
    print(f"{'case':<14} {'pass':<8} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10}")
    for name, kind, ours, theirs, ratio in compare():
        print(f"{name:<14} {kind:<8} {ours * 1e3:9.2f} {theirs * 1e3:9.2f} {ratio:10.2f}")
