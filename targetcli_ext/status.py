"""What is exported and in what state: ``targetcli-rbd list``.

Belongs here: for each user:rbd backstore its image, size, serial, config, its
TCMU device (uio node) and the process serving it, its ALUA groups, its LUNs with
target, TPG, portals, mode (demo, CHAP, ACLs) and each ACL's mapped LUN, CHAP and
session, its local disks (loopback LUNs: target, /dev/sdX, SCSI address); for LUNs served by several gateways the owner and every path, with the
mgr's ``service status`` read for them (:func:`read_service_status`); as JSON data
and as text lines.

Not here: the uio side of a device, its ALUA groups and who holds /dev/uioN
(tcmu_rbd/lio.py, one model of a TCMU device for the whole project), joining
groups and service map into paths (paths.py), reading rtslib for an export
(state.py), the daemon's D-Bus face (daemon.py).  Only CHAP user names' presence
is reported, never a secret.  The cluster is asked only when a LUN has gateway
ALUA groups: a single-gateway list stays local and instant.
"""

from __future__ import annotations

import errno
import json
import os

from tcmu_rbd.lio import Kernel

from . import paths
from .daemon import START_HINT
from .localdisk import lun_disk
from .spec import ExtError, Report, human_size
from .state import is_local, portal_of_np

SERVICE_STATUS_TIMEOUT = 10.0   # s: connecting and the mgr's answer, each


def _acl(acl, lun: int) -> dict | None:
    maps = [m.mapped_lun for m in acl.mapped_luns if m.tpg_lun.lun == lun]
    if not maps:
        return None
    sess = acl.session
    return {
        "initiator": acl.node_wwn, "mapped_lun": maps[0],
        "chap": bool(acl.chap_userid), "mutual_chap": bool(acl.chap_mutual_userid),
        "session": None if not sess else {
            "state": sess.get("state"),
            "addresses": [c.get("address") for c in sess.get("connections", [])]},
    }


def _lun(lun) -> dict:
    tpg = lun.parent_tpg
    acls = [a for a in (_acl(acl, lun.lun) for acl in tpg.node_acls) if a]
    return {"target": tpg.parent_target.wwn, "tpg": int(tpg.tag), "lun": lun.lun,
            "portals": [str(portal_of_np(np)) for np in tpg.network_portals],
            "demo_mode": str(tpg.get_attribute("generate_node_acls")) == "1",
            "authentication": str(tpg.get_attribute("authentication")) == "1",
            "enabled": bool(tpg.enable), "acls": acls}


def _local(lun, kernel: Kernel) -> dict:
    d = lun_disk(kernel.roots, lun)
    return {"target": lun.parent_tpg.parent_target.wwn, "tpg": int(lun.parent_tpg.tag),
            "lun": int(lun.lun),
            "device": d.device if d else None, "address": d.address if d else None}


def _export(so, ref, kernel: Kernel, holders: dict, daemon_up: bool) -> dict:
    dev = kernel.device_of_storage_object(so)
    uio = dev.uio if dev else None
    held = holders.get(uio) if uio else None
    e = {"image": ref.spec, "backstore": so.name, "size": so.size,
         "serial": so.wwn, "read_only": ref.read_only, "config": so.config,
         "status": so.status, "luns": [], "uio": uio,
         # of several holders, the last in /proc order (as before lio.py)
         "served_by": held[-1].pid if held else None}
    if not uio:
        e["state"] = "no uio device (not enabled?)"
    elif e["served_by"]:
        e["state"] = f"served by pid {e['served_by']}"
    else:
        e["state"] = "NOT served: no process has the ring open" + \
            ("" if daemon_up else " (the daemon is not running)")
    luns = list(so.attached_luns)
    e["luns"] = [_lun(lun) for lun in luns if not is_local(lun)]
    e["local"] = [_local(lun, kernel) for lun in luns if is_local(lun)]
    e["alua_groups"] = [paths.group_record(g) for g in dev.alua_groups()] if dev else []
    return e


