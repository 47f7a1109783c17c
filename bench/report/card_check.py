"""The card model checked where it can be: on the run's own device, predicted against measured.

Section 1 ranks configurations by a roofline model of the target card (``bench.trackers.card_model``).
Its method is tested here on the device that ran: the same formula, fed this device's own peaks (the
GEMM peaks and copy bandwidth the run measured, or a listed GPU's table figures), predicts each ok
case's images/s, and the report states how well the order holds (Spearman rank correlation over the
cases, each case an independent configuration) and how far off the figures are (median |error|, and
the median of predicted / measured: a roofline is a bound, so above 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from bench.trackers.card_model import Card, card_for_target, host_card, images_per_s

MIN_CASES = 5   # fewer cases than this give no rank correlation worth printing


@dataclass
class CardCheck:
    card: Card
    cases: int
    spearman: float          # rank correlation of predicted vs measured images/s over the cases
    median_error_pct: float  # median of |predicted - measured| / measured, %
    median_ratio: float      # median of predicted / measured
    table: pd.DataFrame      # per case: case_key, measured and predicted images/s


def predicted_vs_measured(rows: pd.DataFrame, card: Card) -> pd.DataFrame:
    """Per ok row with a speed, FLOPs and live tensors: its measured and its predicted images/s on ``card``."""
    ok = rows[(rows["status"] == "ok")].copy()
    numbers = {c: pd.to_numeric(ok[c], errors="coerce") for c in ("images_per_s", "gflop_per_image", "tensor_peak_mib", "batch")}
    ok["predicted"] = [images_per_s(card, p, g, t, b) for p, g, t, b in
                       zip(ok["precision"], numbers["gflop_per_image"], numbers["tensor_peak_mib"], numbers["batch"])]
    ok["measured"] = numbers["images_per_s"]
    ok = ok[ok["predicted"].map(math.isfinite) & (ok["measured"] > 0)]
    return ok[["case_key", "measured", "predicted"]].reset_index(drop=True)


def check(rows: pd.DataFrame, card: Optional[Card]) -> Optional[CardCheck]:
    """The card model's check on ``rows`` measured on ``card``; ``None`` with too few cases or no card."""
    if card is None or rows.empty:
        return None
    table = predicted_vs_measured(rows, card)
    if len(table) < MIN_CASES:
        return None
    rho = float(table["predicted"].rank().corr(table["measured"].rank()))
    error = ((table["predicted"] - table["measured"]).abs() / table["measured"]).median() * 100
    ratio = (table["predicted"] / table["measured"]).median()
    return CardCheck(card, len(table), rho, float(error), float(ratio), table)


def run_device_card(meta: dict, device: str, device_name: str) -> Optional[Card]:
    """The run's own device as the card model sees it: a listed GPU's table entry, else the measured peaks."""
    if device == "cuda":
        listed = card_for_target(device_name)
        if listed is not None:
            return listed
    return host_card(meta)


def sentence(found: Optional[CardCheck], run_command: str) -> str:
    """Section 2's paragraph: the method's own check on this device, with the command that makes it."""
    if found is None:
        return ("Not checked on this run: it has too few ok cases with counted FLOPs and live tensors, or no measured "
                "peaks to feed the model")
    peaks = ", ".join(f"{d} {v:.3g}" for d, v in sorted(found.card.peaks_tflops.items())) + " TFLOP/s"
    return (f"Fed this device's figures ({peaks}; copy {found.card.bandwidth_gbs:.3g} GB/s), over {found.cases} ok "
            f"cases: Spearman rank correlation {found.spearman:.2f} of predicted vs measured images/s, median |error| "
            f"{found.median_error_pct:,.0f} % (a bound, {found.median_ratio:.2g}x): `{run_command}`")
