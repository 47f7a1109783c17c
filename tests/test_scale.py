"""Scale-out (bench/scale): the --shard split, merge, a sweep through submitit's local executor
(one shard's job killed, then resumed), and --gpus with a stubbed device list.

The split tests expand matrices only (no measuring). The sweep tests measure the smoke matrix
for real, on this CPU, with --min-time 0.1 and one thread per child.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from bench.cli import main
from bench.core.cases import Case, available_matrices, expand, load_matrix
from bench.core.selection import make_selection
from bench.runs.reader import load_run
from bench.runs.files import FolderLock
from bench.runs.schema import empty_row
from bench.runs.selection import selection_record, write_selection
from bench.runs.writer import RunWriter
from bench.scale import executors
from bench.scale.resources import GPU_PROCESSES, default_resources, gpus_asked, job_resources
from bench.core.shard import assign, case_cost, parse_shard, shard_of_command, take_shard
from bench.trackers.device import DeviceFacts

REPO = Path(__file__).resolve().parents[1]
H200 = DeviceFacts(type="cuda", name="NVIDIA H200", capability="9.0")

# Run as shard 2's child: SIGKILL itself right after its first row is on disk (a job killed mid-shard).
KILLER = '''
import os, runpy, signal, sys
nth, args = int(sys.argv[1]), sys.argv[3:]
real, seen = os.fsync, [0]
def fsync(fd):
    real(fd)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = ""
    if path.endswith("/results.csv"):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync
sys.argv = ["bench", *args]
runpy.run_module("bench", run_name="__main__", alter_sys=True)
'''


# Run as a bench process: the batch system's time-limit warning (SIGUSR2) lands while the second case is
# being measured (sent by the process to itself as that case starts: no clock involved).
WARNED = '''
import os, runpy, signal, sys
import bench.core.session as session
real, seen = session.Run.measure, [0]
def measure(self, case):
    seen[0] += 1
    if seen[0] == 2:
        os.kill(os.getpid(), signal.SIGUSR2)
    return real(self, case)
session.Run.measure = measure
sys.argv = ["bench", *sys.argv[1:]]
runpy.run_module("bench", run_name="__main__", alter_sys=True)
'''


def keys_of(cases) -> list[str]:
    return [c.key for c in cases]


# --------------------------------------------------------------------------- the split


@pytest.mark.parametrize("matrix", available_matrices())
def test_shards_are_disjoint_and_cover_every_matrix(matrix):
    """For N = 1..8 the parts are disjoint, cover the matrix, keep its order, are balanced, and do not
    depend on the device (skip marks) or the order of expansion."""
    cases = expand(load_matrix(matrix), None, None)
    on_cpu = make_selection(matrix, lambda axis: None, "cpu").cases  # the path `run` and pytest take
    on_gpu = expand(load_matrix(matrix), None, H200)
    assert keys_of(on_cpu) == keys_of(cases) == keys_of(on_gpu)
    largest = max(map(case_cost, cases))
    for n in range(1, 9):
        parts = assign(cases, n)
        flat = [c.key for part in parts for c in part]
        assert sorted(flat) == sorted(keys_of(cases)) and len(set(flat)) == len(flat), n
        assert all(len(part) > 0 for part in parts) or n > len(cases)
        for part in parts:
            assert keys_of(part) == [k for k in keys_of(cases) if k in set(keys_of(part))]  # the matrix's order
        loads = [sum(map(case_cost, part)) for part in parts]
        assert max(loads) <= sum(loads) / n + largest + 1e-9  # list scheduling's bound
        assert [set(keys_of(p)) for p in assign(list(reversed(cases)), n)] == [set(keys_of(p)) for p in parts]
        for k in range(1, n + 1):
            if parts[k - 1]:
                assert keys_of(take_shard(on_cpu, f"{k}/{n}")) == keys_of(parts[k - 1])
                assert set(keys_of(take_shard(on_gpu, f"{k}/{n}"))) == set(keys_of(parts[k - 1]))


@pytest.mark.parametrize("costs, n, loads", [
    ([1, 1, 1, 1, 1, 1, 4], 2, [5, 5]),            # the 4 first, then the ones fill the other part up to it
    ([1, 1, 1, 1, 2, 2, 4], 2, [6, 6]),            # cheapest first: [8, 4]
    ([5, 4, 3, 3, 3, 2, 2, 2, 1, 1], 3, [9, 9, 8]),
])
def test_the_split_puts_the_most_expensive_cases_first(monkeypatch, costs, n, loads):
    """The balance a user sees in ``--list``: most expensive first, each to the least-loaded part. Any greedy
    order meets ``max <= mean + largest``; only this one gives these loads (cheapest first: [7, 3] for the first)."""
    from types import SimpleNamespace

    from bench.core import shard

    cases = [SimpleNamespace(key=f"case-{i:02d}", cost=c) for i, c in enumerate(costs)]
    monkeypatch.setattr(shard, "case_cost", lambda case: float(case.cost))
    got = [sum(c.cost for c in part) for part in assign(cases, n)]
    assert sorted(got, reverse=True) == loads


def test_the_split_refuses_a_case_twice(monkeypatch):
    from types import SimpleNamespace

    from bench.core import shard

    monkeypatch.setattr(shard, "case_cost", lambda case: 1.0)
    with pytest.raises(ValueError, match=r"^the selection holds a case twice: a split by case key needs unique keys$"):
        assign([SimpleNamespace(key="a"), SimpleNamespace(key="b"), SimpleNamespace(key="a")], 2)


def test_shard_through_the_selection_and_its_errors():
    whole = make_selection("smoke", lambda axis: None, "cpu")
    parts = [make_selection("smoke", lambda axis: None, "cpu", shard=f"{k}/3") for k in (1, 2, 3)]
    assert sorted(k for p in parts for k in keys_of(p.cases)) == sorted(keys_of(whole.cases))
    assert parts[1].shard == f"2/3 ({len(parts[1].cases)} of 12 cases)"
    assert parse_shard(" 2 / 4 ") == (2, 4)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", ""):
        with pytest.raises(ValueError, match="--ae-shard: bad shard"):
            parse_shard(bad, "--ae-shard")
    with pytest.raises(ValueError, match="this part is empty"):
        make_selection("smoke", lambda axis: None, "cpu", shard="13/13")
    assert shard_of_command("python -m bench run --shard 2/4 --matrix ci") == "2/4"
    assert shard_of_command("pytest bench --ae-shard=3/8") == "3/8"
    assert shard_of_command("python -m bench run --shards 4") == ""


def test_run_shard_lists_its_part(capsys):
    assert main(["run", "--matrix", "smoke", "--device", "cpu", "--shard", "2/3", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    part = take_shard(make_selection("smoke", lambda axis: None, "cpu").cases, "2/3")
    assert listed == [c.id for c in part]
    assert main(["run", "--matrix", "smoke", "--shard", "4/3", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shard: bad shard '4/3'" in err


def test_pytest_face_takes_its_shard():
    out = subprocess.run([sys.executable, "-m", "pytest", "bench", "--ae-matrix", "smoke", "--ae-device", "cpu",
                          "--ae-shard", "2/3", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ids = [line.split("[", 1)[1].rstrip("]") for line in out.stdout.splitlines() if line.startswith("bench/test_speed.py::")]
    assert ids == [c.id for c in take_shard(make_selection("smoke", lambda axis: None, "cpu").cases, "2/3")]


# --------------------------------------------------------------------------- merge (made-up runs)


def fake_run(folder: Path, cases: list[Case], name: str = "Test CPU", slug: str = "cpu-test", commit: str = "abc1234",
             min_time: float = 0.1, status: str = "unsupported", shard: str = "1/2", whole: Optional[list[Case]] = None,
             torch: str = "2.x", tree: str = "") -> Path:
    """A run folder of ``cases`` as shard ``shard`` of ``whole`` (the smoke matrix) would leave it (rows made up:
    nothing is measured)."""
    whole = expand(load_matrix("smoke"), None, None) if whole is None else whole
    selection = [{"case_key": c.key, "case_id": c.id, **c.fields()} for c in whole]
    meta = {"created": "2026-01-01T00:00:00+00:00", "commit": commit, "tree": tree, "matrix": "smoke",
            "command": f"python -m bench run --matrix smoke --shard {shard}", "entry": "cli", "launcher": "in-process",
            "device": {"type": "cpu", "name": name, "slug": slug, "torch": torch}, "calibration": {},
            "settings": {"min_time_s": min_time}, "selection": selection_record(selection, shard)}
    writer = RunWriter(folder, meta)
    write_selection(folder, selection)
    for case in cases:
        row = empty_row()
        row.update(case.fields())
        row.update(run_id=folder.name, case_key=case.key, case_id=case.id, status=status, reason="made up",
                   device="cpu", device_name=name)
        writer.append(row)
    return folder


@pytest.fixture
def halves(tmp_path) -> tuple[list[Case], list[list[Case]]]:
    cases = expand(load_matrix("smoke"), None, None)
    return cases, assign(cases, 2)


def one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_merge_joins_rows_samples_and_meta(tmp_path, halves, capsys):
    cases, (a, b) = halves
    runs = [fake_run(tmp_path / "a", a), fake_run(tmp_path / "b", b, shard="2/2")]
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report"]) == 0
    merged = load_run(tmp_path / "m")
    assert sorted(merged.rows["case_key"]) == sorted(keys_of(cases))
    meta = merged.meta
    assert meta["commit"] == "abc1234" and meta["entry"] == "merge" and meta["cases"] == len(cases)
    assert [s["run_id"] for s in meta["merged_from"]] == ["a", "b"]
    assert all(s["commit"] == "abc1234" and s["device"]["slug"] == "cpu-test" for s in meta["merged_from"])
    assert [d["device"] for d in meta["devices"]] == ["cpu-test"]
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m")]) == 2  # never over another folder
    one_line_error(capsys, "already exists")


def test_merge_refuses_mixed_commits_devices_settings_and_overlaps(tmp_path, halves, capsys):
    _, (a, b) = halves
    base = fake_run(tmp_path / "a", a)
    cases = [
        (fake_run(tmp_path / "commit", b, commit="fff0000", shard="2/2"), "different commits"),
        (fake_run(tmp_path / "dirty", b, tree="dirty:0123456789abcdef", shard="2/2"), "work-tree changes"),
        (fake_run(tmp_path / "torch", b, torch="2.99", shard="2/2"), "different torch versions"),
        (fake_run(tmp_path / "selection", b, whole=cases_of_other_selection(), shard="2/2"), "different selections"),
        (fake_run(tmp_path / "device", b, name="NVIDIA H200", slug="nvidia-h200", shard="2/2"), "different devices"),
        (fake_run(tmp_path / "timing", b, min_time=1.0, shard="2/2"), "timing settings differ (min_time_s"),
        (fake_run(tmp_path / "overlap", a[:1]), "shards must be disjoint"),
    ]
    for other, needle in cases:
        out = tmp_path / f"out-{other.name}"
        assert main(["merge", str(base), str(other), "--out", str(out), "--no-report"]) == 2, needle
        one_line_error(capsys, "merge:", needle)
        assert not out.exists()


def cases_of_other_selection() -> list[Case]:
    """The smoke matrix less its last case: a selection other than the one the halves split."""
    return expand(load_matrix("smoke"), None, None)[:-1]


def test_two_runs_without_a_commit_are_refused(tmp_path, halves, capsys):
    _, (a, b) = halves
    runs = [fake_run(tmp_path / "a", a, commit=""), fake_run(tmp_path / "b", b, commit="", shard="2/2")]
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report"]) == 2
    one_line_error(capsys, "records no commit")
    assert main(["merge", str(runs[0]), "--out", str(tmp_path / "m"), "--no-report", "--allow-partial"]) == 1  # alone: ok


def test_merge_refuses_an_incomplete_set_unless_allow_partial(tmp_path, halves, capsys):
    """Shard 1/2 alone: refused (exit 2, nothing written); with --allow-partial the other half's cases are
    `missing` rows naming shard 2/2, the report's first screen says "partial: 1 of 2 shards", exit 1."""
    cases, (a, b) = halves
    first = fake_run(tmp_path / "a", a)
    assert main(["merge", str(first), "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, "merge: only 1 of 2 shards (shard 2/2 not merged)", "--allow-partial")
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(first), "--out", str(tmp_path / "m"), "--allow-partial"]) == 1
    assert "partial: 1 of 2 shards" in capsys.readouterr().err
    merged = load_run(tmp_path / "m")
    assert sorted(merged.rows["case_key"]) == sorted(keys_of(cases))
    missing = merged.rows[merged.rows["status"] == "missing"]
    assert sorted(missing["case_key"]) == sorted(keys_of(b))
    assert all("shard 2/2" in r for r in missing["reason"])
    assert list(missing["family"]) == [c.family for c in b]  # the case's fields, from selection.jsonl
    assert merged.meta["partial"]["shards_absent"] == ["2/2"] and merged.meta["partial"]["missing_cases"] == len(b)
    report = (tmp_path / "m" / "report.md").read_text()
    assert "**partial: 1 of 2 shards" in report[:report.index("## 1.")]
    # both halves: complete, no partial line
    second = fake_run(tmp_path / "b", b, shard="2/2")
    assert main(["merge", str(first), str(second), "--out", str(tmp_path / "whole")]) == 0
    assert "partial" not in (tmp_path / "whole" / "report.md").read_text()
    assert "partial" not in load_run(tmp_path / "whole").meta


