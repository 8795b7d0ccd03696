"""Pure parsing and formatting for targetcli-rbd (no configfs, no cluster, no D-Bus).

Everything here is testable on any machine: image specs, IQNs, portals, sizes, the
default target name, backstore names, CHAP secrets (loaded from files, the
environment or a prompt, never from argv) and the text that tells an operator how
an initiator connects. Secrets are held in :class:`Secret`, whose ``str``/``repr``
never show the value, so a stray format or log call cannot leak one.
Not here: anything that reads or writes LIO, the cluster or the daemon, and the
export plan (plan.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from tcmu_rbd.config import ConfigError, RbdConfig, parse_config

__all__ = [
    "ExtError", "Defaults", "Portal", "Secret", "Chap", "ImageRef",
    "parse_image", "check_iqn", "parse_portal", "parse_size", "human_size",
    "default_target_iqn", "backstore_name", "load_secret", "parse_auth_file",
    "redact", "connect_instructions", "describe_chap", "resolve_portals", "ENV_CHAP_SECRET", "ENV_MUTUAL_SECRET",
    "ENV_DISCOVERY_SECRET", "ENV_DISCOVERY_MUTUAL_SECRET", "DEFAULT_PORTAL",
]

DEFAULT_PORTAL = "127.0.0.1:3260"
ISCSI_PORT = 3260
ENV_CHAP_SECRET = "TARGETCLI_RBD_CHAP_SECRET"
ENV_MUTUAL_SECRET = "TARGETCLI_RBD_MUTUAL_SECRET"
ENV_DISCOVERY_SECRET = "TARGETCLI_RBD_DISCOVERY_SECRET"
ENV_DISCOVERY_MUTUAL_SECRET = "TARGETCLI_RBD_DISCOVERY_MUTUAL_SECRET"


class ExtError(Exception):
    """An error for the operator: ``str(e)`` says what is wrong and what to do;
    ``code`` is a short stable identifier; ``exit_status`` the CLI's status."""

    def __init__(self, message: str, code: str = "error", exit_status: int = 1):
        super().__init__(message)
        self.code = code
        self.exit_status = exit_status


# --------------------------------------------------------------------------- defaults

@dataclass
class Defaults:
    """Per-LUN and per-TPG settings applied to every export, each overridable.

    max_data_area_mb = 64: the kernel fixes a TCMU device's queue depth at 128 and
    hw_max_sectors = 1024 lets a command carry 512 KiB, so keeping the whole queue of
    large commands in flight needs 128 x 512 KiB = 64 MiB of ring data area.
    ceph-iscsi's 8 MiB holds only 16 such commands: the rest wait in the kernel
    (qfull_time_out) and sequential throughput drops. The kernel allocates the data
    area lazily and frees idle pages, so an idle LUN costs little; the kernel's own
    default (1024 MiB per LUN) is far more than a 128-deep queue can use.
    """

    max_data_area_mb: int = 64
    hw_max_sectors: int = 1024
    cmd_time_out: int = 0          # the daemon owns timeouts (osd_op_timeout)
    qfull_time_out: int = 5
    cmdsn_depth: int = 128
    osd_op_timeout: int = 30
    # TPG parameters (RFC 3720 keys, as ceph-iscsi sets them)
    immediate_data: bool = True
    initial_r2t: bool = True
    max_burst_length: int = 524288
    first_burst_length: int = 262144
    max_recv_data_segment_length: int = 262144
    max_xmit_data_segment_length: int = 262144

    def tpg_parameters(self) -> dict[str, str]:
        yn = lambda b: "Yes" if b else "No"  # noqa: E731
        return {
            "ImmediateData": yn(self.immediate_data),
            "InitialR2T": yn(self.initial_r2t),
            "MaxBurstLength": str(self.max_burst_length),
            "FirstBurstLength": str(self.first_burst_length),
            "MaxRecvDataSegmentLength": str(self.max_recv_data_segment_length),
            "MaxXmitDataSegmentLength": str(self.max_xmit_data_segment_length),
        }

    def check(self) -> None:
        if not 1 <= self.max_data_area_mb <= 2048:
            raise ExtError(f"max_data_area_mb {self.max_data_area_mb} must be 1..2048 "
                           f"(MiB of ring data area per LUN)", "bad-option")
        if not 8 <= self.hw_max_sectors <= 65535:
            raise ExtError(f"hw_max_sectors {self.hw_max_sectors} must be 8..65535",
                           "bad-option")
        if self.max_data_area_mb * 2048 < self.hw_max_sectors:
            raise ExtError(f"max_data_area_mb {self.max_data_area_mb} cannot hold one "
                           f"command of hw_max_sectors {self.hw_max_sectors}", "bad-option")
        for name in ("cmd_time_out", "qfull_time_out"):
            if getattr(self, name) < 0:
                raise ExtError(f"{name} must be >= 0 seconds", "bad-option")
        if not 1 <= self.cmdsn_depth <= 512:
            raise ExtError(f"cmdsn_depth {self.cmdsn_depth} must be 1..512", "bad-option")
        if self.osd_op_timeout <= 0:
            raise ExtError("osd_op_timeout must be > 0 seconds", "bad-option")
        if self.first_burst_length > self.max_burst_length:
            raise ExtError("first_burst_length must not exceed max_burst_length",
                           "bad-option")
        for name in ("max_burst_length", "first_burst_length",
                     "max_recv_data_segment_length", "max_xmit_data_segment_length"):
            v = getattr(self, name)
            if not 512 <= v <= 16777215:
                raise ExtError(f"{name} {v} must be 512..16777215 (RFC 3720)", "bad-option")


