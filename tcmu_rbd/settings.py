"""The daemon's configuration file, ``/etc/tcmu-rbd/tcmu-rbd.conf`` (INI).

Which file: ``--config PATH``, else ``$TCMU_RBD_CONFIG``, else the default
path.  A missing *default* file means built-in defaults; a missing file that
was asked for explicitly is an error.  Every bad value is reported as
:class:`SettingsError` naming the file, section, key and what is allowed.

Example (all keys optional)::

    [daemon]
    log_level = info            ; debug | info | warning | error | critical
    log_target = stderr         ; stderr | syslog | /path/to/file
    dbus = yes                  ; serve org.kernel.TCMUService1 (targetcli)
    worker_start_timeout = 60   ; s: worker must report ready (else -ETIMEDOUT)
    worker_stop_timeout = 45    ; s: after "stop" before SIGKILL
    request_timeout = 60        ; s: resize/reconfig/writecache answer
    restart_backoff_max = 60    ; s: cap of the crash-restart backoff
    lock_file = /run/tcmu.lock  ; the single-instance lock tcmu-runner takes too
    metrics_address = 127.0.0.1:9289  ; Prometheus /metrics (host:port); 0 = none
    luns_per_worker = 1         ; LUNs a worker process serves (1: a process per LUN;
                                ; more: threads of one process, each LUN with its
                                ; own cluster client: worker_host.py)

    [rbd]
    osd_op_timeout = 30         ; s: default when the cfgstring has none
    lock_grace = 10             ; s: a lock that moved to another gateway stays there

Environment overrides (for workers and tests): ``TCMU_RBD_CONFIG`` (file),
``TCMU_RBD_LOG_LEVEL``.
"""

from __future__ import annotations

import configparser
import logging
import os
import ipaddress
import shlex
from dataclasses import dataclass, field

DEFAULT_PATH = "/etc/tcmu-rbd/tcmu-rbd.conf"
ENV_CONFIG = "TCMU_RBD_CONFIG"
ENV_LOG_LEVEL = "TCMU_RBD_LOG_LEVEL"
#: set by the supervisor for its workers: its pid (a worker dies with it)
ENV_SUPERVISOR_PID = "TCMU_RBD_SUPERVISOR_PID"

#: a worker host's bound: the kernel's 64K uio minors aside, one interpreter's core
MAX_LUNS_PER_WORKER = 256

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class SettingsError(Exception):
    pass


@dataclass
class Settings:
    log_level: str = "info"
    log_target: str = "stderr"  # stderr | syslog | absolute file path
    dbus: bool = True
    worker_start_timeout: float = 60.0
    worker_stop_timeout: float = 45.0
    request_timeout: float = 60.0
    restart_backoff_max: float = 60.0
    osd_op_timeout: int = 30
    #: s: after a gateway took the exclusive lock, the others leave it there
    lock_grace: float = 10.0
    #: tcmu-runner's single-instance lock (POSIX record lock)
    lock_file: str = "/run/tcmu.lock"
    #: where /metrics is served (host, port); None = no metrics.  Loopback
    #: unless the file asks for another address (a gateway's own, say).
    metrics_address: tuple[str, int] | None = ("127.0.0.1", 9289)
    #: LUNs one worker process serves: 1 = a process per LUN (a crash costs one LUN);
    #: N > 1 = up to N LUNs on threads of one process (~3 MB less each: worker_host.py)
    luns_per_worker: int = 1
    #: advanced/testing: the command that starts a worker (``--uio`` and
    #: ``--ctl-fd`` are appended).  Empty = ``python -m tcmu_rbd.worker``.
    worker_command: list[str] = field(default_factory=list)
    #: the file these settings came from (None = built-in defaults)
    path: str | None = None

    @property
    def log_level_no(self) -> int:
        return LOG_LEVELS[self.log_level]


_DAEMON_KEYS = {
    "log_level",
    "log_target",
    "dbus",
    "worker_start_timeout",
    "worker_stop_timeout",
    "request_timeout",
    "restart_backoff_max",
    "worker_command",
    "lock_file",
    "metrics_address",
    "luns_per_worker",
}
_RBD_KEYS = {"osd_op_timeout", "lock_grace"}


