"""Where a case runs: in this process (fast) or in a fresh child process (isolated).

The child launcher survives what the in-process one cannot: a segfault, a SIGKILL, a hang, or a
CUDA error that poisons the context each cost one row (``error`` / ``timeout``, with the signal or
the last lines of the child's output) and the sweep goes on. It is the default on CUDA, and
wherever ``--case-timeout`` is given: only a case in a child can be stopped at its time limit.

The child's output is read as it comes, keeping its last ``_TAIL_BYTES`` (a chatty child cannot
fill the parent's memory), and a reason quotes at most ``_TAIL_CHARS`` of it. The child watches
its stdin, a pipe the parent holds open: if the parent dies (even by SIGKILL), the child removes
its temporary folder and exits (see :mod:`bench.core.child`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from bench.core.cases import Case
from bench.core.child import READY_NAME
from bench.core.commandline import DEFAULT_CASE_TIMEOUT_S, LAUNCHER_CHOICES as LAUNCHERS, check_case_timeout, child_env
from bench.trackers.device import DeviceFacts
from bench.core.measure import Measurement, Settings, base_row, measure_case
from bench.runs.lock import pid_alive
from bench.runs.provenance import utc_now

_TAIL_LINES = 6          # last lines of a failed child's output quoted in its row's reason ...
_TAIL_CHARS = 600        # ... and at most this many characters of them
_TAIL_BYTES = 64 * 1024  # the child's output kept in memory while it runs: its last 64 KiB
_TMP_PREFIX = "ae-bench-case-"
STARTUP_LIMIT_S = 600.0  # a child's start-up (interpreter, torch, the harness) allowed before its case timeout starts


def choose_launcher(name: str, device: torch.device, timeout_s: Optional[float] = None) -> "InProcess | Subprocess":
    """``auto``: a child per case on CUDA, where isolation matters, and wherever a case timeout is
    given (only a child can be stopped at its limit and the sweep go on); in-process on a CPU.
    ``in-process`` with a timeout is refused: it could not keep the promise."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; choose from {', '.join(LAUNCHERS)}")
    if timeout_s is not None:
        check_case_timeout(timeout_s)
    if name == "subprocess" or (name == "auto" and (device.type == "cuda" or timeout_s is not None)):
        return Subprocess(str(device), timeout_s or DEFAULT_CASE_TIMEOUT_S)
    if timeout_s is not None:
        raise ValueError(f"--case-timeout {timeout_s:g}: the in-process launcher cannot stop a case that hangs and go on; "
                         "use --launcher subprocess (or auto, which runs each case in a child when a timeout is given), "
                         "or leave out --case-timeout")
    return InProcess()


class InProcess:
    name = "in-process"

    def run(self, case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, run_id: str) -> Measurement:
        return measure_case(case, device, facts, settings, run_id)

    def close(self) -> None:
        pass


