"""Planning an export: what must be created or changed in LIO, as a pure value.

Belongs here: the :class:`ExportRequest` (what the operator asked for),
:func:`check_request` (the rules that need no kernel: IQNs, names, LUN range,
CHAP/ACL combinations), and :func:`plan_export`, which compares a checked request
with a snapshot of LIO (:class:`~.state.LioState`) and returns an
:class:`ExportPlan`: the backstore with its control line and attributes, the
target, the TPG's settings, portals, the LUN, ACLs with their CHAP (by reference)
and mapped LUNs, in the order they are applied; :func:`plan_local` gives the
:class:`LocalPlan` of a disk of this host (``--local``: the backstore as LUN 0 of
a loopback target).  The rules that refuse an export
(image already exported elsewhere, name taken, demo-mode target, CHAP being a
per-target switch, ...) are checked here, before anything is written.  Re-planning
an export that is in place gives an empty plan.

Not here: reading LIO (state.py), the host checks (the portal bind probe), the
daemon and the cluster (gateway.py), writing (apply.py).  No secret is ever in a
plan: CHAP steps name the user and where the secret comes from; apply.py takes
the secrets from the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .spec import (
    Chap, Defaults, ExtError, ImageRef, Portal, backstore_name, check_backstore_name,
    check_iqn, default_target_iqn, describe_chap, human_size, resolve_portals,
)
from .state import AclState, LioState, TpgState

MAX_LUN = 65535


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
    no_chap: bool = False                # the operator said these ACLs have no CHAP
    local: bool = False                  # a disk of this host (loopback), no iSCSI
    defaults: Defaults = field(default_factory=Defaults)
    # initiator -> (where its CHAP secret is, where its mutual secret is), for messages
    secret_hints: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        return [s for c in self.chap.values() for s in c.secrets()]


def check_request(req: ExportRequest) -> ExportRequest:
    """The request with its target, initiators, backstore name and portals checked
    and resolved (the default target IQN and name filled in); touches nothing."""
    req.defaults.check()
    target = None if req.local else check_iqn(req.target or default_target_iqn(),
                                              "target IQN")
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
    if req.lun is not None and not 0 <= req.lun <= MAX_LUN:
        raise ExtError(f"LUN {req.lun} must be 0..{MAX_LUN}", "bad-lun")
    return replace(req, target=target, initiators=initiators, name=name,
                   portals=list(dict.fromkeys(req.portals)))


# -- the plan ---------------------------------------------------------------------------

Settings = tuple[tuple[str, str], ...]


def _settings_text(pairs: Settings) -> str:
    return " ".join(f"{k}={v}" for k, v in pairs)


@dataclass(frozen=True)
class NewBackstore:
    """A user:rbd backstore to create; hw_max_sectors and max_data_area_mb go on its
    control line (before enable), ``attributes`` are set before any LUN exists."""

    name: str
    dev_config: str
    wwn: str | None                      # None: rtslib generates one
    hw_max_sectors: int
    max_data_area_mb: int
    attributes: Settings
    size: int | None = None              # the image's size, from the cluster

    @property
    def control(self) -> str:
        return f"max_data_area_mb={self.max_data_area_mb}"

    def text(self, serial: str | None = None, size: int | None = None) -> str:
        size = self.size if size is None else size
        return (f"backstore user:rbd/{self.name}: {self.dev_config}, "
                f"{human_size(size) if size else 'the size of the image'}, serial "
                f"{serial or self.wwn or '(generated)'}, hw_max_sectors "
                f"{self.hw_max_sectors}, max_data_area_mb {self.max_data_area_mb}")


def _backstore_lines(b: NewBackstore | None) -> list[str]:
    return [f"+ {b.text()}",
            f"~ backstore user:rbd/{b.name} attributes {_settings_text(b.attributes)}"] \
        if b else []


def _backstore_dict(b: NewBackstore | None, name: str, serial, size) -> dict:
    return {"name": name, "create": b is not None,
            **({"size": b.size, "wwn": b.wwn, "hw_max_sectors": b.hw_max_sectors,
                "control": b.control, "attributes": dict(b.attributes)}
               if b else {"serial": serial, "size": size})}


def _with_size(plan, size: int):
    """``plan`` with its new backstore's size (the image's, from the cluster)."""
    if plan.new_backstore is None:
        return plan
    return replace(plan, new_backstore=replace(plan.new_backstore, size=size))


@dataclass(frozen=True)
class TpgChange:
    """The export's TPG: created or not, the attributes and parameters to write
    (only those that differ from the kernel's), enabled at the end or not."""

    tag: int
    create: bool
    attributes: Settings = ()
    parameters: Settings = ()
    enable: bool = False


@dataclass(frozen=True)
class ChapRef:
    """CHAP credentials by reference: the names, and where the secrets are."""

    user: str
    mutual_user: str | None
    secret: str                          # e.g. "CHAP secret from file /root/a"
    mutual_secret: str | None

    def describe(self) -> str:
        return describe_chap(self.user, self.mutual_user)


@dataclass(frozen=True)
class AclChange:
    initiator: str
    create: bool
    tcq_depth: int | None = None         # a new ACL's cmdsn_depth
    chap: ChapRef | None = None          # credentials to (re)set

    def text(self) -> str:
        return f"ACL {self.initiator} (cmdsn_depth {self.tcq_depth})"


@dataclass(frozen=True)
class MappedLunChange:
    initiator: str
    mapped_lun: int
    write_protect: bool

    def text(self) -> str:
        return f"{self.initiator}: mapped LUN {self.mapped_lun}" + \
            (" (read-only)" if self.write_protect else "")


@dataclass(frozen=True)
class ExportPlan:
    """What an export will create or change, in the order apply.py does it; names
    the existing objects it builds on.  ``empty``: the export is in place."""

    image: str                           # pool[/ns]/image[@snap]
    dev_config: str
    read_only: bool
    target: str
    backstore: str                       # the backstore's name (new or existing)
    new_backstore: NewBackstore | None
    create_target: bool
    tpg: TpgChange
    portals: tuple[Portal, ...]          # the TPG's portals once applied
    new_portals: tuple[Portal, ...]      # to create on the TPG
    listen: tuple[Portal, ...]           # of those, the ones LIO does not listen on yet
    lun: int
    create_lun: bool
    acls: tuple[AclChange, ...]
    mapped_luns: tuple[MappedLunChange, ...]
    initiators: tuple[str, ...]          # the TPG's ACLs once applied
    serial: str | None                   # the existing backstore's (or the requested) serial
    size: int | None                     # the existing backstore's size
    warnings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        t = self.tpg
        return not (self.new_backstore or self.create_target or t.create or t.attributes
                    or t.parameters or t.enable or self.new_portals or self.create_lun
                    or self.acls or self.mapped_luns)

    def with_image_size(self, size: int) -> "ExportPlan":
        """The plan with the new backstore's size (the image's, from the cluster)."""
        return _with_size(self, size)

    def lun_text(self) -> str:
        return f"LUN {self.lun} of {self.target} -> user:rbd/{self.backstore}"

    def describe(self) -> list[str]:
        """The steps, in order: '+' creates, '~' changes (no secret: CHAP by reference)."""
        b, t = self.new_backstore, self.tpg
        out = _backstore_lines(b)
        if self.create_target:
            out.append(f"+ target {self.target}")
        if t.create:
            out.append(f"+ TPG {t.tag} of {self.target}")
        if t.attributes:
            out.append(f"~ TPG {t.tag} attributes {_settings_text(t.attributes)}")
        if t.parameters:
            out.append(f"~ TPG {t.tag} parameters {_settings_text(t.parameters)}")
        for p in self.new_portals:
            out.append(f"+ portal {p}" + (" (LIO starts listening)" if p in self.listen else ""))
        if self.create_lun:
            out.append(f"+ {self.lun_text()}")
        for a in self.acls:
            if a.create:
                out.append(f"+ {a.text()}")
            if a.chap:
                c = a.chap
                where = c.secret + (f", {c.mutual_secret}" if c.mutual_secret else "")
                out.append(f"~ ACL {a.initiator}: {c.describe()} ({where})")
        for m in self.mapped_luns:
            out.append(f"+ {m.text()}")
        if t.enable:
            out.append(f"~ TPG {t.tag} enable")
        return out

    def to_dict(self) -> dict:
        """The plan for --json (no secret: CHAP by reference)."""
        b, t = self.new_backstore, self.tpg
        return {
            "image": self.image, "dev_config": self.dev_config, "read_only": self.read_only,
            "target": self.target, "create_target": self.create_target,
            "backstore": _backstore_dict(b, self.backstore, self.serial, self.size),
            "tpg": {"tag": t.tag, "create": t.create, "attributes": dict(t.attributes),
                    "parameters": dict(t.parameters), "enable": t.enable},
            "portals": [str(p) for p in self.portals],
            "new_portals": [str(p) for p in self.new_portals],
            "lun": {"lun": self.lun, "create": self.create_lun},
            "acls": [{"initiator": a.initiator, "create": a.create, "tcq_depth": a.tcq_depth,
                      "chap": None if a.chap is None else {
                          "user": a.chap.user, "mutual_user": a.chap.mutual_user,
                          "secret": a.chap.secret, "mutual_secret": a.chap.mutual_secret}}
                     for a in self.acls],
            "mapped_luns": [{"initiator": m.initiator, "mapped_lun": m.mapped_lun,
                             "write_protect": m.write_protect} for m in self.mapped_luns],
            "initiators": list(self.initiators), "warnings": list(self.warnings),
            "empty": self.empty,
        }


# -- planning ----------------------------------------------------------------------------

def tpg_settings(req: ExportRequest, auth: bool) -> tuple[Settings, Settings]:
    """The attributes and parameters of an export's TPG, in the order they are set."""
    d = req.defaults
    if req.demo_mode:
        attrs = [("generate_node_acls", "1"),
                 ("demo_mode_write_protect", "1" if req.image.read_only else "0"),
                 ("cache_dynamic_acls", "1"), ("demo_mode_discovery", "1")]
    else:
        # discovery answers only initiators that have an ACL
        attrs = [("generate_node_acls", "0"), ("demo_mode_write_protect", "1"),
                 ("demo_mode_discovery", "0")]
    attrs += [("authentication", "1" if auth else "0"),
              ("default_cmdsn_depth", str(d.cmdsn_depth))]
    params = d.tpg_parameters()
    params["AuthMethod"] = "CHAP" if auth else "CHAP,None"
    return tuple(attrs), tuple(params.items())


def _chap_ref(initiator: str, chap: Chap, hints) -> ChapRef:
    hint, mutual_hint = hints.get(initiator, (None, None))
    return ChapRef(chap.user, chap.mutual_user,
                   hint or f"CHAP secret from {chap.secret.source}",
                   (mutual_hint or f"mutual secret from {chap.mutual_secret.source}")
                   if chap.mutual else None)


def _chap_in_place(acl: AclState, chap: Chap) -> bool:
    if acl.chap_user != chap.user or acl.chap_secret != chap.secret:
        return False
    return not chap.mutual or (acl.mutual_user == chap.mutual_user
                               and acl.mutual_secret == chap.mutual_secret)


def _image_backstore(req: ExportRequest, state: LioState):
    """The image's backstore, if any (refused: another image's backstore having
    the name, or the image's backstore used by no LUN at all)."""
    ref, name = req.image, req.name
    bs = state.backstore_of(ref)
    same_name = state.backstore_named(name)
    if same_name is not None and (bs is None or same_name.name != bs.name):
        raise ExtError(f"a backstore named {name} already serves {same_name.image.spec}: "
                       f"give another --name", "name-taken")
    if bs is not None and not bs.luns and not bs.local:
        raise ExtError(f"{ref.spec} already has a backstore user:rbd/{bs.name} "
                       f"that no LUN uses: delete it (targetcli "
                       f"/backstores/user:rbd delete {bs.name}) or run "
                       f"`targetcli-rbd unexport {ref.spec}`", "already-exported")
    return bs


def _check_state(req: ExportRequest, state: LioState):
    """The refusals that depend on LIO's state, in the order they are reported;
    returns the image's backstore, its LUN in the target, the target and its TPG."""
    ref, iqn = req.image, req.target
    bs = _image_backstore(req, state)
    existing_lun = None
    if bs is not None:
        in_target = [n for t, n in bs.luns if t == iqn]
        if in_target:
            existing_lun = in_target[0]
        elif bs.luns:
            where = ", ".join(f"LUN {n} of {t}" for t, n in bs.luns)
            raise ExtError(f"{ref.spec} is already exported as backstore "
                           f"user:rbd/{bs.name} ({where}): unexport it first "
                           f"(targetcli-rbd unexport {ref.spec})", "already-exported")
    target = state.target(iqn)
    tpg = target.export_tpg() if target else None
    if tpg is not None and not req.demo_mode and tpg.attribute("generate_node_acls") == "1":
        raise ExtError(f"target {iqn} is in demo mode (any initiator may "
                       f"log in): pass --demo-mode to add to it, or use another "
                       f"--target", "demo-mode-target")
    acls = {a.initiator for a in tpg.acls} if tpg else set()
    if not req.demo_mode and not req.initiators and not acls:
        raise ExtError("no initiator may log in: give --initiator <IQN> for each "
                       "allowed initiator (or --demo-mode to allow any, for labs "
                       "only)", "no-acl")
    if tpg is not None:
        auth_on = tpg.attribute("authentication") == "1"
        if acls and req.chap and not auth_on:
            raise ExtError(f"target {iqn} already has ACLs without CHAP: "
                           f"CHAP is a per-target switch in LIO; use another "
                           f"--target for CHAP initiators", "chap-mismatch")
        missing = [i for i in req.initiators if i not in acls and i not in req.chap]
        if auth_on and missing:
            raise ExtError(f"target {iqn} requires CHAP: give credentials "
                           f"for {', '.join(missing)} (--chap-user/--auth-file)",
                           "chap-mismatch")
    if tpg is None and req.chap and set(req.chap) != set(req.initiators):
        missing = sorted(set(req.initiators) - set(req.chap))
        raise ExtError(f"CHAP is a per-target switch: give credentials for every "
                       f"initiator (missing: {', '.join(missing)})", "chap-mismatch")
    if existing_lun is None and req.lun is not None and tpg is not None \
            and req.lun in tpg.luns:
        raise ExtError(f"LUN {req.lun} of {iqn} is in use: give another --lun, or none "
                       f"(the next free one)", "lun-taken")
    return bs, existing_lun, target, tpg


def _tpg_change(req: ExportRequest, tpg: TpgState | None) -> TpgChange:
    attrs, params = tpg_settings(req, auth=bool(req.chap))
    if tpg is None:
        return TpgChange(1, create=True, attributes=attrs, parameters=params, enable=True)
    if tpg.acls:  # in use: only the depth new ACLs copy
        attrs, params = (("default_cmdsn_depth", str(req.defaults.cmdsn_depth)),), ()
    return TpgChange(tpg.tag, create=False,
                     attributes=tuple((k, v) for k, v in attrs if tpg.attribute(k) != v),
                     parameters=tuple((k, v) for k, v in params if tpg.parameter(k) != v),
                     enable=not tpg.enabled)


def _free(used, what: str) -> int:
    n = next((n for n in range(MAX_LUN + 1) if n not in used), None)
    if n is None:
        raise ExtError(f"no free {what}", "lun-taken")
    return n


def chap_warnings(open_acls, portals) -> tuple[str, ...]:
    """An initiator name is no secret: ACLs without CHAP guard a LUN only from
    this host. The warning when such ACLs meet portals other hosts reach."""
    exposed = [str(p) for p in portals if not p.loopback]
    if not (open_acls and exposed):
        return ()
    return (f"warning: {', '.join(open_acls)} may log in without CHAP on "
            f"{', '.join(exposed)}, which other hosts reach, by claiming the "
            f"name: give --chap-user or --auth-file, or --no-chap if this is meant",)


def plan_export(req: ExportRequest, state: LioState) -> ExportPlan:
    """The plan for a request from :func:`check_request` against ``state``.
    Raises ExtError when the export is refused."""
    d, ref = req.defaults, req.image
    bs, existing_lun, target, tpg = _check_state(req, state)
    portals = resolve_portals(req.portals, tpg.portals if tpg else [])
    wild = [p for p in portals if p.wildcard]
    warnings = (f"warning: portal {wild[0]} listens on every address of this host",) \
        if wild else ()
    if not req.no_chap:
        warnings += chap_warnings([i for i in req.initiators if i not in req.chap], portals)
    have_portals = tpg.portals if tpg else ()
    new_portals = tuple(p for p in portals if p not in have_portals)

    if existing_lun is not None:
        lun, create_lun = existing_lun, False
    else:
        lun = req.lun if req.lun is not None else _free(tpg.luns if tpg else (), "LUN")
        create_lun = True

    acls = {a.initiator: a for a in tpg.acls} if tpg else {}
    acl_changes = []
    for i in req.initiators:
        have, chap = acls.get(i), req.chap.get(i)
        cref = _chap_ref(i, chap, req.secret_hints) \
            if chap is not None and (have is None or not _chap_in_place(have, chap)) else None
        if have is None or cref is not None:
            acl_changes.append(AclChange(i, create=have is None,
                                         tcq_depth=d.cmdsn_depth if have is None else None,
                                         chap=cref))
    maps = []
    for i in req.initiators or list(acls):
        have = acls.get(i)
        if have is not None and have.maps(lun):
            continue
        used = {m for m, _ in have.mapped} if have else set()
        maps.append(MappedLunChange(i, lun if lun not in used else _free(used, "mapped LUN"),
                                    ref.read_only))

    new_bs = None if bs is not None else _new_backstore(req)
    return ExportPlan(
        image=ref.spec, dev_config=ref.dev_config, read_only=ref.read_only,
        target=req.target, backstore=bs.name if bs else req.name, new_backstore=new_bs,
        create_target=target is None, tpg=_tpg_change(req, tpg),
        portals=tuple(have_portals) + new_portals, new_portals=new_portals,
        listen=tuple(p for p in new_portals if p not in state.portals),
        lun=lun, create_lun=create_lun, acls=tuple(acl_changes), mapped_luns=tuple(maps),
        initiators=tuple(sorted(set(acls) | set(req.initiators))),
        serial=bs.wwn if bs else req.wwn, size=bs.size if bs else None, warnings=warnings)


def _new_backstore(req: ExportRequest) -> NewBackstore:
    d = req.defaults
    return NewBackstore(
        req.name, req.image.dev_config, req.wwn, d.hw_max_sectors, d.max_data_area_mb,
        (("cmd_time_out", str(d.cmd_time_out)), ("qfull_time_out", str(d.qfull_time_out))))


# -- a local disk: the loopback fabric ------------------------------------------------------

@dataclass(frozen=True)
class LocalPlan:
    """A disk of this host for an image (``export --local``): its backstore (new,
    or the one its iSCSI LUNs use) as LUN 0 of TPG 1 of a loopback target of its
    own (rtslib names it naa.5001405..., and sets its nexus).  ``target``: the
    loopback target the image has already (then there is nothing to do)."""

    image: str
    read_only: bool
    backstore: str
    new_backstore: NewBackstore | None
    target: str | None
    serial: str | None
    size: int | None
    iscsi: tuple[tuple[str, int], ...] = ()   # the backstore's iSCSI LUNs (it stays)

    @property
    def empty(self) -> bool:
        return self.target is not None

    def with_image_size(self, size: int) -> "LocalPlan":
        return _with_size(self, size)

    def describe(self) -> list[str]:
        out = _backstore_lines(self.new_backstore)
        if self.target is None:
            out.append("+ loopback target (WWN generated), TPG 1 with its nexus")
            out.append(f"+ LUN 0 of it -> user:rbd/{self.backstore} (this host's SCSI "
                       f"disk)")
        return out

    def to_dict(self) -> dict:
        return {
            "image": self.image, "read_only": self.read_only, "local": True,
            "backstore": _backstore_dict(self.new_backstore, self.backstore, self.serial,
                                         self.size),
            "target": self.target, "create_target": self.target is None,
            "iscsi_luns": [{"target": t, "lun": n} for t, n in self.iscsi],
            "empty": self.empty,
        }


def plan_local(req: ExportRequest, state: LioState) -> LocalPlan:
    """The plan of a local disk for a request from :func:`check_request` (with
    ``local``) against ``state``; an image already exported over iSCSI keeps its
    backstore and gets the loopback LUN next to its iSCSI LUNs."""
    ref = req.image
    bs = _image_backstore(req, state)
    if bs is not None and bs.groups:
        raise ExtError(f"{ref.spec} is served by several gateways (backstore "
                       f"user:rbd/{bs.name} is in ALUA group(s) "
                       f"{', '.join(bs.groups)}): a local disk on one gateway would take "
                       f"the image's exclusive lock from its owner; map it with "
                       f"`rbd device map` or export another image", "shared-image")
    return LocalPlan(
        image=ref.spec, read_only=ref.read_only, backstore=bs.name if bs else req.name,
        new_backstore=None if bs else _new_backstore(req),
        target=bs.local[0] if bs and bs.local else None,
        serial=bs.wwn if bs else req.wwn, size=bs.size if bs else None,
        iscsi=bs.luns if bs else ())
