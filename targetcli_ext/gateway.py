"""targetcli-rbd's library face: :class:`Gateway`, one object per run that holds
the daemon (D-Bus), the cluster (librbd) and LIO (rtslib-fb) and offers the
operations ``export``, ``unexport``, ``list``, ``resize``, ``qos``, ``save``,
``restore`` and ``discovery_auth``, each returning a :class:`~.spec.Report`.

An export runs in this order, so nothing is written before every check passed
(``--local``, a disk of this host, the same with a LocalPlan and no portals):
the request's own rules (plan.check_request), a snapshot of LIO (state.py), the
plan against it (plan.py: the refusals, then what to create), the bind probe of
new portals, the daemon's CheckConfig (its validation and message), the image's
size; then either the plan is printed (dry run) or carried out (apply.py, which
removes again what it created when a step fails).

Belongs here: that sequencing, the short operations (unexport, resize, save,
restore, discovery authentication) and the reports' wording.  Not here: option
parsing and secret loading (commands.py, cli.py, shell.py), the planning rules
(plan.py), the rtslib writes (apply.py), the listing (status.py).
"""

from __future__ import annotations

import json
import os

from tcmu_rbd.lio import Kernel

from .apply import (
    Applied, AppliedLocal, apply_export, apply_local, probe_portals, remove_export,
)
from .cluster import Cluster
from .daemon import Daemon, DaemonNotRunning
from .plan import (
    ExportPlan, ExportRequest, LocalPlan, check_request, plan_export, plan_local,
)
from .spec import (
    Chap, ExtError, ImageRef, Portal, Report, connect_instructions, human_size,
    parse_size, redact,
)
from .state import (
    LioState, is_local, iscsi_fabric, lio_error, open_root, rbd_backstores, read_state,
)
from .localdisk import lun_disk, rescan_disk
from .status import list_report

DEFAULT_SAVE_FILE = "/etc/rtslib-fb-target/saveconfig.json"


