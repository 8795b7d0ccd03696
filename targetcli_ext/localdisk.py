"""The gateway's own disk of a loopback LUN (``targetcli-rbd export --local``), in sysfs.

LIO's loopback fabric (tcm_loop) makes one SCSI host per loopback target; its TPG N
is SCSI target N on channel 0, and a TPG LUN is the SCSI LUN of that number. The
kernel (4.5 and later) says which host in the TPG's configfs ``address`` file
(``<host>:0:<tpgt>``); the disk is then ``/sys/class/scsi_device/H:0:T:L``.

Belongs here: from a loopback target's WWN, TPG tag and LUN to its SCSI address and
/dev/sdX (waiting a moment for the sd driver, which probes asynchronously), what
uses the disk (mounts, swap, device-mapper/md holders, of it or a partition), and
what is done to it: a rescan after a resize, and before its LUN goes (tcm_loop
then removes the SCSI device) a flush, or setting it offline when no daemon may
answer, so nothing waits.

Not here: creating or deleting LIO objects (apply.py, through rtslib-fb), the TCMU
side of the backstore (tcmu_rbd/lio.py, whose :class:`~tcmu_rbd.lio.Roots` say
where sysfs, configfs and /proc are).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tcmu_rbd.lio import Roots, read_attr

FABRIC = "loopback"      # rtslib-fb's name of tcm_loop
WAIT_DISK = 10.0         # s: the sd driver probes a new SCSI device asynchronously


@dataclass(frozen=True)
class LocalDisk:
    """A loopback LUN's SCSI device: ``address`` H:C:T:L, ``name`` sdX (None while
    the kernel has no block device for it yet)."""

    address: str
    name: str | None = None

    @property
    def device(self) -> str | None:
        return f"/dev/{self.name}" if self.name else None

    def describe(self) -> str:
        return f"{self.device or 'no block device yet'} (SCSI {self.address})"


def _scsi_device(roots: Roots, address: str) -> str:
    return os.path.join(roots.sysfs, "class", "scsi_device", address, "device")


def local_disk(roots: Roots, wwn: str, tag: int, lun: int) -> LocalDisk | None:
    """The disk of LUN ``lun`` of TPG ``tag`` of loopback target ``wwn``; None when
    the kernel does not say (no such TPG, or a kernel without ``address``)."""
    addr = read_attr(os.path.join(roots.target, FABRIC, wwn, f"tpgt_{tag}", "address"))
    if not addr or addr.count(":") != 2:
        return None
    address = f"{addr}:{lun}"
    try:
        names = sorted(os.listdir(os.path.join(_scsi_device(roots, address), "block")))
    except OSError:
        names = []
    return LocalDisk(address, names[0] if names else None)


def lun_disk(roots: Roots, lun) -> LocalDisk | None:
    """:func:`local_disk` of an rtslib-fb LUN of a loopback target."""
    tpg = lun.parent_tpg
    return local_disk(roots, tpg.parent_target.wwn, int(tpg.tag), int(lun.lun))


def wait_disk(roots: Roots, wwn: str, tag: int, lun: int,
              timeout: float | None = None) -> LocalDisk | None:
    """:func:`local_disk`, once it has a block device or ``timeout`` s (default
    WAIT_DISK) have passed."""
    deadline = time.monotonic() + (WAIT_DISK if timeout is None else timeout)
    while True:
        d = local_disk(roots, wwn, tag, lun)
        if (d is not None and d.name) or time.monotonic() >= deadline:
            return d
        time.sleep(0.1)


def users(roots: Roots, disk: LocalDisk) -> list[str]:
    """What uses ``disk`` or one of its partitions: ``mounted on /x``, ``swap``,
    ``held by dm-0``; [] when nothing does (or it has no block device)."""
    if not disk.name:
        return []
    block = os.path.join(roots.sysfs, "block", disk.name)
    try:
        parts = [p for p in os.listdir(block) if p.startswith(disk.name)]
    except OSError:
        parts = []
    names = [disk.name] + sorted(parts)
    devs = {f"/dev/{n}" for n in names}
    out = []
    for line in (read_attr(os.path.join(roots.proc, "self", "mounts")) or "").splitlines():
        f = line.split()
        if len(f) > 1 and f[0] in devs:
            out.append(f"{f[0]} mounted on {f[1]}")
    for line in (read_attr(os.path.join(roots.proc, "swaps")) or "").splitlines()[1:]:
        f = line.split()
        if f and f[0] in devs:
            out.append(f"{f[0]} is swap")
    for n in names:
        d = os.path.join(block, *([] if n == disk.name else [n]), "holders")
        try:
            out += [f"/dev/{n} held by {h}" for h in sorted(os.listdir(d))]
        except OSError:
            pass
    return out


def flush_disk(roots: Roots, disk: LocalDisk) -> None:
    """Write the disk's dirty pages and have its cache flushed (fsync: SYNCHRONIZE
    CACHE, answered by the TCMU daemon)."""
    if not disk.name:
        return
    try:
        fd = os.open(os.path.join(roots.dev, disk.name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rescan_disk(roots: Roots, disk: LocalDisk) -> bool:
    """Have the kernel re-read the disk's capacity (after a resize); False when the
    SCSI device is gone."""
    return _write(os.path.join(_scsi_device(roots, disk.address), "rescan"), "1")


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


def offline_disk(roots: Roots, disk: LocalDisk) -> bool:
    """Set the SCSI device offline: the kernel then sends it nothing more (removing
    it sends no SYNCHRONIZE CACHE that no daemon would answer); False when it is gone.

    Not ``device/delete``: tcm_loop removes the SCSI device itself when its LUN
    goes, and a device already deleted then leaves the TPG's port count up, so the
    loopback nexus can never be dropped (tcm_loop_port_unlink returns early)."""
    return _write(os.path.join(_scsi_device(roots, disk.address), "state"), "offline")
