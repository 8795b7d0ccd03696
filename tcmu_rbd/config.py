"""The rbd config string: parsing, syntax checks and validation against the cluster.

Shared by the D-Bus CheckConfig method and device open.

Syntax (what the kernel's dev_config and CheckConfig carry)::

    rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;option...]

Options (tcmu-runner's first three, plus keyring):
    osd_op_timeout=<seconds>   whole seconds > 0 (librados rados_osd_op_timeout)
    conf=<path>                absolute path of a readable ceph.conf
    id=<user>                  cephx user without the "client." prefix
    keyring=<path>             absolute path of a readable keyring

Differences from tcmu-runner, on purpose: unknown options are rejected by name (it
ignores them), duplicates are rejected, names are checked, namespaces and read-only
snapshots are supported. Empty option segments (``;;`` or a trailing ``;``) are
skipped, as tcmu-runner's strtok does, so strings that worked there still parse.

osd_op_timeout and the OSD heartbeat: tcmu-runner silently raises an osd_op_timeout
that is not larger than osd_heartbeat_grace + osd_heartbeat_interval to grace +
interval + 5 (otherwise an op can time out before a dead OSD is even marked down).
We do the same, but never silently: ``effective_osd_op_timeout()`` returns the value
and a warning, ``validate()`` reports it in ``ImageInfo.osd_op_timeout`` and
``ImageInfo.warnings`` (grace/interval read from the client's ceph config, as
tcmu-runner does), and ``check_config()`` appends the warning to its "OK" message.
It is a warning, not an error, so configs written for tcmu-runner keep working.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "SUBTYPE", "SUPPORTED_OPTIONS", "DEFAULT_OPTIONS", "MAX_CONFIG_BYTES",
    "ConfigError", "RbdConfig", "ImageInfo",
    "parse_config", "validate", "check_config", "effective_osd_op_timeout",
]

SUBTYPE = "rbd"
SUPPORTED_OPTIONS = ("osd_op_timeout", "conf", "id", "keyring")
#: defaults applied when the string does not set an option (ceph-iscsi's 30 s)
DEFAULT_OPTIONS: Mapping[str, Any] = {"osd_op_timeout": 30}
#: the kernel stores dev_config in a 256-byte buffer (TCMU_CONFIG_LEN)
MAX_CONFIG_BYTES = 255
SYNTAX = "rbd/<pool>[/<namespace>]/<image>[@<snapshot>][;option=value...]"
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


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

    def rados_conf(self) -> dict[str, str]:
        """Options to conf_set() on a librados handle (besides reading ``conf``)."""
        out = {"rbd_cache": "false"}
        if self.keyring:
            out["keyring"] = self.keyring
        if self.osd_op_timeout is not None:
            out["rados_osd_op_timeout"] = str(self.osd_op_timeout)
        return out


@dataclass(frozen=True)
class ImageInfo:
    size: int  # bytes (of the snapshot when there is one)
    object_size: int
    order: int
    features: int
    feature_names: tuple[str, ...]
    read_only: bool
    image_id: str
    osd_op_timeout: int | None  # what will actually be used (see module doc)
    warnings: tuple[str, ...] = field(default_factory=tuple)


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
        if not re.fullmatch(r"\d+", value):
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
            _fail(f"unknown default option {k!r} (supported: "
                  f"{', '.join(SUPPORTED_OPTIONS)})", "unknown-default")
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
                  f"';' (supported: {', '.join(SUPPORTED_OPTIONS)})", "malformed-option")
        if name not in SUPPORTED_OPTIONS:
            close = difflib.get_close_matches(name.lower(), SUPPORTED_OPTIONS, n=1,
                                              cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            _fail(f"unknown option {name!r} (supported: "
                  f"{', '.join(SUPPORTED_OPTIONS)}){hint}", "unknown-option")
        if name in opts:
            _fail(f"option {name!r} is given more than once: keep only one {name}=",
                  "duplicate-option")
        opts[name] = _option_value(name, value, check_files)

    eff = _normalise_defaults(defaults, check_files)
    eff.update(opts)
    return RbdConfig(pool=pool, namespace=namespace, image=image,
                     snapshot=snapshot if at else None,
                     osd_op_timeout=eff.get("osd_op_timeout"), conf=eff.get("conf"),
                     client_id=eff.get("id"), keyring=eff.get("keyring"))


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


# ----------------------------------------------------------------------- validation

def _human(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= (1 << shift) and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def _feature_names(features: int) -> tuple[str, ...]:
    import rbd
    names = []
    for attr in sorted(dir(rbd)):
        if attr.startswith("RBD_FEATURE_") and attr.count("_") >= 2:
            bit = getattr(rbd, attr)
            if isinstance(bit, int) and bit and bit & (bit - 1) == 0 and features & bit:
                names.append(attr[len("RBD_FEATURE_"):].lower().replace("_", "-"))
    return tuple(names)


def _keyring_entities(path: str) -> list[str] | None:
    """Section names ([client.x]) in a keyring file; None if unreadable. Only the
    names are read out, never the key material."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ln.strip()[1:-1].strip() for ln in f
                    if ln.strip().startswith("[") and ln.strip().endswith("]")]
    except OSError:
        return None


