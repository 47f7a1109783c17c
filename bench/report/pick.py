"""The first screen's decisions, apart from the tables: which configuration a group gets, and how far
the memory model's own error lowers the largest batch that fits.

The pick (:func:`pick`), per group of candidates that the plan says fit the card:

- the run's speeds are the card's (a run on that very card): the fastest measured, unless others'
  intervals overlap its interval: then they are a **tie**, and the card model picks among them;
- otherwise (a CPU, another GPU): the card model's fastest (``bench.trackers.card_model``: a
  roofline bound on the card); the host's measured speeds decide nothing, since a CPU's order of
  precisions and attention kernels says nothing of a GPU's;
- with no card model (a bare budget names no GPU): the host's fastest, ties within noise said so.

The derating (:func:`derate`): the memory model's worst under-prediction for the family and mode,
measured in the run's own rows (``prediction_error_pct``), applied to the tensors the plan predicts,
so that no batch on the first screen is one the model's known error could push over the card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

CARD_MODEL = "card model"
MEASURED_ON_CARD = "measured on the card"
TIE = "tie within noise, card model's choice"
HOST_ONLY = "this host's speed (no card model)"
HOST_TIE = "tie within noise on this host (no card model): the faster median"


def overlaps(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> bool:
    """Whether two intervals (images/s) share a point; a missing bound never overlaps."""
    if not all(math.isfinite(v) for v in (a_lo, a_hi, b_lo, b_hi)):
        return False
    return a_lo <= b_hi and b_lo <= a_hi


def pick(group: pd.DataFrame, on_card: bool) -> tuple[int, str]:
    """(index label of the chosen row, how it was chosen) for one group's candidates.

    ``group`` columns: ``card_ips`` (predicted images/s on the card, ``nan`` when no model),
    ``host_ips`` (the run's measured images/s) and its interval ``host_lo`` .. ``host_hi``."""
    has_model = group["card_ips"].notna().any()
    if not on_card and has_model:
        return group["card_ips"].idxmax(), CARD_MODEL
    best = group["host_ips"].idxmax()
    top = group.loc[best]
    tied = group[[i == best or overlaps(top["host_lo"], top["host_hi"], r["host_lo"], r["host_hi"])
                  for i, r in group.iterrows()]]
    if len(tied) == 1:
        return best, MEASURED_ON_CARD if on_card else HOST_ONLY
    if has_model and tied["card_ips"].notna().any():
        return tied["card_ips"].idxmax(), TIE
    return best, HOST_TIE


@dataclass
class Derating:
    factor: float        # the plan's predicted tensors are multiplied by this (1: no known under-prediction)
    worst_pct: float     # the worst (most negative) prediction error of the family and mode, % (nan: none known)
    rows: int            # rows the worst was taken over


def model_error(rows: pd.DataFrame, family: str, mode: str) -> Derating:
    """The memory model's worst under-prediction over the run's ok rows of ``family`` and ``mode``:
    ``prediction_error_pct`` = (predicted - measured) / measured live tensors, so -44 % means the
    tensors are 1 / (1 - 0.44) = 1.79 times the prediction."""
    if "prediction_error_pct" not in rows.columns:
        return Derating(1.0, math.nan, 0)
    err = pd.to_numeric(rows.loc[(rows["family"] == family) & (rows["mode"] == mode), "prediction_error_pct"],
                        errors="coerce").dropna()
    err = err[err > -100]  # a prediction of nothing cannot be scaled
    if err.empty:
        return Derating(1.0, math.nan, 0)
    worst = float(err.min())
    return Derating(1.0 / (1.0 + worst / 100.0) if worst < 0 else 1.0, worst, len(err))


def derate(plan_row: pd.Series, factor: float) -> tuple[int, int]:
    """(largest batch that fits once the tensors are ``factor`` times the prediction, the batch to show).

    The plan's largest batch holds ``max_tensors_mib`` of tensors; tensors at batch B are
    ``fixed_mib + per_image_mib * B``. The batch shown is the plan's recommendation when it still
    fits, else the largest power of two that does (0 when nothing fits)."""
    largest, recommended = int(_num(plan_row["max_batch"])), int(_num(plan_row["recommended_batch"]))
    fixed, per_image, budget = (_num(plan_row.get(c)) for c in ("fixed_mib", "per_image_mib", "max_tensors_mib"))
    if factor <= 1.0 or not all(math.isfinite(v) for v in (fixed, per_image, budget)) or per_image <= 0:
        return largest, recommended
    fits = min(largest, max(0, math.floor((budget / factor - fixed) / per_image)))
    if recommended <= fits:
        return fits, recommended
    return fits, (2 ** int(math.log2(fits)) if fits >= 1 else 0)


def card_mib_at(plan_row: pd.Series, batch: int, factor: float) -> float:
    """The card's memory at ``batch`` (MiB): the plan's overhead at its recommended batch (context, allocator
    slack) plus ``factor`` times the predicted tensors at ``batch``."""
    card, tensors = _num(plan_row.get("rec_card_mib")), _num(plan_row.get("rec_tensors_mib"))
    at = tensors if batch == _num(plan_row.get("recommended_batch")) else tensors_mib_at(plan_row, batch)
    if not all(math.isfinite(v) for v in (card, tensors, at)):
        return card
    return card - tensors + factor * at


def tensors_mib_at(plan_row: pd.Series, batch: int) -> float:
    """The memory model's live tensors at ``batch`` (MiB), ``nan`` when the plan row has no model terms."""
    return _num(plan_row.get("fixed_mib")) + _num(plan_row.get("per_image_mib")) * batch


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
