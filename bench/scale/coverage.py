"""What a merge covers of the selection its shards took parts of: which shards are there, which cases
no shard measured, and the ``missing`` rows that stand for them under ``merge --allow-partial``.

Each shard's ``meta.json`` names its part (``selection.shard``, ``"K/N"``) and the whole selection
(``selection.case_keys_sha256``), and ``selection.jsonl`` beside it lists the whole selection's
cases (``bench/runs/selection.py``). A set of shards is complete when their rows (and a sweep's
``error`` rows for failed jobs) hold every case of the selection.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

from bench.core.cases import Case
from bench.runs.provenance import utc_now
from bench.runs.schema import COLUMN_NAMES, empty_row
from bench.runs.selection import keys_sha256
from bench.core.shard import assign, parse_shard

MISSING = "missing"  # the row status of a case no merged shard measured (bench/runs/schema.py STATUSES)


@dataclass
class Coverage:
    """How much of the selection a merge holds."""

    count: int                          # N: the shards the selection was split into
    present: list[int]                  # the K of each shard run given, sorted
    missing_keys: list[str] = field(default_factory=list)  # cases of the selection no row holds, selection order
    rows: list[dict] = field(default_factory=list)        # a ``missing`` row per missing case

    @property
    def partial(self) -> bool:
        return bool(self.missing_keys) or len(set(self.present)) < self.count

    def as_meta(self) -> dict:
        """meta.json's ``partial`` (only written when :attr:`partial`)."""
        absent = [f"{k}/{self.count}" for k in range(1, self.count + 1) if k not in self.present]
        return {"shards": self.count, "shards_present": len(set(self.present)), "shards_absent": absent,
                "missing_cases": len(self.missing_keys)}

    def summary(self) -> str:
        """``K of N shards (shard 2/3 not merged); M case(s) of the selection have no row``."""
        absent = self.as_meta()["shards_absent"]
        return (f"{len(set(self.present))} of {self.count} shards"
                + (f" (shard {', '.join(absent)} not merged)" if absent else "")
                + f"; {len(self.missing_keys)} case(s) of the selection have no row")

    def headline(self) -> str:
        """The first screen's line: ``partial: K of N shards ...``."""
        return f"partial: {self.summary()} (status `missing`)"


def shard_part(meta: dict) -> Optional[tuple[int, int]]:
    """``(K, N)`` of a run's recorded part (``(1, 1)`` for an unsharded run); None when it recorded no selection."""
    selection = meta.get("selection")
    if not isinstance(selection, dict) or not selection.get("case_keys_sha256"):
        return None
    text = str(selection.get("shard") or "")
    return parse_shard(text) if text else (1, 1)


def coverage(metas: Sequence[dict], whole: list[dict], present_keys: set[str], truncated: dict[str, str]) -> Coverage:
    """The coverage of runs with ``metas`` (all recorded one selection, checked before) over ``whole`` (its
    cases, from ``selection.jsonl``), given the keys their rows hold. ``truncated``: folder -> its shard label,
    for runs whose results.csv ended in a partial line (the case that line was writing is missing).
    Raises ValueError when ``whole`` is not the selection the runs recorded."""
    recorded = metas[0]["selection"]
    if keys_sha256(c["case_key"] for c in whole) != recorded["case_keys_sha256"]:
        raise ValueError("merge: selection.jsonl does not hold the selection meta.json records (an edited or damaged "
                         "file): merge the shards' runs as they were written")
    parts = [shard_part(m) for m in metas]
    count = parts[0][1]
    cover = Coverage(count, sorted(k for k, _ in parts))
    cover.missing_keys = [c["case_key"] for c in whole if c["case_key"] not in present_keys]
    if cover.missing_keys:
        shard_of = _shard_of_keys(whole, count)
        lost = set(truncated.values())
        for case in whole:
            key = case["case_key"]
            if key in present_keys:
                continue
            k = shard_of.get(key, 0)
            why = (f"shard {k}/{count}'s run ended in a partial line before this case's row was whole: resume that run "
                   "(`python -m bench run --resume RUN_DIR`) and merge again" if f"{k}/{count}" in lost and k in cover.present
                   else f"shard {k}/{count} has no row for it (its run is not among the merged ones, or stopped before "
                   "this case): run or resume that shard and merge again")
            cover.rows.append(_missing_row(case, k, count, why))
    return cover


def _shard_of_keys(whole: list[dict], count: int) -> dict[str, int]:
    """Which part of ``count`` each case of the selection is in (the split ``--shard`` made)."""
    names = {f.name for f in dataclasses.fields(Case)}
    try:
        cases = [Case(**{k: v for k, v in c.items() if k in names}) for c in whole]
    except (TypeError, ValueError):
        return {}  # a case this code cannot rebuild (a plug-in family): the reason then names no shard
    return {c.key: k for k, part in enumerate(assign(cases, count), 1) for c in part}


def _missing_row(case: dict, k: int, count: int, why: str) -> dict:
    row = empty_row()
    row.update({name: value for name, value in case.items() if name in row and name != "status"})
    row.update(run_id=f"missing-shard-{k}-of-{count}" if k else "missing", status=MISSING,
               reason=f"not measured: {why}", timestamp=utc_now())
    assert set(row) == set(COLUMN_NAMES)
    return row
