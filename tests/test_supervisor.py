"""The supervisor (tcmu_rbd.supervisor): the event state machine against a fake
kernel (netlink bytes from our encoder over a socketpair, sysfs/configfs in a
temp dir through lio.Roots) and fake workers (a small script below, used only
here): every event answered once, crash restarts, restart recovery, resync and
shutdown."""

import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tcmu_rbd import genl, lio
from tcmu_rbd import netlink as nl
from tcmu_rbd import settings as st
from tcmu_rbd import supervisor as sv
from tcmu_rbd.mainloop import GLibLoop

ROOT = Path(__file__).resolve().parent.parent
FAMILY = 0x1A

FAKE_WORKER = textwrap.dedent(
    r'''
    import json, os, socket, sys, time
    args = sys.argv[1:]
    uio = args[args.index("--uio") + 1]
    fd = int(args[args.index("--ctl-fd") + 1])
    fake = os.environ["FAKE_DIR"]
    def rec(obj):
        with open(os.path.join(fake, uio + ".log"), "a") as f:
            f.write(json.dumps(obj) + "\n")
    rec({"argv": args, "pid": os.getpid(), "env_level": os.environ.get("TCMU_RBD_LOG_LEVEL")})
    try:
        with open(os.path.join(fake, uio + ".json")) as f:
            b = json.load(f)
    except FileNotFoundError:
        b = {}
    s = socket.socket(fileno=fd)
    def send(o):
        s.sendall((json.dumps(o) + "\n").encode())
    print("<3>fake worker says hello", file=sys.stderr, flush=True)
    start = b.get("start", "ready")
    if start == "hang":
        time.sleep(600)
    if start == "crash":
        sys.exit(7)
    if start == "fail":
        m = {"event": "failed", "error": b.get("error", "it failed")}
        if "errno" in b:
            m["errno"] = b["errno"]
        send(m)
        sys.exit(1)
    send({"event": "ready"})
    if start == "ready_then_crash":
        time.sleep(0.3)
        os._exit(9)
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            rec({"eof": True})
            sys.exit(0)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            rec({"req": req})
            op = req["op"]
            if op in b.get("hang_ops", []):
                continue
            if op == "stop":
                if b.get("stop") == "ignore":
                    continue
                send({"id": req["id"], "ok": True})
                if b.get("stop") == "answer_then_hang":   # a thread stuck until the reply
                    time.sleep(600)
                sys.exit(0)
            r = b.get("ops", {}).get(op, {"ok": True})
            send({"id": req["id"], **r})
    '''
)


class RecordingKernel(lio.Kernel):
    """Records every device action (name, action, value) and module parameter."""

    def __init__(self, roots, monkeypatch):
        super().__init__(roots)
        self.actions = []
        self.params = []
        write = lio.TcmuDevice.action

        def action(dev, action, value):
            self.actions.append((dev.name.name, action, value))
            return write(dev, action, value)

        monkeypatch.setattr(lio.TcmuDevice, "action", action)

    def modparam(self, name, value):
        r = super().modparam(name, value)
        self.params.append((name, value, r))
        return r


