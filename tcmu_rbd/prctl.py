"""prctl(2): the one binding of the process and thread attributes the daemon sets.

Belongs here: the ctypes call and the options used (a process dies with its
parent, the supervisor adopts the workers the spawner forks, a thread's name
for the kernel).  Not here: why each is set (worker.py, spawner.py and
failover.py say where they set it).
"""

from __future__ import annotations

import ctypes
import errno

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int | bytes) -> int:
    """0 when the kernel took it, else the errno (ENOSYS: no prctl in libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(option, arg, 0, 0, 0) == 0:
            return 0
        return ctypes.get_errno() or errno.EINVAL
    except (OSError, AttributeError):
        return errno.ENOSYS


def name_thread(name: bytes) -> None:
    """Name the calling thread for the kernel (top -H, /proc/PID/task/*/comm, the
    benchmark's CPU per thread): Python's thread names stay inside Python.  The
    kernel keeps 15 bytes."""
    prctl(PR_SET_NAME, name[:15])