class Subprocess:
    """One child process per case (``python -m bench.core.child``), killed past ``timeout_s``."""

    name = "subprocess"

    def __init__(self, device_spec: str, timeout_s: float = DEFAULT_CASE_TIMEOUT_S, code_root: Optional[Path] = None) -> None:
        self.device_spec = device_spec
        self.timeout_s = timeout_s
        self.code_root = code_root  # another checkout's code for the child (python -m bench ab); None: this one
        self._proc: Optional[subprocess.Popen] = None
        remove_orphaned_folders()

    def run(self, case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, run_id: str) -> Measurement:
        if case.skip:  # nothing to isolate: no model is built
            return measure_case(case, device, facts, settings, run_id)
        timing = {k: v for k, v in settings.__dict__.items() if k != "processes"}  # the parent's business, not the child's
        payload = {"case": case.fields(), "device": self.device_spec, "settings": timing, "run_id": run_id}
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        try:
            in_path, out_path = tmp / "case.json", tmp / "measurement.json"
            in_path.write_text(json.dumps(payload))
            # A session of its own: Ctrl-C reaches the parent, which stops the child itself. stdin stays open
            # and unwritten: the child's watch on its parent (EOF = the parent is gone).
            self._proc = proc = subprocess.Popen(
                [sys.executable, "-m", "bench.core.child", str(in_path), str(out_path)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                env=child_env({"PYTHONUNBUFFERED": "1"}, self.code_root), cwd=self.code_root,
            )
            output = TailReader(proc.stdout, _TAIL_BYTES)
            try:
                timed_out = not wait_for_child(proc, tmp / READY_NAME, self.timeout_s)
                if timed_out:
                    self._kill()
                    proc.wait()
            except BaseException:  # an interrupt: the child goes before its folder does
                self.close()
                raise
            tail = _tail_text(output.text())
            proc.stdin.close()
            returncode = proc.returncode
            self._proc = None
            if not timed_out and returncode == 0 and out_path.exists():
                try:
                    data = json.loads(out_path.read_text())
                    return Measurement(data["row"], data["samples_s"])
                except (ValueError, KeyError, TypeError) as err:
                    tail = f"its result file is unreadable ({type(err).__name__}: {err}). {tail}"[:_TAIL_CHARS]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row = base_row(case, facts, run_id)
        if timed_out:
            row.update(status="timeout", reason=f"no result after {self.timeout_s:g} s; child killed. Last output: {tail or '(none)'}")
        elif returncode < 0:
            row.update(status="error", reason=f"child killed by {_signal_name(-returncode)}. Last output: {tail or '(none)'}")
        else:
            row.update(status="error", reason=f"child exited with status {returncode} without a result. "
                                              f"Last output: {tail or '(none)'}")
        row["timestamp"] = utc_now()
        return Measurement(row)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Stop a child that is still running (on interrupt)."""
        self._kill()
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


def wait_for_child(proc, ready: Path, timeout_s: float, startup_s: float = STARTUP_LIMIT_S,
                   clock: Callable[[], float] = time.monotonic, poll_s: float = 0.2) -> bool:
    """Wait for a case's child: True when it ended, False when it ran past its limit (the caller kills it).

    The case timeout counts from the child's ``ready`` marker (written once its interpreter, torch and the harness
    are loaded, before the model is built), not from the spawn: a start-up of 16 s on a busy machine is no part of
    a case's time, and ``--case-timeout 8`` must not record a healthy case as a timeout. A child that never says
    it is ready (an older checkout's, under ``ab``) gets ``startup_s`` more than the timeout from its spawn."""
    start, ready_at = clock(), None
    while True:
        if proc.poll() is not None:
            return True
        now = clock()
        if ready_at is None and ready.exists():
            ready_at = now
        deadline = ready_at + timeout_s if ready_at is not None else start + startup_s + timeout_s
        if now >= deadline:
            return False
        try:
            proc.wait(timeout=max(min(poll_s, deadline - now), 0.001))
        except subprocess.TimeoutExpired:
            pass


class TailReader:
    """Reads a stream to its end on a thread of its own, keeping only its last ``limit`` bytes."""

    def __init__(self, stream, limit: int) -> None:
        self._stream, self._limit = stream, limit
        self._kept = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True, name="ae-bench-child-output")
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = self._stream.read1(65536)
                if not chunk:
                    break
                with self._lock:
                    self._kept += chunk
                    if len(self._kept) > self._limit:
                        del self._kept[: len(self._kept) - self._limit]
        except (OSError, ValueError):  # the stream closed under us
            pass

    def text(self, wait_s: float = 10.0) -> str:
        """What was kept, once the stream ended (or after ``wait_s``: a grandchild may hold it open)."""
        self._thread.join(wait_s)
        with self._lock:
            return bytes(self._kept).decode("utf-8", errors="replace")


def _tail_text(output: str) -> str:
    """The last lines of a child's output on one line, at most ``_TAIL_CHARS`` characters (the end kept)."""
    lines = [line.strip() for line in output.strip().split("\n") if line.strip()][-_TAIL_LINES:]
    text = " | ".join(lines)
    return text if len(text) <= _TAIL_CHARS else "..." + text[-(_TAIL_CHARS - 3):]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def remove_orphaned_folders() -> None:
    """Remove the temporary folders of case children whose parent is gone (a parent killed while its
    child could not clean up: the child's own watch normally removes them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = folder.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)

