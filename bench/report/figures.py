"""The report's figures, drawn from the run's rows and files, each with the caption that says what to read
from it (``report_template.md`` places them in their sections)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from bench.report import plots
from bench.report.tables import ok_rows, with_peak
from bench.runs.model_facts import ATTENTION_MAPS_PNG, ModelFacts
from bench.runs.reader import SavedRun

PLOTS_DIR = "plots"


def draw_figures(run: SavedRun, rows: pd.DataFrame, device: str, budget_mib: float, budget: str,
                 cnn_pairs: pd.DataFrame, memory_label: str, facts: ModelFacts,
                 plan: Optional[pd.DataFrame] = None) -> tuple[list[dict], dict[str, bytes]]:
    """(figures: name, title, path or None, why not, caption; the PNGs by path). ``plan``: the plan.csv the first
    screen answers from, whose usable budget the memory plot draws."""
    out_plots: dict[str, bytes] = {}
    figures: list[dict] = []

    def figure(name: str, title: str, make: Callable[[], Optional[bytes]], why_not: str, caption: str) -> None:
        png = make()
        path = f"{PLOTS_DIR}/{name}.png"
        if png is not None:
            out_plots[path] = png
        figures.append({"name": name, "title": title, "path": path if png is not None else None, "missing": why_not,
                        "caption": caption})

    swept = "no configuration was measured at more than one batch size (the bar chart above has them at one batch)"
    figure("throughput_bars", "Throughput per configuration", lambda: plots.throughput_bars(rows, device),
           "no ok case was measured",
           "Per input size and mode, the fastest configurations at the batch most cases ran (each family's fp32/eager "
           "baseline in grey): how much each choice of precision, attention and checkpointing buys on this device")
    figure("throughput_vs_batch", "Throughput vs batch size", lambda: plots.throughput_vs_batch(rows, device), swept,
           "Where the curve flattens, a larger batch stops paying: more memory for the same images/s")
    peak_from = set(with_peak(ok_rows(rows))["peak_from"]) - {""}
    line_mib, line_label = plots.usable_budget(plan, peak_from, budget_mib)
    figure("memory_vs_batch", "Peak memory vs batch size, with what the plan leaves a batch",
           lambda: plots.memory_vs_batch(rows, device, line_mib, line_label), swept,
           f"Memory grows by a fixed amount per image. The dashed line is {line_label}: the plan's card less "
           f"what it sets aside before a batch (display reserve, CUDA context, margin, allocator overhead: "
           f"`plan.md`). Each dotted curve carries a line's own MiB per image on to it: a straight line, curved by the "
           f"log batch axis" if "per the plan" in line_label else
           f"Memory grows by a fixed amount per image; the dashed line is the raw {budget} card budget (no plan: a GPU "
           f"takes its CUDA context, display and allocator cache out of it first; `python -m bench plan`)")
    figure("transformer_vs_cnn", "Transformer / CNN ratios", lambda: plots.ratio_bars(cnn_pairs, device, memory_label),
           "no transformer case has a matching CNN case",
           "Per input size and mode, above 1 the transformer has more of it (faster, hungrier) than the CNN on the same "
           "input, precision, mode and batch; the parameter ratio, which depends on the size and not on the kernel, is "
           "in each panel's title")
    figure("latency_distribution", "Latency distribution of the slowest cases",
           lambda: plots.latency_distribution(rows, run.samples_ms, device),
           "no per-iteration samples were saved for the ok cases",
           "A wide box or far whiskers mean a noisy case: rerun it on a quiet machine before trusting small differences")
    attention_figure = _attention_figure(run, facts, out_plots)
    attention_figure["caption"] = ("Where each layer's queries look, averaged over heads, before any training: a "
                                   "check of the kernels' plumbing, not of what a trained model attends to")
    figures.append(attention_figure)

    return figures, out_plots


def _attention_figure(run: SavedRun, facts: ModelFacts, out_plots: dict[str, bytes]) -> dict:
    """Section 7's attention maps: the figure the run drew when it started, copied; or why there is none."""
    about = facts.attention_maps
    title = "Attention maps per layer"
    if about:
        title += f", untrained {about['family']}-{about['preset']} at {about['size']}"
    if about and about.get("path"):
        source = Path(run.source) / about["path"]
        if source.is_file():
            out_plots[ATTENTION_MAPS_PNG] = source.read_bytes()
            return {"name": "attention_maps", "title": title, "path": ATTENTION_MAPS_PNG, "missing": ""}
        why = f"{about['path']} is missing from the run folder; {facts.hint}"
    elif about:
        why = f"{about.get('why_not') or 'the run drew no figure'} (see section 5)"
    elif facts.path is not None:
        why = "no patch-transformer case in this run to take a model from"
    else:
        why = facts.missing("figure")
    return {"name": "attention_maps", "title": title, "path": None, "missing": why}


