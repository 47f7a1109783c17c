"""Measuring real cases on this CPU: the row, its units, and failures that become rows."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ae_models import create_autoencoder
from bench.core.cases import Case
from bench.trackers.device import device_facts
from bench.core.measure import Settings, measure_case
from bench.trackers.nvml import NVML, MemorySampler
from bench.runs.writer import RunWriter
from bench.runs.schema import COLUMN_NAMES, check_row
from bench.core.launchers import InProcess
from bench.core.loop import sweep
from bench.core.selection import Selection
from bench.core.session import Run

CPU = torch.device("cpu")
FAST = Settings(warmup=1, min_iters=3, max_iters=5, min_time_s=0.0, memory_iters=1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def facts():
    return device_facts(CPU)


def test_an_ok_row_has_every_column_and_consistent_figures(facts):
    case = Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode="train", batch=2)
    m = measure_case(case, CPU, facts, FAST, "run-1")
    row = m.row
    check_row(row)
    assert row["status"] == "ok" and row["reason"] == ""
    assert row["iters"] == len(m.samples_s) >= 3
    assert row["images_per_s"] == pytest.approx(2 / (row["median_ms"] / 1e3))
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["attention_ran"] == "eager"
    # eager attention is plain matmuls: the FLOP counter sees all of it, matching the shapes
    assert row["attn_gflop_counted"] == pytest.approx(row["attn_gflop_analytic"], rel=1e-6)
    assert row["tflops"] == pytest.approx(row["gflop_per_image"] * 2 / (row["median_ms"] / 1e3) / 1e3)
    assert 0 < row["mfu"] == pytest.approx(row["tflops"] / row["peak_tflops"])
    assert row["peak_source"].startswith("measured")
    assert row["rss_peak_mib"] > 0 and row["alloc_peak_mib"] is None  # no allocator statistics on CPU
    assert row["params"] == create_autoencoder("201x201", "tiny").get_num_params()


def test_fused_attention_flops_hidden_from_the_counter_are_added_back(facts):
    case = Case(family="transformer", preset="tiny", size="201x201", attention="flash", mode="infer", batch=2)
    row = measure_case(case, CPU, facts, FAST).row
    assert row["attention_ran"] == "flash"
    assert row["attn_gflop_counted"] == 0  # the CPU flash kernel has no FLOP formula
    assert "analytic attention" in row["flops_source"]
    eager = measure_case(Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode="infer", batch=2),
                         CPU, facts, FAST).row
    assert row["gflop_per_image"] == pytest.approx(eager["gflop_per_image"], rel=1e-6)


def test_a_skipped_case_becomes_an_unsupported_row_without_running(facts):
    row = measure_case(Case(skip="fp16 on CPU: not worth timing"), CPU, facts, FAST).row
    assert row["status"] == "unsupported" and row["reason"].startswith("fp16 on CPU")
    assert row["median_ms"] is None


def test_an_impossible_kernel_becomes_an_unsupported_row(facts):
    row = measure_case(Case(attention="mem-efficient"), CPU, facts, FAST).row
    assert row["status"] == "unsupported" and "no CPU kernel" in row["reason"]


def test_a_model_that_raises_becomes_an_error_row(facts):
    row = measure_case(Case(family="tests.plugins:raising", preset="x", attention="none"), CPU, facts, FAST).row
    assert row["status"] == "error"
    assert "RuntimeError: this model is broken on purpose" in row["reason"] and "plugins.py" in row["reason"]


def test_a_real_out_of_memory_becomes_an_oom_row(facts):
    row = measure_case(Case(family="tests.plugins:huge", preset="x", attention="none"), CPU, facts, FAST).row
    assert row["status"] == "oom", row["reason"]


def test_the_sweep_goes_on_after_failures_and_writes_every_row(facts, tmp_path):
    cases = [Case(family="tests.plugins:raising", preset="x", attention="none"),
             Case(family="tests.plugins:huge", preset="x", attention="none"),
             Case(family="cnn", preset="tiny", attention="none", batch=1)]
    run = Run(Selection(CPU, facts, None, cases, FAST), "run", tmp_path / "run", RunWriter(tmp_path / "run"), InProcess())
    rows = sweep(run, cases, progress=None)
    assert [r["status"] for r in rows] == ["error", "oom", "ok"]
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(table["status"]) == ["error", "oom", "ok"]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["case_key"] for s in samples] == [cases[2].key]  # only measured cases have samples


def test_results_csv_header_is_the_schema_and_rows_round_trip(facts, tmp_path):
    writer = RunWriter(tmp_path)
    row = measure_case(Case(skip="because"), CPU, facts, FAST, "r").row
    writer.append(row)
    with open(tmp_path / "results.csv", newline="") as f:
        header, values = list(csv.reader(f))
    assert tuple(header) == COLUMN_NAMES
    assert dict(zip(header, values))["reason"] == "because"


def test_a_row_missing_a_column_is_refused():
    with pytest.raises(ValueError, match="missing \\['status'\\]"):
        check_row({c: None for c in COLUMN_NAMES if c != "status"})


def test_a_results_folder_of_another_schema_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other columns"):
        RunWriter(tmp_path)
    assert (tmp_path / "results.csv").read_text() == "a,b\n1,2\n"  # nothing overwritten


def test_nvml_degrades_with_a_clear_message_where_there_is_no_driver():
    nvml = NVML.get()
    if nvml.available:
        pytest.skip("this machine has an NVIDIA driver")
    assert nvml.reason.startswith("NVML unavailable:")
    assert nvml.handle(0) is None and nvml.device_used_mib(None) is None and nvml.energy_mj(None) is None
    with MemorySampler(cuda_index=0, interval_s=0.001) as sampler:
        time.sleep(0.02)
    assert sampler.device_peak_mib is None and sampler.process_peak_mib is None
    assert sampler.rss_peak_mib > 0  # the CPU figure still comes
    assert device_facts(CPU).nvml.startswith("NVML unavailable")


def test_a_run_killed_half_way_keeps_every_finished_row_intact(tmp_path):
    """SIGKILL the command line mid-sweep: the CSV holds whole rows only, every finished one. Told by an event, not a
    clock: the third case (a plug-in) touches a marker when its step starts and hangs, so exactly the two cases
    before it have finished when the kill comes, however fast or busy the machine."""
    marker = tmp_path / "third-case-started"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--matrix", "smoke", "--sizes", "201x201", "--modes", "infer",
         "--families", "cnn,tests.plugins:fine,tests.plugins:marks_then_hangs", "--results", str(tmp_path / "r"),
         "--launcher", "in-process", "--min-time", "0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "AE_TEST_HANG_MARKER": str(marker)})
    try:
        while not marker.exists():  # the event; the run cannot end on its own before it (the third case hangs)
            assert proc.poll() is None, f"the run ended before its third case: {proc.stderr.read()[-2000:]}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (csv_path,) = (tmp_path / "r").glob("*/results.csv")
    assert csv_path.read_bytes().endswith(b"\n")  # whole lines only
    table = pd.read_csv(csv_path)
    assert list(table.columns) == list(COLUMN_NAMES)
    assert list(table["family"]) == ["cnn", "tests.plugins:fine"]  # the two cases before the kill, no more
    assert set(table["status"]) == {"ok"} and table["median_ms"].notna().all()


@pytest.mark.parametrize("family, words", [
    ("tests.plugins:nan_output", "BadOutput: the reconstruction holds 80802 NaN/inf value(s) of 80802"),
    ("tests.plugins:wrong_shape", "BadOutput: the reconstruction has shape (2, 1, 201, 200), the input (2, 1, 201, 201)"),
])
def test_a_model_whose_output_is_nan_or_of_another_shape_is_an_error_row(facts, family, words):
    """Checked after the timed loop, untimed: a broken model must not read as a fast one."""
    m = measure_case(Case(family=family, preset="x", attention="none", batch=2), CPU, facts, FAST)
    assert m.row["status"] == "error" and m.row["reason"].startswith(words) and m.samples_s is None


@pytest.mark.parametrize("family, call", [("tests.plugins:exits", "sys.exit(0)"), ("tests.plugins:exits_hard", "os._exit(0)")])
def test_a_model_that_ends_the_process_is_an_error_row_and_the_process_lives_on(facts, family, call):
    import os

    real = os._exit
    row = measure_case(Case(family=family, preset="x", attention="none", batch=2), CPU, facts, FAST).row
    assert row["status"] == "error" and f"the case called {call}" in row["reason"] and "plugins.py" in row["reason"]
    assert os._exit is real  # restored once the case is over


@pytest.mark.parametrize("timing, words", [
    ({"min_time_s": "abc"}, "[timing] min_time_s = 'abc': expected a finite number >= 0"),
    ({"min_time_s": float("nan")}, "[timing] min_time_s = nan"),
    ({"min_time_s": float("inf")}, "[timing] min_time_s = inf"),
    ({"min_iters": 2.5}, "[timing] min_iters = 2.5: expected a whole number >= 1"),
    ({"max_iters": True}, "[timing] max_iters = True"),
    ({"min_iters": 50, "max_iters": 10}, "min_iters = 50 is above max_iters = 10"),
])
def test_bad_timing_values_are_refused_before_any_case_runs(timing, words):
    with pytest.raises(ValueError) as err:
        Settings.from_dict(timing)
    assert words in str(err.value)


@pytest.mark.parametrize("load, warned", [
    ({"busy_cores": 0.1, "load_1min": 1.9, "cores": 2, "threads": 2}, False),  # quiet now (the load average lags)
    ({"busy_cores": 1.0, "load_1min": 0.2, "cores": 2, "threads": 2}, True),   # one of two cores busy: the CI machine
    ({"busy_cores": 1.0, "cores": 2, "threads": 1}, False),                     # OMP_NUM_THREADS=1: one free core
    ({"busy_cores": 4.0, "cores": 16, "threads": 8}, False),                    # room for every thread
    ({"load_1min": 1.0, "cores": 2, "threads": 2}, True),                       # no /proc/stat: the load average
    ({}, False),                                                               # neither
])
def test_a_busy_cpu_is_warned_about_when_torchs_threads_lack_cores(load, warned):
    from bench.trackers.device import oversubscribed

    text = oversubscribed(load)
    assert bool(text) == warned
    if warned:
        assert text.startswith("warning: other processes keep 1.0 of this machine's 2 cores busy") and "OMP_NUM_THREADS=1" in text


def test_the_cores_kept_busy_by_another_process_are_measured(tmp_path):
    """One process spinning on a core is seen as (about) one busy core, whatever the load average says."""
    from bench.trackers.device import cpu_load

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        load = cpu_load()
    finally:
        spinner.kill()
    assert load["busy_cores"] >= 0.7 and load["threads"] == torch.get_num_threads() and load["cores"] >= 1
