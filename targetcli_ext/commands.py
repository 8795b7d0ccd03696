"""The verbs of targetcli-rbd, shared by both front ends: the command line
(cli.py) and the /rbd node in targetcli's shell (shell.py).

Belongs here: one function per verb (export, unexport, list, resize, qos, save,
restore, discovery-auth) taking plain option values and a :class:`~.gateway.Gateway`
and returning its Report; the verbs of several gateways (gateway add/remove/list,
export/unexport --shared, sync) taking a :class:`~.store.ConfigStore` instead; turning options into requests (image specs, portals,
CHAP credentials loaded from files, the environment or a prompt, never from an
option value); targetcli's lock around changes (the shell holds it already:
``lock=False``).

Not here: argv and argparse, printing and exit statuses (cli.py), configshell's
parameters (shell.py), what the operations do (gateway.py and below).  No front
end is imported here.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from dataclasses import dataclass, field

from .plan import ExportRequest
from .spec import (
    ENV_CHAP_SECRET, ENV_DISCOVERY_MUTUAL_SECRET, ENV_DISCOVERY_SECRET, ENV_MUTUAL_SECRET,
    Chap, Defaults, ExtError, Report, human_size, load_secret, parse_auth_file,
    parse_image, parse_portal, redact,
)

TARGETCLI_LOCK = "/var/run/targetcli.lock"


@contextlib.contextmanager
def targetcli_lock(path: str | None = None):
    """targetcli's own lock: a concurrent targetcli waits for us and vice versa."""
    try:
        fd = open(path or TARGETCLI_LOCK, "w+")
    except OSError:
        yield
        return
    with fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _locked(lock: bool):
    return targetcli_lock() if lock else contextlib.nullcontext()


def chap_from_options(user, secret_file, mutual_user, mutual_file, *, env, mutual_env,
                      what="CHAP", environ=None) -> Chap | None:
    """CHAP credentials from options; None when no user is given."""
    if not user:
        if secret_file or mutual_user or mutual_file:
            raise ExtError(f"{what}: a secret or mutual user without a user "
                           f"(--chap-user / --user)", "bad-chap")
        return None
    secret = load_secret(file=secret_file, env=env, environ=environ,
                         prompt=f"{what} secret for {user}: ", what=f"{what} secret")
    msec = None
    if mutual_user:
        msec = load_secret(file=mutual_file, env=mutual_env, environ=environ,
                           prompt=f"mutual {what} secret for {mutual_user}: ",
                           what=f"mutual {what} secret")
    elif mutual_file:
        raise ExtError(f"{what}: --mutual-secret-file without --mutual-user", "bad-chap")
    return Chap(user, secret, mutual_user, msec)


@dataclass
class ExportOptions:
    """An export as the operator wrote it (strings; secrets only as file names)."""

    image: str
    target: str | None = None
    portals: list[str] = field(default_factory=list)
    initiators: list[str] = field(default_factory=list)
    chap_user: str | None = None
    chap_secret_file: str | None = None
    mutual_user: str | None = None
    mutual_secret_file: str | None = None
    auth_file: str | None = None
    no_chap: bool = False                # say so: these ACLs have no CHAP
    name: str | None = None
    lun: int | None = None
    wwn: str | None = None
    demo_mode: bool = False
    local: bool = False                  # a disk of this host (loopback), no iSCSI
    conf: str | None = None
    client_id: str | None = None
    keyring: str | None = None
    defaults: Defaults = field(default_factory=Defaults)
    dry_run: bool = False
    qos: dict = field(default_factory=dict)   # setting -> text (--qos-iops 500, ...)