class Gateway:
    def __init__(self, daemon: Daemon | None = None, cluster: Cluster | None = None,
                 save_file: str = DEFAULT_SAVE_FILE, kernel: Kernel | None = None):
        self.daemon = daemon or Daemon()
        self.cluster = cluster or Cluster()
        self.kernel = kernel or Kernel()   # the uio side of the TCMU devices
        self.save_file = save_file
        self._root = None

    @property
    def root(self):
        if self._root is None:
            self._root = open_root()
        return self._root

    def rbd_backstores(self):
        """[(storage object, ImageRef)] of every user:rbd backstore."""
        return rbd_backstores(self.root)

    def find_backstore(self, ref: ImageRef | None = None, name: str | None = None):
        for so, r in self.rbd_backstores():
            if (ref is not None and r.same_image(ref)) or (name and so.name == name):
                return so, r
        return None, None

    def state(self, target_iqn: str) -> LioState:
        return read_state(self.root, target_iqn)

    # -- export -------------------------------------------------------------------

    def export(self, req: ExportRequest, dry_run: bool = False) -> Report:
        req = check_request(req)
        secrets = req.secrets()
        try:
            return self._export(req, dry_run)
        except ExtError as e:
            raise ExtError(redact(str(e), secrets), e.code, e.exit_status) from None
        except Exception as e:  # rtslib/OS errors: never let a secret through
            raise ExtError(redact(f"export failed: {lio_error(e)}", secrets),
                           "lio-error") from None

    def _export(self, req: ExportRequest, dry_run: bool) -> Report:
        if req.local:
            return self._export_local(req, dry_run)
        plan = plan_export(req, self.state(req.target))
        probe_portals(plan.listen)
        notes = list(plan.warnings) + self._check_config(req)
        plan = plan.with_image_size(self.cluster.image_size(req.image))
        if dry_run:
            where = f"LUN {plan.lun} of {plan.target}"
            return _dry_run_report(plan, notes, f"{plan.image} is already exported as {where}",
                                   f"exporting {plan.image} as {where}")
        return _export_report(plan, apply_export(plan, req.chap, self.root), notes, req)

    def _export_local(self, req: ExportRequest, dry_run: bool) -> Report:
        plan = plan_local(req, read_state(self.root, None))
        notes = self._check_config(req)
        plan = plan.with_image_size(self.cluster.image_size(req.image))
        if dry_run:
            return _dry_run_report(
                plan, notes, f"{plan.image} already has its local disk (LUN 0 of "
                f"loopback target {plan.target})",
                f"exporting {plan.image} as a local disk of this host")
        return _local_report(plan, apply_local(plan, self.root, self.kernel.roots), notes)

    def _check_config(self, req: ExportRequest) -> list[str]:
        """The daemon's CheckConfig of the image (refused: ExtError); its notes."""
        ok, msg = self.daemon.check_config(req.image.dev_config)
        if not ok:
            code = "image-missing" if any(w in msg for w in ("does not exist", "not found",
                                                               "No such")) else "bad-config"
            raise ExtError(f"the TCMU daemon refused {req.image.dev_config}: {msg}", code)
        return [f"daemon: {msg}"] if msg and msg not in ("OK", "success", "true") else []

    # -- the other operations ----------------------------------------------------------

    def unexport(self, ref: ImageRef | None = None, name: str | None = None,
                 keep_target: bool = False, force: bool = False,
                 local: bool = False) -> Report:
        """Remove an image's export (``local``: only its local disk)."""
        so, r = self.find_backstore(ref=ref, name=name)
        what = ref.spec if ref else name
        if so is None or (local and not any(is_local(x) for x in so.attached_luns)):
            rep = Report(changed=False)
            rep.add(f"{what} has no local disk: nothing to do" if so is not None else
                    f"{what} is not exported: nothing to do")
            rep.data = {"image": what, "changed": False}
            return rep
        if not force:
            # deleting a user backstore, and the SCSI disk of a loopback LUN, wait for
            # the daemon's answer to the kernel
            self.daemon.require()
        return remove_export(self.root, so, r, keep_target=keep_target, local_only=local,
                             roots=self.kernel.roots, force=force)

    def list(self) -> Report:
        try:
            daemon_up = self.daemon.running()
        except DaemonNotRunning:
            daemon_up = False
        return list_report(self.rbd_backstores(), daemon_up, self.kernel)

    def resize(self, ref: ImageRef, size_text: str) -> Report:
        rep = Report()
        if ref.read_only:
            raise ExtError(f"{ref.spec} is a snapshot: snapshots cannot be resized",
                           "read-only")
        found = [(so, r) for so, r in self.rbd_backstores() if r.same_image(ref)]
        current = self.cluster.image_size(ref)
        size = parse_size(size_text, current=current)
        if size < current:
            raise ExtError(f"{ref.spec} is {human_size(current)}: shrinking to "
                           f"{human_size(size)} would cut off data an initiator may use; "
                           f"targetcli-rbd only grows images", "shrink")
        if found:
            self.daemon.require()
        if size > current:
            self.cluster.resize(ref, size)
            rep.add(f"grew image {ref.spec} from {human_size(current)} to {human_size(size)}")
        else:
            rep.changed = False
            rep.add(f"image {ref.spec} is already {human_size(size)}")
        for so, _ in found:
            if so.size != size:
                try:
                    # the kernel sends RECONFIG_DEVICE(dev_size) to the daemon and
                    # waits for its answer; initiators then get UNIT ATTENTION
                    # (capacity data has changed)
                    so.set_attribute("dev_size", str(size))
                except Exception as e:
                    raise ExtError(f"the image grew but LUN backstore user:rbd/{so.name} "
                                   f"could not follow ({lio_error(e)}): see the daemon's "
                                   f"log; retry the same resize", "resize-failed") from None
                rep.changed = True
                rep.add(f"backstore user:rbd/{so.name} is now {human_size(size)}: "
                        f"initiators see the new capacity after a rescan "
                        f"(iscsiadm -m session --rescan)")
            for lun in (x for x in so.attached_luns if is_local(x)):
                d = lun_disk(self.kernel.roots, lun)
                if d is not None and rescan_disk(self.kernel.roots, d):
                    rep.add(f"the local disk {d.describe()} is rescanned")
        if not found:
            rep.add(f"({ref.spec} is not exported)")
        rep.data = {"image": ref.spec, "old_size": current, "size": size,
                    "backstores": [so.name for so, _ in found], "changed": rep.changed}
        return rep

    def qos(self, ref: ImageRef, values: dict[str, int] | None = None,
            clear: bool = False, dry_run: bool = False) -> Report:
        """Show or change the image's QoS (qos.py), with this gateway's LUN of
        the image, if any (without LIO, e.g. not root: none)."""
        from .qos import image_qos
        try:
            so, lun = self.find_backstore(ref=ref)
        except ExtError as e:
            if e.code not in ("not-root", "no-lio"):
                raise
            so, lun = None, None
        where = f"LUN backstore user:rbd/{so.name} here" if so is not None else \
            "no LUN of it found on this gateway"
        return image_qos(self.cluster, ref, values, clear=clear, lun=lun, where=where,
                         dry_run=dry_run)

    def save(self, path: str | None = None) -> Report:
        path = path or self.save_file
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.root.save_to_file(path)
        n = len(self.rbd_backstores())
        rep = Report()
        rep.add(f"saved the LIO configuration ({n} rbd export(s)) to {path} (mode 0600: "
                f"it holds the CHAP secrets)")
        rep.data = {"file": path, "rbd_exports": n}
        return rep

    def restore(self, path: str | None = None, clear: bool = False) -> Report:
        path = path or self.save_file
        try:
            with open(path) as f:
                config = json.load(f)
        except OSError as e:
            raise ExtError(f"cannot read {path}: {e.strerror}", "no-save-file") from None
        except ValueError as e:
            raise ExtError(f"{path} is not valid JSON: {e}", "bad-save-file") from None
        if any(so.get("plugin") == "user" for so in config.get("storage_objects", [])):
            self.daemon.require()
        root = self.root
        if (any(True for _ in root.storage_objects) or any(True for _ in root.targets)) \
                and not clear:
            raise ExtError("the kernel already has a target configuration: pass --clear "
                           "to replace it (targetcli-rbd restore --clear)", "not-empty")
        errors = root.restore_from_file(path, clear_existing=True)
        secrets = _secrets_in_config(config)
        rep = Report()
        if errors:
            rep.add(f"restored {path} with {len(errors)} error(s):")
            for e in errors:
                rep.add("  " + redact(str(e), secrets))
        else:
            rep.add(f"restored {path}")
        rep.data = {"file": path, "errors": [redact(str(e), secrets) for e in errors]}
        if errors:
            raise ExtError("\n".join(rep.lines), "restore-errors")
        return rep

    def discovery_auth(self, chap: Chap | None) -> Report:
        fm = iscsi_fabric()
        rep = Report()
        if chap is None:
            fm.clear_discovery_auth_settings()
            rep.add("discovery authentication off (any initiator may list the targets "
                    "it has an ACL on)")
        else:
            fm.discovery_userid = chap.user
            fm.discovery_password = chap.secret.reveal()
            if chap.mutual:
                fm.discovery_mutual_userid = chap.mutual_user
                fm.discovery_mutual_password = chap.mutual_secret.reveal()
            else:
                fm.discovery_mutual_userid = ""
                fm.discovery_mutual_password = ""
            fm.discovery_enable_auth = True
            rep.add(f"discovery authentication on: {chap.describe()}")
            rep.add("initiators: iscsiadm -m discovery -t st -p <portal> "
                    "-o update -n discovery.sendtargets.auth.authmethod -v CHAP, "
                    "then discovery.sendtargets.auth.username/password likewise")
        rep.data = {"enabled": chap is not None}
        return rep


