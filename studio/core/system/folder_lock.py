"""An exclusive lock on a folder that the operating system releases when its process dies.

A run folder has one writer: two training processes in one folder interleave their events and one
moves the other's checkpoints aside. A pid file cannot promise that (a killed run leaves it
behind, and pids are reused), so the writer holds an OS lock on a lock file — `fcntl.flock` on
POSIX, `msvcrt.locking` on Windows — for as long as it lives. A run killed with SIGKILL never
stays locked, because the lock lives in the kernel with the open file, not in the file's contents.
The file also holds the holder's pid, for messages only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# msvcrt.locking locks bytes from the current position; the pid is written at offset 0, so the lock sits
# far beyond it and a reader on Windows can still read the pid.


_WINDOWS_LOCK_OFFSET = 1 << 30


class FolderLock:
    """The lock file `path`, held from `acquire()` until `release()` or the end of the process."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, attempts: int = 5) -> bool:
        """Take the lock without waiting for its holder; False if another process holds it.

        A few short retries: `is_locked` in another process (the window checking before it resumes) holds
        the lock for an instant, which must not turn a training process away.
        """
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(attempts):
            if _try_lock(fd, exclusive=True):
                break
            if attempt + 1 < attempts:
                time.sleep(0.05)
        else:
            os.close(fd)
            return False
        self._fd = fd
        try:  # the pid is for messages only: a full disk must not stop the run from holding its lock
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        return True

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock file `path` (an absent file is not locked)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if not _try_lock(fd, exclusive=False):
            return True
        _unlock(fd)
        return False
    finally:
        os.close(fd)


def lock_holder(path: Path) -> int | None:
    """The pid the holder of `path` wrote, while the lock is held; None when it is free or unreadable."""
    if not is_locked(path):
        return None
    try:
        return int(Path(path).read_text(encoding="ascii").strip() or "0") or None
    except (OSError, ValueError):
        return None


if os.name == "nt":
    import msvcrt

    def _try_lock(fd: int, *, exclusive: bool) -> bool:
        # Windows byte-range locks are always exclusive; a checker's brief lock is what `acquire` retries past.
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass

else:
    import fcntl

    def _try_lock(fd: int, *, exclusive: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