def export_request(o: ExportOptions, environ=None) -> ExportRequest:
    """The ExportRequest of ``o`` (loads the CHAP secrets; no configfs)."""
    d = o.defaults
    d.check()
    if o.local:
        _check_local(o)
    if o.no_chap and (o.chap_user or o.auth_file):
        raise ExtError("--no-chap excludes --chap-user and --auth-file", "usage", 2)
    ref = parse_image(o.image, osd_op_timeout=d.osd_op_timeout, conf=o.conf,
                      client_id=o.client_id, keyring=o.keyring)
    portals = [parse_portal(p) for p in o.portals]
    initiators = list(o.initiators)
    chap: dict = {}
    hints: dict = {}
    one = chap_from_options(o.chap_user, o.chap_secret_file, o.mutual_user,
                            o.mutual_secret_file, env=ENV_CHAP_SECRET,
                            mutual_env=ENV_MUTUAL_SECRET, environ=environ)
    if one is not None:
        if not initiators:
            raise ExtError("--chap-user needs the --initiator(s) it applies to", "bad-chap")
        for i in initiators:
            chap[i] = one
            hints[i] = (f"CHAP secret from {one.secret.source}",
                        f"mutual secret from {one.mutual_secret.source}"
                        if one.mutual else None)
    if o.auth_file:
        for i, c in parse_auth_file(o.auth_file).items():
            if i in chap:
                raise ExtError(f"{i} has credentials from both --chap-user and "
                               f"--auth-file", "bad-chap")
            chap[i] = c
            hints[i] = (f"CHAP secret of {i} in {o.auth_file}",
                        f"mutual secret of {i} in {o.auth_file}" if c.mutual else None)
            if i not in initiators:
                initiators.append(i)
    if o.demo_mode and initiators:
        raise ExtError("--demo-mode allows any initiator: do not combine it with "
                       "--initiator/--auth-file", "bad-option")
    return ExportRequest(image=ref, target=o.target, portals=portals,
                         initiators=initiators, chap=chap, name=o.name, lun=o.lun,
                         wwn=o.wwn, demo_mode=o.demo_mode, no_chap=o.no_chap,
                         local=o.local, defaults=d, secret_hints=hints)


def _check_local(o: ExportOptions) -> None:
    """--local takes no iSCSI option: say which ones were given."""
    given = [flag for flag, v in (
        ("--target", o.target), ("--portal", o.portals), ("--initiator", o.initiators),
        ("--chap-user", o.chap_user), ("--chap-secret-file", o.chap_secret_file),
        ("--mutual-user", o.mutual_user), ("--mutual-secret-file", o.mutual_secret_file),
        ("--auth-file", o.auth_file), ("--no-chap", o.no_chap), ("--lun", o.lun is not None),
        ("--demo-mode", o.demo_mode)) if v]
    if given:
        raise ExtError(f"{', '.join(given)}: --local makes a SCSI disk of this host "
                       f"(LIO's loopback fabric), with no iSCSI target, initiators or "
                       f"CHAP; drop {'them' if len(given) > 1 else 'it'}, or export over "
                       f"iSCSI in a separate run without --local (both may serve the same "
                       f"image)", "usage", 2)


def export(gw, o: ExportOptions, *, environ=None, lock: bool = True) -> Report:
    from .qos import parse_limits
    req = export_request(o, environ)
    limits = parse_limits(o.qos, prefix="qos-")
    if req.demo_mode:
        print("WARNING: --demo-mode: ANY initiator that can reach the portal may log "
              "in and write to this LUN (no ACL, no CHAP). Use it only in a lab.",
              file=sys.stderr)
    with _locked(lock):
        rep = gw.export(req, dry_run=o.dry_run)
        return _with_qos(rep, gw.qos(req.image, limits, dry_run=o.dry_run)) if limits \
            else rep


def _with_qos(rep: Report, q: Report) -> Report:
    """An export's report with the image's QoS (export --qos-*) after it."""
    rep.lines += q.lines
    rep.changed = rep.changed or q.changed
    rep.data = {**rep.data, "changed": rep.changed, "qos": q.data}
    return rep


def unexport(gw, image: str | None = None, *, name: str | None = None,
             keep_target: bool = False, force: bool = False, local: bool = False,
             lock: bool = True) -> Report:
    if not image and not name:
        raise ExtError("give the image (<pool>/<image>) or --name", "usage", 2)
    ref = parse_image(image, osd_op_timeout=None, check_files=False) if image else None
    with _locked(lock):
        return gw.unexport(ref, name=name, keep_target=keep_target, force=force,
                           local=local)


