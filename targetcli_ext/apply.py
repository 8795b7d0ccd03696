"""Writing LIO through rtslib-fb: carrying out an export plan, and unexporting.

Belongs here: :func:`probe_portals` (the last host check before writing: a new
portal's address must be this host's and its port free; it binds a socket and
closes it, so a dry run runs it too), :func:`apply_export` (the rtslib calls of
an :class:`~.plan.ExportPlan`, in its order, removing again what it created when
a step fails), :func:`apply_local` (likewise for a :class:`~.plan.LocalPlan`: a
loopback target, its TPG and LUN 0) and :func:`remove_export` (an image's LUNs,
or only its local disks, its backstore and emptied targets; a local disk in use
is refused before anything is removed).

Not here: deciding what to write (plan.py), reading LIO into values (state.py),
the daemon and the cluster (gateway.py).  The CHAP secrets come from the request
(``chap``) and go to configfs only; lines reported name users, never secrets.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import Mapping

from tcmu_rbd.lio import Roots

from .localdisk import LocalDisk, flush_disk, lun_disk, offline_disk, users, wait_disk
from .plan import ExportPlan, LocalPlan
from .spec import Chap, ExtError, ImageRef, Portal, Report
from .state import (
    find_target, is_local, iscsi_fabric, lio_error, loopback_fabric, portal_of_np,
    rbd_backstores,
)

log = logging.getLogger(__name__)


def probe_portals(portals) -> None:
    """Each portal (one LIO does not listen on yet) must be bindable: an address of
    this host, and no other program listening on that port."""
    for p in portals:
        fam = socket.AF_INET6 if p.ipv6 else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((p.ip, p.port))
            s.listen(1)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ExtError(
                    f"portal {p} is in use by another program (not LIO): find it with "
                    f"`ss -ltnp 'sport = :{p.port}'`, stop it or choose another "
                    f"--portal", "portal-in-use") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ExtError(f"portal {p}: {p.ip} is not an address of this host "
                               f"(`ip -br addr`)", "portal-address") from None
            raise ExtError(f"portal {p} cannot be opened: {e.strerror}",
                           "portal-error") from None
        finally:
            s.close()


@dataclass(frozen=True)
class Applied:
    """What apply_export did, and the export as the kernel now has it."""

    lines: tuple[str, ...]
    serial: str
    size: int
    portals: tuple[Portal, ...]


def _ip_for_rtslib(p: Portal) -> str:
    return f"[{p.ip}]" if p.ipv6 else p.ip


def _by(items, key, value):
    return next(i for i in items if key(i) == value)


class _Writer:
    """The rtslib calls of one apply_export: each creation is recorded for the
    rollback (``undo``) and reported (``lines``)."""

    def __init__(self, root):
        import rtslib_fb
        self.rts, self.root = rtslib_fb, root
        self.lines: list[str] = []
        self.undo = []

    def created(self, obj, line: str | None):
        self.undo.append(obj.delete)
        if line:
            self.lines.append(line)
        return obj

    def rollback(self) -> None:
        for fn in reversed(self.undo):
            try:
                fn()
            except Exception as e:  # keep unwinding
                log.warning("rollback step failed: %s", e)

    def backstore(self, plan: ExportPlan | LocalPlan):
        b = plan.new_backstore
        if b is None:
            return _by((so for so, _ in rbd_backstores(self.root)), lambda s: s.name,
                       plan.backstore)
        try:
            so = self.rts.UserBackedStorageObject(
                b.name, config=b.dev_config, size=b.size, wwn=b.wwn,
                hw_max_sectors=b.hw_max_sectors, control=b.control)
        except Exception as e:
            raise ExtError(f"creating backstore user:rbd/{b.name} for {b.dev_config} "
                           f"failed: {lio_error(e)}; the daemon's log says why (journalctl "
                           f"-u tcmu-rbd)", "backstore-failed") from None
        self.created(so, None)
        for k, v in b.attributes:
            so.set_attribute(k, v)
        self.lines.append(f"created {b.text(serial=so.wwn)}")
        return so

    def tpg(self, plan: ExportPlan):
        fm = iscsi_fabric()
        if plan.create_target:
            target = self.created(self.rts.Target(fm, plan.target, mode="create"),
                                  f"created target {plan.target}")
        else:
            target = find_target(self.root, plan.target)
        t = plan.tpg
        # a new TPG goes with its target (or stays, empty, on an existing one)
        tpg = self.rts.TPG(target, t.tag, mode="any") if t.create else \
            _by(target.tpgs, lambda x: int(x.tag), t.tag)
        for k, v in t.attributes:
            tpg.set_attribute(k, v)
        for k, v in t.parameters:
            tpg.set_parameter(k, v)
        return tpg

    def portals(self, plan: ExportPlan, tpg) -> None:
        for p in plan.new_portals:
            try:
                np = self.rts.NetworkPortal(tpg, _ip_for_rtslib(p), p.port, mode="create")
            except Exception as e:
                raise ExtError(f"LIO could not open portal {p} ({lio_error(e)}): the "
                               f"address must be one of this host's and the port free "
                               f"(`ss -ltnp 'sport = :{p.port}'`)", "portal-in-use") from None
            self.created(np, f"portal {p}")

    def acls(self, plan: ExportPlan, tpg, chap: Mapping[str, Chap]) -> None:
        acls = {a.node_wwn: a for a in tpg.node_acls}
        for a in plan.acls:
            if a.create:
                acl = acls[a.initiator] = self.created(
                    self.rts.NodeACL(tpg, a.initiator, mode="create"), None)
                acl.tcq_depth = a.tcq_depth
                self.lines.append(a.text())
            if a.chap is not None:
                acl, c = acls[a.initiator], chap[a.initiator]
                acl.chap_userid = c.user
                acl.chap_password = c.secret.reveal()
                if c.mutual:
                    acl.chap_mutual_userid = c.mutual_user
                    acl.chap_mutual_password = c.mutual_secret.reveal()
                self.lines.append(f"  {a.chap.describe()}")
        for m in plan.mapped_luns:
            self.created(self.rts.MappedLUN(acls[m.initiator], m.mapped_lun, plan.lun,
                                            write_protect=m.write_protect),
                         f"  {m.text()}")


def apply_export(plan: ExportPlan, chap: Mapping[str, Chap], root) -> Applied:
    """Carry out ``plan`` (with its image size set) in that order: backstore and its
    attributes (before any LUN exists), target, TPG settings, portals, LUN, ACLs
    (after default_cmdsn_depth: an ACL copies it) with CHAP, mapped LUNs, enable.
    On any failure what this call created is deleted again, newest first."""
    w = _Writer(root)
    try:
        so = w.backstore(plan)
        tpg = w.tpg(plan)
        w.portals(plan, tpg)
        if plan.create_lun:
            w.created(w.rts.LUN(tpg, lun=plan.lun, storage_object=so), plan.lun_text())
        w.acls(plan, tpg, chap)
        if plan.tpg.enable:
            tpg.enable = True
    except BaseException:
        w.rollback()
        raise
    return Applied(tuple(w.lines), so.wwn, so.size,
                   tuple(portal_of_np(np) for np in tpg.network_portals))


@dataclass(frozen=True)
class AppliedLocal:
    """What apply_local did; ``target``: the loopback target, ``disk`` its LUN 0's."""

    lines: tuple[str, ...]
    serial: str
    size: int
    target: str
    disk: LocalDisk | None


