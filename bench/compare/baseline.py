"""The baseline store: ``python -m bench baseline RUN`` files a run under
``baselines/<device-slug>-torch<version>/``, and ``compare baselines/ CANDIDATE`` picks the folder
of the candidate's machine (see :func:`bench.compare.sides.find_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.compare.sides import open_run
from bench.runs.writer import META_JSON, RESULTS_CSV, SAMPLES_JSONL

_RUN_FILES = (RESULTS_CSV, SAMPLES_JSONL, META_JSON)


def save_baseline(run_path: Path, store: Path) -> Path:
    """Copy a saved run into ``store/<device-slug>-torch<version>/``, replacing the run kept there."""
    run = open_run(run_path, "run")
    if not run.slug:
        raise ValueError(f"run {run.path} does not record its device slug; it cannot be filed under a machine")
    dest = Path(store) / run.machine_key
    dest.mkdir(parents=True, exist_ok=True)
    for old in list(dest.glob("*.json")) + [dest / name for name in _RUN_FILES]:
        old.unlink(missing_ok=True)  # only the files a saved run is made of: anything else a person put there stays
    if run.kind == "results":
        for name in _RUN_FILES:
            if (run.path / name).exists():
                shutil.copy2(run.path / name, dest / name)
    else:
        shutil.copy2(run.path, dest / run.path.name)
    return dest
