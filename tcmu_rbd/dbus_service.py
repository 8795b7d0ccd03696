"""``org.kernel.TCMUService1`` on the system bus, as tcmu-runner exposes it.

Objects (exactly what targetcli-fb's ``UIBackstores._user_backstores`` uses):

* ``/org/kernel/TCMUService1`` -- ``org.freedesktop.DBus.ObjectManager``:
  ``GetManagedObjects() -> a{oa{sa{sv}}}`` lists one object per handler,
  here only ``/org/kernel/TCMUService1/rbd`` (targetcli makes
  ``/backstores/user:rbd`` from the last path component).
* ``/org/kernel/TCMUService1/rbd`` -- interface ``org.kernel.TCMUService1``:
  property ``ConfigDesc`` (s, read-only, via ``org.freedesktop.DBus.Properties``
  and in GetManagedObjects) and ``CheckConfig(s) -> (b, s)``.
* ``/org/kernel/TCMUService1/HandlerManager1`` --
  ``org.kernel.TCMUService1.HandlerManager1.RegisterHandler(s, s) -> (b, s)``.
  Not listed by GetManagedObjects (tcmu-runner exports it outside its object
  manager too).  tcmu-rbd serves rbd only, so it always answers false with a
  reason; tcmu-runner's D-Bus handlers cannot serve I/O either (its
  ``dbus_handler_open`` fails), they only add a CheckConfig proxy.

Main loop: dbus-python's only main-loop integration is GLib's, so the whole
supervisor runs one GLib main loop (netlink, worker sockets, timers, signals
and D-Bus in one thread: no locking).  CheckConfig runs the injected validator
in a small thread pool and answers asynchronously so a slow validator (one
that talks to the cluster) never stalls netlink handling; it is bounded by
``check_timeout`` (below the 25 s default timeout of D-Bus clients).

Callers: the bus policy lets any local user call CheckConfig (targetcli run
by anyone lists and checks), so the validator is told the caller's uid (the
bus daemon's word, not the caller's) and decides what such a caller may make
the root daemon do; calls waiting for the pool are bounded, more tightly for
callers that are not root (who have a pool of their own), so a flood is
refused instead of queued and never delays root's checks.

Not here: what makes a config valid (the injected validator: the daemon passes
``tcmu_rbd.validate.check_config``), netlink and devices (the daemon).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Callable
from xml.sax.saxutils import escape

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

from .config import SUBTYPE

log = logging.getLogger("tcmu_rbd.dbus")

BUS_NAME = "org.kernel.TCMUService1"
ROOT_PATH = "/org/kernel/TCMUService1"
HANDLER_IFACE = "org.kernel.TCMUService1"
MANAGER_IFACE = "org.kernel.TCMUService1.HandlerManager1"
MANAGER_PATH = ROOT_PATH + "/HandlerManager1"
OBJMGR_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
INTROSPECT_IFACE = "org.freedesktop.DBus.Introspectable"
PEER_IFACE = "org.freedesktop.DBus.Peer"

CONFIG_DESC = """\
RBD config string (cfgstring) is of the form:
pool[/namespace]/image[@snapshot][;option;option...]
where:
  pool        an existing RBD pool
  namespace   an RBD namespace in that pool (optional)
  image       the RBD image (it must exist; it is not created)
  snapshot    export a snapshot, read-only (optional)
Options:
  osd_op_timeout=N   seconds before an OSD operation fails and the command
                     is answered BUSY (default 30)
  conf=PATH          ceph.conf to use (default /etc/ceph/ceph.conf)
  id=USER            cephx user without "client." (default admin)
  keyring=PATH       keyring of that user (default from ceph.conf)
Example: rbd/disk0;osd_op_timeout=30;id=iscsi"""

Validator = Callable[..., "tuple[bool, str]"]   # (config, *, caller_uid)
#: checks waiting for (or in) the pool, beyond which CheckConfig is refused at once
MAX_WAITING_ROOT = 64
MAX_WAITING_OTHERS = 8

_PEER_XML = f"""  <interface name="{PEER_IFACE}">
    <method name="Ping"/>
    <method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method>
  </interface>
"""
_INTROSPECT_XML = f"""  <interface name="{INTROSPECT_IFACE}">
    <method name="Introspect"><arg name="xml_data" type="s" direction="out"/></method>
  </interface>
