"""The kernel's objects behind one TCMU device, modelled once.

Belongs here: finding TCMU devices (their uio nodes in sysfs), the uio name
``tcm-user/<hba>/<name>/<dev_config>`` and what it says, the device's configfs
directory (``core/user_<hba>/<name>``: attributes, unit serial, size, the
``action/`` files block_dev and reset_ring, its ALUA target port groups and
their members), the fabric LUNs that link to it
(``<fabric>/<wwn>/<tpg>/lun/lun_N/``) and their TPGs' enable switch, the
target_core_user module
parameters, and which processes hold ``/dev/uioN``.  The supervisor, the
worker and targetcli-rbd all read the kernel through this module.

Not here: the ring's shared memory (ring.py), netlink (netlink.py), creating or
deleting LIO objects (targetcli_ext, through rtslib-fb), and any policy about
when to block, reset or restart (supervisor.py).

Why plain files, not pyudev or rtslib-fb: a TCMU device's uio side is two sysfs
attributes fixed by the kernel ABI (``name`` and ``maps/map0/size``), and
libudev cannot be pointed at another root, which the supervisor's host tests
need (they build a fake sysfs/configfs tree).  rtslib-fb models the configfs
tree that targetcli-rbd creates, but not the uio side or the TCMU actions, and
importing it would cost every worker process megabytes; targetcli-rbd goes
from an rtslib storage object to this model with
:meth:`Kernel.device_of_storage_object`.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass

from .config import SUBTYPE  # the handler subtype tcmu-rbd serves

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Roots:
    """Where the kernel's trees are (injectable for tests)."""

    sysfs: str = "/sys"
    configfs: str = "/sys/kernel/config/target/core"
    proc: str = "/proc"
    dev: str = "/dev"

    @property
    def uio_class(self) -> str:
        return os.path.join(self.sysfs, "class", "uio")

    @property
    def target(self) -> str:
        """configfs ``target/``: ``core`` and one directory per fabric module."""
        return os.path.dirname(self.configfs.rstrip("/"))

    @property
    def modparams(self) -> str:
        return os.path.join(self.sysfs, "module", "target_core_user", "parameters")


@dataclass(frozen=True)
class UioName:
    """``tcm-user/<hba>/<name>/<dev_config>``: the uio name of a TCMU device."""

    hba: str
    name: str
    dev_config: str

    @classmethod
    def parse(cls, s: str) -> "UioName | None":
        parts = s.rstrip("\n").split("/", 3)
        if len(parts) != 4 or parts[0] != "tcm-user" or not parts[1] or not parts[2]:
            return None
        return cls(parts[1], parts[2], parts[3])

    @property
    def subtype(self) -> str:
        return self.dev_config.split("/", 1)[0]

    @property
    def image(self) -> str:
        """pool[/ns]/image[@snap] for log lines (no options: they may hold paths)."""
        rest = self.dev_config.split("/", 1)[1] if "/" in self.dev_config else ""
        return rest.split(";", 1)[0]

    def with_config(self, dev_config: str) -> "UioName":
        return UioName(self.hba, self.name, dev_config)

    def __str__(self) -> str:
        return f"tcm-user/{self.hba}/{self.name}/{self.dev_config}"


@dataclass(frozen=True)
class Holder:
    """A process holding a /dev/uioN open."""

    pid: int
    argv: tuple

    def is_worker_of(self, uio: str) -> bool:
        """A tcmu-rbd worker for this device (by the worker's arguments,
        ``--uio uioN --ctl-fd FD``, or a worker host's, ``--host --ctl-fd FD``,
        which serves the devices it holds), e.g. one left behind by a supervisor
        that was SIGKILLed."""
        a = self.argv
        return "--ctl-fd" in a and ("--host" in a or any(a[i] == "--uio" and a[i + 1] == uio
                                                         for i in range(len(a) - 1)))

    def describe(self) -> str:
        return f"pid {self.pid} ({' '.join(self.argv)[:120] or '?'})"


