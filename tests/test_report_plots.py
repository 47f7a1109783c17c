"""The report's plots work for any matrix (issue: "plots that work for any matrix"): one panel per
input size and mode, at most 10 legend entries or bars per panel, a single batch drawn as bars and
not as a line at one x, readable log ticks, and no matplotlib warning.

The rows are built in memory with the run schema's columns (the figures only read rows), for the
shapes a user's matrix takes: the smoke matrix (one batch, a few cases), the main job's matrix (a
few dozen configurations at one batch plus a batch sweep of one configuration per family and mode),
and a wide sweep (many configurations at many batches).
"""

from __future__ import annotations

import itertools
import warnings

import pandas as pd
import pytest

from bench.report import plots
from bench.runs.schema import empty_row

SIZES = ("201x201", "1280x152")


def _row(family, size, mode, batch, precision="fp32", attention="flash", checkpointing=False, speed=100.0):
    row = empty_row()
    attention = "none" if family == "cnn" else attention
    key = f"{family}-tiny-{size}-zdef-{precision}-{attention}-{'ckpt' if checkpointing else 'nockpt'}-compile-off-{mode}-b{batch}"
    row.update(status="ok", device="cpu", family=family, preset="tiny", size=size, latent=128.0, precision=precision,
               attention=attention, checkpointing=checkpointing if family != "cnn" else False, compile="off", mode=mode,
               batch=float(batch), images_per_s=speed * (1 + 0.1 * batch ** 0.5), tensor_peak_mib=10.0 + 3.0 * batch,
               case_key=key, case_id=key.replace("-zdef", ""), median_ms=1000 * batch / speed)
    return row


def _rows(configs, batches) -> pd.DataFrame:
    rows = []
    for i, ((family, precision, attention, ckpt), size, mode, batch) in enumerate(
            itertools.product(configs, SIZES, ("infer", "train"), batches)):
        if family == "cnn" and (attention != "flash" or ckpt):
            continue
        rows.append(_row(family, size, mode, batch, precision, attention, ckpt, speed=50.0 + 7 * (i % 13)))
    return pd.DataFrame(rows)


ALL_CONFIGS = [(f, p, a, c) for f in ("transformer", "cnn") for p in ("fp32", "amp-bf16")
               for a in ("flash", "math", "eager") for c in (False, True)]
SMOKE = _rows([("transformer", "fp32", "flash", False), ("transformer", "fp32", "eager", False), ("cnn", "fp32", "flash", False)], [2])
MAIN = pd.concat([_rows(ALL_CONFIGS, [4]),
                  _rows([("transformer", "fp32", "flash", False), ("cnn", "fp32", "flash", False)], [1, 2, 8, 16])])
