"""Many cases in one process: each row is written the moment its case finishes.

The progress line goes to stderr (one line per case, with the running count and an ETA); the
summary table at the end to stdout.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

import torch

from .cases import Case
from .device import DeviceFacts
from .measure import Measurement, Settings, measure_case
from .results import RunWriter


def sweep(cases: list[Case], device: torch.device, facts: DeviceFacts, settings: Settings, writer: Optional[RunWriter],
          run_id: str = "", progress: Optional[TextIO] = sys.stderr,
          on_row: Optional[Callable[[Measurement], None]] = None) -> list[dict]:
    rows = []
    start = time.monotonic()
    for i, case in enumerate(cases, 1):
        measurement = measure_case(case, device, facts, settings, run_id)
        if writer is not None:
            writer.append(measurement.row, measurement.samples_s)
        rows.append(measurement.row)
        if on_row is not None:
            on_row(measurement)
        if progress is not None:
            elapsed = time.monotonic() - start
            eta = elapsed / i * (len(cases) - i)
            progress.write(f"[{i}/{len(cases)} {elapsed:5.0f}s elapsed, ~{eta:.0f}s left] {progress_text(measurement.row)}\n")
            progress.flush()
    return rows


def progress_text(row: dict) -> str:
    if row["status"] == "ok":
        return f"{row['case_id']}: {row['images_per_s']:.1f} images/s, median {row['median_ms']:.2f} ms/batch"
    return f"{row['case_id']}: {row['status']} ({row['reason']})"


def summary_table(rows: list[dict], limit: int = 60) -> str:
    """A short fixed-width table of the rows for the console."""
    header = f"{'case':<62} {'status':<11} {'images/s':>10} {'median ms':>10} {'peak MiB':>9} {'MFU':>6}"
    lines = [header, "-" * len(header)]
    for row in rows[:limit]:
        peak = row.get("reserved_peak_mib") or row.get("rss_peak_mib")
        if row["status"] == "ok":
            lines.append(f"{row['case_id'][:62]:<62} {'ok':<11} {row['images_per_s']:>10.1f} {row['median_ms']:>10.2f} "
                         f"{(peak or 0):>9.0f} {(row['mfu'] or 0) * 100:>5.1f}%")
        else:
            lines.append(f"{row['case_id'][:62]:<62} {row['status']:<11} {'':>10} {'':>10} {'':>9} {'':>6}")
    if len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more rows (see results.csv)")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append("rows: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
