"""What every command module of the SCSI core reads and answers with.

Belongs here: the big-endian field layouts more than one command family
reads (the 12-byte CDB's LBA and TRANSFER LENGTH, 2/4/8-byte integers),
`param_data` (a command's parameter list from Data-Out) and `done` (GOOD
with data truncated to the allocation length).  Not here: the layouts the
plain READ/WRITE rule reads (fast.py), sense data and the fixed answers
(sense.py), the data pages themselves (pages.py).
"""

import struct

from .sense import DONE, GOOD

LBA_LEN12 = struct.Struct(">II")    # from byte 2: LBA(4), TRANSFER LENGTH(4)
BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")
BE64 = struct.Struct(">Q")


def done(data, alloc_len):
    """GOOD with data, truncated to the CDB's allocation length."""
    return (DONE, GOOD, None, data[:alloc_len])


def param_data(data_out, n):
    """First n bytes of Data-Out as bytes (the handler's callable may return
    any buffer; it may also return fewer bytes)."""
    if n <= 0:
        return b""
    return bytes(data_out(n))[:n]