def _lines(daemon_up: bool, exports: list[dict]) -> list[str]:
    out = [f"TCMU daemon: {'running' if daemon_up else 'NOT running (' + START_HINT + ')'}"]
    if not exports:
        out.append("no rbd exports")
    for e in exports:
        out.append(f"{e['image']}{' (read-only)' if e['read_only'] else ''}  "
                   f"{human_size(e['size'])}  backstore user:rbd/{e['backstore']}  "
                   f"serial {e['serial']}  {e['state']}")
        if not e["luns"] and not e["local"]:
            out.append("  not mapped to any LUN")
        for d in e["local"]:
            where = f"{d['device'] or 'no block device'} (SCSI {d['address']})" \
                if d["address"] else "no SCSI address from the kernel"
            out.append(f"  local disk {where}  LUN {d['lun']} of loopback target "
                       f"{d['target']}")
        for l in e["luns"]:
            mode = "demo mode (any initiator)" if l["demo_mode"] else \
                ("CHAP" if l["authentication"] else "ACLs")
            out.append(f"  LUN {l['lun']} of {l['target']} (tpg {l['tpg']}, "
                       f"{'enabled' if l['enabled'] else 'DISABLED'}, {mode})  "
                       f"portals {', '.join(l['portals']) or 'none'}")
            for a in l["acls"]:
                s = a["session"]
                st = f"logged in from {', '.join(x for x in s['addresses'] if x)} " \
                     f"({s['state']})" if s else "not logged in"
                auth = "mutual CHAP" if a["mutual_chap"] else ("CHAP" if a["chap"] else
                                                              "no CHAP")
                out.append(f"    {a['initiator']}  as LUN {a['mapped_lun']}  {auth}  {st}")
    return out


def read_service_status(cfg, timeout: float = SERVICE_STATUS_TIMEOUT) -> dict:
    """The mgr's ``service status`` (JSON), asked as a LUN's own client (its
    conf=/id=/keyring=, as the daemon connects).  ExtError says why not: no
    cluster, no mgr answering, or a key without mgr caps."""
    from .store import connect
    user = f"client.{cfg.client_id or 'admin'}"
    cluster = connect(cfg.conf, cfg.client_id, cfg.keyring, timeout)
    try:
        ret, out, msg = cluster.mgr_command(
            json.dumps({"prefix": "service status", "format": "json"}), b"",
            timeout=int(timeout))
    finally:
        cluster.shutdown()
    err = abs(ret)  # -EACCES, but +ETIMEDOUT when no mgr answers (Pacific)
    if err == errno.EACCES:
        raise ExtError(f"{user} may not read it (add mgr 'allow r' to its caps)",
                       "mgr-caps")
    if err == errno.ETIMEDOUT:
        raise ExtError(f"no mgr answered within {timeout:g}s (is a ceph-mgr running?)",
                       "no-mgr")
    if err:
        raise ExtError(f"`service status` failed: {msg or os.strerror(err)}", "mgr-error")
    try:
        st = json.loads(out or b"{}")
    except ValueError:
        raise ExtError("`service status` did not answer JSON", "mgr-error") from None
    if not isinstance(st, dict):
        raise ExtError("`service status` did not answer a JSON object", "mgr-error")
    return st


def list_report(backstores, daemon_up: bool, kernel: Kernel,
                service_status=read_service_status) -> Report:
    """``backstores``: [(storage object, ImageRef)] of the user:rbd backstores;
    ``service_status(cfg) -> dict`` reads the service map (once, with the first
    multi-gateway LUN's config) when some LUN has gateway ALUA groups."""
    holders = kernel.uio_holders()
    exports = [_export(so, ref, kernel, holders, daemon_up) for so, ref in backstores]
    rep = Report(changed=False)
    rep.data = {"daemon_running": daemon_up, "exports": exports}
    rep.lines = _lines(daemon_up, exports)
    multi = [ref for e, (_, ref) in zip(exports, backstores) if paths.gateway_groups(e)]
    if multi:
        st, err = None, None
        try:
            st = service_status(multi[0].cfg)
        except ExtError as e:
            err = str(e)
        except Exception as e:  # never fail the listing for the cluster's sake
            err = f"{type(e).__name__}: {e}"
        view = paths.multipath_view(exports, st, err)
        rep.data["multipath"] = view
        rep.lines += ["", "LUNs on several gateways (owner: the exclusive lock, from the "
                          "Ceph service map):"] + paths.multipath_lines(view)
    return rep
