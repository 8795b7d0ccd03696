"""Per-LUN QoS: librbd's own limiter (rbd_qos_*), its names, values and precedence.

What belongs here, all pure (no cluster I/O): the table of the limits and bursts
we expose (:data:`NAMES`), how each is spelled in the config string
(``qos_<name>=``), on the command line (``--<name>``) and in librbd
(``rbd_qos_<limit>_limit`` / ``rbd_qos_<limit>_burst``); parsing and printing
their values (:func:`parse_value`, :func:`format_value`); the burst rule
(:func:`check_bursts`); and reading librbd's ``config_list()`` of an image as
"the effective limit and where it comes from" (:func:`effective`,
:func:`shadowed`).

What does NOT: the config string's parser (:mod:`tcmu_rbd.config`, which takes
its ``qos_*`` options from here), opening images (:mod:`tcmu_rbd.backends.rbd`
sets the config string's limits on the LUN's own client), writing an image's
settings (``targetcli-rbd qos``: targetcli_ext/cluster.py).

Values: a whole number >= 0; 0 means no limit (librbd's default).  IOPS limits
count requests per second.  Byte limits are bytes per second, optionally with a
binary suffix K, M, G or T (= KiB, MiB, GiB, TiB; "Ki"/"KiB" are accepted too):
``10M`` is 10485760 bytes/s.  "10MB" and "10Mb" are refused as ambiguous
(10^6 or 2^20? bits or bytes?).

A burst (``<limit>_burst``) lets a LUN go above its limit, up to the burst, for
``rbd_qos_*_burst_seconds`` (default 1 s).  librbd refuses a burst below its
limit (TokenBucketThrottle::set_limit: -EINVAL, and the limit is then NOT
applied), so :func:`check_bursts` refuses such a pair.

Precedence (librbd's ImageCtx::apply_metadata, on every image refresh): the
image's own settings (image metadata ``conf_rbd_qos_*``, written by
``targetcli-rbd qos`` and ``rbd config image set``) override the pool's
(``rbd config pool set``), which override the LUN's client: the config string's
``qos_*`` options, which override ceph.conf / the monitors' config database /
the built-in default (0).  A change of the image's or the pool's settings
reaches an image that is already open on the next refresh (librbd's header
update notification), without a reopen; the config string's options need the
LUN to be re-created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = [
    "LIMITS", "NAMES", "PRECEDENCE", "QosError", "Row", "is_bytes", "librbd_key", "human",
    "name_of_key", "parse_value", "format_value", "check_bursts", "librbd_conf",
    "effective", "shadowed",
]

#: the limits librbd enforces, each with a burst: rbd_qos_<limit>_limit/_burst
LIMITS = ("iops", "bps", "read_iops", "write_iops", "read_bps", "write_bps")
#: every setting we expose: the limits, then their bursts
NAMES = LIMITS + tuple(f"{n}_burst" for n in LIMITS)
#: librbd's config_list() sources (rbd.RBD_CONFIG_SOURCE_*)
SOURCE_CONFIG, SOURCE_POOL, SOURCE_IMAGE = 0, 1, 2
MAX_VALUE = (1 << 63) - 1
PRECEDENCE = (
    "Precedence (librbd's): the image's own settings (image metadata conf_rbd_qos_*, "
    "written by `targetcli-rbd qos` and `rbd config image set`) override the pool's "
    "(`rbd config pool set`), which override the LUN's client: the config string's "
    "qos_* options, then ceph.conf and the default 0 (no limit). Image and pool "
    "settings reach open LUNs within a second, without a restart.")

_SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
_BYTES_RE = re.compile(r"^(\d+)([kmgtKMGT])(i|iB)?$")


class QosError(ValueError):
    """A bad QoS value; ``str(e)`` says what is wrong and how to write it."""


def is_bytes(name: str) -> bool:
    """True for the byte-rate settings (bps, read_bps, ... and their bursts)."""
    return "bps" in name


def librbd_key(name: str) -> str:
    """``iops`` -> ``rbd_qos_iops_limit``, ``iops_burst`` -> ``rbd_qos_iops_burst``."""
    if name not in NAMES:
        raise QosError(f"unknown QoS setting {name!r} (known: {', '.join(NAMES)})")
    return f"rbd_qos_{name}" if name.endswith("_burst") else f"rbd_qos_{name}_limit"


def name_of_key(key: str) -> str | None:
    """The inverse of :func:`librbd_key` (None for other librbd options)."""
    for n in NAMES:
        if librbd_key(n) == key:
            return n
    return None


def parse_value(name: str, text: str | int, spelled: str | None = None) -> int:
    """The value of setting ``name`` written as ``text``; ``spelled`` is how the
    operator wrote it (``qos_bps=10MB``, ``--bps 10MB``), for the error message."""
    what = spelled or f"{name}={text}"
    s = str(text).strip()
    unit = "bytes per second" if is_bytes(name) else "I/O requests per second"
    if re.fullmatch(r"\d+", s):
        n = int(s)
    elif is_bytes(name) and (m := _BYTES_RE.match(s)):
        n = int(m.group(1)) << _SUFFIX[m.group(2).lower()]
    elif re.fullmatch(r"-\d+(\.\d*)?", s):
        raise QosError(f"{what}: a limit cannot be negative: give a whole number of "
                       f"{unit}, or 0 for no limit")
    elif re.fullmatch(r"(\d*\.\d+|\d+\.)([kmgtKMGT](i|iB)?)?", s):
        raise QosError(f"{what}: give a whole number of {unit} (no fraction)")
    elif is_bytes(name) and re.fullmatch(r"\d+[kmgtKMGT]?[bB](ps|/s)?|\d+[bB](ps|/s)?", s):
        raise QosError(f"{what} is ambiguous (bits or bytes? 10^6 or 2^20?): write "
                       f"bytes per second as a number, or with a binary suffix K, M, G, "
                       f"T (10M = 10MiB = 10485760 bytes/s)")
    else:
        how = ("a number of bytes per second, optionally with K, M, G or T (binary: "
               "10M = 10485760)") if is_bytes(name) else "a whole number, e.g. 500"
        raise QosError(f"{what}: not a valid value: write {how}; 0 means no limit")
    if n > MAX_VALUE:
        raise QosError(f"{what}: too large (at most {MAX_VALUE})")
    return n


def format_value(name: str, n: int) -> str:
    """The shortest exact spelling that :func:`parse_value` reads back."""
    if is_bytes(name) and n:
        for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
            if n % (1 << shift) == 0:
                return f"{n >> shift}{suffix}"
    return str(n)


def human(name: str, n: int) -> str:
    """For reports: ``no limit``, ``500 IOPS``, ``10M bytes/s (10485760)``."""
    if n == 0:
        return "0 (no limit)"
    if not is_bytes(name):
        return f"{n} IOPS"
    short = format_value(name, n)
    return f"{short} bytes/s" + (f" ({n})" if short != str(n) else "")


def check_bursts(values: Mapping[str, int], spell=lambda n: n) -> None:
    """Refuse a burst below its limit when both are given (librbd would ignore the
    limit); ``spell(name)`` is how the operator writes a setting's name."""
    for lim in LIMITS:
        b, a = values.get(f"{lim}_burst"), values.get(lim)
        if b and a and b < a:
            raise QosError(
                f"{spell(lim + '_burst')}={format_value(lim, b)} is below "
                f"{spell(lim)}={format_value(lim, a)}: a burst is the peak allowed above "
                f"the limit (librbd refuses a smaller one and then applies no limit): "
                f"give at least {format_value(lim, a)}, or leave the burst out")


