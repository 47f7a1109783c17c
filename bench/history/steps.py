"""Change points in one case's history, each judged against the noise.

A history is a list of points in commit order, one per run; a point carries its per-iteration samples
(ms) and, where the run measured the case in several processes, each sample's process. Two stages,
kept apart as asv keeps ``step_detect.py`` apart from what it reports:

1. **Proposal** (binary segmentation, Vostrikova 1981, with the Schwarz penalty of Yao 1988): on the
   log of each point's median, split the segment where the sum of squared deviations drops most, and
   keep the split when the drop exceeds ``2 sigma^2 ln(n)``; recurse on both halves. ``sigma`` is the
   larger of the point-to-point noise (the MAD of successive differences / sqrt 2, robust to the step
   itself) and the within-point noise (the bootstrap spread of each point's median).
   Two splits that isolate one interior run stepping away and back mark that run an outlier instead.
2. **Judgement**: a proposed split is a step only when the ratio of the medians of the point medians
   right and left of it (up to the neighbouring splits) has a bootstrap interval that excludes 1, and
   the ratio is at least ``min_step`` away from 1. The bootstrap is two-level over independent units:
   points (runs) with replacement on each side, then within each chosen point its processes (or,
   with one process, its iterations) with replacement, times a run-to-run factor exp(N(0, tau^2)) per
   chosen point, tau being the point-to-point noise that the points' own samples do not explain. Without
   that factor a side of one run (the newest commit) would carry only that run's own noise, and a
   machine's drift between runs would read as a code change. ``min_step`` is the last guard.

The step's commit range is (last commit left of it, first commit right of it]: the change came in
after the first and by the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 1000
MIN_STEP = 0.05        # a step smaller than 5% is not called, whatever its interval (asv's default factor is 10%)
SIGMA_FLOOR = 0.005    # log units: no history is quieter than 0.5% between points, whatever it shows
SEED = 0


@dataclass
class Point:
    """One run's measurement of one case: its samples (ms) and each sample's process (None: one process)."""

    commit: str
    samples_ms: np.ndarray
    process: Optional[Sequence[int]] = None
    label: str = ""  # the run's source, for the commit table

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    def groups(self) -> list[np.ndarray]:
        """The independent units of this point: one array of samples per process."""
        if self.process is None or len(self.process) != self.samples_ms.size:
            return [self.samples_ms]
        index = np.asarray(self.process)
        return [self.samples_ms[index == p] for p in np.unique(index)]


@dataclass
class Step:
    """A judged change point: between ``points[index - 1]`` and ``points[index]``."""

    index: int
    commit_before: str
    commit_after: str
    ratio: float          # right level / left level (1.25 = 25% slower)
    low: float
    high: float
    before_ms: float
    after_ms: float
    confidence: float
    called: bool          # the interval excludes 1 and the size reaches min_step
    reason: str

    @property
    def direction(self) -> str:
        return "slower" if self.ratio > 1 else "faster"

    @property
    def percent(self) -> float:
        return (self.ratio - 1) * 100

    def as_dict(self) -> dict:
        return {"index": self.index, "commit_before": self.commit_before, "commit_after": self.commit_after,
                "ratio": self.ratio, "low": self.low, "high": self.high, "before_ms": self.before_ms,
                "after_ms": self.after_ms, "confidence": self.confidence, "called": self.called, "reason": self.reason}


@dataclass
class Interval:
    median_ms: float
    low_ms: float
    high_ms: float
    units: str   # what was resampled: "processes" or "iterations"


@dataclass
class History:
    """One case's points, their intervals, the proposed splits and the judged steps."""

    points: list[Point]
    intervals: list[Interval] = field(default_factory=list)
    proposed: list[int] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)   # every proposed split, judged; ``called`` ones are steps
    sigma: float = math.nan
    tau: float = math.nan
    outliers: list[int] = field(default_factory=list)  # single runs that stepped away and back: not steps

    @property
    def called(self) -> list[Step]:
        return [s for s in self.steps if s.called]


