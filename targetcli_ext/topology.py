"""Several gateways, one configuration: the rules, pure (no RADOS, no LIO).

Belongs here: the edits the verbs make to a :class:`~.store.SharedConfig`
(:func:`add_gateway`, :func:`remove_gateway`, :func:`add_disk` with its owner
chosen by :func:`choose_owner`, :func:`remove_disk`), :func:`describe_changes`
(what an edit does, for the reports and --dry-run), and :func:`layout`: what one
gateway must have in LIO, as a value (:class:`GatewayLayout`):

- each target IQN is shared; this gateway has only its own TPG (tag = the gateway's
  tag, its portal, enabled); the other gateways' TPGs live on their kernels;
- per LUN a ``user:rbd`` backstore ``<gateway>.<pool>[.<ns>].<image>`` (names are
  per gateway, so two gateways may even share one kernel) with the disk's unit
  serial, the same on every gateway: multipath sees one disk;
- on it one ALUA target port group per gateway of the target, named after the
  gateway, id = its tag, implicit ALUA (AO, ANO and transitioning supported),
  ``implicit_trans_secs`` = osd_op_timeout + 15; its first state is Active/Optimized
  for the disk's owner and Active/Non-optimized for the others (afterwards the
  daemon moves the states with the image's lock, so they are set on creation only);
  the LUN (same id on every gateway) is a member of this gateway's group;
- ACLs map every LUN of the target (mapped LUN = LUN id), with CHAP (user names
  here, secrets fetched from config-key when applied); the TPG settings are the
  single-gateway export's (plan.tpg_settings): ACLs only, CHAP when the target has it.

Not here: reading or writing the object (store.py), LIO (sync.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .plan import ExportRequest, NewBackstore, Settings, tpg_settings
from .spec import (
    Defaults, ExtError, Portal, backstore_name, check_backstore_name, check_iqn,
    parse_image,
)
from .store import (
    MAX_TAG, ChapEntry, DiskEntry, GatewayEntry, SharedConfig, TargetEntry,
    check_gateway_name, secret_key,
)

AO, ANO = 0, 1                        # alua_access_state: Active/(Non-)Optimized
STATE_NAMES = {AO: "Active/Optimized", ANO: "Active/Non-optimized"}


# --------------------------------------------------------------------------- edits

def _free_tag(cfg: SharedConfig) -> int:
    used = {g.tag for g in cfg.gateways.values()}
    return next(t for t in range(1, MAX_TAG + 1) if t not in used)


def add_gateway(cfg: SharedConfig, name: str, portal: Portal, tag: int | None = None) \
        -> SharedConfig:
    """Add gateway ``name`` (tag: the lowest free one by default), or change the
    portal (and tag, when given) of an existing one."""
    check_gateway_name(name)
    g = cfg.gateways.get(name)
    if g is None:
        cfg.gateways[name] = GatewayEntry(portal, tag if tag is not None else _free_tag(cfg))
    else:
        g.portal = portal
        g.tag = g.tag if tag is None else tag
    return cfg


def remove_gateway(cfg: SharedConfig, name: str) -> SharedConfig:
    """Remove gateway ``name`` from the configuration and its targets; the disks it
    owned get new owners. Refused when a target with LUNs would have no gateway."""
    if name not in cfg.gateways:
        raise ExtError(f"gateway {name} is not in the shared configuration "
                       f"(targetcli-rbd gateway list)", "no-gateway")
    for iqn, t in cfg.targets.items():
        if t.gateways == [name] and t.luns:
            raise ExtError(f"gateway {name} is the only gateway of target {iqn}, which "
                           f"has LUNs ({', '.join(sorted(t.luns.values()))}): unexport "
                           f"them (--shared) or add another gateway to the target first",
                           "last-gateway")
    del cfg.gateways[name]
    for iqn, t in cfg.targets.items():
        if name in t.gateways:
            t.gateways.remove(name)
    for key in sorted(cfg.disks):
        d = cfg.disks[key]
        if d.owner == name:
            d.owner = ""
            d.owner = choose_owner(cfg, d.target)
    return cfg


def choose_owner(cfg: SharedConfig, target: str) -> str:
    """The gateway of ``target`` that owns the fewest disks (over the whole
    configuration); ties go to the lowest tag."""
    gws = cfg.targets[target].gateways
    if not gws:
        raise ExtError(f"target {target} has no gateway", "no-gateway")
    owned = {g: 0 for g in gws}
    for d in cfg.disks.values():
        if d.owner in owned:
            owned[d.owner] += 1
    return min(gws, key=lambda g: (owned[g], cfg.gateways[g].tag))


def add_disk(cfg: SharedConfig, disk: str, target: str, *, gateways=None,
             initiators=(), chap: dict[str, ChapEntry] | None = None,
             lun: int | None = None, wwn: str | None = None, options=None,
             settings=None, target_settings=None) -> SharedConfig:
    """Export ``disk`` (pool[/ns]/image[@snap]) as a LUN of ``target`` on its gateways.

    A new target is served by ``gateways`` (default: every gateway); for an existing
    one, ``gateways`` are added to it. ``initiators`` are added to the target's ACLs,
    ``chap`` sets their CHAP user names. Exporting a disk that is already a LUN of
    the target changes only that (ACLs, gateways); elsewhere it is refused."""
    check_iqn(target, "target IQN")
    for g in gateways or ():
        if g not in cfg.gateways:
            raise ExtError(f"gateway {g} is not defined: targetcli-rbd gateway add {g} "
                           f"--portal IP[:PORT]", "no-gateway")
    t = cfg.targets.get(target)
    if t is None:
        gws = list(gateways or sorted(cfg.gateways, key=lambda n: cfg.gateways[n].tag))
        if not gws:
            raise ExtError("no gateway is defined: targetcli-rbd gateway add NAME "
                           "--portal IP[:PORT] (one per gateway) first", "no-gateway")
        t = cfg.targets[target] = TargetEntry(gateways=gws,
                                              settings=dict(target_settings or {}))
    else:
        t.gateways += [g for g in gateways or () if g not in t.gateways]
    t.acls += [i for i in initiators if i not in t.acls]
    t.chap.update(chap or {})
    d = cfg.disks.get(disk)
    if d is not None:
        if d.target != target:
            raise ExtError(f"{disk} is already LUN {d.lun} of {d.target}: unexport it "
                           f"first (targetcli-rbd unexport {disk} --shared)",
                           "already-exported")
        if (lun is not None and lun != d.lun) or (wwn and wwn != d.wwn):
            raise ExtError(f"{disk} is already LUN {d.lun} of {target} with serial "
                           f"{d.wwn}: unexport it first to change them", "already-exported")
        return cfg
    if lun is None:
        lun = next(n for n in range(65536) if n not in t.luns)
    elif lun in t.luns:
        raise ExtError(f"LUN {lun} of {target} is {t.luns[lun]}: give another --lun, or "
                       f"none (the next free one)", "lun-taken")
    t.luns[lun] = disk
    cfg.disks[disk] = DiskEntry(target, lun, wwn or str(uuid.uuid4()), "",
                                dict(options or {}), dict(settings or {}))
    cfg.disks[disk].owner = choose_owner(cfg, target)
    return cfg


def remove_disk(cfg: SharedConfig, disk: str, keep_target: bool = False) -> list[str]:
    """Remove ``disk``; its target too once it has no LUN (unless ``keep_target``).
    Returns the config-key names of the CHAP secrets no target uses any more."""
    d = cfg.disks.pop(disk, None)
    if d is None:
        return []
    t = cfg.targets[d.target]
    t.luns.pop(d.lun, None)
    if t.luns or keep_target:
        return []
    del cfg.targets[d.target]
    return [k for i, c in t.chap.items()
            for k in [secret_key(d.target, i)] + ([secret_key(d.target, i, True)]
                                                  if c.mutual_user else [])]


# --------------------------------------------------------------------------- describing

def _gw_text(n, g):
    return f"gateway {n}: portal {g['portal']}, tag {g['tag']}"


def _target_text(i, t):
    chap = ", ".join(f"{a} CHAP user {c['user']}" + (f" mutual {c['mutual_user']}"
                                                      if c.get("mutual_user") else "")
                     for a, c in t["chap"].items())
    return (f"target {i}: gateways {','.join(t['gateways']) or '-'}; ACLs "
            f"{','.join(t['acls']) or '-'}" + (f"; {chap}" if chap else ""))


def _disk_text(k, d):
    opts = ";".join(f"{a}={b}" for a, b in d["options"].items())
    return (f"disk {k}: LUN {d['lun']} of {d['target']}, owner {d['owner']}, serial "
            f"{d['wwn']}" + (f", options {opts}" if opts else ""))


def describe_changes(before: SharedConfig, after: SharedConfig) -> list[str]:
    """'+ ...' added, '- ...' removed, '~ ...' changed (no secret is in a config)."""
    out = []
    b, a = before.content(), after.content()
    for section, text in (("gateways", _gw_text), ("targets", _target_text),
                          ("disks", _disk_text)):
        for k in sorted(set(b[section]) | set(a[section])):
            old, new = b[section].get(k), a[section].get(k)
            if old != new:
                out.append("+ " + text(k, new) if old is None else
                           "- " + text(k, old) if new is None else "~ " + text(k, new))
    return out


# --------------------------------------------------------------------------- the layout

def group_settings(osd_op_timeout: int) -> Settings:
    """An ALUA group's settings, in the order they are written (the state is not one
    of them). alua_support_lba_dependent is read-only in configfs (always 0 here)."""
    return (("alua_access_type", "1"),             # implicit
            ("alua_support_active_optimized", "1"), ("alua_support_active_nonoptimized", "1"),
            ("alua_support_transitioning", "1"), ("alua_support_standby", "0"),
            ("alua_support_unavailable", "0"), ("alua_support_offline", "0"),
            ("nonop_delay_msecs", "0"), ("implicit_trans_secs", str(osd_op_timeout + 15)))


@dataclass(frozen=True)
class AluaGroup:
    name: str                 # the gateway's name
    group_id: int             # the gateway's tag
    state: int                # the state it is created in (AO for the owner)
    settings: Settings

    def text(self) -> str:
        return f"ALUA group {self.name} (id {self.group_id}, {STATE_NAMES[self.state]})"


@dataclass(frozen=True)
class BackstoreLayout:
    name: str
    disk: str                 # pool[/ns]/image[@snap]
    dev_config: str
    wwn: str
    read_only: bool
    hw_max_sectors: int
    max_data_area_mb: int
    attributes: Settings      # set before a LUN exists
    groups: tuple[AluaGroup, ...]
    group: str                # this gateway's group: the LUN's

    def new_backstore(self, size: int) -> NewBackstore:
        return NewBackstore(self.name, self.dev_config, self.wwn, self.hw_max_sectors,
                            self.max_data_area_mb, self.attributes, size)


@dataclass(frozen=True)
class LunLayout:
    lun: int
    backstore: BackstoreLayout


@dataclass(frozen=True)
class AclLayout:
    initiator: str
    chap: ChapEntry | None
    secret_key: str | None = None
    mutual_key: str | None = None


@dataclass(frozen=True)
class TargetLayout:
    iqn: str
    tag: int
    portal: Portal
    attributes: Settings
    parameters: Settings
    cmdsn_depth: int
    luns: tuple[LunLayout, ...]
    acls: tuple[AclLayout, ...]

    def lun(self, n: int) -> LunLayout | None:
        return next((x for x in self.luns if x.lun == n), None)

    def acl(self, initiator: str) -> AclLayout | None:
        return next((a for a in self.acls if a.initiator == initiator), None)


@dataclass(frozen=True)
class GatewayLayout:
    gateway: str
    tag: int | None           # None: the gateway is not in the configuration
    portal: Portal | None
    targets: tuple[TargetLayout, ...] = ()

    @property
    def prefix(self) -> str:
        """What this gateway's backstore names start with."""
        return f"{self.gateway}."

    @property
    def backstores(self) -> tuple[BackstoreLayout, ...]:
        return tuple(x.backstore for t in self.targets for x in t.luns)

    def target(self, iqn: str) -> TargetLayout | None:
        return next((t for t in self.targets if t.iqn == iqn), None)

    def describe(self) -> list[str]:
        if self.tag is None:
            return [f"gateway {self.gateway} is not in the shared configuration: it "
                    f"serves nothing"]
        out = [f"gateway {self.gateway}: TPG tag {self.tag}, portal {self.portal}"]
        for t in self.targets:
            auth = "CHAP" if any(a.chap for a in t.acls) else "ACLs only"
            out.append(f"target {t.iqn}: TPG {t.tag}, portal {t.portal}, {auth}")
            for x in t.luns:
                b = x.backstore
                out.append(f"  LUN {x.lun} -> user:rbd/{b.name} ({b.dev_config}), serial "
                           f"{b.wwn}, in ALUA group {b.group}; "
                           + ", ".join(g.text() for g in b.groups))
            for a in t.acls:
                chap = f" ({a.chap.user}" + (f", mutual {a.chap.mutual_user}"
                                              if a.chap.mutual_user else "") + ")" \
                    if a.chap else ""
                out.append(f"  ACL {a.initiator}{chap}: mapped LUNs "
                           + ", ".join(str(x.lun) for x in t.luns))
        return out


