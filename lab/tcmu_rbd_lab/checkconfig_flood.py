"""N D-Bus CheckConfig calls at once, as any local user may make them; prints
every answer as JSON ([ok, message] pairs, ok null for a D-Bus error).

Run as a script by the user under test (``setpriv ... python3 -c "$(cat this)"``
or ``python3 this``): it imports only dbus-python and GLib, so it runs from
Debian's python3 without the lab installed.

    checkconfig_flood.py BUS_ADDRESS|system CONFIG N
"""

import json
import sys

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib


def main() -> None:
    addr, cfg, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus() if addr == "system" else dbus.bus.BusConnection(addr)
    o = bus.get_object("org.kernel.TCMUService1", "/org/kernel/TCMUService1/rbd",
                       introspect=False)
    loop, got = GLib.MainLoop(), []

    def done(ok, msg):
        got.append((ok, str(msg)))
        if len(got) == n:
            loop.quit()
    for _ in range(n):
        o.CheckConfig(cfg, dbus_interface="org.kernel.TCMUService1", timeout=60,
                      reply_handler=lambda ok, msg: done(bool(ok), msg),
                      error_handler=lambda e: done(None, e))
    GLib.timeout_add(50000, loop.quit)
    loop.run()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
