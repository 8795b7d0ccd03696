"""Who may write the image when several gateways serve it: the exclusive lock.

Belongs here: the write gate the handler asks before every command that
changes the medium; the takeover (fence the previous owner, then take the
lock); the grace period that keeps a lock that moved where it is; the owner
record in the image's metadata; the reopen with a new cluster client after
this one was blocklisted or lost the lock (and the removal of its stale
blocklist entry); connection loss (the local TPG off until the cluster is
back); the ALUA states that follow the lock; the service-map status.

Not here: the librbd/librados calls themselves (backends/rbd.py), configfs
(lio.py), the ALUA arithmetic (alua.py), the service map's names
(service_map.py), SCSI (scsi/).

Guarantees, and how:
* Fencing before writing.  A takeover breaks the holder's lock, which
  blocklists its client (librbd: rbd_blocklist_on_break_lock), then waits
  until this client has the newest OSD map before taking the lock.  Every op
  of ours carries that map epoch and an OSD handles an op only once it has
  the op's epoch, so a write the old owner still had in flight is either
  handled before ours or refused (-EBLOCKLISTED): it never lands after.
* No ping-pong.  The new owner writes an :class:`OwnerRecord` (gateway,
  client address, time) into the image metadata.  A gateway that sees writes
  while another live owner took the lock less than ``grace`` seconds ago
  answers BUSY and leaves the lock where it is; the owner's ALUA group is
  Active/Optimized, so a multipath initiator that follows ALUA stops using
  this path instead of stealing the lock back.  Round-robin initiators that
  ignore ALUA move the lock at most once per grace period.
* BUSY, not NOT READY, while a takeover runs (Linux retries BUSY; it gives up
  on "transitioning" after a few tries); reads are served meanwhile.
* -ESHUTDOWN / -EROFS (blocklisted, lock lost): BUSY, reopen with a new
  client, remove our old address from the blocklist, serve as a non-owner.

Threads: the loop thread calls only :meth:`Failover.may_write`,
:meth:`Failover.io_error` and :meth:`Failover.swap`, which read and set plain
attributes: never a cluster call, never a lock held.  Everything that talks to
the cluster or configfs runs on the failover thread, holding the gate (below)
except while it is inside configfs.

Stopping while the kernel removes the device: a lookup under the device's
configfs directory then sleeps, uninterruptibly, until the removal is
answered, and the supervisor answers once this worker has released the
device.  So :meth:`Failover.stop` waits for the thread only while it is in a
cluster call (the backend is closed next), never while it is in configfs;
a thread that comes back from configfs after the stop ends there.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from dataclasses import dataclass

from tcmu_rbd import alua, prctl, service_map

log = logging.getLogger("tcmu_rbd.failover")

OWNER_KEY = "tcmu-rbd.owner"
DEFAULT_GRACE = 10.0
REFRESH = 3.0
EAGER_POLL = 0.5   # s: until the device is reachable
STOP_WAIT = 10.0   # s: the longest stop() waits for a cluster call to return
ACQUIRE, BREAK, WAIT, MINE = "acquire", "break", "wait", "mine"
_LOST = (-errno.ESHUTDOWN, -errno.EROFS)
#: the groups the failover thread does not read: only the gateways' groups matter to it
_NOT_A_GATEWAY = (alua.DEFAULT_GROUP,)


class _Stopped(BaseException):
    """The failover thread came back from configfs after stop(): it ends."""


class _Configfs:
    """The device (lio.TcmuDevice) as the failover thread uses it: every call
    is a configfs read or write, made without the gate (module docstring)."""

    def __init__(self, dev, failover: "Failover"):
        self._dev = dev
        self._f = failover

    def __getattr__(self, name):
        v = getattr(self._dev, name)
        if not callable(v):
            return v
        f = self._f

        def outside_the_gate(*args, **kwargs):
            held = f._gate_holder == threading.get_ident()
            if held:
                f._leave_gate()
            try:
                return v(*args, **kwargs)
            finally:
                if held:
                    f._enter_gate()
        return outside_the_gate


@dataclass(frozen=True)
class OwnerRecord:
    """Who took the lock, written by the owner right after taking it."""
    gateway: str
    addr: str          # its client address, as rbd_lock_get_owners names the holder
    since: float       # wall-clock time (gateways keep NTP time)
    device: str = ""   # "<host>:<backstore>": which device on which host (its successor
                       # after a crash is the same device)

    def encode(self) -> str:
        return json.dumps({"gateway": self.gateway, "addr": self.addr, "since": self.since,
                           "device": self.device})

    @classmethod
    def decode(cls, text: str | None) -> "OwnerRecord | None":
        try:
            d = json.loads(text) if text else None
            return cls(str(d["gateway"]), str(d["addr"]), float(d["since"]),
                       str(d.get("device", ""))) if d else None
        except (ValueError, KeyError, TypeError):
            return None


def decide(record: OwnerRecord | None, holder: str | None, my_addr: str, my_device: str,
           now: float, grace: float) -> tuple[str, float]:
    """What a takeover does: (ACQUIRE | BREAK | WAIT | MINE, seconds to wait)."""
    if holder is None:
        return ACQUIRE, 0.0
    if holder == my_addr:
        return MINE, 0.0
    if record is not None and record.addr == holder:
        if record.device and record.device == my_device:
            return BREAK, 0.0          # this device's previous client: a worker that died
        age = now - record.since
        if 0 <= age < grace:
            return WAIT, grace - age
    return BREAK, 0.0


@dataclass
class Counters:
    """The reference's service-map counters, and lock transfers into this gateway."""
    lock_lost: int = 0
    conn_lost: int = 0
    cmd_timed_out: int = 0
    transfers: int = 0


