"""What is exported and in what state: ``targetcli-rbd list``.

Belongs here: for each user:rbd backstore its image, size, serial, config, its
TCMU device (uio node) and the process serving it, its LUNs with target, TPG,
portals, mode (demo, CHAP, ACLs) and each ACL's mapped LUN, CHAP and session;
as JSON data and as text lines.

Not here: the uio side of a device and who holds /dev/uioN (tcmu_rbd/lio.py, one
model of a TCMU device for the whole project), reading rtslib for an export
(state.py), the daemon's D-Bus face (daemon.py).  Only CHAP user names' presence
is reported, never a secret.
"""

from __future__ import annotations

from tcmu_rbd.lio import Kernel

from .daemon import START_HINT
from .spec import Report, human_size
from .state import portal_of_np


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
    e["luns"] = [_lun(lun) for lun in so.attached_luns]
    return e


def _lines(daemon_up: bool, exports: list[dict]) -> list[str]:
    out = [f"TCMU daemon: {'running' if daemon_up else 'NOT running (' + START_HINT + ')'}"]
    if not exports:
        out.append("no rbd exports")
    for e in exports:
        out.append(f"{e['image']}{' (read-only)' if e['read_only'] else ''}  "
                   f"{human_size(e['size'])}  backstore user:rbd/{e['backstore']}  "
                   f"serial {e['serial']}  {e['state']}")
        if not e["luns"]:
            out.append("  not mapped to any LUN")
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


def list_report(backstores, daemon_up: bool, kernel: Kernel) -> Report:
    """``backstores``: [(storage object, ImageRef)] of the user:rbd backstores."""
    holders = kernel.uio_holders()
    exports = [_export(so, ref, kernel, holders, daemon_up) for so, ref in backstores]
    rep = Report(changed=False)
    rep.data = {"daemon_running": daemon_up, "exports": exports}
    rep.lines = _lines(daemon_up, exports)
    return rep
