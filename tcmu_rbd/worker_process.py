"""The supervisor's handle on one device's worker, and on a worker host.

Belongs here: starting a worker as the contract says (control.py), reading
its control socket and relaying its stderr into the log, numbering requests
and answering each one exactly once (answer, timeout or exit), stopping and
killing it, and reporting what it does through three callbacks (ready,
failed, exited).  A device's worker is a process of its own or, with
``luns_per_worker`` > 1, threads of a :class:`WorkerHost` process shared with
other devices (worker_host.py): the same handle, the same contract on the
device's own control socket; its exit is that socket's EOF, and killing it
kills the host with every device there.

Not here: the protocol's messages and framing (control.py), what a worker's
state means for its device and the kernel (supervisor.py), and the worker
itself (worker.py).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import subprocess
import sys
from typing import Callable

from . import control, spawner
from . import settings as settings_mod
from .logs import relayed_level
from .settings import Settings

#: after SIGKILL (or EOF without an exit), how long to wait for the exit
KILL_GRACE = 5.0


def default_worker_command() -> list[str]:
    return [sys.executable, "-m", "tcmu_rbd.worker"]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def worker_args(uio: str, ctl_fd: int, settings: Settings, metrics_fd: int | None) -> list[str]:
    """The worker's command line after the command (worker.parse_args reads it)."""
    return ["--uio", uio, "--ctl-fd", str(ctl_fd),
            "--osd-op-timeout", str(settings.osd_op_timeout),
            "--lock-grace", str(settings.lock_grace),
            ] + ([] if metrics_fd is None else ["--metrics-fd", str(metrics_fd)])


def host_args(ctl_fd: int, settings: Settings) -> list[str]:
    """A worker host's command line after the command."""
    return ["--host", "--ctl-fd", str(ctl_fd), "--osd-op-timeout", str(settings.osd_op_timeout),
            "--lock-grace", str(settings.lock_grace)]


def start_process(command: list[str], args: list[str], settings: Settings, pass_fds: list[int],
                  log) -> tuple[int, "subprocess.Popen | None", int]:
    """A worker (or host) process as the contract says, forked by the daemon's
    spawner (it shares the imports' memory: spawner.py) or else exec'd: its pid,
    its Popen when exec'd, and the read end of its stdout+stderr pipe."""
    cmd = list(command) + args
    env = dict(os.environ)
    if settings.path:
        env[settings_mod.ENV_CONFIG] = settings.path
    env[settings_mod.ENV_LOG_LEVEL] = settings.log_level
    # the worker dies with us (PR_SET_PDEATHSIG; see worker.follow_supervisor)
    env[settings_mod.ENV_SUPERVISOR_PID] = str(os.getpid())
    r, w = os.pipe()
    try:
        proc, pid = None, None
        s = spawner.shared() if command == default_worker_command() else None
        if s is not None:
            try:
                pid = s.spawn(cmd, pass_fds, w, env)
            except OSError as e:
                log.warning("%s; starting the worker with exec", e)
        if pid is None:
            proc = subprocess.Popen(cmd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=w,
                                    stderr=w, env=env, start_new_session=True)
            pid = proc.pid
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    os.set_blocking(r, False)
    return pid, proc, r