class Failover:
    """The exclusive lock of one LUN's image on this gateway."""

    @property
    def owner(self) -> bool:
        """This gateway holds the exclusive lock: writes may go."""
        return self._owner

    @owner.setter
    def owner(self, value: bool) -> None:
        self._owner = value
        if self.on_owner is not None:
            self.on_owner(value)

    def __init__(self, dev, backend, reopen, host: str, grace: float = DEFAULT_GRACE,
                 refresh: float = REFRESH):
        self.dev = _Configfs(dev, self)  # lio.TcmuDevice, used outside the gate
        self.backend = backend          # the failover thread's current backend
        self._reopen_backend = reopen   # () -> a new backend (new cluster client)
        self.host = host
        self.device = "%s:%s" % (host, dev.name.name if hasattr(dev, "name") else dev.label)
        self.gateway = host             # the local ALUA group's name once there is one
        self.peers = False              # other gateways' groups exist on this device
        self.grace = grace
        self.refresh_every = refresh
        self.on_owner = None            # callable(bool) on every change of owner (metrics)
        self.owner = False              # read by the loop thread: writes may go
        self.counters = Counters()
        self._addr = ""
        self._registered = False
        self._eager_pending = False
        self._want = threading.Event()
        self._takeover_wanted = False
        self._reopen_why: str | None = None
        self._hold_until = 0.0
        self._seen_owner: str | None = None
        self._pending = None            # a new backend, for the loop thread to install
        self._swapped = threading.Event()
        self._stopping = False
        # held by the failover thread except in configfs and while idle; stop()
        # takes it before the backend may be closed
        self._gate = threading.Lock()
        self._gate_holder: int | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="failover", daemon=True)

    def start(self) -> None:
        """Register and run the failover thread.  The lock is taken without
        waiting for a write by the gateway that should write (the only one, or
        the one whose ALUA group is Active/Optimized) as soon as initiators can
        reach the device, so a single gateway never answers a first write BUSY;
        a device that is reachable already (a restarted worker) decides here,
        fencing a dead predecessor before it serves."""
        self._addr = self._client_addr(self.backend)
        self._registered = False
        self._eager_pending = True
        self._enter_gate()
        try:
            self._eager()
        finally:
            self._leave_gate()
        self._thread.start()

    def _eager(self) -> None:
        """Once the device is reachable: take the lock now if this gateway should
        write.  Not before: a new LUN joins its ALUA group before it is mapped,
        and before that this gateway cannot tell whether it is the preferred one."""
        if not self._eager_pending or not self.dev.reachable():
            return
        self._eager_pending = False
        groups = self._topology()
        self._register()         # now that the gateway's name is known
        self._publish()
        mine = alua.local_group(groups, self.gateway)
        if self.peers and (mine is None or mine.state != alua.AO):
            return
        try:
            self._takeover()
        except OSError as e:
            log.warning("%s: cannot take the lock now (%s): on the first write",
                        self.dev.label, e)

    def stop(self) -> None:
        """After this the thread makes no cluster call: the backend may be closed."""
        self._stopping = True
        self._want.set()
        self._swapped.set()
        if self._gate.acquire(timeout=STOP_WAIT):
            self._closed = True
            self._gate.release()
        else:
            log.warning("%s: the failover thread is still in a cluster call after %.0f s",
                        self.dev.label, STOP_WAIT)

    def _enter_gate(self) -> None:
        self._gate.acquire()
        self._gate_holder = threading.get_ident()
        if self._closed:
            self._leave_gate()
            raise _Stopped

    def _leave_gate(self) -> None:
        if self._gate_holder == threading.get_ident():
            self._gate_holder = None
            self._gate.release()

    # ------------------------------------------------------------ loop thread
    def may_write(self) -> bool:
        """Before a command that changes the medium: True when it may go to
        librbd; False (answer BUSY) while a takeover is asked for or runs."""
        if self.owner:
            return True
        self._takeover_wanted = True
        self._want.set()
        return False

    def io_error(self, ret: int) -> None:
        """A completion failed with ret (-errno)."""
        if ret in _LOST:
            self.owner = False
            if self._reopen_why is None:
                self._reopen_why = "this client lost the lock (%s)" % errno.errorcode.get(-ret)
                self._want.set()
        elif ret == -errno.ETIMEDOUT:
            self.counters.cmd_timed_out += 1
            if self.peers and self._reopen_why is None:
                self._reopen_why = "connection lost"
                self._want.set()

    @property
    def swap_ready(self) -> bool:
        return self._pending is not None

    def swap(self, handler) -> None:
        """Install the reopened backend (the loop thread, outside the pump):
        every command of the old one completes first."""
        new = self._pending
        if new is None:
            return
        while not handler.drain():
            log.warning("%s: still waiting for commands on the old cluster client",
                        self.dev.label)
        old = handler.backend
        handler.set_backend(new)
        old.on_complete = lambda tag, ret, extra: None
        self._old = old
        self._pending = None
        self._swapped.set()

    # ------------------------------------------------------------ failover thread
    def _run(self) -> None:
        prctl.name_thread(b"tcmu-failover")
        try:
            while not self._stopping:
                self._want.wait(EAGER_POLL if self._eager_pending else self.refresh_every)
                self._want.clear()
                self._enter_gate()
                try:
                    if self._stopping:
                        break
                    self._step()
                finally:
                    self._leave_gate()
        except _Stopped:
            pass

    def _step(self) -> None:
        """One round of the failover thread, holding the gate."""
        try:
            self._eager()
            if self._reopen_why is not None:
                self._reopen()
            if self._takeover_wanted:
                self._takeover_wanted = False
                self._takeover()
            self._refresh()
        except OSError as e:
            if -e.errno in _LOST and self._reopen_why is None:
                self.owner = False
                self._reopen_why = "this client was blocklisted"
                self._want.set()
            else:
                log.warning("%s: lock: %s", self.dev.label, e)
                time.sleep(1)
        except Exception:
            log.exception("%s: failover thread", self.dev.label)
            time.sleep(1)

    def _gateway_groups(self):
        """The gateways' ALUA groups from configfs (LIO's default group not read)."""
        return self.dev.alua_groups(skip=_NOT_A_GATEWAY)

    def _topology(self):
        """The device's ALUA groups now (the LUN and its groups are created after
        the backstore, so this is read again every time): which gateway we are,
        and whether others serve the LUN."""
        groups = self._gateway_groups()
        mine = alua.local_group(groups, self.gateway)
        self.gateway = mine.name if mine is not None else self.host
        self.peers = len(alua.gateway_groups(groups)) > 1
        return groups

    @staticmethod
    def _client_addr(backend) -> str:
        try:
            return backend.client_addr()
        except OSError:
            return ""

    def _takeover(self) -> None:
        if time.monotonic() < self._hold_until or self.owner:
            return
        b = self.backend
        t0 = time.monotonic()
        self._topology()
        record = OwnerRecord.decode(b.metadata_get(OWNER_KEY))
        holder = b.lock_owner()
        action, wait = decide(record, holder, self._addr, self.device, time.time(), self.grace)
        if action == WAIT:
            self._hold_until = time.monotonic() + wait
            log.info("%s: writes refused (BUSY): gateway %s took the lock %.1f s ago; it "
                     "stays there for the %.0f s grace period", self.dev.label, record.gateway,
                     self.grace - wait, self.grace)
            return
        if action == BREAK:
            log.warning("%s: taking the lock from %s (%s): blocklisting it first",
                        self.dev.label, record.gateway if record and record.addr == holder
                        else "an unknown client", holder)
            b.break_lock(holder)
        if action != MINE:
            b.wait_for_osdmap()    # the blocklist is in our map: no stale write after ours
            try:
                b.acquire_lock()
            except OSError as e:
                if e.errno in (errno.EROFS, errno.EBUSY, errno.EAGAIN):
                    log.info("%s: another gateway took the lock first", self.dev.label)
                    self._hold_until = time.monotonic() + self.grace
                    return
                raise
        self._record = OwnerRecord(self.gateway, self._addr, time.time(), self.device)
        b.metadata_set(OWNER_KEY, self._record.encode())
        self.owner = True
        if action != MINE:
            self.counters.transfers += 1
        log.info("%s: this gateway (%s) owns the lock (%s in %.2f s)", self.dev.label,
                 self.gateway, action, time.monotonic() - t0)
        self._apply_alua(self.gateway)
        self._publish()

    def _refresh(self) -> None:
        b = self.backend
        groups = self._topology()
        if self.owner:
            if not b.is_lock_owner():
                self._lost("the lock was taken by another client")
                return
            rec = self._record
            if rec.gateway != self.gateway:    # the groups appeared after we took it
                self._record = OwnerRecord(self.gateway, rec.addr, rec.since, rec.device)
                b.metadata_set(OWNER_KEY, self._record.encode())
            if alua.changes(groups, self.gateway):   # as read just now: one read a round
                self._apply_alua(self.gateway)
            return
        record = OwnerRecord.decode(b.metadata_get(OWNER_KEY))
        holder = b.lock_owner()
        owner = record.gateway if record and holder and record.addr == holder else None
        if owner is not None and owner != self._seen_owner:
            self._apply_alua(owner)
            self._publish()

    def _lost(self, why: str) -> None:
        self.owner = False
        if self._reopen_why is None:
            self._reopen_why = why

    def _apply_alua(self, owner: str) -> None:
        self._seen_owner = owner
        groups = self._gateway_groups()
        for group, state in alua.changes(groups, owner).items():
            self.dev.set_alua_state(group, state)

    def _reopen(self) -> None:
        why, old_addr = self._reopen_why, self._addr
        self.owner = False
        self.counters.lock_lost += why != "connection lost"
        self.counters.conn_lost += why == "connection lost"
        log.warning("%s: %s: reopening the image with a new cluster client", self.dev.label, why)
        self._publish()
        disabled = self._disable_tpgs() if why == "connection lost" else []
        new = None
        while not self._stopping:
            try:
                new = self._reopen_backend()
                break
            except Exception as e:
                log.warning("%s: reopen failed (%s): retrying in 5 s", self.dev.label, e)
                time.sleep(5)
        if new is None:
            return
        self._swapped.clear()
        self._pending = new
        self._swapped.wait()
        if self._stopping and self._pending is not None:
            new.close()
            return
        self.backend = new
        self._addr = self._client_addr(new)
        old, self._old = getattr(self, "_old", None), None
        if old is not None:
            old.close()
        self._release_dead_lock(old_addr)
        self._unblocklist(old_addr)
        for m in disabled:
            self.dev.enable_tpg(m, True)
        self._reopen_why = None
        self._seen_owner = None
        self._registered = False
        self._register()
        self._publish()
        log.info("%s: serving again as a non-owner (client %s)", self.dev.label, self._addr)

    def _release_dead_lock(self, addr: str) -> None:
        """Our previous client still holds the lock when the cluster (not a peer's
        takeover) blocklisted it: break it now, while that client is fenced anyway,
        so that the next write acquires instead of breaking it again, which would
        blocklist the address once more after we removed the entry."""
        try:
            if addr and self.backend.lock_owner() == addr:
                self.backend.break_lock(addr)
                log.info("%s: released the lock of our blocklisted client %s", self.dev.label,
                         addr)
        except OSError as e:
            log.warning("%s: cannot break the lock of our old client %s: %s", self.dev.label,
                        addr, e)

    def _unblocklist(self, addr: str) -> None:
        """Our previous client's blocklist entry, which would otherwise stay
        for an hour (entries pile up with every failover)."""
        if not addr:
            return
        for word in ("blocklist", "blacklist"):   # older clusters know only the second
            rc, _, status = self.backend.mon_command(
                {"prefix": "osd " + word, "blocklistop": "rm", "blacklistop": "rm",
                 "addr": addr})
            if rc != -errno.EINVAL:
                break
        if rc < 0 and rc != -errno.ENOENT:
            log.warning("%s: cannot remove %s from the OSD blocklist: %s", self.dev.label,
                        addr, status or errno.errorcode.get(-rc))

    def _disable_tpgs(self) -> list:
        """Connection lost: turn the local TPGs off so initiators use other
        gateways instead of waiting on this one (the TPG's other LUNs too)."""
        groups = self._gateway_groups()
        members = [m for g in alua.gateway_groups(groups) for m in g.members if m.enabled]
        for m in members:
            log.warning("%s: cluster unreachable: disabling %s/tpgt_%d until it is back",
                        self.dev.label, m.wwn, m.tpgt)
            self.dev.enable_tpg(m, False)
        return members

    # ------------------------------------------------------------ service map
    def _register(self) -> None:
        """Once per cluster client (librados refuses a second registration)."""
        if self._registered:
            return
        b = self.backend
        try:
            b.service_register(service_map.SERVICE,
                               service_map.daemon_name(self.gateway, b.pool, b.namespace,
                                                       b.image),
                               service_map.encode_kv(service_map.metadata(
                                   self.gateway, b.pool, b.namespace, b.image, "")))
            self._registered = True
        except (OSError, ValueError) as e:
            log.warning("%s: service map registration: %s", self.dev.label, e)

    def _publish(self) -> None:
        if not self._registered:
            return
        c = self.counters
        try:
            self.backend.service_update(service_map.encode_kv(service_map.status(
                self.owner, c.lock_lost, c.conn_lost, c.cmd_timed_out)))
        except (OSError, ValueError) as e:
            log.debug("%s: service map update: %s", self.dev.label, e)
