"""``python -m bench merge RUN_DIR... --out DIR``: one run folder from the runs of a matrix's shards.

The merged folder is a run folder like any other (``results.csv``, ``samples.jsonl``,
``meta.json``, ``model_facts.json``), so ``python -m bench report``, ``compare`` and the rest read
it unchanged. Its rows are the shards' rows as written (each keeps its shard's ``run_id``); its
``meta.json`` names every shard (``merged_from``: run id, folder, shard, device, commit, command,
calibration) and every device (``devices``). Refused, in one line and with nothing written: runs
of different commits or work-tree changes (not the same code), two runs that record no commit,
of different torch versions, of different selections (parts of two matrices), of different devices
unless ``allow_mixed_devices``, of different timing settings (not comparable), that share a case
(shards are disjoint), a run folder still locked by its run, and, unless ``allow_partial``, a set
that lacks a shard or a case (a results.csv cut in its last line included): with it, the cases no
shard measured are ``missing`` rows and meta.json's ``partial`` says so (bench/scale/coverage.py).
The shards' plans are joined (bench/scale/plans.py), so the merged report answers for the card.

Everything is read and checked first, then written into a temporary folder beside ``out`` that
is renamed into place: a merge that stops half-way leaves no half folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from bench.runs.files import LOCK_FILE, OWNER_FILE, FolderInUse, FolderLock, atomic_write_bytes, atomic_write_text
from bench.runs.model_facts import ATTENTION_MAPS_PNG, FORMAT as FACTS_FORMAT, MODEL_FACTS_JSON
from bench.runs.provenance import git_commit, utc_now
from bench.runs.schema import COLUMN_NAMES
from bench.runs.selection import SELECTION_JSONL, read_selection
from bench.runs.contract import META_JSON, RESULTS_CSV, SAMPLES_JSONL
from bench.runs.writer import check_run_files, csv_records
from bench.scale.coverage import Coverage, coverage, shard_part
from bench.runs.contract import PLAN_CSV, PLAN_MD
from bench.scale.plans import merged_plan
from bench.core.shard import shard_of_command


@dataclass
class ShardRun:
    """One run folder, read for merging: its raw CSV records, samples lines and files."""

    folder: Path
    meta: dict
    records: list[list[str]]  # results.csv rows, as strings, in the schema's column order
    samples: dict[str, str] = field(default_factory=dict)  # case_key -> its samples.jsonl line (the last one)
    facts: Optional[dict] = None
    truncated: bool = False  # results.csv ended in a partial line (a kill mid-write): that case is not here

    @property
    def keys(self) -> list[str]:
        column = COLUMN_NAMES.index("case_key")
        return [r[column] for r in self.records]

    @property
    def run_ids(self) -> list[str]:
        """The run ids its rows carry (the folder's name when it has no row yet)."""
        column = COLUMN_NAMES.index("run_id")
        return list(dict.fromkeys(r[column] for r in self.records if r[column])) or [self.folder.name]

    @property
    def device(self) -> dict:
        return self.meta.get("device") if isinstance(self.meta.get("device"), dict) else {}

    @property
    def device_key(self) -> str:
        return str(self.device.get("slug") or self.device.get("name") or "unknown device")

    @property
    def commit(self) -> str:
        return str(self.meta.get("commit") or "")

    @property
    def code(self) -> str:
        """The commit and, for a work tree with changes, their hash: the code the run measured."""
        tree = str(self.meta.get("tree") or "")
        return f"{self.commit or 'no commit'}{' + ' + tree if tree else ''}"

    @property
    def torch(self) -> str:
        return str(self.device.get("torch") or "unknown torch")

    @property
    def selection(self) -> str:
        """The selection this run took a part of (its keys' hash and the number of parts), or "" if unrecorded."""
        part = shard_part(self.meta)
        return f"{self.meta['selection']['case_keys_sha256'][:12]} in {part[1]} part(s)" if part else ""

    @property
    def shard(self) -> str:
        part = shard_part(self.meta)
        return f"{part[0]}/{part[1]}" if part else shard_of_command(self.meta.get("command"))


def read_shard_run(folder: Path) -> ShardRun:
    """Read one run folder; ValueError (one line) when it is not a whole results folder with a meta.json."""
    folder = Path(folder)
    if not (folder / RESULTS_CSV).is_file():
        raise ValueError(f"merge: {folder} is not a results folder (no {RESULTS_CSV} in it)")
    check_not_locked(folder)
    text = (folder / RESULTS_CSV).read_text(encoding="utf-8")
    truncated = not text.endswith("\n") and "\n" in text
    if truncated:
        text = text[: text.rfind("\n") + 1]  # a partial last line (a kill mid-write): its case was not measured
    check_run_files(folder)
    records = csv_records(text, folder / RESULTS_CSV)[1:]
    records = [r for r in records if len(r) == len(COLUMN_NAMES)]
    try:
        meta = json.loads((folder / META_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"merge: {folder} has no {META_JSON}: its commit and device are unknown, so it cannot be "
                         "checked against the other runs") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"merge: {folder / META_JSON} is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"merge: {folder / META_JSON} is not a JSON object")
    run = ShardRun(folder, meta, records, truncated=truncated)
    kept = set(run.keys)
    if (folder / SAMPLES_JSONL).is_file():
        for line in (folder / SAMPLES_JSONL).read_text(encoding="utf-8").split("\n"):
            try:
                key = json.loads(line)["case_key"]
            except (ValueError, KeyError, TypeError):
                continue  # an empty or partial last line
            if key in kept:
                run.samples[key] = line  # the later line wins, as the reader has it
    if (folder / MODEL_FACTS_JSON).is_file():
        try:
            run.facts = json.loads((folder / MODEL_FACTS_JSON).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            run.facts = None  # the merged folder then lacks the facts of this shard; the report says what is missing
    return run


def check_not_locked(folder: Path) -> None:
    """Refuse a run folder whose run still holds its lock (a shard still measuring): its rows are not all there."""
    if not (folder / LOCK_FILE).is_file() and not (folder / OWNER_FILE).is_file():
        return
    try:
        FolderLock(folder).acquire("merge").release()
    except FolderInUse as err:
        raise ValueError(f"merge: {err}; merge once every shard has ended") from None
    except OSError:
        return  # a read-only copy of a finished run: nobody writes it


def check_mergeable(runs: Sequence[ShardRun], allow_mixed_devices: bool = False) -> None:
    """Refuse, in one line, runs that are not parts of one sweep."""
    if not runs:
        raise ValueError("merge: no run folder given")
    folders = [r.folder.resolve() for r in runs]
    if len(set(folders)) != len(folders):
        raise ValueError("merge: a run folder is given twice")
    unknown = [r for r in runs if not r.commit]
    if len(runs) > 1 and unknown:
        raise ValueError(f"merge: {unknown[0].folder} records no commit (run outside a git checkout): nothing shows that "
                         "the runs measured the same code; run the shards from one checkout")
    by_commit = _group(runs, lambda r: r.code)
    if len(by_commit) > 1:
        raise ValueError(f"merge: the runs come from different commits or work-tree changes ({_groups_text(by_commit)}): "
                         "shards of one sweep must measure the same code; run the odd shards again at one commit")
    by_torch = _group(runs, lambda r: r.torch)
    if len(by_torch) > 1:
        raise ValueError(f"merge: the runs used different torch versions ({_groups_text(by_torch)}): their figures are "
                         "not comparable; run the odd shards again with one torch")
    by_selection = _group(runs, lambda r: r.selection or "not recorded")
    if len(by_selection) > 1:
        raise ValueError(f"merge: the runs took parts of different selections ({_groups_text(by_selection)}): merge the "
                         "shards of one matrix with the same options (the same --shard N)")
    by_device = _group(runs, lambda r: r.device_key)
    if len(by_device) > 1 and not allow_mixed_devices:
        raise ValueError(f"merge: the runs were measured on different devices ({_groups_text(by_device)}); pass "
                         "--allow-mixed-devices to merge them anyway (the report then has a section per device)")
    by_settings = _group(runs, lambda r: json.dumps(r.meta.get("settings") or {}, sort_keys=True))
    if len(by_settings) > 1:
        first, *others = [r for group in by_settings.values() for r in group[:1]]
        mine, theirs = first.meta.get("settings") or {}, others[0].meta.get("settings") or {}
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"merge: the runs' timing settings differ ({', '.join(differ)}: {first.folder} vs "
                         f"{others[0].folder}): their rows are not comparable")
    seen: dict[str, Path] = {}
    for run in runs:
        for key in run.keys:
            if key in seen:
                raise ValueError(f"merge: case {key} is in both {seen[key]} and {run.folder}: shards must be disjoint "
                                 "(merge each case's run once)")
            seen[key] = run.folder


def check_complete(runs: Sequence[ShardRun], extra: Sequence[dict], allow_partial: bool) -> Optional[Coverage]:
    """The merge's coverage of the runs' selection (None when no run recorded one and ``allow_partial``).
    Refuses, in one line, a set that lacks a shard or a case unless ``allow_partial``."""
    again = "; or pass --allow-partial to merge what is there (the missing cases become `missing` rows, exit 1)"
    if shard_part(runs[0].meta) is None:
        if allow_partial:
            return None
        raise ValueError(f"merge: {runs[0].folder} records no selection (a run made before runs recorded one), so "
                         f"nothing shows that the shards are complete; run the shards again{again}")
    whole = next((cases for cases in (read_selection(r.folder) for r in runs) if cases is not None), None)
    if whole is None:
        raise ValueError(f"merge: no run has its {SELECTION_JSONL} (the selection's cases): copy the run folders whole")
    present = {k for r in runs for k in r.keys} | {row["case_key"] for row in extra}
    cover = coverage([r.meta for r in runs], whole, present, {str(r.folder): r.shard for r in runs if r.truncated})
    if cover.partial and not allow_partial:
        cut = [r for r in runs if r.truncated]
        if cut:
            raise ValueError(f"merge: {cut[0].folder / RESULTS_CSV} ends in a partial line (its run was stopped while "
                             f"writing a row): resume it (`python -m bench run --resume {cut[0].folder}` with the "
                             f"shard's options) and merge again{again}")
        raise ValueError(f"merge: only {cover.summary()}: run or resume the shards that lack them{again}")
    return cover


def merge_runs(folders: Sequence[Path], out: Path, allow_mixed_devices: bool = False,
               extra_rows: Iterable[dict] = (), command: Optional[list[str]] = None, replace: bool = False,
               notes: Sequence[dict] = (), allow_partial: bool = False) -> Path:
    """Merge ``folders`` into ``out`` (a new folder, or an old merge when ``replace``); returns ``out``.

    ``extra_rows`` are whole rows added after the shards' (a failed job's ``error`` rows);
    ``notes`` go to meta.json's ``failed_shards``. A set lacking shards or cases is refused unless
    ``allow_partial`` (then meta.json has ``partial``, see :func:`is_partial`). Raises ValueError
    (nothing written) when refused.
    """
    out = Path(out)
    runs = [read_shard_run(Path(f)) for f in folders]
    check_mergeable(runs, allow_mixed_devices)
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"merge: --out {out} already exists and is not empty; give a new folder")
    present = {k for r in runs for k in r.keys}
    extra = [row for row in extra_rows if row["case_key"] not in present]
    cover = check_complete(runs, extra, allow_partial)
    if cover is not None:
        extra += cover.rows
    records = [rec for r in runs for rec in r.records] + [[_cell(row.get(c)) for c in COLUMN_NAMES] for row in extra]
    meta = merged_meta(runs, records, command, list(notes))
    if cover is None or cover.partial:
        meta["partial"] = cover.as_meta() if cover else {"unknown": "the runs recorded no selection"}
        meta["partial"]["headline"] = cover.headline() if cover else "partial: completeness unknown (no selection recorded)"
    if cover is not None:
        meta["selection"] = dict(runs[0].meta["selection"], shard="")
    plan = merged_plan([r.folder for r in runs])
    facts, png = merged_facts(runs)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(COLUMN_NAMES)
        writer.writerows(records)
        atomic_write_text(staging / RESULTS_CSV, table.getvalue())
        atomic_write_text(staging / SAMPLES_JSONL, "".join(line + "\n" for r in runs for line in r.samples.values()))
        atomic_write_text(staging / META_JSON, json.dumps(meta, indent=2, default=str) + "\n")
        if facts is not None:
            atomic_write_text(staging / MODEL_FACTS_JSON, json.dumps(facts, indent=1) + "\n")
        if png is not None:
            atomic_write_bytes(staging / ATTENTION_MAPS_PNG, png)
        if plan is not None:
            atomic_write_text(staging / PLAN_CSV, plan[0])
            atomic_write_text(staging / PLAN_MD, plan[1])
        whole = next((c for c in (read_selection(r.folder) for r in runs) if c is not None), None)
        if whole is not None:
            atomic_write_text(staging / SELECTION_JSONL, (runs[0].folder / SELECTION_JSONL).read_text(encoding="utf-8"))
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def is_partial(folder: Path) -> str:
    """The merged folder's partial headline (``partial: K of N shards; ...``), or "" when it is complete."""
    try:
        meta = json.loads((Path(folder) / META_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    partial = meta.get("partial") if isinstance(meta, dict) else None
    return str(partial.get("headline") or "partial") if isinstance(partial, dict) else ""


def merged_meta(runs: Sequence[ShardRun], records: list[list[str]], command: Optional[list[str]],
                failed: list[dict]) -> dict:
    """The merged folder's meta.json: the shared facts, every shard's own, and the devices."""
    import shlex

    first = runs[0]
    devices = _group(runs, lambda r: r.device_key)
    key_column = COLUMN_NAMES.index("case_key")
    keys = sorted(r[key_column] for r in records)
    matrices = list(dict.fromkeys(str(r.meta.get("matrix") or "") for r in runs))
    meta: dict[str, Any] = {
        "created": utc_now(), "commit": first.commit, "tree": first.meta.get("tree", ""), "matrix": "+".join(m for m in matrices if m),
        "command": shlex.join(command) if command else "",
        "device": first.device if len(devices) == 1 else _mixed_device([g[0].device for g in devices.values()]),
        "calibration": first.meta.get("calibration") or {} if len(devices) == 1 else {},
        "entry": "merge", "settings": first.meta.get("settings") or {},
        "launcher": "+".join(dict.fromkeys(str(r.meta.get("launcher") or "") for r in runs)),
        "cases": len(keys), "case_keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "merge_commit": git_commit(),
        "merged_from": [_shard_entry(r) for r in runs],
        "devices": [{"device": key, "name": str(group[0].device.get("name") or ""),
                     "type": str(group[0].device.get("type") or ""),
                     "runs": [i for r in group for i in r.run_ids], "rows": sum(len(r.records) for r in group)}
                    for key, group in devices.items()],
    }
    if len(devices) == 1 and isinstance(first.meta.get("peaks"), dict):
        meta["peaks"] = first.meta["peaks"]  # one device: the first shard's measured peaks rate every row
    if failed:
        meta["failed_shards"] = failed
    return meta


def merged_facts(runs: Sequence[ShardRun]) -> tuple[Optional[dict], Optional[bytes]]:
    """The union of the shards' model facts, and the attention-map figure of the first shard that drew one."""
    found = [r for r in runs if isinstance(r.facts, dict) and r.facts.get("format") == FACTS_FORMAT]
    if not found:
        return None, None
    facts: dict[str, Any] = {k: v for k, v in found[0].facts.items() if not isinstance(v, list)}
    for run in found:
        for table, entries in run.facts.items():
            if isinstance(entries, list):
                have = facts.setdefault(table, [])
                have.extend(e for e in entries if e not in have)
    png = None
    for run in found:
        about = run.facts.get("attention_maps")
        if isinstance(about, dict) and about.get("path") and (run.folder / about["path"]).is_file():
            facts["attention_maps"] = about
            png = (run.folder / about["path"]).read_bytes()
            break
    return facts, png


def _shard_entry(run: ShardRun) -> dict:
    meta = run.meta
    return {"run_id": "+".join(run.run_ids), "folder": str(run.folder.resolve()), "shard": run.shard,
            "rows": len(run.records), "commit": run.commit, "tree": meta.get("tree", ""), "device": run.device, "created": meta.get("created", ""),
            "command": meta.get("command", ""), "matrix": meta.get("matrix", ""), "calibration": meta.get("calibration", {}),
            "peaks": meta.get("peaks")}


def _mixed_device(devices: list[dict]) -> dict:
    """One device dict for several: a field the devices share keeps its value, text that differs is joined."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(k for d in devices for k in d):
        values = [d.get(name) for d in devices]
        if all(v == values[0] for v in values):
            out[name] = values[0]
        elif all(isinstance(v, str) or v is None for v in values):
            out[name] = " / ".join(dict.fromkeys(str(v or "?") for v in values))
        else:
            out[name] = None
    out["slug"] = "mixed"  # never one machine's baseline key
    return out


def _group(runs: Sequence[ShardRun], key) -> dict[str, list[ShardRun]]:
    groups: dict[str, list[ShardRun]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def _groups_text(groups: dict[str, list[ShardRun]]) -> str:
    return "; ".join(f"{key}: {', '.join(str(r.folder) for r in group[:3])}{' ...' if len(group) > 3 else ''}"
                     for key, group in groups.items())


def _cell(value: Any) -> str:
    """A row value as results.csv writes it (bench/runs/writer.py): empty for None, one line for text."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("\r", " ").replace("\n", " ")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an old ``out`` (an earlier merge, or an empty folder) is replaced."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
