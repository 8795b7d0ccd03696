"""``tcmu-rbd``: the supervisor process.

The supervisor owns the kernel's control channels (TCM-USER netlink, configfs
actions, module parameters) and D-Bus; every TCMU device is served by its own
worker process (``python -m tcmu_rbd.worker``), so LUNs use several cores and a
crashing LUN cannot take the others down.

Worker contract (newline-delimited JSON over an inherited AF_UNIX stream
socket; see :class:`Worker`):

* spawned as ``<worker_command> --uio uioN --ctl-fd FD --osd-op-timeout N``
  (N: the settings' default) with
  ``TCMU_RBD_CONFIG`` (settings file, if any), ``TCMU_RBD_LOG_LEVEL`` and
  ``TCMU_RBD_SUPERVISOR_PID`` (the worker dies with it: PR_SET_PDEATHSIG) in the
  environment, stdin ``/dev/null``, stdout+stderr a pipe the supervisor relays
  into its log (an sd-daemon ``<N>`` prefix sets the level), in its own session;
* worker -> supervisor, first line: ``{"event": "ready"}`` or
  ``{"event": "failed", "error": "<for the operator>"[, "errno": N]}``;
* supervisor -> worker: ``{"id": k, "op": "resize", "size": N}``,
  ``{"id": k, "op": "reconfig", "config": "<dev_config>"}``,
  ``{"id": k, "op": "writecache", "value": 0|1}``, ``{"id": k, "op": "stop"}``;
  answers ``{"id": k, "ok": true}`` / ``{"id": k, "ok": false, "error": "...",
  ["errno": N]}``;
* EOF on the socket (or SIGTERM from PR_SET_PDEATHSIG) means the supervisor is
  gone: block the device (action/block_dev=1), then stop as for "stop".

Restart recovery after a supervisor crash (kill -9): the old workers stop by
themselves (above); any still holding /dev/uioN is stopped by the new supervisor
(SIGTERM, SIGKILL after worker_stop_timeout) before it resets the ring and starts
its own worker (Supervisor._stop_stale_holders).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import netlink as nl
from . import settings as settings_mod
from .settings import Settings, SettingsError

log = logging.getLogger("tcmu_rbd.daemon")

SUBTYPE = "rbd"
RESTART_BACKOFF_BASE = 1.0
#: a worker that stayed ready this long resets the crash backoff
STABLE_AFTER = 60.0
#: after SIGKILL, how long to wait for the exit before giving up on it
KILL_GRACE = 5.0
MAX_LINE = 1 << 20


# =============================================================================
# Paths and kernel access
# =============================================================================


@dataclass
class Paths:
    sysfs: str = "/sys"
    configfs: str = "/sys/kernel/config/target/core"
    proc: str = "/proc"
    lock: str = "/run/tcmu.lock"
    dev: str = "/dev"

    @property
    def uio_class(self) -> str:
        return os.path.join(self.sysfs, "class", "uio")

    @property
    def modparams(self) -> str:
        return os.path.join(self.sysfs, "module", "target_core_user", "parameters")


@dataclass(frozen=True)
class UioName:
    """``tcm-user/<hba>/<name>/<dev_config>`` (the uio name of a TCMU device)."""

    hba: str
    name: str
    dev_config: str

    @property
    def subtype(self) -> str:
        return self.dev_config.split("/", 1)[0]

    @property
    def image(self) -> str:
        """pool[/ns]/image[@snap] for log lines (no options: they may hold paths)."""
        rest = self.dev_config.split("/", 1)[1] if "/" in self.dev_config else ""
        return rest.split(";", 1)[0]


def parse_uio_name(s: str) -> UioName | None:
    parts = s.rstrip("\n").split("/", 3)
    if len(parts) != 4 or parts[0] != "tcm-user" or not parts[1] or not parts[2]:
        return None
    return UioName(parts[1], parts[2], parts[3])


@dataclass(frozen=True)
class Holder:
    """A process holding a /dev/uioN open."""

    pid: int
    argv: list

    def is_worker_of(self, uio: str) -> bool:
        """A tcmu-rbd worker for this device (by the worker contract's
        arguments: ``--uio uioN --ctl-fd FD``), e.g. one left behind by a
        supervisor that was SIGKILLed."""
        a = self.argv
        return "--ctl-fd" in a and any(a[i] == "--uio" and a[i + 1] == uio
                                       for i in range(len(a) - 1))

    def describe(self) -> str:
        return f"pid {self.pid} ({' '.join(self.argv)[:120] or '?'})"


class Kernel:
    """sysfs/configfs/module-parameter access (roots injectable for tests)."""

    def __init__(self, paths: Paths):
        self.paths = paths

    def uio_name(self, uio: str) -> str | None:
        try:
            with open(os.path.join(self.paths.uio_class, uio, "name")) as f:
                return f.read().rstrip("\n")
        except OSError:
            return None

    def list_tcmu_uios(self) -> list[tuple[str, UioName]]:
        try:
            entries = os.listdir(self.paths.uio_class)
        except OSError:
            return []
        out = []
        for e in entries:
            if not e.startswith("uio") or not e[3:].isdigit():
                continue
            name = self.uio_name(e)
            info = parse_uio_name(name) if name else None
            if info:
                out.append((e, info))
        return sorted(out, key=lambda t: int(t[0][3:]))

    def dev_dir(self, info: UioName) -> str:
        return os.path.join(self.paths.configfs, f"user_{info.hba}", info.name)

    def action(self, info: UioName, action: str, value: int) -> bool:
        path = os.path.join(self.dev_dir(info), "action", action)
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            return True
        except OSError as e:
            log.warning("device=%s: cannot write %d to %s: %s", info.name, value, path,
                        e.strerror)
            return False

    def modparam(self, name: str, value: int) -> bool | None:
        """Write a target_core_user parameter; None when it does not exist."""
        path = os.path.join(self.paths.modparams, name)
        if not os.path.exists(path):
            return None
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            return True
        except OSError as e:
            log.warning("cannot write %d to %s: %s", value, path, e.strerror)
            return False

    def uio_holders(self, uio: str) -> list["Holder"]:
        """Processes (other than us) that have /dev/<uio> open: found through
        /proc/<pid>/fd.  Zombies hold nothing and are not listed."""
        target = os.path.join(self.paths.dev, uio)
        me = os.getpid()
        out = []
        try:
            pids = [int(e) for e in os.listdir(self.paths.proc) if e.isdigit()]
        except OSError:
            return []
        for pid in pids:
            if pid == me:
                continue
            fd_dir = os.path.join(self.paths.proc, str(pid), "fd")
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) == target:
                        break
                except OSError:
                    continue
            else:
                continue
            try:
                with open(os.path.join(self.paths.proc, str(pid), "cmdline"), "rb") as f:
                    argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
            except OSError:
                argv = []
            out.append(Holder(pid, argv))
        return out

    def module_loaded(self) -> bool:
        return os.path.isdir(os.path.join(self.paths.sysfs, "module", "target_core_user"))


# =============================================================================
# Loop adapter (GLib: dbus-python's only main-loop integration)
# =============================================================================


class Timer:
    def __init__(self, loop: "GLibLoop", delay: float, cb):
        from gi.repository import GLib

        self._GLib = GLib
        self.active = True

        def fire():
            self.active = False
            cb()
            return False

        self.id = GLib.timeout_add(max(0, int(delay * 1000)), fire)

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._GLib.source_remove(self.id)


class GLibLoop:
    def __init__(self):
        from gi.repository import GLib

        self.GLib = GLib
        self.ml = GLib.MainLoop()

    def add_reader(self, fd: int, cb) -> int:
        G = self.GLib
        cond = G.IOCondition.IN | G.IOCondition.HUP | G.IOCondition.ERR

        def fire(_fd, _cond):
            cb()
            return True

        return G.unix_fd_add_full(G.PRIORITY_DEFAULT, fd, cond, fire)

    def remove(self, source_id: int) -> None:
        self.GLib.source_remove(source_id)

    def call_later(self, delay: float, cb) -> Timer:
        return Timer(self, delay, cb)

    def watch_child(self, pid: int, cb) -> None:
        self.GLib.child_watch_add(self.GLib.PRIORITY_DEFAULT, pid,
                                  lambda _pid, status: cb(status))

    def add_signal(self, signum: int, cb) -> None:
        def fire():
            cb()
            return True

        self.GLib.unix_signal_add(self.GLib.PRIORITY_HIGH, signum, fire)

    def run(self) -> None:
        self.ml.run()

    def stop(self) -> None:
        self.ml.quit()

    def run_until(self, predicate, timeout: float) -> bool:
        """Iterate until predicate() (tests)."""
        ctx = self.ml.get_context()
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            ctx.iteration(False) or time.sleep(0.005)
        return True


# =============================================================================
# Logging
# =============================================================================

_SECRET_OPTS = ("key", "secret", "password", "passwd", "token")


def redact(dev_config: str) -> str:
    """A dev_config with secret-looking option values replaced (never log a
    key; keyring *paths* are fine)."""
    parts = dev_config.split(";")
    out = [parts[0]]
    for opt in parts[1:]:
        k, sep, v = opt.partition("=")
        kl = k.strip().lower()
        if sep and kl != "keyring" and any(s in kl for s in _SECRET_OPTS):
            out.append(f"{k}=***")
        else:
            out.append(opt)
    return ";".join(out)


class DevLog(logging.LoggerAdapter):
    """Per-device log lines: ``device=<name> uio=<uioN> image=<pool/image>: ...``."""

    def __init__(self, logger, uio: str, info: UioName | None):
        ctx = f"uio={uio}"
        if info:
            ctx = f"device={info.name} {ctx} image={info.image}"
        super().__init__(logger, {"ctx": ctx})

    def process(self, msg, kwargs):
        return f"{self.extra['ctx']}: {msg}", kwargs


class _FileReopener:
    """Holds the handler of a log file so SIGHUP can reopen it (logrotate)."""

    handler: logging.FileHandler | None = None

    @classmethod
    def reopen(cls) -> None:
        h = cls.handler
        if h is None:
            return
        h.acquire()
        try:
            if h.stream:
                h.stream.close()
            h.stream = h._open()
        finally:
            h.release()


def setup_logging(s: Settings) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    _FileReopener.handler = None
    target = s.log_target
    if target == "syslog":
        h = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        h.setFormatter(logging.Formatter("tcmu-rbd[%(process)d]: %(levelname)s %(message)s"))
    elif target == "stderr":
        h = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
            # under systemd: the journal stamps time; <N> carries the priority
            h.setFormatter(settings_mod._PrioFormatter("%(levelname)s %(message)s"))
        else:
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        h = logging.FileHandler(target, encoding="utf-8", delay=False)
        h.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s"))
        _FileReopener.handler = h
    root.addHandler(h)
    root.setLevel(s.log_level_no)


def reopen_logs() -> None:
    _FileReopener.reopen()
    log.info("log reopened")


# =============================================================================
# Workers
# =============================================================================


def default_worker_command() -> list[str]:
    return [sys.executable, "-m", "tcmu_rbd.worker"]


class Worker:
    """One worker process and its control socket."""

    def __init__(self, sup: "Supervisor", dev: "Device"):
        self.sup = sup
        self.dev = dev
        self.log = dev.log
        self.loop = sup.loop
        self.ready = False
        self.exited = False
        self.exit_code: int | None = None
        self._ids = 0
        self._pending: dict[int, tuple] = {}  # id -> (op, callback, timer)
        self._buf = b""
        self._errbuf = b""
        self._watches: list[int] = []
        self._kill_timer: Timer | None = None
        self.first_line_seen = False

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            cmd = list(sup.worker_command) + [
                "--uio", dev.uio, "--ctl-fd", str(child.fileno()),
                "--osd-op-timeout", str(sup.settings.osd_op_timeout),
            ]
            env = dict(os.environ)
            if sup.settings.path:
                env[settings_mod.ENV_CONFIG] = sup.settings.path
            env[settings_mod.ENV_LOG_LEVEL] = sup.settings.log_level
            # the worker dies with us (PR_SET_PDEATHSIG; see worker.follow_supervisor)
            env[settings_mod.ENV_SUPERVISOR_PID] = str(os.getpid())
            r, w = os.pipe()
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    pass_fds=[child.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=w,
                    stderr=w,
                    env=env,
                    start_new_session=True,
                )
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
        self.sock = parent
        self.sock.setblocking(False)
        self.errfd = r
        os.set_blocking(r, False)
        self.pid = self.proc.pid
        self._watches.append(self.loop.add_reader(self.sock.fileno(), self._on_ctl))
        self._watches.append(self.loop.add_reader(self.errfd, self._on_stderr))
        self.loop.watch_child(self.pid, self._on_exit)
        self.log.info("worker pid %d started", self.pid)

    # -- I/O ----------------------------------------------------------------

    def _on_ctl(self) -> None:
        if self.sock.fileno() < 0:
            return
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_ctl()
                return
            self._buf += data
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.strip():
                    self._on_line(line)
            if len(self._buf) > MAX_LINE:
                self.log.error("worker sent an over-long control line; killing it")
                self._buf = b""
                self.kill()
                return

    def _close_ctl(self) -> None:
        if not self.exited:
            # normally the exit follows at once; a worker that only closed the
            # socket is unreachable and gets killed
            self._arm_kill(KILL_GRACE)
        if self._watches:
            self.loop.remove(self._watches.pop(0))
        try:
            self.sock.close()
        except OSError:
            pass

    def _on_stderr(self) -> None:
        if self.errfd < 0:
            return
        while True:
            try:
                data = os.read(self.errfd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._flush_stderr(final=True)
                if self._watches:
                    self.loop.remove(self._watches.pop())
                os.close(self.errfd)
                self.errfd = -1
                return
            self._errbuf += data
            self._flush_stderr()

    def _flush_stderr(self, final: bool = False) -> None:
        while b"\n" in self._errbuf or (final and self._errbuf):
            line, _, self._errbuf = self._errbuf.partition(b"\n")
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                level = logging.INFO
                if len(text) > 2 and text[0] == "<" and text[2] == ">" and text[1].isdigit():
                    level = {0: 50, 1: 50, 2: 50, 3: 40, 4: 30, 5: 20, 6: 20, 7: 10}[int(text[1])]
                    text = text[3:]
                else:  # Python's default formats: "... ERROR ..." / "ERROR:name:..."
                    head = text[:100]
                    for name, lv in _LEVEL_WORDS:
                        if f" {name} " in f" {head} " or head.startswith(name + ":"):
                            level = lv
                            break
                self.log.log(level, "worker: %s", text)
        if len(self._errbuf) > MAX_LINE:
            self._errbuf = b""

    def _on_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self.log.error("worker sent a malformed control line (%s): %.200r", e, line)
            return
        if "event" in msg:
            ev = msg["event"]
            if not self.first_line_seen:
                self.first_line_seen = True
                if ev == "ready":
                    self.ready = True
                    self.dev.sup._worker_ready(self.dev, self)
                    return
                if ev == "failed":
                    err = str(msg.get("error") or "worker failed without a message")
                    code = _errno_of(msg, errno.ENOENT)
                    self.dev.sup._worker_failed(self.dev, self, err, code)
                    return
            self.log.warning("worker sent unexpected event %r", ev)
            return
        if "id" in msg:
            entry = self._pending.pop(msg["id"], None)
            if entry is None:
                self.log.warning("worker answered unknown request id %r", msg["id"])
                return
            op, cb, timer = entry
            timer.cancel()
            if msg.get("ok") is True:
                cb(True, None, 0)
            else:
                cb(False, str(msg.get("error") or f"{op} failed"), _errno_of(msg, errno.EIO))
            return
        self.log.warning("worker sent an unrecognised control line: %.200r", line)

    # -- requests -----------------------------------------------------------

    def request(self, op: str, params: dict, timeout: float, cb) -> None:
        """Send a request; ``cb(ok, error, errno)`` exactly once (timeout and
        worker exit included)."""
        self._ids += 1
        k = self._ids
        msg = {"id": k, "op": op, **params}

        def on_timeout():
            if self._pending.pop(k, None) is not None:
                cb(False, f"{op}: no answer from the worker within {timeout:.0f} s",
                   errno.ETIMEDOUT)

        timer = self.loop.call_later(timeout, on_timeout)
        self._pending[k] = (op, cb, timer)
        try:
            self.sock.sendall((json.dumps(msg) + "\n").encode())
        except OSError as e:
            self._pending.pop(k, None)
            timer.cancel()
            cb(False, f"{op}: cannot reach the worker ({e.strerror})", errno.EIO)

    def stop(self, timeout: float) -> None:
        """Ask for a graceful stop; SIGKILL after ``timeout``."""
        if self.exited:
            return
        if not self.ready:
            self.kill()
            return
        self.request("stop", {}, timeout, lambda ok, err, code: None if ok else
                     self.log.warning("stop: %s", err))
        self._arm_kill(timeout)

    def _arm_kill(self, timeout: float) -> None:
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

    def _on_exit(self, status: int) -> None:
        self.exited = True
        try:
            code = os.waitstatus_to_exitcode(status)
        except ValueError:
            code = status
        self.exit_code = code
        self.proc.returncode = code
        if self._kill_timer:
            self._kill_timer.cancel()
        # drain what is left
        self._on_ctl()
        self._on_stderr()
        for w in self._watches:
            self.loop.remove(w)
        self._watches = []
        try:
            self.sock.close()
        except OSError:
            pass
        if self.errfd >= 0:
            os.close(self.errfd)
            self.errfd = -1
        pending, self._pending = self._pending, {}
        for op, cb, timer in pending.values():
            timer.cancel()
            cb(False, f"{op}: the worker exited ({describe_exit(code)})", errno.EIO)
        self.sup._worker_exited(self.dev, self, code)


_LEVEL_WORDS = (("CRITICAL", logging.CRITICAL), ("ERROR", logging.ERROR),
                ("WARNING", logging.WARNING), ("DEBUG", logging.DEBUG), ("INFO", logging.INFO))


def _errno_of(msg: dict, default: int) -> int:
    v = msg.get("errno")
    if isinstance(v, int) and not isinstance(v, bool) and v != 0:
        return abs(v)
    return default


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# =============================================================================
# Supervisor
# =============================================================================

STARTING, READY, BACKOFF, STOPPING = "starting", "ready", "backoff", "stopping"


@dataclass
class Pending:
    """A kernel event waiting for its *_DONE."""

    event: nl.TcmuEvent
    deadline: Timer | None = None


@dataclass
class Device:
    sup: "Supervisor"
    uio: str
    info: UioName | None
    log: DevLog = None
    worker: Worker | None = None
    state: str = STARTING
    pending: Pending | None = None
    blocked: bool = False  # we wrote block_dev=1 and have not unblocked
    failures: int = 0
    ready_since: float = 0.0
    restart_timer: Timer | None = None
    start_timer: Timer | None = None
    initial: bool = False  # part of start-up recovery
    settled_cb: list = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        netlink,
        kernel: Kernel,
        loop: GLibLoop,
        worker_command: list[str] | None = None,
    ):
        self.settings = settings
        self.netlink = netlink
        self.kernel = kernel
        self.loop = loop
        self.worker_command = worker_command or settings.worker_command or default_worker_command()
        self.devices: dict[str, Device] = {}
        self.zombies: set[Worker] = set()  # workers of devices already forgotten
        self.shutting_down = False
        self._shutdown_cb = None
        self._recovering: set[str] = set()
        self._recovered_cb = None
        self._nl_watch = None
        self.replies: list[tuple[str, str, int]] = []  # (uio, reply name, status) history

    # -- start-up -------------------------------------------------------------

    def attach_netlink(self) -> None:
        self._nl_watch = self.loop.add_reader(self.netlink.fileno(), self.on_netlink)

    def recover_existing(self, on_done=None) -> int:
        """Restart recovery: serve every existing tcm-user uio device of our
        subtype (block_dev=1, reset_ring=1, worker, ready, block_dev=0).
        ``on_done`` runs once every one is ready or has failed once."""
        self._recovered_cb = on_done
        n = 0
        for uio, info in self.kernel.list_tcmu_uios():
            if info.subtype != SUBTYPE:
                log.warning("uio=%s device=%s has subtype %r, which tcmu-rbd does not serve",
                            uio, info.name, info.subtype)
                continue
            if uio in self.devices:
                continue
            dev = self._new_device(uio, info)
            dev.initial = True
            self._recovering.add(uio)
            dev.log.info("recovering existing device (config %s)", redact(info.dev_config))
            self._spawn(dev, recovery=True)
            n += 1
        self._check_recovered()
        return n

    def _check_recovered(self) -> None:
        if not self._recovering and self._recovered_cb:
            cb, self._recovered_cb = self._recovered_cb, None
            cb()

    def _settled(self, dev: Device) -> None:
        if dev.initial:
            dev.initial = False
            self._recovering.discard(dev.uio)
            self._check_recovered()

    def _new_device(self, uio: str, info: UioName | None) -> Device:
        dev = Device(self, uio, info)
        dev.log = DevLog(log, uio, info)
        self.devices[uio] = dev
        return dev

    # -- netlink ----------------------------------------------------------------

    def on_netlink(self) -> None:
        try:
            events = self.netlink.recv_events()
        except OSError as e:
            log.error("netlink receive failed: %s", e)
            return
        for ev in events:
            if ev == nl.TcmuNetlink.OVERRUN:
                self.resync()
                continue
            try:
                self.handle_event(ev)
            except Exception:
                log.exception("internal error handling %s for uio%s", ev.name, ev.minor)
                self._reply(ev, -errno.EIO)

    def _reply(self, ev: nl.TcmuEvent, status: int, dev: Device | None = None) -> None:
        if dev is not None and dev.pending is not None and dev.pending.event is ev:
            if dev.pending.deadline:
                dev.pending.deadline.cancel()
            dev.pending = None
        name = nl.CMD_NAMES.get(ev.reply_cmd, "?")
        self.replies.append((ev.uio or "?", name, status))
        lg = dev.log if dev else log
        if ev.version < 2 or ev.device_id is None:
            lg.debug("%s not sent (netlink v%d, device id %s)", name, ev.version, ev.device_id)
            return
        if status:
            lg.info("%s status %d (%s)", name, status, os.strerror(-status))
        else:
            lg.info("%s status 0", name)
        try:
            self.netlink.send_reply(ev.reply_cmd, ev.device_id, status)
        except OSError as e:
            lg.error("cannot send %s: %s", name, e)

    def _set_pending(self, dev: Device, ev: nl.TcmuEvent, bound: float) -> None:
        """Remember the event and guarantee a reply within ``bound`` seconds."""
        p = Pending(ev)

        def expire():
            if dev.pending is p:
                dev.log.error("%s not answered within %.0f s: replying ETIMEDOUT", ev.name, bound)
                self._reply(ev, -errno.ETIMEDOUT, dev)

        p.deadline = self.loop.call_later(bound, expire)
        dev.pending = p

    def handle_event(self, ev: nl.TcmuEvent) -> None:
        if ev.reply_cmd is None:
            return
        if ev.device_id is None and ev.version >= 2:
            log.error("%s without DEVICE_ID (uio%s): cannot answer, dropped", ev.name, ev.minor)
            return
        if ev.error or ev.minor is None or ev.device is None:
            log.error("malformed %s (device id %s): %s", ev.name, ev.device_id,
                      ev.error or "MINOR or DEVICE missing")
            self._reply(ev, -errno.EINVAL)
            return
        uio = ev.uio
        if ev.cmd == nl.TCMU_CMD_ADDED_DEVICE:
            self._on_added(uio, ev)
        elif ev.cmd == nl.TCMU_CMD_REMOVED_DEVICE:
            self._on_removed(uio, ev)
        else:
            self._on_reconfig(uio, ev)

    def _on_added(self, uio: str, ev: nl.TcmuEvent) -> None:
        info = parse_uio_name(ev.device)
        if info is None:
            log.error("uio=%s: ADDED_DEVICE with unparsable name %r", uio, ev.device)
            self._reply(ev, -errno.EINVAL)
            return
        if info.subtype != SUBTYPE:
            # tcmu-runner answers -ENOENT for subtypes it has no handler for
            log.warning("uio=%s device=%s: subtype %r is not served by tcmu-rbd", uio,
                        info.name, info.subtype)
            self._reply(ev, -errno.ENOENT)
            return
        if self.shutting_down:
            self._reply(ev, -errno.ESHUTDOWN)
            return
        old = self.devices.get(uio)
        if old is not None:
            old.log.warning("new device on %s while the old one is still known: dropping it", uio)
            self._forget(old, kill=True)
        dev = self._new_device(uio, info)
        dev.log.info("ADDED_DEVICE (config %s)", redact(info.dev_config))
        self._set_pending(dev, ev, self.settings.worker_start_timeout + KILL_GRACE + 5)
        self._spawn(dev, recovery=False)

    def _on_removed(self, uio: str, ev: nl.TcmuEvent) -> None:
        dev = self.devices.get(uio)
        if dev is None:
            log.info("uio=%s: REMOVED_DEVICE for a device we do not serve", uio)
            self._reply(ev, 0)
            return
        dev.log.info("REMOVED_DEVICE")
        if dev.pending is not None:  # cannot happen with a sane kernel
            self._reply(dev.pending.event, -errno.ECANCELED, dev)
        self._cancel_timers(dev)
        w = dev.worker
        if w is None or w.exited:
            self._drop(dev)
            self._reply(ev, 0)
            return
        dev.state = STOPPING
        self._set_pending(dev, ev, self.settings.worker_stop_timeout + KILL_GRACE + 5)
        w.stop(self.settings.worker_stop_timeout)

    def _on_reconfig(self, uio: str, ev: nl.TcmuEvent) -> None:
        dev = self.devices.get(uio)
        if dev is None:
            log.error("uio=%s: RECONFIG_DEVICE for an unknown device", uio)
            self._reply(ev, -errno.ENODEV)
            return
        if ev.dev_cfg is not None:
            op, params, what = "reconfig", {"config": ev.dev_cfg}, f"dev_config {redact(ev.dev_cfg)}"
        elif ev.dev_size is not None:
            op, params, what = "resize", {"size": ev.dev_size}, f"size {ev.dev_size}"
        elif ev.writecache is not None:
            op, params, what = "writecache", {"value": ev.writecache}, f"write cache {ev.writecache}"
        else:
            dev.log.error("RECONFIG_DEVICE without a known attribute")
            self._reply(ev, -errno.EOPNOTSUPP)
            return
        dev.log.info("RECONFIG_DEVICE %s", what)
        if dev.state != READY or dev.worker is None or dev.pending is not None:
            dev.log.error("cannot %s now: the worker is %s", op, dev.state)
            self._reply(ev, -errno.EBUSY)
            return
        self._set_pending(dev, ev, self.settings.request_timeout + 5)

        def done(ok, err, code):
            if dev.pending is None or dev.pending.event is not ev:
                return
            if ok:
                if op == "reconfig" and dev.info is not None:
                    dev.info = UioName(dev.info.hba, dev.info.name, ev.dev_cfg)
                self._reply(ev, 0, dev)
            else:
                dev.log.error("%s failed: %s", op, err)
                self._reply(ev, -code, dev)

        dev.worker.request(op, params, self.settings.request_timeout, done)

    # -- worker life cycle ---------------------------------------------------

    def _spawn(self, dev: Device, recovery: bool) -> None:
        dev.state = STARTING
        if recovery and dev.info is not None:
            if not dev.blocked:
                dev.blocked = self.kernel.action(dev.info, "block_dev", 1)
            if self._stop_stale_holders(dev):
                return  # _start_worker runs once they let go of the device
            self.kernel.action(dev.info, "reset_ring", 1)
        self._start_worker(dev)

    def _stop_stale_holders(self, dev: Device) -> bool:
        """Restart recovery after a crash of the supervisor: workers of the
        dead supervisor may still hold /dev/uioN (only one open is allowed).
        They normally stop by themselves (PR_SET_PDEATHSIG -> SIGTERM, or EOF
        on their control socket: see worker.follow_supervisor), but may still
        be finishing in-flight I/O, or be stuck in librbd: wait for them,
        SIGTERM them, SIGKILL them after worker_stop_timeout.  Only then reset
        the ring and start our worker (reset_ring while the old worker still
        completes commands would let it complete commands of the new ring).
        Other programs holding the device are not touched: the worker's open
        fails with EBUSY and is retried with backoff.  Returns True when the
        worker start was deferred."""
        ours = {w.pid for w in self.zombies}
        ours.update(d.worker.pid for d in self.devices.values() if d.worker is not None)
        holders = [h for h in self.kernel.uio_holders(dev.uio) if h.pid not in ours]
        for h in holders:
            if not h.is_worker_of(dev.uio):
                dev.log.error("/dev/%s is held by %s, which is not a tcmu-rbd worker: the "
                              "device cannot be served until it lets go", dev.uio, h.describe())
        stale = {h.pid for h in holders if h.is_worker_of(dev.uio)}
        if not stale:
            return False
        for pid in stale:
            dev.log.warning("stale worker pid %d of a previous supervisor still holds /dev/%s: "
                            "stopping it before recovery", pid, dev.uio)
            _signal(pid, signal.SIGTERM)
        kill_at = time.monotonic() + self.settings.worker_stop_timeout
        give_up_at = kill_at + KILL_GRACE
        killed: set[int] = set()

        def poll():
            dev.start_timer = None
            if self.devices.get(dev.uio) is not dev or dev.state != STARTING \
                    or self.shutting_down:
                return
            left = {h.pid for h in self.kernel.uio_holders(dev.uio)} & stale
            now = time.monotonic()
            if left and now < give_up_at:
                if now >= kill_at:
                    for pid in left - killed:
                        dev.log.error("stale worker pid %d did not stop in time; killing it", pid)
                        _signal(pid, signal.SIGKILL)
                        killed.add(pid)
                dev.start_timer = self.loop.call_later(0.2, poll)
                return
            if left:
                dev.log.error("stale worker(s) %s still hold /dev/%s", sorted(left), dev.uio)
            else:
                dev.log.info("stale worker(s) gone: recovering the device")
            if dev.info is not None:
                self.kernel.action(dev.info, "reset_ring", 1)
            self._start_worker(dev)

        dev.start_timer = self.loop.call_later(0.1, poll)
        return True

    def _start_worker(self, dev: Device) -> None:
        try:
            dev.worker = Worker(self, dev)
        except OSError as e:
            dev.worker = None
            dev.log.error("cannot start a worker: %s", e)
            self._start_failed(dev, f"cannot start a worker: {e}", errno.EIO)
            return
        dev.start_timer = self.loop.call_later(
            self.settings.worker_start_timeout, lambda: self._start_timeout(dev)
        )

    def _start_timeout(self, dev: Device) -> None:
        w = dev.worker
        if dev.state != STARTING or w is None:
            return
        msg = f"worker not ready within {self.settings.worker_start_timeout:.0f} s"
        dev.log.error("%s; killing pid %d", msg, w.pid)
        w.kill()
        self._start_failed(dev, msg, errno.ETIMEDOUT)

    def _worker_ready(self, dev: Device, w: Worker) -> None:
        if dev.worker is not w or dev.state != STARTING:
            return
        if dev.start_timer:
            dev.start_timer.cancel()
        dev.state = READY
        dev.ready_since = time.monotonic()
        if dev.blocked and dev.info is not None:
            self.kernel.action(dev.info, "block_dev", 0)
            dev.blocked = False
        dev.log.info("worker pid %d ready", w.pid)
        if dev.pending and dev.pending.event.cmd == nl.TCMU_CMD_ADDED_DEVICE:
            self._reply(dev.pending.event, 0, dev)
        self._settled(dev)

    def _worker_failed(self, dev: Device, w: Worker, error: str, code: int) -> None:
        if dev.worker is not w or dev.state != STARTING:
            dev.log.error("worker: %s", error)
            return
        # The worker's message is how the operator learns why (missing image...)
        dev.log.error("worker failed to start: %s", error)
        self._start_failed(dev, error, code)

    def _start_failed(self, dev: Device, error: str, code: int) -> None:
        if dev.start_timer:
            dev.start_timer.cancel()
        w, dev.worker = dev.worker, None
        if w is not None and not w.exited:
            self.zombies.add(w)  # it should exit by itself; killed otherwise
            w._arm_kill(KILL_GRACE)
        if dev.pending and dev.pending.event.cmd == nl.TCMU_CMD_ADDED_DEVICE:
            # a new device: the kernel fails the enable; it is not ours any more
            self._reply(dev.pending.event, -code, dev)
            self._forget(dev, kill=False)
            return
        self._settled(dev)
        if self.shutting_down:
            self._forget(dev, kill=True)
            return
        self._schedule_restart(dev, error)

    def _worker_exited(self, dev: Device, w: Worker, code: int) -> None:
        self.zombies.discard(w)
        if dev.worker is not w:
            self._check_shutdown()
            return
        dev.worker = None
        if dev.state == STOPPING:
            dev.log.info("worker pid %d stopped (%s)", w.pid, describe_exit(code))
            self._drop(dev)
            if dev.pending is not None:
                ev = dev.pending.event
                self._reply(ev, 0 if ev.cmd == nl.TCMU_CMD_REMOVED_DEVICE else -errno.ESHUTDOWN,
                            dev)
            self._check_shutdown()
            return
        if dev.state == STARTING:
            dev.log.error("worker pid %d exited before it was ready (%s)", w.pid,
                          describe_exit(code))
            self._start_failed(dev, f"worker exited before it was ready ({describe_exit(code)})",
                               errno.EIO)
            return
        if dev.state == READY:
            dev.log.error("worker pid %d died (%s): blocking the device and restarting it",
                          w.pid, describe_exit(code))
            if dev.pending is not None:
                self._reply(dev.pending.event, -errno.EIO, dev)
            if dev.info is not None and not dev.blocked:
                dev.blocked = self.kernel.action(dev.info, "block_dev", 1)
            if time.monotonic() - dev.ready_since > STABLE_AFTER:
                dev.failures = 0
            self._schedule_restart(dev, describe_exit(code))

    def _schedule_restart(self, dev: Device, why: str) -> None:
        delay = min(self.settings.restart_backoff_max, RESTART_BACKOFF_BASE * (2 ** dev.failures))
        dev.failures += 1
        dev.state = BACKOFF
        dev.log.warning("restarting the worker in %.0f s (attempt %d; last: %s)", delay,
                        dev.failures, why)

        def restart():
            dev.restart_timer = None
            if self.devices.get(dev.uio) is not dev or self.shutting_down:
                return
            if dev.info is not None and self.kernel.uio_name(dev.uio) is None:
                dev.log.warning("device is gone from sysfs; forgetting it")
                self._drop(dev)
                return
            self._spawn(dev, recovery=True)

        dev.restart_timer = self.loop.call_later(delay, restart)

    def _cancel_timers(self, dev: Device) -> None:
        for t in (dev.restart_timer, dev.start_timer):
            if t:
                t.cancel()
        dev.restart_timer = dev.start_timer = None

    def _drop(self, dev: Device) -> None:
        self._cancel_timers(dev)
        if self.devices.get(dev.uio) is dev:
            del self.devices[dev.uio]
        self._settled(dev)

    def _forget(self, dev: Device, kill: bool) -> None:
        """Drop a device; its worker (if any) is stopped (or killed) and
        reaped in the background."""
        w = dev.worker
        dev.worker = None
        if dev.pending is not None:
            self._reply(dev.pending.event, -errno.ECANCELED, dev)
        self._drop(dev)
        if w is not None and not w.exited:
            self.zombies.add(w)
            if kill:
                w.kill()
            else:
                w.stop(self.settings.worker_stop_timeout)

    # -- resync after lost events ---------------------------------------------

    def resync(self) -> None:
        """Kernel events were lost: fail whatever the kernel may still wait
        for (reset_netlink) and re-read sysfs."""
        log.error("resynchronising with the kernel after lost netlink events")
        self.kernel.modparam("reset_netlink", 1)
        present = dict(self.kernel.list_tcmu_uios())
        for uio, dev in list(self.devices.items()):
            if uio not in present or (dev.info and present[uio].name != dev.info.name):
                dev.log.warning("device vanished while events were lost")
                self._forget(dev, kill=False)
        for uio, info in present.items():
            if info.subtype == SUBTYPE and uio not in self.devices:
                dev = self._new_device(uio, info)
                dev.log.info("found a device whose ADDED_DEVICE was lost: recovering it")
                self._spawn(dev, recovery=True)

    # -- shutdown ---------------------------------------------------------------

    def shutdown(self, on_done) -> None:
        """Stop all workers gracefully; devices are left blocked (block_dev=1)
        so I/O queues in the kernel until the next start recovers them."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._shutdown_cb = on_done
        log.info("shutting down: stopping %d worker(s)", len(self.devices))
        if self._nl_watch is not None:
            # keep answering events while workers stop: never leave the kernel waiting
            pass
        for dev in list(self.devices.values()):
            self._cancel_timers(dev)
            if dev.pending is not None:
                self._reply(dev.pending.event, -errno.ESHUTDOWN, dev)
            w = dev.worker
            if w is None or w.exited:
                self._drop(dev)
                continue
            if dev.state == READY and dev.info is not None and not dev.blocked:
                dev.blocked = self.kernel.action(dev.info, "block_dev", 1)
            dev.state = STOPPING
            w.stop(self.settings.worker_stop_timeout)
        for w in self.zombies:
            w._arm_kill(KILL_GRACE)
        self.loop.call_later(self.settings.worker_stop_timeout + 2 * KILL_GRACE, self._finish_shutdown)
        self._check_shutdown()

    def _check_shutdown(self) -> None:
        if self.shutting_down and not self.devices and not self.zombies:
            self._finish_shutdown()

    def _finish_shutdown(self) -> None:
        cb, self._shutdown_cb = self._shutdown_cb, None
        if cb:
            if self.devices or self.zombies:
                log.error("giving up on %d worker(s) that would not exit",
                          len(self.devices) + len(self.zombies))
            cb()