def librbd_conf(values: Mapping[str, int]) -> dict[str, str]:
    """librbd config options (``rbd_qos_iops_limit``: ``"500"``) of ``values``."""
    return {librbd_key(n): str(v) for n, v in values.items()}


@dataclass(frozen=True)
class Row:
    """One setting as librbd applies it to an image."""

    name: str       # iops, bps_burst, ...
    value: int      # what applies (0: no limit)
    source: str     # "image", "pool", "lun config" or "client"
    note: str = ""  # e.g. the LUN config's value that is overridden

    def to_dict(self) -> dict:
        return {"name": self.name, "key": librbd_key(self.name), "value": self.value,
                "source": self.source, **({"note": self.note} if self.note else {})}


def _source(entry_source: int, name: str, lun: Mapping[str, int]) -> str:
    if entry_source == SOURCE_IMAGE:
        return "image"
    if entry_source == SOURCE_POOL:
        return "pool"
    return "lun config" if name in lun else "client"


def effective(entries: Iterable[Mapping], lun: Mapping[str, int] | None = None) -> list[Row]:
    """Our settings, in :data:`NAMES` order, from librbd's ``Image.config_list()``
    (dicts with name, value, source) of an image opened by a client configured as
    the LUN's.  ``lun`` is the LUN's config-string settings, to name them as the
    source and to say when the image or pool overrides them."""
    lun = lun or {}
    by_name = {}
    for e in entries:
        n = name_of_key(e["name"])
        if n is not None:
            by_name[n] = (int(e["value"] or 0), int(e["source"]))
    rows = []
    for n in NAMES:
        value, src = by_name.get(n, (0, SOURCE_CONFIG))
        source = _source(src, n, lun)
        note = ""
        if n in lun and source in ("image", "pool") and lun[n] != value:
            note = f"overrides qos_{n}={format_value(n, lun[n])} of the LUN's config"
        rows.append(Row(n, value, source, note))
    limit = {r.name: r.value for r in rows}
    for i, r in enumerate(rows):
        if r.name.endswith("_burst") and r.value:
            lim = r.name[:-len("_burst")]
            if r.value < limit[lim]:
                rows[i] = Row(r.name, r.value, r.source,
                              f"below {lim}={format_value(lim, limit[lim])}: librbd "
                              f"refuses the pair and applies NO {lim} limit")
    return rows


def shadowed(entries: Iterable[Mapping], lun: Mapping[str, int]) -> list[str]:
    """Warnings for the config-string settings that the image's or pool's override
    (CheckConfig reports them: such an option has no effect)."""
    out = []
    for r in effective(entries, lun):
        if r.note.startswith("overrides"):
            where = "rbd config image" if r.source == "image" else "rbd config pool"
            out.append(f"qos_{r.name}={format_value(r.name, lun[r.name])} has no effect: "
                       f"the {r.source}'s {librbd_key(r.name)}={r.value} overrides it "
                       f"(see `{where} list`; `targetcli-rbd qos` changes the image's)")
    return out