WIDE = _rows(ALL_CONFIGS, [1, 2, 4, 8, 16, 32, 64])


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions draw, kept instead of encoded (one PNG is still encoded per figure, to
    see that saving raises no warning either)."""
    figures = []
    encode = plots._png

    def keep(fig):
        figures.append(fig)
        return encode(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return figures


def _draw(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constrained_layout or tick warning fails the test
        return make()


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize("rows", [SMOKE, MAIN, WIDE], ids=["smoke", "main", "wide"])
def test_bars_have_one_panel_per_size_and_mode_and_at_most_ten_bars(rows, drawn):
    assert _draw(lambda: plots.throughput_bars(rows, "cpu")) is not None
    (fig,) = drawn
    panels = _panels(fig)
    assert len(panels) == rows.groupby(["size", "mode"]).ngroups
    for ax in panels:
        assert 1 <= len(ax.patches) <= plots.MAX_ENTRIES
        size, mode = ax.get_title().split(" (")[0].split(", ")
        assert size in SIZES and mode in ("infer", "train")


def test_the_fp32_eager_baseline_of_each_family_is_always_a_bar(drawn):
    _draw(lambda: plots.throughput_bars(WIDE, "cpu"))
    for ax in _panels(drawn[0]):
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert any(label.startswith("transformer fp32 eager no-ckpt") for label in labels), labels
        assert any(label.startswith("cnn fp32") for label in labels), labels


def test_a_single_batch_is_no_line_plot(drawn):
    assert _draw(lambda: plots.throughput_vs_batch(SMOKE, "cpu")) is None
    assert _draw(lambda: plots.memory_vs_batch(SMOKE, "cpu", 8192.0)) is None
    assert not drawn


@pytest.mark.parametrize("rows, lines", [(MAIN, 1), (WIDE, plots.MAX_ENTRIES)], ids=["main", "wide"])
def test_curves_are_per_size_and_mode_with_at_most_ten_legend_entries(rows, lines, drawn):
    _draw(lambda: plots.throughput_vs_batch(rows, "cpu"))
    _draw(lambda: plots.memory_vs_batch(rows, "cpu", 8192.0))
    for fig in drawn:
        for ax in _panels(fig):
            entries = [t.get_text() for t in ax.get_legend().get_texts()]
            curves = [e for e in entries if not e.startswith("budget")]
            assert len(curves) <= plots.MAX_ENTRIES
            # the main job's sweep: one configuration per family, so each panel has one curve per family
            assert len(curves) == (2 if rows is MAIN else lines)
            assert all(len(line.get_xdata()) >= 2 for line in ax.get_lines() if line.get_label() in curves)


def test_log_axes_label_only_readable_ticks(drawn):
    _draw(lambda: plots.memory_vs_batch(WIDE, "cpu", 8192.0))
    for ax in _panels(drawn[0]):
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[:7] == ["1", "2", "4", "8", "16", "32", "64"]  # the measured batches
        assert all(int(x.replace(",", "")) > 64 for x in labels[7:]) and len(labels) <= 8  # and where the budget is met
        minor = [t.get_text() for t in ax.yaxis.get_minorticklabels()]
        assert not any(minor), minor  # no "2x10^0" between labelled ticks


def test_the_roofline_labels_plain_ticks_on_a_narrow_range(monkeypatch):
    """Points at 3-4 FLOP/byte used to get overlapping "3x10^0 4x10^0" minor labels."""
    from bench.profile import roofline

    figures = []
    points = [roofline.RoofPoint("a", 3.0, 20e9, "fp32", "memory-bound"), roofline.RoofPoint("b", 4.0, 30e9, "fp32", "memory-bound")]
    roofs = [roofline.Roof("fp32", 40e9, 12e9, "test")]
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    assert _draw(lambda: roofline.roofline_png(points, roofs, "test")) is not None
    ax = figures[0].axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        assert not any(t.get_text() for t in axis.get_minorticklabels())
        assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in axis.get_majorticklabels())


# -- what the plots draw besides the points: intervals, the budget's reach, whiskers -----------------------

def test_the_speed_interval_is_images_per_s_at_the_p90_and_p10_step_times():
    rows = pd.DataFrame({"batch": [4, 8], "p10_ms": [10.0, 40.0], "p90_ms": [20.0, 50.0]})
    slow, fast = plots.speed_interval(rows)
    assert list(slow) == pytest.approx([4 * 1e3 / 20.0, 8 * 1e3 / 50.0]) and list(fast) == pytest.approx([4e2, 2e2])
    assert (slow <= fast).all()


def test_a_memory_line_is_extended_at_its_last_per_image_slope_to_where_it_meets_the_budget():
    # a step whose first batch carries a workspace: only the last two points give the MiB per image
    line = pd.DataFrame({"batch": [1, 2, 4], "peak_mib": [90.0, 30.0, 50.0]})
    per_image = (50.0 - 30.0) / (4 - 2)
    assert plots._crossing(line, "peak_mib", 1000.0) == pytest.approx(4 + (1000.0 - 50.0) / per_image)
    assert plots._crossing(line.iloc[:1], "peak_mib", 1000.0) is None  # one point: no slope
    assert plots._crossing(line.assign(peak_mib=[50.0, 50.0, 50.0]), "peak_mib", 1000.0) is None  # flat: never


def test_latency_whiskers_are_at_p10_and_p90_and_the_samples_beyond_are_points():
    values = [10.0, 11.0, 12.0, 13.0, 30.0]  # a few samples: matplotlib's own whiskers would end inside the box
    stat = plots.whisker_stats(values)
    assert stat["whislo"] == pytest.approx(pd.Series(values).quantile(0.1))
    assert stat["whishi"] == pytest.approx(pd.Series(values).quantile(0.9))
    assert stat["whislo"] < stat["q1"] and stat["whishi"] > stat["q3"]
    assert sorted(stat["fliers"]) == [v for v in values if v < stat["whislo"] or v > stat["whishi"]] == [10.0, 30.0]


# -- the memory plot's budget is the plan's usable one, its extension a sampled curve (issue 30) ---------------

def _plan_rows(budget, tensors_mib=(1000.0, 3000.0)) -> pd.DataFrame:
    """plan.csv rows as the planner writes them (bench/plan/planner.py: base_row, predicted_figures)."""
    from bench.units import MIB

    return pd.DataFrame([{"target": "NVIDIA GeForce RTX 4060 (8.00 GiB)", "budget_mib": budget.card_bytes / MIB,
                          "usable_mib": round(budget.usable / MIB, 1), "context_mib": budget.context_bytes / MIB,
                          "max_tensors_mib": t, "max_reserved_mib": round(budget.predicted_reserved(t * MIB) / MIB, 1)}
                         for t in tensors_mib]).astype(str)  # read_plan reads text


def test_the_memory_budget_line_is_what_the_plan_leaves_in_the_peaks_own_terms():
    from bench.plan.budget import Budget
    from bench.units import MIB

    budget = Budget(card_bytes=8 * 1024 * MIB)
    plan = _plan_rows(budget)
    live, label = plots.usable_budget(plan, {"tensor_peak_mib"}, 8192.0)
    assert live == pytest.approx(budget.live_limit / MIB, abs=0.5) and live < budget.usable / MIB < 8192.0
    assert f"{live:,.0f} MiB" in label and "live tensors" in label and "RTX 4060" in label
    reserved, _ = plots.usable_budget(plan, {"reserved_peak_mib"}, 8192.0)
    assert reserved == pytest.approx(budget.usable / MIB, abs=0.1)
    process, _ = plots.usable_budget(plan, {"nvml_process_peak_mib"}, 8192.0)
    assert process == pytest.approx((budget.usable + budget.context_bytes) / MIB, abs=0.1)
    raw, label = plots.usable_budget(None, {"tensor_peak_mib"}, 8192.0)
    assert raw == 8192.0 and "no plan" in label


def test_the_reference_runs_memory_line_is_its_plan_md_live_tensor_budget():
    """Two outputs of the plan agree: the line the report draws from plan.csv and plan.md's accounting."""
    import re

    from bench.report.first_screen import read_plan
    from tests.test_report import REFERENCE_RUN

    live, _ = plots.usable_budget(read_plan(REFERENCE_RUN), {"tensor_peak_mib"}, 8192.0)
    stated = re.search(r"= live tensors\s+(\d+) MiB", (REFERENCE_RUN / "plan.md").read_text())
    assert stated and round(live) == int(stated.group(1))


