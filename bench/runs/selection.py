"""``selection.jsonl``: the whole selection a run took its part of, so a merge knows what it merges.

A run of ``--shard K/N`` measures part K of a selection (a matrix narrowed by axis options and
``-k``); its ``meta.json`` names the part (``selection.shard``: ``"K/N"``) and the whole
(``selection.cases``: how many, ``selection.case_keys_sha256``: the hash of their sorted keys), and
this file holds the whole selection's cases, one JSON object a line (``case_key``, ``case_id`` and
the case's fields, as a row has them). ``python -m bench merge`` checks that its shards took parts
of one selection, that every part is there, and writes a ``missing`` row for a case no shard
measured (``--allow-partial``), with the case's fields from here.

Written by ``bench/core/session.py`` at a run's start; read by ``bench/scale/merge.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional

from bench.runs.files import atomic_write_text

SELECTION_JSONL = "selection.jsonl"


def keys_sha256(keys: Iterable[str]) -> str:
    """The hash a run records of a set of case keys (sorted, newline-joined, SHA-256 hex)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def selection_record(cases: list[dict], shard: str) -> dict:
    """meta.json's ``selection``: the part (``"K/N"``, or ``""`` when unsharded) and the whole selection's
    count and key hash. ``cases``: one dict per case of the whole selection, with ``case_key``."""
    keys = [c["case_key"] for c in cases]
    return {"shard": shard, "cases": len(keys), "case_keys_sha256": keys_sha256(keys), "file": SELECTION_JSONL}


def write_selection(run_dir: Path, cases: list[dict]) -> None:
    """Write the whole selection's cases (dicts with ``case_key``, ``case_id`` and the fields) beside the run."""
    atomic_write_text(Path(run_dir) / SELECTION_JSONL,
                      "".join(json.dumps(c, sort_keys=True, default=str) + "\n" for c in cases))


def read_selection(run_dir: Path) -> Optional[list[dict]]:
    """The cases :func:`write_selection` wrote, or ``None`` when the file is absent or unreadable."""
    try:
        text = (Path(run_dir) / SELECTION_JSONL).read_text(encoding="utf-8")
        cases = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not all(isinstance(c, dict) and isinstance(c.get("case_key"), str) for c in cases):
        return None
    return cases
