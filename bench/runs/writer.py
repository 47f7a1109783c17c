"""Where rows go: a run folder with ``results.csv`` (appended and flushed row by row),
``samples.jsonl`` (every case's per-iteration times, for the regression check) and
``meta.json`` (device, command, matrix). A run killed half-way keeps every finished row.

A case's samples line is written (and fsynced) before its row: an ``ok`` row on disk always has
its samples, and a samples line without a row (a stop between the two writes) belongs to a case
that ``--resume`` measures again (the later line wins). A write that fails half-way (a full disk)
is cut back off, so the files hold whole lines only.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from bench.runs.contract import META_JSON, RESULTS_CSV, SAMPLES_JSONL
from bench.runs.files import atomic_write_text
from bench.runs.schema import COLUMN_NAMES, check_row

REASON_CAP = 2000  # characters of a reason kept in results.csv (a child's output can be megabytes)
CSV_FIELD_LIMIT = 2**27  # what the readers accept in one field (runs written before REASON_CAP)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    if isinstance(value, str):
        return value.replace("\r", " ").replace("\n", " ")  # one line per row: a cut at a newline is a cut between rows
    return value


def csv_records(text: str, where: object) -> list[list[str]]:
    """The records of CSV ``text``, split by the csv module itself (never ``str.splitlines``, which
    also splits on U+2028 and other characters that are not line ends in a CSV). Raises ValueError."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise ValueError(f"{where} is not valid CSV (corrupt?): {err}") from None


class RunWriter:
    """Appends rows to a run folder as cases finish."""

    def __init__(self, run_dir: Path, meta: Optional[dict] = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / RESULTS_CSV
        self.samples_path = self.run_dir / SAMPLES_JSONL
        if self.csv_path.exists() and self.csv_path.stat().st_size:
            check_run_files(self.run_dir)  # everything checked before anything is changed
            _drop_partial_last_line(self.samples_path)
            _drop_partial_last_line(self.csv_path)
        else:
            header = io.StringIO(newline="")
            csv.writer(header).writerow(COLUMN_NAMES)
            atomic_write_text(self.csv_path, header.getvalue())
        if meta is not None:
            atomic_write_text(self.run_dir / META_JSON, json.dumps(meta, indent=2, default=str) + "\n")

    def done_keys(self) -> set[str]:
        """Case keys already in this run's CSV (any status): what ``--resume`` skips."""
        records = csv_records(self.csv_path.read_text(encoding="utf-8"), self.csv_path)
        if not records:
            return set()
        key = records[0].index("case_key")
        return {r[key] for r in records[1:] if len(r) == len(records[0])}

    def append(self, row: dict[str, Any], samples_s: Optional[Iterable[float]] = None,
               process_index: Optional[Iterable[int]] = None) -> None:
        """Append the case's samples line (if any; with each sample's process index when several processes
        measured it), then its row; each fsynced, each whole or not at all."""
        check_row(row)
        cells = [_cell(row[c]) for c in COLUMN_NAMES]
        reason = COLUMN_NAMES.index("reason")
        if isinstance(cells[reason], str) and len(cells[reason]) > REASON_CAP:
            cells[reason] = cells[reason][:REASON_CAP] + " [cut]"
        line = io.StringIO(newline="")
        csv.writer(line).writerow(cells)
        if samples_s is not None:
            record = {"case_key": row["case_key"], "samples_ms": [round(s * 1e3, 6) for s in samples_s]}
            if process_index is not None:
                record["process"] = list(process_index)
            _append_whole(self.samples_path, (json.dumps(record) + "\n").encode())
        _append_whole(self.csv_path, line.getvalue().encode())


def check_run_files(run_dir: Path) -> None:
    """Check, changing nothing, that a run folder can be appended to (resume): the schema's
    columns and whole rows, bar a partial last line (a write cut short by a kill, which the
    writer cuts off and whose case is measured again). Raises ValueError naming the fault."""
    path = Path(run_dir) / RESULTS_CSV
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (corrupt?): {err}") from None
    last_whole = text.endswith("\n")
    rows = csv_records(text[: text.rfind("\n") + 1] if not last_whole else text, path)
    if not rows or tuple(rows[0]) != COLUMN_NAMES:
        raise ValueError(f"{path} has other columns than this version writes; use a new results folder")
    bad = [n for n, r in enumerate(rows[1:], 2) if len(r) != len(COLUMN_NAMES)]
    if bad:
        raise ValueError(f"{path} is corrupt: line {bad[0]} has the wrong number of fields; "
                         "fix or remove that line, or start a new results folder")


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync it; if anything stops the write half-way, cut the file back to where it was."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # unbuffered: nothing is left to flush later
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as err:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            if isinstance(err, OSError) and err.filename is None:
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
    finally:
        os.close(fd)


def _drop_partial_last_line(path: Path) -> None:
    """Cut a trailing line that has no newline (a write interrupted by a kill)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_text(path, data[: data.rfind(b"\n") + 1].decode())


def read_rows(run_dir: Path):
    """The rows of a run folder as a pandas DataFrame (for reports and checks)."""
    import pandas as pd

    path = Path(run_dir) / RESULTS_CSV
    if not path.exists():
        raise ValueError(f"{run_dir} is not a results folder: no {RESULTS_CSV} in it")
    try:
        return pd.read_csv(path)
    except Exception as err:
        raise ValueError(f"{path} cannot be read as CSV: {err}") from err
