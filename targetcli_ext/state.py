"""The LIO configuration as targetcli-rbd reads it, through rtslib-fb.

Belongs here: opening rtslib (root, the iSCSI and the loopback fabric, with the
operator's error when that fails), finding the user:rbd backstores, an iSCSI
target and a backstore's loopback LUNs, and :func:`read_state`: a snapshot of
what an export plans against (rbd backstores with their iSCSI LUNs, loopback
targets and gateway ALUA groups; iSCSI targets with their TPGs' settings,
portals, LUNs and ACLs; every portal LIO listens on) as plain frozen values, so
planning (plan.py) is a pure function of it.

Not here: deciding anything (plan.py), writing configfs (apply.py), the uio
side of a TCMU device and who holds it (tcmu_rbd/lio.py, used by status.py).
rtslib_fb is imported on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tcmu_rbd.alua import DEFAULT_GROUP

from .localdisk import FABRIC
from .spec import ExtError, ImageRef, Portal, Secret, image_of_config

#: the TPG attributes and RFC 3720 parameters an export sets (and so compares)
TPG_ATTRIBUTES = ("generate_node_acls", "demo_mode_write_protect", "cache_dynamic_acls",
                  "demo_mode_discovery", "authentication", "default_cmdsn_depth")
TPG_PARAMETERS = ("ImmediateData", "InitialR2T", "MaxBurstLength", "FirstBurstLength",
                  "MaxRecvDataSegmentLength", "MaxXmitDataSegmentLength", "AuthMethod")


def lio_error(e: BaseException) -> str:
    """An rtslib/OS error as one short phrase."""
    s = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        s = f"{e.strerror} ({e.filename})" if e.filename else e.strerror
    return s


def open_root():
    """rtslib's RTSRoot (LIO's configuration); root only."""
    if os.geteuid() != 0:
        raise ExtError("targetcli-rbd changes the kernel's target configuration: "
                       "run it as root", "not-root")
    try:
        from rtslib_fb import RTSRoot
        return RTSRoot()
    except Exception as e:
        raise ExtError(f"cannot open the LIO configuration ({lio_error(e)}): "
                       f"load the modules (`modprobe target_core_user "
                       f"iscsi_target_mod`) and mount configfs", "no-lio") from None


def _fabric(name: str, what: str, module: str, code: str):
    from rtslib_fb import FabricModule
    try:
        fm = FabricModule(name)
        fm._check_self() if hasattr(fm, "_check_self") else None
        return fm
    except Exception as e:
        raise ExtError(f"the {what} is not available ({lio_error(e)}): "
                       f"`modprobe {module}`", code) from None


def iscsi_fabric():
    return _fabric("iscsi", "iSCSI fabric", "iscsi_target_mod", "no-iscsi")


def loopback_fabric():
    """LIO's loopback fabric (tcm_loop: SCSI disks of this host), loaded if need be."""
    return _fabric(FABRIC, "loopback fabric", "tcm_loop", "no-loopback")


def is_local(lun) -> bool:
    """Whether an rtslib LUN is in a loopback target (a local disk of this host)."""
    return lun.parent_tpg.parent_target.fabric_module.name == FABRIC


def portal_of_np(np) -> Portal:
    return Portal(np.ip_address.strip("[]"), int(np.port))


def rbd_backstores(root) -> list:
    """[(storage object, ImageRef)] of every user:rbd backstore."""
    out = []
    for so in root.storage_objects:
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


def find_target(root, iqn: str):
    for t in root.targets:
        if t.fabric_module.name == "iscsi" and t.wwn == iqn:
            return t
    return None


# -- the snapshot ---------------------------------------------------------------------

@dataclass(frozen=True)
class AclState:
    initiator: str
    mapped: tuple[tuple[int, int], ...] = ()   # (mapped LUN, TPG LUN)
    chap_user: str | None = None
    chap_secret: Secret | None = None
    mutual_user: str | None = None
    mutual_secret: Secret | None = None

    def maps(self, tpg_lun: int) -> bool:
        return any(t == tpg_lun for _, t in self.mapped)