def gateway_backstore_name(gateway: str, disk: str) -> str:
    return check_backstore_name(
        f"{gateway}.{backstore_name(parse_image(disk, osd_op_timeout=None, check_files=False))}")


def _backstore(cfg: SharedConfig, gateway: str, key: str, t: TargetEntry) -> BackstoreLayout:
    d, ref, dflt = cfg.disks[key], cfg.image(key), cfg.defaults(key)
    groups = tuple(AluaGroup(g, cfg.gateways[g].tag, AO if g == d.owner else ANO,
                             group_settings(dflt.osd_op_timeout))
                   for g in sorted(t.gateways, key=lambda n: cfg.gateways[n].tag))
    return BackstoreLayout(
        gateway_backstore_name(gateway, key), key, ref.dev_config, d.wwn, ref.read_only,
        dflt.hw_max_sectors, dflt.max_data_area_mb,
        (("cmd_time_out", str(dflt.cmd_time_out)),
         ("qfull_time_out", str(dflt.qfull_time_out))), groups, gateway)


def layout(cfg: SharedConfig, gateway: str) -> GatewayLayout:
    """What ``gateway`` must have in LIO (nothing when it is not in ``cfg``)."""
    g = cfg.gateways.get(gateway)
    if g is None:
        return GatewayLayout(gateway, None, None)
    targets = []
    for iqn in sorted(cfg.targets):
        t = cfg.targets[iqn]
        if gateway not in t.gateways or not t.luns:
            continue
        d = Defaults(**t.settings)
        # a shared target is never in demo mode: the request's image is not read
        attrs, params = tpg_settings(ExportRequest(image=None, defaults=d),
                                     auth=bool(t.chap))
        luns = tuple(LunLayout(n, _backstore(cfg, gateway, t.luns[n], t))
                     for n in sorted(t.luns))
        acls = tuple(AclLayout(i, t.chap.get(i),
                               secret_key(iqn, i) if i in t.chap else None,
                               secret_key(iqn, i, True)
                               if i in t.chap and t.chap[i].mutual_user else None)
                     for i in t.acls)
        targets.append(TargetLayout(iqn, g.tag, g.portal, attrs, params, d.cmdsn_depth,
                                    luns, acls))
    return GatewayLayout(gateway, g.tag, g.portal, tuple(targets))
