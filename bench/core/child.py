"""A child process that measures one case: ``python -m bench.core.child CASE.json OUT.json``.

Used by the subprocess launcher, which writes the case to CASE.json and reads
``{"row": ..., "samples_s": ...}`` back from OUT.json (written atomically). Both sit in a
temporary folder of the parent's making.

The child never outlives its parent: its stdin is a pipe the parent holds open and never
writes, and a thread waits on it from the first moment (before torch is imported). End of
file there means the parent is gone, however it went (SIGKILL included): the thread removes
the temporary folder and ends the process.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

EXIT_ORPHANED = 70
# How a parent and this child talk: 2 = the case in CASE.json, the result in OUT.json, stdin held open and never
# written (the parent watch). 39031ba's child (protocol 1) read its case from stdin. python -m bench ab measures a
# BASE with its own child only when the two speak the same protocol (bench.compare.ab.check_harness).
PROTOCOL = 2
READY_NAME = "ready"  # written next to OUT.json once the child has started: the case timeout counts from then
_exit = os._exit  # the real one: a case's os._exit is turned into an exception while it runs (bench.core.runner)


def watch_parent(folder: Path) -> threading.Thread:
    """End this process, removing ``folder``, once stdin reaches its end (the parent closed it or died)."""

    def watch() -> None:
        try:
            while os.read(0, 65536):  # the raw descriptor: a buffered reader's lock would stall the interpreter's exit
                pass
        except OSError:
            pass
        shutil.rmtree(folder, ignore_errors=True)
        _exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, daemon=True, name="ae-bench-parent-watch")
    thread.start()
    return thread


def known_fields(cls, values: dict) -> dict:
    """``values`` for the dataclass ``cls`` of this checkout: a field it does not know is dropped when empty (a
    newer parent's axis that does not apply, e.g. ``seq_len`` of an image case: ``python -m bench ab`` against
    an older commit), and refused when set (this code cannot measure what it asks)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = {k: v for k, v in values.items() if k not in known}
    set_ = {k: v for k, v in unknown.items() if v not in (None, "", False)}
    if set_:
        raise SystemExit(f"this checkout's {cls.__name__} has no field(s) {', '.join(sorted(set_))}: it cannot measure this case")
    return {k: v for k, v in values.items() if k in known}


def main(argv: list[str]) -> int:
    in_path, out_path = Path(argv[0]), Path(argv[1])
    if hasattr(signal, "SIGUSR2"):  # a batch job's time-limit warning reaches every process: this case still
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # finishes, and the run decides (bench/core/loop.py)
    watch_parent(out_path.parent)
    from bench.core.cases import Case
    from bench.core.measure import Settings, measure_case
    from bench.runs.files import atomic_write_text
    from bench.trackers.device import device_facts, resolve_device

    payload = json.loads(in_path.read_text())
    device = resolve_device(payload["device"])
    gc.freeze()  # the imports out of the collector's reach: the case's gc.collect() calls then scan only its own objects
    (out_path.parent / READY_NAME).write_text(str(os.getpid()))  # imports done: the case's own time starts now
    measurement = measure_case(Case(**known_fields(Case, payload["case"])), device, device_facts(device),
                               Settings(**known_fields(Settings, payload["settings"])), payload["run_id"])
    atomic_write_text(out_path, json.dumps({"row": measurement.row, "samples_s": measurement.samples_s}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
