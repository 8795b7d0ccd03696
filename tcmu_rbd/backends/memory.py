"""A LUN in memory: the engine's ceiling in benchmarks, and a fast test double
that behaves like a thin-provisioned disk (unwritten ranges read as zero and
are reported deallocated).

With ``engine=True`` the C engine starts plain READ/WRITE itself on the same
mapping (native/memory_dev.c: a copy, completed at once), as it does on an rbd
image: the benchmarks' engine ceiling.  Without it (tests that override
read/write to inject faults) every command comes through Python."""

from __future__ import annotations

import errno
import mmap

from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.base import Backend
from tcmu_rbd.ring import EngineBackend


class MemoryBackend(Backend):
    def __init__(self, size: int, granularity: int = 65536, read_only: bool = False,
                 engine: bool = False):
        super().__init__()
        if size <= 0 or size % 512:
            raise ValueError("memory backend size must be a positive multiple of 512, not %r" % size)
        self.name = "memory"
        self.size = size
        self.granularity = granularity
        self.read_only = read_only
        # anonymous mapping: pages appear (zeroed) when first written
        self._map = mmap.mmap(-1, size)
        self._ptr = ffi.cast("uint8_t *", ffi.from_buffer(self._map))
        self._alloc = bytearray((size + granularity - 1) // granularity)
        self._engine = None
        if engine:
            self._dev = ffi.new("struct mem_dev *", {
                "base": self._ptr, "size": size, "alloc": ffi.from_buffer(self._alloc),
                "granularity": granularity, "read_only": int(read_only)})
            self._engine = EngineBackend(lib.mem_dev_engine_ops(), self._dev)

    def fileno(self):
        return None if self._engine is None else self._engine.fileno()

    def poll(self) -> int:
        return 0 if self._engine is None else self._engine.poll(self.on_complete)

    def engine_backend(self):
        return self._engine

    def populate(self) -> None:
        """Fault every page in now (benchmarks: first-touch faults are not I/O cost)."""
        step = 1 << 20
        zeros = bytes(step)
        for off in range(0, self.size, step):
            n = min(step, self.size - off)
            self._map[off:off + n] = zeros[:n]

    def _mark(self, offset, length, value):
        g = self.granularity
        if not length:       # nothing written: nothing allocated (as memory_dev.c)
            return
        if value:
            a, b = offset // g, (offset + length + g - 1) // g
        else:  # only whole granules become deallocated
            a, b = (offset + g - 1) // g, (offset + length) // g
        if b > a:
            self._alloc[a:b] = (b"\x01" if value else b"\x00") * (b - a)

    def _ok(self, offset, length):
        return 0 <= offset and length >= 0 and offset + length <= self.size

    def read(self, tag, iov, cnt, offset, length):
        if not self._ok(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        lib.iov_from_buf(iov, cnt, 0, self._ptr + offset, length)
        self.on_complete(tag, length, 0)

    def write(self, tag, iov, cnt, offset, length, fua=False):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if not self._ok(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        lib.iov_to_buf(iov, cnt, 0, self._ptr + offset, length)
        self._mark(offset, length, 1)
        self.on_complete(tag, length, 0)

    def flush(self, tag):
        self.on_complete(tag, 0, 0)

    def _zero(self, offset, length):
        v = ffi.new("struct iovec *", {"iov_base": self._ptr + offset, "iov_len": length})
        lib.iov_fill(v, 1, 0, 0, length)
        self._mark(offset, length, 0)

    def write_zeroes(self, tag, offset, length):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if not self._ok(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        self._zero(offset, length)
        self.on_complete(tag, 0, 0)

    def write_same(self, tag, offset, length, iov, cnt, pattern_len):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if not self._ok(offset, length) or pattern_len <= 0 or length % pattern_len:
            return self.on_complete(tag, -errno.EINVAL, 0)
        dst = self._ptr + offset
        lib.iov_to_buf(iov, cnt, 0, dst, pattern_len)
        done = pattern_len
        while done < length:   # doubling copies: log2(n) memmoves
            n = min(done, length - done)
            ffi.memmove(dst + done, dst, n)
            done += n
        self._mark(offset, length, 1)
        self.on_complete(tag, length, 0)

    def compare_and_write(self, tag, offset, length, iov, cnt):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if not self._ok(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        diff = lib.iov_compare(iov, cnt, 0, self._ptr + offset, length)
        if diff >= 0:
            return self.on_complete(tag, -errno.EILSEQ, diff)
        lib.iov_to_buf(iov, cnt, length, self._ptr + offset, length)
        self._mark(offset, length, 1)
        self.on_complete(tag, length, 0)

    def allocated(self, tag, offset, length, out):
        if not self._ok(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        n, upto = out.fill(self._allocated(offset, length), offset + length)
        self.on_complete(tag, n, upto)

    def _allocated(self, offset, length):
        g = self.granularity
        end = min(offset + length, self.size)
        out = []
        i = offset // g
        while i * g < end:
            if self._alloc[i]:
                s = max(i * g, offset)
                e = min((i + 1) * g, end)
                if out and out[-1][0] + out[-1][1] == s:
                    out[-1] = (out[-1][0], e - out[-1][0])
                else:
                    out.append((s, e - s))
            i += 1
        return out

    def close(self):
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        self._ptr = None
        try:
            self._map.close()
        except BufferError:
            pass
