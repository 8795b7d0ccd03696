"""One TCMU device, served by one process: ``python -m tcmu_rbd.worker``
(or, with ``--host``, on threads of a process serving several: worker_host.py).

Belongs here: the worker side of the contract in control.py (its command
line, the first line it sends, its answers to requests), opening the image
and the ring for a device and running the handler's loop, and following the
supervisor (a worker never outlives it).  Separate processes let several LUNs
use several cores, and a crash here costs one LUN a restart, not the gateway.

The worker finds everything about its device itself, through
:class:`tcmu_rbd.lio.TcmuDevice`: the uio name
``tcm-user/<hba>/<name>/<dev_config>`` in sysfs, the LUN's attributes, serial
and size in configfs, and ``action/block_dev`` when the supervisor is lost.

Several gateways: when the image has an exclusive lock, the worker's writes
follow it (a :class:`tcmu_rbd.failover.Failover` on a thread of its own; the
handler asks it before every medium change).

Not here: the message encoding (control.py), kernel file formats (lio.py),
the SCSI emulation and the ring loop (scsi/, handler.py), the image
(backends/rbd.py), and any decision about restarting or recovering a device
(supervisor.py).

A worker never outlives its supervisor (see :func:`follow_supervisor`): when
the supervisor dies (EOF on the control socket, or SIGTERM through
PR_SET_PDEATHSIG) the worker blocks its device (commands wait in the kernel),
finishes what is in flight, closes the image (releasing its exclusive lock)
and exits, letting go of /dev/uioN for the next supervisor's restart
recovery.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
import types

# Imported here, not when a worker opens its image: a worker is forked from the
# spawner, which has imported this module, so the modules are shared; imported after
# the fork they cost each worker ~2 MB private (measured).
from tcmu_rbd import alua, config, control, prctl, scsi, validate
from tcmu_rbd.backends import rbd as rbd_backend
from tcmu_rbd.failover import DEFAULT_GRACE, Failover
from tcmu_rbd.handler import Handler
from tcmu_rbd.lio import Kernel, TcmuDevice
from tcmu_rbd.logs import configure_worker_logging
from tcmu_rbd.metrics import LunRegion, MetricsError
from tcmu_rbd.ring import UioRing
from tcmu_rbd.settings import ENV_LOG_LEVEL, ENV_SUPERVISOR_PID
from tcmu_rbd.worker_host import WorkerHost

log = logging.getLogger("tcmu_rbd.worker")

#: how long INQUIRY waits for the configfs reads of the identity refresh
IDENTITY_WAIT = 0.5


class BoundedRefresh:
    """Runs the identity refresh (configfs reads) on a thread of its own and waits
    at most ``wait`` seconds: a read of a fabric's LUN directory sleeps while
    another process is creating a LUN there, and for tcm_loop that process
    (scsi_add_device, inside the configfs symlink) waits for the answer to this
    very INQUIRY.  Then the command is answered from the values kept so far; the
    refresh completes once the LUN exists, and no second one starts meanwhile."""

    def __init__(self, refresh, wait: float = IDENTITY_WAIT):
        self._refresh, self._wait = refresh, wait
        self._lock = threading.Lock()
        self._busy = False
        self._done = threading.Event()

    def __call__(self, lun) -> None:
        with self._lock:
            if self._busy:
                return
            self._busy = True
            self._done.clear()
        threading.Thread(target=self._run, args=(lun,), name="identity", daemon=True).start()
        self._done.wait(self._wait)

    def _run(self, lun) -> None:
        try:
            self._refresh(lun)
        except Exception as e:  # the values kept so far stay in use
            log.warning("reading the LUN's identity from configfs failed: %s", e)
        finally:
            with self._lock:
                self._busy = False
            self._done.set()


def follow_supervisor(environ=os.environ) -> int | None:
    """Die with the supervisor.

    Why: a SIGKILLed supervisor leaves its workers orphaned, each still holding
    its /dev/uioN (a second open is EBUSY), so the restarted supervisor could
    not recover the device.  PR_SET_PDEATHSIG turns the supervisor's death
    into a SIGTERM here, i.e. the same graceful stop as for the "stop" op
    (finish in-flight, close the image so its exclusive lock is released at
    once rather than after the OSD's watch timeout); SIGKILL would leave the
    lock to time out and the new worker's first write waiting ~30 s for it.
    EOF on the control socket means the same and is the fallback where
    prctl is unavailable.  The new supervisor also looks for workers still
    holding the device and stops them before it resets the ring (supervisor.py,
    Supervisor._stop_stale_holders), for a worker stuck in librbd.

    The supervisor's pid comes in $TCMU_RBD_SUPERVISOR_PID: if it is no longer
    our parent, it died before prctl took effect, and we exit at once.
    Returns that pid (None when started by hand)."""
    want = environ.get(ENV_SUPERVISOR_PID)
    if not want:
        return None
    want_pid = int(want)
    err = prctl.prctl(prctl.PR_SET_PDEATHSIG, signal.SIGTERM)
    if err:
        log.warning("prctl(PR_SET_PDEATHSIG): %s: relying on the control socket's EOF",
                    os.strerror(err))
    if os.getppid() != want_pid:
        raise SupervisorGone("the supervisor (pid %d) exited before this worker started" % want_pid)
    return want_pid


class SupervisorGone(RuntimeError):
    pass


#: glibc malloc arenas a worker may use.  glibc gives each new thread an arena of its
#: own, up to 8 per core, and librados starts ~15 threads: memory they free stays in
#: their arenas, which malloc_trim cannot give back while any chunk there is in use.
#: Measured in the VM after 4K and 64K I/O on 2 LUNs: 19 MB private per worker with
#: glibc's default, 9.3 MB with one arena.  Threads keep their own small-block cache
#: (tcache), so sharing the one arena costs little.  $MALLOC_ARENA_MAX overrides.
MALLOC_ARENAS = 1
M_ARENA_MAX = -8        # mallopt(3)


def limit_malloc_arenas(environ=os.environ) -> int:
    """Set this process's malloc arena limit before its threads start; returns it
    (0: not glibc).  Called by the worker itself, so that a worker forked from the
    spawner (whose malloc read its environment long ago) and an exec'd one agree."""
    want = environ.get("MALLOC_ARENA_MAX", "")
    try:
        n = int(want) if want else MALLOC_ARENAS
    except ValueError:
        n = 0
    if n <= 0:
        log.warning("MALLOC_ARENA_MAX=%r is not a positive number: using %d", want, MALLOC_ARENAS)
        n = MALLOC_ARENAS
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return 0
    return n if mallopt(M_ARENA_MAX, n) == 1 else 0


def open_backend(dev_config: str, default_osd_op_timeout: float = 30):
    """Parse and open the image a dev_config names; errors carry the
    operator's message."""
    # the daemon's configured default applies where the string names none
    cfg = config.parse_config(dev_config, defaults={"osd_op_timeout": int(default_osd_op_timeout)})
    return cfg, rbd_backend.open_from_config(validate.trusted_files(cfg), default_osd_op_timeout)


def own_command_timeout(dev: TcmuDevice) -> bool:
    """The daemon, not the kernel, decides when a command has waited too long.

    librbd ends every op after osd_op_timeout and the handler answers BUSY,
    which initiators retry; the kernel's own timer (attrib/cmd_time_out, 30 s
    for a stock ``targetcli /backstores/user:rbd create``) fires about as soon
    and answers NOT READY, LOGICAL UNIT COMMUNICATION FAILURE: an I/O error on
    the initiator for an OSD outage the cluster rides out.  So it is turned off,
    as ceph-iscsi and targetcli-rbd do.  The kernel allows that only while the
    device is not exported (a worker started for a LUN already mapped): then
    the operator is told.  True when the kernel's timer is off."""
    secs = dev.attr("cmd_time_out", 0)
    if secs == 0:
        return True
    if dev.set_attr("cmd_time_out", 0):
        log.info("%s: kernel command timer (%d s) off: librbd's osd_op_timeout ends "
                 "commands, with BUSY", dev.label, secs)
        return True
    log.warning("%s: the kernel fails any command still running after %d s "
                "(attrib/cmd_time_out) and refuses a change while the device is "
                "exported: an OSD outage longer than that is an I/O error on the "
                "initiator. Set cmd_time_out=0 before mapping the LUN (targetcli-rbd "
                "export does)", dev.label, secs)
    return False


def _send(ctl: socket.socket | None, msg: control.Message) -> None:
    if ctl is not None:
        ctl.sendall(control.encode(msg))


class Worker:
    """Serves one device: the handler over its ring and image, and the
    control socket to the supervisor (None when started by hand)."""

    def __init__(self, dev: TcmuDevice, ctl: socket.socket | None,
                 default_osd_op_timeout: float = 30, lock_grace: float = DEFAULT_GRACE,
                 metrics: LunRegion | None = None):
        self.dev = dev
        self.metrics = metrics      # the LUN's counters (the ring records into them)
        self.ctl = ctl
        self.default_timeout = default_osd_op_timeout
        self.lock_grace = lock_grace
        self.failover: Failover | None = None
        self._decoder = control.LineDecoder()
        self.handler: Handler | None = None
        self.supervisor_pid: int | None = None
        self._stop_ids: list[int] = []   # "stop" requests, answered once the device is released

    def send(self, msg: control.Message) -> None:
        _send(self.ctl, msg)

    def start(self) -> None:
        dev = self.dev
        t0 = time.monotonic()
        cfg, backend = open_backend(dev.name.dev_config, self.default_timeout)
        opened = time.monotonic() - t0
        try:
            block = dev.attr("hw_block_size", 512) or 512
            size = dev.size() or backend.size
            if size > backend.size:
                raise ValueError(
                    "LUN size %d is larger than image %s (%d bytes): grow the image "
                    "(rbd resize) or create the LUN with size=%d"
                    % (size, backend.name, backend.size, backend.size))
            lun = scsi.Lun(
                num_blocks=size // block, block_size=block, serial=dev.serial(),
                max_xfer_blocks=dev.attr("hw_max_sectors", 1024),
                write_cache=bool(dev.attr("emulate_write_cache", 0)),
                read_only=backend.read_only,
                unmap_granularity=max(1, backend.granularity // block))
            ring = UioRing(dev.node, dev.map_size())
        except Exception:
            backend.close()
            raise
        # ABORT TASK and LUN RESET reach the handler (TMR entries on the ring), so a
        # long multi-step command (VERIFY, WRITE AND VERIFY, EXTENDED COPY) stops
        dev.set_attr("tmr_notification", 1)
        own_command_timeout(dev)
        self.handler = Handler(ring, backend, lun, identity=BoundedRefresh(self._refresh_identity),
                               name=dev.label)
        if self.metrics is not None:
            ring.set_metrics(self.metrics)
        self._refresh_identity(lun)
        try:
            self._follow_lock(backend)
        except Exception:
            self.handler.close()
            ring.close()
            raise
        log.info("%s: serving %s, %d blocks of %d bytes%s (%.2f s to connect and open the "
                 "image, %.2f s in all; CPU since the worker began: %.2f s, %.2f s of it on "
                 "this thread)", dev.label, cfg.display(), lun.num_blocks, block,
                 " (read-only snapshot)" if backend.read_only else "", opened,
                 time.monotonic() - t0, time.process_time(), time.thread_time())
        if backend.volatile_cache:
            log.warning("%s: rbd_cache is on in the rbd config of the image or its pool, so "
                        "librbd caches writes: %s (`rbd config image rm %s rbd_cache`, or "
                        "pool rm, turns it off)", dev.label,
                        "they wait there for SYNCHRONIZE CACHE or FUA (the LUN reports WCE=1)"
                        if lun.write_cache else "each is flushed before it completes (the "
                        "LUN reports WCE=0)", backend.name.split(":", 1)[-1])

    def _refresh_identity(self, lun) -> None:
        """Before INQUIRY and REPORT TARGET PORT GROUPS: the serial (written
        after the device is enabled), the transport INQUIRY claims (the LUNs
        come and go) and the ALUA groups with the states the failover thread
        keeps in configfs."""
        serial = self.dev.serial()
        if serial and serial != lun.serial:
            lun.serial = serial
        only_iscsi = self.dev.fabrics() == {"iscsi"}
        lun.transport_version_descriptor = scsi.VD_ISCSI if only_iscsi else 0
        groups = alua.port_groups(self.dev.alua_groups())
        if groups is not None:
            lun.port_groups = groups

    def _follow_lock(self, backend) -> None:
        """Writes follow the image's exclusive lock (failover.py); an image
        without the feature cannot be served safely by several gateways."""
        if self.metrics is not None:
            self.metrics.set_lock_owner(None)
        groups = self.dev.alua_groups()
        peers = len(alua.gateway_groups(groups)) > 1
        if backend.read_only:
            return
        if not backend.has_exclusive_lock_feature():
            if peers:
                raise ValueError(
                    "image %s has no exclusive-lock feature, so several gateways cannot "
                    "serve it safely: rbd feature enable %s exclusive-lock"
                    % (backend.name, backend.name.split(":", 1)[-1]))
            return
        self.failover = Failover(self.dev, backend, self._reopen, socket.gethostname(),
                                 grace=self.lock_grace)
        if self.metrics is not None:
            self.failover.on_owner = self.metrics.set_lock_owner
            self.metrics.set_lock_owner(self.failover.owner)
        self.handler.failover = self.failover
        self.failover.start()

    def _reopen(self):
        """The same image with a new cluster client (after a blocklist)."""
        return open_backend(self.dev.name.dev_config, self.default_timeout)[1]

    def on_control(self) -> None:
        try:
            data = self.ctl.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:   # supervisor gone: finish in-flight work and stop
            log.warning("%s: control socket closed (supervisor gone), stopping", self.dev.label)
            self.supervisor_lost()
            return
        for msg in self._decoder.feed(data):
            if isinstance(msg, control.Request):
                answer = self.request(msg)
                if answer is not None:
                    self.send(answer)
            elif isinstance(msg, control.Invalid) and msg.id is not None:
                self.send(control.Answer.failure(msg.id, msg.reason))
            elif isinstance(msg, control.Invalid):
                log.error("%s: bad control message (%s) %r", self.dev.label, msg.reason,
                          msg.line[:200])
            else:
                log.error("%s: bad control message %r", self.dev.label, msg)

    def supervisor_lost(self) -> None:
        """Block the device (commands wait in the kernel, as after the
        supervisor's own shutdown) and stop; the next supervisor's restart
        recovery resets the ring and unblocks it."""
        if self.handler is not None and self.handler.stopping:
            return
        self.dev.block()
        if self.handler is not None:
            self.handler.stopping = True

    def on_signal(self) -> None:
        """SIGTERM/SIGINT: from the supervisor's PR_SET_PDEATHSIG when it died
        (our parent changed), else an operator's request to stop."""
        if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
            log.warning("%s: the supervisor (pid %d) died, stopping", self.dev.label,
                        self.supervisor_pid)
            self.supervisor_lost()
        else:
            self.handler.stopping = True

    def request(self, req: control.Request) -> control.Answer | None:
        """The answer now, or None for "stop" (answered by serve() once the
        device is released)."""
        h = self.handler
        try:
            if isinstance(req, control.Resize):
                have = h.backend.refresh_size()
                if req.size > have:
                    raise ValueError("new LUN size %d is larger than the image (%d bytes): "
                                     "grow the image first (rbd resize)" % (req.size, have))
                h.lun.resize(req.size // h.lun.block_size)
                log.info("%s: resized to %d bytes", self.dev.label, req.size)
            elif isinstance(req, control.Reconfig):
                self.reconfig(req.config)
            elif isinstance(req, control.WriteCache):
                h.set_write_cache(req.value)
            else:  # Stop
                self._stop_ids.append(req.id)
                h.stopping = True
                return None
        except Exception as e:  # every request gets an answer
            return control.Answer.failure(req.id, str(e))
        return control.Answer(req.id)

    def reconfig(self, new_config: str) -> None:
        """Reopen on a new dev_config; the old image stays until the new one is open."""
        h = self.handler
        cfg, backend = open_backend(new_config, self.default_timeout)
        if backend.size < h.lun.num_blocks * h.lun.block_size:
            backend.close()
            raise ValueError("image %s is smaller than the LUN" % backend.name)
        if self.failover is not None:
            self.failover.stop()
            self.failover = h.failover = None
        h.replace_backend(backend).close()
        self.dev = self.dev.reconfigured(new_config)
        self._follow_lock(backend)
        log.info("%s: reopened on %s", self.dev.label, cfg.display())

    def serve(self) -> None:
        h = self.handler
        if self.ctl is not None:
            self.ctl.setblocking(False)
        try:
            h.serve(h.ring.fd, self.ctl.fileno() if self.ctl is not None else None,
                    self.on_control)
        finally:    # even after a failure: the image's lock released, the ring let go
            self.release()

    def release(self) -> None:
        """Give the device back: the failover thread's last cluster call, the
        image (its exclusive lock released), the ring; then answer "stop"."""
        h = self.handler
        if self.failover is not None:
            self.failover.stop()
        h.close()
        h.ring.close()
        # the supervisor answers the kernel's REMOVED_DEVICE on this, not on our
        # exit: a thread still in configfs cannot leave it before that answer
        for rid in self._stop_ids:
            self.send(control.Answer(rid))


#: the worker's options (control.py's contract): flag -> (type, default)
REQUIRED = object()
OPTIONS = {"--uio": (str, REQUIRED), "--ctl-fd": (int, None), "--osd-op-timeout": (float, 30.0),
           "--lock-grace": (float, DEFAULT_GRACE), "--metrics-fd": (int, None),
           "--log-level": (str, None), "--host": (bool, False)}
USAGE = ("usage: python3 -m tcmu_rbd.worker --uio uioN [--ctl-fd FD] [--osd-op-timeout S] "
         "[--lock-grace S] [--metrics-fd FD] [--log-level LEVEL]\n"
         "       python3 -m tcmu_rbd.worker --host --ctl-fd FD [--osd-op-timeout S] "
         "[--lock-grace S] [--log-level LEVEL]\n"
         "One TCMU device served by one process, or (--host) the devices the daemon "
         "sends over FD (started by the tcmu-rbd daemon).")


class UsageError(ValueError):
    pass


def parse_args(argv: list[str], environ=os.environ) -> types.SimpleNamespace:
    """``--flag value`` or ``--flag=value`` for each of OPTIONS, no abbreviations
    (the supervisor spells them out); attributes named as argparse would.  Not
    argparse: its help formatter and gettext, run in every worker after the
    fork, wrote ~0.75 MB of pages the worker shared with the spawner (measured
    in the VM), memory paid per LUN."""
    got = {}
    it = iter(argv)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag not in OPTIONS:
            raise UsageError("unknown argument %r" % arg)
        if OPTIONS[flag][0] is bool:            # a switch
            if eq:
                raise UsageError("%s takes no value" % flag)
            got[flag] = True
            continue
        if not eq:
            value = next(it, None)
            if value is None:
                raise UsageError("%s needs a value" % flag)
        kind = OPTIONS[flag][0]
        try:
            got[flag] = kind(value)
        except ValueError:
            raise UsageError("%s: not %s number: %r"
                             % (flag, "a whole" if kind is int else "a", value)) from None
    for flag, (_, default) in OPTIONS.items():
        if flag not in got:
            if default is REQUIRED and not got.get("--host"):
                raise UsageError("%s is required" % flag)
            got[flag] = None if default is REQUIRED else default
    if got["--host"] and (got["--uio"] is not None or got["--metrics-fd"] is not None
                          or got["--ctl-fd"] is None):
        raise UsageError("--host takes its devices over --ctl-fd, not --uio or --metrics-fd")
    if got["--log-level"] is None:
        got["--log-level"] = environ.get(ENV_LOG_LEVEL, "info")
    return types.SimpleNamespace(**{f[2:].replace("-", "_"): v for f, v in got.items()})


def serve_device(uio: str, ctl: socket.socket | None, args: types.SimpleNamespace,
                 supervisor_pid: int | None, metrics_fd: int | None = None,
                 started=None) -> int:
    """Serve one device until it is stopped: in a worker process of its own, or on a
    thread of a worker host (worker_host.py).  ``started(worker)`` once it is open,
    before "ready" (where the caller hooks its signals).  Returns the exit code."""
    dev = Kernel().device(uio)
    if dev is None:
        msg = "cannot read device %s: no TCMU device of that name in sysfs" % uio
        log.error(msg)
        _send(ctl, control.Failed(msg))
        return 1
    region = None
    if metrics_fd is not None:
        try:
            region = LunRegion(metrics_fd)
        except (MetricsError, OSError) as e:
            log.warning("%s: serving without metrics: %s", dev.label, e)
    w = Worker(dev, ctl, args.osd_op_timeout, args.lock_grace, metrics=region)
    w.supervisor_pid = supervisor_pid
    try:
        w.start()
    except Exception as e:
        log.error("%s: cannot serve: %s", dev.label, e)
        w.send(control.Failed("%s: %s" % (dev.name.name, e)))
        return 1
    if started is not None:
        started(w)
    try:
        w.send(control.Ready())
    except OSError as e:        # the supervisor gave up on it meanwhile (worker_process)
        log.warning("%s: the supervisor is no longer waiting (%s): releasing the device",
                    dev.label, e)
        w.release()
        return 1
    w.serve()
    log.info("%s: stopped", dev.label)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
    except UsageError as e:
        print("%s\ntcmu-rbd-worker: error: %s" % (USAGE, e), file=sys.stderr)
        return 2
    configure_worker_logging(args.log_level)
    limit_malloc_arenas()                  # before any thread (librados' included)
    ctl = socket.socket(fileno=args.ctl_fd) if args.ctl_fd is not None else None
    try:
        supervisor_pid = follow_supervisor()
    except SupervisorGone as e:
        log.error("%s: %s", args.uio or "worker host", e)
        return 1
    if args.host:
        return WorkerHost(ctl, args, supervisor_pid, serve_device).run()

    def started(w: Worker) -> None:
        def stop(signum, frame):
            w.on_signal()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    return serve_device(args.uio, ctl, args, supervisor_pid, args.metrics_fd, started)


if __name__ == "__main__":
    sys.exit(main())
