"""Workers forked from a pre-loaded process: a LUN's own process, sharing the imports.

Why: an exec'd worker pays ~17 MB of private memory before it opens its image:
the Python modules it imports and the relocated pages of librbd, librados and
libceph-common (measured: bare Python 4.7 MB private, with the worker's imports
17.5 MB, with its open image 21 MB).  Forked from one process that has done the
imports, a worker shares those pages and adds only its own cluster client and
image (~7 MB at start on the host: 1.3 of its own, 5.5 librados' and librbd's;
serving, it touches more: 10-11.5 MB PSS per added LUN in the VM benchmark, with
one malloc arena per worker: worker.limit_malloc_arenas), and it starts without
importing anything.  Each LUN keeps its own process, so a crash still costs one
LUN a restart, never the others.

How: the supervisor starts the spawner (``python -m tcmu_rbd.spawner``) as
it starts, once; the spawner imports the worker's modules and then only ever
forks, never starting a thread or a cluster client of its own.  For each
worker it forks twice, so that the worker is reparented to the supervisor, a
child subreaper (PR_SET_CHILD_SUBREAPER): the supervisor reaps it, signals it
and the worker follows it (PR_SET_PDEATHSIG) exactly as an exec'd one, and a
spawner that dies takes no worker with it (a new one is started for the next
worker).  The worker gets the file descriptors, environment, session and
command line (``python3 -m tcmu_rbd.worker --uio uioN ...`` in ps) that an
exec'd one would have.  Anything the spawner cannot do falls back to exec.

Belongs here: the spawner process and the supervisor's client of it.  Not
here: what a worker is told (worker_process.py builds the command line and
the fds), the worker itself (worker.py).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from .prctl import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl
from .settings import ENV_SUPERVISOR_PID

log = logging.getLogger("tcmu_rbd.spawner")

#: the spawner's own command line is padded with this many bytes, the room a
#: worker's command line is written into
ROOM = 1024
#: a spawn that takes longer than this is abandoned (the caller execs instead)
TIMEOUT = 20.0
MAX_MSG = 1 << 20
#: a forked worker's exit status when it could not be set up (before the worker ran)
SETUP_FAILED = 127


# ---------------------------------------------------------------- the supervisor's side

class Spawner:
    """The supervisor's client of one spawner process (started by enable(), or
    again on first use after it died)."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tcmu_rbd.spawner", "--fd", str(theirs.fileno()),
                 " " * ROOM], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._sock.settimeout(TIMEOUT)

    def spawn(self, cmd: list[str], pass_fds: list[int], out_fd: int, env: dict) -> int:
        """Start ``cmd`` (``[python, -m, tcmu_rbd.worker, ARGS...]``) with stdin on
        /dev/null, stdout and stderr on out_fd, pass_fds at the same numbers, env,
        a session of its own; returns its pid, a child of ours.  OSError when the
        spawner cannot (the caller execs)."""
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        fds = [out_fd] + list(pass_fds)
        msg = json.dumps({"cmd": cmd, "fds": list(pass_fds), "env": env}).encode()
        try:
            socket.send_fds(self._sock, [msg], fds)
            answer = json.loads(self._sock.recv(MAX_MSG) or b"{}")
        except (OSError, ValueError) as e:
            self.close()        # a new spawner for the next one
            raise OSError("the worker spawner did not answer: %s" % e) from None
        if "pid" not in answer:
            raise OSError(answer.get("error") or "the worker spawner exited")
        return int(answer["pid"])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()      # EOF: the spawner exits
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_shared: Spawner | None = None


def enable() -> bool:
    """Fork workers from a spawner from now on (the daemon's supervisor calls it
    once): makes this process a child subreaper.  False if the kernel refused."""
    global _shared
    if _shared is None and prctl(PR_SET_CHILD_SUBREAPER, 1) == 0:
        _shared = Spawner()
        # started now, so that its imports (~2 CPU s in the lab's VM) are done
        # while the daemon starts, not while the first LUN waits for its worker
        try:
            _shared._start()
        except OSError as e:
            log.warning("the worker spawner did not start (it is tried again for "
                        "the first worker): %s", e)
    return _shared is not None


