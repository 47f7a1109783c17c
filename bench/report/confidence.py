"""Section 8's validity figures, from the rows and ``meta.json`` alone: the rows refused as impossible,
the memory model's error against the measured tensor peaks, the GEMM peaks MFU is taken against
(start, end, busy, raised), and the pairs each comparison left out as noisy; plus the display of a
ratio summary that has too few clean pairs to judge.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd

from bench.report import tables
from bench.report.display import show

WORST_PREDICTIONS = 5  # the worst rows shown in the report; all of them are in memory_model.csv


def timer_floor(meta: dict) -> Optional[float]:
    """The timer's floor (ms) the run measured at its start, or None (a run made before it was recorded)."""
    peaks = meta.get("peaks") if isinstance(meta.get("peaks"), dict) else {}
    start = peaks.get("start") if isinstance(peaks.get("start"), dict) else {}
    value = start.get("timer_floor_ms")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def show_summary(summary: pd.DataFrame, spec: list[tuple[str, str, str]], timing: tuple[str, ...]) -> pd.DataFrame:
    """:func:`show` of a pair summary, whose ``timing`` columns say "too noisy to judge" where it has
    fewer than ``MIN_CLEAN_PAIRS`` clean pairs (the count of pairs left out is a column of its own)."""
    out = show(summary, spec)
    if summary.empty or "clean_pairs" not in summary:
        return out
    headers = [header for column, header, _ in spec if column in timing]
    few = (summary["clean_pairs"] < tables.MIN_CLEAN_PAIRS).to_numpy()
    for header in headers:
        out.loc[few, header] = "too noisy to judge"
    return out


def context(rows: pd.DataFrame, meta: dict, refused: int, comparisons: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The template's validity names: ``invalid``, ``refused_by_report``, ``predictions``,
    ``prediction_summary``, ``peak_notes``, ``noisy_pairs``."""
    ctx: dict[str, Any] = {}
    invalid = tables.invalid_table(rows)
    ctx["invalid"] = show(invalid, [("case_id", "case", "text"), ("reason", "why it cannot be true", "text")])
    ctx["refused_by_report"] = refused
    worst = tables.prediction_table(rows)
    ctx["predictions"] = show(worst.head(WORST_PREDICTIONS), [
        ("case_id", "case", "text"), ("tensor_peak_mib", "measured live tensors (MiB)", "num"),
        ("predicted_tensor_mib", "predicted (MiB)", "num"), ("prediction_error_pct", "error (%)", "pct")])
    ok = tables.ok_rows(rows)
    measured = int(ok["tensor_peak_mib"].notna().sum())
    if worst.empty:
        ctx["prediction_summary"] = (f"no ok row carries a prediction ({measured} have a measured tensor peak): a run made "
                                     "before the memory model was checked per row, or one whose cases it cannot trace")
    else:
        errors = worst["abs_error"]
        ctx["prediction_summary"] = (
            f"{len(worst)} of {len(ok)} ok rows carry a prediction; |error| median {errors.median():.1f} %, "
            f"{int((errors <= 5).sum())} within 5 %, {int((errors > 20).sum())} beyond 20 %, worst {errors.max():.1f} % "
            f"({worst['case_id'].iloc[0]})")
    ctx["peak_notes"] = peak_notes(meta)
    ctx["noisy_pairs"] = [{"comparison": name, "pairs": len(pairs),
                           "left_out": int((~pairs["clean"].astype(bool)).sum()) if "clean" in pairs else 0}
                          for name, pairs in comparisons.items() if not pairs.empty]
    return ctx


def peak_notes(meta: dict) -> list[str]:
    """The GEMM peaks in words: the start and end measurements, their spread, and the figure used."""
    peaks = meta.get("peaks") if isinstance(meta.get("peaks"), dict) else {}
    start = (peaks.get("start") or {}).get("peaks") or {}
    if not start:
        return ["no GEMM peak measured by the run (a GPU from the table of peaks, or a run made before peaks were "
                "measured at its start and end): MFU is taken against the rows' own `peak_tflops`"]
    settled = peaks.get("settled") or {}
    notes = []
    for dtype, found in start.items():
        item = settled.get(dtype) or {}
        text = (f"{dtype}: {found['tflops']:.3g} TFLOP/s at the start (best of {found.get('repeats', '?')} at each of "
                f"{', '.join(found.get('tflops_by_n', {})) or '?'}; spread {found.get('spread_pct', math.nan):.0f} %)")
        if item.get("end_tflops") is not None:
            text += f", {item['end_tflops']:.3g} at the end ({item.get('disagreement_pct', math.nan):.0f} % apart)"
        if item.get("busy"):
            text += f"; **the machine was busy** (over {peaks.get('busy_threshold_pct', 20):g} % apart)"
        if item.get("raised"):
            text += f"; **raised to the rate {item.get('raised_by')} achieved**, above the measured peak"
        if item.get("used_tflops") is not None:
            text += f"; MFU is taken against {item['used_tflops']:.3g} TFLOP/s ({item.get('used_from')})"
        elif not settled:
            text += "; the run did not reach its end (no end measurement): MFU is against the start figure"
        notes.append(text)
    return notes