def read_attr(path: str) -> str | None:
    """A sysfs/configfs attribute's value (stripped), or None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class AluaMember:
    """One LUN in an ALUA target port group (a line of ``alua/<group>/members``:
    ``<fabric>/<wwn>/tpgt_<tag>/lun_<n>``) and whether its TPG is enabled."""

    fabric: str
    wwn: str
    tpgt: int
    lun: str
    enabled: bool


@dataclass(frozen=True)
class AluaGroup:
    """A target port group of a device (``core/user_N/<dev>/alua/<name>``)."""

    name: str
    id: int
    state: int
    access_type: int
    implicit_trans_secs: int
    preferred: bool
    supported: int
    members: tuple = ()

    @property
    def local(self) -> bool:
        """A LUN of this group is in a TPG enabled on this host."""
        return any(m.enabled for m in self.members)


# alua_access_type reads back as text (it is written as a number)
_ALUA_ACCESS_TYPES = {"None": 0, "Implicit": 1, "Explicit": 2, "Implicit and Explicit": 3}

# alua_support_* files and their bit in an RTPG descriptor (SPC-4 6.37)
_ALUA_SUPPORT = (("transitioning", 0x80), ("offline", 0x40), ("lba_dependent", 0x10),
                 ("unavailable", 0x08), ("standby", 0x04), ("active_nonoptimized", 0x02),
                 ("active_optimized", 0x01))


class TcmuDevice:
    """One TCMU device: its uio node and its configfs directory.

    Cheap to make; every attribute is read live from the kernel, so the object
    never holds a stale copy (the name's dev_config is the one exception: it is
    what the device was opened with; :meth:`reconfigured` makes the new one)."""

    def __init__(self, uio: str, name: UioName, roots: Roots = Roots()):
        self.uio = uio
        self.name = name
        self.roots = roots

    def __repr__(self) -> str:
        return f"TcmuDevice({self.uio!r}, {str(self.name)!r})"

    # -- identity ---------------------------------------------------------------

    @property
    def label(self) -> str:
        """``<name>(uioN)`` for log lines."""
        return f"{self.name.name}({self.uio})"

    @property
    def node(self) -> str:
        return os.path.join(self.roots.dev, self.uio)

    @property
    def configfs(self) -> str:
        return os.path.join(self.roots.configfs, f"user_{self.name.hba}", self.name.name)

    def reconfigured(self, dev_config: str) -> "TcmuDevice":
        return TcmuDevice(self.uio, self.name.with_config(dev_config), self.roots)

    def present(self) -> bool:
        """The uio node still exists and still names this device."""
        now = Kernel(self.roots).uio_name(self.uio)
        return now is not None and now.hba == self.name.hba and now.name == self.name.name

    # -- uio --------------------------------------------------------------------

    def map_size(self) -> int:
        """The size of the ring mapping (``maps/map0/size``)."""
        v = read_attr(os.path.join(self.roots.uio_class, self.uio, "maps", "map0", "size"))
        if v is None:
            raise OSError(f"{self.uio}: no maps/map0/size in sysfs")
        return int(v, 0)

    def holders(self) -> list[Holder]:
        """Processes (other than us) that have the uio node open, from
        /proc/<pid>/fd.  Zombies hold nothing and are not listed."""
        return Kernel(self.roots).uio_holders().get(self.uio, [])

    # -- configfs ---------------------------------------------------------------

    def attr(self, attr: str, default: int) -> int:
        """An integer attribute (``attrib/<attr>``); default when absent or unreadable."""
        v = read_attr(os.path.join(self.configfs, "attrib", attr))
        try:
            return int(v, 0) if v is not None else default
        except ValueError:
            return default

    def serial(self) -> str:
        """The unit serial (``wwn/vpd_unit_serial``: "T10 VPD Unit Serial Number: <s>")."""
        v = read_attr(os.path.join(self.configfs, "wwn", "vpd_unit_serial")) or ""
        return v.split(":", 1)[1].strip() if ":" in v else v

    def size(self) -> int:
        """The LUN size in bytes: ``attrib/dev_size``, or ``Size:`` in ``info``."""
        size = self.attr("dev_size", 0)
        if size:
            return size
        info = (read_attr(os.path.join(self.configfs, "info")) or "").split()
        if "Size:" in info:
            try:
                return int(info[info.index("Size:") + 1])
            except (ValueError, IndexError):
                return 0
        return 0

    def _fabric_luns(self) -> list[str]:
        """Every ``<fabric>/<wwn>/<tpg>/lun/lun_N`` directory linking to this device.

        Read from the members of the device's ALUA groups, where LIO puts every
        LUN of a device whose ALUA it emulates: a few files of this device, not
        every LUN of every target (each worker's failover thread polls this until
        its LUN is mapped: with 64 LUNs, the gateway's whole tree 64 times every
        0.5 s).  Where LIO passes ALUA through (``attrib/alua_support`` 0) no LUN
        joins a group, and every fabric LUN is read."""
        if self.attr("alua_support", 1) != 0:
            return [os.path.join(self.roots.target, fabric, wwn, tpg, "lun", lun)
                    for d in self._alua_dirs()
                    for fabric, wwn, tpg, lun in self._member_luns(d)]
        me = os.path.realpath(self.configfs)
        pattern = os.path.join(glob.escape(self.roots.target), "*", "*", "*", "lun", "*", "*")
        out = []
        for link in glob.glob(pattern):
            fabric = os.path.relpath(link, self.roots.target).split(os.sep, 1)[0]
            if fabric != "core" and os.path.islink(link) and os.path.realpath(link) == me:
                out.append(os.path.dirname(link))
        return out

    def fabrics(self) -> set[str]:
        """The fabric modules this device is exported through: the configfs
        directory names (``iscsi``, ``loopback``, ``vhost``, ...) of every
        ``<fabric>/<wwn>/<tpg>/lun/lun_N/`` whose link names this device's
        ``core/user_<hba>/<name>``.  Empty when it is on no LUN."""
        return {os.path.relpath(d, self.roots.target).split(os.sep, 1)[0]
                for d in self._fabric_luns()}

    def reachable(self) -> bool:
        """An initiator can send commands to it: one of its LUNs is in an
        enabled TPG (fabrics without an enable switch count as enabled) and is
        mapped to an ACL, or the TPG maps every LUN (generate_node_acls) or has
        no ACLs at all (tcm_loop)."""
        for lun in self._fabric_luns():
            tpg = os.path.dirname(os.path.dirname(lun))
            if read_attr(os.path.join(tpg, "enable")) not in (None, "1"):
                continue
            acls = os.path.join(tpg, "acls")
            if not os.path.isdir(acls) or \
                    read_attr(os.path.join(tpg, "attrib", "generate_node_acls")) == "1":
                return True
            real = os.path.realpath(lun)
            for link in glob.glob(os.path.join(glob.escape(acls), "*", "lun_*", "*")):
                if os.path.islink(link) and os.path.realpath(link) == real:
                    return True
        return False

    def alua_groups(self, skip: tuple = ()) -> list[AluaGroup]:
        """The device's ALUA target port groups, sorted by id; those named in
        ``skip`` are not read (a group is ~14 configfs reads: the failover
        thread, which reads them every few seconds, skips the default one)."""
        out = []
        for d in self._alua_dirs(skip):
            name = os.path.basename(d)

            def num(attr, default=0, d=d):
                try:
                    return int(read_attr(os.path.join(d, attr)) or str(default), 0)
                except ValueError:
                    return default
            supported = 0
            for attr, bit in _ALUA_SUPPORT:
                if num("alua_support_" + attr):
                    supported |= bit
            access = _ALUA_ACCESS_TYPES.get(read_attr(os.path.join(d, "alua_access_type")) or "",
                                            None)
            out.append(AluaGroup(name, num("tg_pt_gp_id"), num("alua_access_state"),
                                 num("alua_access_type") if access is None else access,
                                 num("implicit_trans_secs"),
                                 bool(num("preferred")), supported, self._members(d)))
        return sorted(out, key=lambda g: g.id)

    def _alua_dirs(self, skip: tuple = ()) -> list[str]:
        """The directories of the device's ALUA groups (``alua/<group>``), by name."""
        base = os.path.join(self.configfs, "alua")
        try:
            return [os.path.join(base, n) for n in sorted(os.listdir(base)) if n not in skip]
        except OSError:
            return []

    def _member_luns(self, group_dir: str) -> list[tuple[str, str, str, str]]:
        """(fabric directory, wwn, tpgt_N, lun_N) of each line of a group's ``members``."""
        out = []
        # the kernel ends each member's line with "\n\0" (target_tg_pt_gp_members_show
        # counts the terminator): the second member's line starts with a NUL
        text = (read_attr(os.path.join(group_dir, "members")) or "").replace("\0", "")
        for line in text.splitlines():
            parts = line.strip().split("/")
            if len(parts) != 4 or not parts[2].startswith("tpgt_") or not parts[2][5:].isdigit():
                continue
            fabric, wwn, tpg, lun = parts
            # the kernel names the fabric as its module does ("iSCSI"); configfs
            # names its directory in lower case ("iscsi")
            if not os.path.isdir(os.path.join(self.roots.target, fabric)):
                fabric = fabric.lower()
            out.append((fabric, wwn, tpg, lun))
        return out

    def _members(self, group_dir: str) -> tuple:
        return tuple(
            AluaMember(fabric, wwn, int(tpg[5:]), lun,
                       read_attr(os.path.join(self.roots.target, fabric, wwn, tpg, "enable"))
                       == "1")
            for fabric, wwn, tpg, lun in self._member_luns(group_dir))

    def set_alua_state(self, group: str, state: int) -> bool:
        """An implicit transition of one group (the kernel tells the
        initiators with ASYMMETRIC ACCESS STATE CHANGED)."""
        path = os.path.join(self.configfs, "alua", group, "alua_access_state")
        try:
            with open(path, "w") as f:
                f.write(f"{state}\n")
            return True
        except OSError as e:
            log.warning("device=%s: cannot set ALUA group %s to state %d: %s",
                        self.name.name, group, state, e.strerror)
            return False

    def enable_tpg(self, member: AluaMember, on: bool) -> bool:
        """Enable or disable the TPG of a member (disabling waits in the kernel
        for the TPG's commands in flight: never from the thread that
        completes them)."""
        path = os.path.join(self.roots.target, member.fabric, member.wwn,
                            f"tpgt_{member.tpgt}", "enable")
        try:
            with open(path, "w") as f:
                f.write("1\n" if on else "0\n")
            return True
        except OSError as e:
            log.warning("device=%s: cannot %s %s/%s/tpgt_%d: %s", self.name.name,
                        "enable" if on else "disable", member.fabric, member.wwn,
                        member.tpgt, e.strerror)
            return False

    def action(self, action: str, value: int) -> bool:
        """Write ``action/<action>``; False (and a warning) when the kernel refuses."""
        return self._write(os.path.join(self.configfs, "action", action), value)

    def set_attr(self, attr: str, value: int) -> bool:
        """Write ``attrib/<attr>``; False (and a warning) when the kernel refuses."""
        return self._write(os.path.join(self.configfs, "attrib", attr), value)

    def _write(self, path: str, value: int) -> bool:
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            return True
        except OSError as e:
            log.warning("device=%s: cannot write %d to %s: %s", self.name.name, value, path,
                        e.strerror)
            return False

    def block(self, on: bool = True) -> bool:
        """block_dev: the kernel holds new commands (True) or lets them through."""
        return self.action("block_dev", 1 if on else 0)

    def reset_ring(self) -> bool:
        """reset_ring: the kernel fails what the ring holds and empties it."""
        return self.action("reset_ring", 1)


