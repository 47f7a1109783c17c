"""``bench/gpu_check.sh``, rehearsed on this CPU (``GPU_CHECK_ALLOW_CPU=1``): its refusal, its time table
(worst case, grace included, at most 480 s, printed at start), its step order, and what comes back when
a step is stopped at its limit or the whole check is SIGKILLed.

The rehearsals are narrowed with the script's own knobs (one preset, size, family and precision; STEPS
picks the steps) so that they stay a minute or so on a busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "bench" / "gpu_check.sh"
MAX_S = 480  # issue 34: a 15-minute device lease holds the machine's start, the check, and a rerun
ORDER = ["speed", "plan-1", "plan-2", "profile", "launcher", "compare"]  # GPU-only first, launcher and compare last
NARROW = {"GPU_CHECK_ALLOW_CPU": "1", "PRESETS": "tiny", "SIZES": "201x201", "FAMILIES": "transformer", "PRECISIONS": "fp32"}


# The rehearsals that run steps: a machine shared by many (load average 20 on 2 cores was seen) may take
# minutes to import torch, so the probe and the whole check get room; the time table's own test keeps
# the defaults.
SLOW_BOX = {"PROBE_S": "240", "TOTAL_S": "1500"}


def rehearsal_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "STEPS", "TOTAL_S")}
    return {**env, **NARROW, "PYTHONPATH": str(REPO), **extra}


def step_lines(summary: str) -> dict[str, dict]:
    """summary.log's step lines (those not starting with '#'): name -> {key: value}."""
    lines = {}
    for line in summary.splitlines():
        if line and not line.startswith("#"):
            name, rest = line.split(": ", 1)
            lines[name] = dict(re.findall(r"(\w+)=(\S+)", rest)) | {"line": line}
    return lines