"""
_PROPS_XML = f"""  <interface name="{PROPS_IFACE}">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="properties" type="a{{sv}}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{{sv}}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
"""
_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


class _Base(dbus.service.Object):
    """Hand-written introspection (dbus-python's generated XML has no
    properties) plus read-only properties and Peer."""

    #: {interface: {property: (signature, getter)}}
    properties: dict = {}
    #: interface XML of this object (without the standard interfaces)
    iface_xml: str = ""

    def _props(self, interface: str) -> dict:
        if interface not in self.properties:
            return {}
        return {k: get() for k, (sig, get) in self.properties[interface].items()}

    @dbus.service.method(PROPS_IFACE, in_signature="ss", out_signature="v")
    def Get(self, interface, prop):
        props = self._props(interface)
        if prop not in props:
            raise dbus.exceptions.DBusException(
                f"No such property {interface}.{prop}",
                name="org.freedesktop.DBus.Error.UnknownProperty",
            )
        sig = self.properties[interface][prop][0]
        return _typed(sig, props[prop])

    @dbus.service.method(PROPS_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, interface):
        props = self._props(interface)
        return dbus.Dictionary(
            {k: _typed(self.properties[interface][k][0], v) for k, v in props.items()},
            signature="sv",
        )

    @dbus.service.method(PROPS_IFACE, in_signature="ssv", out_signature="")
    def Set(self, interface, prop, value):
        if prop in self._props(interface):
            raise dbus.exceptions.DBusException(
                f"Property {interface}.{prop} is read-only",
                name="org.freedesktop.DBus.Error.PropertyReadOnly",
            )
        raise dbus.exceptions.DBusException(
            f"No such property {interface}.{prop}",
            name="org.freedesktop.DBus.Error.UnknownProperty",
        )

    @dbus.service.signal(PROPS_IFACE, signature="sa{sv}as")
    def PropertiesChanged(self, interface, changed, invalidated):
        pass

    @dbus.service.method(
        INTROSPECT_IFACE, in_signature="", out_signature="s",
        path_keyword="object_path", connection_keyword="connection",
    )
    def Introspect(self, object_path, connection):
        xml = _DOCTYPE + f'<node name="{escape(object_path)}">\n'
        xml += _INTROSPECT_XML + _PEER_XML + _PROPS_XML + self.iface_xml
        for child in connection.list_exported_child_objects(object_path):
            xml += f'  <node name="{escape(child)}"/>\n'
        return xml + "</node>\n"


def _typed(sig: str, value):
    if sig == "s":
        return dbus.String(value, variant_level=1)
    if sig == "b":
        return dbus.Boolean(value, variant_level=1)
    raise ValueError(sig)


class HandlerObject(_Base):
    """``/org/kernel/TCMUService1/rbd``."""

    iface_xml = f"""  <interface name="{HANDLER_IFACE}">
    <method name="CheckConfig">
      <arg name="configstr" type="s" direction="in"/>
      <arg name="is_valid" type="b" direction="out"/>
      <arg name="message" type="s" direction="out"/>
    </method>
    <property name="ConfigDesc" type="s" access="read"/>
  </interface>
"""

    def __init__(self, conn, service: "DBusService"):
        self.service = service
        self.properties = {HANDLER_IFACE: {"ConfigDesc": ("s", lambda: service.config_desc)}}
        super().__init__(conn, f"{ROOT_PATH}/{SUBTYPE}")

    @dbus.service.method(
        HANDLER_IFACE, in_signature="s", out_signature="bs", sender_keyword="sender",
        async_callbacks=("reply", "error")
    )
    def CheckConfig(self, config, sender, reply, error):
        self.service.check_async(str(config), reply, self.service.caller_uid(sender))


class ManagerObject(_Base):
    """``/org/kernel/TCMUService1`` (ObjectManager)."""

    iface_xml = f"""  <interface name="{OBJMGR_IFACE}">
    <method name="GetManagedObjects">
      <arg name="object_paths_interfaces_and_properties" type="a{{oa{{sa{{sv}}}}}}" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg name="object_path" type="o"/>
      <arg name="interfaces_and_properties" type="a{{sa{{sv}}}}"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg name="object_path" type="o"/>
      <arg name="interfaces" type="as"/>
    </signal>
  </interface>
