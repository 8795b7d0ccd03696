"""The supervisor with ``luns_per_worker`` > 1 (tcmu_rbd.worker_process.WorkerHost): devices
placed in worker hosts up to the bound, each speaking the worker contract on its own
socket; a device's stop leaves its neighbours alone; a host's death, or a kill after a
device would not stop, restarts every device it served.  A fake kernel (test_supervisor's
Harness) and a fake host (a small script below, used only here)."""

import errno
import logging
import sys
import textwrap

import pytest

from tcmu_rbd import netlink as nl
from tcmu_rbd import supervisor as sv

from test_supervisor import Harness, state

# A worker host stand-in: takes control.Serve messages off its seqpacket socket and
# plays each device as $FAKE_DIR/uioN.json says, recording into uioN.log.
FAKE_HOST = textwrap.dedent(
    r'''
    import array, json, os, socket, sys, threading, time
    args = sys.argv[1:]
    hs = socket.socket(fileno=int(args[args.index("--ctl-fd") + 1]))
    fake = os.environ["FAKE_DIR"]
    def rec(uio, obj):
        with open(os.path.join(fake, uio + ".log"), "a") as f:
            f.write(json.dumps(obj) + "\n")
    def device(uio, fds):
        s = socket.socket(fileno=fds[0])
        try:
            with open(os.path.join(fake, uio + ".json")) as f:
                b = json.load(f)
        except FileNotFoundError:
            b = {}
        rec(uio, {"pid": os.getpid(), "argv": args, "fds": len(fds)})
        def send(o):
            s.sendall((json.dumps(o) + "\n").encode())
        if b.get("start") == "hang":             # an image open that takes its time
            time.sleep(600)
        if b.get("start") == "fail":
            send({"event": "failed", "error": b.get("error", "it failed")})
            s.close()
            return
        send({"event": "ready"})
        print(f"<6>tcmu_rbd.worker: disk({uio}): serving", file=sys.stderr, flush=True)
        if b.get("start") == "ready_then_crash_host":
            time.sleep(0.3)
            os._exit(9)
        buf = b""
        while True:
            data = s.recv(65536)
            if not data:
                rec(uio, {"eof": True})
                s.close()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                rec(uio, {"req": req})
                if req["op"] == "stop":
                    if b.get("stop") == "ignore":
                        continue
                    send({"id": req["id"], "ok": True})
                    s.close()
                    return
                send({"id": req["id"], "ok": True})
    print("<6>fake host up", file=sys.stderr, flush=True)
    while True:
        fds = array.array("i")
        msg, anc, _, _ = hs.recvmsg(4096, socket.CMSG_SPACE(16))
        for level, kind, data in anc:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        if not msg:
            break
        m = json.loads(msg)
        assert m["op"] == "serve" and len(fds) == 1 + m["metrics"], m
        threading.Thread(target=device, args=(m["uio"], list(fds)), daemon=True).start()
    '''
)


@pytest.fixture
def h(tmp_path, monkeypatch):
    script = tmp_path / "fake_host.py"
    script.write_text(FAKE_HOST)
    hh = Harness(tmp_path, monkeypatch, luns_per_worker=2,
                 worker_command=[sys.executable, str(script)])
    yield hh
    hh.close()
    assert hh.loop.run_until(lambda: not hh.sup.hosts.hosts, 10), "a worker host did not exit"


def pid_of(h, minor):
    return [x["pid"] for x in h.worker_log(minor) if "pid" in x]


def test_devices_share_hosts_up_to_luns_per_worker(h, caplog):
    caplog.set_level(logging.INFO)
    for minor in range(3):
        assert h.reply_for(h.added(minor, f"disk{minor}")) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 0)
    assert [state(h, m) for m in range(3)] == [sv.READY] * 3
    (p0,), (p1,), (p2,) = (pid_of(h, m) for m in range(3))
    assert p0 == p1 != p2 and len(h.sup.hosts.hosts) == 2
    first = h.worker_log(0)[0]
    assert first["argv"][:3] == ["--host", "--ctl-fd", first["argv"][2]]
    assert "--uio" not in first["argv"] and first["fds"] == 2    # its socket and metrics
    assert h.sup.devices["uio0"].worker.pid == p0
    assert "fake host up" in caplog.text
    # each device's lines from the host's stderr carry that device's context
    assert h.loop.run_until(lambda: caplog.text.count("): serving") == 3, 5)
    served = [r.getMessage() for r in caplog.records if "): serving" in r.getMessage()]
    for m in range(3):
        assert sum(f"device=disk{m} uio=uio{m} " in x and f"disk(uio{m}): serving" in x
                   for x in served) == 1, served
    up = [r.getMessage() for r in caplog.records if "fake host up" in r.getMessage()]
    assert up and not any("device=" in x for x in up)


