"""A finished (or killed) run read back from disk: its rows, per-iteration samples and facts.

Two files hold the same rows. A results folder (``results.csv``, ``samples.jsonl``,
``meta.json``; see :mod:`bench.runs.writer`), and the pytest-benchmark JSON that
``--benchmark-autosave`` writes, whose ``benchmarks[i]["extra_info"]`` is a row (empty columns
left out) plus ``samples_ms``. Reports and checks read either through :func:`load_run`.

Anything malformed raises ``ValueError`` with one line naming the file and the fault; nothing
is guessed. Missing optional pieces (no ``samples.jsonl``, no ``meta.json``) are not errors:
they are listed in ``SavedRun.notes`` so that a report can say what it could not show.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench.runs.contract import META_JSON, RESULTS_CSV, SAMPLES_JSONL
from bench.runs.writer import CSV_FIELD_LIMIT
from bench.runs.schema import COLUMN_NAMES, COLUMNS, LATER_COLUMNS, STATUSES

# Typed columns: everything with a unit is a number; these are booleans; the rest is text.
BOOL_COLUMNS = ("checkpointing", "noisy", "throttled", "bimodal")
NUMERIC_COLUMNS = tuple(c.name for c in COLUMNS if c.unit not in ("", "WxH", "ISO 8601")) + ("latent",)
TEXT_COLUMNS = tuple(c for c in COLUMN_NAMES if c not in BOOL_COLUMNS and c not in NUMERIC_COLUMNS)

_BOOLS = {"true": True, "false": False, "1": True, "0": False}


@dataclass
class SavedRun:
    """One run's data. ``rows`` has the schema's columns (numbers as floats, NaN when empty;
    booleans as True/False/None; text as str, "" when empty); ``samples_ms`` maps a case_key to
    its per-iteration times in ms."""

    rows: pd.DataFrame
    samples_ms: dict[str, list[float]]
    meta: dict
    source: Path
    kind: str                       # "results folder" or "pytest-benchmark JSON"
    default_out: Path               # where a report of this run goes unless told otherwise
    notes: list[str] = field(default_factory=list)

    @property
    def device_name(self) -> str:
        """The device's name as the run recorded it ("NVIDIA H200", the CPU's model), "" when it did not."""
        device = self.meta.get("device")
        return str(device.get("name") or "") if isinstance(device, dict) else ""

    @property
    def device_type(self) -> str:
        """``cuda`` or ``cpu``: the rows' device (meta.json's when no row says)."""
        devices = [d for d in self.rows["device"] if d]
        if devices:
            return "cuda" if "cuda" in devices else devices[0]
        return str(self.meta.get("device", {}).get("type", "") or "unknown")


def load_run(path: Path) -> SavedRun:
    """Read a results folder (or its ``results.csv``) or a pytest-benchmark JSON file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist: give a results folder (with {RESULTS_CSV}) or a pytest-benchmark JSON file")
    if path.is_file() and path.name == RESULTS_CSV:
        path = path.parent
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".json":
        return _load_benchmark_json(path)
    raise ValueError(f"{path} is neither a results folder (with {RESULTS_CSV}) nor a pytest-benchmark .json file")


# -- results folder --------------------------------------------------------------------------

def _load_folder(folder: Path) -> SavedRun:
    csv_path = folder / RESULTS_CSV
    if not csv_path.is_file():
        raise ValueError(f"{folder} is not a results folder: no {RESULTS_CSV} in it")
    records = _read_csv_records(csv_path)
    rows = typed_rows(records, str(csv_path), first_line=2)
    notes = []
    meta: dict = {}
    meta_path = folder / META_JSON
    if meta_path.is_file():
        meta = _read_json(meta_path)
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path} is not a JSON object: the file is corrupt")
    else:
        notes.append(f"no {META_JSON} in the folder: the device facts and the command that made the run are unknown")
    samples: dict[str, list[float]] = {}
    samples_path = folder / SAMPLES_JSONL
    if samples_path.is_file():
        samples = _read_samples(samples_path)
    elif (rows["status"] == "ok").any():
        notes.append(f"no {SAMPLES_JSONL} in the folder: latency distributions cannot be drawn")
    return SavedRun(rows, samples, meta, folder, "results folder", folder, notes)


