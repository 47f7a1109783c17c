"""The largest batch that fits, searched on a GPU: double from 1, then bisect; and the recommended batch.

A trial (:func:`cuda_trial`) runs one batch size in a clean state through the case runner
(``bench.core.runner``) and reports its allocator peaks or its OOM; :func:`search_max_batch` needs
O(log n) of them. On a GPU larger than the budget's card, :func:`held_to_budget` caps the allocator
at what the card would leave it (``set_per_process_memory_fraction``), so a trial OOMs where the
card would. Recommended batch: measured, the smallest batch whose throughput is within 5% of the
best batch that fits (a larger batch costs memory for nothing); predicted, the largest power of two
under the predicted maximum (a memory-only choice: measure on the GPU for throughput).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.core.cases import Case
from bench.core.runner import OOM, CaseRun, run_case
from bench.plan.budget import Budget
from bench.plan.defaults import DEFAULT_MAX_BATCH
from bench.plan.predictor import largest_power_of_two
from bench.units import MIB, format_bytes

RECOMMEND_WITHIN = 0.05         # recommended: smallest batch within 5% of the best throughput


@dataclass
class Trial:
    batch: int
    status: str                  # ok, oom, over-budget, error
    reserved_bytes: float = 0.0
    allocated_bytes: float = 0.0
    reason: str = ""


@dataclass
class SearchResult:
    max_batch: int               # 0: not even one image fits
    trials: list[Trial]
    reason: str = ""

    def trial(self, batch: int) -> Optional[Trial]:
        return next((t for t in self.trials if t.batch == batch), None)


class SearchError(RuntimeError):
    """A trial failed for a reason other than memory: the search cannot go on."""


class TimingError(RuntimeError):
    """A batch that fit the search could not be timed."""


def search_max_batch(run_trial: Callable[[int], Trial], budget: Budget, cap: int = DEFAULT_MAX_BATCH) -> SearchResult:
    """Largest batch whose trial runs and fits ``budget``: double from 1, then bisect.

    ``run_trial(b)`` runs one batch size in a clean state and reports its peaks or its OOM. A trial
    that ran but whose reserved peak is over ``budget.usable`` counts as not fitting
    (``over-budget``): the margin is part of the budget.
    """
    if cap < 1:
        raise ValueError(f"bad batch cap {cap}: expected >= 1")
    trials: list[Trial] = []

    def fits(batch: int) -> bool:
        trial = run_trial(batch)
        if trial.status == "ok" and not budget.fits(trial.reserved_bytes):
            trial = dataclasses.replace(trial, status="over-budget",
                                        reason=f"reserved peak {trial.reserved_bytes / MIB:.0f} MiB > {budget.usable / MIB:.0f} MiB usable")
        trials.append(trial)
        if trial.status == "error":
            raise SearchError(f"batch {batch}: {trial.reason}")
        return trial.status == "ok"

    if not fits(1):
        first = trials[0]
        need = f"{first.reserved_bytes / MIB:.0f} MiB reserved" if first.reserved_bytes else "more than the allocator may reserve"
        return SearchResult(0, trials, f"does not fit: even a batch of 1 needs {need} ({first.status}: {first.reason}); "
                                       f"the budget leaves {budget.usable / MIB:.0f} MiB to the allocator "
                                       f"({format_bytes(budget.card_bytes)} card - context - display reserve - margin)")
    good, bad = 1, None
    batch = 2
    while batch <= cap:
        if fits(batch):
            good = batch
            batch *= 2
        else:
            bad = batch
            break
    if bad is None:
        if good < cap and fits(cap):
            good = cap
        elif good < cap:
            bad = cap
        if bad is None:
            return SearchResult(good, trials, f"capped: batch {cap} still fits (the search stops there)")
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return SearchResult(good, trials)


def recommend_measured(throughput: dict[int, float], within: float = RECOMMEND_WITHIN) -> int:
    """The smallest batch whose images/s is within ``within`` of the best."""
    if not throughput:
        raise ValueError("no throughput measured to recommend from")
    best = max(throughput.values())
    return min(b for b, ips in throughput.items() if ips >= (1 - within) * best)


def recommend_predicted(max_batch: int) -> int:
    """Predicted only: the largest power of two at or under the predicted maximum."""
    return largest_power_of_two(max_batch)


# -- CUDA: measured search, emulating a smaller card on a larger one --------------------------

def cuda_trial(case: Case, device: torch.device, batch: int, steps: int = 3) -> Trial:
    """One batch size in a clean state: fresh model and optimizer, ``steps`` steps, peaks recorded."""
    from bench.core.steps import release_memory

    release_memory(device)
    peaks = [0.0, 0.0]  # reserved, allocated: read before the runner releases the memory (and resets them)

    def body(run: CaseRun) -> None:
        try:
            scenario = run.prepare(dataclasses.replace(case, batch=batch, skip=None))
            for _ in range(steps):
                scenario.step()
            torch.cuda.synchronize(device)
        finally:
            peaks[:] = [torch.cuda.max_memory_reserved(device), torch.cuda.max_memory_allocated(device)]

    outcome = run_case(case, device, body, skip="")
    if outcome.ok:
        return Trial(batch, "ok", *peaks)
    if outcome.status == OOM:  # an OOM is an answer; anything else stops the search
        return Trial(batch, "oom", *peaks, outcome.reason)
    return Trial(batch, "error", peaks[0], 0.0, outcome.reason)


def cuda_throughput(case: Case, device: torch.device, batch: int, min_time_s: float = 0.5) -> float:
    """Images/s of ``case`` at ``batch``: warm-up, then CUDA-event timed steps (median). Raises :class:`TimingError`."""
    from bench.core.steps import timed_first_step
    from bench.trackers.latency import plan_iterations, summarize, time_steps

    found: dict[str, float] = {}

    def body(run: CaseRun) -> None:
        scenario = run.prepare(dataclasses.replace(case, batch=batch, skip=None))
        step_s = min(timed_first_step(scenario) for _ in range(3))
        samples, _ = time_steps(scenario.step, device, plan_iterations(step_s, 5, 50, min_time_s))
        found["images_per_s"] = batch / (summarize(samples).median_ms / 1e3)

    outcome = run_case(case, device, body, skip="")
    if not outcome.ok:
        raise TimingError(f"{outcome.status}: {outcome.reason}")
    return found["images_per_s"]


@contextlib.contextmanager
def held_to_budget(device: torch.device, budget: Budget):
    """Emulate the budget's card on a larger GPU: the allocator may reserve no more than the card would leave it."""
    total = torch.cuda.get_device_properties(device).total_memory
    if budget.allocator_limit <= 0:
        raise ValueError(f"the budget {format_bytes(budget.card_bytes)} is no larger than the context and display reserve")
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget.allocator_limit / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
