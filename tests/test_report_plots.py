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
