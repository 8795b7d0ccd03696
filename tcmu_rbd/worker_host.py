"""Several TCMU devices served by one worker process: ``python -m tcmu_rbd.worker --host``.

Why: a worker process per LUN costs each LUN ~7.5 MB private (its interpreter's
copied pages, its allocator, its cluster client); in one process an added LUN
costs its own cluster client and image (~1.7 MB private, host probe) and the
Python objects of its handler.  The daemon puts up to ``luns_per_worker`` LUNs
in one host (settings.py; 1, the default, keeps a process per LUN).

What each device keeps: its own cluster client (its own connections, exclusive
lock and blocklist entry, as tcmu-runner's devices have: a blocklisted or stuck
client is that LUN's alone), its own ring, handler loop thread and failover
thread, and its own control socket, over which it speaks the worker contract
exactly as a worker process does (control.py).  What the devices of a host share:
the process (a crash, or a kill after a device would not stop, restarts all of
them), the interpreter (one core for their Python; plain READ/WRITE run in C
without it) and the malloc arena (worker.limit_malloc_arenas).

Belongs here: receiving devices over the host socket (control.Serve), a thread
per device, and fanning the host's signals and the supervisor's loss out to
every device.  Not here: serving one device (worker.serve_device), the protocol
(control.py), the supervisor's side (worker_process.WorkerHost).
"""

from __future__ import annotations

import functools
import logging
import signal
import socket
import threading

from tcmu_rbd import control

log = logging.getLogger("tcmu_rbd.worker_host")

#: how often the host's main thread looks whether it was told to stop
POLL = 1.0
#: a Serve message, and the descriptors it carries (its socket, its metrics memfd)
MAX_MSG, MAX_FDS = 4096, 4


class WorkerHost:
    """The host's main thread: takes devices off the host socket until EOF, then
    waits for their threads.  ``serve`` is worker.serve_device."""

    def __init__(self, sock: socket.socket, args, supervisor_pid: int | None, serve):
        self.sock, self.args, self.supervisor_pid = sock, args, supervisor_pid
        self._serve_device = serve
        self._lock = threading.Lock()
        self.workers: dict[str, object] = {}       # uio -> worker.Worker, once open
        self.threads: dict[str, threading.Thread] = {}
        self.stopping = False                      # SIGTERM: every device stops

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        self.sock.settimeout(POLL)
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MSG, MAX_FDS)
            except socket.timeout:
                if self.stopping and not self._alive():
                    break
                continue
            except OSError as e:
                log.error("worker host: reading the host socket: %s", e)
                msg, fds = b"", []
            if not msg:
                for fd in fds:
                    socket.close(fd)
                break
            self.add(msg, fds)
        self.supervisor_gone()
        for t in list(self.threads.values()):
            t.join()
        log.info("worker host: every device released, exiting")
        return 0

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self.threads.values())

    def add(self, msg: bytes, fds: list[int]) -> None:
        try:
            if self.stopping:
                raise ValueError("the host is stopping")
            req = control.decode_serve(msg, len(fds))
            old = self.threads.get(req.uio)
            if old is not None and old.is_alive():
                raise ValueError(f"{req.uio} is already served here")
        except ValueError as e:
            log.error("worker host: refused a device: %s", e)
            for fd in fds:
                socket.close(fd)
            return
        ctl = socket.socket(fileno=fds[0])
        t = threading.Thread(target=self._run_device, name=req.uio, daemon=True,
                             args=(req.uio, ctl, fds[1] if req.metrics else None))
        self.threads[req.uio] = t
        t.start()

    def _run_device(self, uio: str, ctl: socket.socket, metrics_fd: int | None) -> None:
        try:
            self._serve_device(uio, ctl, self.args, self.supervisor_pid, metrics_fd,
                               functools.partial(self._started, uio))
        except BaseException:
            log.exception("%s: serving the device failed", uio)
        finally:
            with self._lock:
                self.workers.pop(uio, None)
            ctl.close()             # the supervisor's sign that this device ended

    def _started(self, uio: str, w) -> None:
        with self._lock:
            self.workers[uio] = w
            stop = self.stopping
        if stop:                    # a SIGTERM came while it was opening
            w.on_signal()

    def on_signal(self, signum=None, frame=None) -> None:
        """SIGTERM/SIGINT: the supervisor died (PR_SET_PDEATHSIG) or an operator
        stops the host; each device decides which (Worker.on_signal)."""
        with self._lock:
            self.stopping = True
            workers = list(self.workers.values())
        for w in workers:
            w.on_signal()

    def supervisor_gone(self) -> None:
        """EOF on the host socket: every device still served is blocked and stopped."""
        with self._lock:
            self.stopping = True
            workers = list(self.workers.values())
        for w in workers:
            w.supervisor_lost()