def test_compare_counts_a_missing_row_as_a_case_the_run_lacks(tmp_path, halves):
    """A partial merge as a comparison's side: its `missing` rows are not measurements, so the comparison
    sees those cases as absent (its own `missing` verdict), never as a broken case with figures."""
    from bench.compare.sides import open_run

    cases, (a, b) = halves
    first = fake_run(tmp_path / "a", a)
    assert main(["merge", str(first), "--out", str(tmp_path / "m"), "--no-report", "--allow-partial"]) == 1
    side = open_run(tmp_path / "m", "candidate")
    assert sorted(side.rows) == sorted(keys_of(a))


def test_merge_reports_a_cut_last_line_with_the_resume_hint(tmp_path, halves, capsys):
    """A shard killed while writing its last row: refused with the resume command, not dropped silently;
    with --allow-partial that case is a `missing` row saying to resume."""
    _, (a, b) = halves
    runs = [fake_run(tmp_path / "a", a), fake_run(tmp_path / "b", b, shard="2/2")]
    csv_path = runs[1] / "results.csv"
    text = csv_path.read_text()
    csv_path.write_text(text[:-5])  # the last row cut short
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report"]) == 2
    one_line_error(capsys, "ends in a partial line", f"--resume {runs[1]}", "--allow-partial")
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report", "--allow-partial"]) == 1
    rows = load_run(tmp_path / "m").rows
    (cut,) = rows[rows["status"] == "missing"].itertuples()
    assert cut.case_key == b[-1].key and "partial line" in cut.reason and "--resume" in cut.reason


