"""The two faces, ``python -m bench run`` and ``pytest bench``, are one measurement: same run
start, launcher and timer, and pytest-benchmark's numbers are the samples the core measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.selfcheck.faults import REPO, bench_cli, csv_rows, only_run_dir

SELECTION = ["--matrix", "smoke", "--families", "cnn", "--sizes", "201x201", "--modes", "infer"]


def pytest_face(tmp_path: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    args = [a.replace("--", "--ae-", 1) if a.startswith("--") else a for a in SELECTION]
    return subprocess.run([sys.executable, "-m", "pytest", str(REPO / "bench" / "test_speed.py"), "-q", "-p", "no:cacheprovider",
                           "--benchmark-json", str(tmp_path / "bench.json"), "--ae-results", str(tmp_path / "p"),
                           "--ae-min-time", "0.1", "--ae-plan-for", "none", *args, *extra],  # as drive.py's CLI runs
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def both(speed_face_session):
    """The command line's run of SELECTION beside the speed face's session of it (tests/conftest.py, shared
    with tests/test_commands.py, which reads the plan its --ae-plan-budget wrote)."""
    tmp, py = speed_face_session
    assert py.returncode == 0, py.stdout + py.stderr
    cli = bench_cli("run", *SELECTION, "--results", str(tmp / "c"), "--min-time", "0.1", cwd=tmp)
    assert cli.returncode == 0, cli.stderr
    return tmp, only_run_dir(tmp / "c"), only_run_dir(tmp / "p")


def test_both_faces_record_the_same_timer(both):
    _, cli_dir, pytest_dir = both
    cli_rows, pytest_rows = csv_rows(cli_dir / "results.csv"), csv_rows(pytest_dir / "results.csv")
    assert [r["case_key"] for r in cli_rows] == [r["case_key"] for r in pytest_rows]
    assert {r["timer"] for r in cli_rows} == {r["timer"] for r in pytest_rows} == {"perf-counter"}


def test_both_faces_choose_the_launcher_the_same_way(both):
    _, cli_dir, pytest_dir = both
    cli_meta, pytest_meta = (json.loads((d / "meta.json").read_text()) for d in (cli_dir, pytest_dir))
    assert (cli_meta["entry"], pytest_meta["entry"]) == ("cli", "pytest")
    assert cli_meta["launcher"] == pytest_meta["launcher"] == "in-process"  # auto on a CPU


def test_pytest_benchmark_holds_the_samples_the_core_measured(both):
    tmp, _, pytest_dir = both
    samples = {json.loads(line)["case_key"]: json.loads(line)["samples_ms"]
               for line in (pytest_dir / "samples.jsonl").read_text().splitlines()}
    saved = json.loads((tmp / "bench.json").read_text())["benchmarks"]
    assert len(saved) == len(samples)
    for bench in saved:
        mine = samples[bench["extra_info"]["case_key"]]
        assert bench["stats"]["rounds"] == len(mine)
        assert [round(s * 1e3, 6) for s in bench["stats"]["data"]] == pytest.approx(mine, abs=1e-6)
        assert bench["extra_info"]["samples_ms"] == mine  # what `bench compare` reads from a saved JSON


def test_the_subprocess_launcher_under_pytest_measures_in_a_child(tmp_path):
    py = pytest_face(tmp_path, "--ae-launcher", "subprocess")
    assert py.returncode == 0, py.stdout + py.stderr
    run_dir = only_run_dir(tmp_path / "p")
    assert json.loads((run_dir / "meta.json").read_text())["launcher"] == "subprocess"
    assert [r["status"] for r in csv_rows(run_dir / "results.csv")] == ["ok"]


def test_both_faces_record_the_cpus_load_at_the_start(both):
    """A CPU run says how busy the machine was (torch's threads wait for each other when they lack cores)."""
    _, cli_dir, pytest_dir = both
    for run_dir in (cli_dir, pytest_dir):
        load = json.loads((run_dir / "meta.json").read_text())["load"]["start"]
        assert set(load) == {"busy_cores", "load_1min", "cores", "threads"} and load["busy_cores"] >= 0 and load["cores"] >= 1
        assert f"machine load at the start | {load['busy_cores']:.1f} of {load['cores']} cores busy with other work" \
            in (run_dir / "report.md").read_text()
