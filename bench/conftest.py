"""pytest entry point: ``pytest bench --benchmark-autosave``.

Adds ``--ae-*`` options, parametrizes ``test_speed`` with one test per case (ids such as
``transformer-small-1280x152-amp-bf16-flash-ckpt-train-b16``), times each case through
pytest-benchmark (one round = one batch, synchronised on CUDA), and writes every row to
``results/<run-id>/results.csv`` as soon as its case finishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
import torch

from bench.calibration import calibrate
from bench.measure import Measurement, measure_case
from bench.options import AXIS_HELP, DEVICE_HELP, MATRIX_HELP, MIN_TIME_HELP, RESULTS_HELP, Plan, make_plan
from bench.results import RunWriter, new_run_id, run_meta
from bench.scenarios import synchronizer
from bench.sweep import summary_table

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    group = parser.getgroup("ae-bench", "autoencoder benchmark matrix")
    group.addoption("--ae-matrix", default="auto", help=MATRIX_HELP)
    for axis, text in AXIS_HELP.items():
        group.addoption(f"--ae-{axis}", default=None, help=f"narrow the matrix: {text}")
    group.addoption("--ae-results", default="results", help=RESULTS_HELP)
    group.addoption("--ae-device", default="auto", help=DEVICE_HELP)
    group.addoption("--ae-min-time", type=float, default=None, help=MIN_TIME_HELP)
    group.addoption("--ae-profile", metavar="DIR", default=None,
                    help="after the timed cases, profile each case apart from them into DIR (bench/test_profile.py)")
    group.addoption("--ae-quality-seconds", type=float, default=None,
                    help="train each case on real images for this many seconds and score it (bench/test_quality.py); off by default")
    group.addoption("--ae-quality-steps", type=int, default=None,
                    help="as --ae-quality-seconds, with a budget of optimizer steps")
    group.addoption("--ae-plan-budget", metavar="SIZE", default=None,
                    help="at the end, write a batch-size plan for a card of SIZE (8GiB; GB = 10^9 bytes) into the run folder (bench/plan.py)")
    group.addoption("--ae-plan-accuracy", metavar="PRESETS", default="tiny",
                    help="presets whose memory model bench/test_plan_accuracy.py checks, or 'all' [default: tiny]")


class AeSession:
    """The run that this pytest session is: its plan, its folder and its rows."""

    def __init__(self, config, plan: Plan) -> None:
        self.config = config
        self.plan = plan
        self.run_id = new_run_id(plan.facts.slug)
        self.results_root = Path(config.getoption("--ae-results"))
        self.writer: Optional[RunWriter] = None
        self.rows: list[dict] = []
        self._calibration: Optional[dict] = None

    @property
    def calibration(self) -> dict:
        if self._calibration is None:
            self._calibration = calibrate(self.plan.device)
        return self._calibration

    @property
    def run_dir(self) -> Path:
        return self.results_root / self.run_id

    def _writer(self) -> RunWriter:
        if self.writer is None:  # created on the first row, so --collect-only leaves no folder
            import sys

            self.writer = RunWriter(self.run_dir, run_meta(self.plan.facts, self.plan.matrix.name, ["pytest"] + sys.argv[1:],
                                                           {"entry": "pytest", "settings": self.plan.settings.__dict__},
                                                           self.calibration))
        return self.writer

    def measure(self, case, benchmark) -> Measurement:
        device = self.plan.device
        sync = synchronizer(device)

        def timed_loop(step, iters):
            if getattr(benchmark, "disabled", False):  # --benchmark-disable: time it ourselves
                from bench.latency import time_steps

                return time_steps(step, device, iters)

            def one_batch():
                step()
                sync()

            benchmark.pedantic(one_batch, rounds=iters, iterations=1, warmup_rounds=0)
            return list(benchmark.stats.stats.data), "sync-perf-counter"

        measurement = measure_case(case, device, self.plan.facts, self.plan.settings, self.run_id, timed_loop)
        self._writer().append(measurement.row, measurement.samples_s)
        self.rows.append(measurement.row)
        return measurement


_SESSION_KEY = pytest.StashKey[AeSession]()


def _session(config) -> AeSession:
    return config.stash[_SESSION_KEY]


def pytest_configure(config):
    option = lambda axis: config.getoption(f"--ae-{axis}")  # noqa: E731
    try:
        plan = make_plan(config.getoption("--ae-matrix"), option, config.getoption("--ae-device"),
                         config.getoption("--ae-min-time"))
    except ValueError as err:
        raise pytest.UsageError(f"ae-bench: {err}") from None
    config.stash[_SESSION_KEY] = AeSession(config, plan)
    # Keep saved runs of different GPUs and torch versions apart: compare never mixes them.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{plan.facts.slug}-torch{torch.__version__.split('+')[0]}"


def pytest_generate_tests(metafunc):
    if "ae_case" in metafunc.fixturenames:
        cases = _session(metafunc.config).plan.cases
        metafunc.parametrize("ae_case", cases, ids=[c.id for c in cases])


def pytest_collection_modifyitems(config, items):
    # Profiles run only when asked, and after every timed case: never beside a timed loop.
    profiles = [item for item in items if Path(str(item.path)) == Path(__file__).parent / "test_profile.py"]
    if profiles:
        rest = [item for item in items if item not in profiles]
        if not config.getoption("--ae-profile"):
            config.hook.pytest_deselected(items=profiles)
            profiles = []
        items[:] = rest + profiles


@pytest.fixture(scope="session")
def ae_session(request) -> AeSession:
    return _session(request.config)


def pytest_benchmark_update_machine_info(config, machine_info):
    facts = _session(config).plan.facts
    machine_info["ae_bench"] = {
        "device": facts.type, "name": facts.name, "memory_mib": round(facts.total_memory_mib), "driver": facts.driver,
        "cuda": facts.cuda, "cudnn": facts.cudnn, "torch": facts.torch, "capability": facts.capability, "slug": facts.slug,
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None and session.rows:
        output_json["ae_bench"] = {"run_id": session.run_id, "run_dir": str(session.run_dir),
                                   "matrix": session.plan.matrix.name, "calibration": session.calibration}
        meta_path = session.run_dir / "meta.json"
        if meta_path.is_file():  # the command and device facts, so a report made from this JSON says how to reproduce it
            import json

            output_json["ae_bench"]["meta"] = json.loads(meta_path.read_text())


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    mine = machine_info.get("ae_bench", {})
    theirs = compared_benchmark.get("machine_info", {}).get("ae_bench", {})
    for key in ("name", "torch"):
        if mine.get(key) != theirs.get(key):
            benchmarksession.logger.warning(
                f"ae-bench: comparing runs from different machines: {key} {theirs.get(key)!r} (saved) vs {mine.get(key)!r} (now); "
                "differences may be the machine, not the code")


def pytest_sessionstart(session):
    budget = session.config.getoption("--ae-plan-budget", None)
    if budget:
        from bench.units import parse_bytes

        try:
            parse_bytes(budget)
        except ValueError as err:
            raise pytest.UsageError(f"ae-bench: --ae-plan-budget: {err}") from None


def pytest_sessionfinish(session, exitstatus):
    """--ae-plan-budget: plan the matrix for that card; plan.csv and plan.md go into the run folder."""
    ae, budget = session.config.stash.get(_SESSION_KEY, None), session.config.getoption("--ae-plan-budget", None)
    if ae is not None and budget:
        from bench.plan import write_session_plan

        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        paths = write_session_plan(ae, budget)
        if reporter is not None:
            reporter.write_line(f"ae-bench: batch-size plan for {budget} written to {paths[0]} and {paths[1]}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = config.stash.get(_SESSION_KEY, None)
    if session is None or not session.rows:
        return
    terminalreporter.section("ae-bench")
    terminalreporter.write_line(f"device: {session.plan.facts.name} ({session.plan.facts.type}), matrix: {session.plan.matrix.name}")
    terminalreporter.write_line(summary_table(session.rows))
    terminalreporter.write_line(f"rows written to {session.run_dir / 'results.csv'}")
    try:
        from bench.report import write_report

        terminalreporter.write_line(f"report written to {write_report(session.run_dir)}")
    except Exception as err:  # noqa: BLE001 - a report problem must not hide the rows measured above
        terminalreporter.write_line(f"report not written: {type(err).__name__}: {err}; "
                                    f"retry with `python -m bench report {session.run_dir}`")