# --------------------------------------------------------------------------- images

@dataclass(frozen=True)
class ImageRef:
    """An image to export: the parsed rbd config (pool, namespace, image, snapshot,
    options) with the canonical dev_config string."""

    cfg: RbdConfig

    @property
    def spec(self) -> str:
        return self.cfg.image_spec

    @property
    def read_only(self) -> bool:
        return self.cfg.read_only

    @property
    def dev_config(self) -> str:
        return self.cfg.to_config_string()

    @property
    def cfgstring(self) -> str:
        """What targetcli's create takes (without the ``rbd/`` subtype)."""
        return self.dev_config.split("/", 1)[1]

    def same_image(self, other: "ImageRef") -> bool:
        a, b = self.cfg, other.cfg
        return (a.pool, a.namespace, a.image, a.snapshot) == \
            (b.pool, b.namespace, b.image, b.snapshot)


def parse_image(spec: str, *, osd_op_timeout: int | None = 30, conf: str | None = None,
                client_id: str | None = None, keyring: str | None = None,
                check_files: bool = True) -> ImageRef:
    """``pool/image``, ``pool/ns/image``, either with ``@snapshot`` (read-only LUN);
    a leading ``rbd/`` subtype is refused (write pool/image). Options become the
    dev_config's ``;osd_op_timeout=…;conf=…;id=…;keyring=…``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ExtError("no image given: write <pool>/<image>, <pool>/<namespace>/<image> "
                       "or <pool>/<image>@<snapshot>", "bad-image")
    if ";" in spec:
        raise ExtError(f"{spec!r}: options go in --osd-op-timeout/--conf/--id/--keyring, "
                       f"not after ';' in the image", "bad-image")
    opts = []
    if osd_op_timeout is not None:
        opts.append(f"osd_op_timeout={int(osd_op_timeout)}")
    if conf:
        opts.append(f"conf={conf}")
    if client_id:
        opts.append(f"id={client_id[7:] if client_id.startswith('client.') else client_id}")
    if keyring:
        opts.append(f"keyring={keyring}")
    try:
        cfg = parse_config(";".join([spec] + opts), with_subtype=False, defaults={},
                           check_files=check_files)
    except ConfigError as e:
        raise ExtError(f"image {spec!r}: {e}", "bad-image") from None
    return ImageRef(cfg)


def image_of_config(dev_config: str | None) -> ImageRef | None:
    """The ImageRef of an existing backstore's dev_config (``rbd/...``), or None when
    it is not an rbd config we can read."""
    if not dev_config or not dev_config.startswith("rbd/"):
        return None
    try:
        return ImageRef(parse_config(dev_config, defaults={}, check_files=False))
    except ConfigError:
        return None


_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-@+]+$")


def backstore_name(ref: ImageRef) -> str:
    """The configfs name of the backstore: ``pool.image``, ``pool.ns.image``,
    ``pool.image@snap`` (names may not contain '/'; the kernel puts this name in the
    uio device's name ``tcm-user/<hba>/<name>/<dev_config>``)."""
    c = ref.cfg
    parts = [c.pool] + ([c.namespace] if c.namespace else []) + [c.image]
    name = ".".join(parts) + (f"@{c.snapshot}" if c.snapshot else "")
    return check_backstore_name(name)


def check_backstore_name(name: str) -> str:
    if not name or len(name) > 128 or not _NAME_OK.match(name):
        raise ExtError(f"backstore name {name!r} must be 1-128 characters of letters, "
                       f"digits and . _ - @ + (give one with --name)", "bad-name")
    return name


# --------------------------------------------------------------------------- IQNs

_IQN_RE = re.compile(
    r"^iqn\.(\d{4})-(\d{2})\.([a-z0-9]([a-z0-9\-]*[a-z0-9])?)"
    r"(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*(:\S+)?$")
_EUI_RE = re.compile(r"^eui\.[0-9a-f]{16}$")
_NAA_RE = re.compile(r"^naa\.[0-9a-f]{16}([0-9a-f]{16})?$")


def check_iqn(name: str, what: str = "iSCSI name") -> str:
    """Validate an iSCSI name (iqn./eui./naa., RFC 3720 §3.2.6); returns it."""
    if not isinstance(name, str) or not name:
        raise ExtError(f"empty {what}: expected iqn.YYYY-MM.<reversed domain>[:<id>]",
                       "bad-iqn")
    if len(name.encode()) > 223:
        raise ExtError(f"{what} {name!r} is longer than 223 bytes (RFC 3720)", "bad-iqn")
    if name != name.lower():
        raise ExtError(f"{what} {name!r} has upper-case letters: iSCSI names are "
                       f"lower case; use {name.lower()!r}", "bad-iqn")
    if name.startswith("iqn."):
        m = _IQN_RE.match(name)
        if not m:
            raise ExtError(f"{what} {name!r} is not a valid IQN: expected "
                           f"iqn.YYYY-MM.<reversed domain name>[:<unique id>], e.g. "
                           f"iqn.2003-01.org.linux-iscsi.gw1:rbd (no spaces, domain "
                           f"labels of a-z 0-9 -)", "bad-iqn")
        if not 1 <= int(m.group(2)) <= 12:
            raise ExtError(f"{what} {name!r}: month {m.group(2)} is not 01..12", "bad-iqn")
        return name
    if _EUI_RE.match(name) or _NAA_RE.match(name):
        return name
    raise ExtError(f"{what} {name!r} is not an iSCSI name: expected "
                   f"iqn.YYYY-MM.<reversed domain>[:<id>] (or eui.<16 hex>, naa.<16|32 hex>)",
                   "bad-iqn")


def default_target_iqn(hostname: str | None = None) -> str:
    """``iqn.2003-01.org.linux-iscsi.<hostname>:rbd`` (targetcli's prefix; the host
    name lower-cased, characters outside a-z 0-9 - turned into '-')."""
    host = (hostname or socket.gethostname()).split(".")[0].lower()
    host = re.sub(r"[^a-z0-9\-]", "-", host).strip("-") or "localhost"
    return check_iqn(f"iqn.2003-01.org.linux-iscsi.{host}:rbd", "default target IQN")


# --------------------------------------------------------------------------- portals

@dataclass(frozen=True)
class Portal:
    ip: str
    port: int = ISCSI_PORT

    @property
    def wildcard(self) -> bool:
        return self.ip in ("0.0.0.0", "::")

    @property
    def ipv6(self) -> bool:
        return ":" in self.ip

    @property
    def loopback(self) -> bool:   # only this host reaches it (127.0.0.0/8, ::1)
        return ipaddress.ip_address(self.ip).is_loopback

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ipv6 else f"{self.ip}:{self.port}"


def parse_portal(text: str) -> Portal:
    """``IP``, ``IP:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` (port 3260 by default).
    Host names are refused: a portal is an address the kernel listens on."""
    if not isinstance(text, str) or not text.strip():
        raise ExtError("empty portal: expected IP[:PORT], e.g. 127.0.0.1:3260", "bad-portal")
    t = text.strip()
    port: str | None = None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ExtError(f"portal {text!r}: missing ']' (write [IPv6]:PORT)", "bad-portal")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ExtError(f"portal {text!r}: expected ':' after ']'", "bad-portal")
            port = rest[1:]
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host = t  # IPv4 without port, or a bare IPv6 address
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ExtError(f"portal {text!r}: {host!r} is not an IP address (portals are "
                       f"addresses of this gateway, e.g. 127.0.0.1:3260 or "
                       f"[fd00::1]:3260)", "bad-portal") from None
    if port is None or port == "":
        p = ISCSI_PORT
    else:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ExtError(f"portal {text!r}: port {port!r} must be 1..65535", "bad-portal")
        p = int(port)
    return Portal(addr.compressed if addr.version == 6 else str(addr), p)


def resolve_portals(requested: Iterable[Portal], existing: Iterable[Portal] = ()) -> list[Portal]:
    """The portals of an export: the requested ones (duplicates dropped); else the
    target's existing ones; else 127.0.0.1:3260 only. Never a wildcard address
    unless it was asked for explicitly."""
    req = list(dict.fromkeys(requested))
    if req:
        return req
    have = list(dict.fromkeys(existing))
    return have or [parse_portal(DEFAULT_PORTAL)]


# --------------------------------------------------------------------------- sizes

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "p": 1 << 50}
_SIZE_RE = re.compile(r"^(\+)?(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.I)


def parse_size(text: str | int, current: int | None = None) -> int:
    """Bytes from ``1073741824``, ``512M``, ``2G``, ``1.5T``, ``10GiB`` (binary
    units); ``+1G`` adds to ``current``. Must be a positive multiple of 512."""
    if isinstance(text, int):
        n = text
    else:
        m = _SIZE_RE.match(str(text).strip())
        if not m:
            raise ExtError(f"size {text!r}: expected a number with an optional unit "
                           f"K/M/G/T (binary), e.g. 20G, or +5G to grow", "bad-size")
        n = int(float(m.group(2)) * _UNITS[m.group(3).lower()])
        if m.group(1):
            if current is None:
                raise ExtError(f"size {text!r} is relative but the current size is "
                               f"unknown", "bad-size")
            n += current
    if n <= 0:
        raise ExtError(f"size {text!r} must be positive", "bad-size")
    if n % 512:
        raise ExtError(f"size {text!r} ({n} bytes) is not a multiple of 512 bytes",
                       "bad-size")
    return n


def human_size(n: int) -> str:
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                      ("KiB", 1 << 10)):
        if n >= div:
            v = n / div
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- secrets

