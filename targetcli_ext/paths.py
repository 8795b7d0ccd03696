"""Who owns a LUN served by several gateways, and the state of each of its paths:
the multipath part of ``targetcli-rbd list`` (pure).

Belongs here: joining, per image, the local LIO view of its backstores (their ALUA
target port groups: one per gateway, named after it, id = its TPG tag, the state
initiators are told; the groups' members and those TPGs' portals) with the mgr
service map's tcmu-runner entries (each gateway's ``lock_owner``), as data and as
text lines.  Not here: reading configfs (tcmu_rbd/lio.py) or rtslib and the
cluster (status.py), the service map's names (tcmu_rbd/service_map.py), the layout
itself (topology.py creates it, tcmu_rbd/alua.py moves the states).

A backstore with LIO's default group only is a single-gateway export: it has no
entry here, and ``list`` prints what it always printed.
"""

from __future__ import annotations

from typing import Mapping

from tcmu_rbd import service_map
from tcmu_rbd.alua import DEFAULT_GROUP

STATE_NAMES = {0: "active/optimized", 1: "active/non-optimized", 2: "standby",
               3: "unavailable", 4: "lba-dependent", 0xE: "offline", 0xF: "transitioning"}


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, f"state {state:#x}")


def group_record(g) -> dict:
    """A :class:`tcmu_rbd.lio.AluaGroup` as JSON-friendly data."""
    return {"name": g.name, "id": g.id, "state": g.state, "state_name": state_name(g.state),
            "local": g.local,
            "members": [{"target": m.wwn, "tpg": m.tpgt, "lun": _lun_number(m.lun),
                         "enabled": m.enabled} for m in g.members]}


def _lun_number(name: str) -> int | None:
    try:
        return int(name.split("_", 1)[1]) if name.startswith("lun_") else int(name)
    except (ValueError, IndexError):
        return None


def gateway_groups(export: Mapping) -> list[dict]:
    """The ALUA groups of a backstore (status.py's export record) that name gateways."""
    return [g for g in export.get("alua_groups") or () if g["name"] != DEFAULT_GROUP]


def multipath_view(exports: list[Mapping], service_status: Mapping | None,
                   service_error: str | None = None) -> list[dict]:
    """Per image whose backstores here have gateway groups: its LUN id(s), target(s),
    owner and paths.  ``service_status`` is the mgr's ``service status`` answer, or
    None when it could not be read (``service_error`` says why); the owner then
    comes from the ALUA states (the Active/Optimized group)."""
    # every TPG seen here, of any LUN: (target, tag) -> portals
    tpg_portals: dict[tuple[str, int], list[str]] = {}
    for e in exports:
        for lun in e.get("luns") or ():
            tpg_portals.setdefault((lun["target"], lun["tpg"]), list(lun["portals"]))
    by_image: dict[str, list[Mapping]] = {}
    for e in exports:
        if gateway_groups(e):
            by_image.setdefault(e["image"], []).append(e)
    return [_image_view(image, es, tpg_portals, service_status, service_error)
            for image, es in by_image.items()]


def _image_view(image, exports, tpg_portals, service_status, service_error) -> dict:
    groups: dict[str, dict] = {}   # gateway -> its group, preferably where it is local
    for e in exports:
        for g in gateway_groups(e):
            if g["name"] not in groups or (g["local"] and not groups[g["name"]]["local"]):
                groups[g["name"]] = g
    targets = sorted({lun["target"] for e in exports for lun in e.get("luns") or ()}
                     | {m["target"] for g in groups.values() for m in g["members"]})
    luns = sorted({lun["lun"] for e in exports for lun in e.get("luns") or ()}
                  | {m["lun"] for g in groups.values() for m in g["members"]
                     if m["lun"] is not None})
    daemons = service_map.image_daemons(service_status, image) \
        if service_status is not None else None
    paths = []
    for name, g in sorted(groups.items(), key=lambda kv: (kv[1]["id"], kv[0])):
        portals: list[str] = []
        keys = [(m["target"], m["tpg"]) for m in g["members"]] or \
            [(t, g["id"]) for t in targets]
        for k in keys:
            portals += [p for p in tpg_portals.get(k, []) if p not in portals]
        st = daemons.get(name) if daemons is not None else None
        paths.append({"gateway": name, "tpg": g["id"], "portals": portals,
                      "state": g["state"], "state_name": g["state_name"],
                      "local": g["local"],
                      "in_service_map": None if daemons is None else st is not None,
                      "lock_owner": None if st is None else st.get("lock_owner") == "true",
                      "service_status": st})
    for name in sorted(set(daemons or ()) - set(groups)):  # registered, no group here
        st = daemons[name]
        paths.append({"gateway": name, "tpg": None, "portals": [], "state": None,
                      "state_name": None, "local": False, "in_service_map": True,
                      "lock_owner": st.get("lock_owner") == "true", "service_status": st})
    if daemons is not None:
        owners = [p["gateway"] for p in paths if p["lock_owner"]]
        owner_from = "service map"
    else:
        owners = [p["gateway"] for p in paths if p["state"] == 0]
        owner_from = "ALUA"
    return {"image": image, "luns": luns, "targets": targets, "owners": owners,
            "owner_from": owner_from, "service_map_error": service_error,
            "paths": paths}


def _path_text(p: Mapping) -> str:
    where = " ".join(x for x in (", ".join(p["portals"]),
                                 f"tpg {p['tpg']}" if p["tpg"] is not None else "") if x)
    text = f"{p['gateway']} ({where})" if where else p["gateway"]
    if p["state_name"] is not None:
        text += f" {p['state_name']}"
    else:
        text += " (in the service map, no ALUA group here)"
    if p["in_service_map"] is False:
        text += " (not in the service map)"
    return text


def multipath_lines(view: list[Mapping]) -> list[str]:
    """One line per image: ``rbd/img0  lun 0  owner gw1  paths: gw1 (127.0.0.1:3260
    tpg 1) active/optimized, gw2 (127.0.0.2:3260 tpg 2) active/non-optimized``."""
    out = []
    for v in view:
        luns = ",".join(str(n) for n in v["luns"]) or "?"
        owners = v["owners"]
        if not owners:
            owner = "none"
        elif len(owners) > 1:
            owner = ", ".join(owners) + " (more than one!)"
        else:
            owner = owners[0]
        if v["owner_from"] != "service map":
            owner += f" (by ALUA; service map: {v['service_map_error'] or 'not read'})"
        out.append(f"{v['image']}  lun {luns}  owner {owner}  paths: "
                   + ", ".join(_path_text(p) for p in v["paths"]))
    return out
