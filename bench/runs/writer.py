"""Where rows go: a run folder with ``results.csv`` (appended and flushed row by row),
``samples.jsonl`` (every case's per-iteration times, for the regression check) and
``meta.json`` (device, command, matrix). A run killed half-way keeps every finished row.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from bench.runs.files import atomic_write_text
from bench.runs.schema import COLUMN_NAMES, check_row

RESULTS_CSV = "results.csv"
SAMPLES_JSONL = "samples.jsonl"
META_JSON = "meta.json"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return value


class RunWriter:
    """Appends rows to a run folder as cases finish."""

    def __init__(self, run_dir: Path, meta: Optional[dict] = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / RESULTS_CSV
        self.samples_path = self.run_dir / SAMPLES_JSONL
        if self.csv_path.exists() and self.csv_path.stat().st_size:
            self._check_existing()
        else:
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(COLUMN_NAMES)
        if meta is not None:
            atomic_write_text(self.run_dir / META_JSON, json.dumps(meta, indent=2, default=str) + "\n")

    def _check_existing(self) -> None:
        """Accept an existing run's CSV to append to (resume): same columns, whole rows.

        A run killed in the middle of a write can leave a partial last line; it is cut off (that
        case is measured again). Anything else malformed is an error, and nothing is changed.
        """
        _drop_partial_last_line(self.samples_path)
        text = self.csv_path.read_text()
        rows = list(csv.reader(text.splitlines()))
        if tuple(rows[0]) != COLUMN_NAMES:
            raise ValueError(f"{self.csv_path} has other columns than this version writes; use a new results folder")
        bad = [n for n, r in enumerate(rows[1:], 2) if len(r) != len(COLUMN_NAMES)]
        last_whole = text.endswith("\n")
        if bad and not (bad == [len(rows)] and not last_whole):
            raise ValueError(f"{self.csv_path} is corrupt: line {bad[0]} has the wrong number of fields; "
                             "fix or remove that line, or start a new results folder")
        _drop_partial_last_line(self.csv_path)

    def done_keys(self) -> set[str]:
        """Case keys already in this run's CSV (any status): what ``--resume`` skips."""
        with open(self.csv_path, newline="") as f:
            return {row["case_key"] for row in csv.DictReader(f)}

    def append(self, row: dict[str, Any], samples_s: Optional[Iterable[float]] = None) -> None:
        check_row(row)
        with open(self.csv_path, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row[c]) for c in COLUMN_NAMES])
            f.flush()
            os.fsync(f.fileno())
        if samples_s is not None:
            with open(self.samples_path, "a") as f:
                f.write(json.dumps({"case_key": row["case_key"], "samples_ms": [round(s * 1e3, 6) for s in samples_s]}) + "\n")
                f.flush()
                os.fsync(f.fileno())


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