class Harness:
    def __init__(self, tmp: Path, monkeypatch, **overrides):
        self.tmp = tmp
        self.fake = tmp / "fake"
        self.fake.mkdir()
        worker = tmp / "fake_worker.py"
        worker.write_text(FAKE_WORKER)
        monkeypatch.setenv("FAKE_DIR", str(self.fake))
        self.roots = lio.Roots(sysfs=str(tmp / "sys"), configfs=str(tmp / "cfg"),
                               proc=str(tmp / "proc"))
        os.makedirs(self.roots.uio_class)
        os.makedirs(self.roots.modparams)
        for p in ("block_netlink", "reset_netlink"):
            (Path(self.roots.modparams) / p).write_text("0\n")
        kw = dict(worker_start_timeout=3.0, worker_stop_timeout=1.5, request_timeout=1.5,
                  restart_backoff_max=0.3, worker_command=[sys.executable, str(worker)])
        kw.update(overrides)
        self.settings = st.Settings(**kw)
        self.ksock, dsock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ksock.setblocking(False)
        self.netlink = nl.TcmuNetlink.from_socket(dsock, FAMILY)
        self.kernel = RecordingKernel(self.roots, monkeypatch)
        self.loop = GLibLoop()
        self.sup = sv.Supervisor(self.settings, self.netlink, self.kernel, self.loop)
        self.sup.attach_netlink()
        self.got = []
        self.next_id = 100

    # kernel side
    def add_uio(self, minor, name, cfg="rbd/pool/img", hba=1):
        u = Path(self.roots.uio_class) / f"uio{minor}"
        u.mkdir(parents=True, exist_ok=True)
        full = f"tcm-user/{hba}/{name}/{cfg}"
        (u / "name").write_text(full + "\n")
        a = Path(self.roots.configfs) / f"user_{hba}" / name / "action"
        a.mkdir(parents=True, exist_ok=True)
        for f in ("block_dev", "reset_ring"):
            (a / f).write_text("0\n")
        return full

    def action_file(self, name, action, hba=1):
        return (Path(self.roots.configfs) / f"user_{hba}" / name / "action" / action).read_text().strip()

    def behave(self, minor, **b):
        (self.fake / f"uio{minor}.json").write_text(json.dumps(b))

    def worker_log(self, minor):
        p = self.fake / f"uio{minor}.log"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def send(self, cmd, **kw):
        self.next_id += 1
        kw.setdefault("device_id", self.next_id)
        self.ksock.send(nl.build_tcmu_event(FAMILY, cmd, **kw))
        return kw["device_id"]

    def added(self, minor, name, cfg="rbd/pool/img", **kw):
        full = self.add_uio(minor, name, cfg)
        return self.send(nl.TCMU_CMD_ADDED_DEVICE, device=full, minor=minor, **kw)

    def _drain(self):
        while True:
            try:
                raw = self.ksock.recv(65536)
            except BlockingIOError:
                return
            for m in genl.decode_nlmsgs(raw):
                self.got.append(nl.parse_reply(genl.decode_genl(m)))

    def reply_for(self, dev_id, timeout=8.0):
        def have():
            self._drain()
            return any(r[1] == dev_id for r in self.got)
        assert self.loop.run_until(have, timeout), f"no reply for device id {dev_id}; got {self.got}"
        r = [x for x in self.got if x[1] == dev_id]
        self.got = [x for x in self.got if x[1] != dev_id]
        assert len(r) == 1, r
        return r[0][0], r[0][2]

    def run_until(self, pred, timeout=8.0):
        assert self.loop.run_until(pred, timeout)

    def settle(self, secs):
        self.loop.run_until(lambda: False, secs)

    def close(self):
        done = []
        self.sup.shutdown(lambda: done.append(1))
        self.loop.run_until(lambda: done, 10)
        self.sup.detach_netlink()
        self.ksock.close()
        self.netlink.close()


@pytest.fixture
def h(tmp_path, monkeypatch):
    hh = Harness(tmp_path, monkeypatch)
    yield hh
    hh.close()


def state(h, minor):
    dev = h.sup.devices.get(f"uio{minor}")
    return dev.state if dev else None


# --- ADDED_DEVICE ---------------------------------------------------------------


def test_added_ready_replies_zero_and_passes_contract_args(h, caplog):
    caplog.set_level(logging.INFO)
    did = h.added(0, "disk0", "rbd/pool/img;osd_op_timeout=10")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 0)
    assert state(h, 0) == sv.READY
    argv = h.worker_log(0)[0]["argv"]
    assert argv[:2] == ["--uio", "uio0"] and argv[2] == "--ctl-fd" and argv[3].isdigit()
    assert argv[4:8] == ["--osd-op-timeout", "30", "--lock-grace", "10.0"]
    assert argv[8] == "--metrics-fd" and argv[9].isdigit() and len(argv) == 10
    assert h.worker_log(0)[0]["env_level"] == "info"
    # worker stderr relayed with the device context and its level
    rec = [r for r in caplog.records if "fake worker says hello" in r.getMessage()]
    assert rec and rec[0].levelno == logging.ERROR
    assert "device=disk0 uio=uio0 image=pool/img" in rec[0].getMessage()
    # nothing recovery-like for a new device
    assert h.kernel.actions == []