def boot_medians(point: Point, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap medians of ``point``: processes with replacement, then samples within each."""
    groups = point.groups()
    if len(groups) == 1:
        g = groups[0]
        return np.median(g[rng.integers(0, g.size, (resamples, g.size))], axis=1)
    out = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(0, len(groups), len(groups))
        out[r] = np.median(np.concatenate([groups[i][rng.integers(0, groups[i].size, groups[i].size)] for i in chosen]))
    return out


def point_interval(point: Point, boots: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    return Interval(point.median_ms, float(low), float(high), "processes" if len(point.groups()) > 1 else "iterations")


def noise_sigma(levels: np.ndarray, boots: list[np.ndarray]) -> tuple[float, float]:
    """(sigma, tau) of the log point medians. sigma: the larger of point-to-point noise (MAD of successive
    differences / sqrt 2, robust to a step) and within-point noise (the mean bootstrap variance of a point's
    log median), floored. tau: the run-to-run part that a run's own samples do not show (sqrt of the
    point-to-point variance less the within-point one, 0 when the latter covers it)."""
    between = 0.0
    if levels.size >= 3:
        between = 1.4826 * float(np.median(np.abs(np.diff(levels)))) / math.sqrt(2)
    within = math.sqrt(float(np.mean([np.var(np.log(b)) for b in boots]))) if boots else 0.0
    return max(between, within, SIGMA_FLOOR), math.sqrt(max(between ** 2 - within ** 2, 0.0))


def _sse(y: np.ndarray) -> float:
    return float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0


def propose(levels: np.ndarray, sigma: float) -> list[int]:
    """Binary segmentation of ``levels`` (log medians): the indices i where a segment starts anew
    (a split between i - 1 and i), sorted; a split is kept when it lowers the squared error by more
    than ``2 sigma^2 ln(n)``."""
    n = levels.size
    if n < 2:
        return []
    penalty = 2 * sigma ** 2 * math.log(max(n, 2))
    found: list[int] = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        whole = _sse(levels[a:b])
        best, at = whole, None
        for k in range(a + 1, b):
            cost = _sse(levels[a:k]) + _sse(levels[k:b])
            if cost < best:
                best, at = cost, k
        if at is not None and whole - best > penalty:
            found.append(at)
            stack += [(a, at), (at, b)]
    return sorted(found)


def isolate_outliers(splits: list[int], levels: np.ndarray) -> tuple[list[int], list[int]]:
    """(splits, outliers) once every run left alone between two splits is settled. With L and R the mean log
    levels of the segments either side of it: a run further from both than they are from each other is an
    outlier (as asv's L1 cost ignores a lone point), and the split after it stays a candidate, judged without
    it, so a real step right after an off run is still found; any other lone run joins the side it is nearer
    (an overshoot at the first slow commit is part of the step, not a second one)."""
    splits, outliers = sorted(splits), []
    changed = True
    while changed:
        changed = False
        edges = [0] + splits + [levels.size]
        for j in range(1, len(edges) - 2):
            k = edges[j]
            if edges[j + 1] != k + 1 or k in outliers:
                continue
            left = [i for i in range(edges[j - 1], k) if i not in outliers]
            right = [i for i in range(k + 1, edges[j + 2]) if i not in outliers]
            if not left or not right:
                continue
            low, high = float(np.mean(levels[left])), float(np.mean(levels[right]))
            d_left, d_right, d_sides = abs(levels[k] - low), abs(levels[k] - high), abs(high - low)
            if min(d_left, d_right) > d_sides:
                outliers.append(k)
                splits.remove(k)
            else:
                splits.remove(k + 1 if d_right < d_left else k)
            changed = True
            break
    return splits, sorted(outliers)


def judge(left: list[int], right: list[int], points: list[Point], boots: list[np.ndarray], rng: np.random.Generator,
          min_step: float = MIN_STEP, confidence: float = CONFIDENCE,
          tau: float = 0.0) -> tuple[float, float, float, float, float, bool, str]:
    """(ratio, low, high, before_ms, after_ms, called, reason) for the step between the points ``left`` and ``right``
    (indices): the ratio of the medians of their point medians, its two-level bootstrap interval, and the call."""
    before = float(np.median([points[i].median_ms for i in left]))
    after = float(np.median([points[i].median_ms for i in right]))
    ratio = after / before
    resamples = boots[left[0]].size

    def side(indices: list[int]) -> np.ndarray:
        table = np.stack([boots[i] for i in indices])                  # (points, resamples)
        pick = rng.integers(0, len(indices), (resamples, len(indices)))  # points with replacement, per resample
        column = rng.integers(0, resamples, (resamples, len(indices)))  # one bootstrap median of each chosen point
        drift = np.exp(rng.normal(0.0, tau, (resamples, len(indices)))) if tau > 0 else 1.0
        return np.median(table[pick, column] * drift, axis=1)

    ratios = side(right) / side(left)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(ratios, [tail, 1 - tail]))
    excludes_one = low > 1 or high < 1
    big_enough = abs(ratio - 1) >= min_step
    if excludes_one and big_enough:
        reason = f"{(ratio - 1) * 100:+.1f}%, {confidence:.0%} interval {(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}%"
    elif not excludes_one:
        reason = (f"not shown: the {confidence:.0%} interval {(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}% "
                  "includes no change")
    else:
        reason = f"not called: {(ratio - 1) * 100:+.1f}% is under the {min_step:.0%} smallest step"
    return ratio, low, high, before, after, excludes_one and big_enough, reason


def analyse(points: list[Point], min_step: float = MIN_STEP, confidence: float = CONFIDENCE,
            resamples: int = RESAMPLES, seed: int = SEED) -> History:
    """Intervals per point, proposed splits and their judgements for one case's ``points`` (commit order)."""
    history = History(points)
    if not points:
        return history
    rng = np.random.default_rng(seed)
    boots = [boot_medians(p, resamples, rng) for p in points]
    history.intervals = [point_interval(p, b, confidence) for p, b in zip(points, boots)]
    levels = np.log([p.median_ms for p in points])
    history.sigma, history.tau = noise_sigma(levels, boots)
    history.proposed, history.outliers = isolate_outliers(propose(levels, history.sigma), levels)
    edges = [0] + history.proposed + [len(points)]
    for j, at in enumerate(history.proposed, start=1):
        left = [i for i in range(edges[j - 1], at) if i not in history.outliers]
        right = [i for i in range(at, edges[j + 1]) if i not in history.outliers]
        if not left or not right:
            continue
        ratio, low, high, before, after, called, reason = judge(left, right, points, boots, rng, min_step, confidence,
                                                          history.tau)
        history.steps.append(Step(at, points[left[-1]].commit, points[at].commit, ratio, low, high, before, after,
                                  confidence, called, reason))
    return history


def worst_first(steps: list[tuple[str, Step]]) -> list[tuple[str, Step]]:
    """Called steps ordered for the first screen: the largest slowdown first, speed-ups last (largest first)."""
    return sorted(steps, key=lambda item: (item[1].ratio <= 1, -abs(math.log(item[1].ratio))))
