"""The statistics of the regression check: is the candidate slower than the baseline, or noise?

Time: a percentile bootstrap of the ratio of medians (candidate median / baseline median) from
the per-iteration samples of the two runs, resampled independently with a fixed seed, so the
same two runs always give the same interval. Why this and not Mann-Whitney: the threshold is
stated as a change of the median ("10% slower"), and the bootstrap gives an interval on exactly
that quantity; Mann-Whitney answers "are the distributions shifted at all", which with a few
hundred samples is "yes" for a 1% change and says nothing of its size. The median (not the
mean) because one descheduled iteration on a shared runner moves the mean and not the median.

Memory: one peak per case and run, and allocator peaks are deterministic for the same code on
the same machine, so there is nothing to resample: a relative threshold plus an absolute floor
(allocator rounding) decides.

Verdicts (:func:`time_verdict`): ``slower`` only when the whole interval lies beyond the
threshold, so a change near the threshold plus noise does not fail a job; ``noisy`` when the
interval reaches across it.

What the interval does not see: drift between runs (clocks, another job on the runner), since
it is built from each run's own samples. Three guards: the threshold itself; a run whose own
spread says it was disturbed cannot support a change (:data:`MAX_SPREAD`); and ``--normalize``
(a calibration GEMM ratio, ``bench/compare/verdicts.py``) divides out clock drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from bench.trackers.latency import NOISE_THRESHOLD

CONFIDENCE = 0.95
RESAMPLES = 2000          # percentile bootstrap: enough for stable 2.5/97.5% quantiles at 95%
SEED = 0                  # fixed: the same two runs always get the same interval and verdict
MIN_SAMPLES = 5           # below this the bootstrap of a median is a few distinct values, not an interval
MAX_SPREAD = NOISE_THRESHOLD  # a run with IQR / median above this was disturbed (the rows' `noisy` flag)
TIME_THRESHOLD = 0.10     # a slowdown must exceed +10% of the median to fail
MEMORY_THRESHOLD = 0.05   # a peak must grow more than 5% to fail ...
MEMORY_FLOOR_MIB = 2.0    # ... and by more than this (the CUDA allocator rounds blocks to 2 MiB)
MIN_JUDGED = 0.5          # a comparison judges at least this share of its compared cases, else it is inconclusive
JUDGED_VERDICTS = ("slower", "faster", "same")  # a time verdict that says something; noisy and bimodal do not

TIME_VERDICTS = ("slower", "faster", "same", "noisy", "bimodal")
MEMORY_VERDICTS = ("grew", "shrank", "same", "unchecked", "n/a")


@dataclass(frozen=True)
class TimeChange:
    """The change in median time per iteration from baseline to candidate.

    ``ratio`` is candidate median / baseline median (1.12 = 12% slower); ``low`` and ``high``
    bound it at ``confidence``. Medians in ms.
    """

    verdict: str
    reason: str
    ratio: float
    low: float
    high: float
    confidence: float
    threshold: float
    baseline_median_ms: float
    candidate_median_ms: float
    n_baseline: int
    n_candidate: int

    @property
    def change(self) -> float:
        """Relative change of the median, e.g. +0.12 for 12% slower."""
        return self.ratio - 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "change": self.change}


@dataclass(frozen=True)
class MemoryChange:
    """The change in peak memory (MiB) of one column from baseline to candidate."""

    verdict: str
    reason: str
    column: Optional[str]
    baseline_mib: Optional[float]
    candidate_mib: Optional[float]
    threshold: float
    floor_mib: float

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline_mib and self.candidate_mib is not None:
            return self.candidate_mib / self.baseline_mib
        return None

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def median_ratio_interval(baseline_ms: Sequence[float], candidate_ms: Sequence[float], confidence: float = CONFIDENCE,
                          resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """Ratio of medians (candidate / baseline) and its percentile-bootstrap interval.

    Each run is resampled with replacement on its own (the runs are independent), ``resamples``
    times, from a generator seeded with ``seed``. Samples in any unit, the same for both.
    Returns ``(ratio, low, high)``.
    """
    base = np.asarray(baseline_ms, dtype=float)
    cand = np.asarray(candidate_ms, dtype=float)
    if base.size == 0 or cand.size == 0:
        raise ValueError("no samples to compare")
    if not 0 < confidence < 1:
        raise ValueError(f"bad confidence {confidence}: expected a fraction between 0 and 1, e.g. 0.95")
    base_median = float(np.median(base))
    if base_median <= 0:
        raise ValueError(f"baseline median {base_median} is not positive: cannot form a ratio")
    ratio = float(np.median(cand)) / base_median
    rng = np.random.default_rng(seed)
    # (resamples, n) index draws; medians along each row
    base_medians = np.median(base[rng.integers(0, base.size, (resamples, base.size))], axis=1)
    cand_medians = np.median(cand[rng.integers(0, cand.size, (resamples, cand.size))], axis=1)
    ratios = cand_medians / base_medians
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return ratio, float(low), float(high)


def _process_groups(samples: np.ndarray, process: Optional[Sequence[int]]) -> list[np.ndarray]:
    if process is None or len(process) != samples.size:
        return [samples]
    index = np.asarray(process)
    return [samples[index == p] for p in np.unique(index)]


def _hierarchical_medians(groups: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` two-level bootstrap draws: processes with replacement, then each chosen
    process's samples with replacement (its own count), pooled."""
    out = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(0, len(groups), len(groups))
        out[r] = np.median(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in (groups[i] for i in chosen)]))
    return out


