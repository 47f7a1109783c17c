"""Does ``python -m bench history`` find a real slowdown at its commit? ``python -m bench.selfcheck.history_check WORK``.

A scratch clone of this checkout (the working tree as it is, see :func:`bench.selfcheck.regression.scratch_repo`)
gets a history of ``--commits`` commits: empty commits, except that commit ``--slow-at`` (counted from 0)
appends the regression check's slower model (each forward runs the model again on a quarter of the batch:
25% more work). ``python -m bench history backfill`` then measures every commit in its own worktree, one
run each, and renders the pages into ``WORK/pages``; the steps found are printed. The expected answer is
one step, slower, at commit ``--slow-at``, and none elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.selfcheck.regression import SLOWDOWN, THREADS, _git, clone_working_tree

CASE = ["--matrix", "smoke", "--families", "transformer", "--sizes", "201x201", "--attention", "flash",
        "--modes", "infer", "--batch", "4", "--device", "cpu"]  # batch 4: the extra quarter-batch forward is 25% more work


def scratch_history(source: Path, work: Path, commits: int, slow_at: int) -> Path:
    repo = clone_working_tree(source, work, "history check: commit 0 (the working tree)")
    for i in range(1, commits):
        if i == slow_at:
            with open(repo / "ae_models" / "registry.py", "a") as f:
                f.write(SLOWDOWN)
            _git(repo, "commit", "--quiet", "-am", f"history check: commit {i}, 25% more work per step")
        else:
            _git(repo, "commit", "--quiet", "--allow-empty", "-m", f"history check: commit {i}")
    return repo


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selfcheck.history_check", description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="an empty folder for the scratch repository, the runs and the pages")
    parser.add_argument("--commits", type=int, default=8)
    parser.add_argument("--slow-at", type=int, default=5)
    parser.add_argument("--min-time", default="1")
    parser.add_argument("--normalize", action="store_true",
                        help="render with `history --normalize` (each run's times over its calibration GEMM's)")
    args = parser.parse_args(argv)
    if not 0 < args.slow_at < args.commits:
        raise SystemExit(f"--slow-at {args.slow_at}: expected 1..{args.commits - 1}")
    args.work.mkdir(parents=True, exist_ok=True)
    repo = scratch_history(Path(__file__).resolve().parents[2], args.work.resolve(), args.commits, args.slow_at)
    hashes = _git(repo, "rev-list", "--reverse", f"HEAD~{args.commits - 1}..HEAD").split()
    hashes.insert(0, _git(repo, "rev-parse", f"HEAD~{args.commits - 1}"))  # the scratch history's commit 0
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": THREADS}
    command = [sys.executable, "-m", "bench", "history", "backfill", f"{hashes[0]}..{hashes[-1]}", *CASE,
               "--min-time", args.min_time, "--out", str(args.work.resolve() / "pages"), "--repo", str(repo)]
    # git's A..B leaves A out: the first commit is measured on its own first
    first = [sys.executable, "-m", "bench", "history", "backfill", hashes[0], *CASE, "--min-time", args.min_time,
             "--out", str(args.work.resolve() / "pages"), "--repo", str(repo)]
    for line in (first, command):
        print("$ " + " ".join(line[1:]), flush=True)
        subprocess.run(line, cwd=repo, env=env, check=False)
    render = [sys.executable, "-m", "bench", "history", str(args.work.resolve() / "pages" / "runs"), "--out",
              str(args.work.resolve() / "pages"), "--repo", str(repo)] + (["--normalize"] if args.normalize else [])
    print("$ " + " ".join(render[1:]), flush=True)
    subprocess.run(render, cwd=repo, env=env, check=False)
    steps = json.loads(next((args.work / "pages").glob("*.steps.json")).read_text())
    slow = hashes[args.slow_at]
    found = [(s["commit_after"], f"{(s['ratio'] - 1) * 100:+.1f}%", f"[{(s['low'] - 1) * 100:+.1f}%, "
              f"{(s['high'] - 1) * 100:+.1f}%]") for s in steps["steps"]]
    print(f"planted at commit {args.slow_at} ({slow[:10]}); steps found: {found}")
    return 0 if [f[0] for f in found] == [slow] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
