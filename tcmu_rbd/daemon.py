"""``tcmu-rbd``: the daemon's entry point and wiring.

Belongs here: the command line, detaching, the single-instance lock
(tcmu-runner's ``/run/tcmu.lock``) and the tcmu-runner check, and
:func:`run`, which opens D-Bus, the target_core_user module parameters and
netlink, starts the :class:`~tcmu_rbd.supervisor.Supervisor` and the
Prometheus endpoint (metrics.py) and turns
SIGTERM/SIGINT/SIGHUP into its shutdown and a log reopen.

Not here: the per-device state machine and netlink answers (supervisor.py),
worker processes (worker_process.py) and their protocol (control.py, which
also states the worker contract), kernel files (lio.py), logging (logs.py),
the loop (mainloop.py), CheckConfig's validation (validate.py).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys

from . import logs, spawner
from . import netlink as nl
from . import settings as settings_mod
from .lio import Kernel, Roots
from .mainloop import GLibLoop
from .settings import Settings, SettingsError
from .supervisor import Supervisor
from .validate import check_config

log = logging.getLogger("tcmu_rbd.daemon")


# =============================================================================
# Single instance
# =============================================================================


class AlreadyRunning(RuntimeError):
    pass


def take_lock(path: str) -> int:
    """The POSIX record lock tcmu-runner takes (``fcntl(F_SETLK, F_WRLCK)`` on
    the whole file): exclusive against tcmu-runner and other tcmu-rbd.  (A BSD
    ``flock`` would not conflict with tcmu-runner's lock.)"""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = lock_holder(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise AlreadyRunning(
                f"{path} is locked by {holder}: tcmu-runner or another tcmu-rbd already "
                f"serves TCMU on this host (only one daemon per host can)"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(fd: int) -> str:
    try:
        req = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        res = fcntl.fcntl(fd, fcntl.F_GETLK, req)
        pid = struct.unpack("hhqqi4x", res)[4]
    except OSError:
        return "another process"
    if pid <= 0:
        return "another process"
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f"pid {pid} ({f.read().strip()})"
    except OSError:
        return f"pid {pid}"


def find_tcmu_runner(proc: str = "/proc") -> int | None:
    """pid of a running tcmu-runner, if any."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    me = os.getpid()
    for e in entries:
        if not e.isdigit() or int(e) == me:
            continue
        try:
            with open(os.path.join(proc, e, "comm")) as f:
                if f.read().strip() == "tcmu-runner":
                    return int(e)
        except OSError:
            continue
    return None


# =============================================================================
# main
# =============================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="tcmu-rbd", description="TCMU userspace handler serving Ceph RBD images to LIO"
    )
    p.add_argument("--config", metavar="PATH",
                   help=f"settings file (default ${settings_mod.ENV_CONFIG} or "
                        f"{settings_mod.DEFAULT_PATH})")
    p.add_argument("--foreground", action="store_true",
                   help="do not detach (use under systemd)")
    p.add_argument("--no-dbus", action="store_true",
                   help="do not serve org.kernel.TCMUService1 (targetcli will not list user:rbd)")
    p.add_argument("--log-level", metavar="L", help="debug|info|warning|error|critical")
    return p.parse_args(argv)


def daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


def run(
    s: Settings,
    *,
    roots: Roots = Roots(),
    netlink_factory=None,
    dbus_factory=None,
    validator=None,
    loop: GLibLoop | None = None,
    ready_cb=None,
) -> int:
    """The daemon proper (kernel trees under ``roots``, the lock at
    ``s.lock_file``).  Returns the exit status."""
    kernel = Kernel(roots)
    try:
        lock_fd = take_lock(s.lock_file)
    except AlreadyRunning as e:
        log.error("refusing to start: %s", e)
        return 1
    except OSError as e:
        log.error("refusing to start: cannot lock %s: %s", s.lock_file, e.strerror)
        return 1
    try:
        pid = find_tcmu_runner(roots.proc)
        if pid is not None:
            log.error("refusing to start: tcmu-runner (pid %d) is running; only one TCMU "
                      "daemon per host can serve the kernel", pid)
            return 1
        loop = loop or GLibLoop()

        dbus_svc = None
        if s.dbus:
            from . import dbus_service  # python3-dbus is needed only when D-Bus is served

            factory = dbus_factory or (lambda v: dbus_service.DBusService(v))
            dbus_svc = factory(validator or check_config)
            try:
                dbus_svc.start()
            except dbus_service.NameTaken as e:
                log.error("refusing to start: %s", e)
                return 1
            except dbus_service.DBusUnavailable as e:
                log.error("D-Bus unavailable (%s); serving the kernel anyway and retrying "
                          "in the background (until then targetcli does not list user:rbd)", e)
                dbus_svc.retry_in_background()

        if not kernel.module_loaded() and roots.sysfs == Roots().sysfs:
            subprocess.run(["modprobe", "target_core_user"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # As tcmu-runner: fail commands a previous daemon left pending and keep
        # new ones away until we are ready.
        blocked = kernel.modparam("block_netlink", 1)
        if blocked is not None:
            kernel.modparam("reset_netlink", 1)

        def unblock():
            if blocked is not None:
                kernel.modparam("block_netlink", 0)
                log.debug("netlink unblocked")

        try:
            netlink = (netlink_factory or nl.TcmuNetlink.open)()
        except (nl.NetlinkError, OSError) as e:
            unblock()
            log.error("cannot open the TCM-USER netlink channel: %s", e)
            if dbus_svc:
                dbus_svc.close()
            return 1
        if not getattr(netlink, "reply_supported", True):
            log.warning("the kernel does not wait for our replies (no SET_FEATURES support)")
        else:
            log.info("TCM-USER netlink: SET_FEATURES accepted, the kernel waits for our replies")

        # workers forked from a spawner that did their imports: they share them
        if not spawner.enable():
            log.warning("workers start with exec (PR_SET_CHILD_SUBREAPER refused): "
                        "each costs ~17 MB more")
        sup = Supervisor(s, netlink, kernel, loop)
        sup.attach_netlink()
        metrics_server = None
        if s.metrics_address is not None:
            from .metrics import MetricsError, MetricsServer
            try:
                metrics_server = MetricsServer(s.metrics_address, sup)
            except MetricsError as e:
                log.error("serving the kernel without metrics: %s", e)

        def on_term():
            log.info("signal received: stopping")
            unblock()
            sup.shutdown(loop.stop)

        loop.add_signal(signal.SIGTERM, on_term)
        loop.add_signal(signal.SIGINT, on_term)
        loop.add_signal(signal.SIGHUP, logs.reopen)

        def recovered():
            unblock()
            log.info("ready: serving %d device(s)", len(sup.devices))
            if ready_cb:
                ready_cb(sup)

        n = sup.recover_existing(recovered)
        log.info("tcmu-rbd started (pid %d); recovering %d existing device(s)", os.getpid(), n)
        try:
            loop.run()
        finally:
            unblock()
            spawner.disable()
            if metrics_server:
                metrics_server.close()
            if dbus_svc:
                dbus_svc.close()
            try:
                netlink.close()
            except OSError:
                pass
        log.info("exiting")
        return 0
    finally:
        os.close(lock_fd)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        s = settings_mod.load(args.config)
        if args.log_level:
            s.log_level = settings_mod.parse_log_level(args.log_level, "--log-level")
        if args.no_dbus:
            s.dbus = False
    except SettingsError as e:
        print(f"tcmu-rbd: {e}", file=sys.stderr)
        return 2
    if not args.foreground:
        daemonize()
        if s.log_target == "stderr":
            s.log_target = "syslog"
    try:
        logs.setup_logging(s)
    except OSError as e:
        print(f"tcmu-rbd: cannot open log target {s.log_target}: {e}", file=sys.stderr)
        return 2
    return run(s)


if __name__ == "__main__":
    sys.exit(main())
