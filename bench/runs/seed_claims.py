"""The seed document's claims file, ``bench/data/seed_claims.toml``: one loader for every reader.

The report (``bench/report/claims.py``), the quality report (``bench/quality/report.py``), the
batch-size planner (``bench/plan/planner.py``) and the model facts a run writes
(``bench/core/model_probe.py``) all read it through :func:`load_claims`, each naming the tables it
needs. Torch-free, so any of them may import it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Iterable

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "data" / "seed_claims.toml"
# The tables the speed report checks; the quality report and the planner name their own.
REPORT_TABLES = ("source", "target", "rules", "parameter_counts", "speed_comparison", "flat_layout", "optimisations")


def load_claims(path: Path = CLAIMS_FILE, need: Iterable[str] = REPORT_TABLES) -> dict:
    """The claims file as a dict. Raises ValueError (one line) when it cannot be read or lacks a table of ``need``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"seed claims file {path} cannot be read: {err}") from None
    missing = [key for key in need if key not in data]
    if missing:
        raise ValueError(f"seed claims file {path} lacks {', '.join(f'[{key}]' for key in missing)}")
    return data