# =============================================================================
# Single instance
# =============================================================================


class AlreadyRunning(RuntimeError):
    pass


def take_lock(path: str) -> int:
    """The POSIX record lock tcmu-runner takes (``fcntl(F_SETLK, F_WRLCK)`` on
    the whole file): exclusive against tcmu-runner and other tcmu-rbd.  (A BSD
    ``flock`` would not conflict with tcmu-runner's lock.)"""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = lock_holder(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise AlreadyRunning(
                f"{path} is locked by {holder}: tcmu-runner or another tcmu-rbd already "
                f"serves TCMU on this host (only one daemon per host can)"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(fd: int) -> str:
    try:
        req = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        res = fcntl.fcntl(fd, fcntl.F_GETLK, req)
        pid = struct.unpack("hhqqi4x", res)[4]
    except OSError:
        return "another process"
    if pid <= 0:
        return "another process"
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"pid {pid} ({f.read().strip()})"
    except OSError:
        return f"pid {pid}"


def find_tcmu_runner(proc: str = "/proc") -> int | None:
    """pid of a running tcmu-runner, if any."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    me = os.getpid()
    for e in entries:
        if not e.isdigit() or int(e) == me:
            continue
        try:
            with open(os.path.join(proc, e, "comm")) as f:
                if f.read().strip() == "tcmu-runner":
                    return int(e)
        except OSError:
            continue
    return None


def _fallback_validator(config: str) -> tuple[bool, str]:
    sub, _, rest = config.partition("/")
    if sub != SUBTYPE:
        return False, f"subtype must be {SUBTYPE!r}"
    spec = rest.split(";", 1)[0]
    if spec.count("/") < 1 or not all(spec.split("/")):
        return False, "expected pool[/namespace]/image"
    return True, "success"


def load_validator():
    try:
        from .config import check_config  # written by another developer
    except ImportError as e:
        log.warning("tcmu_rbd.config.check_config unavailable (%s): using a minimal check", e)
        return _fallback_validator
    return check_config


# =============================================================================
# main
# =============================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="tcmu-rbd", description="TCMU userspace handler serving Ceph RBD images to LIO"
    )
    p.add_argument("--config", metavar="PATH",
                   help=f"settings file (default ${settings_mod.ENV_CONFIG} or "
                        f"{settings_mod.DEFAULT_PATH})")
    p.add_argument("--foreground", action="store_true",
                   help="do not detach (use under systemd)")
    p.add_argument("--no-dbus", action="store_true",
                   help="do not serve org.kernel.TCMUService1 (targetcli will not list user:rbd)")
    p.add_argument("--log-level", metavar="L", help="debug|info|warning|error|critical")
    return p.parse_args(argv)


def daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


def run(
    s: Settings,
    *,
    paths: Paths | None = None,
    netlink_factory=None,
    dbus_factory=None,
    validator=None,
    loop: GLibLoop | None = None,
    ready_cb=None,
) -> int:
    """The daemon proper.  Returns the exit status."""
    paths = paths or Paths(lock=s.lock_file)
    kernel = Kernel(paths)
    try:
        lock_fd = take_lock(paths.lock)
    except AlreadyRunning as e:
        log.error("refusing to start: %s", e)
        return 1
    except OSError as e:
        log.error("refusing to start: cannot lock %s: %s", paths.lock, e.strerror)
        return 1
    try:
        pid = find_tcmu_runner(paths.proc)
        if pid is not None:
            log.error("refusing to start: tcmu-runner (pid %d) is running; only one TCMU "
                      "daemon per host can serve the kernel", pid)
            return 1
        loop = loop or GLibLoop()

        dbus_svc = None
        if s.dbus:
            from . import dbus_service

            factory = dbus_factory or (lambda v: dbus_service.DBusService(v))
            dbus_svc = factory(validator or load_validator())
            try:
                dbus_svc.start()
            except dbus_service.NameTaken as e:
                log.error("refusing to start: %s", e)
                return 1
            except dbus_service.DBusUnavailable as e:
                log.error("D-Bus unavailable (%s); serving the kernel anyway and retrying "
                          "in the background (until then targetcli does not list user:rbd)", e)
                dbus_svc.retry_in_background()

        if not kernel.module_loaded() and paths.sysfs == "/sys":
            subprocess.run(["modprobe", "target_core_user"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # As tcmu-runner: fail commands a previous daemon left pending and keep
        # new ones away until we are ready.
        blocked = kernel.modparam("block_netlink", 1)
        if blocked is not None:
            kernel.modparam("reset_netlink", 1)

        def unblock():
            if blocked is not None:
                kernel.modparam("block_netlink", 0)
                log.debug("netlink unblocked")

        try:
            netlink = (netlink_factory or nl.TcmuNetlink.open)()
        except (nl.NetlinkError, OSError) as e:
            unblock()
            log.error("cannot open the TCM-USER netlink channel: %s", e)
            if dbus_svc:
                dbus_svc.close()
            return 1
        if not getattr(netlink, "reply_supported", True):
            log.warning("the kernel does not wait for our replies (no SET_FEATURES support)")
        else:
            log.info("TCM-USER netlink: SET_FEATURES accepted, the kernel waits for our replies")

        sup = Supervisor(s, netlink, kernel, loop)
        sup.attach_netlink()
        exit_code = [0]

        def on_term():
            log.info("signal received: stopping")
            unblock()
            sup.shutdown(loop.stop)

        loop.add_signal(signal.SIGTERM, on_term)
        loop.add_signal(signal.SIGINT, on_term)
        loop.add_signal(signal.SIGHUP, reopen_logs)

        def recovered():
            unblock()
            log.info("ready: serving %d device(s)", len(sup.devices))
            if ready_cb:
                ready_cb(sup)

        n = sup.recover_existing(recovered)
        log.info("tcmu-rbd started (pid %d); recovering %d existing device(s)", os.getpid(), n)
        try:
            loop.run()
        finally:
            unblock()
            if dbus_svc:
                dbus_svc.close()
            try:
                netlink.close()
            except OSError:
                pass
        log.info("exiting")
        return exit_code[0]
    finally:
        os.close(lock_fd)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        s = settings_mod.load(args.config)
        if args.log_level:
            s.log_level = settings_mod.parse_log_level(args.log_level, "--log-level")
        if args.no_dbus:
            s.dbus = False
    except SettingsError as e:
        print(f"tcmu-rbd: {e}", file=sys.stderr)
        return 2
    if not args.foreground:
        daemonize()
        if s.log_target == "stderr":
            s.log_target = "syslog"
    try:
        setup_logging(s)
    except OSError as e:
        print(f"tcmu-rbd: cannot open log target {s.log_target}: {e}", file=sys.stderr)
        return 2
    return run(s)


if __name__ == "__main__":
    sys.exit(main())