def test_a_hosted_device_stops_alone_and_an_empty_host_exits(h):
    for minor in range(2):
        assert h.reply_for(h.added(minor, f"disk{minor}"))[1] == 0
    w1 = h.sup.devices["uio1"].worker
    did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="tcm-user/1/disk0/rbd/pool/img", minor=0)
    assert h.reply_for(did) == (nl.TCMU_CMD_REMOVED_DEVICE_DONE, 0)
    assert {"req": {"id": 1, "op": "stop"}} in h.worker_log(0)
    h.run_until(lambda: "uio0" not in h.sup.devices)
    h.settle(0.5)
    assert state(h, 1) == sv.READY and h.sup.devices["uio1"].worker is w1 and not w1.exited
    (host,) = h.sup.hosts.hosts
    assert host.devices == [w1]
    # the next device fills the room the first left
    assert h.reply_for(h.added(2, "disk2"))[1] == 0
    assert pid_of(h, 2) == pid_of(h, 1)
    for minor in (1, 2):
        did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device=f"tcm-user/1/disk{minor}/rbd/pool/img",
                     minor=minor)
        assert h.reply_for(did)[1] == 0
    h.run_until(lambda: not h.sup.hosts.hosts)       # its last device gone, the host exits
    assert host.exit_code == 0


def test_a_host_crash_restarts_each_of_its_devices(h, caplog):
    h.behave(0, start="ready_then_crash_host")
    for minor in range(2):
        assert h.reply_for(h.added(minor, f"disk{minor}"))[1] == 0
    h.run_until(lambda: state(h, 0) == sv.BACKOFF and state(h, 1) == sv.BACKOFF)
    assert "exited (exit code 9) serving uio0, uio1" in caplog.text
    h.behave(0, start="ready")
    h.run_until(lambda: all(state(h, m) == sv.READY and h.sup.devices[f"uio{m}"].failures >= 1
                            for m in range(2)))
    for minor in range(2):
        name = f"disk{minor}"
        assert h.kernel.actions.count((name, "block_dev", 1)) == 1
        assert (name, "reset_ring", 1) in h.kernel.actions
        assert h.action_file(name, "block_dev") == "0"
    old, new = pid_of(h, 0)
    assert pid_of(h, 1) == [old, new] and old != new       # both again in one new host


def test_a_hosted_device_that_will_not_stop_takes_its_host_down(h, caplog):
    """The price of sharing a process, bounded: the kill that ends a worker that
    ignores "stop" ends the host, and its other device is restarted."""
    h.behave(0, stop="ignore")
    for minor in range(2):
        assert h.reply_for(h.added(minor, f"disk{minor}"))[1] == 0
    did = h.send(nl.TCMU_CMD_REMOVED_DEVICE, device="tcm-user/1/disk0/rbd/pool/img", minor=0)
    assert h.reply_for(did, timeout=10)[1] == 0
    assert "uio0 did not answer in time: killing worker host pid" in caplog.text
    h.run_until(lambda: state(h, 1) == sv.READY and h.sup.devices["uio1"].failures >= 1)
    assert len(pid_of(h, 1)) == 2


def test_a_hosted_device_that_never_gets_ready_is_let_go_of_not_its_host(h, caplog):
    """A start timeout lets go of the device's thread (it holds no ring while it opens
    its image); the host and the device beside it go on."""
    h.behave(0, start="hang")
    assert h.reply_for(h.added(1, "disk1"))[1] == 0
    w1 = h.sup.devices["uio1"].worker
    assert h.reply_for(h.added(0, "disk0"), timeout=10) == (nl.TCMU_CMD_ADDED_DEVICE_DONE,
                                                            -errno.ETIMEDOUT)
    assert "letting go of the device's thread in worker host pid" in caplog.text
    assert "killing worker host" not in caplog.text
    h.settle(0.5)
    assert state(h, 1) == sv.READY and h.sup.devices["uio1"].worker is w1 and not w1.exited
    assert pid_of(h, 0) == pid_of(h, 1)
    assert h.sup.hosts.hosts[0].devices == [w1]
