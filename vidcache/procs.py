"""Worker processes that never outlive their parent.

A preempted job is a SIGKILL: the parent gets no chance to stop its workers, and a worker blocked
on its pipe can wait for ever, because with fork every later sibling inherits the parent's end of
that pipe and keeps it open (each worker holds the others' pipes alive). Leaked decode workers hold
hundreds of MB each until the node runs out of memory. So every worker vidcache starts (decode
pool, pretraining loader, data synthesis, per-device evaluation) calls `die_with_parent` first:

- on Linux, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the worker the moment its parent
  exits, even while it is stuck inside a decoder's C code;
- everywhere, a daemon thread that checks `os.getppid()` every `poll_s` seconds and exits the
  process once the parent is gone (reparented workers get another parent pid).

The parent's pid is passed in from the parent (`os.getpid()` there), so a parent that died before
the worker got this far is noticed too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int | None = None, poll_s: float = 0.5) -> None:
    """Make this process exit when `parent_pid` (default: the current parent) is no longer its parent."""
    parent = int(parent_pid) if parent_pid is not None else os.getppid()
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="vidcache-parent-watch", daemon=True).start()


class _DieWithParent:
    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid

    def __call__(self, *args) -> None:
        die_with_parent(self.parent_pid)


def worker_init(parent_pid: int | None = None) -> _DieWithParent:
    """A picklable callable (for `initializer=` / `worker_init_fn=`) that calls `die_with_parent`."""
    return _DieWithParent(os.getpid() if parent_pid is None else parent_pid)
