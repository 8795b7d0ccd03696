"""failover.py: the takeover rule (pure) and two gateways' lock on one real image.

The cluster tests run two Failover objects, each on its own RbdBackend (its own
cluster client), as two gateways would: the lock moves only by a fenced
takeover, the grace period holds it, the loser is blocklisted, reopens and
serves again.  The kernel side (configfs ALUA, the handler's loop) is the VM
test's; here the device is a stand-in that records ALUA writes.
"""

import dataclasses
import errno
import threading
import time

import pytest

from tcmu_rbd import alua
from tcmu_rbd.failover import (ACQUIRE, BREAK, MINE, OWNER_KEY, WAIT, Failover, OwnerRecord,
                               decide)
from tcmu_rbd.lio import AluaGroup, AluaMember

ME, PEER = "127.0.0.1:0/111", "127.0.0.1:0/222"


def test_decide_no_holder_acquires():
    assert decide(None, None, ME, "gw1", 100.0, 10) == (ACQUIRE, 0.0)


def test_decide_own_lock_is_mine():
    assert decide(None, ME, ME, "gw1", 100.0, 10)[0] == MINE


def test_decide_recent_peer_waits_out_the_grace():
    rec = OwnerRecord("gw2", PEER, 95.0)
    assert decide(rec, PEER, ME, "gw1", 100.0, 10) == (WAIT, 5.0)


def test_decide_old_peer_is_broken():
    rec = OwnerRecord("gw2", PEER, 80.0)
    assert decide(rec, PEER, ME, "gw1", 100.0, 10)[0] == BREAK


def test_decide_holder_without_record_is_broken():
    # a holder that wrote no record (another tool, a crash before the record)
    assert decide(OwnerRecord("gw2", "127.0.0.1:0/999", 99.0), PEER, ME, "gw1", 100.0, 10)[0] \
        == BREAK
    assert decide(None, PEER, ME, "gw1", 100.0, 10)[0] == BREAK


def test_decide_our_dead_predecessor_is_broken_at_once():
    # this gateway's previous worker (crashed, restarted): no grace for it
    rec = OwnerRecord("gw1", PEER, 99.5, "host1:gw1.rbd.img")
    assert decide(rec, PEER, ME, "host1:gw1.rbd.img", 100.0, 10)[0] == BREAK
    # the same gateway name on another device (two gateways in one kernel) is a peer
    assert decide(rec, PEER, ME, "host1:gw2.rbd.img", 100.0, 10)[0] == WAIT


def test_decide_clock_behind_does_not_hold_forever():
    rec = OwnerRecord("gw2", PEER, 500.0)    # the record is "from the future"
    assert decide(rec, PEER, ME, "gw1", 100.0, 10)[0] == BREAK


def test_owner_record_round_trip_and_garbage():
    r = OwnerRecord("gw1", ME, 12.5, "h:gw1.rbd.img")
    assert OwnerRecord.decode(r.encode()) == r
    for bad in (None, "", "{", "[]", '{"gateway": "x"}', "null"):
        assert OwnerRecord.decode(bad) is None


def _groups(state1=0, state2=1):
    m = AluaMember("iscsi", "iqn.2003-01.org.example:t", 1, "lun_0", True)
    return [AluaGroup("default_tg_pt_gp", 0, 0, 3, 0, False, 0xCF, ()),
            AluaGroup("gw1", 1, state1, 1, 45, False, 0x83, (m,)),
            AluaGroup("gw2", 2, state2, 1, 45, False, 0x83, ())]


def test_alua_states_follow_the_owner():
    g = _groups()
    assert alua.local_group(g).name == "gw1"
    assert alua.states_for_owner(g, "gw2") == {"gw1": alua.ANO, "gw2": alua.AO}
    assert alua.changes(g, "gw1") == {}
    assert alua.changes(g, "gw2") == {"gw1": alua.ANO, "gw2": alua.AO}
    assert alua.changes(g, "nobody") == {}


def test_alua_local_group_keeps_its_name_while_its_tpg_is_off():
    """ceph-iscsi maps the LUN in every gateway's TPG and enables only its own;
    with its own switched off (a partition) the gateway is still the same one."""
    on = AluaMember("iscsi", "iqn.2003-01.org.example:t", 1, "lun_0", True)
    off, other = dataclasses.replace(on, enabled=False), AluaMember(
        "iscsi", "iqn.2003-01.org.example:t", 2, "lun_0", False)

    def groups(m1):
        return [AluaGroup("default_tg_pt_gp", 0, 0, 3, 0, False, 0xCF, ()),
                AluaGroup("gw1", 1, 0, 1, 45, False, 0x83, (m1,)),
                AluaGroup("gw2", 2, 1, 1, 45, False, 0x83, (other,))]
    assert alua.local_group(groups(on)).name == "gw1"
    assert alua.local_group(groups(on), "gw2").name == "gw1"      # the enabled TPG decides
    assert alua.local_group(groups(off)) is None                  # nothing known yet
    assert alua.local_group(groups(off), "gw1").name == "gw1"
    assert alua.local_group(groups(off), "host") is None
    gone = [g for g in groups(off) if g.name != "gw1"]            # its group removed
    assert alua.local_group(gone, "gw1") is None