def hierarchical_ratio_interval(baseline_ms: Sequence[float], baseline_process: Optional[Sequence[int]],
                                candidate_ms: Sequence[float], candidate_process: Optional[Sequence[int]],
                                confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                                seed: int = SEED) -> tuple[float, float, float]:
    """As :func:`median_ratio_interval`, for runs measured in several processes each: the bootstrap resamples
    processes first, then samples within each chosen process, so a speed that depends on the build (process
    medians that differ more than samples do) widens the interval instead of passing for a change."""
    base, cand = np.asarray(baseline_ms, dtype=float), np.asarray(candidate_ms, dtype=float)
    if base.size == 0 or cand.size == 0:
        raise ValueError("no samples to compare")
    ratio = float(np.median(cand)) / float(np.median(base))
    rng = np.random.default_rng(seed)
    ratios = (_hierarchical_medians(_process_groups(cand, candidate_process), resamples, rng)
              / _hierarchical_medians(_process_groups(base, baseline_process), resamples, rng))
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return ratio, float(low), float(high)


def time_verdict(ratio: float, low: float, high: float, threshold: float) -> tuple[str, str]:
    """The verdict from where the interval of the ratio lies against the band ``[1 / (1 + t), 1 + t]``.

    - ``slower``: the whole interval is above ``1 + threshold``: slower by more than the threshold
      at the interval's confidence (one-sided 97.5% for a 95% interval). Requiring the whole
      interval, not just the ratio, beyond the threshold is what keeps a change that is only
      about the threshold's size, plus noise, from failing a job.
    - ``faster``: the whole interval is below ``1 / (1 + threshold)`` (the band is symmetric in
      log scale, so swapping the runs swaps slower and faster).
    - ``same``: the whole interval is inside the band: any change is smaller than the threshold.
    - ``noisy``: the interval reaches across a band edge: too wide (or too close to the edge) to
      tell whether the change is beyond the threshold.
    """
    up, down = 1 + threshold, 1 / (1 + threshold)
    interval = f"{percent_change(ratio)} ({percent_change(low)} .. {percent_change(high)})"
    if low > up:
        return "slower", f"median {interval}: slower by more than {threshold:.0%}"
    if high < down:
        return "faster", f"median {interval}: faster by more than {1 - down:.0%}"
    if down <= low and high <= up:
        return "same", f"median {interval}: within +-{threshold:.0%}"
    return "noisy", f"median {interval}: the interval reaches across +-{threshold:.0%}, cannot tell"


