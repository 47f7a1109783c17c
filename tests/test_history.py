"""``python -m bench history``: steps found where they were planted and nowhere else, the pages, backfill.

The synthetic histories carry the noise a CPU run has: every run drifts as a whole (a log-normal factor,
2%), iterations scatter (log-normal, 10%) and some iterations are slow outliers (7% of them, 1.6x).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.history import steps as hs
from bench.history.order import order_runs, position
from bench.history.steps import Point, analyse, judge, worst_first

REFERENCE_RUN = Path(__file__).resolve().parents[1] / "results" / "20261130-000938-cpu-2c-intel-r-xeon-r-processor"
SEEDS = range(5)


def synthetic(n: int, at: int | None, factor: float, seed: int, base_ms: float = 50.0, samples: int = 15,
              drift: float = 0.02, scatter: float = 0.10) -> list[Point]:
    """``n`` runs of one case, one per commit ``c0``..; from commit ``at`` on the code is ``factor`` times slower."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        level = base_ms * (factor if at is not None and i >= at else 1.0) * np.exp(rng.normal(0, drift))
        values = level * np.exp(rng.normal(0, scatter, samples))
        values[rng.random(samples) < 0.07] *= 1.6
        points.append(Point(f"c{i}", values))
    return points


@pytest.mark.parametrize("seed", SEEDS)
def test_a_planted_25_percent_slowdown_is_one_step_at_that_commit(seed):
    history = analyse(synthetic(10, 6, 1.25, seed))
    called = history.called
    assert [(s.index, s.commit_before, s.commit_after) for s in called] == [(6, "c5", "c6")]
    step = called[0]
    assert step.direction == "slower" and 1.15 < step.ratio < 1.35
    assert step.low > 1 and step.low <= step.ratio <= step.high


@pytest.mark.parametrize("seed", SEEDS)
def test_a_planted_speedup_is_called_faster(seed):
    called = analyse(synthetic(9, 4, 0.75, seed)).called
    assert [(s.commit_after, s.direction) for s in called] == [("c4", "faster")]
    assert called[0].high < 1


@pytest.mark.parametrize("seed", SEEDS)
def test_eight_runs_of_the_same_commit_have_no_step(seed):
    assert analyse(synthetic(8, None, 1.0, seed)).called == []


def test_a_slowdown_at_the_newest_commit_is_found():
    called = analyse(synthetic(8, 7, 1.3, 3)).called
    assert [(s.commit_after, s.direction) for s in called] == [("c7", "slower")]


def test_a_step_whose_interval_includes_no_change_is_not_called():
    """The right side's median is 30% up, but its one run scatters from 0.6x to 2x: not shown."""
    rng = np.random.default_rng(0)
    left = [Point(f"c{i}", 100 * np.exp(rng.normal(0, 0.01, 20))) for i in range(5)]
    right = [Point("c5", np.array([60.0, 130.0, 135.0, 200.0, 70.0]))]
    points = left + right
    boots = [hs.boot_medians(p, 1000, rng) for p in points]
    ratio, low, high, _, _, called, reason = judge([0, 1, 2, 3, 4], [5], points, boots, rng)
    assert ratio == pytest.approx(1.3, rel=0.02)
    assert low < 1 < high
    assert not called and reason.startswith("not shown")


def test_a_step_under_the_smallest_step_is_not_called_and_one_above_is():
    rng = np.random.default_rng(1)

    def points(factor):
        return [Point(f"c{i}", 100 * (factor if i >= 4 else 1) * np.exp(rng.normal(0, 0.002, 30))) for i in range(8)]

    small = analyse(points(1.03), min_step=0.05).called
    large = analyse(points(1.07), min_step=0.05).called
    assert small == []
    assert [s.commit_after for s in large] == ["c4"]