def test_alua_port_groups_report_every_gateway_with_rel_port_tag():
    pgs = alua.port_groups(_groups())
    assert [(p.id, p.name, p.state) for p in pgs] == [(1, "gw1", 0), (2, "gw2", 1)]
    assert [(pt.rel_port_id, pt.enabled) for p in pgs for pt in p.ports] == [(1, True), (2, False)]
    assert pgs[1].ports[0].wwn == "iqn.2003-01.org.example:t"


def test_alua_default_group_only_keeps_the_default():
    m = AluaMember("iscsi", "iqn.x", 1, "lun_0", True)
    assert alua.port_groups([AluaGroup("default_tg_pt_gp", 0, 0, 3, 0, False, 0xCF, (m,))]) \
        is None


# --------------------------------------------------------------------------- cluster

class FakeDev:
    """The configfs side: ALUA groups in memory."""

    def __init__(self, name, local, preferred=None, gateways=("gw1", "gw2")):
        self.label = name
        self.gateways = gateways
        m = AluaMember("iscsi", "iqn.2003-01.org.example:t", 1 if local == "gw1" else 2,
                       "lun_0", True)
        # configfs as sync leaves it: the preferred owner's group Active/Optimized
        self.states = {g: alua.AO if g == preferred else alua.ANO for g in ("gw1", "gw2")}
        self.local = local
        self.member = m

    def alua_groups(self, skip=()):
        assert skip == (alua.DEFAULT_GROUP,)     # the failover thread reads only gateways'
        return [AluaGroup(n, i, self.states[n], 1, 45, False, 0x83,
                          (self.member,) if n == self.local else ())
                for i, n in ((1, "gw1"), (2, "gw2")) if n in self.gateways]

    def set_alua_state(self, group, state):
        self.states[group] = state
        return True

    tpg_switches = ()

    def enable_tpg(self, member, on):
        self.tpg_switches += ((member.tpgt, on),)
        if member.tpgt == self.member.tpgt:
            self.member = dataclasses.replace(self.member, enabled=on)
        return True

    def reachable(self):
        return True


class FakeHandler:
    """What Failover.swap needs of the loop."""

    def __init__(self, backend):
        self.backend = backend

    def drain(self):
        return True

    def set_backend(self, b):
        self.backend = b


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def two_gateways(ceph, rbd_image):
    from tcmu_rbd.backends.rbd import RbdBackend
    conf = ceph.env().get("CEPH_CONF")
    made = []

    def open_backend():
        b = RbdBackend(rbd_image.pool, rbd_image.name, conf=conf)
        made.append(b)
        register = b.service_register
        b.registered = []     # the daemon names this client registered in the service map
        b.service_register = lambda svc, daemon, md: (b.registered.append(daemon),
                                                      register(svc, daemon, md))[1]
        return b

    def gateway(name, grace, preferred, peers):
        dev = FakeDev(name, name, preferred, ("gw1", "gw2") if peers else (name,))
        f = Failover(dev, open_backend(), open_backend, "host", grace=grace, refresh=0.2)
        f.start()
        return f

    gws = []
    yield lambda name, grace=10.0, preferred=None, peers=True: \
        gws.append(gateway(name, grace, preferred, peers)) or gws[-1]
    for f in gws:
        f.stop()
    for b in made:
        b.close()


def test_first_write_takes_the_free_lock_and_records_the_owner(two_gateways):
    gw1 = two_gateways("gw1")
    assert not gw1.may_write()           # BUSY: the takeover starts
    assert _wait(lambda: gw1.owner)
    assert gw1.may_write()
    rec = OwnerRecord.decode(gw1.backend.metadata_get(OWNER_KEY))
    assert rec.gateway == "gw1" and rec.addr == gw1.backend.client_addr()
    assert gw1.dev.states == {"gw1": alua.AO, "gw2": alua.ANO}


def test_preferred_owner_takes_the_lock_at_start(two_gateways):
    gw1 = two_gateways("gw1", preferred="gw1")
    assert gw1.owner and gw1.may_write()       # no first write answered BUSY
    gw2 = two_gateways("gw2", preferred="gw1")
    assert not gw2.owner and gw1.backend.is_lock_owner()