def test_merge_refuses_a_shard_still_being_written(tmp_path, halves, capsys):
    _, (a, b) = halves
    runs = [fake_run(tmp_path / "a", a), fake_run(tmp_path / "b", b, shard="2/2")]
    lock = FolderLock(runs[1]).acquire()  # its run still measuring (the lock is per open file: refused here too)
    try:
        assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report"]) == 2
        one_line_error(capsys, f"{runs[1]} is in use", "merge once every shard has ended")
    finally:
        lock.release()
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--no-report"]) == 0


@pytest.mark.slow
def test_merged_shards_answer_for_the_card(cnn_infer_on_two_gpus, tmp_path):
    """Two measured shards (each plans its own configurations for the RTX 4060 at its end): the merged
    report's first screen answers for the card from the union of their plans, one pick per size. The shards
    are those of the --gpus sweep below (`run --shard 1/2` and `2/2`, each in a child), merged here again
    with `bench merge`."""
    folder = cnn_infer_on_two_gpus["folder"]
    shards = sorted(p for k in (1, 2) for p in (folder / f"shard-{k}-of-2").iterdir() if (p / "results.csv").is_file())
    assert [json.loads((p / "meta.json").read_text())["selection"]["shard"] for p in shards] == ["1/2", "2/2"]
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "m")]) == 0
    report = (tmp_path / "m" / "report.md").read_text()
    first = report[report.index("## 1."):report.index("## 2.")]
    assert first.startswith("## 1. What to run on NVIDIA GeForce RTX 4060") and "no plan beside this run" not in first
    sizes = {c.size for c in make_selection("smoke", lambda axis: {"families": "cnn"}.get(axis), "cpu", keyword="infer").cases}
    answer = load_answer(tmp_path / "m")
    assert sorted(answer["size"]) == sorted(sizes)  # a pick per size: each shard's plan is in the merged one


