"""The throwaway cluster itself: real daemons, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

rados = pytest.importorskip("rados")
rbd = pytest.importorskip("rbd")

from tcmu_rbd_lab.ceph import CephCluster, CephClusterError  # noqa: E402
from tcmu_rbd_lab.process import pid_alive  # noqa: E402


def test_cluster_is_up(ceph):
    assert Path(ceph.conf_path).is_file()
    assert Path(ceph.admin_keyring).is_file()
    conf = Path(ceph.conf_path).read_text()
    assert "127.0.0.1" in conf and "cephx" in conf and "rbd cache = false" in conf
    assert ceph.start_seconds is not None
    assert set(ceph.pids) == {"mon.a", f"osd.{ceph.osd_id}"}
    out = ceph.run("ceph", "osd", "pool", "ls").stdout.split()
    assert "rbd" in out
    # env() makes the CLI find the cluster without -c
    r = subprocess.run(["rados", "lspools"], env=ceph.env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "rbd" in r.stdout.split()
    state = json.loads(Path(ceph.state_path).read_text())
    assert state["conf"] == ceph.conf_path


def test_rbd_write_read_via_python(ceph, rbd_image):
    data = os.urandom(8192)
    with rados.Rados(**ceph.rados_kwargs()) as cluster:
        with cluster.open_ioctx(rbd_image.pool) as io:
            with rbd.Image(io, rbd_image.name) as img:
                assert img.size() == rbd_image.size
                feats = img.features()
                assert feats & rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                assert feats & rbd.RBD_FEATURE_OBJECT_MAP
                assert feats & rbd.RBD_FEATURE_FAST_DIFF
                img.write(data, 1 << 20)
                img.flush()
            with rbd.Image(io, rbd_image.name, read_only=True) as img:
                assert img.read(1 << 20, len(data)) == data
                assert img.read(0, 512) == bytes(512)


def test_namespace_and_image_in_it(ceph):
    ceph.create_namespace("rbd", "nsA")
    spec = ceph.create_image("inns", 64 << 20, namespace="nsA")
    assert spec == "rbd/nsA/inns"
    assert "inns" in ceph.run("rbd", "ls", "rbd/nsA").stdout.split()
    ceph.remove_image("inns", namespace="nsA")


def test_cephx_enforced(ceph):
    kr = ceph.create_client("nocaps")  # a user with no caps at all
    assert Path(kr).is_file()
    c = rados.Rados(conffile=ceph.conf_path, rados_id="nocaps",
                    conf={"keyring": kr, "client_mount_timeout": "20"})
    with pytest.raises(rados.Error):
        c.connect(timeout=20)
        # if the mon let it in, it must at least be refused pool access
        c.open_ioctx("rbd").write_full("x", b"x")
    c.shutdown()
    # a wrong key is refused
    bogus = Path(ceph.base_dir) / "tmp" / "bogus.keyring"
    subprocess.run(["ceph-authtool", "--create-keyring", str(bogus), "--gen-key",
                    "-n", "client.admin"], check=True, capture_output=True)
    r = subprocess.run(["rados", "-c", ceph.conf_path, "--keyring", str(bogus),
                        "--client-mount-timeout", "20", "lspools"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "rbd" not in r.stdout
    # a user with rbd caps works
    kr = ceph.create_client("rbduser", {"mon": "profile rbd",
                                        "osd": "profile rbd pool=rbd"})
    with rados.Rados(conffile=ceph.conf_path, rados_id="rbduser",
                     conf={"keyring": kr}) as c:
        assert "rbd" in c.list_pools()


def test_failure_message_has_daemon_status_and_log_tail():
    c = CephCluster(daemon_args={"mon": ["--mon-data", "/nonexistent/tcmu-rbd-test"]},
                    timeout=120)
    with pytest.raises(CephClusterError) as ei:
        c.start()
    msg = str(ei.value)
    assert "ceph-mon" in msg
    assert "exit status 1" in msg
    assert "--- tail of" in msg
    assert "/nonexistent/tcmu-rbd-test" in msg and "does not exist" in msg
    # everything cleaned up
    assert not Path(c.base_dir).exists()
    assert c.pids == {}


def test_persistent_osd_restart_keeps_data(tmp_path):
    data = os.urandom(65536)
    with CephCluster(tmp_path / "c", objectstore="bluestore", timeout=300) as c:
        c.create_image("persist", 64 << 20)
        with rados.Rados(**c.rados_kwargs()) as cl, cl.open_ioctx("rbd") as io:
            with rbd.Image(io, "persist") as img:
                img.write(data, 4 << 20)
                img.flush()
        old_pid = c.pids[f"osd.{c.osd_id}"]
        c.stop_osd()
        assert not pid_alive(old_pid)
        assert not c.osd_running
        c.start_osd()
        assert c.osd_running and c.pids[f"osd.{c.osd_id}"] != old_pid
        with rados.Rados(**c.rados_kwargs()) as cl, cl.open_ioctx("rbd") as io:
            with rbd.Image(io, "persist", read_only=True) as img:
                assert img.read(4 << 20, len(data)) == data
        mon_pid = c.pids["mon.a"]
        base = Path(c.base_dir)
    assert not pid_alive(mon_pid)
    assert not base.exists()


def test_cli_up_down(tmp_path):
    d = tmp_path / "cli"
    env = dict(os.environ)
    up = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "up",
                         "--dir", str(d), "--image", "rbd/cli1=16M", "--image",
                         "rbd/cli2=4096B", "--image", "rbd/cli1=16M"],
                        capture_output=True, text=True, timeout=600, env=env)
    assert up.returncode == 0, up.stderr
    kv = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    try:
        assert kv["conf"] == str(d.resolve() / "ceph.conf")
        pids = [int(v) for k, v in kv.items() if k.startswith("pid.")]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)  # survived exit
        # the images, created in-process; the second rbd/cli1 found it there
        assert f"image.rbd/cli1={16 << 20} (created)" in up.stdout.splitlines()
        assert f"image.rbd/cli1={16 << 20} (there already)" in up.stdout.splitlines()
        for name, size in (("cli1", 16 << 20), ("cli2", 4096)):
            r = subprocess.run(["rbd", "-c", kv["conf"], "info", f"rbd/{name}", "--format",
                                "json"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and json.loads(r.stdout)["size"] == size, r.stderr
        r = subprocess.run(["rbd", "-c", kv["conf"], "create", "rbd/cli0", "--size",
                            "16M"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        dn = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "down",
                             "--dir", str(d)], capture_output=True, text=True,
                            timeout=120)
    assert dn.returncode == 0, dn.stderr
    assert not any(pid_alive(p) for p in pids)
    assert not d.exists()


def test_cli_up_refuses_bad_images(tmp_path):
    """A malformed --image before anything starts; an image in a pool that is not
    there after the start: exit 1, the cluster stopped and its directory gone."""
    d = tmp_path / "cli"
    up = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "up", "--dir", str(d),
                         "--image", "rbd/x=1.5G"], capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 2 and "is not POOL/NAME=SIZE" in up.stderr, up.stderr
    assert not d.exists()
    up = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "up", "--dir", str(d),
                         "--image", "nosuch/x=1G"], capture_output=True, text=True,
                        timeout=600)
    assert up.returncode == 1, up.stderr
    assert "ceph up failed: pool nosuch does not exist" in up.stderr, up.stderr
    assert not d.exists() and "pid." not in up.stdout


def test_ensure_image(ceph):
    """What ``up --image`` does: create, accept the same size again, refuse another."""
    name = "ensure-me"
    try:
        assert ceph.admin.ensure_image("rbd", None, name, 8 << 20) is True
        assert ceph.admin.ensure_image("rbd", None, name, 8 << 20) is False
        with pytest.raises(CephClusterError,
                           match=f"rbd/{name} exists with 8388608 bytes, not the "
                                 f"16777216 asked for"):
            ceph.admin.ensure_image("rbd", None, name, 16 << 20)
        with pytest.raises(CephClusterError, match=f"image rbd/{name} already exists"):
            ceph.create_image(name, 8 << 20)
        with rados.Rados(**ceph.rados_kwargs()) as cl, cl.open_ioctx("rbd") as io:
            with rbd.Image(io, name, read_only=True) as img:
                assert img.size() == 8 << 20
                assert img.features() & rbd.RBD_FEATURE_OBJECT_MAP  # Ceph's defaults
    finally:
        ceph.remove_image(name)


def test_no_daemons_leaked_when_the_interpreter_exits_or_dies(tmp_path):
    script = (
        "import sys, os, signal\n"
        "from tcmu_rbd_lab.ceph import CephCluster\n"
        "c = CephCluster(sys.argv[1], verbose=False)\n"
        "c.start()\n"
        "print(' '.join(str(p) for p in c.pids.values()), flush=True)\n"
        "if sys.argv[2] == 'kill':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for how in ("exit", "kill"):
        d = tmp_path / how
        r = subprocess.run([sys.executable, "-c", script, str(d), how],
                           capture_output=True, text=True, timeout=600)
        pids = [int(p) for p in r.stdout.split()]
        assert len(pids) == 2, r.stderr
        import time
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(pid_alive(p) for p in pids), how
        if how == "exit":  # atexit also removed the directory
            assert not d.exists()


def _listening(pid: int) -> set[str]:
    """The "ip:port" addresses TCP sockets of process ``pid`` listen on (/proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                hexip, hexport = f[1].split(":")
                ip = (".".join(str(int(hexip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                      if len(hexip) == 8 else f"[{hexip}]")
                out.add(f"{ip}:{int(hexport, 16)}")
    return out


def _addrs(obj) -> list[str]:
    """Every "addr" string anywhere in a ceph JSON answer (addrvecs and legacy)."""
    if isinstance(obj, dict):
        return [a for k, v in obj.items()
                for a in ([v] if k.endswith("addr") and isinstance(v, str) else _addrs(v))]
    if isinstance(obj, list):
        return [a for v in obj for a in _addrs(v)]
    return []


def test_cluster_on_another_local_address(tmp_path):
    """public_addr="127.0.0.2" (local on Linux: all of 127.0.0.0/8 is): monmap, mon
    host and every daemon's sockets on 127.0.0.2, none on 127.0.0.1; rbd works."""
    with CephCluster(tmp_path / "c", public_addr="127.0.0.2", mgr=True,
                     timeout=300) as c:
        assert c.mon_host.startswith("[v2:127.0.0.2:") and "127.0.0.1" not in c.mon_host
        conf = Path(c.conf_path).read_text()
        assert f"\tmon host = {c.mon_host}\n" in conf
        assert "\tpublic addr = 127.0.0.2\n" in conf
        assert "\tpublic network = 127.0.0.2/32\n" in conf
        assert "127.0.0.1" not in conf
        mons = json.loads(c.run("ceph", "mon", "dump", "--format", "json").stdout)["mons"]
        mon_addrs = _addrs(mons)
        assert len(mons) == 1 and len(mon_addrs) >= 3, mons
        assert all(a.startswith("127.0.0.2:") for a in mon_addrs), mon_addrs
        osds = json.loads(c.run("ceph", "osd", "dump", "--format", "json").stdout)["osds"]
        osd_addrs = _addrs(osds)
        # public, cluster, heartbeat front/back, each v2 + v1 (plus the legacy ones)
        assert len(osd_addrs) >= 8, osds
        assert all(a.startswith("127.0.0.2:") for a in osd_addrs), osd_addrs
        mgr = json.loads(c.run("ceph", "mgr", "dump", "--format", "json").stdout)
        assert mgr["active_addr"].startswith("127.0.0.2:"), mgr["active_addr"]
        for name, pid in c.pids.items():
            ls = _listening(pid)
            assert ls and all(a.startswith("127.0.0.2:") for a in ls), (name, ls)
        assert json.loads(Path(c.state_path).read_text())["public_addr"] == "127.0.0.2"
        c.create_image("on2", 64 << 20)
        data = os.urandom(65536)
        with rados.Rados(**c.rados_kwargs()) as cl, cl.open_ioctx("rbd") as io:
            with rbd.Image(io, "on2") as img:
                img.write(data, 1 << 20)
                img.flush()
            with rbd.Image(io, "on2", read_only=True) as img:
                assert img.read(1 << 20, len(data)) == data


@pytest.mark.parametrize("addr, why", [
    ("0.0.0.0", "not one host address"),
    ("192.0.2.1", "not a local address of this host"),  # TEST-NET-1, not ours
    ("::1", "not an IPv4 address"),
    ("127.0.0.1:6789", "not an IPv4 address"),
])
def test_public_addr_refused(tmp_path, addr, why):
    """Refused before anything starts: by the constructor and by the CLI's ``up``."""
    d = tmp_path / "c"
    with pytest.raises(CephClusterError, match=f"public address .*{why}"):
        CephCluster(d, public_addr=addr)
    assert not d.exists()
    up = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "up", "--dir", str(d),
                         "--public-addr", addr], capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 1 and "ceph up failed: public address" in up.stderr, up.stderr
    assert why in up.stderr and not d.exists()
