"""The lock on a run folder: one process writes it at a time, and a second writer is refused at once.

Two ways to hold it, because cluster file systems differ:

- ``flock`` on ``FOLDER/.lock`` (the default). The kernel drops it when the process ends, however
  it ends (a SIGKILL included), so a killed run never leaves a stale lock. ``.lock`` names the
  holder (``PID on HOST``) for the message a second writer gets.
- an owner file, ``FOLDER/.lock.owner``, made with ``O_CREAT | O_EXCL`` (atomic on local disks,
  NFSv3 and later, and Lustre) and holding ``PID HOST``; removed when the run ends. Used where
  ``flock`` is missing (Lustre mounted without ``flock``, or ``localflock``: ``ENOSYS``,
  ``EOPNOTSUPP``, ``ENOLCK``), and everywhere when ``AE_BENCH_LOCK=file``: set that where ``flock``
  works but is node-local (NFS mounted with ``nolock`` or ``local_lock=flock``, Lustre with
  ``localflock``), where a login node's ``flock`` cannot see a compute node's. A run killed with
  SIGKILL leaves its owner file: on the same host the next writer finds the pid gone and takes
  over; from another host it cannot tell, so it refuses and names the file to remove once
  ``squeue``/``ps`` show the run has ended.

A ``flock`` holder also respects a live owner file, so the two ways never both let a writer in.
Where ``fcntl`` does not exist (Windows) only the owner file is used.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Optional

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"
LOCK_MODE_ENV = "AE_BENCH_LOCK"  # "file": the owner file only (a file system whose flock is node-local)
NO_FLOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class FolderInUse(ValueError):
    """Another process holds the folder's lock (a run still going, or a second writer)."""


def _host() -> str:
    return socket.gethostname() or "unknown-host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


class FolderLock:
    """An exclusive lock on a run folder, held while one process writes to it (see the module)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.owner = self.folder / OWNER_FILE
        self._fd: Optional[int] = None
        self._owns_file = False
        self.mode = ""  # "flock" or "file" once acquired

    def acquire(self, what: str = "this run") -> "FolderLock":
        if os.environ.get(LOCK_MODE_ENV, "").strip().lower() == "file":
            return self._acquire_file(what, "AE_BENCH_LOCK=file")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self._acquire_file(what, "no flock on this system")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"{self.folder} is in use by another process (pid {holder}), so {what} cannot write "
                              "to it now; wait for that run to end (or stop it), then try again") from None
        except OSError as err:
            os.close(fd)
            if err.errno in NO_FLOCK:  # Lustre without the flock mount option: the owner file instead
                return self._acquire_file(what, f"flock: {os.strerror(err.errno)}")
            raise
        except BaseException:
            os.close(fd)
            raise
        try:
            self._check_owner_file(what)  # a writer that holds the owner file (AE_BENCH_LOCK=file elsewhere)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {_host()}".encode())
        self._fd, self.mode = fd, "flock"
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        if self._owns_file:
            self.owner.unlink(missing_ok=True)
            self._owns_file = False

    # -- the owner file -----------------------------------------------------------------------------

    def _acquire_file(self, what: str, why: str) -> "FolderLock":
        for _ in range(3):
            try:
                fd = os.open(self.owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._check_owner_file(what, why)  # refuses a live holder, moves a stale file aside
                continue
            try:
                os.write(fd, f"{os.getpid()} {_host()}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._owns_file, self.mode = True, "file"
            return self
        raise FolderInUse(f"{self.folder}: could not take its lock file {self.owner} (another process keeps making it); "
                          f"{what} cannot write to it now")

    def _check_owner_file(self, what: str, why: str = "") -> None:
        """Refuse when the owner file names a live holder (or one on another host); move a stale one aside."""
        try:
            text = self.owner.read_text(encoding="utf-8", errors="replace").split()
        except FileNotFoundError:
            return
        pid = int(text[0]) if text and text[0].isdigit() else None
        host = text[1] if len(text) > 1 else "?"
        if pid is not None and host == _host() and not pid_alive(pid):
            try:  # a rename is atomic: of two writers finding it stale, one moves it and both retry the O_EXCL
                os.replace(self.owner, self.folder / f"{OWNER_FILE}.stale-{pid}")
                (self.folder / f"{OWNER_FILE}.stale-{pid}").unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return
        where = "" if host == _host() else f" on host {host}"
        raise FolderInUse(f"{self.folder} is in use by another process (pid {pid}{where}; its lock file {self.owner}"
                          f"{', used because ' + why if why else ''}), so {what} cannot write to it now; wait for that "
                          f"run to end, or, if it has ended (squeue, ps{' on ' + host if where else ''}), remove "
                          f"{self.owner} and try again")
