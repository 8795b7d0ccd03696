"""The supervisor's handle on one worker process.

Belongs here: starting a worker as the contract says (control.py), reading
its control socket and relaying its stderr into the log, numbering requests
and answering each one exactly once (answer, timeout or exit), stopping and
killing it, and reporting what it does through three callbacks (ready,
failed, exited).

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
                 metrics_fd: int | None = None):
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
        self._errbuf = b""
        self._ctl_watch: int | None = None
        self._err_watch: int | None = None
        self._kill_timer = None

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            cmd = list(command) + worker_args(uio, child.fileno(), settings, metrics_fd)
            env = dict(os.environ)
            if settings.path:
                env[settings_mod.ENV_CONFIG] = settings.path
            env[settings_mod.ENV_LOG_LEVEL] = settings.log_level
            # the worker dies with us (PR_SET_PDEATHSIG; see worker.follow_supervisor)
            env[settings_mod.ENV_SUPERVISOR_PID] = str(os.getpid())
            pass_fds = [child.fileno()] + ([] if metrics_fd is None else [metrics_fd])
            r, w = os.pipe()
            try:
                self.proc = None
                self.pid = self._fork(cmd, pass_fds, w, env) if command == default_worker_command() \
                    else None
                if self.pid is None:
                    self.proc = subprocess.Popen(
                        cmd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                        env=env, start_new_session=True)
                    self.pid = self.proc.pid
            except BaseException:
                os.close(r)
                raise
            finally:
                os.close(w)
        except BaseException:
            parent.close()
            child.close()
            raise
        child.close()
        self._sock = parent
        self._sock.setblocking(False)
        self._errfd = r
        os.set_blocking(r, False)
        self._ctl_watch = self.loop.add_reader(self._sock.fileno(), self._on_ctl)
        self._err_watch = self.loop.add_reader(self._errfd, self._on_stderr)
        self.loop.watch_child(self.pid, self._on_exit)
        self.log.info("worker pid %d started", self.pid)

    def _fork(self, cmd, pass_fds, out_fd, env) -> int | None:
        """The worker forked from the daemon's spawner (spawner.py: it shares the
        imports' memory); None where there is none or it failed: exec."""
        s = spawner.shared()
        if s is None:
            return None
        try:
            return s.spawn(cmd, pass_fds, out_fd, env)
        except OSError as e:
            self.log.warning("%s; starting the worker with exec", e)
            return None

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
        if not self.exited:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

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

    # -- stderr ---------------------------------------------------------------

    def _on_stderr(self) -> None:
        if self._errfd < 0:
            return
        while True:
            try:
                data = os.read(self._errfd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._flush_stderr(final=True)
                self._unwatch("_err_watch")
                os.close(self._errfd)
                self._errfd = -1
                return
            self._errbuf += data
            self._flush_stderr()

    def _flush_stderr(self, final: bool = False) -> None:
        while b"\n" in self._errbuf or (final and self._errbuf):
            line, _, self._errbuf = self._errbuf.partition(b"\n")
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                level, text = relayed_level(text)
                self.log.log(level, "worker: %s", text)
        if len(self._errbuf) > control.MAX_LINE:  # no newline in sight: drop it
            self._errbuf = b""

    # -- exit -------------------------------------------------------------------

    def _on_exit(self, status: int) -> None:
        self.exited = True
        try:
            code = os.waitstatus_to_exitcode(status)
        except ValueError:
            code = status
        self.exit_code = code
        if self.proc is not None:
            self.proc.returncode = code  # reaped by the loop: Popen must not wait for it
        elif code == spawner.SETUP_FAILED and not self._first_line_seen:
            self.log.error("a forked worker could not be set up (see its traceback): "
                           "workers start with exec from now on")
            spawner.disable()
        if self._kill_timer:
            self._kill_timer.cancel()
        # drain what is left
        self._on_ctl()
        self._on_stderr()
        self._unwatch("_ctl_watch")
        self._unwatch("_err_watch")
        try:
            self._sock.close()
        except OSError:
            pass
        if self._errfd >= 0:
            os.close(self._errfd)
            self._errfd = -1
        pending, self._pending = self._pending, {}
        for op, cb, timer in pending.values():
            timer.cancel()
            cb(False, f"{op}: the worker exited ({describe_exit(code)})", errno.EIO)
        self._on_exit_cb(self, code)
