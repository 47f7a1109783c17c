"""The report's figures (matplotlib, Agg, PNG), each drawn from a run's rows and returned as bytes.

Figures are made with ``matplotlib.figure.Figure`` directly, never pyplot: no global backend or
figure state is touched, so drawing works headless and inside a pytest session. Each function
returns PNG bytes, or ``None`` when the run has nothing to draw; the report says why.
Every figure's title names its provenance (measured on which device, or computed).

The one figure of a model rather than of the rows, the attention maps of an untrained model, is
drawn when the run starts (``bench/core/model_probe.py``, ``plots/attention_maps.png``): the report
copies that file and never builds a model.
"""

from __future__ import annotations

import io
import math
from typing import Optional

import pandas as pd
from matplotlib.cbook import boxplot_stats
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report.tables import peak_label, with_peak

DPI = 100
PLAIN = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")  # 8,192 rather than 8.192e3
MARKERS = "osD^v<>pXh"
MAX_ENTRIES = 10  # legend entries (lines or bars) per panel: the best, and the baseline when it is not among them
# Axes that tell the configurations of one (input size, mode) panel apart; batch is the x axis or the bars' batch.
CONFIG_AXES = ("family", "preset", "latent", "precision", "attention", "checkpointing", "compile", "seq_len", "encoder")
MODE_ORDER = ("infer", "train", "embed")


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
        elif axis == "compile":
            if value != "off":
                parts.append(f"compiled ({value})")
        elif axis == "seq_len":
            if isinstance(value, (int, float)) and value == value:  # NaN: not a sequence case
                parts.append(f"T{value:g}")
        elif axis == "encoder":
            if value:
                parts.append(f"encoder {value}")
        elif value != "none":  # the CNN's attention
            parts.append(str(value))
    return " ".join(parts) or "all cases"


def _varying(rows: pd.DataFrame, axes) -> list[str]:
    return [a for a in axes if rows[a].astype(str).nunique() > 1]


