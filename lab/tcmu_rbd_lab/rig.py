"""Wire the emulated kernel to the real engine, handler and a backend.

Tests and benchmarks use `Rig` to send SCSI commands exactly as LIO would
(through the shared ring and data area) and read back what an initiator
would receive.
"""

from __future__ import annotations

import select
import struct
import time

from tcmu_rbd import scsi
from tcmu_rbd.handler import Handler
from tcmu_rbd_lab.emulator import Emulator, Full


class Rig:
    def __init__(self, backend, block_size: int = 512, emulator: Emulator | None = None,
                 lun: scsi.Lun | None = None, metrics: bool = False, **lun_kw):
        """metrics: the ring records into a metrics.LunRegion (`self.metrics`),
        as the daemon's workers do."""
        self.emu = emulator or Emulator(cmdr_size=1 << 20, data_blocks=8192)
        self.ring = self.emu.ring()
        self.backend = backend
        if lun is None:
            lun_kw.setdefault("serial", "0123456789abcdef")
            lun_kw.setdefault("read_only", backend.read_only)
            lun_kw.setdefault("unmap_granularity", max(1, backend.granularity // block_size))
            lun = scsi.Lun(num_blocks=backend.size // block_size, block_size=block_size, **lun_kw)
        self.lun = lun
        self.handler = Handler(self.ring, backend, lun, name="rig")
        self.metrics = None
        if metrics:
            from tcmu_rbd.metrics import LunRegion
            self.metrics = LunRegion()
            self.ring.set_metrics(self.metrics)

    def pump(self, timeout: float = 30.0, until=None) -> None:
        """Run the handler until `until()` is true (default: nothing in flight)."""
        until = until or (lambda: self.emu.inflight == 0)
        fd = self.backend.fileno()
        deadline = time.monotonic() + timeout
        self.handler.process()
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("commands still in flight after %.0fs" % timeout)
            if fd is not None:
                select.select([fd], [], [], 0.05)
            self.handler.process()

    def submit(self, cdb: bytes, data_out: bytes | None = None, data_in: int = 0, **kw) -> int:
        while True:
            try:
                return self.emu.submit(cdb, data_out=data_out, data_in=data_in, **kw)
            except Full:
                self.pump()
                self.emu.reap()

    def run(self, cdb: bytes, data_out: bytes | None = None, data_in: int = 0, **kw):
        """One command, to completion: its emulator Result."""
        cid = self.submit(cdb, data_out=data_out, data_in=data_in, **kw)
        self.pump(until=lambda: self.emu.is_done(cid))
        self.emu.reap()
        return self.emu.results.pop(cid)

    # CDB builders for the common commands
    @staticmethod
    def read16(lba: int, blocks: int) -> bytes:
        return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)

    @staticmethod
    def write16(lba: int, blocks: int, fua: bool = False) -> bytes:
        return struct.pack(">BBQIBB", 0x8A, 0x08 if fua else 0, lba, blocks, 0, 0)

    def read(self, lba: int, blocks: int):
        return self.run(self.read16(lba, blocks), data_in=blocks * self.lun.block_size)

    def write(self, lba: int, data: bytes):
        return self.run(self.write16(lba, len(data) // self.lun.block_size), data_out=data)

    def close(self) -> None:
        self.handler.close()
        self.emu.close()
        if self.metrics is not None:
            self.metrics.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
