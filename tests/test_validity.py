"""Impossible values refused (status ``invalid``), and GEMM peaks that a busy minute cannot fake.

No assertion here depends on how fast this machine is: times are injected, peaks are stubbed, and
what a real case measures is only checked for the fields that do not depend on the clock.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.core import measure as measure_module
from bench.core import session as session_module
from bench.core.cases import Case, parse_matrix
from bench.core.loop import sweep
from bench.core.measure import Settings, measure_case
from bench.core.selection import Selection
from bench.core.validity import achieved_by_dtype, rate_against_peak, refuse_impossible, rerate_rows
from bench.report.build import write_report
from bench.runs.reader import load_run
from bench.runs.schema import STATUSES, empty_row, invalid_reasons
from bench.runs.writer import RunWriter
from bench.trackers import calibration
from bench.trackers.device import Peak, device_facts

CPU = torch.device("cpu")
CASE = Case(family="transformer", preset="tiny", size="201x201", attention="flash", mode="infer", batch=2)
FAST = Settings(warmup=1, min_iters=3, max_iters=3, min_time_s=0.0, memory_iters=1, predict_memory=False)


def ok_row(**values) -> dict:
    row = empty_row()
    row.update(status="ok", reason="", precision="fp32", mfu=0.4, peak_tflops=1.0, peak_source="table: X", images_per_s=100.0,
               median_ms=20.0, tensor_peak_mib=50.0)
    row.update(values)
    return row


# ----------------------------------------------------------------------------- the rule, per row


def test_a_refused_row_is_written_and_read_back_as_invalid_and_never_as_ok(tmp_path):
    """What the user sees of a refused row: the writer accepts it (an unknown status it refuses), the reader gives it
    back as ``invalid`` with its reason, and it is not among the ok rows that tables and verdicts use."""
    row = ok_row(case_key="k-invalid", case_id="invalid-case", mfu=2.65)
    refuse_impossible(row, None)
    writer = RunWriter(tmp_path, {"device": {"type": "cpu", "name": "cpu"}})
    writer.append(row, [0.02, 0.02, 0.02])
    writer.append(ok_row(case_key="k-ok", case_id="ok-case"), [0.02, 0.02, 0.02])
    with pytest.raises(ValueError, match="row status 'bogus' is not one of"):
        writer.append(ok_row(case_key="k-bogus", status="bogus"))
    rows = load_run(tmp_path).rows.set_index("case_key")
    assert rows.loc["k-invalid", "status"] == "invalid" and "MFU 265.0%" in rows.loc["k-invalid", "reason"]
    assert list(rows.index[rows["status"] == "ok"]) == ["k-ok"] and "invalid" in STATUSES


@pytest.mark.parametrize("values, words", [
    ({"mfu": 2.65}, "MFU 265.0% is above 100%"),
    ({"mfu": float("inf")}, "MFU"),
    ({"images_per_s": 0.0}, "throughput 0 images/s is not positive"),
    ({"images_per_s": -3.0}, "not positive"),
    ({"median_ms": 0.0}, "median time 0 ms per batch is not positive"),
    ({"median_ms": 0.0001}, "below the timer's floor"),
    ({"tensor_peak_mib": 0.0}, "tensor peak 0 MiB is not positive"),
])
def test_a_figure_outside_physics_is_a_reason(values, words):
    reasons = invalid_reasons(ok_row(**values), timer_floor_ms=0.001)
    assert len(reasons) == 1 and words in reasons[0], reasons


def test_possible_figures_give_no_reason_and_a_missing_figure_is_not_a_fault():
    assert invalid_reasons(ok_row(), timer_floor_ms=0.001) == []
    assert invalid_reasons(ok_row(mfu=1.0)) == []  # at the peak is possible; above it is not
    assert invalid_reasons(ok_row(mfu=None, tensor_peak_mib=None, images_per_s=None, median_ms=None)) == []
    assert invalid_reasons(ok_row(median_ms=0.0001)) == []  # no floor known: that check is skipped


def test_only_an_ok_row_is_refused_and_the_reason_says_why():
    row = ok_row(mfu=2.65)
    refuse_impossible(row, None)
    assert row["status"] == "invalid" and "MFU 265.0%" in row["reason"] and "table: X" in row["reason"]
    oom = ok_row(status="oom", reason="out of memory", mfu=5.0)
    refuse_impossible(oom, None)
    assert oom["status"] == "oom"


def test_a_measured_peak_that_a_case_outran_is_raised_to_its_rate_and_flagged():
    rated = rate_against_peak(2.0, Peak(0.045, "measured: bf16 GEMM on this cpu"))
    assert rated["mfu"] == 1.0 and rated["peak_tflops"] == 2.0 and "raised to this case's achieved rate" in rated["peak_source"]
    table = rate_against_peak(2.0, Peak(1.0, "table: NVIDIA H200 (datasheet)"))
    assert table["mfu"] == 2.0 and table["peak_source"] == "table: NVIDIA H200 (datasheet)"  # a datasheet is not raised
    assert invalid_reasons(ok_row(**table)) and not invalid_reasons(ok_row(**rated))


# --------------------------------------------------------------------------- marked when measured


def fixed_loop(seconds: float):
    def loop(step, iters):
        for _ in range(iters):
            step()
        return [seconds] * iters, "perf-counter"
    return loop


def test_a_case_timed_below_the_timers_floor_is_invalid_and_keeps_its_samples():
    m = measure_case(CASE, CPU, device_facts(CPU), FAST, timed_loop=fixed_loop(1e-12))
    assert m.row["status"] == "invalid" and "below the timer's floor" in m.row["reason"]
    assert m.row["mfu"] <= 1.0  # the measured peak was raised to the (absurd) rate: the time is what is refused
    assert m.samples_s == [1e-12] * 3


def test_a_case_above_a_table_peak_is_invalid(monkeypatch):
    monkeypatch.setattr(measure_module, "peak_for", lambda facts, precision: Peak(1e-9, "table: a card slower than a CPU"))
    m = measure_case(CASE, CPU, device_facts(CPU), FAST, timed_loop=fixed_loop(0.01))
    assert m.row["status"] == "invalid" and "above 100% of the fp32 peak" in m.row["reason"]
    assert m.row["mfu"] > 1  # the figure stays in the row, for the record; the status keeps it out of every result


def test_a_possible_case_stays_ok():
    m = measure_case(CASE, CPU, device_facts(CPU), FAST, timed_loop=fixed_loop(0.01))
    assert m.row["status"] == "ok", m.row["reason"]
    assert 0 < m.row["mfu"] <= 1 and m.row["tensor_peak_mib"] > 0


# --------------------------------------------------------------------------------- the run's peaks


def peak(tflops: float) -> dict:
    return {"tflops": tflops}


@pytest.mark.parametrize("start, end, achieved, used, used_from, busy, raised", [
    (1.0, 0.9, None, 1.0, "start", False, False),           # quiet: the figure the cases were rated against
    (0.045, 1.6, None, 1.6, "end", True, False),            # busy at the start: the higher, the end's
    (1.6, 0.5, None, 1.6, "start", True, False),            # busy at the end: the start's stands
    (1.0, 1.1, (2.0, "case-x"), 2.0, "the rate case-x achieved", False, True),  # a case outran both
    (1.0, 1.1, (0.5, "case-y"), 1.0, "start", False, False),
])
def test_start_and_end_peaks_settle_on_the_figure_a_busy_minute_cannot_fake(start, end, achieved, used, used_from, busy, raised):
    settled = calibration.compare_peaks({"fp32": peak(start)}, {"fp32": peak(end)},
                                        {"fp32": achieved} if achieved else {})["fp32"]
    assert (settled["used_tflops"], settled["used_from"], settled["busy"], settled["raised"]) == (used, used_from, busy, raised)


def test_the_peaks_are_the_best_of_repetitions_at_several_sizes():
    found = calibration.gemm_peak(CPU, "fp32", sizes=(64, 128), repeats=2)
    assert set(found["tflops_by_n"]) == {"64", "128"} and all(len(r) >= 2 for r in found["tflops_by_n"].values())
    assert found["tflops"] == max(max(r) for r in found["tflops_by_n"].values()) > 0
    assert 0 <= found["spread_pct"] < 100
    assert calibration.gemm_peak(CPU, "tf32", sizes=(64,), repeats=1)["tflops_by_n"].keys() == {"64"}  # fp32 on a CPU


def test_rows_are_rated_again_against_the_settled_peak():
    rows = [dict(ok_row(precision="fp32", tflops=0.05, peak_tflops=0.1, mfu=0.5, peak_source="measured: fp32 GEMM"),
                 case_key="a", case_id="a"),
            dict(ok_row(precision="fp32", tflops=0.3, peak_tflops=0.3, mfu=1.0,
                        peak_source="measured: fp32 GEMM; raised to this case's achieved rate"), case_key="b", case_id="b"),
            dict(ok_row(precision="fp32", tflops=0.05, peak_tflops=19.5, mfu=0.0026, peak_source="table: A100"), case_key="c")]
    achieved = achieved_by_dtype(rows, "cpu")
    assert achieved == {"fp32": (0.3, "b")}  # a table-rated row does not speak for the measured peak
    settled = calibration.compare_peaks({"fp32": peak(0.1)}, {"fp32": peak(0.11)}, achieved)
    changed = rerate_rows(rows, "cpu", settled, None)
    assert [r["case_key"] for r in changed] == ["a"]
    assert rows[0]["peak_tflops"] == 0.3 and rows[0]["mfu"] == pytest.approx(0.05 / 0.3)
    assert "the rate b achieved" in rows[0]["peak_source"] and rows[2]["mfu"] == 0.0026


def test_a_busy_run_says_so_records_its_peaks_and_rates_its_rows_again(tmp_path, monkeypatch):
    """start_run and end_run with the GEMM stubbed: 1e-6 TFLOP/s at the start (a busy minute), 1 at the end."""
    answers = iter([1e-6, 1.0])

    def measure_peaks(device, dtypes):
        value = next(answers)
        return {"timer_floor_ms": 0.0001, "peaks": {d: {"tflops": value, "n": 64, "repeats": 3, "spread_pct": 1.0,
                                                        "tflops_by_n": {"64": [value]}} for d in dtypes}}

    monkeypatch.setattr(calibration, "measure_peaks", measure_peaks)
    monkeypatch.setattr(calibration, "_RUN_PEAKS", {})
    monkeypatch.setattr(calibration, "_TIMER_FLOOR_MS", {})
    facts = device_facts(CPU)
    matrix = parse_matrix({"group": [{"families": ["transformer"], "presets": ["tiny"], "sizes": ["201x201"],
                                      "attention": ["flash"], "modes": ["infer"], "batch": [2]}]}, name="validity-test")
    cases = [CASE]
    run = session_module.start_run(Selection(CPU, facts, matrix, cases, FAST), tmp_path, "test", ["test"], launcher="in-process")
    try:
        sweep(run, cases, progress=None)
        first = dict(run.rows[0])
        lines = session_module.end_run(run, write_report)
    finally:
        calibration.measured_gemm_tflops.cache_clear()
    assert first["peak_tflops"] == first["tflops"] and "raised" in first["peak_source"]  # 1e-6 TFLOP/s was outrun
    text = "\n".join(lines)
    assert "the machine was busy" in text and "MFU is taken against 1 TFLOP/s (end)" in text
    meta = json.loads((run.run_dir / "meta.json").read_text())
    settled = meta["peaks"]["settled"]["fp32"]
    assert settled["busy"] and settled["used_tflops"] == 1.0 and meta["peaks"]["start"]["peaks"]["fp32"]["tflops"] == 1e-6
    row = load_run(run.run_dir).rows.iloc[0]
    assert row["peak_tflops"] == 1.0 and row["mfu"] == pytest.approx(first["tflops"], rel=1e-5)  # rewritten in results.csv
    assert row["status"] == "ok"
    report = (run.run_dir / "report.md").read_text()
    assert "**the machine was busy**" in report


# ---------------------------------------------------------------------------------------- compare


def write_run(folder: Path, status: str, reason: str = "") -> Path:
    meta = {"created": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "matrix": "test", "command": "test",
            "device": {"type": "cpu", "name": "cpu", "torch": torch.__version__, "slug": "cpu"}, "calibration": {}}
    samples = list(np.random.default_rng(0).normal(5.0, 0.05, 40))
    row = empty_row()
    row.update(case_key="key-a", case_id="a", status=status, reason=reason, device="cpu", device_name="cpu",
               torch=torch.__version__, threads=2, median_ms=float(np.median(samples)))
    RunWriter(folder, meta).append(row, [s / 1e3 for s in samples])
    return folder


def compare(base: Path, cand: Path) -> tuple[int, dict]:
    out = cand.parent / "compare.json"
    status = main(["compare", str(base), str(cand), "--json", str(out), "-q"])
    return status, json.loads(out.read_text())


def test_compare_never_judges_an_invalid_row_as_a_measurement(tmp_path):
    ok = write_run(tmp_path / "ok", "ok")
    bad = write_run(tmp_path / "bad", "invalid", "MFU 265.0% is above 100% of the bf16 peak")
    status, report = compare(ok, bad)
    case = report["cases"][0]
    assert status == 1 and case["verdict"] == "broken" and "invalid" in case["note"] and "MFU 265.0%" in case["note"]
    status, report = compare(bad, ok)
    # nothing to compare against: 'fixed', and no time verdict at all, so the check cannot pass (INCONCLUSIVE)
    from bench.core.commandline import EXIT_INCONCLUSIVE

    assert status == EXIT_INCONCLUSIVE and report["cases"][0]["verdict"] == "fixed"
    status, report = compare(bad, write_run(tmp_path / "bad2", "invalid", "again"))
    assert status == EXIT_INCONCLUSIVE and report["cases"][0]["verdict"] == "skipped"  # both invalid: nothing measured


def test_a_gemm_too_slow_to_time_at_one_size_is_not_timed_at_the_larger_ones(monkeypatch):
    """bf16 on a CPU without bf16 instructions runs a 1024 GEMM in ~4 s and a 2048 one in ~33 s a call: once a
    size's calls take longer than the settle budget, the larger sizes are skipped (the rate is known)."""
    from bench.trackers import calibration

    timed: list[int] = []

    def fake_settled(fn, device, repeats):
        n = fn().shape[0]
        timed.append(n)
        return [calibration.PEAK_SETTLE_S * 2 * (n / 64) ** 3] * repeats  # slower than the budget from 64 on

    monkeypatch.setattr(calibration, "settled_times", fake_settled)
    monkeypatch.setattr(calibration, "gemm", lambda n, device, dtype: (lambda: torch.empty(n, 1)))
    found = calibration.gemm_peak(CPU, "bf16", sizes=(128, 64, 256), repeats=3)
    assert timed == [64], "the smallest size first, and no larger one once a call takes over the budget"
    assert found["n"] == 64 and set(found["tflops_by_n"]) == {"64"}

    timed.clear()
    monkeypatch.setattr(calibration, "settled_times", lambda fn, device, repeats: (timed.append(fn().shape[0]) or [1e-3] * repeats))
    assert set(calibration.gemm_peak(CPU, "fp32", sizes=(64, 128), repeats=2)["tflops_by_n"]) == {"64", "128"}
    assert timed == [64, 128], "a fast dtype is timed at every size"
