"""The backend interface: asynchronous block I/O on byte offsets.

The handler loop hands a backend the command's data as a C iovec array that
points into the ring's data area (no copies through Python) plus a `tag`.
Each submission produces exactly one completion, delivered by calling
`on_complete(tag, ret, extra)`:
  ret >= 0     success
  ret < 0      -errno (mapped to SCSI status by scsi.io_result)
  extra        for COMPARE AND WRITE / verify miscompares (-EILSEQ): the
               offset of the first differing byte from the start of the op
A backend that completes synchronously calls on_complete before submit
returns and has `fileno() is None`; an asynchronous one (rbd) queues
completions and makes `fileno()` readable, and the loop calls `poll()`.
One with an `engine_backend()` is also served by the C engine.
A submission that cannot even be started raises nothing: it completes with
an error like any other.
"""

from __future__ import annotations

import abc


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
    def allocated(self, offset, length) -> list[tuple[int, int]]:
        """Allocated (offset, length) extents within [offset, offset+length),
        sorted and merged.  Synchronous: used by GET LBA STATUS."""

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