def test_the_extension_to_the_budget_is_the_straight_memory_line_sampled_along_the_log_batch_axis(drawn):
    import math

    line = pd.DataFrame({"batch": [1, 2, 4, 8], "peak_mib": [20.0, 23.0, 29.0, 41.0]})  # 3 MiB per image
    xs, ys = plots.extension(line, "peak_mib", 6000.0)
    assert xs[0] == 8 and xs[-1] == pytest.approx(plots._crossing(line, "peak_mib", 6000.0)) and ys[-1] == pytest.approx(6000.0)
    assert ys == pytest.approx([41.0 + 3.0 * (x - 8) for x in xs])  # on the line, at every sample
    steps = [math.log2(b / a) for a, b in zip(xs, xs[1:])]
    assert len(xs) >= 32 and max(steps) == pytest.approx(min(steps))  # even on the log axis: a curve, not a chord
    _draw(lambda: plots.memory_vs_batch(MAIN, "cpu", 6000.0, "usable for live tensors: 6,000 MiB"))
    for ax in _panels(drawn[0]):
        dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert dotted and all(len(ln.get_xdata()) >= 32 for ln in dotted)
        assert any(ln.get_ydata()[0] == 6000.0 and ln.get_linestyle() == "--" for ln in ax.get_lines())
        assert ax.get_xscale() == "log" and ax.get_yscale() == "linear" and ax.get_ylim()[1] > 6000.0


# -- transformer vs CNN: no ratio pooled over input sizes, no legend entry without a bar (issue 30) -----------

def _pair(size, mode, attention, memory, speed, params, clean=True):
    return {"family": "transformer", "preset": "tiny", "size": size, "mode": mode, "attention": attention,
            "case_id": f"t-{size}-{mode}-{attention}-{memory}", "speed_ratio": speed, "memory_ratio": memory,
            "params_ratio": params, "clean": clean}