def test_added_worker_failure_reply_and_operator_message(h, caplog):
    h.behave(0, start="fail", error="image pool/missing does not exist")
    did = h.added(0, "disk0", "rbd/pool/missing")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.ENOENT)
    assert "worker failed to start: image pool/missing does not exist" in caplog.text
    assert "device=disk0" in caplog.text
    assert "uio0" not in h.sup.devices
    h.run_until(lambda: not h.sup.zombies)


def test_added_worker_failure_with_errno(h):
    h.behave(0, start="fail", error="permission denied by cephx", errno=errno.EACCES)
    did = h.added(0, "disk0")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.EACCES)


def test_added_start_timeout_kills_worker(tmp_path, monkeypatch, caplog):
    hh = Harness(tmp_path, monkeypatch, worker_start_timeout=0.8)
    try:
        hh.behave(0, start="hang")
        t = time.monotonic()
        did = hh.added(0, "disk0")
        assert hh.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.ETIMEDOUT)
        assert time.monotonic() - t < 3
        pid = hh.worker_log(0)[0]["pid"]
        hh.run_until(lambda: not hh.sup.zombies)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert "not ready within" in caplog.text
    finally:
        hh.close()


def test_added_crash_before_ready(h, caplog):
    h.behave(0, start="crash")
    did = h.added(0, "disk0")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.EIO)
    assert "exit code 7" in caplog.text


def test_other_subtype_gets_enoent_and_no_worker(h):
    did = h.added(0, "g", "glfs/vol@host/file")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.ENOENT)
    assert h.worker_log(0) == [] and not h.sup.devices


def test_malformed_events(h):
    did = h.send(nl.TCMU_CMD_ADDED_DEVICE, device="tcm-user/1/x/rbd/p/i")  # no MINOR
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.EINVAL)
    did = h.send(nl.TCMU_CMD_ADDED_DEVICE, device="garbage", minor=5)
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.EINVAL)
    bad = genl.encode_genl(FAMILY, nl.TCMU_CMD_REMOVED_DEVICE, 2,
                           genl.encode_attr(nl.TCMU_ATTR_MINOR, b"\1")
                           + genl.attr_u32(nl.TCMU_ATTR_DEVICE_ID, 77)
                           + genl.attr_string(nl.TCMU_ATTR_DEVICE, "tcm-user/1/x/rbd/p/i"), flags=0)
    h.ksock.send(bad)
    assert h.reply_for(77) == (nl.TCMU_CMD_REMOVED_DEVICE_DONE, -errno.EINVAL)
    # no DEVICE_ID: nothing can be answered (dropped, as tcmu-runner)
    h.ksock.send(nl.build_tcmu_event(FAMILY, 1, device="tcm-user/1/x/rbd/p/i", minor=3))
    h.settle(0.2)
    h._drain()
    assert h.got == []


def test_version1_event_is_not_answered(h):
    full = h.add_uio(0, "disk0")
    h.ksock.send(nl.build_tcmu_event(FAMILY, 1, device=full, minor=0, device_id=9, version=1))
    h.run_until(lambda: state(h, 0) == sv.READY)
    h._drain()
    assert h.got == []


# --- REMOVED_DEVICE -------------------------------------------------------------


def test_removed_stops_worker_then_replies(h):
    did = h.added(0, "disk0")
    assert h.reply_for(did)[1] == 0
    did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="tcm-user/1/disk0/rbd/pool/img", minor=0)
    assert h.reply_for(did) == (nl.TCMU_CMD_REMOVED_DEVICE_DONE, 0)
    assert {"req": {"id": 1, "op": "stop"}} in h.worker_log(0)
    h.run_until(lambda: not h.sup.devices)     # forgotten once the worker exited