def apply_local(plan: LocalPlan, root, roots: Roots) -> AppliedLocal:
    """Carry out ``plan``: the backstore (if new) with its attributes, a loopback
    target (rtslib generates its naa. WWN), its TPG 1 (rtslib sets the nexus:
    tcm_loop's SCSI host gets its initiator) and LUN 0 (the kernel adds the SCSI
    disk); then wait a moment for the disk's block device.  On failure what this
    call created is deleted again, newest first."""
    w = _Writer(root)
    try:
        so = w.backstore(plan)
        wwn = plan.target
        if wwn is None:
            t = w.created(w.rts.Target(loopback_fabric(), mode="create"), None)
            tpg = w.rts.TPG(t, 1, mode="create")
            w.created(w.rts.LUN(tpg, lun=0, storage_object=so),
                      f"created loopback target {t.wwn}, LUN 0 -> user:rbd/{so.name}")
            wwn = t.wwn
    except BaseException:
        w.rollback()
        raise
    disk = wait_disk(roots, wwn, 1, 0)
    return AppliedLocal(tuple(w.lines), so.wwn, so.size, wwn, disk)


def remove_export(root, so, ref: ImageRef, keep_target: bool = False, *,
                  local_only: bool = False, roots: Roots | None = None,
                  force: bool = False) -> Report:
    """Delete the backstore ``so`` of ``ref`` with its LUNs and their mapped LUNs,
    then each of its targets that has no LUN left (iSCSI ones unless
    ``keep_target``).  ``local_only``: only its local disks (loopback LUNs), and
    the backstore only when no LUN is left.  A local disk in use (mounted, swap,
    held) is refused first; each is flushed (``force``: set offline, the daemon
    may not answer) before its LUN goes and tcm_loop removes it."""
    roots = roots or Roots()
    rep = Report()
    luns = [lun for lun in so.attached_luns if is_local(lun) or not local_only]
    disks = {id(lun): lun_disk(roots, lun) for lun in luns if is_local(lun)}
    busy = [u for d in disks.values() if d is not None for u in users(roots, d)]
    if busy:
        raise ExtError(f"the local disk of {ref.spec} is in use ({'; '.join(busy)}): "
                       f"unmount it and stop what holds it (findmnt, lsblk), then "
                       f"unexport again", "disk-busy")
    targets, local = set(), {}
    for lun in luns:
        tpg = lun.parent_tpg
        wwn = tpg.parent_target.wwn
        d = disks.get(id(lun))
        if d is not None and force:
            offline_disk(roots, d)
        elif d is not None:
            flush_disk(roots, d)
        if is_local(lun):
            local[wwn] = tpg.parent_target
        else:
            targets.add(wwn)
        for m in list(lun.mapped_luns):
            m.delete()
        n = lun.lun
        lun.delete()
        rep.add(f"removed LUN {n} of {wwn}" + (f": the local disk {d.describe()}"
                                               if d is not None else ""))
    for wwn, t in sorted(local.items()):   # a loopback target is one disk's: it goes
        if not any(list(tpg.luns) for tpg in t.tpgs):
            t.delete()
            rep.add(f"removed loopback target {wwn}")
    bs = so.name
    if not local_only or not list(so.attached_luns):
        so.delete()
        rep.add(f"removed backstore user:rbd/{bs} ({ref.spec})")
    for iqn in sorted(targets):
        t = find_target(root, iqn)
        if t is None or keep_target:
            continue
        if not any(list(tpg.luns) for tpg in t.tpgs):
            t.delete()
            rep.add(f"removed target {iqn} (it had no LUN left)")
    rep.lines.insert(0, f"unexported {ref.spec}" + (" (its local disk)" if local_only else ""))
    rep.data = {"image": ref.spec, "backstore": bs, "targets": sorted(targets),
                "local_targets": sorted(local),
                "local_disks": [d.device for d in disks.values() if d and d.device],
                "changed": True}
    return rep