def list_exports(gw) -> Report:
    return gw.list()


def resize(gw, image: str, size: str, *, conf=None, client_id=None, keyring=None,
           lock: bool = True) -> Report:
    ref = parse_image(image, osd_op_timeout=None, conf=conf, client_id=client_id,
                      keyring=keyring)
    with _locked(lock):
        return gw.resize(ref, size)


def qos(gw, image: str, limits: dict[str, str | None] | None = None, *,
        clear: bool = False, dry_run: bool = False, conf=None, client_id=None,
        keyring=None) -> Report:
    """``targetcli-rbd qos``: show (no limits, no clear) or change the image's QoS."""
    from .qos import parse_limits
    values = parse_limits(limits or {})
    ref = parse_image(image, osd_op_timeout=None, conf=conf, client_id=client_id,
                      keyring=keyring)
    return gw.qos(ref, values, clear=clear, dry_run=dry_run)


def save(gw, file: str | None = None, *, lock: bool = True) -> Report:
    with _locked(lock):
        return gw.save(file)


def restore(gw, file: str | None = None, *, clear: bool = False, lock: bool = True) -> Report:
    with _locked(lock):
        return gw.restore(file, clear=clear)


def discovery_auth(gw, *, user=None, secret_file=None, mutual_user=None,
                   mutual_secret_file=None, disable: bool = False, environ=None,
                   lock: bool = True) -> Report:
    if disable:
        if user:
            raise ExtError("--disable and --user exclude each other", "usage", 2)
        chap = None
    else:
        if not user:
            raise ExtError("give --user (and --secret-file or $"
                           f"{ENV_DISCOVERY_SECRET}), or --disable", "usage", 2)
        chap = chap_from_options(user, secret_file, mutual_user, mutual_secret_file,
                                 env=ENV_DISCOVERY_SECRET,
                                 mutual_env=ENV_DISCOVERY_MUTUAL_SECRET,
                                 what="discovery CHAP", environ=environ)
    with _locked(lock):
        return gw.discovery_auth(chap)


# -- several gateways: the shared configuration (store.py, topology.py, sync.py) ------------

@dataclass
class StoreOptions:
    """Where the shared configuration is, and how to reach the cluster."""

    pool: str | None = None
    obj: str | None = None
    conf: str | None = None
    client_id: str | None = None
    keyring: str | None = None


def open_store(o: StoreOptions):
    from .store import ConfigStore
    return ConfigStore.open(o.pool, o.obj, conf=o.conf, client_id=o.client_id,
                            keyring=o.keyring)


def _update(store, change, what: str, *, dry_run: bool = False, force: bool = False,
            extra=()) -> Report:
    from .topology import describe_changes
    up = store.update(change, dry_run=dry_run, force=force)
    changes = describe_changes(up.before, up.after) + list(extra)
    rep = Report(changed=up.written)
    if dry_run:
        rep.add(f"dry run: {what} would make these changes to {store.where} (none is "
                f"made now):" if changes else f"dry run: {what}: nothing to change")
    elif up.written:
        rep.add(f"{what}: {store.where} is now at epoch {up.after.epoch} (the gateways' "
                f"sync applies it)")
    else:
        rep.add(f"{what}: nothing to change")
    rep.lines += ["  " + c for c in changes]
    rep.data = {"dry_run": dry_run, "changed": up.written, "epoch": up.after.epoch,
                "changes": changes}
    return rep


def gateway_add(store, name: str, portal: str, tag: int | None = None, *,
                dry_run: bool = False) -> Report:
    from .topology import add_gateway
    p = parse_portal(portal)
    if p.wildcard:
        raise ExtError(f"portal {p}: a gateway's portal is its own address (initiators "
                       f"are sent to it), not a wildcard", "bad-portal")
    return _update(store, lambda c: add_gateway(c, name, p, tag), f"gateway add {name}",
                   dry_run=dry_run)


def gateway_remove(store, name: str, *, dry_run: bool = False) -> Report:
    from .topology import remove_gateway
    return _update(store, lambda c: remove_gateway(c, name), f"gateway remove {name}",
                   dry_run=dry_run)


