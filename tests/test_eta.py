"""The progress line's estimate of what is left (bench/core/loop.py Progress, bench/core/cost.py):
each remaining case's expected cost at the rates the finished cases took, so a matrix that runs its
cheap cases first no longer makes the estimate too low throughout.

Every sequence here is played on a fake clock: the durations are given, nothing is timed.
"""

from __future__ import annotations

import csv
import random
import statistics
from datetime import datetime
from pathlib import Path

import pytest

from bench.core.cases import Case, expand, load_matrix
from bench.core.cost import MIN_CASES_TO_FIT, case_cost, case_cost_parts, eta_seconds
from bench.core.loop import Progress

REPO = Path(__file__).resolve().parents[1]
REFERENCE_RUN = REPO / "results" / "20261130-000938-cpu-2c-intel-r-xeon-r-processor"  # committed, named


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def predicted_totals(cases: list[Case], seconds: list[float], with_costs: bool = True) -> list[float]:
    """After each case but the last: elapsed + the meter's estimate of what is left (what a user reads
    as the run's total). ``with_costs`` False: the meter without the cases (the mean case so far)."""
    clock = FakeClock()
    meter = Progress(len(cases), cases if with_costs else None, clock=clock)
    totals = []
    for case, took in zip(cases[:-1], seconds):
        clock.now += took
        meter.step(case.id, case if with_costs else None)
        totals.append(clock.now + meter.eta(clock.now))
    return totals


def cheap_first() -> list[Case]:
    """The quick matrix as a run that measures its cheap cases first would."""
    return sorted(expand(load_matrix("quick")), key=lambda c: (case_cost(c), c.key))


def test_durations_proportional_to_the_cost_are_predicted_exactly_from_the_first_case():
    cases = cheap_first()
    seconds = [0.7 * case_cost(c) for c in cases]  # a machine's own rate, unknown to the meter
    actual = sum(seconds)
    assert all(t == pytest.approx(actual, rel=1e-9) for t in predicted_totals(cases, seconds))
    # the mean case so far, on the same sequence: too low at every case
    assert all(t < 0.9 * actual for t in predicted_totals(cases, seconds, with_costs=False)[: len(cases) // 2])


def test_a_fixed_part_and_a_work_part_at_their_own_rates_are_found_from_three_cases_on():
    """A quiet machine: every case costs ~2 s whatever its size, plus its work at a lower rate."""
    cases = cheap_first()
    seconds = [2.0 * f + 0.4 * w for f, w in map(case_cost_parts, cases)]
    actual = sum(seconds)
    totals = predicted_totals(cases, seconds)
    assert all(t == pytest.approx(actual, rel=1e-9) for t in totals[MIN_CASES_TO_FIT - 1:])
    old = predicted_totals(cases, seconds, with_costs=False)
    assert sum(t < actual for t in old) == len(old)  # the scenario of the complaint: always too low


def test_noisy_durations_are_not_under_estimated_systematically():
    """Each case's time off its expectation by an independent factor (lognormal, sigma 0.3): the
    estimate's median error over the run stays near zero, where the mean case so far is far too low."""
    cases = cheap_first()
    rng = random.Random(0)
    seconds = [(1.5 * f + 3.0 * w) * rng.lognormvariate(0.0, 0.3) for f, w in map(case_cost_parts, cases)]
    actual = sum(seconds)
    new = statistics.median(t / actual - 1 for t in predicted_totals(cases, seconds))
    old = statistics.median(t / actual - 1 for t in predicted_totals(cases, seconds, with_costs=False))
    assert abs(new) < 0.15 and old < -0.3, (new, old)


def test_skipped_cases_count_for_nothing():
    cases = cheap_first()[:6]
    skipped = [Case(**{**{k: getattr(c, k) for k in Case.__dataclass_fields__ if k != "skip"}, "batch": c.batch + 100},
                    skip="not on this device") for c in cases[:3]]
    clock = FakeClock()
    meter = Progress(9, skipped + cases, clock=clock)
    for case in skipped:
        meter.step(case.id, case)  # recorded at once, no time
    for case in cases[:-1]:
        clock.now += 0.5 * case_cost(case)
        meter.step(case.id, case)
    assert meter.eta(clock.now) == pytest.approx(0.5 * case_cost(cases[-1]))


def test_before_any_case_or_without_costs_the_estimate_is_the_plain_one():
    assert eta_seconds([], [], (10.0, 10.0)) == 0.0
    clock = FakeClock()
    meter = Progress(4, clock=clock)
    clock.now = 6.0
    meter.step("a")
    assert meter.eta(6.0) == pytest.approx(18.0)  # 6 s a case x 3 left


def reference_sequence() -> tuple[list[Case], list[float]]:
    """The committed CPU reference run's cases in its order, and the seconds between its rows' timestamps
    (the first from the run id's start time; both to the second)."""
    rows = list(csv.DictReader((REFERENCE_RUN / "results.csv").open()))
    start = datetime.strptime(REFERENCE_RUN.name[:15], "%Y%m%d-%H%M%S").timestamp()
    ends = [start] + [datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows]
    cases = [Case(family=r["family"], preset=r["preset"], size=r["size"], precision=r["precision"],
                  attention=r["attention"], checkpointing=r["checkpointing"] == "True", compile=r["compile"],
                  mode=r["mode"], batch=int(r["batch"])) for r in rows]
    return cases, [b - a for a, b in zip(ends, ends[1:])]


def test_on_the_reference_runs_own_times_the_estimate_errs_less_than_the_mean_case(capsys):
    """A real sequence (73 cases, 2 quiet cores), replayed. Prints the predicted totals at a few cases
    (``pytest tests/test_eta.py -k reference -s``)."""
    cases, seconds = reference_sequence()
    actual = sum(seconds)
    new, old = predicted_totals(cases, seconds), predicted_totals(cases, seconds, with_costs=False)
    with capsys.disabled():
        print(f"\nreplay of {REFERENCE_RUN.name}: actual {actual:.0f} s")
        for k in (1, 5, 10, 30, 50, 70):
            print(f"  after case {k:2d}/{len(cases)}: predicted total {old[k - 1]:5.0f} s (mean case so far), "
                  f"{new[k - 1]:5.0f} s (cost estimate)")
    median_new = statistics.median(abs(t / actual - 1) for t in new)
    median_old = statistics.median(abs(t / actual - 1) for t in old)
    assert median_new < median_old, (median_new, median_old)


def test_a_rate_is_never_negative():
    """Cases whose time grows with their work by more than their count explains (0.5 s a unit of work, less
    0.3 s a case): the unconstrained fit's negative rate per case would make many cheap cases left take
    less than none. The fit keeps the work rate alone (0.4 s a unit, the best with the fixed rate at 0)."""
    done = [(1.0, w) for w in (1.0, 2.0, 3.0, 4.0)]
    seconds = [0.5 * w - 0.3 for _, w in done]
    assert eta_seconds(done, seconds, (10.0, 0.0)) == pytest.approx(0.0)
    assert eta_seconds(done, seconds, (10.0, 10.0)) == pytest.approx(4.0)
