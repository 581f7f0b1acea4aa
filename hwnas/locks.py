"""Advisory file locks (fcntl.flock): one writer per run directory and per cache entry.

The lock belongs to an open file, so it is released when the holder closes it or its process
dies (a SIGKILL leaves no stale lock behind)."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hwnas.errors import HwnasError


class FileLock:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; without `blocking`, return False at once when another holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise HwnasError(f"cannot create lock file {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the flock
            self.fd = None


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the lock at `path` for the block, waiting for another holder to finish."""
    lock = FileLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
