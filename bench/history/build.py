"""Runs into per-machine, per-case histories: group by machine key, order by commit, analyse each case."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from bench.history.order import full_hash, order_runs
from bench.history.page import MachineHistory
from bench.history.sources import Run, Skipped
from bench.history.steps import CONFIDENCE, MIN_STEP, SEED, Point, analyse


def normalise(runs: list[Run]) -> None:
    """Scale each run's samples by (median calibration GEMM time of the runs) / (its own): a machine that was
    busier or slower during one run (the GEMM took longer) counts against that run, not against the code.
    As ``compare --normalize``; it assumes the load that slowed the GEMM slowed the cases alike."""
    missing = [str(r.source) for r in runs if not np.isfinite(r.gemm_ms)]
    if missing:
        raise ValueError(f"--normalize: {len(missing)} run(s) record no calibration GEMM time (meta.json), e.g. {missing[0]}")
    reference = float(np.median([r.gemm_ms for r in runs]))
    for run in runs:
        for case in run.cases.values():
            case.samples_ms = case.samples_ms * (reference / run.gemm_ms)


def build(runs: list[Run], skipped: list[Skipped], commits: Sequence[str], min_step: float = MIN_STEP,
          confidence: float = CONFIDENCE, seed: int = SEED, normalize: bool = False) -> list[MachineHistory]:
    """One :class:`MachineHistory` per machine key among ``runs``; ``commits`` is the repository's commit order
    (oldest first; empty without a repository, then runs go in time order). ``normalize``: see :func:`normalise`."""
    by_machine: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_machine[run.machine].append(run)
    out = []
    for machine, group in sorted(by_machine.items()):
        ordered, how = order_runs(group, commits)
        if normalize:
            normalise(ordered)
        for run in ordered:
            run.commit = full_hash(run.commit, commits)
        points: dict[str, list[Point]] = defaultdict(list)
        run_of: dict[str, list[int]] = defaultdict(list)
        case_ids: dict[str, str] = {}
        for i, run in enumerate(ordered):
            for key, case in run.cases.items():
                points[key].append(Point(run.commit, case.samples_ms, case.process, str(run.source)))
                run_of[key].append(i)
                case_ids[key] = case.case_id
        cases = {key: analyse(pts, min_step=min_step, confidence=confidence, seed=seed) for key, pts in points.items()}
        out.append(MachineHistory(machine, ordered, how, cases, case_ids, dict(run_of),
                                  [s for s in skipped], list(commits)))
    return out
