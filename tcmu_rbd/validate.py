"""Checking an rbd config against the cluster: D-Bus CheckConfig and targetcli-rbd.

What belongs here: :func:`validate` (connect with the config's conf/id/keyring,
then pool, namespace, image and snapshot exist, the LUN fits, caps suffice; a
bounded time), :func:`check_config` (CheckConfig's ``(ok, message)`` answer), the
:class:`ImageInfo` they report, and turning librados/librbd failures into
:class:`~tcmu_rbd.config.ConfigError` messages that say how to fix them.

What does NOT: the syntax of the config string and its defaults
(:mod:`tcmu_rbd.config`), opening an image for I/O (:mod:`tcmu_rbd.backends.rbd`).

QoS: a qos_* option that the image's or pool's ``rbd config`` overrides is
reported as a warning (it would have no effect).

osd_op_timeout: :func:`validate` applies ``effective_osd_op_timeout()`` with
osd_heartbeat_grace/interval read from the client's ceph config and reports the
result in ``ImageInfo.osd_op_timeout`` and ``ImageInfo.warnings``;
:func:`check_config` appends the warning to its "OK" message.

rados and rbd (python3-rados, python3-rbd) are imported when a check runs, so
parsing and the D-Bus service load without them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import ConfigError, RbdConfig, effective_osd_op_timeout, parse_config

__all__ = ["ImageInfo", "validate", "check_config", "trusted_files"]


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


# ------------------------------------------------------------------------ helpers

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


def trusted_files(cfg: RbdConfig, trusted_uids: tuple[int, ...] | None = None) -> RbdConfig:
    """The config with its conf= and keyring= files resolved, once each is a
    regular file that only root (or this daemon's user) owns and may write,
    in directories only they may change: librados acts on what a conf says
    (admin_socket, log_file, ...) with the daemon's privileges.  The resolved
    paths are what gets opened, so a symlink cannot be swapped after the check.
    Raises ConfigError; the message names the file, never its contents."""
    uids = trusted_uids if trusted_uids is not None else tuple({0, os.geteuid()})
    paths = {}
    for what, path in (("conf", cfg.conf), ("keyring", cfg.keyring)):
        if not path:
            continue
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError as e:
            raise ConfigError(f"{what} file {path}: {e.strerror}", f"{what}-unreadable") from None
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} file {path} is not a regular file", f"{what}-untrusted")
        for node, nst in [(real, st)] + _parents(real):
            writable_by_others = nst.st_mode & 0o022 and not (
                stat.S_ISDIR(nst.st_mode) and nst.st_mode & stat.S_ISVTX)
            if nst.st_uid not in uids or writable_by_others:
                raise ConfigError(
                    f"{what} file {path} is not trusted: {node} is owned by uid "
                    f"{nst.st_uid} with mode {stat.S_IMODE(nst.st_mode):04o}; it must be "
                    f"owned by root and writable by no one else (librados acts on the "
                    f"file with the daemon's privileges)", f"{what}-untrusted")
        paths[what] = real
    return dataclasses.replace(cfg, **paths) if paths else cfg


def _parents(path: str) -> list[tuple[str, os.stat_result]]:
    out = []
    d = os.path.dirname(path)
    while True:
        out.append((d, os.stat(d)))
        up = os.path.dirname(d)
        if up == d:
            return out
        d = up


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


def _qos_shadowed(image, cfg: RbdConfig) -> list[str]:
    """Warnings for the config's qos_* options that the image's or pool's
    settings override (librbd applies those instead)."""
    if not cfg.qos:
        return []
    import rbd

    from .qos import shadowed
    try:
        return shadowed(image.config_list(), dict(cfg.qos))
    except rbd.Error as e:   # a check that cannot run is no reason to refuse the LUN
        return [f"could not read image {cfg.image_spec}'s QoS settings ({e})"]


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
                shadowed = _qos_shadowed(image, cfg)
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
        warnings += shadowed
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
    cfg = trusted_files(cfg)
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
                 connect: bool = True, caller_uid: int | None = None) -> tuple[bool, str]:
    """D-Bus CheckConfig semantics: (True, "OK") or (True, "OK; warning: ...") on
    success, (False, <what is wrong and how to fix it>) on failure. Never raises for
    a bad config. ``connect=False`` only checks the syntax.

    ``caller_uid``: who asked (D-Bus), None for this process.  Only root and this
    daemon's own user get the cluster check: for anyone else it would open their
    conf and keyring with our privileges and its messages would tell them what
    they cannot read.  Their configs are checked for syntax, as tcmu-runner's
    rbd handler does for everyone; the cluster check follows when root enables
    the device."""
    privileged = caller_uid is None or caller_uid in (0, os.geteuid())
    connect = connect and privileged
    try:
        # for others not even whether the files exist: they may not see our paths
        cfg = parse_config(s, defaults=defaults, check_files=privileged)
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
