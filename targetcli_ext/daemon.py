"""The TCMU daemon as targetcli-rbd sees it: ``org.kernel.TCMUService1`` on the
system D-Bus (tcmu-rbd, or tcmu-runner).

Belongs here: whether the daemon runs, its CheckConfig answer for a dev_config,
and the errors (with the hint how to start it) when it does not run or has no rbd
handler.

Not here: the daemon's side of D-Bus (tcmu_rbd/dbus_service.py), the cluster
(cluster.py), anything in configfs.  ``gi`` is imported on first use, so parsing
and planning load without it.
"""

from __future__ import annotations

from .spec import ExtError

BUS_NAME = "org.kernel.TCMUService1"
HANDLER_PATH = "/org/kernel/TCMUService1/rbd"
HANDLER_IFACE = "org.kernel.TCMUService1"
START_HINT = ("start it with `systemctl start tcmu-rbd` (or run `tcmu-rbd --foreground` "
              "as root), then retry")


class DaemonNotRunning(ExtError):
    def __init__(self, message: str):
        super().__init__(message, "daemon-not-running", exit_status=3)


class Daemon:
    """org.kernel.TCMUService1 on the system bus."""

    def __init__(self, timeout_s: float = 60.0):
        self.timeout_ms = int(timeout_s * 1000)
        self._bus = None

    def _connect(self):
        if self._bus is None:
            from gi.repository import Gio, GLib
            try:
                self._bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
            except GLib.Error as e:
                raise DaemonNotRunning(
                    f"cannot reach the system D-Bus ({e.message}): the TCMU daemon serves "
                    f"user:rbd over it; start dbus, then the daemon: {START_HINT}") from None
        return self._bus

    def running(self) -> bool:
        from gi.repository import GLib
        bus = self._connect()
        try:
            r = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "NameHasOwner",
                              GLib.Variant("(s)", (BUS_NAME,)), GLib.VariantType("(b)"),
                              0, 5000, None)
        except GLib.Error:
            return False
        return bool(r.unpack()[0])

    def require(self) -> None:
        if not self.running():
            raise DaemonNotRunning(
                f"the TCMU daemon is not running (nobody owns {BUS_NAME} on the system "
                f"bus): {START_HINT}")

    def check_config(self, dev_config: str) -> tuple[bool, str]:
        """CheckConfig(dev_config) -> (ok, message), as targetcli calls it."""
        from gi.repository import Gio, GLib
        bus = self._connect()
        try:
            r = bus.call_sync(BUS_NAME, HANDLER_PATH, HANDLER_IFACE, "CheckConfig",
                              GLib.Variant("(s)", (dev_config,)), GLib.VariantType("(bs)"),
                              Gio.DBusCallFlags.NONE, self.timeout_ms, None)
        except GLib.Error as e:
            name = Gio.DBusError.get_remote_error(e) or ""
            if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                        "org.freedesktop.DBus.Error.NameHasNoOwner") \
                    or "ServiceUnknown" in e.message:
                raise DaemonNotRunning(
                    f"the TCMU daemon is not running ({BUS_NAME} is not on the system "
                    f"bus): {START_HINT}") from None
            if name == "org.freedesktop.DBus.Error.UnknownObject" or \
                    "UnknownObject" in e.message or "UnknownMethod" in e.message:
                raise ExtError(f"the daemon owning {BUS_NAME} has no rbd handler "
                               f"({e.message}): is another TCMU daemon (without rbd "
                               f"support) running?", "no-rbd-handler") from None
            raise ExtError(f"CheckConfig over D-Bus failed: {e.message}",
                           "dbus-error") from None
        ok, msg = r.unpack()
        return bool(ok), str(msg)
