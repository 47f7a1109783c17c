"""Many cases, one after another: each row is written the moment its case finishes.

The progress line goes to stderr (one line per case, with the running count and an ETA); the
summary table at the end to stdout. Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops the
sweep after what was measured is on disk (the case in flight is dropped and its child process, if
any, killed), and raises :class:`SweepInterrupted` so the caller can say how to resume.

SIGUSR2 is the warning a batch system sends before a job's time limit (submitit asks SLURM for it
90 s ahead, ``--signal=USR2@90``): the case in flight finishes and its row is written, no new case
starts, and :class:`SweepInterrupted` says ``deadline`` so the caller writes the end calibration
and the report while there is time. :func:`watch_deadline` arms it for the whole run (a warning
that lands while the run starts is kept); a child process of the run ignores it (bench/core/child.py,
the calibration child: SLURM signals every process of the job, and the case a child measures must finish).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence, TextIO

from bench.core.cases import Case
from bench.core.cost import case_cost_parts, eta_seconds
from bench.core.console import progress_text
from bench.core.measure import Measurement

if TYPE_CHECKING:
    from bench.core.session import Run


class SweepInterrupted(Exception):
    def __init__(self, done: int, total: int, rows: list[dict], in_flight: Optional[Case] = None,
                 in_flight_s: float = 0.0) -> None:
        super().__init__(f"interrupted after {done} of {total} cases")
        self.done, self.total, self.rows = done, total, rows
        self.in_flight, self.in_flight_s = in_flight, in_flight_s  # the case dropped, and how long it had run
        self.deadline = ""  # "SIGUSR2" when the job's time limit is near: the run ends cleanly, report included


_DEADLINE_SIGNAL = getattr(signal, "SIGUSR2", None)
_deadline: list[str] = []  # the signal's name once it came (module state: a signal handler has no other place)


def _note_deadline(signum, frame):
    if not _deadline:
        _deadline.append(signal.Signals(signum).name)
        sys.stderr.write(f"ae-bench: {_deadline[0]}: the job's time limit is near: finishing the case in flight, "
                         "then the end calibration and the report\n")


def watch_deadline() -> None:
    """Arm SIGUSR2 for this run (main thread only; a second call changes nothing)."""
    if _DEADLINE_SIGNAL is not None and _is_main_thread():
        _deadline.clear()
        signal.signal(_DEADLINE_SIGNAL, _note_deadline)


def deadline_near() -> str:
    return _deadline[0] if _deadline else ""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def sweep(run: "Run", cases: list[Case], progress: Optional[TextIO] = sys.stderr,
          on_row: Optional[Callable[[Measurement], None]] = None) -> list[dict]:
    """Measure ``cases`` one after another through ``run`` (its launcher, writer and folder)."""
    rows: list[dict] = []
    meter = Progress(len(cases), cases)
    in_main_thread = _is_main_thread()
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS} if in_main_thread else {}
    for sig in previous:
        # SIGTERM stops as cleanly as Ctrl-C; SIGINT is set explicitly because a shell starts
        # background jobs with it ignored, and Python then never raises KeyboardInterrupt
        signal.signal(sig, _raise_interrupt)
    in_flight, started = None, 0.0
    try:
        for case in cases:
            if deadline_near():
                stop = SweepInterrupted(len(rows), len(cases), rows)
                stop.deadline = deadline_near()
                raise stop
            in_flight, started = case, time.monotonic()
            measurement = run.measure(case)
            in_flight = None
            rows.append(measurement.row)
            if on_row is not None:
                on_row(measurement)
            if progress is not None:
                progress.write(meter.line(measurement.row, case) + "\n")
                progress.flush()
    except KeyboardInterrupt:
        run.close()
        raise SweepInterrupted(len(rows), len(cases), rows, in_flight, time.monotonic() - started if in_flight else 0.0) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rows


class Progress:
    """The progress line of a case loop: count, elapsed time, an estimate of what is left, the case's result.

    Every command's case loop prints it (run, pytest, profile, quality, plan, plan-check), each with
    its own detail text: ``print(meter.step(f"{case.id}: ..."), file=sys.stderr)`` after each case.
    Given the cases (``cases``, in any order) and each finished case (``step(..., case=...)``), the
    estimate of what is left is the remaining cases' expected cost (``bench/core/cost.py``: a fixed part
    and the work) at the seconds per unit of each that the finished cases took; otherwise the mean
    seconds per case so far x cases left. A case the device skips (recorded as unsupported at once)
    counts for nothing either way.
    """

    def __init__(self, total: int, cases: Optional[Sequence[Case]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.clock = total, 0, clock
        self.start = self.last = clock()
        measured = [case_cost_parts(c) for c in cases or () if not c.skip]
        self.cost_left = [sum(f for f, _ in measured), sum(w for _, w in measured)] if cases else None  # [fixed, work]
        self.costs_done: list[tuple[float, float]] = []  # (fixed, work) of each case counted with its Case
        self.seconds_done: list[float] = []  # and the seconds it took (the first: from the meter's start)

    def step(self, detail: str, case: Optional[Case] = None) -> str:
        """Count one more case done (``case``, when given, for its expected cost) and return its line,
        ``detail`` after the count and the times."""
        self.done += 1
        now = self.clock()
        if case is not None and self.cost_left is not None and not case.skip:
            fixed, work = case_cost_parts(case)
            self.costs_done.append((fixed, work))
            self.seconds_done.append(now - self.last)
            self.cost_left = [max(0.0, self.cost_left[0] - fixed), max(0.0, self.cost_left[1] - work)]
        self.last = now
        elapsed = now - self.start
        return f"[{self.done}/{self.total} {elapsed:5.0f}s elapsed, ~{self.eta(elapsed):.0f}s left] {detail}"

    def eta(self, elapsed: float) -> float:
        """Seconds left: by expected cost when the cases' costs are known, else by the mean case so far."""
        if self.costs_done:
            return eta_seconds(self.costs_done, self.seconds_done, tuple(self.cost_left))
        return elapsed / max(1, self.done) * max(0, self.total - self.done)

    def line(self, row: dict, case: Optional[Case] = None) -> str:
        """The line of a speed row (its images/s and median, or its status and reason)."""
        return self.step(progress_text(row), case)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
