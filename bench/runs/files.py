"""Files written whole or not at all: a reader never sees half a report, CSV or JSON."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a results file is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for text (UTF-8, newlines as given)."""
    atomic_write_bytes(path, text.encode())


LOCK_FILE = ".lock"


class FolderInUse(ValueError):
    """Another process holds the folder's lock (a run still going, or a second writer)."""


class FolderLock:
    """An exclusive lock on a run folder, held while one process writes to it (``flock`` on ``.lock``).

    The kernel drops it when the process ends, however it ends (a SIGKILL included), so a killed
    run never leaves a stale lock; a second writer is refused at once, naming the holder's pid.
    Where ``fcntl`` does not exist (Windows) the lock is a no-op.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, what: str = "this run") -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"{self.path.parent} is in use by another process (pid {holder}), so {what} cannot write "
                              "to it now; wait for that run to end (or stop it), then try again") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