def gateway_list(store) -> Report:
    cfg = store.read()
    rep = Report(changed=False)
    rep.add(f"{store.where}: epoch {cfg.epoch}, {len(cfg.gateways)} gateway(s), "
            f"{len(cfg.targets)} target(s), {len(cfg.disks)} disk(s)")
    gws = []
    for n, g in sorted(cfg.gateways.items(), key=lambda i: i[1].tag):
        targets = sorted(i for i, t in cfg.targets.items() if n in t.gateways)
        owns = sorted(k for k, d in cfg.disks.items() if d.owner == n)
        rep.add(f"  {n}  tag {g.tag}  portal {g.portal}  targets: "
                f"{', '.join(targets) or '-'}  owns: {', '.join(owns) or '-'}")
        gws.append({"name": n, "tag": g.tag, "portal": str(g.portal), "targets": targets,
                    "owns": owns})
    rep.data = {"epoch": cfg.epoch, "gateways": gws}
    return rep


def export_shared(store, o: ExportOptions, gateways: list[str] | None = None, *,
                  environ=None) -> Report:
    """Put an image into the shared configuration as a LUN of ``o.target`` (its CHAP
    secrets into config-key first); every gateway's sync then exports it."""
    from .plan import chap_warnings, check_request
    from .store import DISK_SETTINGS, TARGET_SETTINGS, ChapEntry, secret_key
    from .topology import add_disk
    if o.local:
        raise ExtError("--local and --shared exclude each other: the shared configuration "
                       "is iSCSI LUNs every gateway serves (one owner at a time), a local "
                       "disk is one host's; export another image with --local on the "
                       "gateway that needs it", "usage", 2)
    if not o.target:
        raise ExtError("--shared needs --target IQN (the target every gateway serves)",
                       "usage", 2)
    for flag, bad in (("--portal", o.portals), ("--name", o.name),
                      ("--demo-mode", o.demo_mode)):
        if bad:
            raise ExtError(f"{flag} is not used with --shared: portals come from `gateway "
                           f"add`, backstore names are per gateway, and shared targets "
                           f"always have ACLs", "usage", 2)
    from .qos import parse_limits
    req = check_request(export_request(o, environ))
    limits = parse_limits(o.qos, prefix="qos-")
    d, c = req.defaults, req.image.cfg
    options = {"osd_op_timeout": d.osd_op_timeout, **{k: v for k, v in (
        ("conf", c.conf), ("id", c.client_id), ("keyring", c.keyring)) if v}}
    settings = {k: getattr(d, k) for k in DISK_SETTINGS}
    tsettings = {k: getattr(d, k) for k in TARGET_SETTINGS}
    size = store.image_size(req.image.spec)
    chap = {i: ChapEntry(x.user, x.mutual_user) for i, x in req.chap.items()}

    def change(cfg):
        add_disk(cfg, req.image.spec, req.target, gateways=gateways,
                 initiators=req.initiators, chap=chap, lun=req.lun, wwn=req.wwn,
                 options=options, settings=settings, target_settings=tsettings)
        if not cfg.targets[req.target].acls:
            raise ExtError("no initiator may log in: give --initiator <IQN> for each "
                           "allowed initiator", "no-acl")
    secrets = [(secret_key(req.target, i, m), s) for i, x in req.chap.items()
               for m, s in ((False, x.secret), (True, x.mutual_secret)) if s is not None]
    old = {k: store.get_secret(k) for k, _ in secrets}
    new = [(k, s) for k, s in secrets if old[k] != s]
    extra = [f"~ config-key {k} (a CHAP secret from {s.source})" for k, s in new]
    try:
        if not o.dry_run:
            for k, s in new:
                store.set_secret(k, s)
        # a new secret alone changes nothing in the object: write it anyway (epoch + 1)
        # so that the gateways re-apply
        rep = _update(store, change, f"export {req.image.spec} (shared)",
                      dry_run=o.dry_run, force=bool(new), extra=extra)
    except ExtError as e:
        if not o.dry_run:   # put config-key back as it was
            for k, _ in new:
                if old[k] is None:
                    store.remove_secret(k)
                else:
                    store.set_secret(k, old[k])
        raise ExtError(redact(str(e), req.secrets()), e.code, e.exit_status) from None
    cfg = store.read() if not o.dry_run else None
    if cfg is not None and req.image.spec in cfg.disks:
        dk = cfg.disks[req.image.spec]
        t = cfg.targets[dk.target]
        rep.add(f"{req.image.spec} ({human_size(size)}) is LUN {dk.lun} of {dk.target} on "
                f"{', '.join(t.gateways)} (owner {dk.owner}, serial {dk.wwn})")
        portals = [cfg.gateways[g].portal for g in t.gateways]
        if not req.no_chap:
            for w in chap_warnings([a for a in t.acls if a not in t.chap], portals):
                rep.add(w)
        rep.add("initiators: log in through every gateway's portal ("
                + ", ".join(str(p) for p in portals) + ") and use multipath (ALUA)")
        rep.data.update({"image": req.image.spec, "lun": dk.lun, "target": dk.target,
                         "owner": dk.owner, "serial": dk.wwn, "size": size,
                         "portals": [str(p) for p in portals]})
    if limits:
        from .cluster import Cluster
        from .qos import image_qos
        rep = _with_qos(rep, image_qos(Cluster(), req.image, limits, dry_run=o.dry_run,
                                       where="shared: every gateway's LUN of it"))
    return rep