def _read_csv_records(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (corrupt?): {err}") from None
    if not text.strip():
        raise ValueError(f"{path} is empty: the run wrote no header; nothing to report")
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))  # not str.splitlines(): a U+2028 in a cell is no line end
    try:
        header = next(reader)
        body = [(reader.line_num, record) for record in reader]
    except csv.Error as err:
        raise ValueError(f"{path} is not valid CSV (corrupt?): {err}") from None
    missing = [c for c in COLUMN_NAMES if c not in header and c not in LATER_COLUMNS]  # an older run lacks these: empty
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{path} is not an ae-bench results.csv: its header lacks {len(missing)} column(s) ({shown})")
    resume = (f"the run was stopped mid-write: resume it (its command with --resume {path.parent}), which cuts that "
              "line off and measures its case again")
    if not text.endswith("\n"):  # the writer ends every row with a line end: a last line without one is cut short,
        # even when the cut fell inside its last field (a timestamp cut to "2026-0" still has every field)
        raise ValueError(f"{path} is truncated or corrupt: its last line is cut short; {resume}")
    records, lines = [], {}
    last = body[-1][0] if body else 0
    for line, record in body:
        if not record:
            continue
        if len(record) != len(header):
            raise ValueError(f"{path} line {line} has {len(record)} fields where the header has {len(header)}: "
                             + "the file is truncated or corrupt" + (f"; {resume}" if line == last else ""))
        records.append(dict(zip(header, record)))
        key = records[-1].get("case_key", "")
        if key in lines:  # compare would silently take the later row, the report count the case twice
            raise ValueError(f"{path}: case_key {key!r} is on lines {lines[key]} and {line}: one run holds one row a "
                             "case (merged or edited by hand?); keep one of them")
        lines[key] = line
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt): {err}") from None


def read_sample_processes(path: Path) -> dict[str, list[int]]:
    """Per case measured in several processes (``--processes``), each sample's process index; ``{}`` without them."""
    out = {}
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        try:
            item = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and isinstance(item.get("process"), list):
            out[str(item.get("case_key"))] = [int(i) for i in item["process"]]
    return out


def _read_samples(path: Path) -> dict[str, list[float]]:
    samples = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, values = item["case_key"], [float(v) for v in item["samples_ms"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} line {n} is not a samples record ({type(err).__name__}: {err}): "
                             f"the file is truncated or corrupt") from None
        samples[key] = values
    return samples


# -- pytest-benchmark JSON -------------------------------------------------------------------

def _load_benchmark_json(path: Path) -> SavedRun:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file: no 'benchmarks' list")
    if not data["benchmarks"]:
        raise ValueError(f"{path} holds no benchmarks: nothing to report")
    records, samples, others = [], {}, []
    for i, bench in enumerate(data["benchmarks"]):
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        if not isinstance(extra, dict) or "case_key" not in extra or "status" not in extra:
            # other benchmarks of the same session (bench/test_blocks.py, ...) carry no case row
            others.append(bench.get("name", f"#{i}") if isinstance(bench, dict) else f"#{i}")
            continue
        records.append({c: extra.get(c) for c in COLUMN_NAMES})
        if isinstance(extra.get("samples_ms"), list):
            try:
                samples[extra["case_key"]] = [float(v) for v in extra["samples_ms"]]
            except (TypeError, ValueError):
                raise ValueError(f"{path}: benchmark {bench.get('name', i)} has non-numeric samples_ms") from None
    if not records:
        raise ValueError(f"{path}: none of its {len(others)} benchmarks has an ae-bench row in extra_info "
                         f"(the file was not saved by `pytest bench`)")
    rows = typed_rows(records, str(path), first_line=None)
    ae = data.get("ae_bench") if isinstance(data.get("ae_bench"), dict) else {}
    meta = ae.get("meta") if isinstance(ae.get("meta"), dict) else _meta_from_benchmark_json(data, ae)
    notes = ["read from a pytest-benchmark JSON file, which keeps only the cases that were timed: cases skipped as "
             "unsupported before timing are not in it" + (f"; the run folder {ae['run_dir']} has every row" if ae.get("run_dir") else "")]
    if others:
        notes.append(f"{len(others)} other benchmark(s) of the session, with no case row, were left out: {', '.join(others[:5])}"
                     + (" ..." if len(others) > 5 else ""))
    if not ae.get("meta"):
        notes.append("this JSON does not carry the run's meta.json: the command is unknown, the device facts come from machine_info")
    return SavedRun(rows, samples, meta, path, "pytest-benchmark JSON", path.parent / f"{path.stem}-report", notes)


