"""The operations of targetcli-rbd on rtslib-fb (configfs), D-Bus and librbd.

``Gateway`` is the library face: ``export``, ``unexport``, ``list``, ``resize``,
``save``, ``restore``, ``discovery_auth``. The CLI (cli.py) and the targetcli shell
node ``/rbd`` (shell.py) only parse arguments and print the :class:`Report`.

An export creates, in one step and in this order (so every setting is in place
before the kernel or an initiator can use it): CheckConfig over D-Bus (the daemon's
validation and message), the ``user:rbd`` backstore with hw_max_sectors and
max_data_area_mb on its control line (before enable), its attributes
(cmd_time_out, qfull_time_out: before any LUN exists), the target and TPG with its
attributes (generate_node_acls=0, demo-mode write protection, demo_mode_discovery=0,
default_cmdsn_depth, authentication) and RFC 3720 parameters, the portals, the LUN,
then ACLs (after default_cmdsn_depth, since an ACL copies it when created) with
their CHAP credentials and mapped LUNs, and finally enables the TPG. If a step
fails, what this call created is removed again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Iterable

from .spec import (
    Chap, Defaults, ExtError, ImageRef, Portal, Report, backstore_name,
    check_backstore_name, check_iqn, connect_instructions, default_target_iqn,
    human_size, image_of_config, parse_size, redact, resolve_portals,
)

log = logging.getLogger("targetcli_ext")

BUS_NAME = "org.kernel.TCMUService1"
HANDLER_PATH = "/org/kernel/TCMUService1/rbd"
HANDLER_IFACE = "org.kernel.TCMUService1"
DEFAULT_SAVE_FILE = "/etc/rtslib-fb-target/saveconfig.json"
START_HINT = ("start it with `systemctl start tcmu-rbd` (or run `tcmu-rbd --foreground` "
              "as root), then retry")


class DaemonNotRunning(ExtError):
    def __init__(self, message: str):
        super().__init__(message, "daemon-not-running", exit_status=3)


# =============================================================================
# The daemon, over D-Bus
# =============================================================================

class Daemon:
    """org.kernel.TCMUService1 on the system bus (tcmu-rbd, or tcmu-runner)."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_ms = int(timeout_s * 1000)
        self._bus = None

    def _connect(self):
        if self._bus is None:
            from gi.repository import Gio, GLib
            try:
                self._bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
            except GLib.Error as e:
                raise DaemonNotRunning(
                    f"cannot reach the system D-Bus ({e.message}): the TCMU daemon serves "
                    f"user:rbd over it; start dbus, then the daemon: {START_HINT}") from None
        return self._bus

    def running(self) -> bool:
        from gi.repository import GLib
        bus = self._connect()
        try:
            r = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "NameHasOwner",
                              GLib.Variant("(s)", (BUS_NAME,)), GLib.VariantType("(b)"),
                              0, 5000, None)
        except GLib.Error:
            return False
        return bool(r.unpack()[0])

    def require(self) -> None:
        if not self.running():
            raise DaemonNotRunning(
                f"the TCMU daemon is not running (nobody owns {BUS_NAME} on the system "
                f"bus): {START_HINT}")

    def check_config(self, dev_config: str) -> tuple[bool, str]:
        """CheckConfig(dev_config) -> (ok, message), as targetcli calls it."""
        from gi.repository import Gio, GLib
        bus = self._connect()
        try:
            r = bus.call_sync(BUS_NAME, HANDLER_PATH, HANDLER_IFACE, "CheckConfig",
                              GLib.Variant("(s)", (dev_config,)), GLib.VariantType("(bs)"),
                              Gio.DBusCallFlags.NONE, self.timeout_ms, None)
        except GLib.Error as e:
            name = Gio.DBusError.get_remote_error(e) or ""
            if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                        "org.freedesktop.DBus.Error.NameHasNoOwner") \
                    or "ServiceUnknown" in e.message:
                raise DaemonNotRunning(
                    f"the TCMU daemon is not running ({BUS_NAME} is not on the system "
                    f"bus): {START_HINT}") from None
            if name == "org.freedesktop.DBus.Error.UnknownObject" or \
                    "UnknownObject" in e.message or "UnknownMethod" in e.message:
                raise ExtError(f"the daemon owning {BUS_NAME} has no rbd handler "
                               f"({e.message}): is another TCMU daemon (without rbd "
                               f"support) running?", "no-rbd-handler") from None
            raise ExtError(f"CheckConfig over D-Bus failed: {e.message}",
                           "dbus-error") from None
        ok, msg = r.unpack()
        return bool(ok), str(msg)


