"""The merged run's plan: the shards' ``plan.csv`` files joined, so its report's first screen answers
for the card (``## 1. What to run on NVIDIA GeForce RTX 4060``) as an unsharded run's does.

Each shard planned, per group (model x size x mode), its own configurations from the fastest it
measured down until one fits (``bench/plan/partial.py``). The fastest configuration of a group that
fits is the first that fits in its own shard's order, so the union of the shards' plans holds it:
the merged first screen picks from the union. A configuration two shards planned (its batches
split between them) is kept once, the first shard's row. Plans for different cards are refused.

Plain CSV here: the plan's columns are the plan package's; this module joins rows and never plans.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence

from bench.runs.contract import PLAN_CSV, PLAN_MD


def merged_plan(folders: Sequence[Path]) -> Optional[tuple[str, str, list[str]]]:
    """``(plan.csv text, plan.md text, notes)`` from the shards' plans, or None when no shard has one.
    Raises ValueError (one line) when the shards planned for different cards or wrote different columns."""
    found = [(Path(f), (Path(f) / PLAN_CSV).read_text(encoding="utf-8")) for f in folders if (Path(f) / PLAN_CSV).is_file()]
    if not found:
        return None
    header: Optional[list[str]] = None
    rows: list[list[str]] = []
    seen: set[str] = set()
    targets: dict[str, Path] = {}
    for folder, text in found:
        records = list(csv.reader(io.StringIO(text)))
        if not records:
            continue
        if header is None:
            header = records[0]
        elif records[0] != header:
            raise ValueError(f"merge: {folder / PLAN_CSV} has other columns than {found[0][0] / PLAN_CSV} (plans of "
                             "different versions): plan the merged run again with `python -m bench plan`")
        key, target = header.index("config_key"), header.index("target")
        for record in records[1:]:
            if len(record) != len(header):
                continue  # a damaged line: the plan is advice, its rows are re-made by `bench plan`
            targets.setdefault(record[target], folder)
            if record[key] not in seen:
                seen.add(record[key])
                rows.append(record)
    if len(targets) > 1:
        raise ValueError(f"merge: the shards planned for different cards ({'; '.join(f'{t}: {f}' for t, f in targets.items())}); "
                         "give every shard the same --plan-for")
    notes = []
    if len(found) < len(folders):
        notes.append(f"{len(folders) - len(found)} of {len(folders)} shard(s) wrote no plan: their configurations are "
                     "not in this one")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header or [])
    writer.writerows(rows)
    md = [f"# Batch-size plan (merged from {len(found)} shard plan(s))", "",
          f"The union of the shards' plans, {len(rows)} configuration(s) for {next(iter(targets), 'the card')}; "
          "each shard's own plan, with its budget's accounting:", ""]
    md += [f"- `{folder / PLAN_MD}`" for folder, _ in found]
    md += [f"\n{note}." for note in notes]
    return table.getvalue(), "\n".join(md) + "\n", notes