def test_one_run_off_and_back_is_an_outlier_not_two_steps():
    rng = np.random.default_rng(2)
    points = [Point(f"c{i}", 100 * (1.4 if i == 4 else 1) * np.exp(rng.normal(0, 0.02, 20))) for i in range(9)]
    history = analyse(points)
    assert history.called == [] and history.outliers == [4]


def test_a_step_right_after_an_outlier_run_is_still_found():
    rng = np.random.default_rng(3)
    points = [Point(f"c{i}", 100 * (0.7 if i == 4 else 1.3 if i >= 5 else 1) * np.exp(rng.normal(0, 0.02, 20)))
              for i in range(10)]
    history = analyse(points)
    assert [(s.commit_after, s.direction) for s in history.called] == [("c5", "slower")]
    assert history.called[0].commit_before == "c3"  # the outlier run is no evidence either way


def test_processes_are_the_units_of_a_runs_interval():
    """Three processes at 100, 120 and 140 ms give a wide interval; the same samples as one process a narrow one."""
    rng = np.random.default_rng(4)
    values = np.concatenate([level * np.exp(rng.normal(0, 0.01, 20)) for level in (100, 120, 140)])
    two = Point("c0", values, [0] * 20 + [1] * 20 + [2] * 20)
    one = Point("c0", values)
    i2 = hs.point_interval(two, hs.boot_medians(two, 1000, rng))
    i1 = hs.point_interval(one, hs.boot_medians(one, 1000, rng))
    assert i2.units == "processes" and i1.units == "iterations"
    assert (i2.high_ms - i2.low_ms) > 2 * (i1.high_ms - i1.low_ms)


def test_worst_first_puts_the_largest_slowdown_first_and_speedups_last():
    def step(ratio):
        return hs.Step(1, "a", "b", ratio, ratio, ratio, 1, ratio, 0.95, True, "")

    ordered = worst_first([("s", step(1.1)), ("f", step(0.5)), ("w", step(1.4)), ("g", step(0.9))])
    assert [k for k, _ in ordered] == ["w", "s", "f", "g"]


class _R:
    def __init__(self, commit, created):
        self.commit, self.created = commit, created


def test_runs_go_in_git_order_when_every_commit_is_known_else_in_time_order():
    commits = [c * 40 for c in "abcde"]
    runs = [_R(commits[3][:7], "2026-01-01"), _R(commits[1][:7], "2026-01-03"), _R(commits[2], "2026-01-02")]
    ordered, how = order_runs(runs, commits)
    assert how == "git" and [r.commit for r in ordered] == [commits[1][:7], commits[2], commits[3][:7]]
    ordered, how = order_runs(runs + [_R("deadbeefcafe", "2026-01-04")], commits)
    assert how == "time" and [r.created for r in ordered] == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert position("abc", commits, {c: i for i, c in enumerate(commits)}) is None  # too short to name a commit


# -- sources, pages and the command ------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()


def _repo_with_commits(path: Path, n: int) -> list[str]:
    path.mkdir()
    _git(path, "init", "-q")
    for i in range(n):
        _git(path, "commit", "-q", "--allow-empty", "-m", f"commit {i}")
    return _git(path, "rev-list", "--reverse", "HEAD").split()