def spread(samples: Sequence[float]) -> float:
    """IQR / median of one run's per-iteration times: its own noise (0 for fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    q1, median, q3 = np.quantile(np.asarray(samples, dtype=float), [0.25, 0.5, 0.75])
    return float((q3 - q1) / median) if median > 0 else math.inf


def compare_times(baseline_ms: Sequence[float], candidate_ms: Sequence[float], threshold: float = TIME_THRESHOLD,
                  confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED,
                  min_samples: int = MIN_SAMPLES, max_spread: float = MAX_SPREAD,
                  baseline_process: Optional[Sequence[int]] = None, candidate_process: Optional[Sequence[int]] = None,
                  bimodal: str = "") -> TimeChange:
    """Compare two runs' per-iteration times (ms) of one case; see :func:`time_verdict`.

    Two guards make the verdict ``noisy``: fewer than ``min_samples`` in a run, and, for a change
    (``slower``, ``faster``), a run whose IQR exceeds ``max_spread`` of its median. The second is
    for what the interval cannot see: on a shared machine another job can slow a whole run
    (measured here: 5.3 ms -> 8.8 ms, its IQR 45% of its median), and the interval, built from
    that run's own samples, takes the shift for a code change; the run's spread gives it away.
    """
    base = [float(x) for x in baseline_ms if x is not None and math.isfinite(float(x))]
    cand = [float(x) for x in candidate_ms if x is not None and math.isfinite(float(x))]
    if not base or not cand:
        return TimeChange("noisy", "no per-iteration samples in " + ("the baseline" if not base else "the candidate"),
                          math.nan, math.nan, math.nan, confidence, threshold,
                          float(np.median(base)) if base else math.nan, float(np.median(cand)) if cand else math.nan,
                          len(base), len(cand))
    several = any(p is not None and len(set(p)) > 1 for p in (baseline_process, candidate_process))
    if several:  # processes, then samples (the spread between builds is in the interval; no spread guard)
        ratio, low, high = hierarchical_ratio_interval(base, baseline_process, cand, candidate_process, confidence,
                                                       resamples, seed)
    else:
        ratio, low, high = median_ratio_interval(base, cand, confidence, resamples, seed)
    noisiest, which = max((spread(base), "baseline"), (spread(cand), "candidate"))
    if several:
        noisiest = 0.0
    if min(len(base), len(cand)) < min_samples:
        verdict, reason = "noisy", (f"median {percent_change(ratio)}: too few samples to tell ({len(base)} and {len(cand)}; "
                                    f"at least {min_samples} each)")
    else:
        verdict, reason = time_verdict(ratio, low, high, threshold)
        if verdict in ("slower", "faster") and noisiest > max_spread:
            verdict, reason = "noisy", (f"median {percent_change(ratio)} ({percent_change(low)} .. {percent_change(high)}) would be {verdict}, but the "
                                        f"{which} run's IQR is {noisiest:.0%} of its median (over {max_spread:.0%}): "
                                        "the machine was busy; rerun")
        if bimodal and verdict != "same":  # the build decides the speed: no verdict of a change from these runs
            verdict, reason = "bimodal", (f"median {percent_change(ratio)} ({percent_change(low)} .. {percent_change(high)}), "
                                          f"but {bimodal}: the speed depends on the build; judge it with "
                                          "`python -m bench ab` (A and B alternated) or more --processes")
    return TimeChange(verdict, reason, ratio, low, high, confidence, threshold, float(np.median(base)),
                      float(np.median(cand)), len(base), len(cand))


def compare_memory(baseline_mib: Optional[float], candidate_mib: Optional[float], column: Optional[str],
                   threshold: float = MEMORY_THRESHOLD, floor_mib: float = MEMORY_FLOOR_MIB,
                   checked: bool = True) -> MemoryChange:
    """Compare one case's peak memory (MiB) in ``column``.

    ``grew`` when the candidate exceeds the baseline by more than ``threshold`` and by more than
    ``floor_mib``; ``shrank`` is the mirror image; ``unchecked`` reports the figures of a column
    that is not trusted for a verdict (whole-process RSS); ``n/a`` when either figure is missing.
    """
    def result(verdict: str, reason: str) -> MemoryChange:
        return MemoryChange(verdict, reason, column, baseline_mib, candidate_mib, threshold, floor_mib)

    if column is None or baseline_mib is None or candidate_mib is None:
        return result("n/a", "no memory figure in both runs")
    delta = candidate_mib - baseline_mib
    text = f"{column} {baseline_mib:.1f} -> {candidate_mib:.1f} MiB ({delta:+.1f} MiB"
    text += f", {percent_change(candidate_mib / baseline_mib)})" if baseline_mib > 0 else ")"
    if not checked:
        return result("unchecked", text + "; not checked: whole-process figure")
    if delta > floor_mib and candidate_mib > baseline_mib * (1 + threshold):
        return result("grew", text + f", beyond +{threshold:.0%} and +{floor_mib:g} MiB")
    if -delta > floor_mib and candidate_mib < baseline_mib / (1 + threshold):
        return result("shrank", text)
    return result("same", text)


def percent_change(ratio: float) -> str:
    """1.123 -> '+12.3%'."""
    return "n/a" if ratio is None or not math.isfinite(ratio) else f"{(ratio - 1) * 100:+.1f}%"
