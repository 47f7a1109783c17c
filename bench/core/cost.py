"""What a case is expected to cost, before it runs, and the time left that those costs imply while a
run goes on: the shard planner's split (``bench/core/shard.py``) and every progress line's ETA
(``bench/core/loop.py``) read the same estimate.

The cost is a cheap estimate, not a measurement: a fixed part per case (build, warm-up, the minimum
timed seconds, the memory pass) plus the work of one step, pixels x batch x width² (the preset's
embedding width, or the CNN's channels) x the mode (train ~3x infer). Its unit is arbitrary (a tiny
201x201 batch-8 inference); a running sweep turns it into seconds with the rates it measures, one for
the fixed part and one for the work (:func:`eta_seconds`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from ae_models.catalog import CNN_PRESETS, PRESETS, is_transformer
from ae_models.sizes import parse_size

from bench.core.cases import Case

_MODE_FACTOR = {"infer": 1.0, "train": 3.0, "embed": 0.5}
_PLUGIN_WIDTH = 256  # a package.module:factory family: its size is unknown here
_REFERENCE = 201 * 201 * 8 * 128 ** 2  # a tiny transformer at 201x201, batch 8, infer: one unit of work
_FIXED = 1.0  # the part of a case that does not grow with its size (build, warm-up, min-time, memory pass)
_COMPILE = 8.0  # torch.compile's first step, in the same units


def case_cost_parts(case: Case) -> tuple[float, float]:
    """``(fixed, work)``: the part of ``case``'s expected cost that does not grow with its size (build,
    warm-up, the minimum timed seconds, the memory pass; torch.compile's first step) and the part that
    does (pixels x batch x width² x the mode), in units of a tiny 201x201 batch-8 inference."""
    h, w = parse_size(case.size)
    if ":" in case.family:
        width = _PLUGIN_WIDTH
    elif is_transformer(case.family):
        width = int(PRESETS[case.preset]["embed_dim"])
    else:
        width = 20 * int(CNN_PRESETS[case.preset]["base_channels"])  # convolutions at full resolution: tiny ~ a width of 160
    mode = _MODE_FACTOR.get(case.mode, 1.0) * (1.3 if case.checkpointing and case.mode == "train" else 1.0)
    work = h * w * case.batch * width ** 2 * mode / _REFERENCE
    return _FIXED + (_COMPILE if case.compile != "off" else 0.0), work


def case_cost(case: Case) -> float:
    """The expected cost of ``case`` in units of a tiny 201x201 batch-8 inference: deterministic, device-free."""
    fixed, work = case_cost_parts(case)
    return fixed + work


MIN_CASES_TO_FIT = 3  # below, two rates from so few cases swing wildly: one rate for the whole cost instead


def eta_seconds(done: Sequence[tuple[float, float]], seconds: Sequence[float], left: tuple[float, float]) -> float:
    """Seconds the cases still to run will take, from what the finished ones took.

    ``done``: each finished case's ``(fixed, work)`` cost (:func:`case_cost_parts`); ``seconds``: what
    each took; ``left``: the summed ``(fixed, work)`` of the cases left. The machine's two rates, seconds
    per unit of fixed cost and per unit of work, are fitted to the finished cases (least squares, neither
    below 0), then applied to what is left: a matrix that runs its cheap cases first no longer makes the
    estimate too low throughout, as the mean seconds per case so far x cases left did, and neither a quiet
    machine (the fixed part dominates) nor a loaded one (the work does) is judged by the other's ratio.
    Until :data:`MIN_CASES_TO_FIT` cases have finished, or while their costs cannot tell the two parts
    apart, one rate: seconds so far per unit of cost done. Nothing finished: 0 (no rate to apply).
    """
    total_cost = sum(f + w for f, w in done)
    if total_cost <= 0:
        return 0.0
    rates = _fit_rates(done, seconds) if len(done) >= MIN_CASES_TO_FIT else None
    if rates is None:
        return sum(seconds) / total_cost * (left[0] + left[1])
    return rates[0] * left[0] + rates[1] * left[1]


def _fit_rates(done: Sequence[tuple[float, float]], seconds: Sequence[float]) -> Optional[tuple[float, float]]:
    """``(seconds per fixed unit, seconds per work unit)`` minimising the squared error of
    ``seconds[i] ~ a * fixed[i] + b * work[i]`` with ``a, b >= 0``; None when the costs do not separate them
    (every finished case with the same proportion of fixed to work)."""
    sff = sum(f * f for f, _ in done)
    sww = sum(w * w for _, w in done)
    sfw = sum(f * w for f, w in done)
    sdf = sum(d * f for d, (f, _) in zip(seconds, done))
    sdw = sum(d * w for d, (_, w) in zip(seconds, done))
    det = sff * sww - sfw * sfw
    if sww <= 0 or det <= 1e-9 * sff * sww:
        return None
    a, b = (sdf * sww - sdw * sfw) / det, (sdw * sff - sdf * sfw) / det
    if a >= 0 and b >= 0:
        return a, b
    # the unconstrained best has a negative rate: the best with that rate at 0 (one of the two edges)
    edges = [(sdf / sff, 0.0), (0.0, sdw / sww)]
    return min(edges, key=lambda ab: sum((d - ab[0] * f - ab[1] * w) ** 2 for d, (f, w) in zip(seconds, done)))
