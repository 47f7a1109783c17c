"""``--resume``: reopen an interrupted run's folder, after checking, without changing anything, that it may be.

Refused in one line, the folder left as it was: no ``results.csv``; a CSV damaged anywhere but in
its last line; a ``meta.json`` that is not JSON; a run of another device, or of other cases or
timing settings than this command selects (the run's ``meta.json`` records them); a run that
another process is still writing (its folder lock). Only then repaired: a partial last line cut
off (CSV and samples), a ``meta.json`` lost at its rename recovered (from the temporary file when
that is whole, else written again from this command), stray temporary files removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

from bench.core.selection import Selection
from bench.runs.files import FolderLock, atomic_write_text
from bench.runs.contract import META_JSON, RESULTS_CSV
from bench.runs.writer import RunWriter, check_run_files, csv_records


def selection_fingerprint(selection: Selection) -> dict:
    """What ``meta.json`` records of a run's selection, for a resume to compare with its own."""
    keys = sorted(c.key for c in selection.cases)
    return {"cases": len(keys), "case_keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest()}


def reopen(run_dir: Path, selection: Selection, new_meta: Callable[[], dict]) -> tuple[RunWriter, FolderLock, list[str]]:
    """Check ``run_dir`` (nothing changed if refused), lock it, repair it; returns the writer, the
    lock (held until the run ends) and notes on what was repaired. ``new_meta`` makes a meta.json
    for a run that lost its own. Raises ValueError (one line) when the resume is refused."""
    meta = check_resumable(run_dir, selection)
    lock = FolderLock(run_dir).acquire("--resume")
    try:
        writer = RunWriter(run_dir)  # cuts a partial last line off results.csv and samples.jsonl
        notes = [] if meta is not None else [recover_meta(run_dir, new_meta)]
        for stray in run_dir.glob(".*.tmp"):  # what a kill during an atomic write leaves; nobody else writes here
            stray.unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return writer, lock, notes


def record_resume(run_dir: Path, command: list[str], done: int, todo: int) -> None:
    """Append this resume to ``meta.json``'s ``resumes`` (when, the command, the cases already measured and those
    left), so a reader of the run knows it was made in several attempts. The caller holds the folder's lock."""
    import shlex

    from bench.runs.provenance import git_commit, utc_now

    path = run_dir / META_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # reopen() has just written a meta.json; one that cannot be read again is reported by the run's end
    meta.setdefault("resumes", []).append({"at": utc_now(), "commit": git_commit(), "command": shlex.join(command),
                                           "cases_done_before": done, "cases_left": todo})
    atomic_write_text(path, json.dumps(meta, indent=2, default=str) + "\n")


def check_resumable(run_dir: Path, selection: Selection) -> Optional[dict]:
    """Read-only checks; returns the run's meta.json (None when it is missing)."""
    where = f"--resume {run_dir}"
    if not (run_dir / RESULTS_CSV).is_file():
        raise ValueError(f"{where}: not a results folder (no {RESULTS_CSV} in it)")
    check_run_files(run_dir)
    meta = None
    if (run_dir / META_JSON).is_file():
        try:
            meta = json.loads((run_dir / META_JSON).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: {META_JSON} is not valid JSON ({err}); remove it and resume again to have it "
                             "written from this command") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: {META_JSON} is not a JSON object; remove it and resume again")
    again = f"; resume with the run's own options{': ' + meta['command'] if meta and meta.get('command') else ''}"
    if meta is not None:
        slug = (meta.get("device") or {}).get("slug")
        if slug and slug != selection.facts.slug:
            raise ValueError(f"{where}: the run was measured on {slug}, this is {selection.facts.slug}; a run continues "
                             "on the device it started on (start a new run here)")
        recorded = meta.get("case_keys_sha256")
        if recorded and recorded != selection_fingerprint(selection)["case_keys_sha256"]:
            raise ValueError(f"{where}: this command selects {len(selection.cases)} cases of matrix "
                             f"{selection.matrix.name!r}, the run was started for {meta.get('cases', '?')} cases of matrix "
                             f"{meta.get('matrix', '?')!r}{again}")
        settings = meta.get("settings")
        now = selection.settings.__dict__
        changed = sorted(k for k in settings if k in now and settings[k] != now[k]) if isinstance(settings, dict) else []
        if changed:
            raise ValueError(f"{where}: the timing settings differ from the run's ({', '.join(changed)}): its rows and "
                             f"these would not be comparable{again}")
    records = csv_records((run_dir / RESULTS_CSV).read_text(encoding="utf-8"), run_dir / RESULTS_CSV)
    if meta is None and records:  # the settings are lost with meta.json: the rows still record two of them
        _check_row_settings(where, records, selection.settings.__dict__)
    if records:
        key = records[0].index("case_key")
        wanted = {c.key for c in selection.cases}
        strangers = sorted({r[key] for r in records[1:] if len(r) == len(records[0])} - wanted)
        if strangers:
            raise ValueError(f"{where}: the run holds {len(strangers)} case(s) this command does not select "
                             f"(e.g. {strangers[0]}){again}")
    return meta


_ROW_SETTINGS = (("warmup_iters", "warmup"), ("processes", "processes"))  # (results.csv column, timing setting)


def _check_row_settings(where: str, records: list[list[str]], now: dict) -> None:
    """With meta.json lost, refuse a resume whose warm-up or process count differs from what the run's ok rows
    record (a new meta.json would claim this command's settings for rows measured under others)."""
    header = records[0]
    if "status" not in header:
        return
    status = header.index("status")
    for column, setting in _ROW_SETTINGS:
        if column not in header or setting not in now:
            continue
        at = header.index(column)
        seen = set()
        for record in records[1:]:
            if len(record) == len(header) and record[status] == "ok":
                text = record[at].strip() or ("1" if setting == "processes" else "")  # one process: the column is empty
                try:
                    seen.add(float(text))
                except ValueError:
                    continue
        expected = float(max(1, now[setting]) if setting == "warmup" else now[setting])  # measure.py records max(1, warmup)
        if seen and seen != {expected}:
            raise ValueError(f"{where}: {META_JSON} is lost, and the run's rows were measured with {setting} "
                             f"{', '.join(f'{v:g}' for v in sorted(seen))}, this command's is {now[setting]}: its rows and "
                             "these would not be comparable; resume with the run's own timing options")


def recover_meta(run_dir: Path, new_meta: Callable[[], dict]) -> str:
    """Put a missing meta.json back: the temporary file a kill at its rename left, if whole; else a new one."""
    temps = sorted(run_dir.glob(f".{META_JSON}.*.tmp"), key=lambda p: p.stat().st_mtime, reverse=True)
    for tmp in temps:
        try:
            if isinstance(json.loads(tmp.read_text(encoding="utf-8")), dict):
                os.replace(tmp, run_dir / META_JSON)
                return f"{META_JSON} was missing; recovered from {tmp.name}, which a stop at its rename left"
        except (ValueError, UnicodeDecodeError, OSError):
            continue
    meta = new_meta()
    meta["recovered"] = f"{META_JSON} was missing when this run was resumed; written again from the resuming command"
    atomic_write_text(run_dir / META_JSON, json.dumps(meta, indent=2, default=str) + "\n")
    return f"{META_JSON} was missing; written again from this command (its calibration and start time are this resume's)"