def _errno(e: BaseException) -> int | None:
    return getattr(e, "errno", None)


def _caps_hint(cfg: RbdConfig) -> str:
    return (f"`ceph auth caps {cfg.user} mon 'profile rbd' osd 'profile rbd "
            f"pool={cfg.pool}'`")


def _connect_error(cfg: RbdConfig, e: BaseException, mon_host: str,
                   timeout: float) -> ConfigError:
    import rados
    err = _errno(e)
    where = f"the monitors ({mon_host})" if mon_host else "the cluster"
    kr = cfg.keyring or "the keyring named in the ceph config"
    if isinstance(e, rados.TimedOut) or err == 110:
        return ConfigError(f"could not connect to {where} as {cfg.user} within "
                           f"{timeout:g}s: check that the monitors are up and that "
                           f"'mon host' in {cfg.conf or 'the ceph config'} is right",
                           "connect-timeout")
    if isinstance(e, rados.ObjectNotFound) or err == 2:
        return ConfigError(f"no key for {cfg.user} found ({kr}): give keyring=<path> of "
                           f"a keyring holding [{cfg.user}] (e.g. from `ceph auth get "
                           f"{cfg.user}`)", "no-key")
    if isinstance(e, (rados.PermissionDeniedError, rados.PermissionError)) \
            or err in (1, 13):
        return ConfigError(f"{where} refused {cfg.user}: its key in {kr} is wrong or it "
                           f"has no mon caps: check `ceph auth get {cfg.user}` and grant "
                           f"caps with {_caps_hint(cfg)}", "auth-denied")
    return ConfigError(f"could not connect to {where} as {cfg.user}: {e}: check the "
                       f"ceph config and keyring", "connect-failed")


