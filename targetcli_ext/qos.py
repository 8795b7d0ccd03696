"""``targetcli-rbd qos`` (and ``export --qos-*``): an image's QoS limits, live.

The limits are librbd's own (tcmu_rbd.qos has the names, units and
precedence).  targetcli-rbd writes them as the image's settings (image metadata
``conf_rbd_qos_*``, what ``rbd config image set`` writes): persistent, seen by
every gateway, shown by ``rbd config image list``, and applied by every open
LUN of the image on its next refresh (librbd's header update notification),
so no restart.  Without limits it prints what applies and where each comes
from: the image, the pool, the LUN's config string (its ``qos_*`` options, set
on the LUN's own client) or the client's defaults.

Belongs here: turning the operator's values into settings (:func:`parse_limits`),
the order of the verb (read, change, read back) and its report.  Not here:
argv (cli.py), finding this gateway's LUN of the image (gateway.py), the librbd
calls (cluster.py), what the settings mean (tcmu_rbd/qos.py).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from tcmu_rbd import qos as _qos

from .spec import ExtError, ImageRef, Report


def flag(name: str, prefix: str = "") -> str:
    """The command-line flag of a setting: ``read_iops`` -> ``--read-iops``."""
    return f"--{prefix}{name.replace('_', '-')}"


def parse_limits(values: Mapping[str, str | int | None], prefix: str = "") -> dict[str, int]:
    """{setting: int} of the given (non-None) values of the flags ``--<prefix><name>``;
    ExtError names the flag."""
    out = {}
    for n, text in values.items():
        if text is None:
            continue
        try:
            out[n] = _qos.parse_value(n, text, spelled=f"{flag(n, prefix)} {text}")
        except _qos.QosError as e:
            raise ExtError(str(e), "bad-qos") from None
    try:
        _qos.check_bursts(out, spell=lambda n: flag(n, prefix))
    except _qos.QosError as e:
        raise ExtError(str(e), "bad-qos") from None
    return out


def image_qos(cluster, ref: ImageRef, values: dict[str, int] | None = None, *,
              clear: bool = False, lun: ImageRef | None = None, where: str = "",
              dry_run: bool = False) -> Report:
    """Show, or change and show, the QoS of ``ref``'s image.  ``lun`` is this
    gateway's LUN of it (its config string's qos_* options; its conf/id/keyring
    when ``ref`` names none); ``where`` says which LUN (for the report)."""
    values = values or {}
    if ref.read_only and (values or clear):
        raise ExtError(f"{ref.spec}: QoS settings belong to the image, and its snapshot "
                       f"LUNs apply them too: give the image ({ref.spec.split('@')[0]})",
                       "read-only")
    cfg = ref.cfg
    if lun is not None:
        if not (cfg.conf or cfg.client_id or cfg.keyring):
            cfg = dataclasses.replace(cfg, conf=lun.cfg.conf, client_id=lun.cfg.client_id,
                                      keyring=lun.cfg.keyring)
        cfg = dataclasses.replace(cfg, qos=lun.cfg.qos)
    lun_qos = dict(cfg.qos)
    before, after = cluster.qos(cfg, None if dry_run else values,
                                clear=clear and not dry_run)
    own = {e["name"]: str(e["value"]) for e in before if e["source"] == _qos.SOURCE_IMAGE}
    want = {} if clear else dict(own)
    want.update({_qos.librbd_key(n): str(v) for n, v in values.items()})
    changes = [f"+ {k}={v}" if k not in own else f"~ {k}={own[k]} -> {v}"
               for k, v in want.items() if own.get(k) != v]
    changes += [f"- {k}={v}" for k, v in own.items() if k not in want]
    image = cfg.image_spec.split("@")[0]
    rep = Report(changed=bool(changes) and not dry_run)
    if dry_run and (values or clear):
        rep.add(f"dry run: QoS of image {image} would change:" if changes
                else f"dry run: QoS of image {image}: nothing to change")
        rep.lines += ["  " + c for c in changes]
    elif changes:
        rep.add(f"QoS of image {image} changed (image metadata conf_rbd_qos_*: every LUN "
                f"of the image, on every gateway, applies it within a second):")
        rep.lines += ["  " + c for c in changes]
    elif values or clear:
        rep.add(f"QoS of image {image}: nothing to change")
    rows = _qos.effective(after, lun_qos)
    rep.add(f"QoS that applies to {image}" + (f" ({where})" if where else "") + ":")
    for r in rows:
        if r.name in _qos.LIMITS or r.value or r.source != "client":
            rep.add(f"  {r.name:<17} {_qos.human(r.name, r.value):<26} from the "
                    f"{r.source}" + (f"  ({r.note})" if r.note else ""))
    rep.data = {"image": image, "lun": where, "changed": rep.changed,
                "dry_run": dry_run, "changes": changes,
                "limits": [r.to_dict() for r in rows]}
    return rep