@dataclass(frozen=True)
class TpgState:
    tag: int = 1
    enabled: bool = False
    attributes: tuple[tuple[str, str], ...] = ()   # of TPG_ATTRIBUTES
    parameters: tuple[tuple[str, str], ...] = ()   # of TPG_PARAMETERS
    portals: tuple[Portal, ...] = ()
    luns: tuple[int, ...] = ()
    acls: tuple[AclState, ...] = ()

    def attribute(self, name: str) -> str | None:
        return dict(self.attributes).get(name)

    def parameter(self, name: str) -> str | None:
        return dict(self.parameters).get(name)

    def acl(self, initiator: str) -> AclState | None:
        return next((a for a in self.acls if a.initiator == initiator), None)


@dataclass(frozen=True)
class TargetState:
    iqn: str
    tpgs: tuple[TpgState, ...] = ()

    def export_tpg(self) -> TpgState | None:
        """The TPG an export uses: tag 1, else the first."""
        return next((t for t in self.tpgs if t.tag == 1), self.tpgs[0] if self.tpgs else None)


@dataclass(frozen=True)
class BackstoreState:
    name: str
    image: ImageRef
    wwn: str = ""
    size: int = 0
    luns: tuple[tuple[str, int], ...] = ()   # (target IQN, LUN) of each iSCSI LUN using it
    local: tuple[str, ...] = ()              # the loopback targets of its local disks
    groups: tuple[str, ...] = ()             # its ALUA groups but the default (gateways')


@dataclass(frozen=True)
class LioState:
    backstores: tuple[BackstoreState, ...] = ()   # the user:rbd ones
    targets: tuple[TargetState, ...] = ()         # iSCSI targets (read_state: the export's)
    portals: frozenset[Portal] = field(default_factory=frozenset)  # LIO listens on these

    def backstore_of(self, ref: ImageRef) -> BackstoreState | None:
        return next((b for b in self.backstores if b.image.same_image(ref)), None)

    def backstore_named(self, name: str) -> BackstoreState | None:
        return next((b for b in self.backstores if b.name == name), None)

    def target(self, iqn: str) -> TargetState | None:
        return next((t for t in self.targets if t.iqn == iqn), None)


def _secret(value: str | None) -> Secret | None:
    return Secret(value, "configfs") if value else None


def _settings(get, names) -> tuple[tuple[str, str], ...]:
    out = []
    for n in names:
        try:
            out.append((n, str(get(n))))
        except Exception:  # an attribute this kernel does not have
            continue
    return tuple(out)


def _acl_state(acl) -> AclState:
    return AclState(
        initiator=acl.node_wwn,
        mapped=tuple((int(m.mapped_lun), int(m.tpg_lun.lun)) for m in acl.mapped_luns),
        chap_user=acl.chap_userid or None, chap_secret=_secret(acl.chap_password),
        mutual_user=acl.chap_mutual_userid or None,
        mutual_secret=_secret(acl.chap_mutual_password))


def _tpg_state(tpg) -> TpgState:
    return TpgState(
        tag=int(tpg.tag), enabled=bool(tpg.enable),
        attributes=_settings(tpg.get_attribute, TPG_ATTRIBUTES),
        parameters=_settings(tpg.get_parameter, TPG_PARAMETERS),
        portals=tuple(portal_of_np(np) for np in tpg.network_portals),
        luns=tuple(int(lun.lun) for lun in tpg.luns),
        acls=tuple(_acl_state(a) for a in tpg.node_acls))


def read_state(root, target_iqn: str | None) -> LioState:
    """What an export of an image to ``target_iqn`` plans against (of the iSCSI
    targets, only that one is read in detail)."""
    def backstore(so, ref) -> BackstoreState:
        luns = list(so.attached_luns)
        return BackstoreState(
            so.name, ref, wwn=so.wwn, size=so.size,
            luns=tuple((lun.parent_tpg.parent_target.wwn, int(lun.lun))
                       for lun in luns if not is_local(lun)),
            local=tuple(lun.parent_tpg.parent_target.wwn for lun in luns if is_local(lun)),
            groups=tuple(g.name for g in so.alua_tpgs if g.name != DEFAULT_GROUP))
    backstores = tuple(backstore(so, ref) for so, ref in rbd_backstores(root))
    targets, portals = [], set()
    for t in root.targets:
        for tpg in t.tpgs:
            portals.update(portal_of_np(np) for np in tpg.network_portals)
        if t.fabric_module.name == "iscsi" and t.wwn == target_iqn:
            targets.append(TargetState(t.wwn, tuple(_tpg_state(tpg) for tpg in t.tpgs)))
    return LioState(backstores, tuple(targets), frozenset(portals))