# =============================================================================
# The cluster
# =============================================================================

class Cluster:
    """The few librbd operations the extension needs (size, resize), connecting
    with the export's conf/id/keyring as the daemon will."""

    def image_size(self, ref: ImageRef, timeout: float = 20.0) -> int:
        from tcmu_rbd.config import ConfigError, validate
        try:
            info = validate(ref.cfg, timeout=timeout)
        except ConfigError as e:
            code = "image-missing" if e.code in ("image-missing", "pool-missing",
                                                 "namespace-missing", "snapshot-missing") \
                else "cluster"
            raise ExtError(f"{ref.spec}: {e}", code) from None
        return info.size

    def resize(self, ref: ImageRef, size: int, timeout: float = 30.0) -> int:
        """Grow the image to ``size``; returns the old size."""
        import rados
        import rbd
        c = ref.cfg
        cluster = rados.Rados(rados_id=c.client_id or "admin")
        try:
            cluster.conf_read_file(c.conf)  # None: librados' search ($CEPH_CONF, /etc/ceph)
            for k, v in c.rados_conf().items():
                cluster.conf_set(k, v)
            for k in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
                cluster.conf_set(k, str(int(timeout)))
            cluster.connect(timeout=int(timeout))
            with cluster.open_ioctx(c.pool) as io:
                if c.namespace:
                    io.set_namespace(c.namespace)
                try:
                    with rbd.Image(io, c.image) as img:
                        old = img.size()
                        if size > old:
                            img.resize(size)
                        return old
                except rbd.ImageNotFound:
                    raise ExtError(f"image {ref.spec} does not exist", "image-missing") \
                        from None
        except rados.ObjectNotFound:
            raise ExtError(f"pool {c.pool} does not exist", "image-missing") from None
        finally:
            cluster.shutdown()


# =============================================================================
# Export requests and the gateway
# =============================================================================

@dataclass
class ExportRequest:
    image: ImageRef
    target: str | None = None            # default: default_target_iqn()
    portals: list[Portal] = field(default_factory=list)  # default: 127.0.0.1:3260
    initiators: list[str] = field(default_factory=list)
    chap: dict[str, Chap] = field(default_factory=dict)  # initiator -> credentials
    name: str | None = None              # backstore name (default pool.image)
    lun: int | None = None
    wwn: str | None = None               # unit serial (default: generated)
    demo_mode: bool = False
    defaults: Defaults = field(default_factory=Defaults)
    secret_hints: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        return [s for c in self.chap.values() for s in c.secrets()]


def _ip_for_rtslib(p: Portal) -> str:
    return f"[{p.ip}]" if p.ipv6 else p.ip


def _portal_of_np(np) -> Portal:
    ip = np.ip_address.strip("[]")
    return Portal(ip, int(np.port))


