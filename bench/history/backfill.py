"""``python -m bench history backfill A..B --matrix M --out DIR``: one run per commit of a range, each in a
temporary worktree of that commit (``bench.compare.ab.worktree``), so a history exists from day one (as
``asv run A..B`` does).

The range follows git's meaning (A excluded, B included) along the first parent, as asv walks a branch:
a merge counts as one commit of the main line. Each commit's run goes to ``DIR/runs/<full hash>/`` with a
``backfill.json`` saying what happened (``ok``, or ``skipped`` and why: the commit's harness cannot import,
lacks an option of the matrix, or failed). A commit with a ``backfill.json`` is done and is not run again:
an interrupted backfill resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from bench.history.sources import BACKFILL_JSON
from bench.runs.files import atomic_write_text
from bench.runs.provenance import utc_now
from bench.runs.writer import RESULTS_CSV

DEFAULT_COMMIT_TIMEOUT_S = 1800.0


def commits_in(repo: Path, spec: str) -> list[str]:
    """The commits of ``A..B`` (or of one commit), oldest first along the first parent; ValueError naming a bad range."""
    if ".." in spec:
        a, b = spec.split("..", 1)
        if not a or not b:
            raise ValueError(f"backfill: bad range {spec!r}: expected A..B, e.g. HEAD~8..HEAD")
        args = ["rev-list", "--first-parent", "--reverse", f"{a}..{b}"]
    else:
        args = ["rev-list", "--no-walk", spec]
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ValueError(f"backfill: {spec!r} is not a commit range of {repo}: {done.stderr.strip().splitlines()[-1:]}")
    commits = done.stdout.split()
    if not commits:
        raise ValueError(f"backfill: the range {spec!r} holds no commit")
    return commits


def status_of(folder: Path) -> Optional[str]:
    """``ok`` or ``skipped`` for a commit already done, None for one still to run."""
    path = folder / BACKFILL_JSON
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("status") or "") or None
    except (OSError, json.JSONDecodeError):
        return None  # a half-written record: run the commit again


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


def run_commit(code: Path, commit: str, dest: Path, bench_args: list[str], timeout_s: float) -> tuple[str, str]:
    """(status, reason) of ``python -m bench run BENCH_ARGS --results DEST`` with ``code``'s harness."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "bench", "run", *bench_args, "--results", str(dest)]
    child = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its own session: the run and any child it started
        child.communicate()
        return "skipped", f"timed out after {timeout_s:g} s"
    done = sorted(dest.rglob(RESULTS_CSV))
    if child.returncode != 0 or not done:
        why = _last_line(err) or _last_line(out)
        return "skipped", f"the harness of {commit[:10]} failed (exit {child.returncode}): {why}"
    return "ok", ""


def backfill(repo: Path, spec: str, out: Path, bench_args: list[str], timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
             worktree=None) -> dict[str, str]:
    """Run each commit of ``spec`` not done yet; returns commit -> status (``ok``, ``skipped``, ``done before``)."""
    if worktree is None:  # ab's worktrees, without ab's check that its own parent can drive the commit's child
        import functools

        from bench.compare.ab import worktree as ab_worktree

        worktree = functools.partial(ab_worktree, check=False)
    out = Path(out).resolve()  # the run's --results is read in the worktree: a relative path would land there
    commits = commits_in(repo, spec)
    results: dict[str, str] = {}
    for n, commit in enumerate(commits, 1):
        folder = out / "runs" / commit
        if status_of(folder):
            results[commit] = "done before"
            log(f"backfill {n}/{len(commits)} {commit[:10]}: done before ({status_of(folder)}), skipped")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():  # an interrupted attempt's partial run: measured again from scratch
            if stale.is_dir():
                import shutil

                shutil.rmtree(stale)
        started = time.monotonic()
        record = {"commit": commit, "started": utc_now(), "command": ["python", "-m", "bench", "run", *bench_args]}
        try:
            with worktree(repo, commit) as (code, _label):
                status, reason = run_commit(code, commit, folder, bench_args, timeout_s)
        except ValueError as err:  # the commit's harness cannot measure (ab's check), or no worktree
            status, reason = "skipped", str(err)
        except subprocess.SubprocessError as err:
            status, reason = "skipped", f"no worktree of {commit[:10]}: {err}"
        record.update(status=status, reason=reason, finished=utc_now(), seconds=round(time.monotonic() - started, 1))
        atomic_write_text(folder / BACKFILL_JSON, json.dumps(record, indent=1) + "\n")
        results[commit] = status
        log(f"backfill {n}/{len(commits)} {commit[:10]}: {status}{': ' + reason if reason else ''} ({record['seconds']} s)")
    return results