def _rows(keep: int = 3) -> tuple[list[str], list[dict]]:
    with open(REFERENCE_RUN / "results.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["status"] == "ok"][:keep]
        return list(reader.fieldnames), rows


def _samples() -> dict[str, list[float]]:
    out = {}
    for line in (REFERENCE_RUN / "samples.jsonl").read_text().splitlines():
        item = json.loads(line)
        out[item["case_key"]] = item["samples_ms"]
    return out


def _write_run(folder: Path, commit: str, created: str, factor: dict[str, float], rng) -> None:
    """A results folder like the reference run's, its first cases only, samples scaled per case and drifted."""
    header, rows = _rows()
    samples = _samples()
    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for row in rows:
            row = dict(row)
            row["median_ms"] = str(float(row["median_ms"]) * factor.get(row["case_key"], 1.0))
            writer.writerow(row)
    drift = float(np.exp(rng.normal(0, 0.02)))
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            key = row["case_key"]
            values = np.asarray(samples[key]) * factor.get(key, 1.0) * drift * np.exp(rng.normal(0, 0.05, len(samples[key])))
            f.write(json.dumps({"case_key": key, "samples_ms": values.tolist()}) + "\n")
    meta = json.loads((REFERENCE_RUN / "meta.json").read_text())
    meta.update(commit=commit[:7], created=created)
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """8 commits of a scratch repository, one run each, the second case 25% slower from commit 5 on; the
    runs' recorded times run backwards, so only git order puts them right."""
    root = tmp_path_factory.mktemp("history")
    commits = _repo_with_commits(root / "repo", 8)
    _, rows = _rows()
    slowed = rows[1]["case_key"]
    rng = np.random.default_rng(7)
    for i, commit in enumerate(commits):
        _write_run(root / "runs" / f"run{i}", commit, f"2026-01-{20 - i:02d}T00:00:00+00:00",
                   {slowed: 1.25 if i >= 5 else 1.0}, rng)
    out = root / "pages"
    code = main(["history", str(root / "runs"), "--out", str(out), "--repo", str(root / "repo")])
    return {"root": root, "commits": commits, "slowed": slowed, "rows": rows, "out": out, "code": code}


def test_the_command_reports_the_planted_step_at_its_commit_in_git_order(planted):
    assert planted["code"] == 0
    (json_file,) = planted["out"].glob("*.steps.json")
    data = json.loads(json_file.read_text())
    assert data["order"] == "git"
    assert [r["commit"] for r in data["runs"]] == planted["commits"]
    assert [(s["case_key"], s["commit_before"], s["commit_after"]) for s in data["steps"]] == \
        [(planted["slowed"], planted["commits"][4], planted["commits"][5])]
    assert data["steps"][0]["low"] > 1


def test_the_page_is_self_contained_lists_steps_first_and_is_under_2_mib(planted):
    (page,) = [p for p in planted["out"].glob("*.html") if p.name != "index.html"]
    text = page.read_text()
    assert len(text.encode()) < 2 * 2 ** 20
    assert "<script" not in text and "http://" not in text and "https://" not in text  # nothing fetched, nothing run
    assert text.index("Steps found, worst first: 1") < text.index("<img")
    assert planted["commits"][5] in text  # the full hash, in the runs table
    assert "data:image/png;base64," in text
    index = (planted["out"] / "index.html").read_text()
    assert f'href="{page.name}"' in index


def test_a_pytest_benchmark_copy_of_a_results_folder_is_read_once(tmp_path):
    rng = np.random.default_rng(0)
    _write_run(tmp_path / "runs" / "a", "1234567890abcdef", "2026-01-01T00:00:00+00:00", {}, rng)
    header, rows = _rows()
    meta = json.loads((tmp_path / "runs" / "a" / "meta.json").read_text())
    samples = _samples()
    bench_json = {"benchmarks": [{"name": r["case_id"], "extra_info": {**r, "samples_ms": samples[r["case_key"]]}}
                                 for r in rows], "ae_bench": {"meta": meta, "run_dir": str(tmp_path / "runs" / "a")}}
    (tmp_path / "bm").mkdir()
    (tmp_path / "bm" / "0001_x.json").write_text(json.dumps(bench_json))
    from bench.history.sources import load_sources

    runs, _ = load_sources([tmp_path / "runs", tmp_path / "bm"])
    assert [r.kind for r in runs] == ["results folder"]
    runs, _ = load_sources([tmp_path / "bm"])
    assert [r.kind for r in runs] == ["pytest-benchmark JSON"] and len(runs[0].cases) == len(rows)


def test_a_baseline_store_is_a_source(tmp_path):
    rng = np.random.default_rng(0)
    _write_run(tmp_path / "baselines" / "cpu-2c-x-torch2.13.0", "1234567890abcdef", "2026-01-01T00:00:00+00:00", {}, rng)
    from bench.history.sources import load_sources

    runs, _ = load_sources([tmp_path / "baselines"])
    assert len(runs) == 1 and runs[0].commit == "1234567"


@pytest.mark.parametrize("argv, words", [
    (["--min-step", "2"], "--min-step"),
    (["--confidence", "1.5"], "--confidence"),
])
def test_bad_options_are_one_line_and_exit_2(planted, capsys, argv, words):
    code = main(["history", str(planted["root"] / "runs"), "--out", str(planted["root"] / "x"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1


def test_a_missing_source_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["history", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- backfill -------------------------------------------------------------------------------

FAKE_HARNESS = textwrap.dedent('''
    """A stand-in for `python -m bench run`: copies a template run into --results, or fails at BROKEN."""
    import json, pathlib, shutil, subprocess, sys
    here = pathlib.Path(__file__).resolve().parents[1]
    with open(os.environ["CALLS"], "a") as f:
        f.write("call\\n")
    if (here / "BROKEN").exists():
        print("ModuleNotFoundError: No module named 'bench.core.nothing'", file=sys.stderr)
        sys.exit(1)
    dest = pathlib.Path(sys.argv[sys.argv.index("--results") + 1]) / "20260101-run"
    shutil.copytree(os.environ["TEMPLATE"], dest)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    meta = json.loads((dest / "meta.json").read_text()); meta["commit"] = commit
    (dest / "meta.json").write_text(json.dumps(meta))
''').replace("import json,", "import os, json,")


def test_backfill_runs_each_commit_once_records_a_broken_one_as_skipped_and_resumes(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "bench" / "core").mkdir(parents=True)
    for name in ("__init__.py", "core/__init__.py", "core/child.py", "core/measure.py"):
        (repo / "bench" / name).write_text("")
    (repo / "bench" / "__main__.py").write_text(FAKE_HARNESS)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "harness")
    for i in range(4):
        if i == 2:
            (repo / "BROKEN").write_text("")
        elif (repo / "BROKEN").exists():
            (repo / "BROKEN").unlink()
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"c{i}")
    commits = _git(repo, "rev-list", "--reverse", "HEAD").split()
    template = tmp_path / "template"
    _write_run(template, "0000000", "2026-01-01T00:00:00+00:00", {}, np.random.default_rng(0))
    calls = tmp_path / "calls"
    monkeypatch.setenv("TEMPLATE", str(template))
    monkeypatch.setenv("CALLS", str(calls))
    from bench.history.backfill import backfill

    out = tmp_path / "hist"
    first = backfill(repo, f"{commits[0]}..{commits[-1]}", out, ["--matrix", "smoke"], 120, log=lambda line: None)
    assert list(first) == commits[1:]  # git's A..B: A excluded
    assert [first[c] for c in commits[1:]] == ["ok", "ok", "skipped", "ok"]
    record = json.loads((out / "runs" / commits[3] / "backfill.json").read_text())
    assert "No module named" in record["reason"]
    assert len(calls.read_text().splitlines()) == 4
    (out / "runs" / commits[2] / "backfill.json").unlink()  # as if killed during that commit
    again = backfill(repo, f"{commits[0]}..{commits[-1]}", out, ["--matrix", "smoke"], 120, log=lambda line: None)
    assert [again[c] for c in commits[1:]] == ["done before", "ok", "done before", "done before"]
    assert len(calls.read_text().splitlines()) == 5
    from bench.history.sources import load_sources

    runs, skipped = load_sources([out / "runs"])
    assert sorted(r.commit for r in runs) == sorted([commits[1], commits[2], commits[4]])  # backfill.json's full hash
    assert [s.commit for s in skipped] == [commits[3]]


def test_a_bad_range_is_one_line(tmp_path):
    commits = _repo_with_commits(tmp_path / "repo", 2)
    from bench.history.backfill import commits_in

    with pytest.raises(ValueError, match="not a commit range"):
        commits_in(tmp_path / "repo", "nope..HEAD")
    with pytest.raises(ValueError, match="holds no commit"):
        commits_in(tmp_path / "repo", f"{commits[1]}..{commits[1]}")


# -- a real browser --------------------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
def test_the_page_opens_from_disk_in_headless_chromium_with_charts_and_no_console_error(planted, tmp_path):
    import matplotlib.pyplot as plt

    (page,) = [p for p in planted["out"].glob("*.html") if p.name != "index.html"]
    shot = tmp_path / "shot.png"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--user-data-dir=" + str(tmp_path / "profile")]
    done = subprocess.run(base + ["--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1400,1800",
                                  page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.is_file(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
               or "ERR_FILE_NOT_FOUND" in line or "Failed to load resource" in line]
    assert console == []
    image = plt.imread(shot)[..., :3]
    assert image.shape[0] >= 1000 and image.shape[1] >= 1000
    assert image.std() > 0.05  # not a blank page
    colours = {tuple(p) for p in (image[::7, ::7] * 255).astype(int).reshape(-1, 3).tolist()}
    assert len(colours) > 50  # charts drawn, not text alone
    dom = subprocess.run(base + ["--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert "Steps found, worst first: 1" in dom.stdout
    img_ok = dom.stdout.count("data:image/png;base64,")
    assert img_ok >= 1
    shutil.copy(shot, planted["root"] / "last-screenshot.png")


def test_run_to_run_drift_that_a_runs_own_samples_do_not_show_widens_a_one_run_side():
    """Each run is tight (0.3%) but runs wander by about 5%: the newest run 8% up is within the wander, not a step."""
    rng = np.random.default_rng(5)
    levels = [100, 104, 97, 103, 96, 101, 99, 108]
    points = [Point(f"c{i}", level * np.exp(rng.normal(0, 0.003, 20))) for i, level in enumerate(levels)]
    boots = [hs.boot_medians(p, 1000, rng) for p in points]
    sigma, tau = hs.noise_sigma(np.log([p.median_ms for p in points]), boots)
    assert tau > 0.03
    *_, called, reason = judge(list(range(7)), [7], points, boots, rng, tau=tau)
    assert not called and reason.startswith("not shown")


def test_backfill_without_exactly_one_range_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["history", "backfill", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected one range" in err and len(err.splitlines()) == 1


def test_normalize_takes_out_a_machine_that_was_slower_during_some_runs(tmp_path):
    """Runs 4..7 of the same code on a machine 30% slower (its calibration GEMM too): a step without
    --normalize, none with it."""
    from bench.history.build import build
    from bench.history.sources import load_sources

    rng = np.random.default_rng(11)
    for i in range(8):
        folder = tmp_path / "runs" / f"run{i}"
        slow = 1.3 if i >= 4 else 1.0
        _write_run(folder, f"{i:07d}abc", f"2026-01-{i + 1:02d}T00:00:00+00:00", {r["case_key"]: slow for r in _rows()[1]},
                   rng)
        meta = json.loads((folder / "meta.json").read_text())
        meta["calibration"]["gemm_ms"] = 100.0 * slow
        (folder / "meta.json").write_text(json.dumps(meta))
    raw = build(*load_sources([tmp_path / "runs"]), [])
    assert {s.commit_after for _, s in raw[0].steps()} == {"0000004"}
    normalised = build(*load_sources([tmp_path / "runs"]), [], normalize=True)
    assert normalised[0].steps() == []
    meta = json.loads((tmp_path / "runs" / "run0" / "meta.json").read_text())
    del meta["calibration"]["gemm_ms"]
    (tmp_path / "runs" / "run0" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="--normalize: 1 run"):
        build(*load_sources([tmp_path / "runs"]), [], normalize=True)