def parse_log_level(value: str, where: str = "log_level") -> str:
    v = value.strip().lower()
    if v not in LOG_LEVELS:
        raise SettingsError(f"{where}: {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return v


def _positive(value: str, where: str, integer: bool = False, allow_zero: bool = False) -> float:
    try:
        n = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise SettingsError(f"{where}: {value!r} is not {kind} of seconds") from None
    if n < 0 or (n == 0 and not allow_zero) or n != n or n == float("inf"):
        raise SettingsError(f"{where}: {value!r} must be {'>= 0' if allow_zero else '> 0'}")
    return n


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off"):
        return False
    raise SettingsError(f"{where}: {value!r} is not a boolean (yes/no)")


def _check_keys(source: str, section: str, data, known: set[str]) -> None:
    """Reject keys not in *known*: a typo must not silently mean "default"."""
    for key in data:
        if key not in known:
            raise SettingsError(
                f"{source}: [{section}] unknown key {key!r} (known: {', '.join(sorted(known))})"
            )


def resolve_path(cli_path: str | None = None, environ=None) -> tuple[str, bool]:
    """(path, explicit): which file to read and whether it was asked for."""
    environ = os.environ if environ is None else environ
    if cli_path:
        return cli_path, True
    if environ.get(ENV_CONFIG):
        return environ[ENV_CONFIG], True
    return DEFAULT_PATH, False


def loads(text: str, source: str = "<string>") -> Settings:
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        cp.read_string(text, source=source)
    except configparser.Error as e:
        raise SettingsError(f"{source}: {e}") from None
    s = Settings()
    for section in cp.sections():
        if section not in ("daemon", "rbd"):
            raise SettingsError(f"{source}: unknown section [{section}] (known: [daemon], [rbd])")
    if cp.has_section("daemon"):
        sec = cp["daemon"]
        _check_keys(source, "daemon", sec, _DAEMON_KEYS)
        w = lambda k: f"{source}: [daemon] {k}"  # noqa: E731
        if "log_level" in sec:
            s.log_level = parse_log_level(sec["log_level"], w("log_level"))
        if "log_target" in sec:
            s.log_target = parse_log_target(sec["log_target"], w("log_target"))
        if "dbus" in sec:
            s.dbus = _bool(sec["dbus"], w("dbus"))
        for k in ("worker_start_timeout", "worker_stop_timeout", "request_timeout",
                  "restart_backoff_max"):
            if k in sec:
                setattr(s, k, _positive(sec[k], w(k)))
        if "lock_file" in sec:
            v = sec["lock_file"].strip()
            if not v.startswith("/"):
                raise SettingsError(f"{w('lock_file')}: {v!r} must be an absolute path")
            s.lock_file = v
        if "metrics_address" in sec:
            s.metrics_address = parse_metrics_address(sec["metrics_address"], w("metrics_address"))
        if "luns_per_worker" in sec:
            v = sec["luns_per_worker"].strip()
            if not v.isdigit() or not 1 <= int(v) <= MAX_LUNS_PER_WORKER:
                raise SettingsError(f"{w('luns_per_worker')}: {v!r} is not a whole number "
                                    f"from 1 to {MAX_LUNS_PER_WORKER}")
            s.luns_per_worker = int(v)
        if "worker_command" in sec and sec["worker_command"].strip():
            try:
                s.worker_command = shlex.split(sec["worker_command"])
            except ValueError as e:
                raise SettingsError(f"{w('worker_command')}: {e}") from None
    if cp.has_section("rbd"):
        sec = cp["rbd"]
        _check_keys(source, "rbd", sec, _RBD_KEYS)
        if "osd_op_timeout" in sec:
            s.osd_op_timeout = int(
                _positive(sec["osd_op_timeout"], f"{source}: [rbd] osd_op_timeout", integer=True,
                          allow_zero=True)
            )
        if "lock_grace" in sec:
            s.lock_grace = _positive(sec["lock_grace"], f"{source}: [rbd] lock_grace",
                                     allow_zero=True)
    return s


def parse_metrics_address(value: str, where: str = "metrics_address") -> tuple[str, int] | None:
    """``host:port`` (an IPv4 address, ``[IPv6]`` or ``localhost``) -> (host,
    port); ``0``, ``off`` or empty -> None (no metrics)."""
    v = value.strip()
    if v.lower() in ("", "0", "off", "no", "none"):
        return None
    hint = "expected host:port, e.g. 127.0.0.1:9289 or [::1]:9289 (0 serves no metrics)"
    host, sep, port = v.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{where}: {value!r} has no port: {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise SettingsError(f"{where}: {value!r}: brackets are for IPv6 addresses: {hint}")
    elif ":" in host:
        raise SettingsError(f"{where}: {value!r}: an IPv6 address goes in brackets: {hint}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(f"{where}: {value!r}: {host!r} is not an IP address: {hint}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{where}: {value!r}: port {port!r} is not 1-65535: {hint}")
    return host, int(port)


def parse_log_target(value: str, where: str = "log_target") -> str:
    v = value.strip()
    if v.lower() in ("stderr", "syslog"):
        return v.lower()
    if v.startswith("/"):
        return v
    raise SettingsError(f"{where}: {value!r} must be stderr, syslog or an absolute file path")


def load(cli_path: str | None = None, environ=None) -> Settings:
    """Read the settings file (see module doc for which one)."""
    environ = os.environ if environ is None else environ
    path, explicit = resolve_path(cli_path, environ)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if explicit:
            raise SettingsError(f"configuration file {path} does not exist") from None
        s = Settings()
    except OSError as e:
        raise SettingsError(f"cannot read configuration file {path}: {e.strerror}") from None
    else:
        s = loads(text, path)
        s.path = path
    if environ.get(ENV_LOG_LEVEL):
        s.log_level = parse_log_level(environ[ENV_LOG_LEVEL], f"${ENV_LOG_LEVEL}")
    return s
