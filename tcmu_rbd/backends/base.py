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
A submission that cannot even be started raises nothing: it completes with
an error like any other.
"""

from __future__ import annotations

import abc


class Backend(abc.ABC):
    size: int = 0              # bytes
    read_only: bool = False
    granularity: int = 4096    # discard/allocation granularity in bytes (rbd: object size)
    name: str = ""

    def __init__(self):
        self.on_complete = None   # set by the handler: callable(tag, ret, extra)

    def fileno(self):
        """An fd that becomes readable when completions are pending, or None."""
        return None

    def poll(self) -> int:
        """Deliver pending completions; returns how many."""
        return 0

    def attach_ring(self, ring) -> bool:
        """Offer the ring for completing plain successful READ/WRITE/FLUSH
        without a Python call (ops tagged with handler.FAST_TAG).  Returns
        True if this backend does that in poll()."""
        return False

    def fast_taker(self, ring, limits):
        """None, or a callable(events, max) for Ring.take that takes new ring
        entries and starts the plain READ/WRITE among them itself (no Python
        call per command), within limits (a struct tr_fast the handler keeps
        current); it returns only the other events.  Needs attach_ring."""
        return None

    def pump(self, ring, limits, uio_fd: int, control_fd: int | None, timeout: float):
        """None, or a Pump: the handler loop's steady state in C for this
        backend (see RbdBackend.pump).  Needs fast_taker."""
        return None

    @abc.abstractmethod
    def read(self, tag, iov, cnt, offset, length): ...

    @abc.abstractmethod
    def write(self, tag, iov, cnt, offset, length, fua=False): ...

    @abc.abstractmethod
    def flush(self, tag): ...

    @abc.abstractmethod
    def discard(self, tag, offset, length): ...

    @abc.abstractmethod
    def write_zeroes(self, tag, offset, length): ...

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

    def close(self) -> None:
        pass
