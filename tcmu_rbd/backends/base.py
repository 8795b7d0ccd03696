"""The backend interface: asynchronous block I/O on byte offsets.

The handler loop hands a backend the command's data as a C iovec array that
points into the ring's data area (no copies through Python) plus a `tag`.
Each submission produces exactly one completion, delivered by calling
`on_complete(tag, ret, extra)`:
  ret >= 0     success
  ret < 0      -errno (mapped to SCSI status by scsi.io_result)
  extra        for COMPARE AND WRITE / verify miscompares (-EILSEQ): the
               offset of the first differing byte from the start of the op;
               for allocated(): where its list of extents ends
A backend that completes synchronously calls on_complete before submit
returns and has `fileno() is None`; an asynchronous one (rbd) queues
completions and makes `fileno()` readable, and the loop calls `poll()`.
One with an `engine_backend()` is also served by the C engine.
A submission that cannot even be started raises nothing: it completes with
an error like any other.
"""

from __future__ import annotations

import abc

from tcmu_rbd._native import ffi


class Extents:
    """Room for up to `max` (offset, length) extents that a backend's
    allocated() writes: two C arrays (native code fills them directly).
    The caller keeps it alive until that op completes."""

    def __init__(self, max: int):
        self.max = max
        self.offs = ffi.new("uint64_t[]", max)
        self.lens = ffi.new("uint64_t[]", max)

    def items(self, n: int) -> list[tuple[int, int]]:
        """The first n extents (what a completion's ret counted)."""
        offs, lens = self.offs, self.lens
        return [(offs[i], lens[i]) for i in range(n)]

    def fill(self, extents, end: int) -> tuple[int, int]:
        """Store sorted extents (a synchronous backend's lookup of a range
        ending at `end`) as far as they fit: (how many, where the list ends:
        `end`, or the start of the first that found no room)."""
        for n, (off, length) in enumerate(extents):
            if n == self.max:
                return n, off
            self.offs[n], self.lens[n] = off, length
        return len(extents), end


class Backend(abc.ABC):
    size: int = 0              # bytes
    read_only: bool = False
    granularity: int = 4096    # deallocation granularity in bytes (rbd: object size)
    volatile_cache: bool = False   # a cache of its own that loses completed writes
    name: str = ""

    def __init__(self):
        self.on_complete = None   # set by the handler: callable(tag, ret, extra)

    def fileno(self):
        """An fd that becomes readable when completions are pending, or None."""
        return None

    def poll(self) -> int:
        """Deliver pending completions; returns how many."""
        return 0

    def engine_backend(self):
        """None, or a ring.EngineBackend: this backend as the C engine sees
        it (an ops table the engine calls to start plain READ/WRITE itself,
        and the completion queue that puts plain successes straight onto the
        ring).  The handler then tags plain ops (READ, WRITE, FLUSH) with
        ring.FAST_TAG and runs its steady state in C."""
        return None

    @abc.abstractmethod
    def read(self, tag, iov, cnt, offset, length): ...

    @abc.abstractmethod
    def write(self, tag, iov, cnt, offset, length, fua=False): ...

    @abc.abstractmethod
    def flush(self, tag): ...

    @abc.abstractmethod
    def write_zeroes(self, tag, offset, length):
        """The range reads back zero afterwards, exactly, at any offset and
        length; deallocated where the backend can (UNMAP, WRITE SAME with
        UNMAP, FORMAT UNIT)."""

    @abc.abstractmethod
    def write_same(self, tag, offset, length, iov, cnt, pattern_len): ...

    @abc.abstractmethod
    def compare_and_write(self, tag, offset, length, iov, cnt):
        """iov holds `length` bytes to compare, then `length` bytes to write."""

    @abc.abstractmethod
    def allocated(self, tag, offset, length, out: Extents):
        """Look up the allocated extents within [offset, offset+length) into
        `out`, sorted, merged and clipped to the range, as many as fit (GET
        LBA STATUS).  Completes with ret = how many (or -errno) and extra =
        where the list ends: offset+length, or the start of an extent that
        found no room (every one before it is listed).  Where a backend only
        knows coarser units (rbd's object map: whole objects), it reports the
        whole unit: mapped or unknown, never deallocated while mapped."""

    def refresh_size(self) -> int:
        """Re-read the size (after a resize); returns it."""
        return self.size

    def size_now(self) -> int:
        """The size as the backend sees it now, without a refresh (an image
        can shrink under the LUN: I/O past it fails with -ERANGE)."""
        return self.size

    def set_write_cache(self, on: bool) -> None:
        """The LUN's write cache (WCE) as initiators are told it.  A backend
        with a volatile cache of its own makes every write stable before it
        completes while this is off; FUA and FLUSH are always honoured."""

    def close(self) -> None:
        pass
