"""A sweep: every shard of one selection, run as children or jobs, and merged. Its folder:

    SWEEP/sweep.json                what was asked (selection, shards, executor) and each attempt's jobs
    SWEEP/shard-K-of-N/RUN_ID/      shard K's run folder (an ordinary one: results.csv, meta.json, ...)
    SWEEP/shard-K-of-N/job.log      a --gpus child's output (submitit jobs log under SWEEP/jobs/)
    SWEEP/merged/                   the merged run folder, its report.md included

The shards' run folders are the truth: a shard is complete when its folder has a row for each of
its cases; ``--resume SWEEP`` runs only the incomplete shards, each with ``--resume`` on its own
folder, so only their missing cases are measured. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.core.cases import Case, expand, load_matrix, parse_axis_values
from bench.runs.files import atomic_write_text
from bench.runs.provenance import utc_now
from bench.runs.schema import COLUMN_NAMES, empty_row
from bench.runs.contract import META_JSON, RESULTS_CSV
from bench.runs.writer import csv_records
from bench.scale.options import SWEEP_JSON
from bench.core.shard import assign, case_cost

FORMAT = 1
MERGED_DIR = "merged"


def keys_sha(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def plan_cases(matrix: str, axes: dict[str, str], keyword: Optional[str]) -> list[Case]:
    """The selection's cases, expanded without a device (a split must not depend on one)."""
    loaded = load_matrix(matrix)
    overrides = {axis: parse_axis_values(axis, text) for axis, text in axes.items()}
    cases = expand(loaded, overrides, None)
    if keyword:
        cases = [c for c in cases if keyword in c.id]
    if not cases:
        raise ValueError(f"no case of matrix {loaded.name!r} matches the selection")
    return cases


