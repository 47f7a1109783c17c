"""A machine's runs in commit order: git's (oldest first, topological) where every run's commit is a
commit of the repository at hand, else the runs' recorded times (ISO 8601 sorts as text).

Runs of one commit keep their time order among themselves.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional, Sequence, TypeVar

T = TypeVar("T")


def git_order(repo: Optional[Path]) -> list[str]:
    """Every commit of ``repo`` (all refs), oldest first in topological order; [] without git or a repository."""
    if repo is None:
        return []
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-list", "--topo-order", "--reverse", "--all"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return done.stdout.split() if done.returncode == 0 else []


def position(commit: str, commits: Sequence[str], index: dict[str, int]) -> Optional[int]:
    """The place of ``commit`` (a full or abbreviated hash, at least 7 characters) in ``commits``; None if absent."""
    if len(commit) < 7:
        return None
    if commit in index:
        return index[commit]
    matches = [i for c, i in index.items() if c.startswith(commit)]
    return matches[0] if len(matches) == 1 else None


def order_runs(runs: list[T], commits: Sequence[str], commit_of=lambda r: r.commit,
               time_of=lambda r: r.created) -> tuple[list[T], str]:
    """(runs sorted, how): ``"git"`` when every run's commit is in ``commits``, else ``"time"``."""
    index = {c: i for i, c in enumerate(commits)}
    places = [position(commit_of(r), commits, index) for r in runs]
    if runs and commits and all(p is not None for p in places):
        ranked = sorted(zip(places, runs), key=lambda pr: (pr[0], time_of(pr[1])))
        return [r for _, r in ranked], "git"
    return sorted(runs, key=lambda r: (time_of(r), commit_of(r))), "time"


def full_hash(commit: str, commits: Sequence[str]) -> str:
    """The full hash of an abbreviated ``commit`` when the repository has exactly one match, else ``commit``."""
    matches = [c for c in commits if c.startswith(commit)] if len(commit) >= 7 else []
    return matches[0] if len(matches) == 1 else commit
