"""The supervisor's event loop: GLib's main loop behind a small interface.

Belongs here: the loop adapter the supervisor and its worker handles use
(readers on fds, timers, child watches, signals) and :class:`Timer`.

Not here: what runs on the loop (supervisor.py, worker_process.py), and the
worker's loop, which is the handler's own poll loop (handler.py).

Why GLib: dbus-python's only main-loop integration is GLib's, and D-Bus is
served from the same thread as netlink and the workers' sockets.
"""

from __future__ import annotations

import time

from gi.repository import GLib


class Timer:
    """A one-shot timeout; :meth:`cancel` is safe after it fired."""

    def __init__(self, delay: float, cb):
        self.active = True

        def fire():
            self.active = False
            cb()
            return False

        self.id = GLib.timeout_add(max(0, int(delay * 1000)), fire)

    def cancel(self) -> None:
        if self.active:
            self.active = False
            GLib.source_remove(self.id)


class GLibLoop:
    def __init__(self):
        self.ml = GLib.MainLoop()

    def add_reader(self, fd: int, cb) -> int:
        """``cb()`` whenever fd is readable, hung up or in error; returns a
        source id for :meth:`remove`."""
        cond = GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR

        def fire(_fd, _cond):
            cb()
            return True

        return GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, fd, cond, fire)

    def remove(self, source_id: int) -> None:
        GLib.source_remove(source_id)

    def call_later(self, delay: float, cb) -> Timer:
        return Timer(delay, cb)

    def watch_child(self, pid: int, cb) -> None:
        """``cb(wait_status)`` once the child exits (GLib reaps it)."""
        GLib.child_watch_add(GLib.PRIORITY_DEFAULT, pid, lambda _pid, status: cb(status))

    def add_signal(self, signum: int, cb) -> None:
        def fire():
            cb()
            return True

        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, fire)

    def run(self) -> None:
        self.ml.run()

    def stop(self) -> None:
        self.ml.quit()

    def run_until(self, predicate, timeout: float) -> bool:
        """Iterate until predicate() (tests)."""
        ctx = self.ml.get_context()
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            ctx.iteration(False) or time.sleep(0.005)
        return True
