"""The options every entry point shares (pytest and ``python -m bench``), defined once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .cases import AXES, Case, Matrix, expand, load_matrix, parse_axis_values
from .device import DeviceFacts, device_facts, resolve_device
from .measure import Settings

# axis -> help text; the option is --ae-<axis> under pytest and --<axis> on the command line
AXIS_HELP = {
    "families": "model families, comma-separated: transformer, transformer-flat, cnn, or package.module:factory",
    "presets": "presets: tiny, small, medium, large, xlarge",
    "sizes": "input sizes as WxH (1280x152 is 1280 wide, 152 high), comma-separated",
    "latents": "latent dimensions 128..8192 (0 = the preset's default)",
    "tokenizers": "transformer tokenizers: patch, flat",
    "precisions": "precisions: fp32, tf32, amp-fp16, amp-bf16, fp16, bf16",
    "attention": "attention kernels: flash, mem-efficient, cudnn, math, eager, auto",
    "checkpointing": "gradient checkpointing: on, off (or both: on,off)",
    "compile": "torch.compile modes: off, default, reduce-overhead, max-autotune",
    "modes": "what is timed: infer (forward), train (forward+backward+AdamW), embed (Embedding)",
    "batch": "batch sizes in images, comma-separated",
}
assert set(AXIS_HELP) == set(AXES)

MATRIX_HELP = "named matrix (auto, smoke, quick, default, example) or a .toml path; auto = default on a GPU, quick on a CPU"
RESULTS_HELP = "folder that receives one sub-folder per run (results.csv, samples.jsonl, meta.json) [default: results]"
DEVICE_HELP = "device to measure on: auto, cpu, cuda, cuda:N [default: auto]"
MIN_TIME_HELP = "override the matrix's minimum timed seconds per case"


@dataclass
class Plan:
    device: torch.device
    facts: DeviceFacts
    matrix: Matrix
    cases: list[Case]
    settings: Settings


def make_plan(matrix: str, get_axis: Callable[[str], Optional[str]], device: str = "auto",
              min_time_s: Optional[float] = None) -> Plan:
    """Resolve the device, load and narrow the matrix, and expand it. Raises ValueError on bad input."""
    torch_device = resolve_device(device)
    facts = device_facts(torch_device)
    loaded = load_matrix(matrix, torch_device.type)
    overrides = {}
    for axis in AXES:
        text = get_axis(axis)
        if text:
            overrides[axis] = parse_axis_values(axis, text)
    cases = expand(loaded, overrides, facts)
    settings = Settings.from_dict(loaded.timing)
    if min_time_s is not None:
        if min_time_s < 0:
            raise ValueError(f"bad minimum time {min_time_s}: expected seconds >= 0")
        settings.min_time_s = min_time_s
    return Plan(torch_device, facts, loaded, cases, settings)


def plan_from_args(args) -> Plan:
    """The plan a command's parsed ``add_matrix_args`` options (and ``-k``, ``--min-time``) select."""
    plan = make_plan(args.matrix, lambda axis: getattr(args, axis), args.device, getattr(args, "min_time", None))
    keyword = getattr(args, "keyword", None)
    plan.cases = [c for c in plan.cases if not keyword or keyword in c.id]
    if not plan.cases:
        raise ValueError(f"no case of matrix {plan.matrix.name!r} matches the selection")
    return plan


def case_listing(cases: list[Case]) -> str:
    """One line per case, with the reason a case would be recorded as unsupported."""
    lines = [case.id + (f"    [skip: {case.skip}]" if case.skip else "") for case in cases]
    lines.append(f"{len(cases)} cases, {sum(1 for c in cases if c.skip)} to be recorded as unsupported")
    return "\n".join(lines)
