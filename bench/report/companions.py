"""What sits beside a run and belongs in its report: a plan, a quality run, a profile.

The run's own folder may hold a plan (``plan.csv``, written at the run's end for the first screen).
Other folders join with ``python -m bench report RUN --with DIR`` (any number), and a quality run
in the same parent folder joins by itself when it was made from the same commit on the same device
(its ``quality_meta.json`` says so). The report quotes each one's summary and links it; it never
recomputes anything from them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from bench.runs.contract import PLAN_CSV, PLAN_MD, PROFILE_MD, QUALITY_META, QUALITY_MD, QUALITY_VERDICTS


@dataclass
class Companion:
    kind: str                 # "plan", "quality" or "profile"
    folder: Path
    page: str                 # the folder's markdown, relative to the report
    how: str                  # "in the run folder", "given with --with", "beside the run: same commit and device"
    notes: list[str] = field(default_factory=list)
    verdicts: Optional[pd.DataFrame] = None  # a quality run's verdicts, when it wrote them


def kind_of(folder: Path) -> Optional[str]:
    if (folder / PLAN_CSV).is_file():
        return "plan"
    if (folder / QUALITY_META).is_file():
        return "quality"
    if (folder / PROFILE_MD).is_file():
        return "profile"
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _device_name(meta: dict) -> str:
    device = meta.get("device")
    return str(device.get("name", "")) if isinstance(device, dict) else str(device or "")


def _companion(folder: Path, kind: str, how: str, out_dir: Path, run_meta: dict) -> Companion:
    page = {"plan": PLAN_MD, "quality": QUALITY_MD, "profile": PROFILE_MD}[kind]
    found = Companion(kind, folder, os.path.relpath(folder / page, out_dir), how)
    if kind == "quality":
        meta = _read_json(folder / QUALITY_META)
        if how == "given with --with":
            differs = [f"{what} {theirs!r} (this run: {ours!r})" for what, theirs, ours in (
                ("commit", meta.get("commit"), run_meta.get("commit")),
                ("device", _device_name(meta), _device_name(run_meta))) if theirs != ours]
            if differs:
                found.notes.append("made from another " + " and ".join(differs))
        if (folder / QUALITY_VERDICTS).is_file():
            try:
                found.verdicts = pd.read_csv(folder / QUALITY_VERDICTS, dtype=str, keep_default_na=False)
            except (OSError, ValueError, pd.errors.ParserError) as err:
                found.notes.append(f"{QUALITY_VERDICTS} unreadable: {err}")
        else:
            found.notes.append(f"it has no {QUALITY_VERDICTS} (made before verdicts were written): read {QUALITY_MD}")
    return found


def find_companions(run_folder: Optional[Path], out_dir: Path, run_meta: dict, given: tuple[Path, ...] = ()) -> list[Companion]:
    """The run folder's own plan, every ``--with`` folder, and quality runs beside the run of the same commit and device."""
    out: list[Companion] = []
    if run_folder is not None and (run_folder / PLAN_CSV).is_file():
        out.append(_companion(run_folder, "plan", "in the run folder", out_dir, run_meta))
    for folder in given:
        folder = Path(folder)
        kind = kind_of(folder) if folder.is_dir() else None
        if kind is None:
            raise ValueError(f"--with {folder}: not a plan ({PLAN_CSV}), quality ({QUALITY_META}) or profile ({PROFILE_MD}) folder")
        out.append(_companion(folder, kind, "given with --with", out_dir, run_meta))
    if run_folder is not None and run_meta.get("commit"):
        named = {c.folder.resolve() for c in out}
        for folder in sorted(p for p in run_folder.parent.iterdir() if p.is_dir() and p.resolve() not in named):
            if kind_of(folder) != "quality":
                continue
            meta = _read_json(folder / QUALITY_META)
            if meta.get("commit") == run_meta["commit"] and _device_name(meta) == _device_name(run_meta):
                out.append(_companion(folder, "quality", "beside the run: same commit and device", out_dir, run_meta))
    return out


def plan_folder(companions: list[Companion]) -> Optional[Companion]:
    """The plan the first screen answers from: one given with --with wins over the run folder's own."""
    plans = [c for c in companions if c.kind == "plan"]
    given = [c for c in plans if c.how == "given with --with"]
    return (given or plans or [None])[-1]
