"""Where a run comes from: its id, the time, the commit, the command and the device (``meta.json``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(device_slug: str) -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{device_slug}"


def claim_run_dir(results_root: Path, device_slug: str) -> Path:
    """Create a new, empty run folder under ``results_root`` that no other run has.

    Run ids are per second; two runs started in the same second get ``<id>``, ``<id>-02``, ...
    (``mkdir`` without ``exist_ok`` is the arbiter, so two processes never get the same folder,
    and the names still sort in time order).
    """
    root = Path(results_root)
    root.mkdir(parents=True, exist_ok=True)
    base = new_run_id(device_slug)
    for n in range(1, 100):
        path = root / (base if n == 1 else f"{base}-{n:02d}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{root}: 99 run folders named {base}* already exist")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def git_tree_state() -> str:
    """``""`` for a clean work tree, else ``"dirty:"`` and the hash of ``git diff HEAD`` (tracked files'
    changes): two runs of one commit measured the same code only when this matches too."""
    try:
        out = subprocess.run(["git", "diff", "HEAD", "--binary"], capture_output=True, timeout=20,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0 or not out.stdout:
        return ""
    return "dirty:" + hashlib.sha256(out.stdout).hexdigest()[:16]


def git_dirty() -> Optional[bool]:
    """True when tracked files differ from HEAD (the run's code is not the commit's), None without git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parent)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def source_state() -> dict:
    """``{"commit": short hash, "dirty": bool or None}``: the code a run ran, for its provenance."""
    return {"commit": git_commit(), "dirty": git_dirty()}


def source_text(meta: dict) -> str:
    """``commit abc1234`` or ``commit abc1234 + uncommitted changes`` from a run's meta (``?`` when unknown)."""
    commit = meta.get("commit") or "?"
    dirty = meta.get("dirty")
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "" if dirty is False else " (clean state unknown)")


def provenance(command: Sequence[str]) -> dict:
    """Where a folder's files came from, the same for every command that writes one (run, quality,
    downstream, plan, profile): ``created`` (UTC, ISO 8601), ``commit`` (short hash), ``dirty`` (tracked
    files differ from the commit; None without git), ``tree`` (``""`` when clean, else a hash of the
    difference) and ``command``, shell-quoted (:func:`shlex.join`: pasted into a shell, it runs again)."""
    return {"created": utc_now(), **source_state(), "tree": git_tree_state(), "command": shlex.join(command)}


def bench_command(argv: Sequence[str], env: Sequence[str] = ()) -> list[str]:
    """``python -m bench ARGV``, after ``NAME=value`` for each of ``env`` set in the environment."""
    return [f"{k}={os.environ[k]}" for k in env if os.environ.get(k)] + ["python", "-m", "bench", *argv]


def write_provenance(folder: Path, command: Sequence[str]) -> dict:
    """:func:`provenance` as ``folder/provenance.json`` (a plan's or a profile's folder, which have no meta.json)."""
    from bench.runs.contract import PROVENANCE_JSON
    from bench.runs.files import atomic_write_text

    record = provenance(command)
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / PROVENANCE_JSON, json.dumps(record, indent=2) + "\n")
    return record


def run_meta(facts: Any, matrix: str, command: Optional[list[str]] = None, extra: Optional[dict] = None,
             calibration: Optional[dict] = None) -> dict:
    """What a run folder's ``meta.json`` holds: when, which commit, how to reproduce (:func:`provenance`), on what."""
    meta = {
        **provenance(command if command is not None else sys.argv), "matrix": matrix,
        "device": facts.as_dict(),
        "calibration": calibration or {},
    }
    meta.update(extra or {})
    return meta
