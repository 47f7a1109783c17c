"""Several fresh processes per case (``--processes N``): the spread from one build of a model to the next.

One process measures one build: its memory layout, the kernels its first steps chose, where its
threads landed. On a shared CPU the same code runs at one of two speeds from one build to the
next (the tiny CNN: about 250 or 400 images/s), and a timing interval taken from one process's
samples cannot see that: two runs of the same commit then differ "significantly". With N
processes per case the run keeps every process's samples (``samples.jsonl``, each with its
process index) so the regression check can resample processes first, then samples within them
(``bench/compare/stats.py``), and flags a case whose process medians fall apart (``bimodal``).

The row itself is the measurement of the process whose median is the middle one: a real,
internally consistent row (its MFU, memory and FLOPs belong together), not an average of rows.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

from bench.core.measure import Measurement

BIMODAL_SPREAD = 3.0   # process medians this many times wider than the samples within a process ...
BIMODAL_MIN = 0.10     # ... and more than 10% apart (max / min - 1): the speed depends on the build


def _spread(samples: Sequence[float]) -> float:
    """IQR / median of one process's samples (0 for fewer than 4)."""
    if len(samples) < 4:
        return 0.0
    q = statistics.quantiles(samples, n=4)
    median = statistics.median(samples)
    return (q[2] - q[0]) / median if median > 0 else 0.0


def is_bimodal(medians: Sequence[float], within: Sequence[float]) -> bool:
    """Process medians spread (max / min - 1) more than :data:`BIMODAL_MIN` and more than
    :data:`BIMODAL_SPREAD` times the typical within-process spread (IQR / median)."""
    if len(medians) < 2 or min(medians) <= 0:
        return False
    between = max(medians) / min(medians) - 1
    typical = statistics.median(within) if within else 0.0
    return bool(between > BIMODAL_MIN and between > BIMODAL_SPREAD * typical)


def measure_processes(measure: Callable[[], Measurement], processes: int) -> Measurement:
    """Measure ``processes`` times (each call a fresh process) and combine: the middle process's row with
    ``processes``, ``process_medians_ms`` and ``bimodal``; every sample with its process index. A process
    that failed makes the case that process's row (an error is not averaged away)."""
    runs = [measure() for _ in range(processes)]
    failed = [m for m in runs if m.row.get("status") != "ok" or not m.samples_s]
    if failed:
        row = dict(failed[0].row)
        row["reason"] = f"process {runs.index(failed[0]) + 1} of {processes}: {row.get('reason') or row.get('status')}"
        row.update(processes=processes)
        return Measurement(row, failed[0].samples_s)
    medians = [float(statistics.median(m.samples_s)) for m in runs]
    middle = sorted(range(processes), key=lambda i: medians[i])[processes // 2]
    row = dict(runs[middle].row)
    row.update(processes=processes, process_medians_ms=" ".join(f"{1e3 * m:.4g}" for m in medians),
               bimodal=is_bimodal(medians, [_spread(m.samples_s) for m in runs]))
    samples = [s for m in runs for s in m.samples_s]
    index = [i for i, m in enumerate(runs) for _ in m.samples_s]
    return Measurement(row, samples, index)