def unexport_shared(store, image: str, *, keep_target: bool = False,
                    dry_run: bool = False) -> Report:
    from .topology import remove_disk
    key = parse_image(image, osd_op_timeout=None, check_files=False).spec
    gone: list[str] = []

    def change(cfg):
        if key not in cfg.disks:
            raise ExtError(f"{key} is not in {store.where}: nothing to do", "not-exported")
        gone[:] = remove_disk(cfg, key, keep_target)
    try:
        rep = _update(store, change, f"unexport {key} (shared)", dry_run=dry_run)
    except ExtError as e:
        if e.code != "not-exported":
            raise
        rep = Report(changed=False)
        rep.add(str(e))
        rep.data = {"image": key, "changed": False}
        return rep
    for k in gone:   # after the write: a gateway may still read them until then
        if rep.changed:
            store.remove_secret(k)
        rep.add(f"  - config-key {k}")
    return rep


def sync(store, gateway: str, *, once: bool = False, interval: float | None = None,
         state_dir: str | None = None, dry_run: bool = False, root=None, daemon=None,
         stop=None) -> Report:
    """``targetcli-rbd sync``: apply the shared configuration to this gateway's LIO
    (and, without ``once``, keep doing so until SIGTERM/SIGINT or ``stop``)."""
    import signal
    import threading

    from .sync import DEFAULT_INTERVAL, DEFAULT_STATE_DIR, Syncer
    from .topology import layout
    rep = Report(changed=False)
    if dry_run:
        cfg = store.read()
        rep.add(f"dry run: at epoch {cfg.epoch} gateway {gateway} must have (nothing is "
                f"changed now):")
        rep.lines += ["  " + line for line in layout(cfg, gateway).describe()]
        return rep
    s = Syncer(store, gateway, root=root, daemon=daemon,
               state_dir=state_dir or DEFAULT_STATE_DIR, lock=targetcli_lock)
    if stop is None:
        stop = threading.Event()
        if not once and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
    res = s.run(once=once, interval=interval or DEFAULT_INTERVAL, stop=stop)
    if res.errors and once:   # (a service stopped by SIGTERM exits 0)
        raise ExtError(f"{gateway}: {len(res.errors)} error(s) at epoch {res.epoch}:\n  "
                       + "\n  ".join(res.errors), "sync-errors")
    rep.changed = res.changed
    rep.add(f"{gateway}: epoch {res.epoch} applied, {len(res.lines)} change(s)")
    rep.data = {"gateway": gateway, "epoch": res.epoch, "changes": res.lines,
                "changed": res.changed}
    return rep