def archive(out: Path, step: str) -> dict[str, bytes]:
    """The files of OUT/<step>.tar.gz: path -> bytes (raises if the archive is not whole)."""
    with tarfile.open(out / f"{step}.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def csv_rows(files: dict[str, bytes], name: str) -> int:
    return sum(len(list(csv.reader(io.StringIO(data.decode())))) - 1 for path, data in files.items()
               if path.rsplit("/", 1)[-1] == name)


# ------------------------------------------------------------------------------ the time table


def test_the_worst_case_is_printed_at_start_and_fits_480_s(tmp_path):
    """No step run (STEPS=none): the header's arithmetic is the script's own table, summed, and at most 480 s."""
    done = subprocess.run(["bash", str(GPU_CHECK), str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=rehearsal_env(STEPS="none"))
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / "summary.log").read_text()
    found = re.search(r"worst case: probe (\d+)\+(\d+) s \+ step limits (\d+) s \+ graces (\d+) s \+ packing (\d+) x (\d+) s "
                      r"= (\d+) s <= (\d+) s", summary)
    assert found, summary
    probe, probe_grace, limits, graces, steps, pack, worst, cap = map(int, found.groups())
    text = GPU_CHECK.read_text()
    table = re.findall(r'^\s+"([\w-]+)\s+\$\{\w+:-(\d+)\}\s+(\d+)"$', text, re.M)
    assert [name for name, _, _ in table] == ORDER, "what only a GPU shows first, the launcher and compare last"
    assert limits == sum(int(limit) for _, limit, _ in table) and graces == sum(int(grace) for _, _, grace in table)
    assert steps == len(table) and worst == probe + probe_grace + limits + graces + steps * pack
    assert worst <= cap == MAX_S
    assert [name for name in step_lines(summary)] == ORDER, "one line per step, in the order they run"
    assert all(fields["status"] == "not-asked" for fields in step_lines(summary).values())


def test_a_table_over_the_cap_is_refused_in_one_line(tmp_path):
    done = subprocess.run(["bash", str(GPU_CHECK), str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=rehearsal_env(SPEED_S="400"))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "over TOTAL_S=480 s" in done.stderr
    assert not (tmp_path / "out").exists()
    allowed = subprocess.run(["bash", str(GPU_CHECK), str(tmp_path / "mine")], cwd=REPO, capture_output=True, text=True,
                             timeout=60, env=rehearsal_env(SPEED_S="400", TOTAL_S="900", STEPS="none"))
    assert allowed.returncode == 0 and "= 737 s > (over the 480 s a lent machine's rerun needs) 480 s" in allowed.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_gpu_check_refuses_in_one_line_without_cuda(tmp_path):
    """Refused before any step: the interpreter is started once (the CUDA check), counted through a wrapper
    named by PYTHON, instead of a wall-clock bound that a busy machine breaks."""
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    wrapper = tmp_path / "python-counted"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in rehearsal_env().items() if k != "GPU_CHECK_ALLOW_CPU"}
    env["PYTHON"] = str(wrapper)
    done = subprocess.run(["bash", str(GPU_CHECK), str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert calls.read_text().splitlines() == ["-"], "one interpreter, for the check (its script on stdin), and no step"
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "CUDA is not available" in done.stderr
    assert not out.exists(), "nothing made"


def test_the_steps_name_real_commands():
    """Every command the script runs exists (modules moved under bench/<package>/ once)."""
    text = GPU_CHECK.read_text()
    for module in set(re.findall(r"from (bench(?:\.\w+)+) import", text)):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module
    commands = set(re.findall(r"-m bench (\w[\w-]*)", text))
    assert commands >= {"plan", "profile", "run", "compare"}
    from bench.cli import commands as table

    assert commands <= set(table())
    assert (REPO / "bench" / "test_speed.py").is_file()
    for needed in ("--benchmark-storage", "--ae-device", "--device", "--ae-batch"):
        assert needed in text


# ------------------------------------------------------------------- what a stopped check returns


@pytest.mark.slow
def test_a_speed_step_stopped_mid_sweep_returns_rows_its_pytest_benchmark_json_and_a_report(tmp_path):
    """The check is stopped (SIGINT, as Ctrl-C; the step gets the SIGINT its time limit sends) once the speed
    step has a row on disk: what it measured comes back, rows, pytest-benchmark's JSON of the same cases and a
    report of them. Waits on the row, not on a clock, so a busy machine changes nothing."""
    out = tmp_path / "out"
    check = subprocess.Popen(["bash", str(GPU_CHECK), str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=rehearsal_env(STEPS="speed", MIN_TIME="0.05", TMPDIR=str(tmp_path), SPEED_S="900", **SLOW_BOX))
    try:
        deadline = time.monotonic() + 900
        while not any(csv_rows({str(p): p.read_bytes()}, "results.csv") for p in tmp_path.glob("gpu-check.*/speed/*/results.csv")):
            assert check.poll() is None and time.monotonic() < deadline, "no row within 900 s"
            time.sleep(0.2)
        check.send_signal(signal.SIGINT)
        assert check.wait(timeout=120) == 130
    finally:
        check.kill()
    speed = step_lines((out / "summary.log").read_text())["speed"]
    assert speed["status"] == "stopped-by-signal", speed["line"]
    files = archive(out, "speed")
    results = next(data.decode() for path, data in files.items() if path.endswith("/results.csv"))
    records = list(csv.DictReader(io.StringIO(results)))
    assert 1 <= len(records) < 8 and int(speed["rows"]) == len(records), "stopped mid-sweep, every row kept"
    jsons = [json.loads(data) for path, data in files.items() if "/benchmarks/" in path and path.endswith(".json")]
    assert len(jsons) == 1, "pytest-benchmark's JSON came back"
    ok = [r for r in records if r["status"] == "ok"]
    assert {b["extra_info"]["case_key"] for b in jsons[0]["benchmarks"]} == {r["case_key"] for r in ok}
    report = next(data.decode() for path, data in files.items() if path.endswith("/report.md"))
    assert all(r["case_id"] in report for r in ok), "the report is of the rows measured"
    assert "report.md" in speed["line"] and "pytest-benchmark JSON" in speed["line"]


@pytest.mark.slow
def test_a_step_at_its_time_limit_is_stopped_and_packed_within_its_grace(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(GPU_CHECK), str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=rehearsal_env(STEPS="speed", SPEED_S="10", **SLOW_BOX))
    assert done.returncode == 0, done.stderr[-2000:]
    speed = step_lines((out / "summary.log").read_text())["speed"]
    assert speed["status"] in ("stopped-at-limit", "killed-after-grace") and speed["limit"] == "10+25", speed["line"]
    assert int(speed["seconds"]) <= 10 + 25 + 1 and "speed/speed.log" in archive(out, "speed")


@pytest.mark.slow
def test_a_check_sigkilled_at_a_random_time_returns_every_finished_step(tmp_path):
    """The whole process group SIGKILLed (as a lent machine ends a command at its limit) at a random moment
    after the first step ended: every step summary.log calls finished is in OUT, whole, with the rows it
    said; nothing half-written carries a step's name."""
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    out = tmp_path / "out"
    check = subprocess.Popen(["bash", str(GPU_CHECK), str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=rehearsal_env(STEPS="plan-1,plan-2", **SLOW_BOX),
                             start_new_session=True)
    try:
        summary = out / "summary.log"
        deadline = time.monotonic() + 600
        while "plan-1: status=" not in (summary.read_text() if summary.exists() else ""):
            assert check.poll() is None and time.monotonic() < deadline, "the first step never ended"
            time.sleep(0.2)
        time.sleep(rng.uniform(0, 35))  # anywhere in the second step (about 30 s here), or after it
    finally:
        os.killpg(check.pid, signal.SIGKILL)
        check.wait()
    finished = {name: f for name, f in step_lines(summary.read_text()).items() if f["status"] != "not-asked"}
    assert "plan-1" in finished, f"seed {seed}"
    for name, fields in finished.items():
        files = archive(out, name)
        assert f"{name}/{name}.log" in files, f"seed {seed}: {name}"
        assert csv_rows(files, "plan.csv") == int(fields["rows"]), f"seed {seed}: {fields['line']}"
    named = {p.name for p in out.iterdir() if p.name.endswith(".tar.gz") and not p.name.startswith(".")}
    assert named >= {f"{name}.tar.gz" for name in finished}, f"seed {seed}"
    for extra in named - {f"{name}.tar.gz" for name in finished}:  # packed, killed before its line: whole too
        archive(out, extra.removesuffix(".tar.gz"))


# ------------------------------------------- a stopped pytest session: its files before the slow parts


class FakeRun:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.run_dir = Path("run-dir")
        self.launcher = SimpleNamespace(name="in-process")
        self.report_error = None  # end_run's report was written
        self.rows = [{"status": "ok"}]  # and the session kept a row
        self.writer = SimpleNamespace(csv_path=self.run_dir / "results.csv")

    def close(self) -> None:
        self.calls.append("close")

    def settle(self) -> list[str]:
        self.calls.append("settle")
        return []


def finish_session(monkeypatch, exitstatus) -> list[str]:
    """The speed face's session end (bench/conftest.py's hooks) on a stub run: what it did, in order."""
    import bench.conftest as face
    import bench.core.session as session_module
    import bench.plan.partial as answer

    run = FakeRun()
    ae = face.AeSession(SimpleNamespace(getoption=lambda name: None), SimpleNamespace(facts=SimpleNamespace(name="cpu", type="cpu"),
                                                                                     matrix=SimpleNamespace(name="default")))
    ae.run = run
    config = SimpleNamespace(stash={face._SESSION_KEY: ae}, getoption=lambda name: None)
    monkeypatch.setattr(session_module, "end_run", lambda r, write_report, settle=True: run.calls.append(f"end_run(settle={settle})") or [])
    monkeypatch.setattr(answer, "plan_for_run", lambda *a, **k: run.calls.append("plan") or [])
    session = SimpleNamespace(config=config, exitstatus=exitstatus, testscollected=1)
    hook = face.pytest_sessionfinish(session, exitstatus)
    next(hook)
    run.calls.append("pytest-benchmark saves its JSON")  # its own hook runs inside this wrapper, and the terminal
    reporter = SimpleNamespace(section=lambda *a, **k: None, write_line=lambda line: None)  # summary after it
    face.pytest_terminal_summary(reporter, exitstatus, config)
    with contextlib.suppress(StopIteration):
        next(hook)
    assert session.exitstatus == exitstatus  # a report written and a row kept: the session's status stands
    return run.calls


def test_a_stopped_session_writes_its_json_and_report_before_anything_slow(monkeypatch):
    assert finish_session(monkeypatch, pytest.ExitCode.INTERRUPTED) == [
        "close", "pytest-benchmark saves its JSON", "end_run(settle=False)"], "no end peaks, no plan: the report first"


def test_a_session_that_ran_to_its_end_settles_its_peaks_and_plans_before_the_report(monkeypatch):
    assert finish_session(monkeypatch, pytest.ExitCode.OK) == [
        "close", "settle", "pytest-benchmark saves its JSON", "plan", "end_run(settle=True)"]
