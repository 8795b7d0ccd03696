"""The lab's process helpers (tcmu_rbd_lab.process) and the throwaway cluster's
pure set-up pieces (tcmu_rbd_lab.ceph_setup): no Ceph daemons, no VM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcmu_rbd_lab import ceph_setup, process


def test_log_tail(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert process.log_tail(log, 3, max_chars=9) == "8\nline 99"
    assert process.log_tail(tmp_path / "missing").startswith("(no log: ")
    (tmp_path / "empty").write_text("")
    assert process.log_tail(tmp_path / "empty") == "(empty)"
    # only the end of a big log is read, and still yields its last lines
    big = tmp_path / "big.log"
    big.write_text("x" * 1_000_000 + "\nlast\n")
    assert process.log_tail(big, 1) == "last"


def test_pid_alive_and_cmdline():
    assert process.pid_alive(os.getpid())
    assert "python" in process.cmdline(os.getpid())[0]
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not process.pid_alive(p.pid) and process.cmdline(p.pid) == []


def test_stop_group_kills_the_whole_group():
    # a shell in its own session whose child ignores SIGTERM: SIGKILL follows
    p = subprocess.Popen(["sh", "-c", "sh -c 'trap \"\" TERM; sleep 60' & echo $!; wait"],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(p.stdout.readline())
    t = time.monotonic()
    process.stop_group(p, signal.SIGTERM, wait=0.5)
    assert p.returncode is not None
    deadline = time.monotonic() + 5
    while process.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process.pid_alive(child)
    assert time.monotonic() - t < 15
    process.stop_group(p)  # reaped already: nothing is signalled, nothing raises


def test_daemon_describe_failure(tmp_path):
    log, err = tmp_path / "d.log", tmp_path / "d.stderr"
    log.write_text("starting\nfatal: no such thing\n")
    d = process.Daemon("fake-daemon", [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"],
                       log, err, os.environ)
    d.proc.wait(10)
    msg = d.describe_failure("exited during start-up")
    assert msg.startswith("fake-daemon exited during start-up (exit status 3); command: ")
    assert f"--- tail of {log} ---\nstarting\nfatal: no such thing" in msg
    assert f"--- tail of {err} ---\nbye" in msg
    d.kill()


def test_ceph_conf_text_per_objectstore(tmp_path):
    kw = dict(fsid="f", mon_host="[v2:127.0.0.1:1,v1:127.0.0.1:2]", osd_memory_bytes=512 << 20,
              store_bytes=8 << 30, overrides={"osd": {"debug osd": 5}, "extra": {"a": 1}})
    mem = ceph_setup.ceph_conf_text(tmp_path, objectstore="memstore", block_mode=None,
                                    loop_device=None, **kw)
    assert "\tmemstore device bytes = 536870912\n" in mem and "bluestore" not in mem
    assert f"\tosd data = {tmp_path}/osd/$cluster-$id\n" in mem
    assert "\tdebug osd = 5\n" in mem and "[extra]\n\ta = 1\n" in mem
    loop = ceph_setup.ceph_conf_text(tmp_path, objectstore="bluestore", block_mode="loop",
                                     loop_device="/dev/loop9", **kw)
    # bluestore's floor for osd_memory_target, the loop device as its block
    assert "\tosd memory target = 939524096\n" in loop
    assert "\tbluestore block path = /dev/loop9\n" in loop
    assert "\tbluestore block create = false\n" in loop
    f = ceph_setup.ceph_conf_text(tmp_path, objectstore="bluestore", block_mode="file",
                                  loop_device=None, **kw)
    assert f"\tbluestore block path = {tmp_path}/osd/block\n" in f
    assert "\tbluestore block create = true\n" in f


def test_pick_port_pair():
    v2, v1 = ceph_setup.pick_port_pair()
    assert v1 == v2 + 1 and 20000 <= v2 < 32000


def test_down_kills_only_recorded_ceph_daemons(tmp_path):
    d = tmp_path / "cluster"
    d.mkdir()
    # a process that is not a ceph daemon of this directory must survive down()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ceph_setup.write_state(d, {"pids": {"mon.a": bystander.pid}, "loop_device": None})
        assert json.loads((d / ceph_setup.STATE_FILE).read_text())["pids"] == \
            {"mon.a": bystander.pid}
        assert not list(d.glob("*.tmp"))
        done = ceph_setup.down(d)
        assert done == [f"removed {d.resolve()}"]
        assert not d.exists() and process.pid_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()
    assert ceph_setup.down(Path(tmp_path / "never-existed")) == []


def test_image_arg_takes_rbd_create_sizes():
    """``up --image`` as ``rbd create --size`` reads SIZE (binary units, bare = MiB)."""
    img = ceph_setup.image_arg
    assert img("rbd/img0=1G") == ("rbd", None, "img0", 1 << 30)
    assert img("rbd/img1=256M") == ("rbd", None, "img1", 256 << 20)
    assert img("pool2/ns/x=4096B") == ("pool2", "ns", "x", 4096)
    assert img("bare=2") == ("rbd", None, "bare", 2 << 20)
    assert img("rbd/t=1Ti") == ("rbd", None, "t", 1 << 40)
    for bad in ("rbd/img0", "rbd/=1G", "a/b/c/d=1G", "rbd/x=1.5G", "rbd/x=1Q",
                "rbd/x@snap=1G", "rbd/x="):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=r"is not POOL/NAME=SIZE .*256M"):
            img(bad)


def test_write_keyring_is_what_ceph_authtool_reads(tmp_path):
    """Keyrings written without ceph-authtool: it lists the keys and caps back, and
    a given key is kept (the admin key in the mon's keyring)."""
    import base64
    import shutil
    import struct
    kr = tmp_path / "k"
    keys = ceph_setup.write_keyring(kr, {"client.a": {"mon": "allow *", "osd": "profile rbd"},
                                         "osd.3": {}})
    assert kr.stat().st_mode & 0o777 == 0o600
    raw = base64.b64decode(keys["client.a"])
    assert len(raw) == 28 and struct.unpack("<HIIH", raw[:12])[::3] == (1, 16)
    assert keys["client.a"] != keys["osd.3"]
    again = ceph_setup.write_keyring(tmp_path / "k2", {"client.a": {}, "mon.": {}},
                                     {"client.a": keys["client.a"]})
    assert again["client.a"] == keys["client.a"] and again["mon."] != keys["client.a"]
    if shutil.which("ceph-authtool") is None:
        return
    out = subprocess.run(["ceph-authtool", "-l", str(kr)], capture_output=True, text=True,
                         check=True).stdout
    assert f"[client.a]\n\tkey = {keys['client.a']}\n" in out
    assert '\tcaps mon = "allow *"\n\tcaps osd = "profile rbd"\n' in out
    assert f"[osd.3]\n\tkey = {keys['osd.3']}\n" in out