"""

    def __init__(self, conn, service: "DBusService"):
        self.service = service
        super().__init__(conn, ROOT_PATH)

    @dbus.service.method(OBJMGR_IFACE, in_signature="", out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        h = self.service.handler
        return dbus.Dictionary(
            {
                dbus.ObjectPath(h.__dbus_object_path__): dbus.Dictionary(
                    {HANDLER_IFACE: h.GetAll(HANDLER_IFACE)}, signature="sa{sv}"
                )
            },
            signature="oa{sa{sv}}",
        )

    @dbus.service.signal(OBJMGR_IFACE, signature="oa{sa{sv}}")
    def InterfacesAdded(self, path, ifaces):
        pass

    @dbus.service.signal(OBJMGR_IFACE, signature="oas")
    def InterfacesRemoved(self, path, ifaces):
        pass


class HandlerManagerObject(_Base):
    """``/org/kernel/TCMUService1/HandlerManager1``."""

    iface_xml = f"""  <interface name="{MANAGER_IFACE}">
    <method name="RegisterHandler">
      <arg name="subtype" type="s" direction="in"/>
      <arg name="cfgdesc" type="s" direction="in"/>
      <arg name="succeeded" type="b" direction="out"/>
      <arg name="reason" type="s" direction="out"/>
    </method>
  </interface>
