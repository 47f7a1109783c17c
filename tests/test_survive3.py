"""Sweeps that survive, round 3 (issue 35): a check that measured nothing never passes, a run that measured
nothing or could not write its report never exits 0, and meaningless option values are refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main
from test_compare import steady, write_run

REPO = Path(__file__).resolve().parent.parent


# -- item 3: a memory floor that judges nothing is refused ------------------------------------------------------


def _tripled(tmp_path):
    base = write_run(tmp_path / "b", {"a": {"samples_ms": steady(5), "reserved_peak_mib": 1000.0}})
    cand = write_run(tmp_path / "c", {"a": {"samples_ms": steady(5, seed=1), "reserved_peak_mib": 3000.0}})
    return base, cand


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "-1"])
def test_compare_refuses_a_memory_floor_that_is_not_a_finite_size(tmp_path, capsys, value):
    base, cand = _tripled(tmp_path)
    assert main(["compare", str(base), str(cand), "-q"]) == 1  # the 3x growth fails at the default floor
    capsys.readouterr()
    assert main(["compare", str(base), str(cand), "-q", "--memory-floor-mib", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--memory-floor-mib" in err[0]
    config = tmp_path / "rules.toml"
    config.write_text(f"[defaults]\nmemory_floor_mib = {value}\n")
    assert main(["compare", str(base), str(cand), "-q", "--config", str(config)]) == 2
    assert "memory_floor_mib" in capsys.readouterr().err


# -- item 4: an unwritable --json cannot hide the verdict -------------------------------------------------------


def test_compare_prints_its_verdict_before_an_unwritable_json_fails(tmp_path, capsys):
    base, cand = _tripled(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["compare", str(base), str(cand), "-q", "--json", str(blocker / "report.json")])
    out, err = capsys.readouterr()
    assert status == 3 and out.startswith("FAIL: 1 of 1 cases regressed") and str(blocker) in err


# -- item 2: a factory that ends the process costs its row, never the run's exit status ---------------------------


def _run_cli(tmp_path, family: str, *extra: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bench", "run", "--matrix", "smoke", "--sizes", "201x201", "--modes",
                           "infer", "--families", family, "--results", str(tmp_path / "r"), "--min-time", "0", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("factory", ["os_exit", "sys_exit_3"])
def test_a_factory_that_exits_is_an_error_row_and_the_run_fails(tmp_path, factory):
    """The run used to build the model in its own process for the model facts: os._exit(0) or sys.exit(0) there ended
    the run with 0, no row, no report; sys.exit(3) with 3 and no message. Now: an error row naming the exit, exit 1."""
    import pandas as pd

    done = _run_cli(tmp_path, f"tests.plugins_exit:{factory}", "--launcher", "in-process")
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    (csv_path,) = (tmp_path / "r").glob("*/results.csv")
    table = pd.read_csv(csv_path)
    assert list(table["status"]) == ["error"] and "exit(" in table["reason"][0]
    assert list((tmp_path / "r").glob("*/report.md"))


def test_model_facts_never_build_a_plugin_in_the_runs_process(tmp_path):
    from bench.core.cases import Case
    from bench.core.model_probe import write_model_facts

    path = write_model_facts(tmp_path, [Case(family="tests.plugins_exit:sys_exit", preset="tiny", size="201x201",
                                             attention="none")])
    import json

    skipped = [n for n in json.loads(path.read_text())["not_computed"] if "plugins_exit" in n["what"]]
    assert skipped and "only where its case runs" in skipped[0]["error"]


# -- item 4: a run whose report cannot be written never exits 0 -------------------------------------------------


def test_a_run_whose_report_cannot_be_written_exits_3(tmp_path, monkeypatch, capsys):
    import errno

    import bench.report.build as build

    def full(run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(run_dir) / "report.md"))

    monkeypatch.setattr(build, "write_report", full)
    status = main(["run", "--matrix", "smoke", "--sizes", "201x201", "--modes", "infer", "--families", "tests.plugins:fine",
                   "--results", str(tmp_path / "r"), "--min-time", "0", "--launcher", "in-process"])
    err = capsys.readouterr().err
    assert status == 3 and "report could not be written" in err and "No space left" in err


# -- item 14: meaningless option values refused in one line naming the option ------------------------------------

SMALL = ["--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--modes", "infer"]


@pytest.mark.parametrize("argv, option", [
    (["plan-check", "--tolerance", "nan"], "--tolerance"),
    (["plan-check", "--tolerance", "inf"], "--tolerance"),
    (["plan-check", "--tolerance", "1e300"], "--tolerance"),
    (["run", *SMALL, "--case-timeout", "1e300"], "--case-timeout"),
    (["quality", "--families", "cnn", "--budget-seconds", "1e300"], "--budget-seconds"),
    (["quality", "--families", "cnn", "--lr", "1e300"], "--lr"),
    (["quality", "--families", "cnn", "--lr", "nan"], "--lr"),
    (["downstream", "--ae-seconds", "1e300"], "--ae-seconds"),
    (["run", *SMALL, "--shard", ""], "--shard"),
    (["run", *SMALL, "--list", "--shard", ""], "--shard"),
])
def test_a_meaningless_option_value_is_refused_naming_the_option(argv, option, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0], err


def test_compare_refuses_a_negative_seed_naming_it(tmp_path, capsys):
    base, cand = _tripled(tmp_path)
    assert main(["compare", str(base), str(cand), "-q", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0]


def test_baseline_never_deletes_a_json_file_it_did_not_write(tmp_path, capsys):
    run = write_run(tmp_path / "run", {"a": {"samples_ms": steady(5)}})
    store = tmp_path / "baselines"
    assert main(["baseline", str(run), "--store", str(store)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    notes = folder / "notes.json"
    notes.write_text('{"why": "the card was swapped on 1 March"}')
    assert main(["baseline", str(run), "--store", str(store)]) == 0
    assert notes.read_text() == '{"why": "the card was swapped on 1 March"}'
    assert (folder / "results.csv").is_file()


# -- item 7: a row twice, or a last line cut inside a field, is refused ------------------------------------------


def test_report_and_compare_refuse_a_case_key_twice(tmp_path, capsys):
    run = write_run(tmp_path / "r", {"a": {"samples_ms": steady(5)}, "b": {"samples_ms": steady(5)}})
    csv_path = run / "results.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines + [lines[1].replace(",5.", ",9.", 1)]))  # case a again, another figure
    other = write_run(tmp_path / "o", {"a": {"samples_ms": steady(5)}, "b": {"samples_ms": steady(5)}})
    for argv in (["report", str(run)], ["compare", str(other), str(run), "-q"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "key-a" in err[0] and "lines 2 and 4" in err[0], err


@pytest.mark.parametrize("cut", [3, 30])  # inside the last field (every field there), and mid-row
def test_a_last_line_cut_short_is_refused_with_the_resume_hint(tmp_path, capsys, cut):
    from bench.runs.schema import COLUMNS

    last = COLUMNS[-1].name  # whichever column ends a row (the phase times, since issue 36; once the timestamp)
    stamp = {"timestamp": "2026-01-01T00:00:00+00:00", last: 12.345678}
    run = write_run(tmp_path / "r", {"a": {"samples_ms": steady(5), **stamp}, "b": {"samples_ms": steady(5), **stamp}})
    csv_path = run / "results.csv"
    text = csv_path.read_text()
    csv_path.write_text(text.rstrip()[:-cut])
    if cut == 3:  # the cut fell inside the last field: the line still has every field
        import csv

        header, *rows = csv.reader(csv_path.read_text().splitlines())
        assert len(rows[-1]) == len(header) and rows[-1][-1] and rows[-1][-1] != "12.3457", rows[-1][-3:]
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0], err


# -- item 9: the case timeout starts when the child is ready; a hanging factory is under it ------------------------


class _FakeChild:
    """A child that never ends and writes its ready marker when the fake clock reaches ``ready_at``."""

    def __init__(self, clock: list, ready: Path, ready_at):
        self.clock, self.ready, self.ready_at = clock, ready, ready_at

    def poll(self):
        return None

    def wait(self, timeout):
        import subprocess

        self.clock[0] += timeout
        if self.ready_at is not None and self.clock[0] >= self.ready_at:
            self.ready.touch()
        raise subprocess.TimeoutExpired("child", timeout)


@pytest.mark.parametrize("ready_at, killed_at", [(50.0, 60.0), (2.0, 12.0), (None, 610.0)])
def test_the_case_timeout_counts_from_the_childs_ready_marker(tmp_path, ready_at, killed_at):
    """A 10 s timeout: a child ready after 50 s of start-up is stopped at 60 s, not at 10; one that never says it is
    ready (an older checkout's) gets the 600 s start-up allowance on top."""
    from bench.core.launchers import wait_for_child

    clock = [0.0]
    child = _FakeChild(clock, tmp_path / "ready", ready_at)
    assert wait_for_child(child, tmp_path / "ready", 10.0, startup_s=600.0, clock=lambda: clock[0], poll_s=1.0) is False
    assert clock[0] == pytest.approx(killed_at, abs=1.0)


def test_a_factory_that_hangs_is_a_timeout_row_not_a_hung_run(tmp_path):
    """The run built every model in its own process for the model facts, before the first case and outside any
    timeout: a hanging factory hung the run (0 rows, nothing on stderr). Now it is built only in the case's child."""
    import pandas as pd

    done = _run_cli(tmp_path, "tests.plugins_exit:hangs_in_factory", "--case-timeout", "5")
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    (csv_path,) = (tmp_path / "r").glob("*/results.csv")
    assert list(pd.read_csv(csv_path)["status"]) == ["timeout"]


# -- item 6: a line break in a plug-in family name is refused, not written two ways -------------------------------


@pytest.mark.parametrize("name", ["tests.plugins:fi\nne", "tests.plugins:fi\rne", "tests.plugins:fi\x00ne"])
def test_a_family_name_with_a_line_break_is_refused_in_one_line(name, capsys, tmp_path):
    from bench.core.cases import Case

    with pytest.raises(ValueError, match="bad family"):
        Case(family=name, preset="x", attention="none")
    assert main(["run", "--matrix", "smoke", "--sizes", "201x201", "--modes", "infer", "--families", name, "--results",
                 str(tmp_path / "r"), "--launcher", "in-process", "--min-time", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad family" in err[0]
    assert not (tmp_path / "r").exists()


# -- item 5: a quality rerun into the same --out never replaces the earlier run --------------------------------


def test_quality_refuses_an_out_folder_that_holds_a_quality_run(tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    earlier = "case_id,seed\na,0\nb,0\nc,0\n"
    (out / "quality.csv").write_text(earlier)
    assert main(["quality", "--families", "cnn", "--budget-steps", "1", "--seeds", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a quality run" in err[0]
    assert (out / "quality.csv").read_text() == earlier


def test_quality_takes_its_folders_lock(tmp_path, capsys):
    from bench.runs.lock import FolderLock

    out = tmp_path / "q"
    out.mkdir()
    held = FolderLock(out).acquire("the test")
    try:
        assert main(["quality", "--families", "cnn", "--budget-steps", "1", "--seeds", "0", "--out", str(out)]) == 2
    finally:
        held.release()
    assert "in use by another process" in capsys.readouterr().err
    assert not (out / "quality.csv").exists()


# -- item 11: SIGTERM or SIGHUP in a run's start-up or end phase: exit 130 with a message -------------------------

_SIGNAL_AT = """
import os, signal, sys
import {module} as target
real = target.{name}
def {name}(*args, **kwargs):
    os.kill(os.getpid(), signal.{sig})  # the signal lands inside this phase: an event, not a clock
    return real(*args, **kwargs)
target.{name} = {name}
from bench.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("module, name, sig, hint", [
    ("bench.trackers.calibration", "calibrate", "SIGTERM", "interrupted"),   # start-up calibration
    ("bench.plan.partial", "plan_for_run", "SIGTERM", "resume with"),         # the end phase: plan, peaks, report
    ("bench.plan.partial", "plan_for_run", "SIGHUP", "resume with"),
])
def test_a_stop_signal_outside_the_sweep_exits_130_with_a_message(tmp_path, module, name, sig, hint):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SIGNAL_AT.format(module=module, name=name, sig=sig), "run", "--matrix",
                           "smoke", "--sizes", "201x201", "--modes", "infer", "--families", "tests.plugins:fine",
                           "--results", str(tmp_path / "r"), "--launcher", "in-process", "--min-time", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 130, (done.returncode, done.stderr[-1500:])
    assert hint in done.stderr


# -- the fault table's new lines ----------------------------------------------------------------------------------


def test_fault_table_a_last_line_cut_inside_its_timestamp_is_refused_and_kept(tmp_path):
    from bench.selfcheck.faults import a_last_line_cut_inside_its_timestamp

    result = a_last_line_cut_inside_its_timestamp(tmp_path)
    assert result.exit_status == "2" and "--resume" in result.message and result.rows_lost == 0


def test_fault_table_a_factory_that_exits_is_one_error_row_and_exit_1(tmp_path):
    from bench.selfcheck.faults import a_factory_that_exits

    result = a_factory_that_exits(tmp_path)
    assert result.exit_status == "1" and result.rows_lost == 0 and result.facts["statuses"] == ["error", "ok"]
    assert result.facts["report"]


# -- item 12: ab's worktrees left by a SIGKILL are removed by the next ab ------------------------------------------


def test_ab_removes_the_worktrees_of_a_killed_ab_and_keeps_a_live_ones(tmp_path):
    import shutil
    import subprocess
    import sys
    import tempfile

    from bench.compare.ab import remove_stale_worktrees

    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *a],  # noqa: E731
                                    check=True, capture_output=True, text=True)
    git("init", "-q")
    (repo / "f").write_text("x")
    git("add", "f")
    git("commit", "-qm", "one")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: the killed ab's
    dead = Path(tempfile.mkdtemp(prefix=f"ae-bench-ab-{gone.pid}-")) / "tree"
    live = Path(tempfile.mkdtemp(prefix=f"ae-bench-ab-{os.getpid()}-")) / "tree"
    try:
        git("worktree", "add", "--detach", "-q", str(dead), "HEAD")
        git("worktree", "add", "--detach", "-q", str(live), "HEAD")
        assert remove_stale_worktrees(repo) == [dead]
        listed = git("worktree", "list", "--porcelain").stdout
        assert str(dead) not in listed and str(live) in listed and not dead.parent.exists()
    finally:
        shutil.rmtree(dead.parent, ignore_errors=True)
        shutil.rmtree(live.parent, ignore_errors=True)


# -- item 13: a case's os.chdir does not move a relative --results ------------------------------------------------


def test_a_case_that_changes_directory_leaves_a_relative_results_folder_working(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bench", "run", "--matrix", "smoke", "--sizes", "201x201", "--modes",
                           "infer", "--families", "tests.plugins_exit:chdir_in_step,tests.plugins:fine", "--results", "r",
                           "--launcher", "in-process", "--min-time", "0"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode in (0, 1), (done.returncode, done.stderr[-1500:])
    assert "writable again" not in done.stderr
    (csv_path,) = (tmp_path / "r").glob("*/results.csv")
    assert len(csv_path.read_text().strip().splitlines()) == 3  # the header and both cases
    assert list((tmp_path / "r").glob("*/report.md"))


# -- item 8: with meta.json lost, a resume under other timing settings is refused ---------------------------------


def test_a_resume_without_meta_json_under_another_process_count_is_refused(tmp_path, capsys):
    base = ["run", "--matrix", "smoke", "--sizes", "201x201", "--modes", "infer", "--results", str(tmp_path / "r"),
            "--min-time", "0"]
    assert main([*base, "--families", "tests.plugins:fine", "--launcher", "in-process"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    (run_dir / "meta.json").unlink()
    rows = (run_dir / "results.csv").read_text()
    capsys.readouterr()
    assert main([*base, "--families", "tests.plugins:fine,cnn", "--processes", "2", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "processes 1" in err[0] and "meta.json is lost" in err[0], err
    assert (run_dir / "results.csv").read_text() == rows
