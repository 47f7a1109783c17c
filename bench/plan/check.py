"""``plan-check``: the memory model's predicted step peak against the live-tensor peak of real CPU steps.

The grid (:func:`accuracy_grid`) is the acceptance's: presets x sizes x precisions x kernels x
checkpointing. Each configuration is predicted for the budget's card, then run for real at the
largest power of two the budget, the batch cap and the memory cap allow (``bench.plan.reference``
reads the live peak from the CPU allocator's events); :func:`check_table` prints both and the error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from bench.core.cases import Case
from bench.plan.budget import Budget
from bench.plan.defaults import ACCURACY_ATTENTION, ACCURACY_PRECISIONS, ACCURACY_SIZES, CHECK_BATCH_CAP, CHECK_MEMORY
from bench.plan.planner import config_label
from bench.core.memory_model import fit, largest_power_of_two
from bench.units import MIB, parse_bytes


@dataclass
class CheckRow:
    case: Case
    status: str                        # ok, does-not-fit
    batch: int = 0
    predicted_bytes: float = 0.0
    measured_bytes: float = 0.0
    fits_8gib: int = 0                 # the plan's predicted max batch for the budget (CPU semantics)
    seconds: float = 0.0

    @property
    def error(self) -> Optional[float]:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes if self.measured_bytes else None


def accuracy_grid(presets: Iterable[str], sizes: Iterable[str] = ACCURACY_SIZES,
                  precisions: Iterable[str] = ACCURACY_PRECISIONS, attention: Iterable[str] = ACCURACY_ATTENTION,
                  checkpointing: Iterable[bool] = (False, True), family: str = "transformer",
                  modes: Iterable[str] = ("train",)) -> list[Case]:
    return [Case(family=family, preset=p, size=s, precision=q, attention=a, checkpointing=c, mode=m, batch=1)
            for p in presets for s in sizes for q in precisions for a in attention for c in checkpointing for m in modes]


def check_case(case: Case, budget: Budget, batch_cap: int = CHECK_BATCH_CAP, memory_cap: int = parse_bytes(CHECK_MEMORY)) -> CheckRow:
    """Predict ``case``'s CPU step peak and measure it: at the largest power of two under the budget's
    maximum, ``batch_cap`` and ``memory_cap``."""
    from bench.plan.reference import measure_live_peak

    started = time.perf_counter()
    model = fit(case, "cpu")
    fits = model.max_batch(budget.live_limit)
    if fits < 1:
        return CheckRow(case, "does-not-fit", seconds=time.perf_counter() - started)
    batch = max(1, largest_power_of_two(min(fits, batch_cap, model.max_batch(memory_cap))))
    measured = measure_live_peak(case, batch)
    return CheckRow(case, "ok", batch, model.peak(batch), measured.peak_bytes, fits, time.perf_counter() - started)


def check_table(rows: list[CheckRow]) -> str:
    lines = ["| configuration | mode | max batch in budget (model) | checked at | predicted MiB | live peak MiB (profiler) | error | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {config_label(r.case)} | {r.case.mode} | 0 | – | – | – | does not fit | {r.seconds:.1f} |")
            continue
        lines.append(f"| {config_label(r.case)} | {r.case.mode} | {r.fits_8gib} | {r.batch} | {r.predicted_bytes / MIB:,.1f} | "
                     f"{r.measured_bytes / MIB:,.1f} | {100 * r.error:+.2f}% | {r.seconds:.1f} |")
    checked = [r for r in rows if r.error is not None]
    if checked:
        worst = max(checked, key=lambda r: abs(r.error))
        lines.append("")
        lines.append(f"worst error {100 * worst.error:+.2f}% ({config_label(worst.case)} at batch {worst.batch}); "
                     f"{len(checked)} checked, {len(rows) - len(checked)} do not fit; {sum(r.seconds for r in rows):.0f} s")
    return "\n".join(lines)


def run_checks(cases: list[Case], budget: Budget, batch_cap: int = CHECK_BATCH_CAP,
               memory_cap: int = parse_bytes(CHECK_MEMORY), log: Optional[Callable[[str], None]] = None) -> list[CheckRow]:
    """:func:`check_case` for every case, one progress line each (``log``)."""
    from bench.core.loop import Progress

    rows = []
    meter = Progress(len(cases))
    for case in cases:
        row = check_case(case, budget, batch_cap, memory_cap)
        rows.append(row)
        if log is not None:
            err = "does not fit" if row.error is None else f"{100 * row.error:+.2f}%"
            log(meter.step(f"{config_label(case)}: batch {row.batch}, {err} ({row.seconds:.1f}s)"))
    return rows
