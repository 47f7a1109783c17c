"""pytest entry point: ``pytest bench --benchmark-autosave`` (a thin face over ``bench.core``).

Adds ``--ae-*`` options and parametrizes ``test_speed`` with one test per case (ids such as
``transformer-small-1280x152-amp-bf16-flash-ckpt-train-b16``). Each case goes through the same
run start, launcher, timer and run end as ``python -m bench run`` (``bench/core/session.py``);
pytest-benchmark is handed the per-iteration samples the core measured, so its JSON and
``results.csv`` hold the same numbers.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import pytest

from bench.core.commandline import (
    AXIS_HELP, DEVICE_HELP, MATRIX_HELP, MIN_TIME_HELP, PROCESSES_HELP, RESULTS_HELP, add_launcher_args,
)
from bench.plan.defaults import PLAN_FOR_HELP
from bench.runs.contract import DEFAULT_CARD, META_JSON
from bench.scale.options import add_shard_option

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    group = parser.getgroup("ae-bench", "autoencoder benchmark matrix")
    group.addoption("--ae-matrix", default="auto", help=MATRIX_HELP)
    for axis, text in AXIS_HELP.items():
        group.addoption(f"--ae-{axis}", default=None, help=f"narrow the matrix: {text}")
    group.addoption("--ae-results", default="results", help=RESULTS_HELP)
    group.addoption("--ae-device", default="auto", help=DEVICE_HELP)
    group.addoption("--ae-min-time", type=float, default=None, help=MIN_TIME_HELP + " (seconds)")
    add_launcher_args(group.addoption, "--ae-")
    add_shard_option(group.addoption, "--ae-")  # --ae-shard K/N: one part of the matrix (bench/core/shard.py)
    group.addoption("--ae-selfcheck", action="store_true",
                    help="also run the cross-checks (harness vs torch.utils.benchmark, our Block vs nn.TransformerEncoderLayer, "
                         "the memory model vs real steps): figures go to the run's selfcheck.json and the report")
    group.addoption("--ae-plan-accuracy", metavar="PRESETS", default="tiny",
                    help="with --ae-selfcheck: presets whose memory model bench/test_selfcheck.py checks, or 'all' "
                         "[default: tiny]")
    group.addoption("--ae-profile", metavar="DIR", default=None,
                    help="after the timed cases, profile each case apart from them into DIR (bench/test_profile.py)")
    group.addoption("--ae-quality-seconds", type=float, default=None,
                    help="train each case on real images for this many seconds and score it (bench/test_quality.py); off by default")
    group.addoption("--ae-quality-steps", type=int, default=None,
                    help="as --ae-quality-seconds, with a budget of optimizer steps")
    group.addoption("--ae-plan-for", metavar="CARD", default=DEFAULT_CARD, help=PLAN_FOR_HELP)
    group.addoption("--ae-processes", type=int, default=None, metavar="N", help=PROCESSES_HELP)
    group.addoption("--ae-plan-budget", metavar="SIZE", default=None,
                    help="at the end, write the full batch-size plan of every configuration for a card of SIZE (8GiB; "
                         "GB = 10^9 bytes) into the run folder, measured on a GPU (bench/plan/planner.py); instead of "
                         "--ae-plan-for's partial plan")


class AeSession:
    """The run that this pytest session is: its selection, and the run opened on its first case."""

    def __init__(self, config, selection) -> None:
        self.config = config
        self.selection = selection
        self.run = None  # opened on the first case, so --collect-only leaves no folder
        self.progress = None
        self.selfchecks: list[dict] = []
        self.stopped = False  # the session was interrupted (Ctrl-C, a time limit's SIGINT): its end skips the slow parts

    @property
    def run_dir(self) -> Optional[Path]:
        return self.run.run_dir if self.run else None

    @property
    def rows(self) -> list[dict]:
        return self.run.rows if self.run else []

    def measure(self, case):
        self.ensure_run()
        measurement = self.run.measure(case)
        self._say(self.progress.line(measurement.row, case))
        return measurement

    def record_selfcheck(self, figures: dict) -> None:
        """Add one cross-check's figures to the run's selfcheck.json (rewritten whole each time)."""
        import json

        from bench.runs.files import atomic_write_text
        from bench.selfcheck.crosschecks import SELFCHECK_JSON

        self.ensure_run()
        self.selfchecks.append(figures)
        atomic_write_text(self.run_dir / SELFCHECK_JSON, json.dumps(self.selfchecks, indent=1) + "\n")
        self._say("ae-bench selfcheck: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in figures.items() if not isinstance(v, list)))

    def ensure_run(self) -> None:
        if self.run is None:
            from bench.core.loop import Progress
            from bench.core.session import start_run

            option = self.config.getoption
            self.run = start_run(self.selection, Path(option("--ae-results")), "pytest", ["pytest"] + sys.argv[1:],
                                 option("--ae-launcher"), option("--ae-case-timeout"))
            self.progress = Progress(len(self.selection.cases), self.selection.cases)
            self._say(f"ae-bench: {len(self.selection.cases)} cases of matrix {self.selection.matrix.name!r} on "
                      f"{self.selection.facts.name} ({self.selection.facts.type}), {self.run.launcher.name}; "
                      f"rows -> {self.run.writer.csv_path}")
            for note in self.run.notes:
                self._say(f"ae-bench: {note}")

    def _say(self, line: str) -> None:
        """A line on the terminal between pytest's own output: the same progress line as ``python -m bench run``."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            path = reporter.currentfspath  # pytest would repeat the file's name before the next dot
            if reporter._tw.width_of_current_line:  # after pytest's progress dots
                reporter.write("\n")
            reporter.write_line(line)
            reporter.currentfspath = path