# -- reports ---------------------------------------------------------------------------

def _dry_run_report(plan: ExportPlan | LocalPlan, notes: list[str], in_place: str,
                    change: str) -> Report:
    """``in_place``: the export as it is (an empty plan), ``change``: what the plan does."""
    rep = Report(changed=False)
    if plan.empty:
        rep.add(f"dry run: {in_place}: nothing to change")
    else:
        rep.add(f"dry run: {change} would make these changes (none is made now):")
    rep.lines += notes
    rep.lines += ["  " + line for line in plan.describe()]
    rep.data = {"dry_run": True, "changed": False, "plan": plan.to_dict()}
    return rep


def _export_report(plan: ExportPlan, done: Applied, notes: list[str],
                   req: ExportRequest) -> Report:
    rep = Report(changed=not plan.empty)
    if plan.empty:
        rep.add(f"{plan.image} is already exported as LUN {plan.lun} of {plan.target}: "
                f"nothing to change")
    else:
        rep.add(f"exported {plan.image}" + (" (read-only snapshot)" if plan.read_only
                                             else "") + f" as LUN {plan.lun} of {plan.target}")
    rep.lines += notes
    rep.lines += done.lines
    rep.data = {"image": plan.image, "backstore": plan.backstore, "serial": done.serial,
                "size": done.size, "target": plan.target, "lun": plan.lun,
                "portals": [str(p) for p in done.portals],
                "initiators": list(plan.initiators), "read_only": plan.read_only,
                "changed": rep.changed}
    _connect_text(rep, plan.target, list(done.portals),
                  list(req.initiators) or list(plan.initiators), req)
    return rep