def _panels(data: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """One (input size, mode) panel each, sizes in the run's order, inference before training."""
    sizes = list(dict.fromkeys(data["size"]))
    modes = sorted(set(data["mode"]), key=lambda m: MODE_ORDER.index(m) if m in MODE_ORDER else len(MODE_ORDER))
    return [(s, m, data[(data["size"] == s) & (data["mode"] == m)]) for s in sizes for m in modes
            if ((data["size"] == s) & (data["mode"] == m)).any()]


def _is_baseline(frame: pd.DataFrame) -> pd.Series:
    """fp32, eager attention (or none: the CNN), no checkpointing, not compiled: what each choice is set against."""
    return ((frame["precision"] == "fp32") & frame["attention"].isin(["eager", "none"])
            & (frame["checkpointing"] != True) & (frame["compile"] == "off"))  # noqa: E712 - None is "off" too


def _keep(configs: pd.DataFrame, score: str) -> tuple[pd.DataFrame, int]:
    """The best :data:`MAX_ENTRIES` configurations by ``score`` (one row each), each family's baseline always
    among them; and how many were left out."""
    ranked = configs.sort_values(score, ascending=False)
    bases = ranked[_is_baseline(ranked)].drop_duplicates("family")  # one per family: fp32 eager, the CNN's fp32
    rest = ranked.drop(index=bases.index)
    best = pd.concat([rest.head(MAX_ENTRIES - len(bases)), bases]).sort_values(score, ascending=False)
    return best, len(ranked) - len(best)


def _grid(count: int, width: float, height: float) -> tuple[Figure, list]:
    cols = 2 if count > 1 else 1
    nrows = math.ceil(count / cols)
    fig = Figure(figsize=(width * cols, height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, cols, squeeze=False).flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes


def speed_interval(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(images/s at the p90 step time, images/s at the p10 step time): the spread of a case's timed steps."""
    batch = pd.to_numeric(rows["batch"], errors="coerce")
    slow, fast = (pd.to_numeric(rows.get(c), errors="coerce") for c in ("p90_ms", "p10_ms"))
    return batch * 1e3 / slow, batch * 1e3 / fast


def _crossing(line: pd.DataFrame, value: str, budget: float) -> Optional[float]:
    """The batch at which ``line`` (memory growing by a fixed amount per image: its last two points) reaches
    ``budget``; ``None`` when it does not grow."""
    slope = _per_image(line, value)
    if slope is None:
        return None
    b1, m1 = line[["batch", value]].astype(float).values[-1]
    return b1 + (budget - m1) / slope if m1 < budget else None


def _per_image(line: pd.DataFrame, value: str) -> Optional[float]:
    """MiB per image between ``line``'s last two batches; ``None`` with fewer than two or when it does not grow."""
    last = line.tail(2)
    if len(last) < 2:
        return None
    (b0, m0), (b1, m1) = last[["batch", value]].astype(float).values
    slope = (m1 - m0) / (b1 - b0)
    return slope if slope > 0 else None


def extension(line: pd.DataFrame, value: str, budget: float, samples: int = 64) -> Optional[tuple[list, list]]:
    """The dotted extension of ``line`` from its last measured batch to where it meets ``budget``, sampled at
    ``samples`` batches spaced evenly on the log-2 batch axis, each at the straight line's memory
    (last point + MiB per image x extra images): on a log axis a straight line in batch is a curve, so it is
    drawn point by point, never as one segment between its ends. ``None`` when the line never meets the budget."""
    cross = _crossing(line, value, budget)
    if cross is None:
        return None
    slope = _per_image(line, value)
    b1, m1 = line[["batch", value]].astype(float).values[-1]
    step = math.log2(cross / b1) / (samples - 1)
    xs = [b1 * 2 ** (i * step) for i in range(samples - 1)] + [cross]
    return xs, [m1 + slope * (x - b1) for x in xs]


def usable_budget(plan: Optional[pd.DataFrame], peak_from: set[str], card_mib: float) -> tuple[float, str]:
    """(MiB, legend text) of the line the memory plot's peaks are held to: what the plan lets a batch reach on
    its card, in the peak's own terms. The plan's ``usable_mib`` is the allocator's reserved peak a batch may
    reach (card minus display reserve and CUDA context, less the margin); the live tensors it holds are that
    times the plan's own tensors / reserved (its allocator overhead), and an NVML per-process peak adds the
    context back. The smallest over the plan's rows (a measured plan's context can differ by row). Without a
    plan, the raw card budget, labelled as such: the usable part is less."""
    def column(name: str) -> pd.Series:
        return pd.to_numeric(plan[name], errors="coerce") if plan is not None and name in plan else pd.Series(dtype=float)

    usable = column("usable_mib")
    if usable.dropna().empty:
        return card_mib, f"card budget {card_mib:,.0f} MiB (no plan: the usable part is less; python -m bench plan)"
    target = next((t for t in plan["target"] if str(t).strip()), "the card") if "target" in plan else "the card"
    if peak_from and peak_from <= {"nvml_process_peak_mib", "nvml_process_fallback"}:
        value, what = (usable + column("context_mib")).min(), "usable by the process (reserved + CUDA context)"
    elif peak_from and peak_from <= {"reserved_peak_mib"}:
        value, what = usable.min(), "usable allocator reserve"
    else:  # live tensors (also what an RSS or allocated peak is nearest to)
        live = usable * column("max_tensors_mib") / column("max_reserved_mib")
        value, what = (live.min(), "usable for live tensors") if live.notna().any() else (usable.min(), "usable allocator reserve")
    return float(value), f"{value:,.0f} MiB {what} on {target}, per the plan"


def _swept(data: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows of the configurations measured at two batch sizes or more (the curves)."""
    data = data[data[value].notna()].copy()
    data["config"] = data.apply(lambda r: _line_label(r, list(CONFIG_AXES)), axis=1)
    batches = data.groupby(["size", "mode", "config"])["batch"].transform("nunique")
    return data[batches >= 2]


def _by_batch(rows: pd.DataFrame, value: str, ylabel: str, title: str, budget_mib: Optional[float] = None,
              budget_label: str = "") -> Optional[bytes]:
    """One panel per (input size, mode) with a curve over batch per configuration measured at several
    batches (at most :data:`MAX_ENTRIES`, the highest first); ``None`` when no configuration was."""
    data = _swept(rows, value)
    if data.empty:
        return None
    panels = _panels(data)
    fig, axes = _grid(len(panels), 6.4, 3.8)
    for ax, (size, mode, panel) in zip(axes, panels):
        axes_used = _varying(panel, CONFIG_AXES)
        labels = panel.apply(lambda r: _line_label(r, axes_used), axis=1)
        panel = panel.assign(label=labels)
        best = panel.groupby("label")[value].max().rename("score").reset_index()
        best = best.merge(panel.drop_duplicates("label"), on="label")
        kept, dropped = _keep(best, "score")
        reach = []
        for i, label in enumerate(sorted(kept["label"])):  # by name: a configuration keeps its colour in every panel
            line = panel[panel["label"] == label].sort_values("batch")
            drawn = ax.plot(line["batch"], line[value], marker=MARKERS[i % len(MARKERS)], label=label)[0]
            if value == "images_per_s":  # p10..p90 of the timed steps: noise must not read as a ranking
                lo, hi = speed_interval(line)
                ax.errorbar(line["batch"], line[value], yerr=[line[value] - lo, hi - line[value]], fmt="none",
                            ecolor=drawn.get_color(), capsize=3, alpha=0.8)
            drawn_out = extension(line, value, budget_mib) if budget_mib is not None else None
            if drawn_out is not None:  # extended at its own per-image slope to where it meets the budget
                xs, ys = drawn_out
                ax.plot(xs, ys, linestyle=":", color=drawn.get_color())
                ax.plot([xs[-1]], [budget_mib], marker="|", markersize=12, color=drawn.get_color())
                drawn.set_label(f"{label} (reaches it at ~{xs[-1]:,.0f} images)")
                reach.append(xs[-1])
        if budget_mib is not None:
            ax.axhline(budget_mib, color="red", linestyle="--", label=budget_label)
            top = max(budget_mib, float(panel[value].max()))
            ax.set_ylim(0, top * 1.12)  # the budget line and the legend above the curves
        ax.set_xscale("log", base=2)
        batches = sorted(set(panel["batch"]))
        ticks = batches + ([2 ** round(math.log2(max(reach)))] if reach and max(reach) > max(batches) * 4 else [])
        ax.set_xticks(ticks, [f"{b:,.0f}" for b in ticks])  # the measured batch sizes (and the budget's reach)
        ax.xaxis.set_minor_formatter(NullFormatter())
        if budget_mib is None:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("batch size (images, log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{size}, {mode}" + (f" (best {len(kept)}; {dropped} more in the CSV)" if dropped else ""), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if budget_mib is None:
            ax.legend(fontsize=7, loc="best")
        else:  # below the panel: a curve's extension crosses the whole height of it
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(title)
    return _png(fig)


def throughput_vs_batch(rows: pd.DataFrame, device: str) -> Optional[bytes]:
    """images/s against batch size, one panel per input size and mode, one line per configuration measured at
    several batch sizes."""
    ok = rows[rows["status"] == "ok"]
    return _by_batch(ok, "images_per_s", "throughput (images/s); bars p10..p90",
                     f"Throughput vs batch size (measured on {device})")


def memory_vs_batch(rows: pd.DataFrame, device: str, budget_mib: float, budget_label: str = "") -> Optional[bytes]:
    """Peak memory (MiB, linear axis) against batch size (log axis), with the budget a batch may reach as a line
    (:func:`usable_budget`: the plan's, in the peak's terms) and each configuration's line extended (dotted,
    sampled, at its own MiB per image from its two largest batches) to where it meets that budget."""
    ok = with_peak(rows[rows["status"] == "ok"])
    source = peak_label(sorted(set(ok["peak_from"]) - {""}))
    return _by_batch(ok, "peak_mib", "peak memory (MiB)", f"Peak memory vs batch size (measured on {device}: {source})",
                     budget_mib=budget_mib, budget_label=budget_label or f"budget {budget_mib:,.0f} MiB")


def throughput_bars(rows: pd.DataFrame, device: str) -> Optional[bytes]:
    """Per (input size, mode) panel, the configurations' images/s at the panel's most measured batch size,
    as horizontal bars: the best :data:`MAX_ENTRIES` and the fp32/eager baseline, each bar labelled."""
    ok = rows[(rows["status"] == "ok") & rows["images_per_s"].notna()]
    if ok.empty:
        return None
    panels = _panels(ok)
    fig, axes = _grid(len(panels), 6.4, 3.4)
    for ax, (size, mode, panel) in zip(axes, panels):
        batch = panel["batch"].value_counts().sort_index(ascending=False).idxmax()  # the most common; ties: the larger
        at = panel[panel["batch"] == batch]
        axes_used = _varying(at, CONFIG_AXES)
        at = at.assign(label=at.apply(lambda r: _line_label(r, axes_used), axis=1))
        kept, dropped = _keep(at.drop_duplicates("label"), "images_per_s")
        kept = kept.sort_values("images_per_s")
        colours = ["tab:gray" if b else "tab:blue" for b in _is_baseline(kept)]
        lo, hi = speed_interval(kept)
        ax.barh(range(len(kept)), kept["images_per_s"], color=colours,
                xerr=[kept["images_per_s"] - lo, hi - kept["images_per_s"]], error_kw={"capsize": 3, "elinewidth": 1})
        ax.set_yticks(range(len(kept)), list(kept["label"]), fontsize=7)
        for y, (v, top) in enumerate(zip(kept["images_per_s"], hi)):  # the figure past its whisker, never on it
            ax.text(top if math.isfinite(top) else v, y, f"  {v:,.3g}", va="center", fontsize=7)
        ax.set_xlim(right=max(kept["images_per_s"].max(), hi.max() if hi.notna().any() else 0) * 1.25)
        ax.set_xlabel(f"throughput (images/s) at batch {batch:g}; whiskers p10..p90 of the timed steps")
        ax.set_title(f"{size}, {mode}" + (f" (best {len(kept)} of {len(kept) + dropped})" if dropped else ""), fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Throughput per configuration, grey = the fp32/eager baseline (measured on {device})")
    return _png(fig)


RATIO_SERIES = (("speed (× CNN images/s): median of the clean pairs, whisker = their range", "speed_ratio", "tab:blue"),
                ("peak memory (× CNN MiB): median of the pairs", "memory_ratio", "tab:orange"))
RATIO_GROUP = ["size", "mode", "family", "preset", "attention"]  # what a bar may pool: precisions, batches, checkpointing


def params_text(panel: pd.DataFrame) -> str:
    """The parameters of each transformer of a panel against the CNN's: they depend on the model and the input
    size (its token count), never on the attention kernel, precision or batch, so they are one figure per
    model and size, not a bar per kernel."""
    parts = []
    for (family, preset), group in panel.groupby(["family", "preset"], sort=False):
        ratios = sorted({round(float(v), 3) for v in pd.to_numeric(group["params_ratio"], errors="coerce").dropna()})
        if ratios:
            shown = f"{ratios[0]:.2f}×" if len(ratios) == 1 else f"{ratios[0]:.2f}-{ratios[-1]:.2f}× (by latent)"
            parts.append(f"{family} {preset} {shown}")
    return "parameters: " + "; ".join(parts) + " the CNN's" if parts else ""


def ratio_groups(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (input size, mode, transformer, attention kernel): the median speed ratio of the clean pairs with its
    range and count, and the median memory ratio of all pairs; never pooled across input sizes or modes."""
    keyed = pairs.assign(clean=pairs["clean"].astype(bool) if "clean" in pairs else True)
    keyed = keyed.assign(clean_speed=pd.to_numeric(keyed["speed_ratio"], errors="coerce").where(keyed["clean"]),
                         memory=pd.to_numeric(keyed["memory_ratio"], errors="coerce"))
    out = keyed.groupby(RATIO_GROUP, sort=False).agg(
        pairs=("case_id", "size"), clean_pairs=("clean_speed", "count"), speed_ratio=("clean_speed", "median"),
        speed_min=("clean_speed", "min"), speed_max=("clean_speed", "max"), memory_ratio=("memory", "median"))
    return out.reset_index()


def ratio_bars(pairs: pd.DataFrame, device: str, memory_label: str = "peak memory") -> Optional[bytes]:
    """Transformer / CNN ratios per (input size, mode) panel (:func:`ratio_groups`): for each transformer and
    attention kernel, the speed and the peak memory at that size and mode only, so no bar mixes input sizes
    whose token counts differ; the parameter ratio, which depends on the size and not on the kernel, is written
    once per panel. A speed with no clean pair has no bar and says so; the legend lists only series with a bar."""
    if pairs.empty:
        return None
    bars = ratio_groups(pairs)
    models = bars[["family", "preset"]].drop_duplicates()
    panels = _panels(bars)
    fig, axes = _grid(len(panels), 5.6, 3.6)
    handles: dict[str, object] = {}
    width = 0.8 / len(RATIO_SERIES)
    for ax, (size, mode, panel) in zip(axes, panels):
        panel = panel.reset_index(drop=True)
        labels = [r.attention if len(models) == 1 else f"{r.family} {r.preset}\n{r.attention}" for r in panel.itertuples()]
        for i, (name, column, colour) in enumerate(RATIO_SERIES):
            xs = [j + (i - (len(RATIO_SERIES) - 1) / 2) * width for j in range(len(panel))]
            for x, r in zip(xs, panel.itertuples()):
                value = getattr(r, column)
                if pd.isna(value) or value <= 0:
                    if column == "speed_ratio":  # no clean pair: the reason in its place
                        ax.text(x, 0.03, "speed: no clean pair", rotation=90, ha="center", va="bottom", fontsize=7,
                                transform=ax.get_xaxis_transform())  # x in data, y in the axes: always inside them
                    continue
                err = None
                if column == "speed_ratio":
                    err = [[value - r.speed_min], [r.speed_max - value]]
                handles.setdefault(name, ax.bar([x], [value], width=width, color=colour, yerr=err,
                                                error_kw={"capsize": 3, "elinewidth": 1}))
                top = r.speed_max if column == "speed_ratio" else value
                note = f"{value:.2g}×" + (f"\nn={r.clean_pairs}" if column == "speed_ratio" else "")
                ax.text(x, top, note, ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())  # no "2x10^0" between the labelled ticks
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.5), max(high, 2.0) * 1.4)  # room for the figures over the bars; 1 always inside
        ax.set_xlim(-0.5, len(panel) - 0.5)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("transformer / CNN (×, log)")
        ax.set_title(f"{size}, {mode}\n{params_text(pairs[(pairs['size'] == size) & (pairs['mode'] == mode)])}", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(f"Transformer relative to the CNN on the same input, mode, precision and batch; 1 = the CNN "
                 f"(measured on {device})", fontsize=10)
    order = [name for name, _, _ in RATIO_SERIES if name in handles]
    if order:  # below the panels, never over a bar; only series with a bar
        fig.legend([handles[n] for n in order], [n.replace("MiB)", f"MiB, {memory_label})") for n in order],
                   loc="outside lower center", ncol=1, fontsize=8)
    return _png(fig)


def whisker_stats(values: list[float]) -> dict:
    """A box's statistics with its whiskers at p10 and p90 themselves (matplotlib's ``whis=(10, 90)`` stops them
    at the last sample inside, which with a few samples is the box's own edge) and the samples outside as points."""
    lo, hi = (float(pd.Series(values).quantile(q)) for q in (0.1, 0.9))
    stat = boxplot_stats(values)[0]
    stat.update(whislo=lo, whishi=hi, fliers=[v for v in values if v < lo or v > hi])
    return stat


def latency_distribution(rows: pd.DataFrame, samples_ms: dict[str, list[float]], device: str, count: int = 8) -> Optional[bytes]:
    """Box plots of per-iteration ms of the ``count`` slowest ok cases (by median) with samples."""
    ok = rows[(rows["status"] == "ok") & rows["case_key"].isin(list(samples_ms))]
    if ok.empty:
        return None
    slowest = ok.sort_values("median_ms", ascending=False).head(count).iloc[::-1]
    fig = Figure(figsize=(10, 0.55 * len(slowest) + 1.8))
    ax = fig.subplots()
    ax.bxp([whisker_stats(samples_ms[k]) for k in slowest["case_key"]], orientation="horizontal", showfliers=True)
    ax.set_yticks(range(1, len(slowest) + 1), list(slowest["case_id"]), fontsize=7)
    ax.set_xlabel("time per batch (ms); box = IQR, whiskers = p10..p90")
    ax.set_title(f"Latency distribution of the {len(slowest)} slowest cases (measured on {device})")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)
