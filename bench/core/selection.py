"""The case selection every entry point shares (pytest and ``python -m bench``): a named matrix,
narrowed by axis options, expanded for one device. (The batch-size *planner* is ``bench/plan``.)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Optional

from bench.core.cases import AXES, Case, Matrix, expand, load_matrix, parse_axis_values
from bench.core.commandline import AXIS_HELP

if TYPE_CHECKING:  # torch is imported only by the commands that measure: ``--list`` stays fast on a CPU machine
    import torch

    from bench.core.measure import Settings
    from bench.trackers.device import DeviceFacts

assert set(AXIS_HELP) == set(AXES)


@dataclass
class Selection:
    """The cases one command runs, on which device, with which timing settings."""

    device: torch.device
    facts: DeviceFacts
    matrix: Matrix
    cases: list[Case]
    settings: Settings
    shard: str = ""  # "K/N (n of m cases)" when --shard took one part of the selection (bench/core/shard.py)
    whole: list[Case] = field(default_factory=list)  # the selection before --shard (recorded for `merge`)


def make_selection(matrix: str, get_axis: Callable[[str], Optional[str]], device: str = "auto",
                   min_time_s: Optional[float] = None, keyword: Optional[str] = None, shard: Optional[str] = None,
                   shard_option: str = "--shard", processes: Optional[int] = None) -> Selection:
    """Resolve the device, load and narrow the matrix, and expand it (then take part K/N of it with
    ``shard``). Raises ValueError on bad input."""
    check_selection_args(matrix, get_axis, min_time_s, processes)  # a typo answered at once, before torch loads
    from bench.core.measure import Settings
    from bench.trackers.device import device_facts, resolve_device

    torch_device = resolve_device(device)
    facts = device_facts(torch_device)
    loaded, cases, part, whole = _cases(matrix, get_axis, facts, keyword, shard, shard_option)
    settings = Settings.from_dict(loaded.timing)
    if check_min_time(min_time_s) is not None:
        settings.min_time_s = min_time_s
    if check_processes(processes) is not None:
        settings.processes = processes
    return Selection(torch_device, facts, loaded, cases, settings, part, whole)


def check_selection_args(matrix: str, get_axis: Callable[[str], Optional[str]], min_time_s: Optional[float] = None,
                         processes: Optional[int] = None) -> None:
    """The checks of a selection's options that need no device, hence no torch: the matrix exists and
    parses, every axis value parses, ``--min-time`` and ``--processes`` are in range. Raises ValueError
    naming the bad value, so ``--matrix nosuch`` or ``--sizes 201x`` is refused in a fraction of a second
    instead of after torch's import (seconds on a busy CPU)."""
    loaded = load_matrix(matrix)  # "auto" names a matrix on every device; the device's own choice is loaded later
    overrides = {axis: parse_axis_values(axis, get_axis(axis)) for axis in AXES if get_axis(axis)}
    expand(loaded, overrides)  # builds every Case, which checks each value (precision, mode, ...); no device: no torch
    check_min_time(min_time_s)
    check_processes(processes)


def check_processes(processes: Optional[int], option: str = "--processes") -> Optional[int]:
    if processes is not None and (isinstance(processes, bool) or not isinstance(processes, int) or processes < 1):
        raise ValueError(f"{option}: bad number of processes {processes!r}: expected a whole number >= 1, e.g. 3")
    return processes


def check_min_time(min_time_s: Optional[float]) -> Optional[float]:
    if min_time_s is not None and not 0 <= min_time_s < math.inf:  # also refuses nan
        raise ValueError(f"--min-time: bad minimum time {min_time_s}: expected a finite number of seconds >= 0, e.g. 1.0")
    return min_time_s


