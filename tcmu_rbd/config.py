"""The rbd config string: parsing and syntax checks (no cluster I/O).

What belongs here: the syntax (what the kernel's dev_config and CheckConfig
carry), its one parser (:func:`parse_config` -> :class:`RbdConfig`), the option
tables and defaults, :class:`ConfigError`, the osd_op_timeout rule
(:func:`effective_osd_op_timeout`) and the options a LUN's cluster clients get
(:func:`client_options`), all pure (conf=/keyring= are only stat()ed).

What does NOT: anything that talks to the cluster; checking a config against it
(pool, image, snapshot, caps, size) is :mod:`tcmu_rbd.validate`.

Syntax::

    rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;option...]

Options (tcmu-runner's first three, plus keyring and QoS):
    osd_op_timeout=<seconds>   whole seconds > 0 (librados rados_osd_op_timeout)
    conf=<path>                absolute path of a readable ceph.conf
    id=<user>                  cephx user without the "client." prefix
    keyring=<path>             absolute path of a readable keyring
    qos_<limit>=<n>            librbd's rbd_qos_<limit>_limit on the LUN's own client,
    qos_<limit>_burst=<n>      and rbd_qos_<limit>_burst; <limit> is iops, bps,
                               read_iops, write_iops, read_bps or write_bps; bytes may
                               carry K/M/G/T (binary); 0 = no limit (tcmu_rbd.qos:
                               the image's and pool's settings override these)

Differences from tcmu-runner, on purpose: unknown options are rejected by name (it
ignores them), duplicates are rejected, names are checked, namespaces and read-only
snapshots are supported. Empty option segments (``;;`` or a trailing ``;``) are
skipped, as tcmu-runner's strtok does, so strings that worked there still parse.

osd_op_timeout and the OSD heartbeat: tcmu-runner silently raises an osd_op_timeout
that is not larger than osd_heartbeat_grace + osd_heartbeat_interval to grace +
interval + 5 (otherwise an op can time out before a dead OSD is even marked down).
We do the same, but never silently: ``effective_osd_op_timeout()`` returns the value
and a warning; ``tcmu_rbd.validate`` applies it with grace/interval read from the
client's ceph config, as tcmu-runner does, and reports it.
It is a warning, not an error, so configs written for tcmu-runner keep working.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Mapping

from . import qos as _qos

__all__ = [
    "SUBTYPE", "SUPPORTED_OPTIONS", "DEFAULT_OPTIONS", "MAX_CONFIG_BYTES",
    "ConfigError", "RbdConfig", "parse_config", "effective_osd_op_timeout", "client_options",
]

SUBTYPE = "rbd"
QOS_OPTIONS = tuple(f"qos_{n}" for n in _qos.NAMES)
SUPPORTED_OPTIONS = ("osd_op_timeout", "conf", "id", "keyring") + QOS_OPTIONS
_SUPPORTED_TEXT = ("osd_op_timeout, conf, id, keyring, qos_<limit>, qos_<limit>_burst "
                   f"with <limit> one of {', '.join(_qos.LIMITS)}")
#: defaults applied when the string does not set an option (ceph-iscsi's 30 s)
DEFAULT_OPTIONS: Mapping[str, Any] = {"osd_op_timeout": 30}
#: the kernel stores dev_config in a 256-byte buffer (TCMU_CONFIG_LEN)
MAX_CONFIG_BYTES = 255
SYNTAX = "rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;option=value...]"
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: compiled with the module, so a forked worker does not compile it (6 ms in the VM)
_DIGITS_RE = re.compile(r"\d+")


class ConfigError(ValueError):
    """A bad config string or a config that does not match the cluster.

    ``str(e)`` says what is wrong and how to fix it; ``e.code`` is a short stable
    identifier (e.g. "unknown-option", "image-missing") for programs and tests."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RbdConfig:
    pool: str
    namespace: str | None
    image: str
    snapshot: str | None
    osd_op_timeout: int | None  # seconds; None = librados' own default
    conf: str | None  # None = librados' default search (CEPH_CONF, /etc/ceph/...)
    client_id: str | None  # None = "admin"
    keyring: str | None  # None = the keyring the conf names
    #: the qos_* options as ((name without "qos_", value), ...), in NAMES order
    qos: tuple[tuple[str, int], ...] = ()

    @property
    def read_only(self) -> bool:
        return self.snapshot is not None

    @property
    def image_spec(self) -> str:
        """pool[/namespace]/image[@snapshot], as the rbd CLI spells it."""
        spec = f"{self.pool}/{self.namespace}/{self.image}" if self.namespace \
            else f"{self.pool}/{self.image}"
        return f"{spec}@{self.snapshot}" if self.snapshot else spec

    @property
    def user(self) -> str:
        return f"client.{self.client_id or 'admin'}"

    def options(self) -> dict[str, str]:
        out = {}
        if self.osd_op_timeout is not None:
            out["osd_op_timeout"] = str(self.osd_op_timeout)
        if self.conf:
            out["conf"] = self.conf
        if self.client_id:
            out["id"] = self.client_id
        if self.keyring:
            out["keyring"] = self.keyring
        for n, v in self.qos:
            out[f"qos_{n}"] = _qos.format_value(n, v)
        return out

    def to_config_string(self) -> str:
        """The canonical config string (subtype prefix included)."""
        return ";".join([f"{SUBTYPE}/{self.image_spec}"]
                        + [f"{k}={v}" for k, v in self.options().items()])

    def display(self) -> str:
        """Human-readable, for logs and messages. Never contains key material
        (there is none in a config; the keyring is shown by path only)."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        ro = " (read-only snapshot)" if self.read_only else ""
        return f"{SUBTYPE}/{self.image_spec}{ro} as {self.user}" + \
            (f" [{opts}]" if opts else "")

    def rados_conf(self, default_osd_op_timeout: float | None = None) -> dict[str, str]:
        """Options to conf_set() on a librados handle of this config (besides
        reading ``conf``); ``default_osd_op_timeout`` where the string names none."""
        return client_options(self.keyring, self.osd_op_timeout or default_osd_op_timeout,
                              self.qos)


def client_options(keyring: str | None = None, osd_op_timeout: float | None = None,
                   qos: tuple[tuple[str, int], ...] = ()) -> dict[str, str]:
    """What every cluster client of a LUN is given over ceph.conf and $CEPH_ARGS
    (conf_set): the worker's (backends/rbd.py) and the short-lived ones that check
    or change its image (validate.py, targetcli_ext), which then bound their own
    steps more tightly.  rbd_cache off: a completed write is on the OSDs (a pool's
    or image's ``rbd config`` can still turn it on; backends/rbd.py handles that).
    osd_op_timeout bounds the monitors' wait too, never under 10 s."""
    out = {"rbd_cache": "false"}
    if keyring:
        out["keyring"] = keyring
    if osd_op_timeout:
        out["rados_osd_op_timeout"] = "%g" % osd_op_timeout
        out["client_mount_timeout"] = "%g" % max(osd_op_timeout, 10)
    out.update(_qos.librbd_conf(dict(qos)))
    return out


# --------------------------------------------------------------------------- parsing

def _fail(msg: str, code: str) -> None:
    raise ConfigError(msg, code)


def _check_name(kind: str, value: str, whole: str) -> None:
    if value == "":
        hint = {"pool": "rbd/<pool>/<image>", "namespace": "rbd/<pool>/<namespace>/<image>"
                " (or leave the namespace out: rbd/<pool>/<image>)",
                "image": "rbd/<pool>/<image>", "snapshot": "<image>@<snapshot>"}[kind]
        _fail(f"empty {kind} name in {whole!r}: write {hint}", f"empty-{kind}")
    if any(c.isspace() for c in value):
        _fail(f"{kind} name {value!r} contains whitespace, which the kernel's "
              f"dev_config parser cannot carry: rename the {kind}", "whitespace")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        _fail(f"{kind} name {value!r} contains control characters: rename the {kind}",
              "control-char")
    if "," in value:
        _fail(f"{kind} name {value!r} contains ',', which separates fields of the "
              f"kernel's control file: rename the {kind}", "comma")
    if "@" in value and kind != "snapshot":
        _fail(f"{kind} name {value!r} contains '@', which may only separate the image "
              f"from its snapshot (<image>@<snapshot>) in the last path component",
              "at-sign")
    if value in (".", ".."):
        _fail(f"{kind} name {value!r} is not a valid name: use a real {kind} name",
              "dot-name")


def _check_path(opt: str, value: str) -> str:
    if not value.startswith("/"):
        _fail(f"{opt}={value!r} must be an absolute path (it is opened by the daemon, "
              f"whose working directory is /): e.g. {opt}=/etc/ceph/"
              f"{'ceph.conf' if opt == 'conf' else 'ceph.client.admin.keyring'}",
              f"{opt}-relative")
    norm = os.path.normpath(value)
    try:
        st = os.stat(norm)
    except FileNotFoundError:
        _fail(f"{opt} file {value} does not exist: fix the path or create the file",
              f"{opt}-missing")
    except OSError as e:
        _fail(f"{opt} file {value} cannot be accessed ({e.strerror}): fix the path "
              f"or its permissions", f"{opt}-inaccessible")
    if not stat.S_ISREG(st.st_mode):
        _fail(f"{opt} path {value} is not a regular file: point {opt}= at the file "
              f"itself", f"{opt}-not-file")
    if not os.access(norm, os.R_OK):
        _fail(f"{opt} file {value} is not readable by this daemon (uid {os.getuid()}): "
              f"fix its permissions (e.g. chmod 0640 and the right group)",
              f"{opt}-unreadable")
    return norm


def _option_value(name: str, value: str, check_files: bool) -> Any:
    if value == "":
        _fail(f"option '{name}=' has an empty value: give one ({name}=<value>) or "
              f"leave the option out", "empty-value")
    if name == "osd_op_timeout":
        if not _DIGITS_RE.fullmatch(value):
            if re.fullmatch(r"-\d+(\.\d*)?|0+(\.0*)?", value):
                _fail(f"osd_op_timeout={value} must be greater than 0 seconds: "
                      f"e.g. osd_op_timeout=30", "timeout-not-positive")
            if re.fullmatch(r"\d+\.\d*|\.\d+", value):
                _fail(f"osd_op_timeout={value} must be a whole number of seconds: "
                      f"e.g. osd_op_timeout={max(1, round(float(value)))}",
                      "timeout-fraction")
            _fail(f"osd_op_timeout={value!r} is not a number of seconds: write it as "
                  f"digits only, e.g. osd_op_timeout=30", "timeout-not-number")
        n = int(value)
        if n <= 0:
            _fail(f"osd_op_timeout={value} must be greater than 0 seconds: "
                  f"e.g. osd_op_timeout=30", "timeout-not-positive")
        if n > 86400:
            _fail(f"osd_op_timeout={value} is over a day; initiators give up long "
                  f"before that: use at most 86400 (ceph-iscsi uses 30)",
                  "timeout-too-large")
        return n
    if name in QOS_OPTIONS:
        try:
            return _qos.parse_value(name[4:], value, spelled=f"{name}={value}")
        except _qos.QosError as e:
            raise ConfigError(str(e), "bad-qos") from None
    if name == "id":
        if value.startswith("client."):
            _fail(f"id={value} must not include the 'client.' prefix: write "
                  f"id={value[len('client.'):]}", "id-prefix")
        if not _ID_RE.match(value):
            _fail(f"id={value!r} is not a valid cephx user name: use letters, digits, "
                  f"'.', '_' and '-' only (without the 'client.' prefix)", "id-invalid")
        return value
    # conf / keyring
    return _check_path(name, value) if check_files else value


def _normalise_defaults(defaults: Mapping[str, Any] | None,
                        check_files: bool) -> dict[str, Any]:
    if defaults is None:
        defaults = DEFAULT_OPTIONS
    out: dict[str, Any] = {}
    for k, v in defaults.items():
        key = "id" if k == "client_id" else k
        if key not in SUPPORTED_OPTIONS:
            _fail(f"unknown default option {k!r} (supported: {_SUPPORTED_TEXT})",
                  "unknown-default")
        if v is None:
            continue
        out[key] = _option_value(key, str(v), check_files)
    return out


def parse_config(s: str, *, defaults: Mapping[str, Any] | None = None,
                 with_subtype: bool = True, check_files: bool = True) -> RbdConfig:
    """Parse and syntax-check a config string; raises ConfigError.

    ``s`` is the whole string as the kernel/CheckConfig see it (``rbd/pool/img;...``),
    or, with ``with_subtype=False``, the part after ``rbd/`` (targetcli's cfgstring).
    ``defaults`` maps option names (osd_op_timeout, conf, id, keyring) to values used
    when the string does not set them; None means DEFAULT_OPTIONS (osd_op_timeout=30),
    ``{}`` means none (librados' own defaults). ``check_files`` checks that conf= and
    keyring= name existing readable regular files (on by default).
    """
    if not isinstance(s, str):
        raise ConfigError(f"config must be a string, not {type(s).__name__}", "type")
    whole = s if with_subtype else f"{SUBTYPE}/{s}"
    if s.strip() == "":
        _fail(f"config string is empty: expected {SYNTAX}", "empty")
    nbytes = len(whole.encode("utf-8"))
    if nbytes > MAX_CONFIG_BYTES:
        _fail(f"config string is {nbytes} bytes; the kernel limits dev_config to "
              f"{MAX_CONFIG_BYTES}: use shorter pool/image names, or drop options that "
              f"equal the defaults (or put the conf/keyring at shorter paths)",
              "too-long")
    if ":" in whole:
        _fail(f"':' is not allowed in the config string (rtslib refuses it in "
              f"dev_config) at position {whole.index(':')}: rename the pool/image/"
              f"snapshot or move the file to a path without ':'", "colon")
    if "\n" in whole or "\r" in whole:
        _fail("the config string contains a line break: remove it (the kernel's "
              "control file is line-based)", "newline")

    path, _, opt_text = whole.partition(";")
    # ``whole`` always carries the subtype (added above when with_subtype=False)
    subtype, slash, rest = path.partition("/")
    if not slash:
        _fail(f"config {whole!r} does not start with the handler subtype "
              f"'{SUBTYPE}/': expected {SYNTAX} (targetcli adds 'rbd/' to its "
              f"cfgstring=<pool>/<image> for you)", "no-subtype")
    if subtype != SUBTYPE:
        _fail(f"handler subtype {subtype!r} is not {SUBTYPE!r}: this handler serves "
              f"{SYNTAX}; did you mean {SUBTYPE}/{path}?", "wrong-subtype")
    path = rest
    parts = path.split("/")
    if len(parts) == 1:
        _fail(f"missing image name in {whole!r}: expected {SYNTAX} "
              f"(e.g. rbd/{parts[0] or 'rbd'}/disk0)", "no-image")
    if len(parts) > 3:
        _fail(f"too many '/' in {path!r}: expected <pool>/<image> or "
              f"<pool>/<namespace>/<image> ('/' is not allowed in names)",
              "too-many-parts")
    pool = parts[0]
    namespace = parts[1] if len(parts) == 3 else None
    last = parts[-1]
    if last.count("@") > 1:
        _fail(f"more than one '@' in {last!r}: write <image>@<snapshot> with a single "
              f"'@' (image and snapshot names cannot contain '@')", "many-at")
    image, at, snapshot = last.partition("@")
    _check_name("pool", pool, whole)
    if namespace is not None:
        _check_name("namespace", namespace, whole)
    _check_name("image", image, whole)
    if at:
        _check_name("snapshot", snapshot, whole)

    opts: dict[str, Any] = {}
    for seg in opt_text.split(";") if opt_text else []:
        if seg == "":
            continue  # tcmu-runner's strtok skips empty segments
        name, eq, value = seg.partition("=")
        if not eq:
            if name in SUPPORTED_OPTIONS:
                _fail(f"option {name!r} has no value: write it as {name}=<value>",
                      "no-value")
            _fail(f"malformed option {seg!r}: options are name=value, separated by "
                  f"';' (supported: {_SUPPORTED_TEXT})", "malformed-option")
        if name not in SUPPORTED_OPTIONS:
            librbd_name = _qos.name_of_key(name.lower())
            close = [f"qos_{librbd_name}"] if librbd_name else difflib.get_close_matches(
                name.lower(), SUPPORTED_OPTIONS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            _fail(f"unknown option {name!r} (supported: {_SUPPORTED_TEXT}){hint}",
                  "unknown-option")
        if name in opts:
            _fail(f"option {name!r} is given more than once: keep only one {name}=",
                  "duplicate-option")
        opts[name] = _option_value(name, value, check_files)

    eff = _normalise_defaults(defaults, check_files)
    eff.update(opts)
    qos = {n: eff[f"qos_{n}"] for n in _qos.NAMES if f"qos_{n}" in eff}
    try:
        _qos.check_bursts(qos, spell=lambda n: f"qos_{n}")
    except _qos.QosError as e:
        raise ConfigError(str(e), "bad-qos") from None
    return RbdConfig(pool=pool, namespace=namespace, image=image,
                     snapshot=snapshot if at else None,
                     osd_op_timeout=eff.get("osd_op_timeout"), conf=eff.get("conf"),
                     client_id=eff.get("id"), keyring=eff.get("keyring"),
                     qos=tuple(qos.items()))


# ----------------------------------------------------------------- osd_op_timeout

def effective_osd_op_timeout(requested: "int | float | RbdConfig | None",
                             grace: float, interval: float,
                             cluster_default: float = 0.0) -> tuple[int | None, str | None]:
    """tcmu-runner's rule (timer_check_and_set_def), made explicit.

    Returns (timeout to use, warning or None). A requested timeout larger than
    grace + interval is kept; otherwise the cluster's default rados_osd_op_timeout is
    kept if it is larger (None returned: leave librados alone); otherwise grace +
    interval + 5 is used, with a warning."""
    if isinstance(requested, RbdConfig):
        requested = requested.osd_op_timeout
    floor = grace + interval
    if requested is not None and requested > floor:
        return int(requested), None
    if cluster_default > floor:
        if requested is None:
            return None, None
        return None, (f"osd_op_timeout={requested} is not larger than osd_heartbeat_grace"
                      f" ({grace:g}) + osd_heartbeat_interval ({interval:g}); using the "
                      f"cluster's rados_osd_op_timeout ({cluster_default:g}) instead: "
                      f"set osd_op_timeout={int(floor) + 5} or more")
    new = int(floor) + 5
    if requested is None:
        return new, None
    return new, (f"osd_op_timeout={requested} is not larger than osd_heartbeat_grace "
                 f"({grace:g}) + osd_heartbeat_interval ({interval:g}), so an op could "
                 f"time out before a dead OSD is marked down; using {new} instead: set "
                 f"osd_op_timeout={new} or more")
