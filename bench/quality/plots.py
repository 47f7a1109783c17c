"""The quality report's figures (matplotlib ``Figure``, Agg, PNG bytes), each titled with its provenance.

- :func:`loss_curves`: held-out MSE against training seconds and against steps, a line per case;
- :func:`reconstruction_strip`: held-out crops and each case's reconstruction of them, one figure a size;
- :func:`pareto_figure`: held-out PSNR against training images/s and against peak MiB, per size,
  with the Pareto front drawn.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.quality.pareto import pareto_mask

DPI = 100
MARKERS = "osD^v<>pXh*"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def case_label(row: pd.Series) -> str:
    """``transformer tiny z128 b8`` (latent and batch as run)."""
    latent = f" z{int(row['latent'])}" if pd.notna(row.get("latent")) and row.get("latent") else ""
    return f"{row['family']} {row['preset']}{latent} b{int(row['batch'])}" + (
        f" {row['precision']}" if row.get("precision") not in (None, "fp32") else "")


def _sizes(rows: pd.DataFrame) -> list[str]:
    return sorted(rows["size"].unique(), key=lambda s: (int(s.split("x")[1]) * int(s.split("x")[0]), s))


def loss_curves(rows: pd.DataFrame, curves: pd.DataFrame, provenance: str) -> Optional[bytes]:
    """Held-out MSE (log scale) against training seconds (top) and steps (bottom), one column a size,
    with the crop-mean predictor's MSE on the same crops as a dotted line."""
    rows = rows[rows["status"] == "ok"]
    curves = curves[curves["case_id"].isin(rows["case_id"])]
    if curves.empty:
        return None
    sizes = _sizes(rows)
    fig = Figure(figsize=(6.5 * len(sizes), 8.5), layout="constrained")
    axes = fig.subplots(2, len(sizes), squeeze=False)
    for col, size in enumerate(sizes):
        for i, (_, row) in enumerate(rows[rows["size"] == size].iterrows()):
            curve = curves[curves["case_id"] == row["case_id"]].sort_values("step")
            style = dict(marker=MARKERS[i % len(MARKERS)], markersize=4, label=case_label(row),
                         linestyle="-" if row["family"] == "cnn" else "--")
            axes[0][col].plot(curve["train_s"], curve["heldout_mse"], **style)
            axes[1][col].plot(curve["step"], curve["heldout_mse"], **style)
        floor = rows.loc[rows["size"] == size, "baseline_crop_mean_curve_mse"].dropna() \
            if "baseline_crop_mean_curve_mse" in rows else pd.Series(dtype=float)
        for r, xlabel in enumerate(("training seconds (evaluation excluded)", "optimizer steps")):
            ax = axes[r][col]
            if len(floor):  # the loss of a predictor that knows only each crop's mean: a model must go below it
                ax.axhline(float(floor.iloc[0]), color="grey", linestyle=":", linewidth=1.5,
                           label="crop-mean predictor (baseline)")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out MSE (pixels in [0, 1])")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{size}: held-out loss vs {'time' if r == 0 else 'steps'}")
        axes[0][col].legend(fontsize=8)
    fig.suptitle(f"Held-out reconstruction loss while training — {provenance}")
    return _png(fig)


def reconstruction_strip(size: str, originals: np.ndarray, reconstructions: dict[str, np.ndarray], provenance: str) -> Optional[bytes]:
    """Row 0: held-out crops ``originals`` ``(K, H, W)``; then one row per case label with its
    reconstructions ``(K, H, W)`` of the same crops. Grey levels 0..1, never rescaled per panel."""
    if originals is None or not reconstructions:
        return None
    k, h, w = originals.shape
    rows = [("original (held out)", originals)] + list(reconstructions.items())
    panel_w = 6.0 if w / h > 3 else 2.6
    panel_h = panel_w * h / w + 0.35
    fig = Figure(figsize=(panel_w * k, panel_h * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{size}: held-out crops and reconstructions — {provenance}", fontsize=10)
    return _png(fig)


def pareto_figure(rows: pd.DataFrame, provenance: str) -> Optional[bytes]:
    """PSNR against training images/s (left) and against peak MiB (right), a row per size; the
    Pareto-optimal cases are joined by a line."""
    rows = rows[(rows["status"] == "ok") & rows["psnr_db"].notna()]
    if rows.empty:
        return None
    sizes = _sizes(rows)
    fig = Figure(figsize=(12, 4.2 * len(sizes)), layout="constrained")
    has_base = "baseline_crop_mean_db" in rows
    axes = fig.subplots(len(sizes), 2, squeeze=False)
    for r, size in enumerate(sizes):
        group = rows[rows["size"] == size]
        for c, (column, maximise, xlabel) in enumerate((("images_per_s", True, "training images/s (during the budget)"),
                                                         ("peak_mib", False, f"peak MiB ({group['peak_source'].iloc[0]})"))):
            ax = axes[r][c]
            valid = group[group[column].notna()]
            for i, (_, row) in enumerate(valid.iterrows()):
                ax.scatter(row[column], row["psnr_db"], marker=MARKERS[i % len(MARKERS)], s=45, label=case_label(row))
            if has_base and group["baseline_crop_mean_db"].notna().any():
                ax.axhline(float(group["baseline_crop_mean_db"].dropna().iloc[0]), color="grey", linestyle=":",
                           label="crop-mean predictor (baseline)")
            front = valid[pareto_mask(valid[column], valid["psnr_db"], maximise)].sort_values(column)
            if len(front):
                ax.plot(front[column], front["psnr_db"], color="black", linewidth=1, alpha=0.6, label="Pareto front")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out PSNR (dB)")
            ax.set_title(f"{size}: quality vs {'speed' if c == 0 else 'memory'}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"Quality against speed and memory — {provenance}")
    return _png(fig)