class Secret:
    """A CHAP secret. Never printed: str/repr/format give '***'; ``reveal()`` is
    the only way to the value (used only to write configfs)."""

    __slots__ = ("_v", "source")

    def __init__(self, value: str, source: str):
        self._v = value
        self.source = source  # where it came from, for messages ("file /x", "$ENV")

    def reveal(self) -> str:
        return self._v

    def __repr__(self) -> str:
        return f"Secret(<from {self.source}>)"

    __str__ = lambda self: "***"  # noqa: E731

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._v == self._v

    def __hash__(self) -> int:
        return hash(("Secret", self._v))


# LIO keeps CHAP names and secrets in 256-byte buffers; Windows' initiator wants
# secrets of 12..16 characters; RFC 3720 wants at least 96 bits.
MIN_SECRET, MAX_SECRET, MAX_CHAP_USER = 12, 255, 255


def check_secret(value: str, what: str) -> str:
    if not value:
        raise ExtError(f"{what} is empty", "bad-secret")
    if len(value) < MIN_SECRET:
        raise ExtError(f"{what} is {len(value)} characters: CHAP secrets must be at least "
                       f"{MIN_SECRET} (RFC 3720; the Windows initiator needs 12-16)",
                       "bad-secret")
    if len(value) > MAX_SECRET:
        raise ExtError(f"{what} is longer than {MAX_SECRET} characters", "bad-secret")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ExtError(f"{what} contains whitespace or control characters", "bad-secret")
    return value