def _cases(matrix: str, get_axis: Callable[[str], Optional[str]], facts, keyword: Optional[str], shard: Optional[str],
           shard_option: str) -> tuple[Matrix, list[Case], str, list[Case]]:
    """The matrix loaded for ``facts.type``, narrowed by the axis options, expanded (each case's skip
    reason on that device), filtered by ``keyword`` and cut to part ``shard``; last, the cases before the cut."""
    loaded = load_matrix(matrix, facts.type)
    overrides = {}
    for axis in AXES:
        text = get_axis(axis)
        if text:
            overrides[axis] = parse_axis_values(axis, text)
    cases = expand(loaded, overrides, facts)
    if keyword:
        cases = [c for c in cases if keyword in c.id]
        if not cases:
            raise ValueError(f"no case of matrix {loaded.name!r} matches the selection")
    part, whole = "", list(cases)
    if shard is not None:  # --shard "" is a bad shard, refused by take_shard, never "every case"
        from bench.core.shard import take_shard

        cases = take_shard(cases, shard, shard_option)
        part = f"{shard.strip()} ({len(cases)} of {len(whole)} cases)"
    return loaded, cases, part, whole


def check_args(args) -> None:
    """:func:`check_selection_args` on a command's parsed ``add_matrix_args`` options (no torch)."""
    check_selection_args(args.matrix, lambda axis: getattr(args, axis), getattr(args, "min_time", None),
                         getattr(args, "processes", None))


def selection_from_args(args) -> Selection:
    """The selection a command's parsed ``add_matrix_args`` options (and ``-k``, ``--min-time``, ``--shard``) make."""
    selection = make_selection(args.matrix, lambda axis: getattr(args, axis), args.device, getattr(args, "min_time", None),
                               getattr(args, "keyword", None), getattr(args, "shard", None),
                               processes=getattr(args, "processes", None))
    if not selection.cases:
        raise ValueError(f"no case of matrix {selection.matrix.name!r} matches the selection")
    return selection


def listed_cases(args) -> list[Case]:
    """The cases ``--list`` shows: those of :func:`selection_from_args`, found without importing torch
    when the machine plainly has no NVIDIA GPU (Linux with no NVIDIA driver loaded) and the device is
    ``auto`` or ``cpu``; anywhere else through the full device probe, so the skip reasons are the device's."""
    check_min_time(getattr(args, "min_time", None))  # refused as a run would refuse them
    check_processes(getattr(args, "processes", None))
    if args.device in ("auto", "cpu") and sys.platform.startswith("linux") and not Path("/proc/driver/nvidia").exists():
        cpu = SimpleNamespace(type="cpu", capability="")  # all that expand's skip reasons read of a CPU
        matrix, cases, _, _ = _cases(args.matrix, lambda axis: getattr(args, axis), cpu, getattr(args, "keyword", None),
                                  getattr(args, "shard", None), "--shard")
        if not cases:
            raise ValueError(f"no case of matrix {matrix.name!r} matches the selection")
        return cases
    return selection_from_args(args).cases


def case_listing(cases: list[Case]) -> str:
    """One line per case, with the reason a case would be recorded as unsupported."""
    lines = [case.id + (f"    [skip: {case.skip}]" if case.skip else "") for case in cases]
    lines.append(f"{len(cases)} cases, {sum(1 for c in cases if c.skip)} to be recorded as unsupported")
    return "\n".join(lines)


def narrow_cases(cases: list[Case], get_axis: Callable[[str], Optional[str]], matrix: str = "the matrix") -> list[Case]:
    """Keep the cases whose value on every given axis is one of the option's values: the options narrow
    the matrix (a group never gains a size or latent it does not define). A value no case has is a
    ValueError naming the values the matrix has."""
    for axis, field in AXES.items():
        text = get_axis(axis)
        if not text:
            continue
        wanted = parse_axis_values(axis, text)
        have = list(dict.fromkeys(getattr(c, field) for c in cases))
        unknown = [v for v in wanted if v not in have]
        if unknown:
            raise ValueError(f"--{axis}: {unknown[0]} is not in {matrix} (it has: {', '.join(map(str, have))})")
        cases = [c for c in cases if getattr(c, field) in wanted]
    return cases