def _removed_with_worker(h, stop):
    """REMOVED_DEVICE for a device whose worker answers "stop" as ``stop`` says:
    (the worker's pid, seconds until the kernel had its answer)."""
    h.behave(0, stop=stop)
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    pid = h.worker_log(0)[0]["pid"]
    t = time.monotonic()
    did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="x", minor=0)
    assert h.reply_for(did) == (nl.TCMU_CMD_REMOVED_DEVICE_DONE, 0)
    return pid, time.monotonic() - t


def test_removed_is_answered_when_the_worker_released_the_device_not_at_its_exit(h):
    # a worker thread reading the device's configfs sleeps until the kernel has
    # its answer: the answer must not wait for the worker's exit
    pid, seconds = _removed_with_worker(h, "answer_then_hang")
    assert seconds < 1.0                       # before the stop timeout's SIGKILL
    os.kill(pid, 0)                            # still there when the kernel got its answer
    h.run_until(lambda: not h.sup.devices)     # gone once it exits (killed here)
    h._drain()
    assert h.got == []                         # and answered once


def test_removed_unknown_device_is_ok(h):
    did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="tcm-user/1/zz/rbd/p/i", minor=9)
    assert h.reply_for(did) == (nl.TCMU_CMD_REMOVED_DEVICE_DONE, 0)


def test_removed_worker_ignoring_stop_is_killed_within_bound(h):
    pid, seconds = _removed_with_worker(h, "ignore")
    assert 1.0 < seconds < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- RECONFIG_DEVICE ------------------------------------------------------------


def test_reconfig_ops(h):
    h.behave(0, ops={"writecache": {"ok": False, "error": "not supported", "errno": errno.EOPNOTSUPP}})
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    R, DONE = nl.TCMU_CMD_RECONFIG_DEVICE, nl.TCMU_CMD_RECONFIG_DEVICE_DONE
    assert h.reply_for(h.send(R, device="x", minor=0, dev_size=1 << 33)) == (DONE, 0)
    assert h.reply_for(h.send(R, device="x", minor=0, dev_cfg="rbd/pool/img2")) == (DONE, 0)
    assert h.sup.devices["uio0"].tcmu.name.dev_config == "rbd/pool/img2"
    assert h.reply_for(h.send(R, device="x", minor=0, writecache=1)) == (DONE, -errno.EOPNOTSUPP)
    assert h.reply_for(h.send(R, device="x", minor=0)) == (DONE, -errno.EOPNOTSUPP)
    reqs = [x["req"] for x in h.worker_log(0) if "req" in x]
    assert reqs == [
        {"id": 1, "op": "resize", "size": 1 << 33},
        {"id": 2, "op": "reconfig", "config": "rbd/pool/img2"},
        {"id": 3, "op": "writecache", "value": 1},
    ]


def test_reconfig_failure_default_errno_and_timeout(h):
    h.behave(0, ops={"resize": {"ok": False, "error": "image too small"}}, hang_ops=["reconfig"])
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    R, DONE = nl.TCMU_CMD_RECONFIG_DEVICE, nl.TCMU_CMD_RECONFIG_DEVICE_DONE
    assert h.reply_for(h.send(R, device="x", minor=0, dev_size=5)) == (DONE, -errno.EIO)
    assert h.reply_for(h.send(R, device="x", minor=0, dev_cfg="rbd/a/b")) == (DONE, -errno.ETIMEDOUT)
    assert state(h, 0) == sv.READY  # a slow request does not kill the LUN


def test_reconfig_unknown_device(h):
    did = h.send(nl.TCMU_CMD_RECONFIG_DEVICE, device="x", minor=4, dev_size=1)
    assert h.reply_for(did) == (nl.TCMU_CMD_RECONFIG_DEVICE_DONE, -errno.ENODEV)


# --- crash restart and recovery ----------------------------------------------------


