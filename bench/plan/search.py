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
from bench.core.memory_model import largest_power_of_two
from bench.units import MIB, format_bytes

RECOMMEND_WITHIN = 0.05         # recommended: smallest batch within 5% of the best throughput


@dataclass
class Trial:
    batch: int
    status: str                  # ok, oom, over-budget, error
    reserved_bytes: float = 0.0
    allocated_bytes: float = 0.0
    reason: str = ""
    context_bytes: Optional[float] = None  # used - reserved after the trial's steps (context, kernels, workspaces)
    context_source: str = ""


@dataclass
class SearchResult:
    max_batch: int               # 0: not even one image fits
    trials: list[Trial]
    reason: str = ""
    budget: Optional[Budget] = None  # the budget judged with: its context the largest any trial measured

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
    judged = [budget]  # the budget so far: its context grows when a trial measures a larger one

    def over(trial: Trial) -> Trial:
        usable = judged[0].usable
        return dataclasses.replace(trial, status="over-budget",
                                   reason=f"reserved peak {trial.reserved_bytes / MIB:.0f} MiB > {usable / MIB:.0f} MiB usable")

    def fits(batch: int) -> bool:
        if any(t.batch == batch for t in trials):  # tried before a context grew: judged again, not run again
            return _still_fits(trials, batch, judged[0])
        trial = run_trial(batch)
        judged[0] = with_trial_context(judged[0], trial)
        if trial.status == "ok" and not judged[0].fits(trial.reserved_bytes):
            trial = over(trial)
        trials.append(trial)
        if trial.status == "error":
            raise SearchError(f"batch {batch}: {trial.reason}")
        return trial.status == "ok"

    def result(max_batch: int, reason: str = "") -> SearchResult:
        # a context measured late may turn a batch that fit earlier into one over the budget: judge again
        for i, trial in enumerate(trials):
            if trial.status == "ok" and not judged[0].fits(trial.reserved_bytes):
                trials[i] = over(trial)
        return SearchResult(max_batch, trials, reason, judged[0])

    if not fits(1):
        first = trials[0]
        need = f"{first.reserved_bytes / MIB:.0f} MiB reserved" if first.reserved_bytes else "more than the allocator may reserve"
        budget = judged[0]
        return result(0, f"does not fit: even a batch of 1 needs {need} ({first.status}: {first.reason}); "
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
        if bad is None and _still_fits(trials, good, judged[0]):
            return result(good, f"capped: batch {cap} still fits (the search stops there)")
        bad = bad if bad is not None else good
    while True:
        while bad - good > 1:
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
        if _still_fits(trials, good, judged[0]):
            return result(good)
        # the context grew after ``good`` was judged: bisect below it again, against the larger context
        bad = good
        good = max((t.batch for t in trials if t.batch < bad and _still_fits(trials, t.batch, judged[0])), default=0)
        if good == 0:
            return result(0, f"does not fit: with the CUDA context measured after the steps "
                             f"({judged[0].context_bytes / MIB:.0f} MiB) even a batch of 1 is over the "
                             f"{judged[0].usable / MIB:.0f} MiB the allocator may reserve")


def _still_fits(trials: list[Trial], batch: int, budget: Budget) -> bool:
    """Whether the latest trial of ``batch`` ran and fits ``budget`` (whose context may have grown since)."""
    found = [t for t in trials if t.batch == batch]
    return bool(found) and found[-1].status == "ok" and budget.fits(found[-1].reserved_bytes)


def with_trial_context(budget: Budget, trial: Trial) -> Budget:
    """``budget`` with its context raised to the trial's, when the trial measured a larger one.

    With lazy module loading the kernels a step needs (cuDNN, bf16 cuBLASLt, attention) load when
    first run, outside the allocator: a context taken once, after one fp32 matmul, leaves them out.
    """
    if trial.context_bytes is None or trial.context_bytes <= budget.context_bytes:
        return budget
    source = (f"{trial.context_source or 'measured'}; the largest after any trial's steps "
              "(more than the first estimate, taken after one fp32 matmul)")
    return dataclasses.replace(budget, context_bytes=int(trial.context_bytes), context_source=source)


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

    from bench.plan.budget import context_after_steps
    from bench.trackers.device import cuda_scope

    release_memory(device)
    peaks = [0.0, 0.0]  # reserved, allocated: read before the runner releases the memory (and resets them)
    context: list = [None, ""]  # bytes, how: the context as the trial's steps left it (kernels loaded lazily included)

    def body(run: CaseRun) -> None:
        try:
            scenario = run.prepare(dataclasses.replace(case, batch=batch, skip=None))
            for _ in range(steps):
                scenario.step()
            torch.cuda.synchronize(device)
        finally:
            peaks[:] = [torch.cuda.max_memory_reserved(device), torch.cuda.max_memory_allocated(device)]
            try:
                context[:] = context_after_steps(device)
            except Exception as err:  # noqa: BLE001 - a context that cannot be read leaves the first estimate
                context[:] = [None, f"not measured: {type(err).__name__}: {err}"]

    with cuda_scope(device):
        outcome = run_case(case, device, body, skip="")
    if outcome.ok:
        return Trial(batch, "ok", *peaks, context_bytes=context[0], context_source=context[1])
    if outcome.status == OOM:  # an OOM is an answer; anything else stops the search
        return Trial(batch, "oom", *peaks, outcome.reason, context[0], context[1])
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

    from bench.trackers.device import cuda_scope

    with cuda_scope(device):
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
