"""SIGINT and SIGTERM for the `frontier` command, at every phase of a run.

Python runs signal handlers in the main thread between bytecodes, so a Ctrl-C during XLA's compile (a long C++ call)
used to wait for the compile to end and then raise KeyboardInterrupt into a half-torn-down runtime (a segfault at
exit). Here the C-level handler only writes the signal number to a pipe (`signal.set_wakeup_fd`), and a watcher
thread reads it at once, whatever the main thread is doing:

- *immediate* phase (startup, spec checks, tracing, compiling: no partial file is open): print one line, release
  the output locks, `os._exit(130)` (143 for SIGTERM). Nothing was written, so nothing can be damaged.
- *deferred* phase (`deferred()`, entered before the partial file is created or opened and left after it is
  closed): the first signal sets a flag that the chunk loop reads between chunks; the loop stops there, the partial
  is flushed and closed (resumable), and the run raises `Interrupted`, which the CLI turns into the same one line
  and exit status. A second signal exits at once (like SIGKILL: chunks not yet marked done are recomputed on
  `--resume`).

Without `install()` (the Python API), `deferred()` falls back to catching SIGINT only, in the main thread."""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from frontier_jax.runner import lock as _lock

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def exit_status(signum: int) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def message(signum: int) -> str:
    """The one line printed when a signal stops the CLI."""
    return f"frontier: {NAMES.get(signum, 'stopped')}; rerun with --resume to continue a sweep"


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.deferred = 0              # nesting depth of deferred()
        self.flag: list[int] = []
        self.exit_lock = threading.Lock()
        self.pipe: tuple[int, int] | None = None
        self.thread: threading.Thread | None = None
        self.previous: dict[int, Any] = {}
        self.previous_fd = -1


_S = _State()


def _exit_now(signum: int) -> None:
    """Leave at once: one line, locks released, no interpreter teardown (XLA threads may be running)."""
    with _S.exit_lock:
        _lock.release_all()
        try:
            os.write(2, (("\n" if _S.deferred else "") + message(signum) + "\n").encode())
        except OSError:
            pass
        os._exit(exit_status(signum))


def _watch(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        for signum in data:
            if signum == 0:  # uninstall()
                return
            if signum not in NAMES:
                continue
            if not _S.deferred or _S.flag:
                _exit_now(signum)
            _S.flag.append(signum)


def _noop(signum: int, frame: Any) -> None:
    """The Python-level handler: the watcher thread acts; this only keeps Python from raising KeyboardInterrupt."""


def install() -> bool:
    """Take over SIGINT and SIGTERM for this process (the main thread only). Returns False where it cannot."""
    if _S.installed or threading.current_thread() is not threading.main_thread():
        return False
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        _S.previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, _noop)
        _S.previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(r)
        os.close(w)
        return False
    _S.pipe, _S.flag, _S.deferred, _S.installed = (r, w), [], 0, True
    _S.thread = threading.Thread(target=_watch, args=(r,), name="frontier-signals", daemon=True)
    _S.thread.start()
    return True


def uninstall() -> None:
    """Give SIGINT and SIGTERM back (for callers of `cli.main` inside a longer-lived process, such as tests)."""
    if not _S.installed:
        return
    signal.set_wakeup_fd(_S.previous_fd)
    for s, h in _S.previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    r, w = _S.pipe  # type: ignore[misc]
    os.write(w, b"\0")
    if _S.thread is not None:
        _S.thread.join(timeout=5)
    os.close(r)
    os.close(w)
    _S.installed, _S.pipe, _S.thread = False, None, None


def installed() -> bool:
    """Whether `install()` has taken SIGINT and SIGTERM for this process."""
    return _S.installed


@contextmanager
def deferred() -> Iterator[list[int]]:
    """While a partial file is open: signals set the yielded flag (a list of signal numbers) instead of stopping the
    process; the caller checks it between chunks and raises `Interrupted(flag[0])` after closing the file."""
    if _S.installed:
        if not _S.deferred:
            _S.flag.clear()
        _S.deferred += 1
        try:
            yield _S.flag
        finally:
            _S.deferred -= 1
        return
    with deferred_sigint() as flag:
        yield flag


@contextmanager
def deferred_sigint() -> Iterator[list[int]]:
    """The Python-API fallback: Ctrl-C (SIGINT) only sets a flag, which the chunk loop reads between chunks: the
    interruption then happens where the partial file is consistent, never inside a netCDF write, and it cannot be
    lost in a place that swallows exceptions. A second Ctrl-C interrupts at once. Outside the main thread (where
    Python cannot take signals) it does nothing."""
    flag: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag:
            signal.default_int_handler(signum, frame)
        flag.append(signum)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def flush_std() -> None:
    """Flush stdout and stderr, ignoring closed streams."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
