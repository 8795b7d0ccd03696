"""ALUA as one gateway reports it: pure functions over lio's group records.

Belongs here: turning a device's configfs target port groups
(:class:`tcmu_rbd.lio.AluaGroup`) into the port groups the SCSI core answers
REPORT TARGET PORT GROUPS and VPD 0x83 from (:class:`tcmu_rbd.scsi.PortGroup`),
which group is this gateway's, and the state every group must have once a
given gateway owns the image's exclusive lock.

Not here: reading or writing configfs (lio.py), who owns the lock and when it
moves (failover.py), the SCSI encoding (scsi/pages.py).

Multi-gateway layout (targetcli_ext/topology.py creates it): every gateway's
backstore has one group per gateway, named after the gateway, ``tg_pt_gp_id``
= the gateway's TPG tag; only the local group has a member on this host (a
LUN in the enabled TPG).  Other gateways' groups have no member here (or, on
a host that also creates the peers' TPGs disabled, members in disabled TPGs);
their one port is reported with relative port id = tag.  Every gateway
reports relative port id = TPG tag for its own port too, so all paths agree.
A device with only LIO's ``default_tg_pt_gp`` keeps the SCSI core's default
(one group, Active/Optimized): a single gateway answers as before.
"""

from __future__ import annotations

from tcmu_rbd import scsi

DEFAULT_GROUP = "default_tg_pt_gp"
AO = scsi.ALUA_ACTIVE_OPTIMIZED
ANO = scsi.ALUA_ACTIVE_NON_OPTIMIZED


def gateway_groups(groups) -> list:
    """The groups that name gateways (LIO's default group is not one)."""
    return [g for g in groups if g.name != DEFAULT_GROUP]


def local_group(groups, known: str | None = None):
    """This gateway's group: the one with a member in an enabled TPG; else the
    group named ``known`` (the name found before) while it still has members.
    A ceph-iscsi gateway maps the LUN in every gateway's TPG and enables only its
    own, so a member's TPG tells whose group it is; but a TPG switched off (a
    partition, or our own :meth:`Failover._disable_tpgs`) does not change who we
    are, and a service-map entry registered meanwhile must keep the name."""
    gws = gateway_groups(groups)
    for g in gws:
        if g.local:
            return g
    for g in gws:
        if known is not None and g.name == known and g.members:
            return g
    return None


def port_groups(groups) -> list | None:
    """scsi.PortGroup list for a device's groups, or None to keep the default."""
    gws = gateway_groups(groups)
    if not gws or local_group(groups) is None:
        return None
    wwn = next((m.wwn for g in gws for m in g.members), "")
    out = []
    for g in gws:
        tpgs = (scsi.TPGS_IMPLICIT if g.access_type & 1 else 0) | \
            (scsi.TPGS_EXPLICIT if g.access_type & 2 else 0)
        if g.members:
            ports = [scsi.Port(rel_port_id=m.tpgt, wwn=m.wwn, tpgt=m.tpgt, enabled=m.enabled)
                     for m in g.members]
        else:
            ports = [scsi.Port(rel_port_id=g.id, wwn=wwn, tpgt=g.id, enabled=False)]
        out.append(scsi.PortGroup(id=g.id, name=g.name, state=g.state,
                                  supported=g.supported or scsi.ALUA_SUP_LIO_DEFAULT,
                                  preferred=g.preferred, status=scsi.ALUA_STATUS_IMPLICIT,
                                  implicit_trans_secs=g.implicit_trans_secs,
                                  tpgs=tpgs or scsi.TPGS_IMPLICIT, ports=ports))
    return out


def states_for_owner(groups, owner: str | None) -> dict[str, int]:
    """{group name: state} once gateway `owner` holds the lock: its group
    Active/Optimized, every other gateway's Active/Non-optimized.  Empty when
    the owner is unknown or names no group here (leave the states alone)."""
    gws = gateway_groups(groups)
    if owner is None or owner not in {g.name for g in gws}:
        return {}
    return {g.name: AO if g.name == owner else ANO for g in gws}


def changes(groups, owner: str | None) -> dict[str, int]:
    """The subset of states_for_owner() that differs from configfs now."""
    now = {g.name: g.state for g in groups}
    return {n: s for n, s in states_for_owner(groups, owner).items() if now.get(n) != s}