def _meta_from_benchmark_json(data: dict, ae: dict) -> dict:
    machine = data.get("machine_info", {}).get("ae_bench", {}) if isinstance(data.get("machine_info"), dict) else {}
    commit = data.get("commit_info", {}) if isinstance(data.get("commit_info"), dict) else {}
    commit_id = str(commit.get("id") or "")[:7] + ("-dirty" if commit.get("dirty") else "")
    device = {"type": machine.get("device", ""), "name": machine.get("name", ""), "driver": machine.get("driver", ""),
              "cuda": machine.get("cuda", ""), "cudnn": machine.get("cudnn", ""), "torch": machine.get("torch", ""),
              "total_memory_mib": machine.get("memory_mib"), "slug": machine.get("slug", "")}
    return {"created": data.get("datetime", ""), "commit": commit_id, "matrix": ae.get("matrix", ""), "command": "",
            "device": device, "calibration": ae.get("calibration", {}), "entry": "pytest"}


# -- typing ----------------------------------------------------------------------------------

def typed_rows(records: Iterable[dict], where: str, first_line: int | None = None) -> pd.DataFrame:
    """Rows (CSV strings or JSON values) as a typed DataFrame; a bad cell raises naming its line."""
    records = list(records)
    out: dict[str, list] = {c: [] for c in COLUMN_NAMES}
    for n, record in enumerate(records):
        at = f"{where} line {first_line + n}" if first_line is not None else f"{where} benchmark #{n}"
        for column in COLUMN_NAMES:
            out[column].append(_typed(record.get(column), column, at))
        if out["status"][-1] not in STATUSES:
            raise ValueError(f"{at}: status {out['status'][-1]!r} is not one of {', '.join(STATUSES)} (corrupt row?)")
    rows = pd.DataFrame(out, columns=list(COLUMN_NAMES))
    for column in NUMERIC_COLUMNS:
        rows[column] = rows[column].astype(float)
    if rows.empty:  # a header-only results.csv (an early kill, a full disk): text columns stay text
        for column in TEXT_COLUMNS + BOOL_COLUMNS:
            rows[column] = rows[column].astype(object)
    return rows


def _typed(value: Any, column: str, at: str) -> Any:
    empty = value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value))
    if column in NUMERIC_COLUMNS:
        if empty:
            return math.nan
        if isinstance(value, bool):
            raise ValueError(f"{at}, column {column}: {value!r} is not a number (corrupt row?)")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{at}, column {column}: {value!r} is not a number (corrupt row?)") from None
    if column in BOOL_COLUMNS:
        if empty:
            return None
        if isinstance(value, bool):
            return value
        flag = _BOOLS.get(str(value).strip().lower())
        if flag is None:
            raise ValueError(f"{at}, column {column}: {value!r} is not True or False (corrupt row?)")
        return flag
    return "" if empty else str(value)