_SESSION_KEY = pytest.StashKey[AeSession]()


def _session(config) -> AeSession:
    return config.stash[_SESSION_KEY]


def pytest_configure(config):
    from bench.core.selection import make_selection

    _stop_on_signals()

    option = lambda axis: config.getoption(f"--ae-{axis}")  # noqa: E731
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        # pytest-xdist: cases timed side by side slow each other down, and each worker would be a run of its own
        raise pytest.UsageError("ae-bench: the benchmark runs one case at a time; run it without pytest-xdist's -n "
                                "(or with -p no:xdist)")
    try:
        selection = make_selection(config.getoption("--ae-matrix"), option, config.getoption("--ae-device"),
                                   config.getoption("--ae-min-time"), shard=config.getoption("--ae-shard"),
                                   shard_option="--ae-shard", processes=config.getoption("--ae-processes"))
        timeout = config.getoption("--ae-case-timeout")
        if timeout is not None:  # refused before the first case, not once per case (in-process has no way to keep it)
            from bench.core.launchers import choose_launcher

            choose_launcher(config.getoption("--ae-launcher"), selection.device, timeout).close()
        budget = config.getoption("--ae-plan-budget")
        if budget:
            from bench.units import parse_bytes

            parse_bytes(budget, "--ae-plan-budget")
        from bench.plan.partial import resolve_card

        resolve_card(config.getoption("--ae-plan-for"), "--ae-plan-for")
    except ValueError as err:
        raise pytest.UsageError(f"ae-bench: {err}") from None
    config.stash[_SESSION_KEY] = AeSession(config, selection)
    _shorten_benchmark_table(config)
    # Keep saved runs of different GPUs and torch versions apart: compare never mixes them.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        import torch

        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{selection.facts.slug}-torch{torch.__version__.split('+')[0]}"


# pytest-benchmark's defaults, and what this suite shows instead unless the user chose otherwise: the
# columns a person reads (per-batch median and spread, batches/s, rounds) under the case id alone.
# The JSON that --benchmark-autosave writes keeps every statistic either way.
_BENCHMARK_DEFAULT_COLUMNS = ["min", "max", "mean", "stddev", "median", "iqr", "outliers", "ops", "rounds", "iterations"]
_SHORT_COLUMNS = ["median", "iqr", "ops", "rounds"]


def _shorten_benchmark_table(config) -> None:
    option = config.option
    if getattr(option, "benchmark_columns", None) == _BENCHMARK_DEFAULT_COLUMNS:
        option.benchmark_columns = _SHORT_COLUMNS
    if getattr(option, "benchmark_name", None) == "normal":
        option.benchmark_name = "short"


def pytest_generate_tests(metafunc):
    if "ae_case" in metafunc.fixturenames:
        cases = _session(metafunc.config).selection.cases
        metafunc.parametrize("ae_case", cases, ids=[c.id for c in cases])


# benchmark modules that run only when asked, after every timed case (never beside a timed loop)
_ON_REQUEST = {"test_profile.py": "--ae-profile", "test_selfcheck.py": "--ae-selfcheck"}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    later = [item for item in items if Path(str(item.path)).parent == here and Path(str(item.path)).name in _ON_REQUEST]
    if not later:
        return
    dropped = [item for item in later if not config.getoption(_ON_REQUEST[Path(str(item.path)).name])]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if item not in later] + [item for item in later if item not in dropped]


