"""``python -m bench.selfcheck.inject FAULT [ARG] -- ARGS...``: ``python -m bench ARGS`` with a fault
planted at the operating-system level, for the fault table (``bench/selfcheck/faults.py``):

- ``disk-full N``: the disk fills during the Nth fsync of a ``results.csv``: the file keeps half of
  the line just written, and ENOSPC is raised (what a full disk does to an append);
- ``stop-between-writes N``: a Ctrl-C's KeyboardInterrupt right after the Nth fsync of a run's
  ``results.csv`` or ``samples.jsonl`` (a row's two writes are the fsyncs 2k-1 and 2k);
- ``read-only``: making a folder fails with EROFS (a results folder on a read-only disk);
- ``same-second``: every run id is the same (runs started in the same second).
"""

from __future__ import annotations

import errno
import os
import sys


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def plant(fault: str, arg: str) -> None:
    if fault == "disk-full":
        real_fsync, nth, seen = os.fsync, int(arg), [0]

        def fsync(fd: int) -> None:
            if _path_of(fd).endswith("/results.csv"):
                seen[0] += 1
                if seen[0] == nth:
                    size = os.fstat(fd).st_size
                    with open(_path_of(fd), "rb") as f:
                        data = f.read()
                    start = data.rstrip(b"\n").rfind(b"\n") + 1
                    os.ftruncate(fd, start + (size - start) // 2)  # half of the last line made it to the disk
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        os.fsync = fsync
    elif fault == "stop-between-writes":
        real_fsync, nth, seen = os.fsync, int(arg), [0]

        def fsync(fd: int) -> None:
            real_fsync(fd)
            if _path_of(fd).endswith(("/results.csv", "/samples.jsonl")):
                seen[0] += 1
                if seen[0] == nth:
                    raise KeyboardInterrupt("SIGINT (planted between a row's two writes)")

        os.fsync = fsync
    elif fault == "read-only":
        real_mkdir = os.mkdir

        def mkdir(path, mode=0o777, *, dir_fd=None):
            if os.path.exists(path):
                return real_mkdir(path, mode, dir_fd=dir_fd)  # FileExistsError, as a read-only disk says too
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        os.mkdir = mkdir
    elif fault == "same-second":
        import bench.runs.provenance as provenance

        provenance.new_run_id = lambda slug: f"20990101-000000-{slug}"
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main(argv: list[str]) -> int:
    split = argv.index("--")
    fault, args = argv[:split], argv[split + 1:]
    plant(fault[0], fault[1] if len(fault) > 1 else "")
    import runpy

    sys.argv = [sys.argv[0], *args]
    runpy.run_module("bench", run_name="__main__", alter_sys=True)  # exactly `python -m bench ARGS` from here on
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
