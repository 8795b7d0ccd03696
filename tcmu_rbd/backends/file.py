"""A LUN in a sparse file: for users without Ceph, and for tests.

I/O goes straight between the file and the ring's data area (preadv/pwritev
on the command's iovecs, in C: native/file_io.c).  UNMAP and WRITE SAME with
UNMAP punch holes, so GET LBA STATUS (SEEK_DATA/SEEK_HOLE) and the file's
used size show them.
Operations complete synchronously: the page cache makes that cheap, and
FLUSH is an fdatasync.
"""

from __future__ import annotations

import errno
import os

from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.base import Backend

CHUNK = 1 << 20


class FileBackend(Backend):
    def __init__(self, path: str, size: int | None = None, read_only: bool = False,
                 create: bool = False):
        super().__init__()
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT
        try:
            self.fd = os.open(path, flags, 0o600)
        except OSError as e:
            raise OSError(e.errno, "cannot open backing file %s: %s" % (path, e.strerror)) from None
        if size is not None and create and os.fstat(self.fd).st_size < size:
            os.ftruncate(self.fd, size)
        self.path = path
        self.name = "file:" + path
        self.read_only = read_only
        self.size = os.fstat(self.fd).st_size
        if size is not None and size > self.size:
            os.close(self.fd)
            raise ValueError("backing file %s has %d bytes, less than the %d asked for"
                             % (path, self.size, size))
        self.granularity = os.fstatvfs(self.fd).f_bsize
        self._buf = ffi.new("uint8_t[]", CHUNK)

    def _bad(self, offset, length):
        return offset < 0 or length < 0 or offset + length > self.size

    def read(self, tag, iov, cnt, offset, length):
        if self._bad(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        n = lib.file_preadv(self.fd, iov, cnt, offset)
        if 0 <= n < length:   # past EOF of a file shorter than the LUN: zeroes
            lib.iov_fill(iov, cnt, n, 0, length - n)
            n = length
        self.on_complete(tag, n, 0)

    def write(self, tag, iov, cnt, offset, length, fua=False):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if self._bad(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        n = lib.file_pwritev(self.fd, iov, cnt, offset)
        if n >= 0 and fua:
            n = self._sync(n)
        self.on_complete(tag, n if n < 0 or n == length else -errno.EIO, 0)

    def _sync(self, ok):
        try:
            os.fdatasync(self.fd)
            return ok
        except OSError as e:
            return -e.errno

    def flush(self, tag):
        self.on_complete(tag, self._sync(0), 0)

    def write_zeroes(self, tag, offset, length):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if self._bad(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        self.on_complete(tag, lib.file_punch_hole(self.fd, offset, length), 0)

    def write_same(self, tag, offset, length, iov, cnt, pattern_len):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if self._bad(offset, length) or pattern_len <= 0 or length % pattern_len or pattern_len > CHUNK:
            return self.on_complete(tag, -errno.EINVAL, 0)
        buf = self._buf
        lib.iov_to_buf(iov, cnt, 0, buf, pattern_len)
        fill = CHUNK - CHUNK % pattern_len
        have = pattern_len
        while have < fill:
            n = min(have, fill - have)
            ffi.memmove(buf + have, buf, n)
            have += n
        done = 0
        while done < length:
            n = min(fill, length - done)
            try:
                os.pwrite(self.fd, ffi.buffer(buf, n), offset + done)
            except OSError as e:
                return self.on_complete(tag, -e.errno, 0)
            done += n
        self.on_complete(tag, length, 0)

    def compare_and_write(self, tag, offset, length, iov, cnt):
        if self.read_only:
            return self.on_complete(tag, -errno.EROFS, 0)
        if self._bad(offset, length) or length > CHUNK:
            return self.on_complete(tag, -errno.EINVAL, 0)
        try:
            cur = os.pread(self.fd, length, offset).ljust(length, b"\0")
        except OSError as e:
            return self.on_complete(tag, -e.errno, 0)
        diff = lib.iov_compare(iov, cnt, 0, cur, length)
        if diff >= 0:
            return self.on_complete(tag, -errno.EILSEQ, diff)
        lib.iov_to_buf(iov, cnt, length, self._buf, length)
        try:
            os.pwrite(self.fd, ffi.buffer(self._buf, length), offset)
        except OSError as e:
            return self.on_complete(tag, -e.errno, 0)
        self.on_complete(tag, length, 0)

    def allocated(self, tag, offset, length, out):
        if self._bad(offset, length):
            return self.on_complete(tag, -errno.EINVAL, 0)
        try:
            extents = self._allocated(offset, length)
        except OSError as e:
            return self.on_complete(tag, -e.errno, 0)
        n, upto = out.fill(extents, offset + length)
        self.on_complete(tag, n, upto)

    def _allocated(self, offset, length):
        end = min(offset + length, self.size)
        out = []
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:   # no data after pos
                    break
                raise
            if data >= end:
                break
            hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), end)
            out.append((data, hole - data))
            pos = hole
        return out

    def refresh_size(self):
        self.size = os.fstat(self.fd).st_size
        return self.size

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
