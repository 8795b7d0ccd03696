"""One TCMU device, served by one process.

The daemon (supervisor) starts `python -m tcmu_rbd.worker --uio uioN
--ctl-fd FD` for each device: separate processes let several LUNs use
several cores, and a crash here costs one LUN a restart, not the gateway.

The worker finds everything about its device itself: the uio name
`tcm-user/<hba>/<name>/<dev_config>` in sysfs, and the LUN's attributes in
configfs (core/user_<hba>/<name>).  It opens the image, maps the ring and
reports on the control socket (newline-delimited JSON):
    -> {"event": "ready"} | {"event": "failed", "error": "..."}
    <- {"id": k, "op": "resize", "size": N}       -> {"id": k, "ok": true}
    <- {"id": k, "op": "reconfig", "config": "rbd/..."}
    <- {"id": k, "op": "writecache", "value": 0|1}
    <- {"id": k, "op": "stop"}   (stop taking commands, finish in-flight, exit 0)
    errors: {"id": k, "ok": false, "error": "..."}

A worker never outlives its supervisor (see `follow_supervisor`): when the
supervisor dies (EOF on the control socket, or SIGTERM through
PR_SET_PDEATHSIG) the worker blocks its device (action/block_dev=1, so
commands wait in the kernel), finishes what is in flight, closes the image
(releasing its exclusive lock) and exits, letting go of /dev/uioN for the
next supervisor's restart recovery.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass

from tcmu_rbd import scsi
from tcmu_rbd.settings import ENV_SUPERVISOR_PID
from tcmu_rbd.handler import Handler
from tcmu_rbd.ring import UioRing

log = logging.getLogger("tcmu_rbd.worker")

SYSFS_UIO = "/sys/class/uio"
CONFIGFS_CORE = "/sys/kernel/config/target/core"


@dataclass
class Device:
    uio: str
    hba: int
    name: str
    dev_config: str
    configfs: str

    @property
    def label(self) -> str:
        return "%s(%s)" % (self.name, self.uio)


def read_device(uio: str, sysfs: str = SYSFS_UIO, configfs: str = CONFIGFS_CORE) -> Device:
    with open(os.path.join(sysfs, uio, "name")) as f:
        full = f.read().rstrip("\n")
    parts = full.split("/", 3)
    if len(parts) < 3 or parts[0] != "tcm-user":
        raise ValueError("%s is not a TCMU device (uio name %r)" % (uio, full))
    hba, name = int(parts[1]), parts[2]
    dev_config = parts[3] if len(parts) > 3 else ""
    return Device(uio, hba, name, dev_config, os.path.join(configfs, "user_%d" % hba, name))


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def read_attr(dev: Device, attr: str, default: int) -> int:
    v = _read(os.path.join(dev.configfs, "attrib", attr))
    try:
        return int(v, 0)
    except ValueError:
        return default


def read_serial(dev: Device) -> str:
    # "T10 VPD Unit Serial Number: <serial>"
    v = _read(os.path.join(dev.configfs, "wwn", "vpd_unit_serial"))
    return v.split(":", 1)[1].strip() if ":" in v else v


def read_dev_size(dev: Device) -> int:
    size = read_attr(dev, "dev_size", 0)
    if size:
        return size
    info = _read(os.path.join(dev.configfs, "info")).split()
    if "Size:" in info:
        return int(info[info.index("Size:") + 1])
    return 0


PR_SET_PDEATHSIG = 1


def follow_supervisor(environ=os.environ) -> int | None:
    """Die with the supervisor.

    Why: a SIGKILLed supervisor leaves its workers orphaned, each still holding
    its /dev/uioN (a second open is EBUSY), so the restarted supervisor could
    not recover the device.  PR_SET_PDEATHSIG turns the supervisor's death
    into a SIGTERM here, i.e. the same graceful stop as for the "stop" op
    (finish in-flight, close the image so its exclusive lock is released at
    once rather than after the OSD's watch timeout); SIGKILL would leave the
    lock to time out and the new worker's first write waiting ~30 s for it.
    EOF on the control socket means the same and is the fallback where
    prctl is unavailable.  The new supervisor also looks for workers still
    holding the device and stops them before it resets the ring (daemon.py,
    Supervisor._stop_stale_holders), for a worker stuck in librbd.

    The supervisor's pid comes in $TCMU_RBD_SUPERVISOR_PID: if it is no longer
    our parent, it died before prctl took effect, and we exit at once.
    Returns that pid (None when started by hand)."""
    want = environ.get(ENV_SUPERVISOR_PID)
    if not want:
        return None
    want_pid = int(want)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        log.warning("prctl unavailable (%s): relying on the control socket's EOF", e)
    if os.getppid() != want_pid:
        raise SupervisorGone("the supervisor (pid %d) exited before this worker started" % want_pid)
    return want_pid


class SupervisorGone(RuntimeError):
    pass


def open_backend(dev_config: str, default_osd_op_timeout: float = 30):
    """Parse and open the image a dev_config names; errors carry the
    operator's message."""
    from tcmu_rbd.backends.rbd import open_from_config
    from tcmu_rbd.config import parse_config

    # the daemon's configured default applies where the string names none
    cfg = parse_config(dev_config, defaults={"osd_op_timeout": int(default_osd_op_timeout)})
    return cfg, open_from_config(cfg, default_osd_op_timeout)


class Worker:
    def __init__(self, dev: Device, ctl: socket.socket | None, default_osd_op_timeout: float = 30):
        self.dev = dev
        self.ctl = ctl
        self.default_timeout = default_osd_op_timeout
        self._buf = b""
        self.handler: Handler | None = None
        self.supervisor_pid: int | None = None

    def send(self, msg: dict) -> None:
        if self.ctl is not None:
            self.ctl.sendall(json.dumps(msg).encode() + b"\n")

    def start(self) -> None:
        dev = self.dev
        cfg, backend = open_backend(dev.dev_config, self.default_timeout)
        try:
            block = read_attr(dev, "hw_block_size", 512) or 512
            size = read_dev_size(dev) or backend.size
            if size > backend.size:
                raise ValueError(
                    "LUN size %d is larger than image %s (%d bytes): grow the image "
                    "(rbd resize) or create the LUN with size=%d"
                    % (size, backend.name, backend.size, backend.size))
            lun = scsi.Lun(
                num_blocks=size // block, block_size=block, serial=read_serial(dev),
                max_xfer_blocks=read_attr(dev, "hw_max_sectors", 1024),
                write_cache=bool(read_attr(dev, "emulate_write_cache", 0)),
                read_only=backend.read_only,
                unmap_granularity=max(1, backend.granularity // block))
            ring = UioRing(dev.uio)
        except Exception:
            backend.close()
            raise
        self.handler = Handler(ring, backend, lun, identity=self._refresh_identity, name=dev.label)
        log.info("%s: serving %s, %d blocks of %d bytes%s", dev.label, cfg.display(),
                 lun.num_blocks, block, " (read-only snapshot)" if backend.read_only else "")

    def _refresh_identity(self, lun) -> None:
        serial = read_serial(self.dev)
        if serial and serial != lun.serial:
            lun.serial = serial

    def on_control(self) -> None:
        try:
            data = self.ctl.recv(65536)
        except BlockingIOError:
            return
        if not data:   # supervisor gone: finish in-flight work and stop
            log.warning("%s: control socket closed (supervisor gone), stopping", self.dev.label)
            self.supervisor_lost()
            return
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                req = json.loads(line)
            except ValueError:
                log.error("%s: bad control message %r", self.dev.label, line[:200])
                continue
            self.send(self.request(req))

    def supervisor_lost(self) -> None:
        """Block the device (commands wait in the kernel, as after the
        supervisor's own shutdown) and stop; the next supervisor's restart
        recovery resets the ring and unblocks it."""
        if self.handler is not None and self.handler.stopping:
            return
        try:
            with open(os.path.join(self.dev.configfs, "action", "block_dev"), "w") as f:
                f.write("1\n")
        except OSError as e:
            log.warning("%s: cannot block the device: %s", self.dev.label, e.strerror)
        if self.handler is not None:
            self.handler.stopping = True

    def on_signal(self) -> None:
        """SIGTERM/SIGINT: from the supervisor's PR_SET_PDEATHSIG when it died
        (our parent changed), else an operator's request to stop."""
        if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
            log.warning("%s: the supervisor (pid %d) died, stopping", self.dev.label,
                        self.supervisor_pid)
            self.supervisor_lost()
        else:
            self.handler.stopping = True

    def request(self, req: dict) -> dict:
        rid = req.get("id")
        op = req.get("op")
        h = self.handler
        try:
            if op == "resize":
                size = int(req["size"])
                have = h.backend.refresh_size()
                if size > have:
                    raise ValueError("new LUN size %d is larger than the image (%d bytes): "
                                     "grow the image first (rbd resize)" % (size, have))
                h.lun.resize(size // h.lun.block_size)
                log.info("%s: resized to %d bytes", self.dev.label, size)
            elif op == "reconfig":
                self.reconfig(str(req["config"]))
            elif op == "writecache":
                h.lun.write_cache = bool(int(req["value"]))
            elif op == "stop":
                h.stopping = True
            else:
                raise ValueError("unknown control op %r" % (op,))
        except Exception as e:  # every request gets an answer
            return {"id": rid, "ok": False, "error": str(e)}
        return {"id": rid, "ok": True}

    def reconfig(self, new_config: str) -> None:
        """Reopen on a new dev_config; the old image stays until the new one is open."""
        h = self.handler
        cfg, backend = open_backend(new_config, self.default_timeout)
        if backend.size < h.lun.num_blocks * h.lun.block_size:
            backend.close()
            raise ValueError("image %s is smaller than the LUN" % backend.name)
        h.drain()
        old = h.backend
        h.set_backend(backend)
        h.lun.read_only = backend.read_only
        old.close()
        self.dev.dev_config = new_config
        log.info("%s: reopened on %s", self.dev.label, cfg.display())

    def serve(self) -> None:
        h = self.handler
        if self.ctl is not None:
            self.ctl.setblocking(False)
        h.serve(h.ring.fd, self.ctl.fileno() if self.ctl is not None else None, self.on_control)
        h.close()
        h.ring.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tcmu-rbd-worker", description=__doc__.split("\n")[0])
    ap.add_argument("--uio", required=True, help="uio device, e.g. uio0")
    ap.add_argument("--ctl-fd", type=int, default=None, help="control socket fd from the daemon")
    ap.add_argument("--osd-op-timeout", type=float, default=30)
    ap.add_argument("--log-level", default=os.environ.get("TCMU_RBD_LOG_LEVEL", "INFO"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    ctl = socket.socket(fileno=args.ctl_fd) if args.ctl_fd is not None else None
    try:
        supervisor_pid = follow_supervisor()
    except SupervisorGone as e:
        log.error("%s: %s", args.uio, e)
        return 1
    try:
        dev = read_device(args.uio)
    except (OSError, ValueError) as e:
        msg = "cannot read device %s: %s" % (args.uio, e)
        log.error(msg)
        Worker(None, ctl).send({"event": "failed", "error": msg})
        return 1
    w = Worker(dev, ctl, args.osd_op_timeout)
    w.supervisor_pid = supervisor_pid
    try:
        w.start()
    except Exception as e:
        msg = "%s: %s" % (dev.name, e)
        log.error("%s: cannot serve: %s", dev.label, e)
        w.send({"event": "failed", "error": msg})
        return 1

    def stop(signum, frame):
        w.on_signal()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    w.send({"event": "ready"})
    w.serve()
    log.info("%s: stopped", dev.label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