"""

    def __init__(self, conn, service):
        super().__init__(conn, MANAGER_PATH)

    @dbus.service.method(MANAGER_IFACE, in_signature="ss", out_signature="bs")
    def RegisterHandler(self, subtype, cfgdesc):
        log.info("refused RegisterHandler for subtype %r", str(subtype))
        if str(subtype) == SUBTYPE:
            return False, f"subtype {SUBTYPE!r} is served by tcmu-rbd itself"
        return (
            False,
            f"tcmu-rbd serves only the {SUBTYPE!r} subtype and does not host "
            f"out-of-process handlers (subtype {str(subtype)!r} refused)",
        )


class NameTaken(RuntimeError):
    """Another process owns org.kernel.TCMUService1."""


class DBusUnavailable(RuntimeError):
    """No system bus (or it refused us)."""


class DBusService:
    """Owns org.kernel.TCMUService1 on the system bus (GLib main loop).

    ``validator(config, caller_uid=uid) -> (ok, message)`` receives the whole
    string targetcli sends, subtype prefix included (``rbd/pool/image;...``),
    and the caller's uid (-1 when the bus cannot tell).
    """

    def __init__(
        self,
        validator: Validator,
        config_desc: str = CONFIG_DESC,
        *,
        check_timeout: float = 20.0,
        reconnect_interval: float = 5.0,
        address: str | None = None,
    ):
        self.validator = validator
        self.config_desc = config_desc
        self.check_timeout = check_timeout
        self.reconnect_interval = reconnect_interval
        self.address = address
        self.bus = None
        self.handler: HandlerObject | None = None
        self._objects: list = []
        # root caller? -> its own pool, so others' calls never delay targetcli's
        self._pools = {True: concurrent.futures.ThreadPoolExecutor(
                           2, thread_name_prefix="checkconfig"),
                       False: concurrent.futures.ThreadPoolExecutor(
                           1, thread_name_prefix="checkconfig-user")}
        self._waiting = {True: 0, False: 0}    # root caller? -> checks its pool has
        self._refused, self._refused_logged = 0, -1e9
        self._reconnect_id = None
        self._closed = False
        dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)

    # -- connection ---------------------------------------------------------

    def _connect(self):
        try:
            if self.address:
                bus = dbus.bus.BusConnection(self.address)
            else:
                bus = dbus.SystemBus(private=True)
        except dbus.exceptions.DBusException as e:
            raise DBusUnavailable(f"cannot connect to the system bus: {e.get_dbus_message()}") from None
        bus.set_exit_on_disconnect(False)
        return bus

    def start(self) -> None:
        """Connect, export the objects and take the name.  Raises
        :class:`NameTaken` (with the owner's pid in the message) or
        :class:`DBusUnavailable`."""
        bus = self._connect()
        try:
            self._export(bus)
            self._own(bus)
        except BaseException:
            self._unexport()
            bus.close()
            raise
        self.bus = bus
        bus.call_on_disconnection(self._on_disconnect)
        log.info("serving %s on the system bus", BUS_NAME)

    def _export(self, bus) -> None:
        self.handler = HandlerObject(bus, self)
        self._objects = [ManagerObject(bus, self), self.handler, HandlerManagerObject(bus, self)]

    def _unexport(self) -> None:
        for o in self._objects:
            try:
                o.remove_from_connection()
            except Exception:
                pass
        self._objects = []

    def _own(self, bus) -> None:
        try:
            r = bus.request_name(BUS_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        except dbus.exceptions.DBusException as e:
            raise DBusUnavailable(
                f"the bus refused {BUS_NAME} to us ({e.get_dbus_message()}): is "
                f"org.kernel.TCMUService1.conf installed in /etc/dbus-1/system.d and are we root?"
            ) from None
        if r in (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER, dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER):
            return
        raise NameTaken(f"{BUS_NAME} is already owned by {describe_owner(bus, BUS_NAME)}")

    def _on_disconnect(self, conn) -> None:
        if self._closed:
            return
        log.error("lost the system bus connection; reconnecting every %.1f s",
                  self.reconnect_interval)
        self._unexport()
        self.bus = None
        if self._reconnect_id is None:
            self._reconnect_id = GLib.timeout_add(int(self.reconnect_interval * 1000),
                                                  self._try_reconnect)

    def retry_in_background(self) -> None:
        """After a failed start(): keep trying (the bus may come up later)."""
        if self._reconnect_id is None and not self._closed:
            self._reconnect_id = GLib.timeout_add(int(self.reconnect_interval * 1000),
                                                  self._try_reconnect)

    def _try_reconnect(self) -> bool:
        if self._closed:
            self._reconnect_id = None
            return False
        try:
            self.start()
        except (DBusUnavailable, NameTaken) as e:
            log.warning("D-Bus reconnect failed: %s", e)
            return True
        self._reconnect_id = None
        return False

    def close(self) -> None:
        self._closed = True
        if self._reconnect_id is not None:
            GLib.source_remove(self._reconnect_id)
            self._reconnect_id = None
        self._unexport()
        if self.bus is not None:
            try:
                self.bus.release_name(BUS_NAME)
            except Exception:
                pass
            self.bus.close()
            self.bus = None
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    # -- CheckConfig --------------------------------------------------------

    def caller_uid(self, sender) -> int:
        """The uid of a bus name's process, as the bus daemon knows it; -1
        (nobody's) when it cannot tell."""
        try:
            return int(self.bus.get_unix_user(sender))
        except Exception:
            return -1

    def check(self, config: str, caller_uid: int = -1) -> tuple[bool, str]:
        """Run the validator synchronously and normalise its answer."""
        try:
            ok, msg = self.validator(config, caller_uid=caller_uid)
        except Exception as e:  # a validator bug must not kill the daemon
            log.exception("CheckConfig validator raised on %r", _short(config))
            return False, f"internal error while checking the config: {e}"
        ok = bool(ok)
        msg = "success" if ok and not msg else str(msg or "invalid config")
        return ok, msg

    def check_async(self, config: str, reply, caller_uid: int = -1) -> None:
        root = caller_uid == 0
        if self._waiting[root] >= (MAX_WAITING_ROOT if root else MAX_WAITING_OTHERS):
            self._note_refusal(root)
            reply(False, "too many CheckConfig calls in progress: try again")
            return
        self._waiting[root] += 1
        done = [False]

        def answer(ok, msg):
            if done[0]:
                return False
            done[0] = True
            if not ok:
                log.log(logging.INFO if root else logging.DEBUG, "CheckConfig refused: %s", msg)
            try:
                reply(ok, msg)
            except Exception:
                log.exception("could not send the CheckConfig reply")
            return False

        def on_timeout():
            answer(False, f"validation did not finish within {self.check_timeout:.0f} s")
            return False

        tid = GLib.timeout_add(int(self.check_timeout * 1000), on_timeout)

        def finished(fut):
            try:
                ok, msg = fut.result()
            except Exception as e:  # cancelled at shutdown
                ok, msg = False, f"internal error: {e}"

            def deliver():
                self._waiting[root] -= 1      # counted until the pool is done with it
                GLib.source_remove(tid) if not done[0] else None
                return answer(ok, msg)

            GLib.idle_add(deliver)

        try:
            self._pools[root].submit(self.check, config, caller_uid).add_done_callback(finished)
        except RuntimeError:  # pool shut down
            self._waiting[root] -= 1
            GLib.source_remove(tid)
            answer(False, "tcmu-rbd is shutting down")


    def _note_refusal(self, root: bool) -> None:
        """One warning per 10 s of a flood, with the count, not one per call."""
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 10:
            log.warning("CheckConfig: %d call(s) refused, too many waiting (%s callers)",
                        self._refused, "root" if root else "non-root")
            self._refused, self._refused_logged = 0, now


def _short(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[:n] + "..."


def describe_owner(bus, name: str) -> str:
    """'pid N (comm)' of a bus name's owner, as far as it can be learned."""
    try:
        dbus_obj = bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
        iface = dbus.Interface(dbus_obj, "org.freedesktop.DBus")
        pid = int(iface.GetConnectionUnixProcessID(name))
    except Exception:
        return "another process"
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return f"pid {pid} ({comm})"
