"""Where a case runs: in this process (fast) or in a fresh child process (isolated).

The child launcher survives what the in-process one cannot: a segfault, a SIGKILL, a hang, or a
CUDA error that poisons the context each cost one row (``error`` / ``timeout``, with the signal or
the last lines of the child's output) and the sweep goes on. It is the default on CUDA.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

from bench.core.cases import Case
from bench.core.commandline import DEFAULT_CASE_TIMEOUT_S, LAUNCHER_CHOICES as LAUNCHERS
from bench.trackers.device import DeviceFacts
from bench.core.measure import Measurement, Settings, base_row, measure_case
from bench.runs.provenance import utc_now

_TAIL_LINES = 6


def choose_launcher(name: str, device: torch.device, timeout_s: Optional[float] = None) -> "InProcess | Subprocess":
    """``auto``: a child per case on CUDA, where isolation matters; in-process on a CPU."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; choose from {', '.join(LAUNCHERS)}")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"bad case timeout {timeout_s}: expected seconds > 0")
    if name == "subprocess" or (name == "auto" and device.type == "cuda"):
        return Subprocess(str(device), timeout_s or DEFAULT_CASE_TIMEOUT_S)
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

    def __init__(self, device_spec: str, timeout_s: float = DEFAULT_CASE_TIMEOUT_S) -> None:
        self.device_spec = device_spec
        self.timeout_s = timeout_s
        self._proc: Optional[subprocess.Popen] = None

    def run(self, case: Case, device: torch.device, facts: DeviceFacts, settings: Settings, run_id: str) -> Measurement:
        if case.skip:  # nothing to isolate: no model is built
            return measure_case(case, device, facts, settings, run_id)
        payload = {"case": case.fields(), "device": self.device_spec, "settings": settings.__dict__, "run_id": run_id}
        with tempfile.TemporaryDirectory(prefix="ae-bench-case-") as tmp:
            out_path = Path(tmp) / "measurement.json"
            # A session of its own: Ctrl-C reaches the parent, which stops the child itself.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench.core.child", str(out_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                output, _ = self._proc.communicate(json.dumps(payload), timeout=self.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                self._kill()
                output, _ = self._proc.communicate()
                timed_out = True
            returncode = self._proc.returncode
            self._proc = None
            if not timed_out and returncode == 0 and out_path.exists():
                data = json.loads(out_path.read_text())
                return Measurement(data["row"], data["samples_s"])
        row = base_row(case, facts, run_id)
        tail = " | ".join(line.strip() for line in (output or "").strip().splitlines()[-_TAIL_LINES:])
        if timed_out:
            row.update(status="timeout", reason=f"no result after {self.timeout_s:g} s; child killed. Last output: {tail or '(none)'}")
        elif returncode < 0:
            row.update(status="error", reason=f"child killed by {signal.Signals(-returncode).name}. Last output: {tail or '(none)'}")
        else:
            row.update(status="error", reason=f"child exited with status {returncode}. Last output: {tail or '(none)'}")
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
