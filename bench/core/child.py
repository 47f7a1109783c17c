"""A child process that measures one case: ``python -m bench.core.child OUT.json`` with the case on stdin.

Used by the subprocess launcher; writes ``{"row": ..., "samples_s": ...}`` to OUT.json atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.core.cases import Case
from bench.trackers.device import device_facts, resolve_device
from bench.core.measure import Settings, measure_case
from bench.runs.files import atomic_write_text


def main(argv: list[str]) -> int:
    out_path = Path(argv[0])
    payload = json.loads(sys.stdin.read())
    device = resolve_device(payload["device"])
    measurement = measure_case(Case(**payload["case"]), device, device_facts(device), Settings(**payload["settings"]),
                               payload["run_id"])
    atomic_write_text(out_path, json.dumps({"row": measurement.row, "samples_s": measurement.samples_s}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