def _lio_error(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        s = f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return s


class Gateway:
    def __init__(self, daemon: Daemon | None = None, cluster: Cluster | None = None,
                 save_file: str = DEFAULT_SAVE_FILE):
        self.daemon = daemon or Daemon()
        self.cluster = cluster or Cluster()
        self.save_file = save_file
        self._root = None

    # -- rtslib -----------------------------------------------------------------

    @property
    def root(self):
        if self._root is None:
            if os.geteuid() != 0:
                raise ExtError("targetcli-rbd changes the kernel's target configuration: "
                               "run it as root", "not-root")
            try:
                from rtslib_fb import RTSRoot
                self._root = RTSRoot()
            except Exception as e:
                raise ExtError(f"cannot open the LIO configuration ({_lio_error(e)}): "
                               f"load the modules (`modprobe target_core_user "
                               f"iscsi_target_mod`) and mount configfs", "no-lio") from None
        return self._root

    def _iscsi(self):
        from rtslib_fb import FabricModule
        try:
            fm = FabricModule("iscsi")
            fm._check_self() if hasattr(fm, "_check_self") else None
            return fm
        except Exception as e:
            raise ExtError(f"the iSCSI fabric is not available ({_lio_error(e)}): "
                           f"`modprobe iscsi_target_mod`", "no-iscsi") from None

    def rbd_backstores(self):
        """[(storage object, ImageRef)] of every user:rbd backstore."""
        out = []
        for so in self.root.storage_objects:
            if so.plugin != "user":
                continue
            try:
                cfg = so.config
            except Exception:
                continue
            ref = image_of_config(cfg)
            if ref is not None:
                out.append((so, ref))
        return out

    def find_backstore(self, ref: ImageRef | None = None, name: str | None = None):
        for so, r in self.rbd_backstores():
            if (ref is not None and r.same_image(ref)) or (name and so.name == name):
                return so, r
        return None, None

    def _find_target(self, iqn: str):
        for t in self.root.targets:
            if t.fabric_module.name == "iscsi" and t.wwn == iqn:
                return t
        return None

    # -- export -------------------------------------------------------------------

    def export(self, req: ExportRequest) -> Report:
        d = req.defaults
        d.check()
        target_iqn = check_iqn(req.target or default_target_iqn(), "target IQN")
        initiators = [check_iqn(i, "initiator IQN") for i in req.initiators]
        if len(set(initiators)) != len(initiators):
            raise ExtError("an initiator IQN is given twice", "bad-iqn")
        for i in req.chap:
            if i not in initiators:
                raise ExtError(f"credentials given for {i}, which is not an allowed "
                               f"initiator (--initiator)", "bad-chap")
        if req.demo_mode and req.chap:
            raise ExtError("demo mode (any initiator) and per-initiator CHAP exclude each "
                           "other", "bad-option")
        name = check_backstore_name(req.name) if req.name else backstore_name(req.image)
        portals = list(dict.fromkeys(req.portals))
        if req.lun is not None and not 0 <= req.lun <= 65535:
            raise ExtError(f"LUN {req.lun} must be 0..65535", "bad-lun")
        secrets = req.secrets()
        try:
            return self._export(req, target_iqn, initiators, name, portals)
        except ExtError as e:
            raise ExtError(redact(str(e), secrets), e.code, e.exit_status) from None
        except Exception as e:  # rtslib/OS errors: never let a secret through
            raise ExtError(redact(f"export failed: {_lio_error(e)}", secrets),
                           "lio-error") from None

    def _export(self, req: ExportRequest, target_iqn: str, initiators: list[str],
                name: str, portals: list[Portal]) -> Report:
        from rtslib_fb import (LUN, TPG, MappedLUN, NetworkPortal, NodeACL, Target,
                               UserBackedStorageObject)
        d = req.defaults
        ref = req.image
        rep = Report()
        root = self.root

        # --- what exists already --------------------------------------------------
        so, _ = self.find_backstore(ref=ref)
        same_name, same_ref = self.find_backstore(name=name)
        if same_name is not None and (so is None or same_name.name != so.name):
            raise ExtError(f"a backstore named {name} already serves {same_ref.spec}: "
                           f"give another --name", "name-taken")
        target = self._find_target(target_iqn)
        existing_lun = None
        if so is not None:
            luns = list(so.attached_luns)
            in_target = [l for l in luns if l.parent_tpg.parent_target.wwn == target_iqn]
            if in_target:
                existing_lun = in_target[0]
            elif luns:
                where = ", ".join(f"LUN {l.lun} of {l.parent_tpg.parent_target.wwn}"
                                  for l in luns)
                raise ExtError(f"{ref.spec} is already exported as backstore "
                               f"user:rbd/{so.name} ({where}): unexport it first "
                               f"(targetcli-rbd unexport {ref.spec})", "already-exported")
            else:
                raise ExtError(f"{ref.spec} already has a backstore user:rbd/{so.name} "
                               f"that no LUN uses: delete it (targetcli "
                               f"/backstores/user:rbd delete {so.name}) or run "
                               f"`targetcli-rbd unexport {ref.spec}`", "already-exported")
            if so.config.split(";")[0] != ref.dev_config.split(";")[0]:
                pass  # same image, spelled differently: fine

        # --- checks before creating anything ---------------------------------------
        if target is not None:
            tpg = self._tpg(target)
            if tpg is not None and not req.demo_mode and \
                    str(tpg.get_attribute("generate_node_acls")) == "1":
                raise ExtError(f"target {target_iqn} is in demo mode (any initiator may "
                               f"log in): pass --demo-mode to add to it, or use another "
                               f"--target", "demo-mode-target")
        else:
            tpg = None
        existing_acls = {a.node_wwn: a for a in tpg.node_acls} if tpg else {}
        if not req.demo_mode and not initiators and not existing_acls:
            raise ExtError("no initiator may log in: give --initiator <IQN> for each "
                           "allowed initiator (or --demo-mode to allow any, for labs "
                           "only)", "no-acl")
        if tpg is not None:
            auth_on = str(tpg.get_attribute("authentication")) == "1"
            if existing_acls and req.chap and not auth_on:
                raise ExtError(f"target {target_iqn} already has ACLs without CHAP: "
                               f"CHAP is a per-target switch in LIO; use another "
                               f"--target for CHAP initiators", "chap-mismatch")
            missing = [i for i in initiators if i not in existing_acls and i not in req.chap]
            if auth_on and missing:
                raise ExtError(f"target {target_iqn} requires CHAP: give credentials "
                               f"for {', '.join(missing)} (--chap-user/--auth-file)",
                               "chap-mismatch")
        if tpg is None and req.chap and set(req.chap) != set(initiators):
            missing = sorted(set(initiators) - set(req.chap))
            raise ExtError(f"CHAP is a per-target switch: give credentials for every "
                           f"initiator (missing: {', '.join(missing)})", "chap-mismatch")
        portals = resolve_portals(portals, [_portal_of_np(np) for np in tpg.network_portals]
                                  if tpg else [])
        if any(p.wildcard for p in portals):
            rep.add(f"warning: portal {[str(p) for p in portals if p.wildcard][0]} "
                    f"listens on every address of this host")
        self._check_portals(portals, tpg)

        # the daemon validates the config (and tells why not)
        ok, msg = self.daemon.check_config(ref.dev_config)
        if not ok:
            code = "image-missing" if any(w in msg for w in ("does not exist", "not found",
                                                               "No such")) else "bad-config"
            raise ExtError(f"the TCMU daemon refused {ref.dev_config}: {msg}", code)
        if msg and msg not in ("OK", "success", "true"):
            rep.add(f"daemon: {msg}")
        size = self.cluster.image_size(ref)

        undo = []
        try:
            created_so = False
            if so is None:
                control = f"max_data_area_mb={d.max_data_area_mb}"
                try:
                    so = UserBackedStorageObject(name, config=ref.dev_config, size=size,
                                                 wwn=req.wwn, hw_max_sectors=d.hw_max_sectors,
                                                 control=control)
                except Exception as e:
                    raise ExtError(
                        f"creating backstore user:rbd/{name} for {ref.dev_config} failed: "
                        f"{_lio_error(e)}; the daemon's log says why (journalctl -u "
                        f"tcmu-rbd)", "backstore-failed") from None
                created_so = True
                undo.append(so.delete)
                so.set_attribute("cmd_time_out", str(d.cmd_time_out))
                so.set_attribute("qfull_time_out", str(d.qfull_time_out))
                rep.add(f"created backstore user:rbd/{name}: {ref.dev_config}, "
                        f"{human_size(size)}, serial {so.wwn}, hw_max_sectors "
                        f"{d.hw_max_sectors}, max_data_area_mb {d.max_data_area_mb}")

            fm = self._iscsi()
            if target is None:
                target = Target(fm, target_iqn, mode="create")
                undo.append(target.delete)
                rep.add(f"created target {target_iqn}")
            if tpg is None:
                tpg = TPG(target, 1, mode="any")
                self._configure_tpg(tpg, req, auth=bool(req.chap))
            elif not existing_acls:
                self._configure_tpg(tpg, req, auth=bool(req.chap))
            tpg.set_attribute("default_cmdsn_depth", str(d.cmdsn_depth))

            have = {(_portal_of_np(np)) for np in tpg.network_portals}
            for p in portals:
                if p in have:
                    continue
                try:
                    np = NetworkPortal(tpg, _ip_for_rtslib(p), p.port, mode="create")
                except Exception as e:
                    raise ExtError(self._portal_error(p, e), "portal-in-use") from None
                undo.append(np.delete)
                rep.add(f"portal {p}")

            if existing_lun is None:
                lun = LUN(tpg, lun=req.lun, storage_object=so)
                undo.append(lun.delete)
                rep.add(f"LUN {lun.lun} of {target_iqn} -> user:rbd/{so.name}")
            else:
                lun = existing_lun
                rep.changed = False

            ro = ref.read_only
            for iqn in initiators:
                acl = existing_acls.get(iqn)
                if acl is None:
                    acl = NodeACL(tpg, iqn, mode="create")
                    undo.append(acl.delete)
                    acl.tcq_depth = d.cmdsn_depth
                    rep.changed = True
                    existing_acls[iqn] = acl
                    rep.add(f"ACL {iqn} (cmdsn_depth {d.cmdsn_depth})")
                chap = req.chap.get(iqn)
                if chap is not None:
                    acl.chap_userid = chap.user
                    acl.chap_password = chap.secret.reveal()
                    if chap.mutual:
                        acl.chap_mutual_userid = chap.mutual_user
                        acl.chap_mutual_password = chap.mutual_secret.reveal()
                    rep.add(f"  {chap.describe()}")
            targets_of_lun = initiators if initiators else list(existing_acls)
            for iqn in targets_of_lun:
                acl = existing_acls[iqn]
                if any(m.tpg_lun.lun == lun.lun for m in acl.mapped_luns):
                    continue
                used = {m.mapped_lun for m in acl.mapped_luns}
                mnum = lun.lun if lun.lun not in used else \
                    next(n for n in range(65536) if n not in used)
                m = MappedLUN(acl, mnum, lun, write_protect=ro)
                undo.append(m.delete)
                rep.changed = True
                rep.add(f"  {iqn}: mapped LUN {mnum}" + (" (read-only)" if ro else ""))
            if not tpg.enable:
                tpg.enable = True
        except BaseException:
            for fn in reversed(undo):
                try:
                    fn()
                except Exception as e:  # keep unwinding
                    log.warning("rollback step failed: %s", e)
            raise

        nps = [_portal_of_np(np) for np in tpg.network_portals]
        if not rep.changed:
            rep.lines.insert(0, f"{ref.spec} is already exported as LUN {lun.lun} of "
                                f"{target_iqn}: nothing to change")
        else:
            rep.lines.insert(0, f"exported {ref.spec}" + (" (read-only snapshot)" if ro
                                                          else "")
                             + f" as LUN {lun.lun} of {target_iqn}")
        rep.data = {"image": ref.spec, "backstore": so.name, "serial": so.wwn,
                    "size": so.size, "target": target_iqn, "lun": lun.lun,
                    "portals": [str(p) for p in nps], "initiators": sorted(existing_acls),
                    "read_only": ro, "changed": rep.changed}
        self._connect_text(rep, target_iqn, nps, initiators or sorted(existing_acls), req)
        return rep

    def _connect_text(self, rep: Report, target: str, portals: list[Portal],
                      initiators: list[str], req: ExportRequest) -> None:
        rep.add("")
        rep.add("connect from an initiator (open-iscsi):")
        who = initiators[:1] or [None]
        for iqn in who:
            hint = req.secret_hints.get(iqn, (None, None)) if iqn else (None, None)
            for line in connect_instructions(target, portals, initiator=iqn,
                                             chap=req.chap.get(iqn) if iqn else None,
                                             secret_hint=hint[0], mutual_hint=hint[1]):
                rep.add("  " + line)
        if len(initiators) > 1:
            rep.add(f"  (the same for {', '.join(initiators[1:])}, each with its own "
                    f"InitiatorName)")
        rep.add("  then: iscsiadm -m session -P3 | grep 'Attached scsi disk'")

    def _tpg(self, target):
        tpgs = list(target.tpgs)
        for t in tpgs:
            if int(t.tag) == 1:
                return t
        return tpgs[0] if tpgs else None

    def _configure_tpg(self, tpg, req: ExportRequest, auth: bool) -> None:
        d = req.defaults
        if req.demo_mode:
            tpg.set_attribute("generate_node_acls", "1")
            tpg.set_attribute("demo_mode_write_protect", "1" if req.image.read_only else "0")
            tpg.set_attribute("cache_dynamic_acls", "1")
            tpg.set_attribute("demo_mode_discovery", "1")
        else:
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            # discovery answers only initiators that have an ACL
            tpg.set_attribute("demo_mode_discovery", "0")
        tpg.set_attribute("authentication", "1" if auth else "0")
        tpg.set_attribute("default_cmdsn_depth", str(d.cmdsn_depth))
        params = d.tpg_parameters()
        params["AuthMethod"] = "CHAP" if auth else "CHAP,None"
        for k, v in params.items():
            tpg.set_parameter(k, v)

    # -- portals ---------------------------------------------------------------------

    def _lio_portals(self) -> set[Portal]:
        out = set()
        for t in self.root.targets:
            for tpg in t.tpgs:
                for np in tpg.network_portals:
                    out.add(_portal_of_np(np))
        return out

    def _check_portals(self, portals: list[Portal], tpg) -> None:
        """A portal LIO does not listen on yet must be bindable: an address of this
        host, and no other program listening on that port."""
        lio = self._lio_portals()
        for p in portals:
            if p in lio:
                continue
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

    def _portal_error(self, p: Portal, e: BaseException) -> str:
        return (f"LIO could not open portal {p} ({_lio_error(e)}): the address must be "
                f"one of this host's and the port free (`ss -ltnp 'sport = :{p.port}'`)")

    # -- unexport ------------------------------------------------------------------

    def unexport(self, ref: ImageRef | None = None, name: str | None = None,
                 keep_target: bool = False, force: bool = False) -> Report:
        rep = Report()
        so, r = self.find_backstore(ref=ref, name=name)
        what = ref.spec if ref else name
        if so is None:
            rep.changed = False
            rep.add(f"{what} is not exported: nothing to do")
            rep.data = {"image": what, "changed": False}
            return rep
        if not force:
            # deleting a user backstore waits for the daemon's answer to the kernel
            self.daemon.require()
        targets = set()
        for lun in list(so.attached_luns):
            tpg = lun.parent_tpg
            targets.add(tpg.parent_target.wwn)
            for m in list(lun.mapped_luns):
                m.delete()
            n = lun.lun
            lun.delete()
            rep.add(f"removed LUN {n} of {tpg.parent_target.wwn}")
        bs = so.name
        so.delete()
        rep.add(f"removed backstore user:rbd/{bs} ({r.spec})")
        for iqn in sorted(targets):
            t = self._find_target(iqn)
            if t is None or keep_target:
                continue
            if not any(list(tpg.luns) for tpg in t.tpgs):
                t.delete()
                rep.add(f"removed target {iqn} (it had no LUN left)")
        rep.lines.insert(0, f"unexported {r.spec}")
        rep.data = {"image": r.spec, "backstore": bs, "targets": sorted(targets),
                    "changed": True}
        return rep

    # -- list ------------------------------------------------------------------------

    def list(self) -> Report:
        rep = Report(changed=False)
        try:
            daemon_up = self.daemon.running()
        except DaemonNotRunning:
            daemon_up = False
        uio_users = _uio_users()
        exports = []
        for so, ref in self.rbd_backstores():
            e = {"image": ref.spec, "backstore": so.name, "size": so.size,
                 "serial": so.wwn, "read_only": ref.read_only, "config": so.config,
                 "status": so.status, "luns": []}
            uio = _uio_of(so)
            e["uio"] = uio
            e["served_by"] = uio_users.get(uio) if uio else None
            if not uio:
                e["state"] = "no uio device (not enabled?)"
            elif e["served_by"]:
                e["state"] = f"served by pid {e['served_by']}"
            else:
                e["state"] = "NOT served: no process has the ring open" + \
                    ("" if daemon_up else " (the daemon is not running)")
            for lun in so.attached_luns:
                tpg = lun.parent_tpg
                acls = []
                for acl in tpg.node_acls:
                    maps = [m.mapped_lun for m in acl.mapped_luns if m.tpg_lun.lun == lun.lun]
                    if not maps:
                        continue
                    sess = acl.session
                    acls.append({
                        "initiator": acl.node_wwn, "mapped_lun": maps[0],
                        "chap": bool(acl.chap_userid),
                        "mutual_chap": bool(acl.chap_mutual_userid),
                        "session": None if not sess else {
                            "state": sess.get("state"),
                            "addresses": [c.get("address") for c in sess.get("connections", [])]},
                    })
                e["luns"].append({
                    "target": tpg.parent_target.wwn, "tpg": int(tpg.tag), "lun": lun.lun,
                    "portals": [str(_portal_of_np(np)) for np in tpg.network_portals],
                    "demo_mode": str(tpg.get_attribute("generate_node_acls")) == "1",
                    "authentication": str(tpg.get_attribute("authentication")) == "1",
                    "enabled": bool(tpg.enable), "acls": acls})
            exports.append(e)
        rep.data = {"daemon_running": daemon_up, "exports": exports}
        rep.add(f"TCMU daemon: {'running' if daemon_up else 'NOT running (' + START_HINT + ')'}")
        if not exports:
            rep.add("no rbd exports")
        for e in exports:
            rep.add(f"{e['image']}{' (read-only)' if e['read_only'] else ''}  "
                    f"{human_size(e['size'])}  backstore user:rbd/{e['backstore']}  "
                    f"serial {e['serial']}  {e['state']}")
            if not e["luns"]:
                rep.add("  not mapped to any LUN")
            for l in e["luns"]:
                mode = "demo mode (any initiator)" if l["demo_mode"] else \
                    ("CHAP" if l["authentication"] else "ACLs")
                rep.add(f"  LUN {l['lun']} of {l['target']} (tpg {l['tpg']}, "
                        f"{'enabled' if l['enabled'] else 'DISABLED'}, {mode})  "
                        f"portals {', '.join(l['portals']) or 'none'}")
                for a in l["acls"]:
                    s = a["session"]
                    st = f"logged in from {', '.join(x for x in s['addresses'] if x)} " \
                         f"({s['state']})" if s else "not logged in"
                    auth = "mutual CHAP" if a["mutual_chap"] else ("CHAP" if a["chap"] else
                                                                  "no CHAP")
                    rep.add(f"    {a['initiator']}  as LUN {a['mapped_lun']}  {auth}  {st}")
        return rep

    # -- resize ------------------------------------------------------------------------

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
                                   f"could not follow ({_lio_error(e)}): see the daemon's "
                                   f"log; retry the same resize", "resize-failed") from None
                rep.changed = True
                rep.add(f"backstore user:rbd/{so.name} is now {human_size(size)}: "
                        f"initiators see the new capacity after a rescan "
                        f"(iscsiadm -m session --rescan)")
        if not found:
            rep.add(f"({ref.spec} is not exported)")
        rep.data = {"image": ref.spec, "old_size": current, "size": size,
                    "backstores": [so.name for so, _ in found], "changed": rep.changed}
        return rep

    # -- persistence --------------------------------------------------------------------

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
        needs_daemon = any(so.get("plugin") == "user" for so in
                           config.get("storage_objects", []))
        if needs_daemon:
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

    # -- discovery authentication ----------------------------------------------------------

    def discovery_auth(self, chap: Chap | None) -> Report:
        fm = self._iscsi()
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


def _secrets_in_config(config: dict) -> list[str]:
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


def _uio_of(so) -> str | None:
    """uioN of a user backstore (its uio name is tcm-user/<hba>/<name>/<config>)."""
    hba = os.path.basename(os.path.dirname(so.path))  # user_N
    idx = hba.split("_", 1)[1] if "_" in hba else ""
    want = f"tcm-user/{idx}/{so.name}/"
    base = "/sys/class/uio"
    try:
        for u in os.listdir(base):
            try:
                with open(os.path.join(base, u, "name")) as f:
                    if f.read().startswith(want):
                        return u
            except OSError:
                continue
    except OSError:
        pass
    return None


def _uio_users() -> dict[str, int]:
    """uioN -> pid of the process that has /dev/uioN open."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fddir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fddir):
                try:
                    t = os.readlink(os.path.join(fddir, fd))
                except OSError:
                    continue
                if t.startswith("/dev/uio"):
                    out[t[5:]] = int(pid)
        except OSError:
            continue
    return out