# the patch transformer's parameters depend on the size (its token count): 2x the CNN's at one, 0.5x at the other;
# math ran at one size only, so pooling over sizes would give the kernels different parameter ratios
PAIRS = pd.DataFrame([_pair("201x201", "train", a, m, s, 2.0) for a in ("flash", "math") for m, s in ((0.3, 2.0), (0.5, 2.2))]
                     + [_pair("1280x152", "train", "flash", m, s, 0.5) for m, s in ((0.8, 1.1), (0.9, 1.3))])


def _bar_heights(ax, colour):
    from matplotlib.colors import to_rgba

    return sorted(round(p.get_height(), 6) for p in ax.patches if p.get_facecolor() == to_rgba(colour))


def test_transformer_vs_cnn_bars_are_per_input_size_and_the_parameter_ratio_per_size(drawn):
    _draw(lambda: plots.ratio_bars(PAIRS, "cpu"))
    panels = {ax.get_title().split("\n")[0]: ax for ax in _panels(drawn[0])}
    assert set(panels) == {"201x201, train", "1280x152, train"}
    for size, params in (("201x201", "2.00×"), ("1280x152", "0.50×")):
        ax = panels[f"{size}, train"]
        assert f"parameters: transformer tiny {params} the CNN's" in ax.get_title()
        own = PAIRS[PAIRS["size"] == size].groupby("attention", sort=False)
        assert _bar_heights(ax, "tab:orange") == sorted(round(v, 6) for v in own["memory_ratio"].median())
        assert _bar_heights(ax, "tab:blue") == sorted(round(v, 6) for v in own["speed_ratio"].median())


def test_a_series_without_a_bar_has_no_legend_entry(drawn):
    noisy = PAIRS.assign(clean=False)  # no clean pair anywhere: no speed bar, so no speed entry
    _draw(lambda: plots.ratio_bars(noisy, "cpu"))
    (fig,) = drawn
    entries = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(entries) == 1 and entries[0].startswith("peak memory")
    assert all(not _bar_heights(ax, "tab:blue") and any("no clean pair" in t.get_text() for t in ax.texts)
               for ax in _panels(fig))


# -- the attention maps: one colour scale relative to uniform, nothing overlapping (issue 30) -----------------

def _attention_figure(size, peaked_map=True):
    import numpy as np

    from bench.core.model_probe import draw_attention_maps

    w, h = (int(v) for v in size.split("x"))
    grid = (4, 16) if w / h > 2 else (8, 8)
    tokens = grid[0] * grid[1]
    rng = np.random.default_rng(0)
    near = (1 + 0.04 * rng.uniform(-1, 1, grid)) / tokens  # within 4 % of uniform, as an untrained model's
    peaked = np.full(grid, 0.5 / (tokens - 1))
    peaked[1, 1] = 0.5  # half the weight on one token
    weights = {"layer_0": near, "layer_1": near[::-1], **({"average": peaked} if peaked_map else {})}
    return draw_attention_maps(np.zeros((h, w)), weights, (1, 1, grid), "title", size), weights


@pytest.mark.parametrize("size", ["201x201", "1280x152"])
def test_attention_maps_share_one_scale_relative_to_uniform_and_nothing_overlaps(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig, weights = _attention_figure(size)
    maps = [im for ax in fig.axes for im in ax.get_images() if im.cmap.name != "gray"]
    assert len(maps) == len(weights)
    limits = {(im.norm.vmin, im.norm.vmax) for im in maps}
    assert len(limits) == 1  # one scale for every map
    ((low, high),) = limits
    assert low == pytest.approx(1 / high) and high >= 2.0  # centred on uniform, at least 1/2..2x: 4 % reads as flat
    tokens = weights["average"].size
    assert high >= weights["average"].max() * tokens  # the peaked map is inside the scale, not clipped
    near_only, _ = _attention_figure(size, peaked_map=False)  # an untrained model's maps alone: still 1/2..2x
    assert {(im.norm.vmin, im.norm.vmax) for ax in near_only.axes for im in ax.get_images()
            if im.cmap.name != "gray"} == {(0.5, 2.0)}
    colourbars = [ax for ax in fig.axes if ax not in {im.axes for im in maps} and not ax.get_images()]
    assert len(colourbars) == 1
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_w <= 1 or overlap_h <= 1, (a, b)  # no panel, title or colour bar over another