def _local_report(plan: LocalPlan, done: AppliedLocal, notes: list[str]) -> Report:
    rep = Report(changed=not plan.empty)
    disk = done.disk.describe() if done.disk else "no SCSI address from the kernel"
    if plan.empty:
        rep.add(f"{plan.image} already has its local disk {disk}: nothing to change")
    else:
        rep.add(f"exported {plan.image}" + (" (read-only snapshot)" if plan.read_only
                                             else "") + f" as the local disk {disk}")
    rep.lines += notes
    rep.lines += done.lines
    if plan.iscsi:
        rep.add("its iSCSI LUN(s) share the backstore: "
                + ", ".join(f"LUN {n} of {t}" for t, n in plan.iscsi))
    if done.disk is None or not done.disk.name:
        rep.add("warning: the kernel shows no block device for it yet: see `lsscsi` "
                "and `targetcli-rbd list` in a moment")
    rep.data = {"image": plan.image, "backstore": plan.backstore, "serial": done.serial,
                "size": done.size, "read_only": plan.read_only, "changed": rep.changed,
                "local": {"target": done.target, "lun": 0,
                          "device": done.disk.device if done.disk else None,
                          "address": done.disk.address if done.disk else None}}
    return rep


def _connect_text(rep: Report, target: str, portals: list[Portal],
                  initiators: list[str], req: ExportRequest) -> None:
    rep.add("")
    rep.add("connect from an initiator (open-iscsi):")
    for iqn in initiators[:1] or [None]:
        hint = req.secret_hints.get(iqn, (None, None)) if iqn else (None, None)
        for line in connect_instructions(target, portals, initiator=iqn,
                                         chap=req.chap.get(iqn) if iqn else None,
                                         secret_hint=hint[0], mutual_hint=hint[1]):
            rep.add("  " + line)
    if len(initiators) > 1:
        rep.add(f"  (the same for {', '.join(initiators[1:])}, each with its own "
                f"InitiatorName)")
    rep.add("  then: iscsiadm -m session -P3 | grep 'Attached scsi disk'")


def _secrets_in_config(config: dict) -> list[str]:
    """Every password in a saved configuration (to redact rtslib's errors)."""
    out = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if "password" in k and isinstance(v, str) and v:
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(config)
    return out