def _validate_inner(cfg: RbdConfig, size: int | None, timeout: float,
                    result: dict) -> None:
    import rados
    import rbd

    t = str(max(1, int(round(timeout))))
    cluster = rados.Rados(rados_id=cfg.client_id or "admin")
    try:
        try:
            cluster.conf_read_file(cfg.conf)
        except rados.Error as e:
            if cfg.conf:
                raise ConfigError(f"cannot read ceph config {cfg.conf}: {e}: check the "
                                  f"file's syntax", "conf-unreadable") from None
            # like tcmu-runner: without conf= the default search may find nothing
        for k, v in cfg.rados_conf().items():
            cluster.conf_set(k, v)
        # failures become ConfigError messages: keep librados' own noise off stderr
        cluster.conf_set("log_to_stderr", "false")
        cluster.conf_set("err_to_stderr", "false")
        if cfg.keyring:
            held = _keyring_entities(cfg.keyring)
            if held is not None and cfg.user not in held:
                raise ConfigError(
                    f"keyring {cfg.keyring} has no key for {cfg.user} (it holds: "
                    f"{', '.join(held) or 'nothing'}): give id=<user> matching the "
                    f"keyring, or export the right one with `ceph auth get {cfg.user} "
                    f"-o <path>`", "keyring-no-entity")
        for k in ("client_mount_timeout", "rados_mon_op_timeout",
                  "rados_osd_op_timeout"):
            cluster.conf_set(k, t)  # bound every step of the validation itself
        try:
            mon_host = cluster.conf_get("mon_host") or ""
        except rados.Error:
            mon_host = ""
        if not mon_host:
            raise ConfigError(f"no monitors configured for {cfg.user}: "
                              f"{'set mon host in ' + cfg.conf if cfg.conf else 'give conf=<path to ceph.conf> (none found in the default locations)'}",
                              "no-mon-host")
        grace = float(cluster.conf_get("osd_heartbeat_grace") or 20)
        interval = float(cluster.conf_get("osd_heartbeat_interval") or 6)
        try:
            cluster.connect(timeout=int(t))
        except rados.Error as e:
            raise _connect_error(cfg, e, mon_host, timeout) from None

        try:
            pool_ok = cluster.pool_exists(cfg.pool)
        except rados.Error as e:
            raise ConfigError(f"{cfg.user} may not list pools ({e}): grant caps with "
                              f"{_caps_hint(cfg)}", "mon-caps") from None
        if not pool_ok:
            try:
                pools = cluster.list_pools()
            except rados.Error:
                pools = []
            close = difflib.get_close_matches(cfg.pool, pools, n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close else
                    f" (existing pools: {', '.join(pools[:8])})" if pools else "")
            raise ConfigError(f"pool {cfg.pool!r} does not exist{hint}: create it with "
                              f"`ceph osd pool create {cfg.pool}` and `rbd pool init "
                              f"{cfg.pool}`", "pool-missing")
        ioctx = cluster.open_ioctx(cfg.pool)
        try:
            r = rbd.RBD()
            if cfg.namespace:
                try:
                    ns_ok = r.namespace_exists(ioctx, cfg.namespace)
                except rbd.PermissionError:
                    raise ConfigError(f"{cfg.user} may not read pool {cfg.pool!r}: "
                                      f"grant caps with {_caps_hint(cfg)}",
                                      "osd-caps") from None
                if not ns_ok:
                    raise ConfigError(
                        f"namespace {cfg.namespace!r} does not exist in pool "
                        f"{cfg.pool!r}: create it with `rbd namespace create "
                        f"{cfg.pool}/{cfg.namespace}`", "namespace-missing")
                ioctx.set_namespace(cfg.namespace)
            base = f"{cfg.pool}/{cfg.namespace}/{cfg.image}" if cfg.namespace \
                else f"{cfg.pool}/{cfg.image}"
            try:
                image = rbd.Image(ioctx, cfg.image, read_only=True)
            except rbd.ImageNotFound:
                try:
                    names = r.list(ioctx)
                except rbd.Error:
                    names = []
                close = difflib.get_close_matches(cfg.image, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"image {base!r} does not exist{hint}: create it with "
                                  f"`rbd create {base} --size "
                                  f"{_human(size) if size else '10G'}`",
                                  "image-missing") from None
            except rbd.PermissionError:
                raise ConfigError(f"{cfg.user} may not open image {base!r} (permission "
                                  f"denied): grant caps with {_caps_hint(cfg)}",
                                  "osd-caps") from None
            except rbd.Timeout:
                raise ConfigError(f"opening image {base!r} timed out after {timeout:g}s:"
                                  f" check that the OSDs are up (`ceph osd stat`)",
                                  "osd-timeout") from None
            try:
                if cfg.snapshot:
                    snaps = [sn["name"] for sn in image.list_snaps()]
                    if cfg.snapshot not in snaps:
                        have = (f" (existing: {', '.join(snaps[:8])})" if snaps
                                else " (it has no snapshots)")
                        raise ConfigError(
                            f"snapshot {cfg.snapshot!r} of image {base!r} does not "
                            f"exist{have}: create it with `rbd snap create "
                            f"{base}@{cfg.snapshot}`", "snapshot-missing")
                    image.set_snap(cfg.snapshot)
                st = image.stat()
                img_size = image.size()
                features = image.features()
                try:
                    image_id = image.id()
                except Exception:
                    image_id = ""
            finally:
                image.close()
        finally:
            ioctx.close()
        if size is not None and size > img_size:
            fix = (f"snapshots cannot grow: give the LUN size={_human(img_size)} or "
                   f"less" if cfg.snapshot else
                   f"give the LUN size={_human(img_size)} or less, or grow the image "
                   f"with `rbd resize {base} --size {_human(size)}`")
            raise ConfigError(f"LUN size {size} bytes ({_human(size)}) is larger than "
                              f"image {cfg.image_spec!r} ({img_size} bytes, "
                              f"{_human(img_size)}): reads past its end would fail; "
                              f"{fix}", "size-too-large")
        warnings = []
        eff, warn = effective_osd_op_timeout(cfg.osd_op_timeout, grace, interval)
        if warn:
            warnings.append(warn)
        if not cfg.read_only and not features & rbd.RBD_FEATURE_EXCLUSIVE_LOCK:
            warnings.append(f"image {base!r} has no exclusive-lock feature: do not export"
                            f" it through more than one gateway (enable it with `rbd "
                            f"feature enable {base} exclusive-lock`)")
        result["info"] = ImageInfo(size=img_size, object_size=int(st["obj_size"]),
                                   order=int(st["order"]), features=int(features),
                                   feature_names=_feature_names(features),
                                   read_only=cfg.read_only, image_id=image_id,
                                   osd_op_timeout=eff, warnings=tuple(warnings))
    finally:
        try:
            cluster.shutdown()
        except Exception:
            pass