def shared() -> Spawner | None:
    """The process's spawner, when enable() succeeded."""
    return _shared


def disable() -> None:
    """Stop the spawner (its workers are ours, not its: they go on) and stop
    being a subreaper."""
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None
        prctl(PR_SET_CHILD_SUBREAPER, 0)


# ---------------------------------------------------------------- the spawner process

def set_cmdline(args: list[str]) -> bool:
    """Show ``args`` as this process's command line (/proc/PID/cmdline, ps,
    pgrep -f): written over the original argument area, which the spawner's
    padding made long enough; NUL-filled to its end.  False if it does not fit."""
    with open("/proc/self/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    start, end = int(fields[45]), int(fields[46])      # arg_start, arg_end (proc(5))
    text = b"\0".join(a.encode() for a in args) + b"\0"
    if len(text) > end - start:
        return False
    ctypes.memmove(start, text + b"\0" * (end - start - len(text)), end - start)
    return True


def _worker(sock: socket.socket, req: dict, fds: list[int]) -> None:
    """In the grandchild: become the worker that `req` describes; never returns.
    A failure before the worker runs exits SETUP_FAILED (the supervisor then
    execs its workers)."""
    code = SETUP_FAILED
    try:
        sock.close()
        # the received fds to their numbers in the supervisor, through numbers
        # clear of both (above either set: RLIMIT_NOFILE may be as low as 1024):
        # first all up high, then each down where it belongs
        import fcntl
        base = max(list(fds) + req["fds"]) + 1
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, base) for fd in fds]
        for fd in fds:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        os.dup2(high[0], 1)
        os.dup2(high[0], 2)
        for want, fd in zip(req["fds"], high[1:]):
            os.dup2(fd, want)
        for fd in high:
            os.close(fd)
        os.setsid()
        # the supervisor's environment, changing only what differs from ours (it is
        # ours but for a few variables): rewriting all of os.environ wrote ~0.38 MB
        # of the pages this worker shares with the spawner, this 0.24 (host probe)
        env = req["env"]
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        set_cmdline(req["cmd"])
        # the worker's checks expect the supervisor as parent: it is, once the
        # intermediate child has exited (it exits at once)
        deadline = time.monotonic() + 5
        supervisor = int(req["env"].get(ENV_SUPERVISOR_PID, "0") or 0)
        while supervisor and os.getppid() != supervisor and time.monotonic() < deadline:
            time.sleep(0.001)
        from tcmu_rbd import worker
        code = 1
        code = worker.main(req["cmd"][3:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def _serve_one(sock: socket.socket) -> bool:
    """One request: fork twice, answer the grandchild's pid.  False at EOF."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 64)
    if not msg:
        return False
    try:
        req = json.loads(msg)
        if len(fds) != 1 + len(req["fds"]) or req["cmd"][1:3] != ["-m", "tcmu_rbd.worker"]:
            raise ValueError("a request the spawner does not serve")
        r, w = os.pipe()
        mid = os.fork()
        if mid == 0:                       # the intermediate: fork the worker and go
            os.close(r)
            try:
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    _worker(sock, req, fds)
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(mid, 0)                 # the worker is the supervisor's child now
        with os.fdopen(r, "rb") as f:
            pid = int(f.read() or 0)
        answer = {"pid": pid} if pid > 0 else {"error": "fork failed"}
    except (OSError, ValueError, KeyError, TypeError) as e:
        answer = {"error": "cannot spawn a worker: %s" % e}
    finally:
        for fd in fds:
            os.close(fd)
    sock.send(json.dumps(answer).encode())
    return True


def main(argv=None) -> int:
    import argparse
    import gc
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd.spawner")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("room", nargs="?", help="padding: the room for a worker's command line")
    a = ap.parse_args(argv)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)    # never outlive the supervisor
    sock = socket.socket(fileno=a.fd)
    # what every worker imports, once; no thread, no cluster client here
    import tcmu_rbd.worker  # noqa: F401
    gc.freeze()                            # the imports' objects stay shared after fork
    while _serve_one(sock):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