def load_answer(folder: Path):
    import pandas as pd

    return pd.read_csv(folder / "answer.csv", dtype=str)


def test_lock_without_flock_uses_an_owner_file(tmp_path, monkeypatch):
    """Lustre without the flock mount option (flock raises ENOSYS): the lock is a file naming pid and host;
    a second writer is refused naming them; released, the folder is free again."""
    import errno
    import fcntl
    import socket

    from bench.runs.files import FolderInUse

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = FolderLock(tmp_path).acquire()
    assert lock.mode == "file"
    assert (tmp_path / ".lock.owner").read_text().split() == [str(os.getpid()), socket.gethostname()]
    with pytest.raises(FolderInUse, match=f"pid {os.getpid()};"):
        FolderLock(tmp_path).acquire("--resume")
    lock.release()
    assert not (tmp_path / ".lock.owner").exists()
    FolderLock(tmp_path).acquire().release()


def test_node_local_flock_is_backed_by_the_owner_file(tmp_path, monkeypatch):
    """AE_BENCH_LOCK=file (NFS with node-local flock): another host's lock file refuses even though this
    node's flock is free; a dead pid of this host is a stale file, taken over; a flock writer respects
    a live owner file too."""
    import socket

    from bench.runs.files import FolderInUse

    monkeypatch.setenv("AE_BENCH_LOCK", "file")
    owner = tmp_path / ".lock.owner"
    owner.write_text("4242 compute-node-7\n")
    with pytest.raises(FolderInUse, match="pid 4242 on host compute-node-7.*remove .*lock.owner"):
        FolderLock(tmp_path).acquire("--resume")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that no longer runs
    owner.write_text(f"{gone.pid} {socket.gethostname()}\n")
    lock = FolderLock(tmp_path).acquire()
    assert owner.read_text().split()[0] == str(os.getpid()) and lock.mode == "file"
    monkeypatch.delenv("AE_BENCH_LOCK")
    with pytest.raises(FolderInUse, match="in use by another process"):
        FolderLock(tmp_path).acquire()  # flock is free here, the owner file is not
    lock.release()
    held = FolderLock(tmp_path).acquire()
    assert held.mode == "flock" and (tmp_path / ".lock").read_text() == f"{os.getpid()} on {socket.gethostname()}"
    held.release()


def test_mixed_devices_merge_on_request_with_a_section_per_device(tmp_path, halves, capsys):
    cases, (a, b) = halves
    runs = [fake_run(tmp_path / "laptop", a, name="Ada laptop"), fake_run(tmp_path / "h200", b, name="NVIDIA H200",
                                                                          slug="nvidia-h200", shard="2/2")]
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m")]) == 2
    one_line_error(capsys, "--allow-mixed-devices")
    assert main(["merge", *map(str, runs), "--out", str(tmp_path / "m"), "--allow-mixed-devices"]) == 0
    assert "report: " in capsys.readouterr().out
    report = (tmp_path / "m" / "report.md").read_text()
    section = report[report.index("## Shards and devices"):]
    assert "**2 devices.**" in section and "### Ada laptop (cpu)" in section and "### NVIDIA H200 (cpu)" in section
    assert f"{len(a)} rows ({len(a)} unsupported)" in section and f"{len(b)} rows ({len(b)} unsupported)" in section
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["device"]["slug"] == "mixed" and len(meta["devices"]) == 2