def validate(cfg: RbdConfig, size: int | None = None,
             timeout: float = 20.0) -> ImageInfo:
    """Check the config against the cluster: connect with its conf/id/keyring, then
    pool, namespace, image, snapshot exist, and ``size`` (the LUN size the kernel
    asks for, bytes) is not larger than the image. Raises ConfigError. Never takes
    much longer than ``timeout`` seconds: librados gets the timeout for connecting
    and each operation, and the whole check runs in a worker thread that is
    abandoned (with a ConfigError) if it overruns."""
    if size is not None and size <= 0:
        raise ConfigError(f"LUN size {size} must be positive", "size-invalid")
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            _validate_inner(cfg, size, timeout, result)
        except BaseException as e:  # handed to the caller
            result["error"] = e

    th = threading.Thread(target=work, name=f"rbd-validate {cfg.image_spec}",
                          daemon=True)
    th.start()
    th.join(timeout + 5)
    if th.is_alive():
        raise ConfigError(f"checking {cfg.display()} did not finish within "
                          f"{timeout:g}s: check that the monitors and OSDs are up and "
                          f"reachable", "timeout")
    if "error" in result:
        e = result["error"]
        if isinstance(e, ConfigError):
            raise e
        raise ConfigError(f"checking {cfg.display()} failed: {e}", "failed") from e
    return result["info"]


def check_config(s: str, *, defaults: Mapping[str, Any] | None = None,
                 size: int | None = None, timeout: float = 15.0,
                 connect: bool = True) -> tuple[bool, str]:
    """D-Bus CheckConfig semantics: (True, "OK") or (True, "OK; warning: ...") on
    success, (False, <what is wrong and how to fix it>) on failure. Never raises for
    a bad config. ``connect=False`` only checks the syntax."""
    try:
        cfg = parse_config(s, defaults=defaults)
        if not connect:
            return True, "OK"
        info = validate(cfg, size=size, timeout=timeout)
    except ConfigError as e:
        return False, str(e)
    except Exception as e:  # e.g. rados/rbd modules missing
        return False, f"cannot check the config: {type(e).__name__}: {e}"
    if info.warnings:
        return True, "OK; warning: " + "; warning: ".join(info.warnings)
    return True, "OK"
