"""The baseline store: ``python -m bench baseline RUN`` files a run under
``baselines/<device-slug>-torch<version>/``, and ``compare baselines/ CANDIDATE`` picks the folder
of the candidate's machine (see :func:`bench.compare.sides.find_run`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.compare.sides import open_run
from bench.runs.contract import META_JSON, RESULTS_CSV, SAMPLES_JSONL

_RUN_FILES = (RESULTS_CSV, SAMPLES_JSONL, META_JSON)
_MANIFEST = ".ae-bench-baseline"  # the names the last save wrote: the only files the next save may replace


def save_baseline(run_path: Path, store: Path) -> Path:
    """Copy a saved run into ``store/<device-slug>-torch<version>/``, replacing the run kept there."""
    run = open_run(run_path, "run")
    if not run.slug:
        raise ValueError(f"run {run.path} does not record its device slug; it cannot be filed under a machine")
    dest = Path(store) / run.machine_key
    source_dir = run.path if run.kind == "results" else run.path.parent
    if dest.resolve() == source_dir.resolve():
        raise ValueError(f"{run.path} is already the baseline kept in {dest}: nothing to do (a run is kept by copying "
                         "it from its results folder)")
    dest.mkdir(parents=True, exist_ok=True)
    # the new files first, each copied beside its place and renamed over it; then the old run's other files go
    names = [name for name in _RUN_FILES if (run.path / name).exists()] if run.kind == "results" else [run.path.name]
    for name in names:
        source = run.path / name if run.kind == "results" else run.path
        tmp = dest / f".{name}.copying"
        shutil.copy2(source, tmp)
        tmp.replace(dest / name)
    # then the old run's other files: only those a baseline wrote (the run files, and the names the last save recorded);
    # a *.json a person put there is theirs, never deleted
    manifest = dest / _MANIFEST
    written = manifest.read_text(encoding="utf-8").split("\n") if manifest.is_file() else []
    for name in dict.fromkeys([n for n in written if n and "/" not in n and not n.startswith(".")] + list(_RUN_FILES)):
        if name not in names:
            (dest / name).unlink(missing_ok=True)
    tmp = dest / f"{_MANIFEST}.writing"
    tmp.write_text("\n".join(names) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return dest
