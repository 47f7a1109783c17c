"""The harness's own cost (issue 36): where a case's time goes, the run's share of it spent measuring,
and the memory model fitted once per configuration."""

import dataclasses
import gc
import json
import os
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

import bench.core.measure as measure
import bench.core.validity as validity
import bench.core.memory_model as predictor
from bench.core.cases import Case, parse_matrix, expand
from bench.core.commandline import child_env
from bench.core.loop import sweep
from bench.core.measure import Settings, measure_case
from bench.core.selection import Selection
from bench.core.session import end_run, start_run
from bench.report.display import phase_seconds, run_facts, time_shares
from bench.runs.reader import load_run
from bench.runs.schema import PHASE_COLUMNS, check_row
from bench.trackers.device import device_facts
from bench.units import MIB

CPU = torch.device("cpu")
FAST = Settings(warmup=1, min_iters=3, max_iters=5, min_time_s=0.0, memory_iters=1)
REPO = Path(__file__).resolve().parents[1]
REFERENCE_RUN = REPO / "results" / "20261130-000938-cpu-2c-intel-r-xeon-r-processor"  # committed, named, no phases


class Clock:
    """A perf_counter that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_each_phase_column_holds_the_seconds_of_its_own_phase(monkeypatch):
    """Each phase moves the clock by its own amount; each column must hold exactly that amount (a phase timed
    into another's column, or one left out of ``case_s``, changes a figure)."""
    clock = Clock()
    monkeypatch.setattr(measure, "time", types.SimpleNamespace(perf_counter=clock))
    spent = {"build_s": 1.0, "warmup_s": 2.0, "timed_loop_s": 4.0, "memory_pass_s": 8.0, "prediction_s": 16.0,
             "flops_s": 32.0, "check_s": 64.0}

    def after(column, fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            clock.advance(spent[column])
            return result
        return wrapped

    monkeypatch.setattr(measure.CaseRun, "prepare", after("build_s", measure.CaseRun.prepare))
    monkeypatch.setattr(measure, "timed_first_step", after("warmup_s", measure.timed_first_step))  # warmup=1: one call
    monkeypatch.setattr(measure, "memory_pass", after("memory_pass_s", measure.memory_pass))
    monkeypatch.setattr(measure, "predicted_tensor_peak", after("prediction_s", lambda *a: {}))
    monkeypatch.setattr(measure, "check_output", after("check_s", measure.check_output))
    monkeypatch.setattr(measure, "count_step_flops", after("flops_s", measure.count_step_flops))

    def loop(step, iters):
        for _ in range(iters):
            step()
        clock.advance(spent["timed_loop_s"])
        return [0.01] * iters, "test-timer"

    case = Case(family="cnn", preset="tiny", size="201x201", attention="none", mode="infer", batch=1)
    row = measure_case(case, CPU, device_facts(CPU), dataclasses.replace(FAST, predict_memory=True), timed_loop=loop).row
    assert row["status"] == "ok", row["reason"]
    check_row(row)
    assert {c: row[c] for c in spent} == spent
    assert row["case_s"] == sum(spent.values())  # nothing else moved the clock


def test_a_failing_case_keeps_the_phases_it_reached(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("no memory pass today")

    monkeypatch.setattr(measure, "memory_pass", boom)
    case = Case(family="cnn", preset="tiny", size="201x201", attention="none", mode="infer", batch=1)
    row = measure_case(case, CPU, device_facts(CPU), FAST).row
    assert row["status"] == "error"
    assert row["timed_loop_s"] > 0 and row["memory_pass_s"] >= 0 and row["case_s"] >= row["timed_loop_s"]
    assert row["prediction_s"] is None and row["flops_s"] is None  # never reached


def _rows(**columns) -> pd.DataFrame:
    return pd.DataFrame({c: columns.get(c, [0.0, 0.0]) for c in PHASE_COLUMNS})


def test_the_share_of_the_wall_time_is_the_timed_loops_over_the_runs_wall():
    rows = _rows(timed_loop_s=[10.0, 20.0], prediction_s=[5.0, 5.0], case_s=[20.0, 30.0])
    meta = {"time": {"wall_s": 100.0, "start_s": 12.0, "end_s": 3.0}}
    seconds = phase_seconds(rows, meta)
    assert seconds["timed_loop_s"] == 30.0 and seconds["prediction_s"] == 10.0
    assert seconds["within_cases_s"] == 10.0        # 50 s of cases, 40 s of them in named phases
    assert seconds["between_cases_s"] == 35.0       # 100 - 50 - 12 - 3
    line = time_shares(rows, meta)
    assert line.startswith("30% of the run's wall time (100.0 s")
    # the phases behind it, largest first, each with its share
    assert line.index("between cases (launcher, rows written) 35.0 s (35%)") < line.index("timed loops 30.0 s (30%)") \
        < line.index("run start (calibration, peaks, model facts) 12.0 s (12%)") < line.index("run end (peaks again) 3.0 s (3%)")


@pytest.mark.parametrize("meta", [{}, {"time": {}}, {"time": {"wall_s": 0}}, {"time": "soon"}])
def test_a_run_without_its_wall_time_gets_no_share(meta):
    assert time_shares(_rows(timed_loop_s=[1.0, 1.0], case_s=[2.0, 2.0]), meta) is None


def test_rows_without_phase_figures_get_no_share():
    rows = pd.DataFrame({"case_s": [float("nan")] * 2, "timed_loop_s": [float("nan")] * 2})
    assert time_shares(rows, {"time": {"wall_s": 100.0}}) is None
    assert time_shares(pd.DataFrame({"median_ms": [1.0]}), {"time": {"wall_s": 100.0}}) is None


def test_the_committed_reference_run_reads_and_its_facts_have_no_share_line():
    """Written before the phase columns: it still reads, and its run facts (so its report's bytes) are unchanged."""
    run = load_run(REFERENCE_RUN)
    assert run.rows["case_s"].isna().all()
    facts = run_facts(run, "x")
    assert "timed loops" not in set(facts["fact"])


def test_a_run_records_its_wall_time_and_its_report_says_what_share_the_timed_loops_took(tmp_path):
    matrix = parse_matrix({"group": [{"families": ["cnn"], "presets": ["tiny"], "sizes": ["201x201"],
                                      "precisions": ["fp32"], "modes": ["infer"], "batch": [1, 2]}]}, name="cost-test")
    device = CPU
    facts = device_facts(device)
    cases = expand(matrix, device=facts)
    settings = dataclasses.replace(FAST, predict_memory=False)
    run = start_run(Selection(device, facts, matrix, cases, settings), tmp_path, "test", ["python", "-m", "bench", "run"],
                    launcher="in-process")
    try:
        assert gc.get_freeze_count() > 0  # the heap before the cases is out of the collector's reach ...
        shared = Path(os.environ[validity.MODELS_ENV])
        assert shared.is_dir() and child_env()[validity.MODELS_ENV] == str(shared)  # a child per case finds the models
        sweep(run, cases, progress=None)
    finally:
        from bench.report.build import write_report

        lines = end_run(run, write_report)
    assert gc.get_freeze_count() == 0  # ... and back in it once the run ends
    assert validity.MODELS_ENV not in os.environ and not shared.exists()  # the shared models go with the run
    meta = json.loads((run.run_dir / "meta.json").read_text())
    spent = meta["time"]
    assert spent["attempts"] == 1 and spent["start_s"] > 0
    rows = load_run(run.run_dir).rows
    assert spent["wall_s"] >= spent["start_s"] + spent["end_s"] + rows["case_s"].sum()
    assert (rows[[c for c in PHASE_COLUMNS if c != "prediction_s"]] > 0).all().all()
    assert any(line.startswith("report:") for line in lines), lines
    share = 100 * rows["timed_loop_s"].sum() / spent["wall_s"]
    assert f"| timed loops | {share:.0f}% of the run's wall time (" in (run.run_dir / "report.md").read_text()


# -- the memory model: one fit per configuration ------------------------------------------------

SWEEP = Case(family="cnn", preset="tiny", size="201x201", attention="none", mode="infer", batch=1)


@pytest.fixture
def counted_fits(monkeypatch):
    """``bench.core.memory_model.fit`` counted per configuration, with the prediction cache emptied before and after."""
    calls: list[str] = []
    real = predictor.fit

    def fit(case, target="cpu", *args, **kwargs):
        calls.append(case.key)
        return real(case, target, *args, **kwargs)

    validity._fitted.cache_clear()
    monkeypatch.delenv(validity.MODELS_ENV, raising=False)
    monkeypatch.setattr(predictor, "fit", fit)
    yield calls
    validity._fitted.cache_clear()


def test_the_memory_model_is_fitted_once_per_configuration(counted_fits):
    train = dataclasses.replace(SWEEP, mode="train")
    for case in [dataclasses.replace(SWEEP, batch=b) for b in (1, 2, 8)] + [dataclasses.replace(train, batch=b) for b in (1, 4)]:
        assert validity.predicted_tensor_peak(case, "cpu", 10.0)["predicted_tensor_mib"] > 0
    assert len(counted_fits) == 2 and len(set(counted_fits)) == 2  # infer once, train once


def test_the_cached_prediction_equals_a_fresh_fit_at_every_batch_of_the_configuration(counted_fits):
    """Every batch of a configuration through the cache, against the model fitted afresh for that very case;
    two configurations in turn, so a cache key that lost a field (the mode) gives one the other's model."""
    for mode in ("infer", "train"):
        for batch in (1, 2, 8):
            case = dataclasses.replace(SWEEP, mode=mode, batch=batch)
            cached = validity.predicted_tensor_peak(case, "cpu", 10.0)["predicted_tensor_mib"]
            fresh = predictor.fit(case, "cpu").peak(batch) / MIB
            assert cached == pytest.approx(fresh, rel=1e-9), (mode, batch)


def test_another_process_of_the_run_reads_the_model_instead_of_fitting_it(counted_fits, tmp_path, monkeypatch):
    monkeypatch.setenv(validity.MODELS_ENV, str(tmp_path))
    validity.predicted_tensor_peak(dataclasses.replace(SWEEP, batch=2), "cpu", 10.0)
    validity._fitted.cache_clear()  # as a fresh child process starts
    again = validity.predicted_tensor_peak(dataclasses.replace(SWEEP, batch=8), "cpu", 10.0)["predicted_tensor_mib"]
    assert len(counted_fits) == 1 and len(list(tmp_path.iterdir())) == 1
    assert again == predictor.fit(SWEEP, "cpu").peak(8) / MIB  # the same model, bit for bit


def test_a_damaged_shared_model_is_fitted_again(counted_fits, tmp_path, monkeypatch):
    monkeypatch.setenv(validity.MODELS_ENV, str(tmp_path))
    first = validity.predicted_tensor_peak(SWEEP, "cpu", 10.0)["predicted_tensor_mib"]
    for path in tmp_path.iterdir():
        path.write_bytes(path.read_bytes()[:40])  # a write cut short
    validity._fitted.cache_clear()
    assert validity.predicted_tensor_peak(SWEEP, "cpu", 10.0)["predicted_tensor_mib"] == first
    assert len(counted_fits) == 2
