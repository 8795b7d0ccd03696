"""The lab's child processes and their logs: start, watch, stop, explain a failure.

What belongs here: starting a daemon in a session of its own (optionally dying
with this process), stopping a process group (the signal, then SIGKILL), asking
the kernel about a pid (alive? its argv), and the tail of a log for an error
message.  Used by the throwaway Ceph cluster (ceph.py) and the VM harness (vm.py).

What does NOT: anything Ceph or QEMU specific (which daemons, their arguments,
when they are ready), and /proc readings for benchmarks (bench/procs.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Mapping

__all__ = ["Daemon", "log_tail", "pid_alive", "cmdline", "stop_group"]

#: how much of a log is read for its tail: enough for any sensible ``lines``
_TAIL_BYTES = 64 * 1024


def log_tail(path: Path | str, lines: int = 40, max_chars: int | None = None) -> str:
    """The last ``lines`` lines of a log (at most ``max_chars`` characters), for
    error messages: never raises, says so when the log is missing or empty."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_BYTES))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    text = "\n".join(data.splitlines()[-lines:])
    if max_chars is not None:
        text = text[-max_chars:]
    return text or "(empty)"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead; another user's process as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` ([] when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Send ``sig`` to the process group ``proc`` leads (it was started with
    start_new_session) and reap ``proc``; SIGKILL the group if ``proc`` is still
    there after ``wait`` seconds.  The whole group, so that what it started
    (e.g. QEMU under vng under timeout) goes too.  Once ``proc`` is reaped its
    pid may belong to somebody else: then nothing is signalled."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # a setuid child may have left our reach
            proc.send_signal(sig)
    try:
        proc.wait(wait)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet: still our child's pid
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Daemon:
    """A long-running child in a session of its own, output to ``stderr_path``,
    writing its own ``log``; ``describe_failure()`` says what became of it with
    the tails of both."""

    def __init__(self, name: str, argv: list[str], log: Path, stderr_path: Path,
                 env: Mapping[str, str], die_with_parent: bool = False):
        self.name = name
        self.log = log
        self.stderr_path = stderr_path
        self.argv = argv
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only from the
        # main thread, where that means the interpreter is gone (even by SIGKILL)
        pre = _die_with_parent if (die_with_parent and threading.current_thread()
                                   is threading.main_thread()) else None
        with open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, env=dict(env),
                                         start_new_session=True, close_fds=True,
                                         preexec_fn=pre)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def describe_failure(self, what: str) -> str:
        rc = self.proc.poll()
        status = ("still running" if rc is None else
                  f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}")
        return (f"{self.name} {what} ({status}); command: {' '.join(self.argv)}\n"
                f"--- tail of {self.log} ---\n{log_tail(self.log)}\n"
                f"--- tail of {self.stderr_path} ---\n{log_tail(self.stderr_path, 15)}")

    def kill(self, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        stop_group(self.proc, sig, wait)