@dataclass
class Sweep:
    folder: Path
    executor: str                    # "gpus", "local" or "slurm"
    matrix: str                      # a concrete matrix name or an absolute .toml path (never "auto")
    axes: dict[str, str]             # --<axis> values as given
    keyword: Optional[str]
    child_args: list[str]            # the run options every shard gets (selection, timing, launcher)
    count: int
    gpus: list[int] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)
    allow_mixed_devices: bool = False
    command: str = ""
    created: str = ""
    attempts: list[dict] = field(default_factory=list)
    recorded_sha: str = ""
    _parts: Optional[list[list[Case]]] = None

    # -- the plan ---------------------------------------------------------------------------------

    @property
    def parts(self) -> list[list[Case]]:
        if self._parts is None:
            cases = plan_cases(self.matrix, self.axes, self.keyword)
            if self.count > len(cases):
                raise ValueError(f"{self.count} shards for {len(cases)} case(s): some shards would be empty; use at most "
                                 f"{len(cases)}")
            self._parts = assign(cases, self.count)
        return self._parts

    def label(self, k: int) -> str:
        return f"{k}/{self.count}"

    def shard_dir(self, k: int) -> Path:
        return self.folder / f"shard-{k}-of-{self.count}"

    def run_dir(self, k: int) -> Optional[Path]:
        """Shard K's run folder: the newest folder under its shard folder with a results.csv."""
        root = self.shard_dir(k)
        found = sorted(p for p in root.iterdir() if (p / RESULTS_CSV).is_file()) if root.is_dir() else []
        return found[-1] if found else None

    def missing(self, k: int) -> list[Case]:
        """Shard K's cases that its run folder has no row for (all of them before it ran)."""
        run_dir = self.run_dir(k)
        done = rows_keys(run_dir) if run_dir is not None else set()
        return [c for c in self.parts[k - 1] if c.key not in done]

    def shard_argv(self, k: int, device: Optional[str] = None) -> list[str]:
        """``python -m bench`` arguments of shard K: the same selection, its part, its results folder."""
        argv = ["run", *self.child_args, "--matrix", self.matrix, "--shard", self.label(k),
                "--results", str(self.shard_dir(k).resolve())]
        if device:
            argv += ["--device", device]
        run_dir = self.run_dir(k)
        if run_dir is not None:
            argv += ["--resume", str(run_dir.resolve())]
        return argv

    def listing(self) -> str:
        lines = []
        for k, part in enumerate(self.parts, 1):
            where = f" on cuda:{self.gpus[k - 1]}" if self.executor == "gpus" else ""
            lines.append(f"shard {self.label(k)}{where}: {len(part)} cases, expected cost {sum(map(case_cost, part)):.1f}")
            lines += [f"    {c.id}" + (f"    [skip: {c.skip}]" if c.skip else "") for c in part]
        total = sum(len(p) for p in self.parts)
        lines.append(f"{total} cases in {self.count} shards ({self.executor}); nothing was run")
        return "\n".join(lines)

    # -- the file ---------------------------------------------------------------------------------

    def save(self) -> None:
        data = {"format": FORMAT, "created": self.created, "command": self.command, "executor": self.executor,
                "matrix": self.matrix, "axes": self.axes, "keyword": self.keyword, "child_args": self.child_args,
                "count": self.count, "gpus": self.gpus, "slurm": self.slurm,
                "allow_mixed_devices": self.allow_mixed_devices,
                "cases": sum(len(p) for p in self.parts),
                "case_keys_sha256": keys_sha([c.key for p in self.parts for c in p]),
                "shards": [{"shard": self.label(k), "folder": self.shard_dir(k).name, "cases": len(p),
                            "expected_cost": round(sum(map(case_cost, p)), 3)} for k, p in enumerate(self.parts, 1)],
                "attempts": self.attempts}
        atomic_write_text(self.folder / SWEEP_JSON, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Sweep":
        path = Path(folder) / SWEEP_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"--resume {folder}: {SWEEP_JSON} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"--resume {folder}: {SWEEP_JSON} is not a sweep file of format {FORMAT}")
        sweep = cls(Path(folder), data["executor"], data["matrix"], dict(data.get("axes") or {}), data.get("keyword"),
                    list(data.get("child_args") or []), int(data["count"]), list(data.get("gpus") or []),
                    dict(data.get("slurm") or {}), bool(data.get("allow_mixed_devices")), data.get("command", ""),
                    data.get("created", ""), list(data.get("attempts") or []), data.get("case_keys_sha256", ""))
        now = keys_sha([c.key for p in sweep.parts for c in p])
        if sweep.recorded_sha and now != sweep.recorded_sha:
            raise ValueError(f"--resume {folder}: the matrix {sweep.matrix!r} now expands to other cases than when the "
                             "sweep started (the matrix file or the code changed); start a new sweep")
        return sweep


def rows_keys(run_dir: Path) -> set[str]:
    """The case keys of a run folder's whole rows (a partial last line is a case not measured)."""
    path = Path(run_dir) / RESULTS_CSV
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    try:
        records = csv_records(text, path)
    except ValueError:
        return set()
    if not records or "case_key" not in records[0]:
        return set()
    key = records[0].index("case_key")
    return {r[key] for r in records[1:] if len(r) == len(records[0])}


def run_device(run_dir: Optional[Path]) -> dict:
    """The device a shard's run recorded (empty when it has no meta.json yet)."""
    try:
        meta = json.loads((Path(run_dir) / META_JSON).read_text(encoding="utf-8")) if run_dir else {}
    except (OSError, ValueError):
        meta = {}
    device = meta.get("device") if isinstance(meta, dict) else None
    return device if isinstance(device, dict) else {}


def failure_rows(sweep: Sweep, k: int, reason: str) -> list[dict]:
    """An ``error`` row for each case shard K's job left unmeasured, with why (the job's log tail)."""
    run_dir = sweep.run_dir(k)
    device = run_device(run_dir)
    run_id = run_dir.name if run_dir is not None else f"{sweep.folder.name}-shard-{k}-of-{sweep.count}"
    rows = []
    for case in sweep.missing(k):
        row = empty_row()
        row.update(case.fields())
        row.update(run_id=run_id, case_key=case.key, case_id=case.id, status="error", reason=reason,
                   device=str(device.get("type") or ""), device_name=str(device.get("name") or ""), timestamp=utc_now())
        assert set(row) == set(COLUMN_NAMES)
        rows.append(row)
    return rows