@pytest.fixture(scope="session")
def ae_session(request) -> AeSession:
    return _session(request.config)


def pytest_benchmark_update_machine_info(config, machine_info):
    facts = _session(config).selection.facts
    machine_info["ae_bench"] = {
        "device": facts.type, "name": facts.name, "memory_mib": round(facts.total_memory_mib), "driver": facts.driver,
        "cuda": facts.cuda, "cudnn": facts.cudnn, "torch": facts.torch, "capability": facts.capability, "slug": facts.slug,
    }


def pytest_benchmark_update_json(config, benchmarks, output_json):
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None and session.run is not None:
        import json

        meta = json.loads((session.run_dir / META_JSON).read_text())
        # the command and device facts, so a report made from this JSON says how to reproduce it
        output_json["ae_bench"] = {"run_id": session.run.run_id, "run_dir": str(session.run_dir),
                                   "matrix": session.selection.matrix.name, "calibration": meta.get("calibration", {}),
                                   "meta": meta}
        # the rows as settled at the run's end (a re-rated MFU, an invalid status): the JSON says what results.csv says
        rows = {row["case_key"]: row for row in session.run.rows}
        for bench in benchmarks:
            row = rows.get(bench.get("extra_info", {}).get("case_key"))
            if row is not None:
                bench["extra_info"].update({k: v for k, v in row.items() if v not in (None, "")})


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    mine = machine_info.get("ae_bench", {})
    theirs = compared_benchmark.get("machine_info", {}).get("ae_bench", {})
    for key in ("name", "torch"):
        if mine.get(key) != theirs.get(key):
            benchmarksession.logger.warning(
                f"ae-bench: comparing runs from different machines: {key} {theirs.get(key)!r} (saved) vs {mine.get(key)!r} (now); "
                "differences may be the machine, not the code")


def _stop_on_signals() -> None:
    """SIGTERM (what a CI job's timeout sends) and SIGHUP stop the session as Ctrl-C does: pytest then ends it cleanly
    (the rows, the report and pytest-benchmark's JSON are written), instead of dying with -15 and only the rows."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, interrupt)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Before pytest-benchmark saves its JSON (its own wrapper, inside this one): stop a child still
    running and settle the run's peaks, so the JSON gets the rows' final MFU. After: the plan, if asked."""
    ae = session.config.stash.get(_SESSION_KEY, None)
    if ae is not None and ae.run is not None:
        ae.run.close()
        ae.stopped = exitstatus == pytest.ExitCode.INTERRUPTED
        if not ae.stopped:  # a stopped session has seconds left before SIGKILL: the JSON and the report come first
            ae.run.settle()
    yield
    # after the terminal summary (inside this wrapper) wrote the report: a report that could not be written, or a
    # session that measured cases and kept no row, is never a success
    if ae is not None and ae.run is not None and session.exitstatus == pytest.ExitCode.OK:
        if ae.run.report_error is not None or (session.testscollected and not ae.run.rows):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = config.stash.get(_SESSION_KEY, None)
    if session is None or session.run is None:
        return
    from bench.core.session import end_run
    from bench.report.build import write_report

    terminalreporter.section("ae-bench")
    facts = session.selection.facts
    terminalreporter.write_line(f"device: {facts.name} ({facts.type}), matrix: {session.selection.matrix.name}, "
                                f"launcher: {session.run.launcher.name}")
    if session.stopped:  # the report from the rows as they are, before the slow parts (a plan, the end peaks)
        from bench.core.commandline import rerun_command

        terminalreporter.write_line(f"ae-bench: the session was stopped: no plan for the report's first screen (make one with "
                                    f"`python -m bench plan --results PLAN_DIR ...`, then "
                                    f"`{rerun_command(['report', str(session.run_dir), '--with', 'PLAN_DIR'])}`)")
        for line in end_run(session.run, write_report, settle=False):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"ae-bench: stopped; the rows measured are in {session.run.writer.csv_path}. To measure "
                                    f"the cases left into the same folder: `python -m bench run` with the same selection "
                                    f"(--matrix, --families, ... as --ae-* here) and --resume {session.run_dir}")
        return
    from bench.plan.partial import plan_for_run  # before the report, which answers from it

    for line in plan_for_run(session.run, session.selection, config.getoption("--ae-plan-for"),
                             config.getoption("--ae-plan-budget")):
        terminalreporter.write_line(f"ae-bench: {line}")
    for line in end_run(session.run, write_report):
        terminalreporter.write_line(line)
