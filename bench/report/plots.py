"""The report's figures (matplotlib, Agg, PNG), each drawn from a run's rows and returned as bytes.

Figures are made with ``matplotlib.figure.Figure`` directly, never pyplot: no global backend or
figure state is touched, so drawing works headless and inside a pytest session. Each function
returns PNG bytes, or ``None`` when the run has nothing to draw; the report says why.
Every figure's title names its provenance (measured on which device, or computed).

The one figure of a model rather than of the rows, the attention maps of an untrained model, is
drawn when the run starts (``bench/core/model_facts.py``, ``plots/attention_maps.png``): the report
copies that file and never builds a model.
"""

from __future__ import annotations

import io
import math
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.tables import peak_label, with_peak

DPI = 100
PLAIN = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")  # 8,192 rather than 8.192e3
MARKERS = "osD^v<>pXh*"  # with the 10 default colours, 110 lines stay distinguishable
# Axes that tell the lines of one preset's panel apart (batch is the x axis).
LINE_AXES = ("family", "size", "latent", "precision", "attention", "checkpointing", "compile", "mode")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _line_label(row: pd.Series, axes: list[str]) -> str:
    parts = []
    for axis in axes:
        value = row[axis]
        if axis == "checkpointing":
            parts.append("ckpt" if value else "no-ckpt")
        elif axis == "latent":
            parts.append(f"z{value:g}")
        else:
            parts.append(str(value))
    return " ".join(parts) or "all cases"


def _varying(rows: pd.DataFrame, axes) -> list[str]:
    return [a for a in axes if rows[a].astype(str).nunique() > 1]


def _by_batch(rows: pd.DataFrame, value: str, ylabel: str, title: str, budget_mib: Optional[float] = None,
              log_y: bool = False) -> Optional[bytes]:
    data = rows[rows[value].notna()]
    if data.empty:
        return None
    presets = list(dict.fromkeys(data["preset"]))
    axes_used = _varying(data, LINE_AXES)
    cols = min(len(presets), 3)
    nrows = math.ceil(len(presets) / cols)
    fig = Figure(figsize=(8.5 * cols, 4.2 * nrows), layout="constrained")
    grid = fig.subplots(nrows, cols, squeeze=False)
    for ax, preset in zip(grid.flat, presets):
        panel = data[data["preset"] == preset]
        labels = panel.apply(lambda r: _line_label(r, axes_used), axis=1)
        for i, (label, line) in enumerate(panel.groupby(labels, sort=True)):
            line = line.sort_values("batch")
            ax.plot(line["batch"], line[value], marker=MARKERS[i // 10 % len(MARKERS)], label=label)
        if budget_mib is not None:
            ax.axhline(budget_mib, color="red", linestyle="--", label=f"budget {budget_mib:,.0f} MiB")
        ax.set_xscale("log", base=2)
        batches = sorted(set(panel["batch"]))
        ax.set_xticks(batches, [f"{b:g}" for b in batches])  # the measured batch sizes, not powers of two
        ax.xaxis.set_minor_formatter(NullFormatter())
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 200, 500, 1,000, 2,000, ...
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size (images)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"preset {preset}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for ax in list(grid.flat)[len(presets):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return _png(fig)


def throughput_vs_batch(rows: pd.DataFrame, device: str) -> Optional[bytes]:
    """images/s against batch size, one panel per preset, one line per remaining configuration."""
    ok = rows[rows["status"] == "ok"]
    return _by_batch(ok, "images_per_s", "throughput (images/s)", f"Throughput vs batch size (measured on {device})")


def memory_vs_batch(rows: pd.DataFrame, device: str, budget_mib: float) -> Optional[bytes]:
    """Peak memory (MiB) against batch size, with the budget as a line; log scale, so the budget
    and small peaks share one axis."""
    ok = with_peak(rows[rows["status"] == "ok"])
    source = peak_label(sorted(set(ok["peak_from"]) - {""}))
    return _by_batch(ok, "peak_mib", f"peak memory (MiB, {source})", f"Peak memory vs batch size (measured on {device}: {source})",
                     budget_mib=budget_mib, log_y=True)


def ratio_bars(summary: pd.DataFrame, device: str, memory_label: str = "peak memory") -> Optional[bytes]:
    """Transformer / CNN ratios (speed over clean pairs, memory, parameters), one bar group per configuration;
    a missing bar (speed with too few clean pairs) is drawn as none."""
    if summary.empty:
        return None
    labels = [f"{r.family} {r.preset}\n{r.attention}" for r in summary.itertuples()]
    series = [("speed (images/s, clean pairs)", "speed_ratio"), (f"peak memory (MiB, {memory_label})", "memory_ratio"),
              ("parameters", "params_ratio")]
    fig = Figure(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.8))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (name, column) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, summary[column].fillna(0), width=width, label=name)
        if column == "speed_ratio":
            for x, value in zip(xs, summary[column]):
                if pd.isna(value):  # fewer than 3 clean pairs: no bar, and the reason in its place
                    ax.text(x, 0.03, "speed: too noisy to judge", rotation=90, ha="center", va="bottom", fontsize=7,
                            transform=ax.get_xaxis_transform())  # x in data, y in the axes: always inside them
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("transformer / CNN (×, log scale; 1 = the CNN)")
    ax.set_title(f"Transformer relative to the CNN, median over matched cases (measured on {device})")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def latency_distribution(rows: pd.DataFrame, samples_ms: dict[str, list[float]], device: str, count: int = 8) -> Optional[bytes]:
    """Box plots of per-iteration ms of the ``count`` slowest ok cases (by median) with samples."""
    ok = rows[(rows["status"] == "ok") & rows["case_key"].isin(list(samples_ms))]
    if ok.empty:
        return None
    slowest = ok.sort_values("median_ms", ascending=False).head(count).iloc[::-1]
    fig = Figure(figsize=(10, 0.55 * len(slowest) + 1.8))
    ax = fig.subplots()
    ax.boxplot([samples_ms[k] for k in slowest["case_key"]], orientation="horizontal", whis=(10, 90), showfliers=True)
    ax.set_yticks(range(1, len(slowest) + 1), list(slowest["case_id"]), fontsize=7)
    ax.set_xlabel("time per batch (ms); box = IQR, whiskers = p10..p90")
    ax.set_title(f"Latency distribution of the {len(slowest)} slowest cases (measured on {device})")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)