# --------------------------------------------------------------------------- refusals of a sweep


def test_sweep_options_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    base = ["run", "--matrix", "smoke", "--results", str(tmp_path)]
    monkeypatch.setattr(executors.shutil, "which", lambda name: None)  # never a SLURM host here, even on one
    no_srun = "no `srun`" if importlib.util.find_spec("submitit") else "pip install 'ae-bench[cluster]'"
    refusals = [
        (["--gpus", "0,1"], "--gpus: CUDA is not available here"),  # this CPU host: no stub
        (["--executor", "local"], "--shards N"),
        (["--executor", "slurm", "--shards", "2"], "--slurm-time"),
        (["--executor", "slurm", "--shards", "2", "--slurm-time", "90"], no_srun),
        (["--executor", "local", "--shards", "2", "--slurm-partition", "gpu"], "only with --executor slurm"),
        (["--shard", "1/2", "--slurm-option", "account=x"], "only for a sweep"),
        (["--executor", "local", "--shards", "2", "--shard", "1/2"], "--shard: a sweep"),
        (["--executor", "local", "--shards", "13"], "some shards would be empty"),
    ]
    for extra, needle in refusals:
        assert main(base + extra) == 2, extra
        one_line_error(capsys, needle)
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    assert main(base + ["--executor", "local", "--shards", "2"]) == 2
    one_line_error(capsys, "pip install 'ae-bench[cluster]'")
    assert not any(tmp_path.iterdir())  # nothing was made


def test_slurm_parameters_reach_sbatch(tmp_path, monkeypatch):
    """What --slurm-* become in the job array's sbatch file (rendered by submitit; nothing submitted)."""
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = {"partition": "gpu", "time": executors.parse_slurm_time("1-02:30"), "gpus_per_task": 1,
             "options": executors.parse_slurm_options(["account=proj", "constraint=a100", "exclusive"])}
    slurm.update(job_resources(slurm, None, None))
    text = _make_sbatch_string(command="true", folder=tmp_path, map_count=3,
                               **executors.slurm_parameters(slurm, 3, "ae-bench-x"))
    cores, mib = default_resources(1)
    for line in ("--partition=gpu", "--time=1590", "--gpus-per-task=1", "--account=proj", "--constraint=a100",
                 "--exclusive", "--array=0-2%3", "--job-name=ae-bench-x", f"--cpus-per-task={cores}", f"--mem={mib}M"):
        assert f"#SBATCH {line}" in text, line
    assert executors.parse_slurm_time("90") == 90 and executors.parse_slurm_time("00:00:30") == 1
    # submitted for real to a stand-in sbatch: one array of 3 elements, each running one shard's command
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sbatch").write_text(f"#!/bin/sh\ncat \"$1\" >> {tmp_path / 'sbatch.log'}\necho Submitted batch job 4242\n")
    for tool in ("srun", "sbatch"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    executor = executors.make_executor("slurm", tmp_path / "jobs", slurm, 3, "ae-bench-x")
    jobs = executor.map_array(executors.run_shard_job, [["true", str(k)] for k in (1, 2, 3)])
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "sbatch.log").read_text()
    assert script.count("#!/bin/bash") == 1 and "#SBATCH --array=0-2%3" in script and "#SBATCH --partition=gpu" in script
    assert "submitit.core._submit" in script
    for bad in ("", "1:2:3:4", "-5", "0"):
        with pytest.raises(ValueError, match="--slurm-time"):
            executors.parse_slurm_time(bad)
    with pytest.raises(ValueError, match="--slurm-option"):
        executors.parse_slurm_options(["=x"])


def test_slurm_jobs_ask_for_the_cores_and_memory_of_their_shard():
    """A GPU shard's job asks for its 3 torch processes' cores and memory (a partition's default is often
    one core); a CPU shard for its own; the options override; a second GPU per shard is refused."""
    gpu, cpu = default_resources(1), default_resources(0)
    assert gpu[0] >= GPU_PROCESSES and gpu[1] >= GPU_PROCESSES * 1024  # a core and a GiB at least per process
    assert job_resources({"gpus_per_task": 1}, None, None) == {"cpus_per_task": gpu[0], "mem_mib": gpu[1]}
    assert job_resources({"gpus_per_task": 0}, None, None) == {"cpus_per_task": cpu[0], "mem_mib": cpu[1]}
    assert job_resources({}, 3, "24GiB") == {"cpus_per_task": 3, "mem_mib": 24 * 1024}
    assert gpus_asked({"options": {"gres": "gpu:1"}}) == 1 and gpus_asked({"options": {"gres": "gpu:a100:1"}}) == 1
    assert gpus_asked({"options": {"gres": "gpu"}}) == 1 and gpus_asked({"options": {"gres": "nvme:1"}}) == 0
    for slurm in ({"gpus_per_task": 2}, {"options": {"gres": "gpu:a100:2"}}):
        with pytest.raises(ValueError, match="a shard measures on one GPU"):
            job_resources(slurm, None, None)
    for cpus, mem, needle in ((0, None, "--slurm-cpus-per-task"), (None, "lots", "--slurm-mem"), (None, "0", "--slurm-mem")):
        with pytest.raises(ValueError, match=needle):
            job_resources({}, cpus, mem)


