"""``targetcli-rbd sync --gateway NAME``: make this gateway's LIO what the shared
configuration says, and keep it so.

Belongs here: :func:`plan_lun` (pure: one LUN of the layout against a snapshot of LIO,
as an :class:`~.plan.ExportPlan`, so that apply.py's ordered writes with rollback do
the creating), :class:`Syncer` (the rtslib side: remove what this gateway has and
the configuration no longer does, create what is missing, the ALUA groups, then
remember which targets it serves) and its loop (watch the object, apply within a
second of a notify, re-read every ``interval`` seconds as a safety net).

What is this gateway's in LIO, and so all a sync ever changes or removes: the
user:rbd backstores named ``<gateway>.*`` (with their LUNs and ALUA groups), and its
TPG (tag = its tag) of the targets it serves or served (``sync-<gateway>.json`` in
the state directory remembers those, so a target removed while sync was not running
is still cleaned up). Everything else, the other gateways' objects in a shared
kernel included, is left alone. One disk's error does not stop the others: each is
reported, and the next notify or re-read tries again. Each change is logged in one
line; secrets never are (they come from config-key as :class:`~.spec.Secret`).

Not here: what the layout is (topology.py), the object and its watch (store.py),
the single-gateway export (gateway.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Mapping

from .apply import apply_export, probe_portals, remove_export
from .plan import AclChange, ChapRef, ExportPlan, MappedLunChange, TpgChange
from .spec import Chap, ExtError, image_of_config, redact
from .state import (
    AclState, LioState, find_target, lio_error, open_root, portal_of_np, rbd_backstores,
    read_state,
)
from .store import ConfigStore, ConfigWatcher, SharedConfig, TargetEntry
from .topology import GatewayLayout, LunLayout, TargetLayout, layout

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/tcmu-rbd"
DEFAULT_INTERVAL = 30.0


# --------------------------------------------------------------------------- planning

def _chap_set(acl: AclState, c: Chap) -> bool:
    if acl.chap_user != c.user or acl.chap_secret != c.secret:
        return False
    return not c.mutual or (acl.mutual_user == c.mutual_user
                            and acl.mutual_secret == c.mutual_secret)


def plan_lun(t: TargetLayout, x: LunLayout, state: LioState, chap: Mapping[str, Chap],
             size: int | None) -> ExportPlan:
    """What LUN ``x`` of ``t`` still needs in LIO (``state``: read_state of t.iqn):
    its backstore (``size``: the image's), target, TPG settings, portal, the LUN, ACLs
    with CHAP (``chap``: the secrets that could be read) and mapped LUNs."""
    b = x.backstore
    bs = state.backstore_named(b.name)
    target = state.target(t.iqn)
    tpg = next((g for g in target.tpgs if g.tag == t.tag), None) if target else None
    if tpg is None:
        tc = TpgChange(t.tag, True, t.attributes, t.parameters, enable=True)
    else:
        tc = TpgChange(t.tag, False,
                       tuple((k, v) for k, v in t.attributes if tpg.attribute(k) != v),
                       tuple((k, v) for k, v in t.parameters if tpg.parameter(k) != v),
                       enable=not tpg.enabled)
    have_portals = tpg.portals if tpg else ()
    new_portals = () if t.portal in have_portals else (t.portal,)
    acls = {a.initiator: a for a in tpg.acls} if tpg else {}
    acl_changes, maps = [], []
    for a in t.acls:
        have, c = acls.get(a.initiator), chap.get(a.initiator)
        cref = None
        if c is not None and (have is None or not _chap_set(have, c)):
            cref = ChapRef(c.user, c.mutual_user, f"CHAP secret from config-key "
                           f"{a.secret_key}", f"mutual secret from config-key "
                           f"{a.mutual_key}" if c.mutual else None)
        if have is None or cref is not None:
            acl_changes.append(AclChange(a.initiator, have is None,
                                         t.cmdsn_depth if have is None else None, cref))
        if have is None or not have.maps(x.lun):
            used = {m for m, _ in have.mapped} if have else set()
            free = x.lun if x.lun not in used else \
                next(n for n in range(65536) if n not in used)
            maps.append(MappedLunChange(a.initiator, free, b.read_only))
    return ExportPlan(
        image=b.disk, dev_config=b.dev_config, read_only=b.read_only, target=t.iqn,
        backstore=b.name, new_backstore=None if bs else b.new_backstore(size),
        create_target=target is None, tpg=tc, portals=tuple(have_portals) + new_portals,
        new_portals=new_portals,
        listen=tuple(p for p in new_portals if p not in state.portals),
        lun=x.lun, create_lun=tpg is None or x.lun not in tpg.luns,
        acls=tuple(acl_changes), mapped_luns=tuple(maps),
        initiators=tuple(sorted(a.initiator for a in t.acls)), serial=b.wwn,
        size=bs.size if bs else size)


def split_plan(plan: ExportPlan) -> tuple[ExportPlan, ExportPlan]:
    """The plan in two: everything but the mapped LUNs and the TPG's enable, then
    those. In between the LUN joins its ALUA group, so an initiator never sees it
    in the default group (Active/Optimized on every gateway)."""
    first = replace(plan, mapped_luns=(), tpg=replace(plan.tpg, enable=False))
    second = replace(plan, new_backstore=None, create_target=False,
                     tpg=TpgChange(plan.tpg.tag, False, enable=plan.tpg.enable),
                     new_portals=(), listen=(), create_lun=False, acls=())
    return first, second


# --------------------------------------------------------------------------- applying

@dataclass
class SyncResult:
    epoch: int | None = None
    lines: list[str] = field(default_factory=list)     # the changes, one a line
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.lines)


class Syncer:
    """Brings one gateway's LIO to the shared configuration (see the module doc)."""

    def __init__(self, store: ConfigStore, gateway: str, *, root=None, daemon=None,
                 state_dir: str = DEFAULT_STATE_DIR, lock=None, image_size=None):
        """``lock``: a context manager factory held around each pass (the CLI gives
        targetcli's lock, which also serialises two gateways' syncs on one kernel)."""
        from .store import check_gateway_name
        self.store, self.gateway = store, check_gateway_name(gateway)
        self._root, self._daemon, self._known = root, daemon, None
        self.lock = lock or contextlib.nullcontext
        self.state_file = os.path.join(state_dir, f"sync-{gateway}.json")
        self.image_size = image_size or store.image_size

    @property
    def root(self):
        if self._root is None:
            self._root = open_root()
        return self._root

    @property
    def daemon(self):
        if self._daemon is None:
            from .daemon import Daemon
            self._daemon = Daemon()
        return self._daemon

    # -- the targets this gateway served --------------------------------------------

    def known(self) -> dict[str, int]:
        """{target: TPG tag} this gateway served at the end of its last pass."""
        if self._known is None:
            try:
                with open(self.state_file) as f:
                    self._known = {str(k): int(v) for k, v in
                                   json.load(f).get("targets", {}).items()}
            except FileNotFoundError:
                self._known = {}
            except (OSError, ValueError, AttributeError) as e:
                log.warning("ignoring %s (%s)", self.state_file, e)
                self._known = {}
        return dict(self._known)

    def _remember(self, targets: dict[str, int]) -> None:
        if targets == self.known():
            return
        self._known = dict(targets)    # this process remembers it in any case
        try:
            os.makedirs(os.path.dirname(self.state_file) or ".", exist_ok=True)
            tmp = f"{self.state_file}.tmp"
            with open(tmp, "w") as f:
                json.dump({"gateway": self.gateway, "targets": targets}, f, indent=1)
            os.replace(tmp, self.state_file)
        except OSError as e:
            log.warning("%s: cannot write %s (%s): a target removed while sync is not "
                        "running keeps its TPG here; give a writable --state-dir",
                        self.gateway, self.state_file, e.strerror)

    # -- one pass ---------------------------------------------------------------------

    def apply(self, cfg: SharedConfig) -> SyncResult:
        """Make LIO match ``cfg`` for this gateway; returns the changes and errors."""
        lay = layout(cfg, self.gateway)
        res = SyncResult(cfg.epoch)
        if lay.tag is None:
            self._error(res, f"gateway {self.gateway} is not in the shared configuration "
                             f"(targetcli-rbd gateway add {self.gateway} --portal "
                             f"IP[:PORT]): it serves nothing")
        chap, secrets = self._secrets(lay, res)
        with self.lock():
            root = self.root
            known = self.known()
            self._cleanup(root, cfg, lay, known, res, secrets)
            for t in lay.targets:
                for x in t.luns:
                    self._step(res, x.backstore.disk, secrets,
                               lambda: self._apply_lun(root, t, x, chap.get(t.iqn, {}), res))
            ours = {t.iqn: t.tag for t in lay.targets}
            for iqn, tag in known.items():   # a removal that failed is tried again
                tgt = find_target(root, iqn)
                if iqn not in ours and tgt is not None and _tpg(tgt, tag) is not None:
                    ours[iqn] = tag
            self._remember(ours)
        return res

    def _step(self, res: SyncResult, what: str, secrets, fn) -> None:
        try:
            fn()
        except Exception as e:   # one disk's failure must not stop the others
            msg = str(e) if isinstance(e, ExtError) else lio_error(e)
            self._error(res, redact(f"{what}: {msg}", secrets))

    def _error(self, res: SyncResult, msg: str) -> None:
        res.errors.append(msg)
        log.error("%s: %s", self.gateway, msg)

    def _done(self, res: SyncResult, line: str) -> None:
        res.lines.append(line)
        log.info("%s: %s", self.gateway, line)

    def _secrets(self, lay: GatewayLayout, res: SyncResult):
        """{target: {initiator: Chap}} from config-key, and every secret (to redact)."""
        out, all_ = {}, []
        for t in lay.targets:
            for a in t.acls:
                if a.chap is None:
                    continue
                try:
                    s = self.store.get_secret(a.secret_key)
                    m = self.store.get_secret(a.mutual_key) if a.mutual_key else None
                    if s is None or (a.mutual_key and m is None):
                        raise ExtError(f"no CHAP secret in config-key "
                                       f"{a.mutual_key if s else a.secret_key}: export "
                                       f"again with --shared --chap-user ... (the ACL gets "
                                       f"no credentials until then)", "no-secret")
                    all_ += [v.reveal() for v in (s, m) if v is not None]
                    out.setdefault(t.iqn, {})[a.initiator] = Chap(
                        a.chap.user, s, a.chap.mutual_user, m)
                except ExtError as e:
                    self._error(res, f"{t.iqn} ACL {a.initiator}: {e}")
        return out, all_

    def _remove_backstore(self, root, so, ref, res: SyncResult) -> None:
        self.daemon.require()    # the kernel waits for the daemon's answer
        rep = remove_export(root, so, ref, keep_target=True)
        for line in rep.lines[1:]:
            self._done(res, line)

    def _cleanup(self, root, cfg: SharedConfig, lay: GatewayLayout,
                 known: dict[str, int], res: SyncResult, secrets) -> None:
        """Remove what is this gateway's and not in the layout (each removal on its
        own: one failing does not keep the others)."""
        want = {b.name: b for b in lay.backstores}
        for so, ref in rbd_backstores(root):
            if not so.name.startswith(lay.prefix):
                continue
            b = want.get(so.name)
            cur = image_of_config(so.config)
            if b is None or cur is None or cur.dev_config != b.dev_config or so.wwn != b.wwn:
                self._step(res, f"removing user:rbd/{so.name}", secrets,
                           lambda: self._remove_backstore(root, so, ref, res))
        for iqn, tag in sorted(set(known.items()) | {(t.iqn, t.tag) for t in lay.targets}):
            target = find_target(root, iqn)
            tpg = _tpg(target, tag) if target is not None else None
            want_t = lay.target(iqn)
            if tpg is None:
                continue
            if want_t is not None and want_t.tag == tag:
                self._step(res, f"TPG {tag} of {iqn}", secrets,
                           lambda: self._prune(tpg, want_t, res))
            elif not any(g.tag == tag and n != self.gateway and n in
                         cfg.targets.get(iqn, TargetEntry()).gateways
                         for n, g in cfg.gateways.items()):   # now another gateway's TPG
                self._step(res, f"TPG {tag} of {iqn}", secrets,
                           lambda: self._remove_tpg(target, tpg, tag, res))

    def _remove_tpg(self, target, tpg, tag: int, res: SyncResult) -> None:
        tpg.delete()
        self._done(res, f"removed TPG {tag} of {target.wwn}")
        if not list(target.tpgs):
            target.delete()
            self._done(res, f"removed target {target.wwn} (no TPG left)")

    def _prune(self, tpg, t: TargetLayout, res: SyncResult) -> None:
        where = f"TPG {t.tag} of {t.iqn}"
        for lun in list(tpg.luns):
            x = t.lun(int(lun.lun))
            if x is None or lun.storage_object.name != x.backstore.name:
                for m in list(lun.mapped_luns):
                    m.delete()
                n = lun.lun
                lun.delete()
                self._done(res, f"removed LUN {n} of {where}")
        for acl in list(tpg.node_acls):
            if t.acl(acl.node_wwn) is None:
                acl.delete()
                self._done(res, f"removed ACL {acl.node_wwn} of {where}")
        for np in list(tpg.network_portals):
            p = portal_of_np(np)
            if p != t.portal:
                np.delete()
                self._done(res, f"removed portal {p} of {where}")

    def _apply_lun(self, root, t: TargetLayout, x: LunLayout, chap, res: SyncResult) -> None:
        b = x.backstore
        state = read_state(root, t.iqn)
        have = state.backstore_named(b.name)
        size = self.image_size(b.disk)
        if have is None:
            self.daemon.require()
            ok, msg = self.daemon.check_config(b.dev_config)
            if not ok:
                raise ExtError(f"the TCMU daemon refused {b.dev_config}: {msg}", "bad-config")
        plan = plan_lun(t, x, state, chap, size)
        probe_portals(plan.listen)
        first, second = split_plan(plan)
        if not first.empty:
            apply_export(first, chap, root)
            self._plan_lines(first, t, res)
        self._alua(root, t, x, res)
        if not second.empty:
            apply_export(second, chap, root)
            self._plan_lines(second, t, res)
        so = _backstore(root, b.name)
        if have is not None and size > so.size and not b.read_only:
            # the image grew: the kernel tells the daemon (RECONFIG), initiators rescan
            so.set_attribute("dev_size", str(size))
            self._done(res, f"~ backstore user:rbd/{b.name} size {so.size} -> {size}")

    def _plan_lines(self, plan: ExportPlan, t: TargetLayout, res: SyncResult) -> None:
        for line in plan.describe():
            self._done(res, line if t.iqn in line or " backstore " in line
                       else f"{line} ({t.iqn})")

    def _alua(self, root, t: TargetLayout, x: LunLayout, res: SyncResult) -> None:
        import rtslib_fb
        b = x.backstore
        so = _backstore(root, b.name)
        if so.alua_supported is False:
            raise ExtError(f"backstore user:rbd/{b.name} has no ALUA (its attribute "
                           f"alua_support is 0)", "no-alua")
        have = {g.name: g for g in so.alua_tpgs}
        for g in b.groups:
            grp = have.pop(g.name, None)
            if grp is not None and int(grp.tg_pt_gp_id) != g.group_id:
                grp.delete()   # an id is set once: a new tag needs a new group
                self._done(res, f"- ALUA group {g.name} (id {grp.tg_pt_gp_id}) of "
                                f"user:rbd/{b.name}: the gateway's tag changed")
                grp = None
            new = grp is None
            if new:
                grp = rtslib_fb.ALUATargetPortGroup(so, g.name, g.group_id)
            changed = [(k, v) for k, v in g.settings if str(getattr(grp, k)) != v]
            for k, v in changed:
                setattr(grp, k, int(v))
            if new:
                # the first state only: later the daemon follows the image's lock owner
                grp.alua_access_state = g.state
                self._done(res, f"+ {g.text()} on user:rbd/{b.name}")
            elif changed:
                self._done(res, f"~ ALUA group {g.name} of user:rbd/{b.name}: "
                           + " ".join(f"{k}={v}" for k, v in changed))
        for name, grp in have.items():
            if name != "default_tg_pt_gp":
                grp.delete()
                self._done(res, f"- ALUA group {name} of user:rbd/{b.name}")
        tpg = _tpg(find_target(root, t.iqn), t.tag)
        lun = next(n for n in tpg.luns if int(n.lun) == x.lun)
        if lun.alua_tg_pt_gp_name != b.group:
            lun.alua_tg_pt_gp_name = b.group      # rtslib reports a failure only so:
            if lun.alua_tg_pt_gp_name != b.group:
                raise ExtError(f"LUN {x.lun} of {t.iqn} could not join ALUA group "
                               f"{b.group}", "alua-failed")
            self._done(res, f"~ LUN {x.lun} of TPG {t.tag} of {t.iqn} in ALUA group "
                            f"{b.group}")

    # -- the loop -----------------------------------------------------------------------

    def sync_once(self) -> SyncResult:
        try:
            cfg = self.store.read()
        except ExtError as e:
            log.error("%s: %s (LIO left as it is)", self.gateway, e)
            return SyncResult(errors=[str(e)])
        res = self.apply(cfg)
        log.log(logging.INFO if res.changed or res.errors else logging.DEBUG,
                "%s: epoch %s applied: %d change(s), %d error(s)", self.gateway,
                res.epoch, len(res.lines), len(res.errors))
        return res

    def run(self, *, once: bool = False, interval: float = DEFAULT_INTERVAL,
            stop: threading.Event | None = None) -> SyncResult:
        """Apply the configuration; unless ``once``, then watch it and apply again
        within a second of every change, and every ``interval`` s anyway, until
        ``stop`` is set."""
        if once:
            return self.sync_once()
        stop = stop or threading.Event()
        watcher = ConfigWatcher(self.store)
        try:
            if not watcher.start():
                log.warning("%s: %s does not exist yet: waiting for it", self.gateway,
                            self.store.where)
            res = self.sync_once()
            due = time.monotonic() + interval
            while not stop.is_set():
                fired = watcher.wait(min(1.0, max(0.0, due - time.monotonic())))
                if fired or time.monotonic() >= due:
                    try:
                        res = self.sync_once()
                    except Exception as e:   # keep serving; the next pass tries again
                        log.exception("%s: this pass failed: %s", self.gateway, e)
                    due = time.monotonic() + interval
            return res
        finally:
            watcher.close()


def _tpg(target, tag: int):
    return next((g for g in target.tpgs if int(g.tag) == tag), None)


def _backstore(root, name: str):
    return next(so for so, _ in rbd_backstores(root) if so.name == name)
