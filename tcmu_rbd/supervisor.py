"""The supervisor: a worker per TCMU device, and the kernel kept answered.

Belongs here: the per-device state machine (:class:`ServedDevice`: starting,
ready, backoff, stopping), answering every TCM-USER netlink event exactly
once and within a bound, restart recovery (block, stop stale holders, reset
the ring, start, unblock), crash restarts with backoff, resync after lost
events, and the graceful shutdown.  Policy on when to block, reset or restart
a device lives here and nowhere else (worker hosts: worker_process.HostPool).

Not here: reading or writing the kernel's files (lio.py), netlink encoding
(netlink.py), the worker protocol and process handling (control.py,
worker_process.py), the daemon's start-up and signals (daemon.py).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import control
from . import netlink as nl
from .config import SUBTYPE
from .lio import Kernel, TcmuDevice, UioName
from .logs import DevLog, redact
from .metrics import LunRegion
from .settings import Settings
from .worker_process import (KILL_GRACE, HostPool, WorkerProcess, default_worker_command,
                             describe_exit)

if TYPE_CHECKING:
    from .mainloop import Timer

log = logging.getLogger("tcmu_rbd.daemon")

RESTART_BACKOFF_BASE = 1.0
#: a worker that stayed ready this long resets the crash backoff
STABLE_AFTER = 60.0

STARTING, READY, BACKOFF, STOPPING = "starting", "ready", "backoff", "stopping"


@dataclass
class Pending:
    """A kernel event waiting for its *_DONE."""

    event: nl.TcmuEvent
    deadline: Timer | None = None


@dataclass
class ServedDevice:
    """A TCMU device the supervisor serves, and its worker's state."""

    tcmu: TcmuDevice
    log: DevLog
    worker: WorkerProcess | None = None
    state: str = STARTING
    pending: Pending | None = None
    blocked: bool = False  # we wrote block_dev=1 and have not unblocked
    failures: int = 0
    ready_since: float = 0.0
    restart_timer: Timer | None = None
    start_timer: Timer | None = None
    initial: bool = False  # part of start-up recovery
    metrics: LunRegion | None = None  # the LUN's counters, handed to each worker
    restarts: int = 0
    ring_resets: int = 0

    @property
    def uio(self) -> str:
        return self.tcmu.uio


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        netlink,
        kernel: Kernel,
        loop,
        worker_command: list[str] | None = None,
    ):
        self.settings = settings
        self.netlink = netlink
        self.kernel = kernel
        self.loop = loop
        self.worker_command = worker_command or settings.worker_command or default_worker_command()
        self.devices: dict[str, ServedDevice] = {}
        self.zombies: set[WorkerProcess] = set()  # workers of devices already forgotten
        self.hosts = HostPool(self.worker_command, settings, loop, log,
                              on_exit=lambda h: self._check_shutdown())
        self.shutting_down = False
        self._shutdown_cb = None
        self._recovering: set[str] = set()
        self._recovered_cb = None
        self._nl_watch = None

    # -- start-up -------------------------------------------------------------

    def attach_netlink(self) -> None:
        self._nl_watch = self.loop.add_reader(self.netlink.fileno(), self.on_netlink)

    def detach_netlink(self) -> None:
        if self._nl_watch is not None:
            self.loop.remove(self._nl_watch)
            self._nl_watch = None

    def recover_existing(self, on_done=None) -> int:
        """Restart recovery: serve every existing tcm-user uio device of our
        subtype (block_dev=1, reset_ring=1, worker, ready, block_dev=0).
        ``on_done`` runs once every one is ready or has failed once."""
        self._recovered_cb = on_done
        n = 0
        for tcmu in self.kernel.devices():
            if tcmu.name.subtype != SUBTYPE:
                log.warning("uio=%s device=%s has subtype %r, which tcmu-rbd does not serve",
                            tcmu.uio, tcmu.name.name, tcmu.name.subtype)
                continue
            if tcmu.uio in self.devices:
                continue
            dev = self._new_device(tcmu)
            dev.initial = True
            self._recovering.add(dev.uio)
            dev.log.info("recovering existing device (config %s)", redact(tcmu.name.dev_config))
            self._spawn(dev, recovery=True)
            n += 1
        self._check_recovered()
        return n

    def _check_recovered(self) -> None:
        if not self._recovering and self._recovered_cb:
            cb, self._recovered_cb = self._recovered_cb, None
            cb()

    def _settled(self, dev: ServedDevice) -> None:
        if dev.initial:
            dev.initial = False
            self._recovering.discard(dev.uio)
            self._check_recovered()

    def _new_device(self, tcmu: TcmuDevice) -> ServedDevice:
        dev = ServedDevice(tcmu, DevLog(log, tcmu))
        if self.settings.metrics_address is not None:
            try:
                dev.metrics = LunRegion()
            except OSError as e:
                dev.log.error("serving without metrics: cannot make its region: %s", e)
        self.devices[tcmu.uio] = dev
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

    def _reply(self, ev: nl.TcmuEvent, status: int, dev: ServedDevice | None = None) -> None:
        if dev is not None and dev.pending is not None and dev.pending.event is ev:
            if dev.pending.deadline:
                dev.pending.deadline.cancel()
            dev.pending = None
        name = nl.CMD_NAMES.get(ev.reply_cmd, "?")
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

    def _set_pending(self, dev: ServedDevice, ev: nl.TcmuEvent, bound: float) -> None:
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
        name = UioName.parse(ev.device)
        if name is None:
            log.error("uio=%s: ADDED_DEVICE with unparsable name %r", uio, ev.device)
            self._reply(ev, -errno.EINVAL)
            return
        if name.subtype != SUBTYPE:
            # tcmu-runner answers -ENOENT for subtypes it has no handler for
            log.warning("uio=%s device=%s: subtype %r is not served by tcmu-rbd", uio,
                        name.name, name.subtype)
            self._reply(ev, -errno.ENOENT)
            return
        if self.shutting_down:
            self._reply(ev, -errno.ESHUTDOWN)
            return
        old = self.devices.get(uio)
        if old is not None:
            old.log.warning("new device on %s while the old one is still known: dropping it", uio)
            self._forget(old, kill=True)
        dev = self._new_device(TcmuDevice(uio, name, self.kernel.roots))
        dev.log.info("ADDED_DEVICE (config %s)", redact(name.dev_config))
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

        def released():
            # answered now, not at the worker's exit: while the kernel waits for
            # this answer a thread of the worker that reads the device's configfs
            # cannot return, so the exit could not come first
            if dev.pending is not None and dev.pending.event is ev:
                self._reply(ev, 0, dev)
        w.stop(self.settings.worker_stop_timeout, released)

    def _on_reconfig(self, uio: str, ev: nl.TcmuEvent) -> None:
        dev = self.devices.get(uio)
        if dev is None:
            log.error("uio=%s: RECONFIG_DEVICE for an unknown device", uio)
            self._reply(ev, -errno.ENODEV)
            return
        if ev.dev_cfg is not None:
            req, what = control.Reconfig(ev.dev_cfg), f"dev_config {redact(ev.dev_cfg)}"
        elif ev.dev_size is not None:
            req, what = control.Resize(ev.dev_size), f"size {ev.dev_size}"
        elif ev.writecache is not None:
            req, what = control.WriteCache(bool(ev.writecache)), f"write cache {ev.writecache}"
        else:
            dev.log.error("RECONFIG_DEVICE without a known attribute")
            self._reply(ev, -errno.EOPNOTSUPP)
            return
        dev.log.info("RECONFIG_DEVICE %s", what)
        if dev.state != READY or dev.worker is None or dev.pending is not None:
            dev.log.error("cannot %s now: the worker is %s", req.op, dev.state)
            self._reply(ev, -errno.EBUSY)
            return
        self._set_pending(dev, ev, self.settings.request_timeout + 5)

        def done(ok, err, code):
            if dev.pending is None or dev.pending.event is not ev:
                return
            if ok:
                if isinstance(req, control.Reconfig):
                    dev.tcmu = dev.tcmu.reconfigured(req.config)
                self._reply(ev, 0, dev)
            else:
                dev.log.error("%s failed: %s", req.op, err)
                self._reply(ev, -code, dev)

        dev.worker.request(req, self.settings.request_timeout, done)

    # -- worker life cycle ---------------------------------------------------

    def _spawn(self, dev: ServedDevice, recovery: bool) -> None:
        dev.state = STARTING
        if recovery:
            if not dev.blocked:
                dev.blocked = dev.tcmu.block()
            if self._stop_stale_holders(dev):
                return  # _start_worker runs once they let go of the device
            dev.ring_resets += bool(dev.tcmu.reset_ring())
        self._start_worker(dev)

    def _stop_stale_holders(self, dev: ServedDevice) -> bool:
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
        holders = [h for h in dev.tcmu.holders() if h.pid not in ours]
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
            left = {h.pid for h in dev.tcmu.holders()} & stale
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
            dev.ring_resets += bool(dev.tcmu.reset_ring())
            self._start_worker(dev)

        dev.start_timer = self.loop.call_later(0.1, poll)
        return True

    def _start_worker(self, dev: ServedDevice) -> None:
        try:
            dev.worker = WorkerProcess(
                self.worker_command, dev.uio, self.settings, self.loop, dev.log,
                on_ready=functools.partial(self._worker_ready, dev),
                on_failed=functools.partial(self._worker_failed, dev),
                on_exit=functools.partial(self._worker_exited, dev),
                metrics_fd=dev.metrics.fd if dev.metrics is not None else None,
                host=self.hosts.place())
        except OSError as e:
            dev.worker = None
            dev.log.error("cannot start a worker: %s", e)
            self._start_failed(dev, f"cannot start a worker: {e}", errno.EIO)
            return
        dev.start_timer = self.loop.call_later(
            self.settings.worker_start_timeout, lambda: self._start_timeout(dev)
        )

    def _start_timeout(self, dev: ServedDevice) -> None:
        w = dev.worker
        if dev.state != STARTING or w is None:
            return
        msg = f"worker not ready within {self.settings.worker_start_timeout:.0f} s"
        dev.log.error("%s; killing pid %d", msg, w.pid)
        w.kill()
        self._start_failed(dev, msg, errno.ETIMEDOUT)

    def _worker_ready(self, dev: ServedDevice, w: WorkerProcess) -> None:
        if dev.worker is not w or dev.state != STARTING:
            return
        if dev.start_timer:
            dev.start_timer.cancel()
        dev.state = READY
        dev.ready_since = time.monotonic()
        if dev.blocked:
            dev.tcmu.block(False)
            dev.blocked = False
        dev.log.info("worker pid %d ready", w.pid)
        if dev.pending and dev.pending.event.cmd == nl.TCMU_CMD_ADDED_DEVICE:
            self._reply(dev.pending.event, 0, dev)
        self._settled(dev)

    def _worker_failed(self, dev: ServedDevice, w: WorkerProcess, error: str, code: int) -> None:
        if dev.worker is not w or dev.state != STARTING:
            dev.log.error("worker: %s", error)
            return
        # The worker's message is how the operator learns why (missing image...)
        dev.log.error("worker failed to start: %s", error)
        self._start_failed(dev, error, code)

    def _start_failed(self, dev: ServedDevice, error: str, code: int) -> None:
        if dev.start_timer:
            dev.start_timer.cancel()
        w, dev.worker = dev.worker, None
        if w is not None and not w.exited:
            self.zombies.add(w)  # it should exit by itself; killed otherwise
            w.kill_after(KILL_GRACE)
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

    def _worker_exited(self, dev: ServedDevice, w: WorkerProcess, code: int) -> None:
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
            if not dev.blocked:
                dev.blocked = dev.tcmu.block()
            if time.monotonic() - dev.ready_since > STABLE_AFTER:
                dev.failures = 0
            self._schedule_restart(dev, describe_exit(code))

    def _schedule_restart(self, dev: ServedDevice, why: str) -> None:
        delay = min(self.settings.restart_backoff_max, RESTART_BACKOFF_BASE * (2 ** dev.failures))
        dev.failures += 1
        dev.state = BACKOFF
        dev.log.warning("restarting the worker in %.0f s (attempt %d; last: %s)", delay,
                        dev.failures, why)

        def restart():
            dev.restart_timer = None
            if self.devices.get(dev.uio) is not dev or self.shutting_down:
                return
            if not dev.tcmu.present():
                dev.log.warning("device is gone from sysfs; forgetting it")
                self._drop(dev)
                return
            dev.restarts += 1
            self._spawn(dev, recovery=True)

        dev.restart_timer = self.loop.call_later(delay, restart)

    def _cancel_timers(self, dev: ServedDevice) -> None:
        for t in (dev.restart_timer, dev.start_timer):
            if t:
                t.cancel()
        dev.restart_timer = dev.start_timer = None

    def _drop(self, dev: ServedDevice) -> None:
        self._cancel_timers(dev)
        if self.devices.get(dev.uio) is dev:
            del self.devices[dev.uio]
        if dev.metrics is not None:
            dev.metrics.close()
            dev.metrics = None
        self._settled(dev)

    def _forget(self, dev: ServedDevice, kill: bool) -> None:
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
        present = {t.uio: t for t in self.kernel.devices()}
        for uio, dev in list(self.devices.items()):
            if uio not in present or present[uio].name.name != dev.tcmu.name.name:
                dev.log.warning("device vanished while events were lost")
                self._forget(dev, kill=False)
        for uio, tcmu in present.items():
            if tcmu.name.subtype == SUBTYPE and uio not in self.devices:
                dev = self._new_device(tcmu)
                dev.log.info("found a device whose ADDED_DEVICE was lost: recovering it")
                self._spawn(dev, recovery=True)

    # -- shutdown ---------------------------------------------------------------

    def shutdown(self, on_done) -> None:
        """Stop all workers gracefully; devices are left blocked (block_dev=1)
        so I/O queues in the kernel until the next start recovers them.
        Netlink stays attached: events are answered while workers stop."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self._shutdown_cb = on_done
        log.info("shutting down: stopping %d worker(s)", len(self.devices))
        for dev in list(self.devices.values()):
            self._cancel_timers(dev)
            if dev.pending is not None:
                self._reply(dev.pending.event, -errno.ESHUTDOWN, dev)
            w = dev.worker
            if w is None or w.exited:
                self._drop(dev)
                continue
            if dev.state == READY and not dev.blocked:
                dev.blocked = dev.tcmu.block()
            dev.state = STOPPING
            w.stop(self.settings.worker_stop_timeout)
        for w in self.zombies:
            w.kill_after(KILL_GRACE)
        self.loop.call_later(self.settings.worker_stop_timeout + 2 * KILL_GRACE,
                             self._finish_shutdown)
        self._check_shutdown()

    def _check_shutdown(self) -> None:
        if self.shutting_down and not self.devices and not self.zombies \
                and not self.hosts.serving():
            self._finish_shutdown()

    def _finish_shutdown(self) -> None:
        cb, self._shutdown_cb = self._shutdown_cb, None
        if cb:
            if self.devices or self.zombies:
                log.error("giving up on %d worker(s) that would not exit",
                          len(self.devices) + len(self.zombies))
            cb()
