"""What a throwaway Ceph cluster needs around its daemons: host resources, the
files in its directory, and tearing a detached cluster down from them.

What belongs here: :class:`CephClusterError` (the one error of the cluster
machinery), the address it binds (:func:`check_public_addr`: one local IPv4
address) and free ports there for the mon, bluestore's block device (the O_DIRECT
probe, loop devices), the text of ceph.conf, keyring files with new cephx keys
(:func:`write_keyring`, what ``ceph-authtool --gen-key`` writes, without a process
apiece), the cluster.json state file, what
``up`` prints from it, :func:`down`, which ``python -m tcmu_rbd_lab.ceph down``
runs on it, and that command line's arguments (:func:`cli_parser`, ``--image``'s
POOL/NAME=SIZE: :func:`image_arg`).  No daemon is started here.

What does NOT: the cluster's life cycle and which keys it makes (ceph.py), the
commands to the running cluster (ceph_admin.py), processes (process.py).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import mmap
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Iterable, Mapping

from .process import cmdline, pid_alive

__all__ = ["CephClusterError", "MON_ID", "STATE_FILE", "check_public_addr",
           "mon_addrs", "pick_port_pair",
           "supports_o_direct", "attach_loop", "detach_loop", "bluestore_block",
           "ceph_conf_text", "write_keyring", "write_state", "up_report", "down", "image_arg",
           "cli_parser"]

STATE_FILE = "cluster.json"
MON_ID = "a"
_OSD_MEMORY_TARGET_MIN = 896 << 20  # Ceph refuses smaller osd_memory_target values


class CephClusterError(RuntimeError):
    """A daemon failed to start, a command failed, or the cluster was not ready in time.

    The message names the daemon or command, its exit status, and the tail of its log.
    """


# ------------------------------------------------------------------ host resources

def _reaches_itself(addr: str) -> bool:
    """Whether a TCP connection to ``addr`` arrives at a socket of this host listening
    there: true only for a local unicast address (bind alone would also accept a
    broadcast address, or anything with net.ipv4.ip_nonlocal_bind=1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        try:
            srv.bind((addr, 0))
            srv.listen(1)
        except OSError:
            return False
        srv.settimeout(2)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(2)
            if c.connect_ex((addr, srv.getsockname()[1])) != 0:
                return False
            try:
                conn, _ = srv.accept()
            except OSError:
                return False
            conn.close()
            return True


def check_public_addr(addr: str) -> str:
    """``addr`` normalised if it is one IPv4 unicast address of this host (any of
    127.0.0.0/8 on Linux); else CephClusterError saying why."""
    try:
        ip = ipaddress.IPv4Address(str(addr).strip())
    except ValueError:
        raise CephClusterError(f"public address {addr!r} is not an IPv4 address "
                               f"(a.b.c.d; IPv6 is not supported)") from None
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address(
            "255.255.255.255"):
        raise CephClusterError(
            f"public address {ip} is not one host address: the monitor map needs the "
            f"one address clients connect to (e.g. 127.0.0.1 or this host's address "
            f"on the network the clients are on), not 0.0.0.0, multicast or broadcast")
    if not _reaches_itself(str(ip)):
        raise CephClusterError(
            f"public address {ip} is not a local address of this host (`ip -4 addr` "
            f"lists them; all of 127.0.0.0/8 is local): the daemons could not bind it")
    return str(ip)


def mon_addrs(addr: str, ports: tuple[int, int]) -> str:
    """The mon's address vector (monmap, ``mon host``): ``[v2:IP:P2,v1:IP:P1]``."""
    return f"[v2:{addr}:{ports[0]},v1:{addr}:{ports[1]}]"


def _port_free(port: int, addr: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError:
            return False
    # also refuse ports somebody is listening on / connected to
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((addr, port)) != 0


def pick_port_pair(exclude: Iterable[int] = (), addr: str = "127.0.0.1"
                   ) -> tuple[int, int]:
    """Two free consecutive-ish TCP ports on ``addr`` (v2, v1), randomised so two
    clusters started at the same time are unlikely to race for the same pair."""
    excl = set(exclude)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        p = rng.randrange(20000, 32000, 2)
        if p in excl or p + 1 in excl:
            continue
        if _port_free(p, addr) and _port_free(p + 1, addr):
            return p, p + 1
    raise CephClusterError(f"no free TCP port pair on {addr} in 20000-32000")


def supports_o_direct(directory: Path) -> bool:
    """Whether files in ``directory`` can be written with O_DIRECT (bluestore's need)."""
    probe = directory / f".odirect-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        buf = mmap.mmap(-1, 4096)  # page aligned
        try:
            os.pwrite(fd, buf, 0)
        except OSError:
            return False
        finally:
            buf.close()
        return True
    finally:
        os.close(fd)
        try:
            probe.unlink()
        except OSError:
            pass


def attach_loop(backing: Path, size: int) -> str:
    """A loop device over a new sparse file ``backing`` of ``size`` bytes (for a
    directory without O_DIRECT); its path.  Tries ``modprobe loop`` once."""
    with open(backing, "wb") as f:
        f.truncate(size)
    r = subprocess.run(["losetup", "--find", "--show", str(backing)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["modprobe", "loop"], capture_output=True)
        r = subprocess.run(["losetup", "--find", "--show", str(backing)],
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise CephClusterError(
            f"bluestore needs O_DIRECT, which {backing.parent} does not support, and "
            f"`losetup --find --show {backing}` failed (exit status "
            f"{r.returncode}): {r.stderr.strip()}. Run as root with "
            f"/dev/loop-control, or give a base_dir on ext4/xfs.")
    return r.stdout.strip()


def detach_loop(device: str) -> None:
    subprocess.run(["losetup", "-d", device], capture_output=True)


def bluestore_block(osd_dir: Path, mode: str, size: int) -> tuple[str, str | None]:
    """(mode, loop device or None) of bluestore's block device under ``osd_dir``:
    "auto" is "file" (a sparse file bluestore creates) where O_DIRECT works, else
    "loop" (a loop device over a sparse file of ``size`` bytes, attached here)."""
    if mode == "auto":
        mode = "file" if supports_o_direct(osd_dir) else "loop"
    return mode, attach_loop(osd_dir / "block.img", size) if mode == "loop" else None


# ----------------------------------------------------------------- directory files

def ceph_conf_text(d: Path, *, fsid: str, mon_host: str, objectstore: str,
                   osd_memory_bytes: int, store_bytes: int, block_mode: str | None,
                   loop_device: str | None,
                   overrides: Mapping[str, Mapping[str, object]],
                   public_addr: str = "127.0.0.1") -> str:
    """ceph.conf of a cluster living in directory ``d``: one mon, one OSD, cephx,
    size-1 pools, every daemon bound to ``public_addr`` only, everything (data, logs,
    sockets, keyrings) under ``d``, and ``overrides`` ({section: {option: value}})
    merged last."""
    g: dict[str, object] = {
        "fsid": fsid,
        "mon host": mon_host,
        "mon initial members": MON_ID,
        "public addr": public_addr,
        "public network": f"{public_addr}/32",
        # the OSD would pick its cluster address from the interfaces' addresses in
        # the public network, which 127.0.0.2 (lo has 127.0.0.1/8) is not one of
        "cluster addr": public_addr,
        "ms bind ipv6": "false",
        "auth cluster required": "cephx",
        "auth service required": "cephx",
        "auth client required": "cephx",
        "auth allow insecure global id reclaim": "false",
        "osd pool default size": 1,
        "osd pool default min size": 1,
        "osd pool default pg autoscale mode": "off",
        "mon allow pool size one": "true",
        "mon allow pool delete": "true",
        "mon warn on pool no redundancy": "false",
        "mon data avail crit": 1,
        "mon data avail warn": 2,
        "osd crush chooseleaf type": 0,
        "run dir": d / "run",
        "admin socket": d / "run" / "$cluster-$name.asok",
        "log file": d / "log" / "$cluster-$name.log",
        "pid file": d / "run" / "$cluster-$name.pid",
        "log to stderr": "false",
        "err to stderr": "true",
        "log to syslog": "false",
        "log flush on exit": "true",
        "mon data": d / "mon" / "$cluster-$id",
        "osd data": d / "osd" / "$cluster-$id",
        "keyring": d / "keyring" / "$cluster.$name.keyring",
        "crash dir": d / "tmp",
        "exporter sock dir": d / "run",
        # TCG is ~10x slower: generous timeouts everywhere
        "osd heartbeat grace": 120,
        "osd heartbeat interval": 6,
        "osd op thread timeout": 120,
        "osd op thread suicide timeout": 600,
        "osd recovery thread timeout": 120,
        "osd command thread timeout": 600,
        "threadpool default timeout": 120,
        "mon osd report timeout": 900,
        "mon lease": 15,
        "client mount timeout": 120,
    }
    mon = {"mon cluster log file": d / "log" / "$cluster.log",
           # batch map changes for 0.1 s, not 1 s: the OSD's boot (crush location,
           # marked up), the pool, `rbd pool init` each wait for a proposal; this
           # takes a start from 8.5 s to 1.4 s natively
           "paxos propose interval": 0.1}
    osd: dict[str, object] = {
        "osd objectstore": objectstore,
        "keyring": "$osd_data/keyring",
        "osd max object name len": 256,
        "osd max object namespace len": 64,
        "osd op num shards": 2,
        "osd op num threads per shard": 1,
    }
    if objectstore == "memstore":
        osd["memstore device bytes"] = osd_memory_bytes
    else:
        osd["osd memory target"] = max(osd_memory_bytes, _OSD_MEMORY_TARGET_MIN)
        osd["bluestore fsck on mount"] = "false"
        osd["bluestore block create"] = "true" if block_mode == "file" else "false"
        osd["bluestore block size"] = store_bytes
        osd["bluestore block path"] = (loop_device if block_mode == "loop"
                                       else d / "osd" / "block")
        osd["bdev enable discard"] = "true"
    client = {"rbd cache": "false", "log file": d / "log" / "$cluster-$name.$pid.log",
              "admin socket": ""}
    sections: dict[str, dict[str, object]] = {"global": g, "mon": mon, "osd": osd,
                                               "client": client}
    for sec, opts in overrides.items():
        sections.setdefault(sec, {}).update(opts)
    lines = []
    for sec, opts in sections.items():
        lines.append(f"[{sec}]")
        lines += [f"\t{k} = {v}" for k, v in opts.items()]
        lines.append("")
    return "\n".join(lines)


def _new_key() -> str:
    """A new cephx secret as ceph-authtool --gen-key makes it: CryptoKey encoded
    (type 1 = AES, created sec/nsec, length 16) and 16 random bytes, in base64."""
    sec, nsec = divmod(time.time_ns(), 1_000_000_000)
    return base64.b64encode(struct.pack("<HIIH", 1, sec, nsec, 16)
                            + os.urandom(16)).decode()


def write_keyring(path: Path | str, entities: Mapping[str, Mapping[str, str]],
                  keys: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write keyring ``path`` (mode 0600) holding, for each entity ("client.admin")
    of ``entities`` ({entity: {daemon: cap}}), its key from ``keys`` or a new one;
    returns {entity: key}."""
    out = {e: (keys or {}).get(e) or _new_key() for e in entities}
    text = "".join(f"[{e}]\n\tkey = {out[e]}\n"
                   + "".join(f'\tcaps {d} = "{c}"\n' for d, c in caps.items())
                   for e, caps in entities.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return out


def write_state(d: Path, state: Mapping[str, object]) -> None:
    """Replace ``d``/cluster.json atomically (``down`` may read it at any time)."""
    tmp = d / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, d / STATE_FILE)


def up_report(state: Mapping) -> str:
    """What ``up`` prints, from the state it wrote: conf=, keyring=, state=, mon_host=,
    pid.NAME=, pidfile.NAME= and start_seconds= lines."""
    d, pids = Path(state["base_dir"]), state["pids"]
    lines = [f"conf={state['conf']}", f"keyring={state['admin_keyring']}",
             f"state={d / STATE_FILE}", f"mon_host={state['mon_host']}"]
    lines += [f"pid.{n}={p}" for n, p in pids.items()]
    lines += [f"pidfile.{n}={d / 'run' / f'ceph-{n}.pid'}" for n in pids]
    return "\n".join(lines + [f"start_seconds={state['start_seconds']:.1f}"])


def down(base_dir: str | os.PathLike, remove: bool = True) -> list[str]:
    """Tear down a cluster left running by ``up``: kill exactly the recorded pids (after
    checking each is still a ceph daemon using this directory's conf), detach the loop
    device, remove the directory. Returns what was done."""
    d = Path(base_dir).resolve()
    done: list[str] = []
    st_path = d / STATE_FILE
    state = json.loads(st_path.read_text()) if st_path.exists() else {}
    conf = str(d / "ceph.conf")
    for name, pid in (state.get("pids") or {}).items():
        argv = cmdline(pid)
        if argv and argv[0].split("/")[-1].startswith("ceph-") and conf in argv:
            try:
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed {name} (pid {pid})")
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
    loop = state.get("loop_device")
    if loop:
        detach_loop(loop)
        done.append(f"detached {loop}")
    if remove and d.exists():
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d}")
    return done


_SIZE_SHIFT = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def image_arg(text: str) -> tuple[str, str | None, str, int]:
    """``up --image`` POOL/NAME=SIZE (also POOL/NAMESPACE/NAME, or NAME in pool rbd)
    as (pool, namespace or None, name, bytes).  SIZE as ``rbd create --size`` takes
    it: 1G, 256M (binary units; K M G T P E, optionally Ki Mi ...), 4096B in bytes,
    a bare number in MiB.  argparse.ArgumentTypeError saying what is wrong."""
    spec, eq, size = text.partition("=")
    parts = spec.split("/")
    m = re.fullmatch(r"(\d+)(?:([KMGTPE])i?|(B))?", size.strip())
    if not eq or not 1 <= len(parts) <= 3 or not all(parts) or "@" in spec or not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not POOL/NAME=SIZE (e.g. rbd/img0=1G; POOL/NAMESPACE/NAME "
            f"also works; SIZE as `rbd create --size`: 1G, 256M, 4096B, a bare number "
            f"is MiB)")
    n = int(m.group(1)) << (0 if m.group(3) else _SIZE_SHIFT[m.group(2) or "M"])
    pool = parts[0] if len(parts) > 1 else "rbd"
    return pool, parts[1] if len(parts) == 3 else None, parts[-1], n


def cli_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m tcmu_rbd_lab.ceph up|down`` (ceph.py runs them)."""
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd_lab.ceph",
                                 description="throwaway single-node Ceph cluster")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster in DIR and leave it running")
    up.add_argument("--dir", required=True)
    up.add_argument("--objectstore", choices=["memstore", "bluestore"],
                    default="memstore")
    up.add_argument("--bluestore-block", choices=["auto", "file", "loop"], default="auto")
    up.add_argument("--osd-memory-bytes", type=int, default=4 << 30)
    up.add_argument("--timeout", type=float, default=300.0)
    up.add_argument("--public-addr", default="127.0.0.1", metavar="IP",
                    help="the local IPv4 address mon, OSD and mgr bind and the monmap "
                         "names (default 127.0.0.1; for clients on other hosts: this "
                         "host's address on their network)")
    up.add_argument("--mgr", action="store_true",
                    help="also run a ceph-mgr (the service map: `ceph service status`)")
    up.add_argument("--image", action="append", default=[], type=image_arg,
                    metavar="POOL/NAME=SIZE",
                    help="also create this image (repeatable; SIZE as `rbd create "
                         "--size`: 1G, 256M; one already there of that size is fine)")
    dn = sub.add_parser("down", help="stop the cluster in DIR and remove DIR")
    dn.add_argument("--dir", required=True)
    dn.add_argument("--keep", action="store_true", help="do not remove DIR")
    return ap