def test_single_gateway_takes_the_lock_at_start_and_fences_its_dead_predecessor(two_gateways):
    first = two_gateways("gw1", peers=False)
    assert first.owner
    dead_addr = first.backend.client_addr()
    first._stopping = True                     # as a worker killed -9: nothing released
    second = two_gateways("gw1", peers=False)  # the restarted worker, same gateway
    assert second.owner and second.backend.client_addr() != dead_addr
    blocklist = second.backend.mon_command({"prefix": "osd blocklist ls", "format": "json"})[1]
    assert dead_addr in blocklist


def test_grace_keeps_the_lock_where_it_moved(two_gateways):
    gw1, gw2 = two_gateways("gw1", grace=5.0), two_gateways("gw2", grace=5.0)
    gw1.may_write()
    assert _wait(lambda: gw1.owner)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:       # writes on gw2 inside the grace period
        assert not gw2.may_write()
        time.sleep(0.1)
    assert gw1.owner and gw1.backend.is_lock_owner()
    # the non-owner learned who owns it: its ALUA view says so
    assert _wait(lambda: gw2.dev.states == {"gw1": alua.AO, "gw2": alua.ANO}, 5)


def test_takeover_fences_the_old_owner_which_reopens_as_non_owner(two_gateways):
    gw1, gw2 = two_gateways("gw1", grace=0.5), two_gateways("gw2", grace=0.5)
    gw1.may_write()
    assert _wait(lambda: gw1.owner)
    old_addr = gw1.backend.client_addr()
    time.sleep(0.6)                           # the grace is over
    gw2.may_write()
    assert _wait(lambda: gw2.owner)
    assert gw2.dev.states == {"gw1": alua.ANO, "gw2": alua.AO}
    blocklist = gw2.backend.mon_command({"prefix": "osd blocklist ls", "format": "json"})[1]
    assert old_addr in blocklist, blocklist
    # the old owner's client is fenced: its I/O fails with ESHUTDOWN
    with pytest.raises(OSError) as e:
        gw1.backend.is_lock_owner()
    assert e.value.errno == errno.ESHUTDOWN
    gw1.io_error(-errno.ESHUTDOWN)            # as a failed write would report
    assert not gw1.owner
    h = FakeHandler(gw1.backend)
    assert _wait(lambda: gw1.swap_ready)
    gw1.swap(h)
    assert _wait(lambda: gw1._reopen_why is None)
    assert h.backend is gw1.backend and gw1.backend.client_addr() != old_addr
    # its own stale entry is gone; it serves as a non-owner, never BUSY forever
    assert _wait(lambda: old_addr not in gw2.backend.mon_command(
        {"prefix": "osd blocklist ls", "format": "json"})[1], 10)
    assert _wait(lambda: gw1.dev.states == {"gw1": alua.ANO, "gw2": alua.AO}, 5)
    assert gw1.counters.lock_lost == 1
    time.sleep(0.6)
    gw1.may_write()                            # after the grace it may take it back
    assert _wait(lambda: gw1.owner)
    assert _wait(lambda: not gw2.owner, 10)


def test_connection_lost_disables_the_local_tpg_until_a_new_client_is_connected(two_gateways):
    gw1 = two_gateways("gw1", preferred="gw1")
    assert gw1.owner
    old = gw1.backend
    gw1.io_error(-errno.ETIMEDOUT)             # a command timed out (rados_osd_op_timeout)
    h = FakeHandler(old)
    assert _wait(lambda: gw1.swap_ready)
    assert gw1.dev.tpg_switches == ((1, False),)     # initiators go to the other gateway
    gw1.swap(h)
    assert _wait(lambda: gw1._reopen_why is None)
    assert gw1.dev.tpg_switches == ((1, False), (1, True))
    assert gw1.backend is not old and h.backend is gw1.backend
    assert gw1.counters.conn_lost == 1 and gw1.counters.cmd_timed_out == 1