def test_a_gres_gpu_sweep_measures_on_the_gpu_matrix(tmp_path, monkeypatch, capsys):
    """--slurm-option gres=gpu:1 asks for a GPU as --slurm-gpus-per-task 1 does: --matrix auto is the GPU
    matrix (default), not the CPU one; the job's sbatch asks for the GPU shard's cores and memory."""
    import argparse

    from bench.scale.command import _expected_device_type, _slurm_options

    args = argparse.Namespace(executor="slurm", slurm_partition=None, slurm_time="60", slurm_gpus_per_task=None,
                              slurm_cpus_per_task=None, slurm_mem=None, slurm_option=["gres=gpu:1"], device="auto")
    slurm = _slurm_options(args)
    assert _expected_device_type(args, slurm) == "cuda"
    assert (slurm["cpus_per_task"], slurm["mem_mib"]) == default_resources(1)
    args.slurm_option = None
    assert _expected_device_type(args, _slurm_options(args)) == "cpu"
    args.slurm_gpus_per_task = 2
    with pytest.raises(ValueError, match="--slurm-gpus-per-task: 2 GPUs per job"):
        _slurm_options(args)


def test_job_ids_are_in_sweep_json_while_the_jobs_run(tmp_path, monkeypatch, capsys):
    """The ids are written when the jobs are submitted, not when they end: a login-node process that dies
    while waiting leaves them on disk (read here at the first poll of the wait)."""
    pytest.importorskip("submitit")
    seen = []
    release = tmp_path / "release"  # the jobs wait for it: the first poll surely finds them running

    def first_poll(jobs):
        if not seen:
            seen.append(json.loads((sweep_folder(tmp_path) / "sweep.json").read_text())["attempts"])
            release.touch()

    real = executors.run_submitit_jobs
    wait = ("import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\nsys.exit(3)")
    monkeypatch.setattr(executors, "run_submitit_jobs", lambda *a, **k: real(*a, on_poll=first_poll, **k))
    monkeypatch.setattr(executors, "child_command", lambda argv, k: [sys.executable, "-c", wait, str(release)])
    assert main(["run", "--matrix", "smoke", "--executor", "local", "--shards", "2", "--results", str(tmp_path)]) == 1
    (attempt,), = seen
    assert sorted(attempt["shards"]) == ["1/2", "2/2"]
    assert all(v["job"].startswith("job ") and v["state"] == "submitted" for v in attempt["shards"].values())
    final = json.loads((sweep_folder(tmp_path) / "sweep.json").read_text())["attempts"]
    assert len(final) == 1 and final[0]["shards"]["1/2"]["job"] == attempt["shards"]["1/2"]["job"] and "ended" in final[0]


@pytest.mark.slow
def test_the_time_limit_warning_finishes_the_case_in_flight_and_writes_the_report(tmp_path):
    """SIGUSR2 (submitit's --signal=USR2@90) during case 2 of 3: case 2's row is written, case 3 is not
    started, the end calibration and the report are written, and the run exits 130 with the resume command."""
    script = tmp_path / "warned.py"
    script.write_text(WARNED)
    argv = ["run", "--matrix", "smoke", "--families", "cnn", "--min-time", "0.05", "--results", str(tmp_path / "r")]
    cases = make_selection("smoke", lambda axis: {"families": "cnn"}.get(axis), "cpu").cases
    assert len(cases) >= 3
    out = subprocess.run([sys.executable, str(script), *argv], cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 130, out.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "r").iterdir() if (p / "results.csv").is_file()]
    rows = load_run(run).rows
    assert list(rows["case_key"]) == [c.key for c in cases[:2]]  # the case in flight finished; the next never started
    assert "SIGUSR2: stopped before the time limit" in out.stderr and "--resume" in out.stderr
    assert (run / "report.md").is_file() and "end" in json.loads((run / "meta.json").read_text())["peaks"]