class Kernel:
    """The host's TCMU devices and target_core_user parameters."""

    def __init__(self, roots: Roots = Roots()):
        self.roots = roots

    def uio_name(self, uio: str) -> UioName | None:
        v = read_attr(os.path.join(self.roots.uio_class, uio, "name"))
        return UioName.parse(v) if v else None

    def device(self, uio: str) -> TcmuDevice | None:
        """The TCMU device on uioN; None when uioN is absent or not TCMU."""
        name = self.uio_name(uio)
        return TcmuDevice(uio, name, self.roots) if name else None

    def devices(self) -> list[TcmuDevice]:
        """Every TCMU device, in uio order."""
        try:
            entries = os.listdir(self.roots.uio_class)
        except OSError:
            return []
        uios = sorted((e for e in entries if e.startswith("uio") and e[3:].isdigit()),
                      key=lambda e: int(e[3:]))
        return [d for d in map(self.device, uios) if d is not None]

    def device_of_storage_object(self, so) -> TcmuDevice | None:
        """The TCMU device of an rtslib user backstore (``so.path`` is
        ``.../core/user_<hba>/<name>``); None while it has no uio (not enabled)."""
        hba = os.path.basename(os.path.dirname(so.path))
        idx = hba.split("_", 1)[1] if hba.startswith("user_") else None
        for d in self.devices():
            if d.name.hba == idx and d.name.name == so.name:
                return d
        return None

    def uio_holders(self) -> dict[str, list[Holder]]:
        """uioN -> the processes (other than us) that have /dev/uioN open."""
        prefix = self.roots.dev.rstrip("/") + "/uio"
        me = os.getpid()
        out: dict[str, list[Holder]] = {}
        try:
            pids = [int(e) for e in os.listdir(self.roots.proc) if e.isdigit()]
        except OSError:
            return out
        for pid in pids:
            if pid == me:
                continue
            fd_dir = os.path.join(self.roots.proc, str(pid), "fd")
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            held = set()
            for fd in fds:
                try:
                    t = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if t.startswith(prefix) and t[len(prefix):].isdigit():
                    held.add(os.path.basename(t))
            if not held:
                continue
            try:
                with open(os.path.join(self.roots.proc, str(pid), "cmdline"), "rb") as f:
                    argv = tuple(a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a)
            except OSError:
                argv = ()
            for uio in held:
                out.setdefault(uio, []).append(Holder(pid, argv))
        return out

    def modparam(self, name: str, value: int) -> bool | None:
        """Write a target_core_user parameter; None when it does not exist."""
        path = os.path.join(self.roots.modparams, name)
        if not os.path.exists(path):
            return None
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            return True
        except OSError as e:
            log.warning("cannot write %d to %s: %s", value, path, e.strerror)
            return False

    def module_loaded(self) -> bool:
        return os.path.isdir(os.path.join(self.roots.sysfs, "module", "target_core_user"))