def test_reopened_while_its_tpg_is_off_the_gateway_keeps_its_name(two_gateways):
    """CI found it: the partition switched the owner's TPG off, a configfs refresh
    then took the host name for the gateway's, and the reopened client registered
    ``<host>:pool/image`` in the service map (and would record it as the owner)."""
    gw = two_gateways("gw1", preferred="gw1")
    assert gw.owner and gw.backend.registered == [f"gw1:{gw.backend.pool}/{gw.backend.image}"]
    gw.dev.enable_tpg(gw.dev.member, False)    # as `echo 0 >tpgt_1/enable` does
    time.sleep(0.6)                            # the thread reads configfs again (0.2 s)
    old = gw.backend.client_addr()
    rc, _, status = gw.backend.mon_command({"prefix": "osd blocklist", "blocklistop": "add",
                                            "addr": old})
    assert rc == 0, status
    gw.backend.wait_for_osdmap()
    gw.io_error(-errno.ESHUTDOWN)
    h = FakeHandler(gw.backend)
    assert _wait(lambda: gw.swap_ready)
    gw.swap(h)
    assert _wait(lambda: gw._reopen_why is None)
    assert gw.gateway == "gw1"
    assert gw.backend.registered == [f"gw1:{gw.backend.pool}/{gw.backend.image}"]
    gw.dev.enable_tpg(gw.dev.member, True)
    gw.may_write()
    assert _wait(lambda: gw.owner)
    assert OwnerRecord.decode(gw.backend.metadata_get(OWNER_KEY)).gateway == "gw1"


def test_the_failover_thread_is_named_for_top(two_gateways):
    """top -H and the benchmark's CPU per thread tell it from the handler loop."""
    import glob
    two_gateways("gw1")
    names = set()
    for comm in glob.glob("/proc/self/task/*/comm"):
        with open(comm) as f:
            names.add(f.read().strip())
    assert "tcmu-failover" in names, names


def test_connection_lost_without_peers_keeps_the_tpg(two_gateways):
    gw1 = two_gateways("gw1", peers=False)
    gw1.io_error(-errno.ETIMEDOUT)
    time.sleep(1)
    assert not gw1.swap_ready and gw1.dev.tpg_switches == ()
    assert gw1.counters.cmd_timed_out == 1


class RemovedDev(FakeDev):
    """configfs while the kernel removes the device: a lookup sleeps until the
    removal is answered, then finds nothing."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.removing = False
        self.inside = threading.Event()
        self.answered = threading.Event()

    def alua_groups(self, skip=()):
        if self.removing:
            self.inside.set()
            self.answered.wait(30)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return super().alua_groups(skip)


class CallLog:
    """The real backend, with the names of the calls made through it."""

    def __init__(self, backend):
        self._b = backend
        self.calls = []

    def __getattr__(self, name):
        v = getattr(self._b, name)
        if not callable(v):
            return v

        def call(*a, **kw):
            self.calls.append(name)
            return v(*a, **kw)
        return call


def test_stop_does_not_wait_for_a_thread_inside_configfs_and_no_cluster_call_follows(
        ceph, rbd_image):
    from tcmu_rbd.backends.rbd import RbdBackend
    conf = ceph.env().get("CEPH_CONF")
    backend = RbdBackend(rbd_image.pool, rbd_image.name, conf=conf)
    dev = RemovedDev("gw1", "gw1", "gw1", ("gw1",))
    b = CallLog(backend)
    f = Failover(dev, b, lambda: None, "host", refresh=0.05)
    try:
        f.start()
        assert f.owner
        dev.removing = True
        assert dev.inside.wait(5)                  # the thread is in configfs
        t0 = time.monotonic()
        f.stop()
        assert time.monotonic() - t0 < 1.0         # not the 10 s a cluster call may take
        n = len(b.calls)
    finally:
        backend.close()                            # what the worker does next
        dev.answered.set()                         # the kernel got the supervisor's answer
    f._thread.join(5)
    assert not f._thread.is_alive()
    assert b.calls[n:] == []                       # nothing touched the closed image


def test_client_blocklisted_by_the_cluster_reopens_and_leaves_no_stale_entry(two_gateways):
    """`ceph osd blocklist add` of the owner's client (no peer took the lock): the
    worker reopens, and the next write acquires the lock without blocklisting its old
    address again, so no entry of ours is left behind."""
    gw = two_gateways("gw1", peers=False)
    assert gw.owner
    old = gw.backend.client_addr()
    rc, _, status = gw.backend.mon_command({"prefix": "osd blocklist", "blocklistop": "add",
                                            "addr": old})
    assert rc == 0, status
    gw.backend.wait_for_osdmap()
    gw.io_error(-errno.ESHUTDOWN)              # as the first failed write would report
    h = FakeHandler(gw.backend)
    assert _wait(lambda: gw.swap_ready)
    gw.swap(h)
    assert _wait(lambda: gw._reopen_why is None)
    assert gw.backend.lock_owner() != old      # the dead client's lock is gone
    gw.may_write()
    assert _wait(lambda: gw.owner)
    blocklist = gw.backend.mon_command({"prefix": "osd blocklist ls", "format": "json"})[1]
    assert old not in blocklist, blocklist