def check_chap_user(user: str, what: str = "CHAP user") -> str:
    if not user or len(user) > MAX_CHAP_USER or any(c.isspace() for c in user) \
            or any(ord(c) < 32 for c in user):
        raise ExtError(f"{what} {user!r} must be 1-{MAX_CHAP_USER} characters without "
                       f"spaces", "bad-chap-user")
    return user


def load_secret(*, file: str | None = None, env: str | None = None,
                environ: Mapping[str, str] | None = None, prompt: str | None = None,
                what: str = "CHAP secret", getpass_fn=None) -> Secret:
    """A secret from (in this order) ``file`` (its first line), the environment
    variable ``env``, or an interactive prompt (only when stdin is a terminal).
    Secrets never come from the command line: argv is visible to every user (ps)
    and lands in shell history."""
    environ = os.environ if environ is None else environ
    if file:
        try:
            st = os.stat(file)
            with open(file, encoding="utf-8") as f:
                first = f.readline()
        except OSError as e:
            raise ExtError(f"cannot read the {what} file {file}: {e.strerror}",
                           "secret-file") from None
        value = first.rstrip("\r\n")
        if not value:
            raise ExtError(f"the {what} file {file} is empty (the secret is its first "
                           f"line)", "bad-secret")
        src = f"file {file}"
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            _warn(f"{what} file {file} is readable by group/others (mode "
                  f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {file}")
    elif env and environ.get(env):
        value, src = environ[env], f"${env}"
    elif prompt is not None:
        import sys
        if not sys.stdin.isatty():
            raise ExtError(f"no {what}: give a file (…-secret-file) or set ${env} "
                           f"(not prompting: stdin is not a terminal)", "no-secret")
        import getpass
        fn = getpass_fn or getpass.getpass
        value = fn(prompt)
        again = fn("again: ")
        if value != again:
            raise ExtError(f"the two {what}s typed differ", "bad-secret")
        src = "prompt"
    else:
        raise ExtError(f"no {what}: give a file (…-secret-file FILE, first line) or set "
                       f"${env}", "no-secret")
    return Secret(check_secret(value, what), src)


@dataclass(frozen=True)
class Chap:
    """CHAP credentials of one ACL (the initiator proves itself with user/secret;
    with mutual CHAP the target proves itself with mutual_user/mutual_secret)."""

    user: str
    secret: Secret
    mutual_user: str | None = None
    mutual_secret: Secret | None = None

    def __post_init__(self):
        check_chap_user(self.user)
        if (self.mutual_user is None) != (self.mutual_secret is None):
            raise ExtError("mutual CHAP needs both a user and a secret", "bad-chap")
        if self.mutual_user is not None:
            check_chap_user(self.mutual_user, "mutual CHAP user")
            if self.mutual_secret == self.secret:
                raise ExtError("the mutual CHAP secret must differ from the CHAP secret "
                               "(RFC 3720; initiators refuse equal secrets)", "bad-chap")

    @property
    def mutual(self) -> bool:
        return self.mutual_user is not None

    def secrets(self) -> list[str]:
        out = [self.secret.reveal()]
        if self.mutual_secret:
            out.append(self.mutual_secret.reveal())
        return out

    def describe(self) -> str:
        return describe_chap(self.user, self.mutual_user)


def describe_chap(user: str, mutual_user: str | None) -> str:
    """``CHAP user U[, mutual CHAP user M]`` (names only: never a secret)."""
    return f"CHAP user {user}" + (f", mutual CHAP user {mutual_user}" if mutual_user else "")


def parse_auth_file(path: str) -> dict[str, Chap]:
    """Per-initiator credentials, one ACL per line (``#`` comments, blank lines)::

        <initiator iqn> <chap user> <chap secret> [<mutual user> <mutual secret>]

    The file should be mode 0600 (a warning otherwise)."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ExtError(f"cannot read the auth file {path}: {e.strerror}", "secret-file") \
            from None
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        _warn(f"auth file {path} is readable by group/others (mode "
              f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
    out: dict[str, Chap] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) not in (3, 5):
            # never echo the line: it holds secrets
            raise ExtError(f"auth file {path} line {n}: expected 3 or 5 fields "
                           f"(<initiator iqn> <user> <secret> [<mutual user> <mutual "
                           f"secret>]), got {len(f)}", "bad-auth-file")
        iqn = check_iqn(f[0], f"initiator name on line {n} of {path}")
        if iqn in out:
            raise ExtError(f"auth file {path} line {n}: {iqn} appears twice",
                           "bad-auth-file")
        src = f"{path} line {n}"
        try:
            sec = Secret(check_secret(f[2], f"CHAP secret on line {n} of {path}"), src)
            mu = ms = None
            if len(f) == 5:
                mu = f[3]
                ms = Secret(check_secret(f[4], f"mutual CHAP secret on line {n} of {path}"),
                            src)
            out[iqn] = Chap(f[1], sec, mu, ms)
        except ExtError as e:
            raise ExtError(f"{e}", e.code) from None
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by '***'."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


_warnings: list[str] = []


def _warn(msg: str) -> None:
    import sys
    _warnings.append(msg)
    print(f"warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- output

def connect_instructions(target: str, portals: list[Portal], *, initiator: str | None,
                         chap: Chap | None, secret_hint: str | None = None,
                         mutual_hint: str | None = None) -> list[str]:
    """open-iscsi commands an initiator runs to log in. Secrets appear only as
    placeholders naming where the operator keeps them."""
    p = str(portals[0]) if portals else DEFAULT_PORTAL
    node = f"iscsiadm -m node -T {target} -p {p}"
    lines = []
    if initiator:
        lines.append(f"echo 'InitiatorName={initiator}' > /etc/iscsi/initiatorname.iscsi"
                     f"   # then restart iscsid")
    lines.append(f"iscsiadm -m discovery -t sendtargets -p {p}")
    if chap:
        lines.append(f"{node} -o update -n node.session.auth.authmethod -v CHAP")
        lines.append(f"{node} -o update -n node.session.auth.username -v {chap.user}")
        lines.append(f"{node} -o update -n node.session.auth.password -v "
                     f"'<{secret_hint or 'the CHAP secret'}>'")
        if chap.mutual:
            lines.append(f"{node} -o update -n node.session.auth.username_in -v "
                         f"{chap.mutual_user}")
            lines.append(f"{node} -o update -n node.session.auth.password_in -v "
                         f"'<{mutual_hint or 'the mutual CHAP secret'}>'")
    lines.append(f"{node} --login")
    return lines


@dataclass
class Report:
    """What an operation did, for the CLI/shell to print (never holds secrets)."""

    lines: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    changed: bool = True

    def add(self, line: str = "") -> None:
        self.lines.append(line)
