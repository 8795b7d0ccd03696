"""What a gateway publishes in the Ceph mgr service map, per LUN (pure).

Belongs here: the service and daemon names, the metadata and the status keys,
their encoding for librados (``"k\\0v\\0...\\0\\0"``), and the way back: which
gateways a ``service status`` answer lists for an image, with their status.
Not here: the librados calls (native/cluster.c through backends/rbd.py), when to
publish (failover.py), reading ``service status`` from the cluster (the lab's
ceph_mgr.py, targetcli_ext/status.py).  No librados import.

The service is "tcmu-runner", the daemon name ``<gateway>:<pool>/<image>`` and
the status keys are the reference's (lock_owner, lock_lost_cnt, conn_lost_cnt,
cmd_timed_out_cnt, values as strings), so that what already reads tcmu-runner's
entries (ceph-iscsi's gwcli, the Ceph dashboard's iSCSI page, ``ceph -s``'s
"tcmu-runner: N portals active (M hosts)") reads ours unchanged.  Beyond the
reference: namespaced images are ``<gateway>:<pool>/<ns>/<image>`` (metadata
``namespace``), read-only snapshot LUNs ``...<image>@<snap>`` (metadata
``snapshot``), so no two LUNs of one gateway share a daemon name, and the metadata
says ``tcmu_rbd_version``.
"""

from __future__ import annotations

from typing import Mapping

from tcmu_rbd import __version__

__all__ = ["SERVICE", "DAEMON_TYPE", "STATUS_KEYS", "image_path", "daemon_name",
           "metadata", "status", "encode_kv", "decode_kv", "image_daemons"]

SERVICE = "tcmu-runner"
DAEMON_TYPE = "portal"   # `ceph -s` counts "portals" and groups them by daemon_prefix
STATUS_KEYS = ("lock_owner", "lock_lost_cnt", "conn_lost_cnt", "cmd_timed_out_cnt")


def _check_gateway(gateway: str) -> str:
    # the daemon name is split at the first ':' (tcmu-runner uses the host name)
    if not isinstance(gateway, str) or not gateway or any(
            c in gateway for c in ":/\0") or gateway != gateway.strip():
        raise ValueError(f"gateway name {gateway!r} for the service map must be non-empty, "
                         f"without ':', '/', NUL or surrounding blanks")
    return gateway


def _check_part(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value or "/" in value:
        raise ValueError(f"{what} {value!r} must be a non-empty name without '/' or NUL")
    return value


def image_path(pool: str, namespace: str | None, image: str,
               snapshot: str | None = None) -> str:
    """``pool[/ns]/image[@snap]``: the rbd CLI's spelling (RbdConfig.image_spec)."""
    parts = [_check_part("pool", pool)]
    if namespace:
        parts.append(_check_part("namespace", namespace))
    parts.append(_check_part("image", image))
    spec = "/".join(parts)
    return f"{spec}@{_check_part('snapshot', snapshot)}" if snapshot else spec


def daemon_name(gateway: str, pool: str, namespace: str | None, image: str,
                snapshot: str | None = None) -> str:
    """``<gateway>:<pool>[/<ns>]/<image>[@<snap>]``, as tcmu-runner names its LUNs
    (``<hostname>:<pool>/<image>``)."""
    return f"{_check_gateway(gateway)}:{image_path(pool, namespace, image, snapshot)}"


def metadata(gateway: str, pool: str, namespace: str | None, image: str,
             image_id: str = "", snapshot: str | None = None) -> dict[str, str]:
    """The daemon's metadata, registered once per librados handle: the
    reference's keys (pool_name, image_name, image_id, daemon_type "portal",
    daemon_prefix = the gateway) and tcmu_rbd_version; namespace / snapshot when
    the LUN has one.  librados adds the host's own (hostname, ceph_version...)."""
    image_path(pool, namespace, image, snapshot)  # the same checks as the name
    md = {"pool_name": pool, "image_name": image, "image_id": image_id or "",
          "daemon_type": DAEMON_TYPE, "daemon_prefix": _check_gateway(gateway),
          "tcmu_rbd_version": __version__}
    if namespace:
        md["namespace"] = namespace
    if snapshot:
        md["snapshot"] = snapshot
    return md


def _count(what: str, n: int) -> str:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be an integer >= 0, not {n!r}")
    return str(n)


def status(lock_owner: bool, lock_lost: int = 0, conn_lost: int = 0,
           timed_out: int = 0) -> dict[str, str]:
    """The status the reference sends on every lock change (all of it each time:
    a reader may miss updates): lock_owner "true"/"false" and the counters of
    lost locks, lost cluster connections and timed-out commands, as strings."""
    return {"lock_owner": "true" if lock_owner else "false",
            "lock_lost_cnt": _count("lock_lost", lock_lost),
            "conn_lost_cnt": _count("conn_lost", conn_lost),
            "cmd_timed_out_cnt": _count("timed_out", timed_out)}


def encode_kv(d: Mapping[str, str]) -> bytes:
    """librados' encoding of metadata and status: each key and each value
    NUL-terminated, then one more NUL (``b"k\\0v\\0k\\0v\\0\\0"``; {} is ``b"\\0"``).

    Keys must be non-empty (an empty key would end the list early), keys and
    values strings without NUL."""
    out = bytearray()
    for k, v in d.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"service map key {k!r} must be a non-empty string")
        if not isinstance(v, str):
            raise ValueError(f"service map value of {k!r} must be a string, not "
                             f"{type(v).__name__}")
        for s in (k, v):
            b = s.encode()
            if b"\0" in b:
                raise ValueError(f"NUL in service map entry {k!r}")
            out += b + b"\0"
    return bytes(out + b"\0")


def decode_kv(data: bytes) -> dict[str, str]:
    """The inverse of :func:`encode_kv` (as librados reads it: up to the empty key)."""
    out: dict[str, str] = {}
    items = data.split(b"\0")
    i = 0
    while i < len(items) and items[i]:
        if i + 1 >= len(items):
            raise ValueError("service map encoding: a key without a value")
        out[items[i].decode()] = items[i + 1].decode()
        i += 2
    return out


def image_daemons(service_status: Mapping, spec: str,
                  service: str = SERVICE) -> dict[str, dict[str, str]]:
    """{gateway: status} of the daemons that ``service status`` (its JSON,
    {service: {daemon: {"status": {...}, ...}}}) lists for image ``spec``
    (``pool[/ns]/image[@snap]``): those named ``<gateway>:<spec>``."""
    suffix = ":" + spec
    out = {}
    daemons = service_status.get(service) or {}
    if not isinstance(daemons, Mapping):
        return out
    for name, entry in daemons.items():
        if not isinstance(name, str) or not name.endswith(suffix):
            continue
        gateway = name[:-len(suffix)]
        if not gateway or ":" in gateway:
            continue
        st = entry.get("status") if isinstance(entry, Mapping) else None
        out[gateway] = {str(k): str(v) for k, v in (st or {}).items()}
    return out
