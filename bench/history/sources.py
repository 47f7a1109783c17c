"""Saved runs read for a history: results folders, pytest-benchmark JSON (``.benchmarks/``) and baseline
stores, found under the paths given, each read through :func:`bench.runs.reader.load_run`.

A run becomes one :class:`Run`: its machine key (``<device-slug>-torch<version>``, as the baseline store
names it), its commit and time, and per ``ok`` case the samples (ms) with their processes. A pytest session
writes the same run twice (the results folder and the JSON naming it in ``ae_bench.run_dir``): the JSON
copy is dropped. A backfilled commit that could not run leaves ``backfill.json`` with the reason, read as
a skipped commit.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from bench.compare.sides import machine_key
from bench.runs.reader import load_run, read_sample_processes
from bench.runs.writer import RESULTS_CSV, SAMPLES_JSONL

BACKFILL_JSON = "backfill.json"


@dataclass
class CaseSamples:
    case_id: str
    samples_ms: np.ndarray
    process: Optional[list[int]]


@dataclass
class Run:
    source: Path
    kind: str
    machine: str
    device_name: str
    commit: str          # as recorded: a short or full hash, "" when unknown
    dirty: bool
    created: str         # ISO 8601
    measured_by: str = ""  # a backfilled run: the command that measured each commit
    gemm_ms: float = math.nan  # the run's calibration GEMM time (meta.json), for --normalize
    cases: dict[str, CaseSamples] = field(default_factory=dict)


@dataclass
class Skipped:
    """A backfilled commit whose harness could not run, with the reason."""

    commit: str
    reason: str
    source: Path


def discover(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(runs, skipped records) under ``paths``: results folders and pytest-benchmark JSON files (a run
    folder's own JSON files are not runs), and ``backfill.json`` files of skipped commits."""
    runs: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ValueError(f"history: {path} does not exist: give results folders, .benchmarks/ or a baseline store")
        if path.is_file():
            if path.name == RESULTS_CSV:
                runs.append(path.parent)
            elif path.suffix == ".json":
                runs.append(path)
            else:
                raise ValueError(f"history: {path} is neither a results folder nor a pytest-benchmark .json file")
            continue
        folders = sorted({p.parent for p in path.rglob(RESULTS_CSV)})
        runs += folders
        inside = set(folders)
        for p in sorted(path.rglob("*.json")):
            if inside.intersection(p.parents) or p.name == BACKFILL_JSON:
                continue
            runs.append(p)
        for p in sorted(path.rglob(BACKFILL_JSON)):
            if not any(q.parent == p.parent or p.parent in q.parents for q in folders):
                skipped.append(p)
    return runs, skipped


def _is_benchmark_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("benchmarks"), list)


def read_run(path: Path) -> Run:
    """One saved run as a :class:`Run` (``ValueError`` naming the file when it is not readable)."""
    saved = load_run(path)
    device = saved.meta.get("device") if isinstance(saved.meta.get("device"), dict) else {}
    rows = saved.rows
    torch_version = str(device.get("torch") or next((t for t in rows["torch"] if t), ""))
    slug = str(device.get("slug") or "")
    if not slug:
        name = saved.device_name or next((n for n in rows["device_name"] if n), "")
        slug = "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) if name else ""
    commit = str(saved.meta.get("commit") or "")
    backfill = _backfill_record(Path(saved.source))
    if backfill.get("commit"):
        commit = str(backfill["commit"])
    process = read_sample_processes(Path(saved.source) / SAMPLES_JSONL) if saved.kind == "results folder" else {}
    run = Run(Path(saved.source), saved.kind, machine_key(slug, torch_version), saved.device_name,
              commit.removesuffix("-dirty"), commit.endswith("-dirty") or bool(saved.meta.get("tree")),
              str(saved.meta.get("created") or ""),
              shlex.join(backfill["command"]) if isinstance(backfill.get("command"), list) else "",
              _number((saved.meta.get("calibration") or {}).get("gemm_ms")))
    for record in rows.to_dict("records"):
        key = str(record["case_key"])
        median = record["median_ms"]
        if record["status"] != "ok" or not (isinstance(median, float) and math.isfinite(median)):
            continue
        samples = saved.samples_ms.get(key)
        if samples:
            values, procs = np.asarray(samples, dtype=float), process.get(key)
        else:  # no per-iteration samples: the process medians are the units, else the median alone
            medians = [float(v) for v in str(record.get("process_medians_ms") or "").split()]
            values, procs = np.asarray(medians or [record["median_ms"]], dtype=float), None
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            kept = procs if procs and len(procs) == values.size else None
            run.cases[key] = CaseSamples(str(record["case_id"] or key), values, kept)
    return run


def _number(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) and out > 0 else math.nan


def _backfill_record(source: Path) -> dict:
    for folder in (source, source.parent, source.parent.parent):
        path = folder / BACKFILL_JSON
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def read_skipped(path: Path) -> Optional[Skipped]:
    data = _backfill_record(path.parent)
    if data.get("status") != "skipped":
        return None
    return Skipped(str(data.get("commit", "")), str(data.get("reason", "")), path.parent)


def load_sources(paths: list[Path], log=lambda line: print(line, file=sys.stderr)) -> tuple[list[Run], list[Skipped]]:
    """Every run under ``paths`` (duplicates of one pytest session dropped), and the skipped backfills."""
    found, skipped_files = discover(paths)
    runs: list[Run] = []
    for path in found:
        if path.suffix == ".json" and not _is_benchmark_json(path):
            continue  # some other JSON under the folder (a report's, a config)
        try:
            runs.append(read_run(path))
        except ValueError as err:
            log(f"ae-bench: history: skipping {path}: {err}")
    folders = {(r.machine, r.commit, r.created) for r in runs if r.kind == "results folder"}
    runs = [r for r in runs if r.kind == "results folder" or (r.machine, r.commit, r.created) not in folders]
    skipped = [s for s in (read_skipped(p) for p in skipped_files) if s is not None]
    return runs, skipped
