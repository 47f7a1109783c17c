"""Many cases, one after another: each row is written the moment its case finishes.

The progress line goes to stderr (one line per case, with the running count and an ETA); the
summary table at the end to stdout. Ctrl-C or SIGTERM stops the sweep after what was measured
is on disk (the case in flight is dropped and its child process, if any, killed), and raises
:class:`SweepInterrupted` so the caller can say how to resume.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional, TextIO

from bench.core.cases import Case
from bench.core.measure import Measurement

if TYPE_CHECKING:
    from bench.core.session import Run


class SweepInterrupted(Exception):
    def __init__(self, done: int, total: int, rows: list[dict]) -> None:
        super().__init__(f"interrupted after {done} of {total} cases")
        self.done, self.total, self.rows = done, total, rows


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def sweep(run: "Run", cases: list[Case], progress: Optional[TextIO] = sys.stderr,
          on_row: Optional[Callable[[Measurement], None]] = None) -> list[dict]:
    """Measure ``cases`` one after another through ``run`` (its launcher, writer and folder)."""
    rows: list[dict] = []
    meter = Progress(len(cases))
    in_main_thread = _is_main_thread()
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS} if in_main_thread else {}
    for sig in previous:
        # SIGTERM stops as cleanly as Ctrl-C; SIGINT is set explicitly because a shell starts
        # background jobs with it ignored, and Python then never raises KeyboardInterrupt
        signal.signal(sig, _raise_interrupt)
    try:
        for case in cases:
            measurement = run.measure(case)
            rows.append(measurement.row)
            if on_row is not None:
                on_row(measurement)
            if progress is not None:
                progress.write(meter.line(measurement.row) + "\n")
                progress.flush()
    except KeyboardInterrupt:
        run.close()
        raise SweepInterrupted(len(rows), len(cases), rows) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rows


class Progress:
    """The progress line of a case loop: count, elapsed time, an estimate of what is left, the case's result."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def line(self, row: dict) -> str:
        self.done += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        return f"[{self.done}/{self.total} {elapsed:5.0f}s elapsed, ~{eta:.0f}s left] {progress_text(row)}"


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


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