def test_crashed_worker_is_restarted_with_recovery_sequence(h, caplog):
    h.behave(0, start="ready_then_crash")
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    h.run_until(lambda: state(h, 0) == sv.BACKOFF)
    assert h.kernel.actions == [("disk0", "block_dev", 1)]
    assert h.action_file("disk0", "block_dev") == "1"
    h.behave(0, start="ready")
    h.run_until(lambda: state(h, 0) == sv.READY and h.sup.devices["uio0"].failures >= 1)
    assert h.kernel.actions == [("disk0", "block_dev", 1), ("disk0", "reset_ring", 1),
                                ("disk0", "block_dev", 0)]
    assert h.action_file("disk0", "block_dev") == "0"
    assert "died (exit code 9)" in caplog.text
    assert len([x for x in h.worker_log(0) if "argv" in x]) == 2


def test_crash_loop_backs_off(h):
    h.behave(0, start="ready_then_crash")
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    h.run_until(lambda: h.sup.devices["uio0"].failures >= 3, 15)
    assert h.action_file("disk0", "block_dev") == "1"  # blocked while it cannot be served


def test_startup_recovery(h, caplog):
    h.add_uio(1, "disk1", "rbd/pool/a")
    h.add_uio(2, "gl", "glfs/v@h/f")
    h.add_uio(3, "disk3", "rbd/pool/b")
    h.behave(3, start="fail", error="image gone")
    done = []
    assert h.sup.recover_existing(lambda: done.append(1)) == 2
    h.run_until(lambda: done)
    assert state(h, 1) == sv.READY
    assert [a for a in h.kernel.actions if a[0] == "disk1"] == [
        ("disk1", "block_dev", 1), ("disk1", "reset_ring", 1), ("disk1", "block_dev", 0)]
    # a failing recovery keeps the device blocked and retries
    assert state(h, 3) in (sv.BACKOFF, sv.STARTING)
    assert h.action_file("disk3", "block_dev") == "1"
    assert "subtype 'glfs'" in caplog.text
    h.behave(3, start="ready")
    h.run_until(lambda: state(h, 3) == sv.READY)
    assert h.action_file("disk3", "block_dev") == "0"
    h._drain()
    assert h.got == []  # recovery sends nothing to the kernel


# A process holding a (fake) /dev/uioN open, as a worker left behind by a SIGKILLed
# supervisor would: argv follows the worker contract unless FOREIGN is given.
HOLDER = textwrap.dedent(
    r'''
    import os, signal, sys, time
    dev, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
    fd = os.open(dev, os.O_RDWR)
    def term(signum, frame):
        with open(out, "a") as f:
            f.write("SIGTERM\n")
        if mode == "graceful":
            time.sleep(0.3)          # finishing in-flight I/O
            with open(out, "a") as f:
                f.write("exit\n")
            os._exit(0)
    signal.signal(signal.SIGTERM, term)
    print("HOLDING", flush=True)
    while True:
        time.sleep(0.05)
    '''
)