def socket_for(kind: int, start: Callable[[int], None]) -> socket.socket:
    """A socket pair whose other end ``start(fd)`` hands to a process (or host):
    our end; theirs is closed here once handed over, or on failure."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    try:
        start(theirs.fileno())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours


def reaped(status: int, proc: "subprocess.Popen | None", ran: bool, log) -> int:
    """A worker's (or host's) exit code from its wait status.  Popen, when exec'd,
    is told (the loop reaped it: Popen must not wait for it); a forked one that died
    before it ran (``ran`` False; its traceback is in the log) means exec from now on."""
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:
        code = status
    if proc is not None:
        proc.returncode = code
    elif code == spawner.SETUP_FAILED and not ran:
        log.error("a forked worker could not be set up (see its traceback): "
                  "workers start with exec from now on")
        spawner.disable()
    return code


class StderrRelay:
    """A worker's stdout+stderr pipe, relayed line by line into ``log`` (an
    sd-daemon ``<N>`` prefix sets the level) until EOF.  ``route(text)``, if
    given, picks the log of each line (a host's: the device a line names)."""

    def __init__(self, fd: int, loop, log, route: Callable[[str], object] | None = None):
        self.fd, self.loop, self.log, self._route = fd, loop, log, route
        self._buf = b""
        self._watch: int | None = loop.add_reader(fd, self.drain)

    def drain(self) -> None:
        if self.fd < 0:
            return
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._flush(final=True)
                self.close()
                return
            self._buf += data
            self._flush()

    def _flush(self, final: bool = False) -> None:
        while b"\n" in self._buf or (final and self._buf):
            line, _, self._buf = self._buf.partition(b"\n")
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                level, text = relayed_level(text)
                (self._route(text) if self._route else self.log).log(level, "worker: %s", text)
        if len(self._buf) > control.MAX_LINE:  # no newline in sight: drop it
            self._buf = b""

    def close(self) -> None:
        if self._watch is not None:
            self.loop.remove(self._watch)
            self._watch = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: ``cb(ok, error, errno)`` of a request
AnswerCallback = Callable[[bool, "str | None", int], None]


class WorkerProcess:
    """One worker process, its control socket and its stderr.

    ``on_ready(w)`` and ``on_failed(w, error, errno)``: the worker's first
    line; ``on_exit(w, exit_code)``: once, after the process was reaped and
    every pending request was answered.  Raises OSError when it cannot be
    started."""

    def __init__(self, command: list[str], uio: str, settings: Settings, loop, log, *,
                 on_ready: Callable[["WorkerProcess"], None],
                 on_failed: Callable[["WorkerProcess", str, int], None],
                 on_exit: Callable[["WorkerProcess", int], None],
                 metrics_fd: int | None = None, host: "WorkerHost | None" = None):
        self.uio = uio
        self.log = log
        self.loop = loop
        self._on_ready, self._on_failed, self._on_exit_cb = on_ready, on_failed, on_exit
        self.ready = False
        self.exited = False
        self.exit_code: int | None = None
        self._first_line_seen = False
        self._ids = 0
        self._pending: dict[int, tuple] = {}  # id -> (op, callback, timer)
        self._decoder = control.LineDecoder()
        self._ctl_watch: int | None = None
        self._kill_timer = None
        self.proc = None
        self._relay: StderrRelay | None = None
        self.host = host
        self._abandoned = False

        def start(fd: int) -> None:
            pass_fds = [fd] + ([] if metrics_fd is None else [metrics_fd])
            if host is not None:
                host.attach(self, control.Serve(uio, metrics_fd is not None), pass_fds)
                self.pid = host.pid
            else:
                self.pid, self.proc, self._errfd = start_process(
                    command, worker_args(uio, fd, settings, metrics_fd), settings, pass_fds, log)
        self._sock = socket_for(socket.SOCK_STREAM, start)
        self._sock.setblocking(False)
        self._ctl_watch = self.loop.add_reader(self._sock.fileno(), self._on_ctl)
        if host is not None:
            self.log.info("served by worker host pid %d", self.pid)
            return
        self._relay = StderrRelay(self._errfd, loop, log)
        self.loop.watch_child(self.pid, self._on_exit)
        self.log.info("worker pid %d started", self.pid)

    # -- requests -----------------------------------------------------------

    def request(self, req: control.Request, timeout: float, cb: AnswerCallback) -> None:
        """Send a request (numbered here); ``cb(ok, error, errno)`` exactly
        once (timeout and worker exit included)."""
        self._ids += 1
        k = self._ids
        req = dataclasses.replace(req, id=k)
        op = req.op

        def on_timeout():
            if self._pending.pop(k, None) is not None:
                cb(False, f"{op}: no answer from the worker within {timeout:.0f} s",
                   errno.ETIMEDOUT)

        timer = self.loop.call_later(timeout, on_timeout)
        self._pending[k] = (op, cb, timer)
        try:
            self._sock.sendall(control.encode(req))
        except OSError as e:
            self._pending.pop(k, None)
            timer.cancel()
            cb(False, f"{op}: cannot reach the worker ({e.strerror})", errno.EIO)

    def stop(self, timeout: float, on_released: Callable[[], None] | None = None) -> None:
        """Ask for a graceful stop; SIGKILL after ``timeout``.  ``on_released()``
        when the worker answers that it gave the device back (before it exits)."""
        if self.exited:
            return
        if not self.ready:
            self.kill()
            return

        def answered(ok, err, code):
            if not ok:
                self.log.warning("stop: %s", err)
            elif on_released is not None:
                on_released()
        self.request(control.Stop(), timeout, answered)
        self.kill_after(timeout)

    def kill_after(self, timeout: float) -> None:
        """SIGKILL unless it exits within ``timeout`` (the first deadline set stays)."""
        if self._kill_timer is None:
            self._kill_timer = self.loop.call_later(timeout, self._kill_after_timeout)

    def _kill_after_timeout(self) -> None:
        if not self.exited:
            self.log.error("worker pid %d did not exit in time; killing it", self.pid)
            self.kill()

    def kill(self) -> None:
        if self.exited:
            return
        if self.host is not None and not self.ready:
            self._abandon()
            return
        if self.host is not None:
            self.host.kill(f"{self.uio} did not answer in time")
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _hosted_eof(self) -> None:
        if not self.exited and not self.host.dying():
            self._exited(0)

    def _abandon(self) -> None:
        """A hosted device not ready yet (still opening its image, which
        client_mount_timeout bounds) is let go of, not killed with its host: its
        socket is closed, so that the thread cleans up after itself once the open
        returns (it holds no ring before).  Reported as an exit, later, as a
        process's exit would be."""
        if self._abandoned:
            return
        self._abandoned = True
        self.log.warning("letting go of the device's thread in worker host pid %d (it ends "
                         "when its image open returns)", self.pid)
        self._unwatch("_ctl_watch")
        try:
            self._sock.close()
        except OSError:
            pass
        self.loop.call_later(0, lambda: self._exited(-signal.SIGKILL))

    # -- control socket -----------------------------------------------------

    def _on_ctl(self) -> None:
        if self._sock.fileno() < 0:
            return
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_ctl()
                return
            for msg in self._decoder.feed(data):
                if isinstance(msg, control.Overlong):
                    self.log.error("worker sent an over-long control line; killing it")
                    self.kill()
                    return
                self._on_message(msg)

    def _on_message(self, msg) -> None:
        if isinstance(msg, (control.Ready, control.Failed)):
            if self._first_line_seen:
                self.log.warning("worker sent unexpected event %r", msg.event)
                return
            self._first_line_seen = True
            if isinstance(msg, control.Ready):
                self.ready = True
                self._on_ready(self)
            else:
                self._on_failed(self, msg.error, msg.errno)
        elif isinstance(msg, control.Answer):
            entry = self._pending.pop(msg.id, None)
            if entry is None:
                self.log.warning("worker answered unknown request id %r", msg.id)
                return
            op, cb, timer = entry
            timer.cancel()
            if msg.ok:
                cb(True, None, 0)
            else:
                cb(False, msg.error or f"{op} failed", msg.errno)
        elif isinstance(msg, control.Invalid):
            self.log.error("worker sent a malformed control line (%s): %.200r", msg.reason,
                           msg.line)
        else:  # a request: only the supervisor sends those
            self.log.warning("worker sent an unrecognised control line: %.200r",
                             control.encode(msg))

    def _close_ctl(self) -> None:
        if self.host is not None and not self.exited:
            # a hosted device's end; when the host died, its exit tells how (a dying
            # process closes its fds a moment before it becomes a zombie)
            self._unwatch("_ctl_watch")
            self.loop.call_later(0.2, self._hosted_eof)
            return
        if not self.exited:
            # normally the exit follows at once; a worker that only closed the
            # socket is unreachable and gets killed
            self.kill_after(KILL_GRACE)
        self._unwatch("_ctl_watch")
        try:
            self._sock.close()
        except OSError:
            pass

    def _unwatch(self, attr: str) -> None:
        source = getattr(self, attr)
        if source is not None:
            setattr(self, attr, None)
            self.loop.remove(source)

    # -- exit -------------------------------------------------------------------

    def _on_exit(self, status: int) -> None:
        self._exited(reaped(status, self.proc, self._first_line_seen, self.log))

    def _exited(self, code: int) -> None:
        """Once: the process exited (or, hosted, the device's thread ended or its
        host exited with ``code``)."""
        if self.exited:
            return
        self.exited = True
        self.exit_code = code
        if self._kill_timer:
            self._kill_timer.cancel()
        # drain what is left
        if not self._abandoned:
            self._on_ctl()
        if self._relay is not None:
            self._relay.drain()
            self._relay.close()
        self._unwatch("_ctl_watch")
        try:
            self._sock.close()
        except OSError:
            pass
        if self.host is not None:
            self.host.detach(self)
        pending, self._pending = self._pending, {}
        for op, cb, timer in pending.values():
            timer.cancel()
            cb(False, f"{op}: the worker exited ({describe_exit(code)})", errno.EIO)
        self._on_exit_cb(self, code)


class WorkerHost:
    """One worker host process (worker_host.py): the devices attached to it,
    sent over its seqpacket host socket; its stderr relayed into ``log``.  Closed
    (its socket shut, so that it exits) once its last device is gone; its exit
    ends every device still attached.  ``on_exit(host)`` after that."""

    def __init__(self, command: list[str], settings: Settings, loop, log, capacity: int,
                 on_exit: Callable[["WorkerHost"], None]):
        self.loop, self.log, self.capacity, self._on_exit_cb = loop, log, capacity, on_exit
        self.devices: list[WorkerProcess] = []
        self.served = 0                       # devices ever attached
        self.exited = self.closed = False
        self.exit_code: int | None = None
        def start(fd: int) -> None:
            self.pid, self.proc, self._errfd = start_process(
                command, host_args(fd, settings), settings, [fd], log)
        self._sock = socket_for(socket.SOCK_SEQPACKET, start)
        self._relay = StderrRelay(self._errfd, loop, log, route=self._log_for)
        loop.watch_child(self.pid, self._on_exit)
        log.info("worker host pid %d started (up to %d LUNs)", self.pid, capacity)

    def _log_for(self, text: str):
        """The log of the device a relayed line names (the worker's lines name
        ``<name>(uioN):``), with its device context; else the host's."""
        for w in self.devices:
            if f"({w.uio}):" in text:
                return w.log
        return self.log

    def has_room(self) -> bool:
        return not (self.exited or self.closed) and len(self.devices) < self.capacity

    def attach(self, w: WorkerProcess, msg: control.Serve, fds: list[int]) -> None:
        """Send a device to the host (OSError when it cannot be reached)."""
        if self.exited or self.closed:
            raise OSError(errno.ESRCH, f"worker host pid {self.pid} is gone")
        socket.send_fds(self._sock, [control.encode_serve(msg)], fds)
        self.devices.append(w)
        self.served += 1

    def detach(self, w: WorkerProcess) -> None:
        if w in self.devices:
            self.devices.remove(w)
        if not self.devices and not self.exited:
            self.close()

    def close(self) -> None:
        """No device left: EOF on its socket lets the host exit."""
        if not self.closed:
            self.closed = True
            self._sock.close()

    def dying(self) -> bool:
        """Exited, or dead and not reaped yet (its devices' EOF can come first)."""
        if self.exited:
            return True
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return True

    def kill(self, why: str) -> None:
        if self.exited:
            return
        self.log.error("%s: killing worker host pid %d and with it %s", why, self.pid,
                       ", ".join(w.uio for w in self.devices) or "no other device")
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _on_exit(self, status: int) -> None:
        code = reaped(status, self.proc, self.served > 0, self.log)
        self.exited = True
        self.exit_code = code
        self._relay.drain()
        self._relay.close()
        self.close()
        if self.devices:
            self.log.error("worker host pid %d exited (%s) serving %s", self.pid,
                           describe_exit(code), ", ".join(w.uio for w in self.devices))
        for w in list(self.devices):
            w._exited(code)
        self._on_exit_cb(self)


class HostPool:
    """Where a device's worker goes: nowhere (None: a process of its own) while
    ``luns_per_worker`` is 1, else a worker host with room, started when none has."""

    def __init__(self, command: list[str], settings: Settings, loop, log,
                 on_exit: Callable[[WorkerHost], None]):
        self.command, self.settings, self.loop, self.log = command, settings, loop, log
        self._on_exit = on_exit
        self.hosts: list[WorkerHost] = []

    def place(self) -> WorkerHost | None:
        n = self.settings.luns_per_worker
        if n <= 1:
            return None
        for h in self.hosts:
            if h.has_room():
                return h
        h = WorkerHost(self.command, self.settings, self.loop, self.log, n,
                       on_exit=self._exited)
        self.hosts.append(h)
        return h

    def serving(self) -> bool:
        return any(h.devices for h in self.hosts)

    def _exited(self, h: WorkerHost) -> None:
        self.hosts.remove(h)
        self._on_exit(h)
