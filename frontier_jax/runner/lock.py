"""One writer per output: an exclusive `fcntl.flock` on a sidecar file `OUT.partial.lock`, taken before the partial
file is created, opened or truncated, and held until the partial is renamed into place (or the run ends). The lock
file holds the writer's PID and host, so a second writer can name it. The lock is advisory and local to one host's
kernel (flock on NFS may not be shared between hosts)."""
from __future__ import annotations

import errno
import os
import socket
from typing import Any

from frontier_jax.errors import FrontierError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

_HELD: dict[str, "OutputLock"] = {}  # lock path -> lock held by this process (released on os._exit too: fds close)


def lock_path(partial: str) -> str:
    """The sidecar lock file of a partial file."""
    return partial + ".lock"


class OutputLock:
    """An exclusive, non-blocking lock on `partial`'s sidecar. `acquire` raises FrontierError naming the live writer
    if another process holds it. Use as a context manager; `release` removes the lock file while still holding it."""

    def __init__(self, partial: str, what: str = "sweep"):
        self.partial, self.path, self.what = partial, lock_path(partial), what
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock (non-blocking) and write this process's PID and host into the lock file."""
        if fcntl is None:
            return self
        if self.path in _HELD:
            raise FrontierError(f"this process is already writing {self.partial!r}; choose another output path")
        for _ in range(20):  # the file can be unlinked by its holder between our open and our lock: retry
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise FrontierError(f"cannot create the lock file {self.path!r} ({_why(e)}); "
                                    "choose another output path") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FrontierError(f"another {self.what} ({holder}) is writing {self.partial!r} right now; "
                                        "wait for it to finish, or write to another output path") from None
                raise FrontierError(f"cannot lock {self.path!r} ({_why(e)}); choose another output path") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # we locked an inode its holder has just unlinked
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self.fd = fd
            _HELD[self.path] = self
            return self
        raise FrontierError(f"cannot lock {self.path!r} (it keeps being replaced); retry")

    def release(self) -> None:
        """Remove the lock file while still holding it, then release the lock."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        _HELD.pop(self.path, None)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def release_all() -> None:
    """Release (and remove) every lock this process holds: called before an immediate exit on a signal."""
    for lock in list(_HELD.values()):
        lock.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def _why(e: OSError) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return e.strerror or str(e)
