"""The case selection every entry point shares (pytest and ``python -m bench``): a named matrix,
narrowed by axis options, expanded for one device. (The batch-size *planner* is ``bench/plan``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.core.cases import AXES, Case, Matrix, expand, load_matrix, parse_axis_values
from bench.core.commandline import AXIS_HELP
from bench.core.measure import Settings
from bench.trackers.device import DeviceFacts, device_facts, resolve_device

assert set(AXIS_HELP) == set(AXES)


@dataclass
class Selection:
    """The cases one command runs, on which device, with which timing settings."""

    device: torch.device
    facts: DeviceFacts
    matrix: Matrix
    cases: list[Case]
    settings: Settings
    shard: str = ""  # "K/N (n of m cases)" when --shard took one part of the selection (bench/scale/shard.py)


def make_selection(matrix: str, get_axis: Callable[[str], Optional[str]], device: str = "auto",
                   min_time_s: Optional[float] = None, keyword: Optional[str] = None, shard: Optional[str] = None,
                   shard_option: str = "--shard") -> Selection:
    """Resolve the device, load and narrow the matrix, and expand it (then take part K/N of it with
    ``shard``). Raises ValueError on bad input."""
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
        if not 0 <= min_time_s < math.inf:  # also refuses nan
            raise ValueError(f"--min-time: bad minimum time {min_time_s}: expected a finite number of seconds >= 0, e.g. 1.0")
        settings.min_time_s = min_time_s
    if keyword:
        cases = [c for c in cases if keyword in c.id]
        if not cases:
            raise ValueError(f"no case of matrix {loaded.name!r} matches the selection")
    part = ""
    if shard:
        from bench.scale.shard import take_shard

        whole = len(cases)
        cases = take_shard(cases, shard, shard_option)
        part = f"{shard.strip()} ({len(cases)} of {whole} cases)"
    return Selection(torch_device, facts, loaded, cases, settings, part)


def selection_from_args(args) -> Selection:
    """The selection a command's parsed ``add_matrix_args`` options (and ``-k``, ``--min-time``, ``--shard``) make."""
    selection = make_selection(args.matrix, lambda axis: getattr(args, axis), args.device, getattr(args, "min_time", None),
                               getattr(args, "keyword", None), getattr(args, "shard", None))
    if not selection.cases:
        raise ValueError(f"no case of matrix {selection.matrix.name!r} matches the selection")
    return selection


def case_listing(cases: list[Case]) -> str:
    """One line per case, with the reason a case would be recorded as unsupported."""
    lines = [case.id + (f"    [skip: {case.skip}]" if case.skip else "") for case in cases]
    lines.append(f"{len(cases)} cases, {sum(1 for c in cases if c.skip)} to be recorded as unsupported")
    return "\n".join(lines)
