"""What a gateway publishes in the Ceph mgr service map, per LUN (pure).

Belongs here: the service and daemon names, the metadata and the status keys,
and their encoding for librados (``"k\\0v\\0...\\0\\0"``).  Not here: the calls
(native/cluster.c through backends/rbd.py), when to publish (failover.py).

The service is "tcmu-runner" and the keys are the reference's (lock_owner,
lock_lost_cnt, conn_lost_cnt, cmd_timed_out_cnt), so dashboards and tools
that read tcmu-runner's entries (ceph-iscsi, the Ceph dashboard) read ours.
"""

from __future__ import annotations

from tcmu_rbd import __version__

SERVICE = "tcmu-runner"


def image_path(pool: str, namespace: str | None, image: str) -> str:
    return f"{pool}/{namespace}/{image}" if namespace else f"{pool}/{image}"


def daemon_name(gateway: str, pool: str, namespace: str | None, image: str) -> str:
    """``<gateway>:<pool>[/<ns>]/<image>``, as tcmu-runner names its LUNs."""
    return f"{gateway}:{image_path(pool, namespace, image)}"


def metadata(gateway: str, pool: str, namespace: str | None, image: str,
             image_id: str = "") -> dict[str, str]:
    return {"pool_name": pool, "image_name": image, "image_id": image_id or "",
            "namespace": namespace or "", "daemon_type": "portal",
            "daemon_prefix": gateway, "tcmu_rbd_version": __version__}


def status(lock_owner: bool, lock_lost: int, conn_lost: int, timed_out: int) -> dict[str, str]:
    return {"lock_owner": "true" if lock_owner else "false",
            "lock_lost_cnt": str(lock_lost), "conn_lost_cnt": str(conn_lost),
            "cmd_timed_out_cnt": str(timed_out)}


def encode_kv(d: dict[str, str]) -> bytes:
    """librados' encoding: each key and value NUL-terminated, then one NUL."""
    out = bytearray()
    for k, v in d.items():
        for s in (k, v):
            b = str(s).encode()
            if b"\0" in b:
                raise ValueError(f"NUL in service map entry {k!r}")
            out += b + b"\0"
    return bytes(out + b"\0")
