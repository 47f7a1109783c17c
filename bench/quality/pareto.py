"""The Pareto fronts of the quality report: cases no other case beats on quality and on speed (or memory)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_mask(cost_or_gain: pd.Series, psnr: pd.Series, maximise: bool) -> pd.Series:
    """True for cases no other case beats: higher-or-equal PSNR and better-or-equal x
    (higher when ``maximise``, e.g. images/s; lower otherwise, e.g. MiB), one of them strictly."""
    x = np.asarray(cost_or_gain, dtype=float) * (1 if maximise else -1)
    y = np.asarray(psnr, dtype=float)
    keep = []
    for i in range(len(x)):
        dominated = np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))
        keep.append(bool(np.isfinite(x[i]) and np.isfinite(y[i]) and not dominated))
    return pd.Series(keep, index=getattr(cost_or_gain, "index", None))


def with_pareto(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``pareto_speed`` and ``pareto_memory`` flags, computed within each size
    (a 1280x152 image costs about 5x a 201x201 one: fronts across sizes would compare sizes, not models)."""
    rows = rows.copy()
    rows["pareto_speed"] = False
    rows["pareto_memory"] = False
    ok = rows[(rows["status"] == "ok") & rows["psnr_db"].notna()]
    for _, group in ok.groupby("size"):
        speed = group["images_per_s"].notna()
        rows.loc[group[speed].index, "pareto_speed"] = pareto_mask(group.loc[speed, "images_per_s"], group.loc[speed, "psnr_db"], True)
        memory = group["peak_mib"].notna()
        rows.loc[group[memory].index, "pareto_memory"] = pareto_mask(group.loc[memory, "peak_mib"], group.loc[memory, "psnr_db"], False)
    return rows