@contextlib.contextmanager
def _holder(h, minor, mode, worker_args=True):
    """A process holding /dev/uio<minor> open (HOLDER), stopped and reaped after."""
    dev_dir = h.tmp / "dev"
    dev_dir.mkdir(exist_ok=True)
    (dev_dir / f"uio{minor}").write_text("")
    h.kernel.roots = dataclasses.replace(h.kernel.roots, proc="/proc", dev=str(dev_dir))
    out = h.tmp / f"holder{minor}.out"
    argv = [sys.executable, "-c", HOLDER, str(dev_dir / f"uio{minor}"), mode, str(out)]
    if worker_args:
        argv += ["--uio", f"uio{minor}", "--ctl-fd", "7"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "HOLDING"
        yield p, out
    finally:
        p.kill()            # a no-op once it has exited and been reaped
        p.wait()
        p.stdout.close()


def test_recovery_stops_a_stale_worker_before_resetting_the_ring(h, caplog):
    """A worker of a SIGKILLed supervisor still holds /dev/uio1: it is asked to
    stop (SIGTERM), and only once it let go is the ring reset and ours started."""
    h.add_uio(1, "disk1")
    with _holder(h, 1, "graceful") as (stale, out):
        done = []
        h.sup.recover_existing(lambda: done.append(1))
        assert h.kernel.actions == [("disk1", "block_dev", 1)]  # no reset while it runs
        h.run_until(lambda: done)
        assert stale.wait(5) == 0
        assert out.read_text().split() == ["SIGTERM", "exit"]
        assert state(h, 1) == sv.READY
        assert h.kernel.actions == [("disk1", "block_dev", 1), ("disk1", "reset_ring", 1),
                                    ("disk1", "block_dev", 0)]
        assert f"stale worker pid {stale.pid}" in caplog.text


def test_recovery_kills_a_stale_worker_that_ignores_sigterm(h, caplog):
    h.add_uio(1, "disk1")
    with _holder(h, 1, "stuck") as (stale, out):
        t0 = time.monotonic()
        done = []
        h.sup.recover_existing(lambda: done.append(1))
        h.run_until(lambda: done, 15)
        assert stale.wait(5) == -signal.SIGKILL
        # SIGKILL only after worker_stop_timeout (1.5 s here)
        assert time.monotonic() - t0 >= h.settings.worker_stop_timeout
        assert out.read_text().split() == ["SIGTERM"]
        assert state(h, 1) == sv.READY
        assert "did not stop in time; killing it" in caplog.text


def test_recovery_leaves_other_programs_holding_the_device_alone(h, caplog):
    h.add_uio(1, "disk1")
    with _holder(h, 1, "graceful", worker_args=False) as (other, out):
        done = []
        h.sup.recover_existing(lambda: done.append(1))
        h.run_until(lambda: done)
        assert other.poll() is None and not out.exists()
        assert "not a tcmu-rbd worker" in caplog.text and str(other.pid) in caplog.text
        # (the fake worker does not open the device; a real one gets EBUSY and retries)
        assert h.kernel.actions[:2] == [("disk1", "block_dev", 1), ("disk1", "reset_ring", 1)]


def test_workers_get_the_supervisor_pid(h):
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    pid = h.sup.devices["uio0"].worker.pid
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    assert env[b"TCMU_RBD_SUPERVISOR_PID"] == str(os.getpid()).encode()


def test_no_devices_recovery_completes_at_once(h):
    done = []
    assert h.sup.recover_existing(lambda: done.append(1)) == 0
    assert done == [1]


def test_resync_after_overrun(h):
    assert h.reply_for(h.added(0, "disk0"))[1] == 0
    h.add_uio(5, "disk5")  # its ADDED_DEVICE was lost
    import shutil
    shutil.rmtree(Path(h.roots.uio_class) / "uio0")  # and uio0 went away
    h.sup.resync()
    assert ("reset_netlink", 1, True) in h.kernel.params
    h.run_until(lambda: state(h, 5) == sv.READY and "uio0" not in h.sup.devices)


# --- every event answered; shutdown -----------------------------------------------


def test_burst_every_event_gets_exactly_one_reply(h):
    h.behave(2, start="fail")
    ids = [h.added(i, f"d{i}") for i in range(4)]
    ids.append(h.send(nl.TCMU_CMD_RECONFIG_DEVICE, device="x", minor=0, dev_size=8))  # still starting
    ids.append(h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="x", minor=7))
    ids.append(h.added(8, "other", "qcow/x"))
    got = {i: h.reply_for(i) for i in ids}
    assert got[ids[2]][1] == -errno.ENOENT
    assert got[ids[4]] == (nl.TCMU_CMD_RECONFIG_DEVICE_DONE, -errno.EBUSY)
    assert got[ids[0]] == got[ids[1]] == got[ids[3]] == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 0)
    h.settle(0.3)
    h._drain()
    assert h.got == []


def test_shutdown_stops_workers_and_leaves_devices_blocked(h):
    for i in range(2):
        assert h.reply_for(h.added(i, f"d{i}"))[1] == 0
    done = []
    h.sup.shutdown(lambda: done.append(1))
    did = h.added(5, "late")
    assert h.reply_for(did) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, -errno.ESHUTDOWN)
    h.run_until(lambda: done)
    assert not h.sup.devices
    for i in range(2):
        assert {"req": {"id": 1, "op": "stop"}} in h.worker_log(i)
        assert h.action_file(f"d{i}", "block_dev") == "1"
