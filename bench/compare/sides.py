"""The two sides of a comparison: a saved run opened by ``case_key`` with the machine facts the
check needs (which GPU model and torch version ran it, its calibration), and where a path points
(a run, a folder of runs, a baseline store's folder for this machine).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.runs.reader import load_run, read_sample_processes
from bench.runs.contract import RESULTS_CSV, SAMPLES_JSONL


@dataclass
class Side:
    """One side of the comparison: a saved run's rows by ``case_key``, per-iteration samples (ms),
    and the machine facts the check needs (from ``meta.json`` or pytest-benchmark's machine_info)."""

    path: Path
    kind: str
    rows: dict[str, dict[str, Any]]
    samples_ms: dict[str, list[float]]
    device_type: str = ""
    samples_process: dict[str, list[int]] = field(default_factory=dict)  # each sample's process (--processes)
    device_name: str = ""
    torch: str = ""
    slug: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    commit: str = ""
    created: str = ""

    @property
    def machine_key(self) -> str:
        """``<device-slug>-torch<version>``: the baseline folder for runs of this machine."""
        return machine_key(self.slug, self.torch)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "device": self.device_name, "device_type": self.device_type,
                "torch": self.torch, "machine_key": self.machine_key, "commit": self.commit, "created": self.created,
                "calibration": self.calibration, "cases": len(self.rows)}


def machine_key(slug: str, torch_version: str) -> str:
    """The naming of pytest-benchmark's storage in ``bench/conftest.py``: the local build tag dropped."""
    return f"{slug or 'unknown'}-torch{(torch_version or 'unknown').split('+')[0]}"


def open_run(path: Path, role: str = "run", prefer: Optional[str] = None) -> Side:
    """Read the saved run ``path`` names (see :func:`find_run`) through :func:`bench.runs.reader.load_run`.

    ``role`` ("baseline", "candidate") names it in messages; ``prefer`` is a machine key to look
    for as a sub-folder first. Raises ValueError with one line for unusable input.
    """
    found = find_run(Path(path), role, prefer)
    try:
        saved = load_run(found)
    except ValueError as err:
        raise ValueError(f"{role}: {err}") from None
    records = saved.rows.astype(object).where(saved.rows.notna(), None).to_dict("records")
    # a key written twice (a resumed run): the later row wins; a `missing` row (a partial merge) is no measurement:
    # the case counts as absent, so the comparison calls it missing (fails unless --allow-missing)
    rows = {str(r["case_key"]): r for r in records if r.get("status") != "missing"}
    if not rows:
        raise ValueError(f"{role} {found} has no cases")
    device = saved.meta.get("device") or {}
    first = records[0]
    device_type = str(device.get("type") or first.get("device") or "")
    device_name = str(device.get("name") or first.get("device_name") or "")
    slug = str(device.get("slug") or "")
    if not slug and device_type == "cuda" and device_name:  # a GPU's slug is its name's; a CPU's needs its core count
        from bench.trackers.device import DeviceFacts

        slug = DeviceFacts(type="cuda", name=device_name).slug
    return Side(path=found, kind="results" if saved.kind.startswith("results") else "pytest-benchmark", rows=rows,
                samples_ms=dict(saved.samples_ms), device_type=device_type, device_name=device_name,
                torch=str(device.get("torch") or first.get("torch") or ""), slug=slug,
                calibration=dict(saved.meta.get("calibration") or {}), commit=str(saved.meta.get("commit") or ""),
                created=str(saved.meta.get("created") or ""),
                samples_process=read_sample_processes(saved.source / SAMPLES_JSONL) if saved.kind == "results folder" else {})


def find_run(path: Path, role: str = "run", prefer: Optional[str] = None) -> Path:
    """The saved run a path names: a ``.json`` file, a results folder, a baseline store's folder
    for machine ``prefer``, or else the latest run under a folder, by name (run ids and
    pytest-benchmark's NNNN_ prefixes both sort in time order; file times do not survive a git
    checkout)."""
    if not path.exists():
        raise ValueError(f"{role} {path} does not exist")
    if path.is_file():
        if path.name == RESULTS_CSV:
            return path.parent
        if path.suffix != ".json":
            raise ValueError(f"{role} {path} is neither a pytest-benchmark .json file nor a results folder")
        return path
    if (path / RESULTS_CSV).is_file():
        return path
    if prefer and (path / prefer).is_dir():
        return find_run(path / prefer, role)
    stored = sorted(p.name for p in path.iterdir() if p.is_dir() and "-torch" in p.name)
    if prefer and stored:  # a baseline store without this machine: another machine's run is no baseline
        raise ValueError(f"{role} store {path} has no baseline for this machine, {prefer} (it has {', '.join(stored)}); "
                         f"keep one with `python -m bench baseline RUN --store {path}`")
    runs = [p.parent for p in path.rglob(RESULTS_CSV)]
    inside = set(runs)
    runs += [p for p in path.rglob("*.json") if not inside.intersection(p.parents)]  # a run folder's own JSON is not a run
    if not runs:
        hint = f" (and no sub-folder {prefer}/)" if prefer else ""
        raise ValueError(f"{role} {path} holds no saved run: no {RESULTS_CSV} and no pytest-benchmark .json{hint}")
    latest = max(runs, key=lambda p: (p.name, str(p)))
    if len(runs) > 1:
        print(f"ae-bench: {role}: {path} holds {len(runs)} saved runs; using the latest, {latest}", file=sys.stderr)
    return latest


def number(value: Any) -> Optional[float]:
    """A cell as a float, or None for empty, missing or not-a-number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