def test_a_job_passes_the_time_limit_warning_to_its_shard(tmp_path):
    """The submitit job's own process gets SIGUSR2 (SLURM's --signal=USR2@90 without B: reaches it too): it
    hands it to the shard's child and waits for the child's status, instead of dying of it."""
    ready = tmp_path / "ready"
    child = ("import signal, sys, pathlib, time\n"
             "signal.signal(signal.SIGUSR2, lambda s, f: sys.exit(7))\n"
             f"pathlib.Path({str(ready)!r}).touch()\n"
             "while True:\n    time.sleep(0.05)\n")
    job = subprocess.Popen([sys.executable, "-c", "import sys; from bench.scale.executors import run_shard_job; "
                            f"sys.exit(run_shard_job([sys.executable, '-c', {child!r}]))"],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    while not ready.exists() and job.poll() is None:
        time.sleep(0.05)  # until the child's handler is set (an event: the file), not a deadline
    job.send_signal(signal.SIGUSR2)
    assert job.wait(120) == 7  # the child's own exit status, passed on


# --------------------------------------------------------------------------- sweeps, measured


def sweep_folder(results: Path) -> Path:
    (folder,) = [p for p in results.iterdir() if (p / "sweep.json").is_file()]
    return folder


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The smoke matrix in 3 shards through submitit's local executor; shard 2's job is killed after its
    first row, then the sweep is resumed. Returns what each step left."""
    pytest.importorskip("submitit")
    results = tmp_path_factory.mktemp("sweep")
    killer = results / "killer.py"
    killer.write_text(KILLER)
    argv = ["run", "--matrix", "smoke", "--min-time", "0.1", "--executor", "local", "--shards", "3",
            "--results", str(results)]
    original = executors.child_command
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # three children side by side on two cores
        mp.setattr(executors, "child_command",
                   lambda argv, k: [sys.executable, str(killer), "1", "--", *argv] if k == 2 else original(argv, k))
        first_rc = main(argv)
        folder = sweep_folder(results)
        after_kill = {k: (folder / f"shard-{k}-of-3").glob("*/results.csv") for k in (1, 2, 3)}
        after_kill = {k: next(iter(paths)).read_bytes() for k, paths in after_kill.items()}
        merged_after_kill = load_run(folder / "merged").rows
        mp.setattr(executors, "child_command", original)
        resume_rc = main(["run", "--resume", str(folder)])
    return {"folder": folder, "first_rc": first_rc, "resume_rc": resume_rc, "after_kill": after_kill,
            "merged_after_kill": merged_after_kill}


def shard_rows(folder: Path, k: int) -> bytes:
    return next((folder / f"shard-{k}-of-3").glob("*/results.csv")).read_bytes()


@pytest.mark.slow
def test_killed_shard_becomes_error_rows_with_its_log_tail(local_sweep):
    assert local_sweep["first_rc"] == 1
    rows = local_sweep["merged_after_kill"]
    parts = assign(expand(load_matrix("smoke"), None, None), 3)
    assert sorted(rows["case_key"]) == sorted(c.key for p in parts for c in p)  # every case, once
    errors = rows[rows["status"] == "error"]
    assert len(errors) == len(parts[1]) - 1  # shard 2 kept the row written before the kill
    assert set(errors["case_key"]) < set(keys_of(parts[1]))
    assert all("shard 2/3" in r and "killed by SIGKILL" in r and "Log tail:" in r for r in errors["reason"])
    assert set(rows[rows["status"] != "error"]["status"]) <= {"ok", "invalid"}  # measured (invalid: a busy machine's MFU)


@pytest.mark.slow
def test_resume_reruns_only_the_killed_shards_missing_cases(local_sweep):
    folder, before = local_sweep["folder"], local_sweep["after_kill"]
    assert local_sweep["resume_rc"] == 0
    assert shard_rows(folder, 1) == before[1] and shard_rows(folder, 3) == before[3]  # untouched
    after = shard_rows(folder, 2)
    assert after.startswith(before[2])  # the kept row stays; the rest appended
    part = assign(expand(load_matrix("smoke"), None, None), 3)[1]
    added = [line.split(",")[1] for line in after[len(before[2]):].decode().splitlines()]
    kept = [line.split(",")[1] for line in before[2].decode().splitlines()[1:]]
    assert len(kept) == 1 and sorted(kept + added) == sorted(keys_of(part))
    attempts = json.loads((folder / "sweep.json").read_text())["attempts"]
    assert [sorted(a["shards"]) for a in attempts] == [["1/3", "2/3", "3/3"], ["2/3"]]


@pytest.mark.slow
def test_three_shards_merge_to_the_unsharded_runs_cases(local_sweep, capsys):
    merged = load_run(local_sweep["folder"] / "merged")
    unsharded = make_selection("smoke", lambda axis: None, "cpu").cases  # what `run --matrix smoke` measures
    assert sorted(merged.rows["case_key"]) == sorted(keys_of(unsharded))  # exactly those keys, each once
    assert set(merged.rows["status"]) <= {"ok", "invalid"}  # every case measured
    assert len(merged.meta["merged_from"]) == 3 and sorted(s["shard"] for s in merged.meta["merged_from"]) == ["1/3", "2/3", "3/3"]
    assert "## Shards and devices" in (local_sweep["folder"] / "merged" / "report.md").read_text()
    # a sweep continues with its own selection
    assert main(["run", "--resume", str(local_sweep["folder"]), "--families", "cnn"]) == 2
    one_line_error(capsys, "continues with its own selection")


@pytest.fixture(scope="module")
def cnn_infer_on_two_gpus(tmp_path_factory):
    """`run --gpus 2,0` of the smoke matrix's CNN inference cases with a stubbed device list (each child measures
    on the CPU): the exit status, the GPU indices the children were given and the sweep folder. Made once for
    the --gpus test and the merge test, which reads its two measured shards."""
    given = []
    results = tmp_path_factory.mktemp("gpus")
    argv = ["run", "--matrix", "smoke", "--families", "cnn", "-k", "infer", "--min-time", "0.1", "--gpus", "2,0",
            "--results", str(results)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setattr(executors, "visible_gpus", lambda: [0, 1, 2])
        mp.setattr(executors, "gpu_device", lambda index: given.append(index) or "cpu")
        rc = main(argv)
    return {"rc": rc, "given": given, "folder": sweep_folder(results)}


@pytest.mark.slow
def test_gpus_run_one_child_per_gpu_and_merge(cnn_infer_on_two_gpus):
    """--gpus with a stubbed device list: each child gets --device (cuda:I, here the CPU) and shard I+1/N."""
    assert cnn_infer_on_two_gpus["rc"] == 0
    folder, given = cnn_infer_on_two_gpus["folder"], cnn_infer_on_two_gpus["given"]
    assert given == [2, 0]
    for k in (1, 2):
        log = (folder / f"shard-{k}-of-2" / "job.log").read_text()
        assert f"--shard {k}/2" in log and "--device cpu" in log
    merged = load_run(folder / "merged")
    wanted = make_selection("smoke", lambda axis: {"families": "cnn"}.get(axis), "cpu", keyword="infer").cases
    assert sorted(merged.rows["case_key"]) == sorted(keys_of(wanted)) and set(merged.rows["status"]) <= {"ok", "invalid"}


# --------------------------------------------------------------------------- the CI example


def test_sharded_example_workflow():
    """Manual runs only, read-only token, the security checks of tests/test_workflows.py, a matrix over
    shards and GPU runner labels whose --shard N matches it, a merge job per label, the report uploaded."""
    from tests.test_workflows import (check_cache_saved_only_on_main, check_checkouts_drop_credentials,
                                      check_no_environment_leak, check_no_pull_request_target_checkout, check_permissions,
                                      check_pinned_actions, check_strangers_kept_off, check_throwaway_venv, load_workflow,
                                      runs_on, self_hosted_jobs, steps, uses)

    wf = load_workflow(REPO / ".github" / "examples" / "sharded-example.yml")
    assert set(wf["on"]) == {"workflow_dispatch"} and wf["permissions"] == {"contents": "read"}
    for check in (check_permissions, check_no_pull_request_target_checkout, check_no_environment_leak,
                  check_cache_saved_only_on_main, check_strangers_kept_off, check_checkouts_drop_credentials,
                  check_throwaway_venv):
        check(wf)
    check_pinned_actions((REPO / ".github" / "examples" / "sharded-example.yml").read_text())
    assert not (REPO / ".github" / "workflows" / "sharded-example.yml").exists()  # not live with placeholder labels
    (name, measure), = self_hosted_jobs(wf).items()
    matrix = measure["strategy"]["matrix"]
    assert matrix["shard"] == list(range(1, int(wf["env"]["SHARDS"]) + 1)) and matrix["gpu"]
    assert "${{ matrix.gpu }}" in runs_on(measure)
    assert any('--shard "$SHARD/$SHARDS"' in str(s.get("run", "")) for s in steps(measure))
    for job in wf["jobs"].values():
        checkout = [s for s in steps(job) if uses(s).startswith("actions/checkout@")]
        assert all((s.get("with") or {}).get("persist-credentials") is False for s in checkout)
    merge = wf["jobs"]["merge"]
    assert merge["needs"] == name and merge["strategy"]["matrix"]["gpu"] == matrix["gpu"]
    assert any("python -m bench merge" in str(s.get("run", "")) and "--allow-partial" in str(s.get("run", ""))
               and "exit $status" in str(s.get("run", "")) for s in steps(merge))  # a missing shard fails the job
    assert any(uses(s).startswith("actions/upload-artifact@") and s["with"]["path"] == "ci-results/" for s in steps(merge))


def test_jobs_that_fail_before_any_run_folder(tmp_path, monkeypatch, capsys):
    """--gpus (stubbed) whose children die at once: exit 1, the log tail shown, a resume command; the
    submitit job body passes the sweep's own GPU view on (submitit's local executor hides every GPU)."""
    monkeypatch.setattr(executors, "visible_gpus", lambda: [0, 1])
    monkeypatch.setattr(executors, "gpu_device", lambda index: "cpu")
    monkeypatch.setattr(executors, "child_command",
                        lambda argv, k: [sys.executable, "-c", f"import sys; print('shard {k} broke'); sys.exit(3)"])
    assert main(["run", "--matrix", "smoke", "--gpus", "0,1", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "shard 1/2 (pid" in err and "exited with status 3 (an I/O or internal error)" in err
    assert "no shard wrote a run folder" in err and "broke" in err and "--resume" in err
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    check = "import os, sys; sys.exit(0 if 'CUDA_VISIBLE_DEVICES' not in os.environ else 5)"
    assert executors.run_shard_job([sys.executable, "-c", check], {"CUDA_VISIBLE_DEVICES": None}) == 0
    assert executors.run_shard_job([sys.executable, "-c", check]) == 5
