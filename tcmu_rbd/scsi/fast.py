"""The plain READ/WRITE(10/16) rule: which commands go straight to the backend.

A READ(10), WRITE(10), READ(16) or WRITE(16) is *plain* when its CDB is long
enough, it asks for no protection information (RDPROTECT/WRPROTECT, byte 1
bits 7-5, are 0), it transfers at least one block, the Data-In/Data-Out
length is exactly its blocks, it is within the LUN's capacity, no
capacity-changed unit attention is pending, and (a WRITE) the LUN is
writable.  No transfer limit: the kernel delivered the data, and it bounds
what it maps (its data area).  Then the answer is (READ, offset, length, 0)
or (WRITE, offset, length, fua), offsets and lengths in bytes; anything else
is for the SCSI core's slow path (cdb.py, block.py), which gives a plain
command the same answer (tests/test_scsi_props.py) and everything else its
proper one.

This module is the rule's only statement in Python.  Its twin in C,
native/scsi_fast.c, lets the engine start plain commands without a Python
call; tests/test_fast_path_props.py feeds both the same CDBs and requires the
same decisions.  Each reason not to be fast is one line on each side, so a
change to the rule is one line here, one line there.

Belongs here: the rule, the layouts of the fields it reads, and
`store_limits` (what of a Lun the C twin reads: struct scsi_fast_limits).
Not here: the answers for anything that is not plain (cdb.py, block.py), the
engine's own reasons to leave a command to Python (a malformed ring entry, a
pending abort: native/engine.c, handler.py).
"""

import struct

from .sense import READ, WRITE

# LBA and TRANSFER LENGTH of a 10- and a 16-byte CDB, from byte 2 (the slow
# path reads the other commands of these sizes with them too)
LBA_LEN10 = struct.Struct(">IxH")    # LBA(4), group, TRANSFER LENGTH(2)
LBA_LEN16 = struct.Struct(">QI")     # LBA(8), TRANSFER LENGTH(4)

# opcode -> (CDB length, LBA and TRANSFER LENGTH from byte 2, kind).  A list,
# not a dict: indexing is the cheapest lookup on the hot path.
_PLAIN = [None] * 256
_PLAIN[0x28] = (10, LBA_LEN10.unpack_from, READ)      # READ(10)
_PLAIN[0x2A] = (10, LBA_LEN10.unpack_from, WRITE)     # WRITE(10)
_PLAIN[0x88] = (16, LBA_LEN16.unpack_from, READ)      # READ(16)
_PLAIN[0x8A] = (16, LBA_LEN16.unpack_from, WRITE)     # WRITE(16)


def or_else(otherwise):
    """parse(cdb, lun, data_len, data_out): the rule's answer for a plain
    command, otherwise(cdb, lun, data_len, data_out) for any other.

    A factory rather than a function parse() calls: the rule is the first
    thing of every command, and a Python call more would cost a quarter of
    parse()'s time on the fast path."""
    plain = _PLAIN

    def parse(cdb, lun, data_len, data_out):
        form = plain[cdb[0]] if cdb else None
        if form is not None:
            need, lba_and_n, kind = form
            if len(cdb) >= need:
                lba, n = lba_and_n(cdb, 2)
                bs = lun.block_size
                if not (cdb[1] & 0xE0                   # RDPROTECT/WRPROTECT: no PI
                        or n == 0                       # nothing to transfer: GOOD without I/O
                        or n * bs != data_len
                        or lba + n > lun.num_blocks
                        or lun.ua_capacity_changed):    # the slow path reports it first
                    if kind == READ:
                        return (READ, lba * bs, data_len, 0)
                    if not lun.read_only:               # else: DATA PROTECT, from the slow path
                        return (WRITE, lba * bs, data_len, (cdb[1] >> 3) & 1)
        return otherwise(cdb, lun, data_len, data_out)

    return parse


_decide = or_else(lambda cdb, lun, data_len, data_out: None)


def decide(cdb, lun, data_len):
    """(READ, offset, length, 0) or (WRITE, offset, length, fua) for a plain
    command; None for any other."""
    return _decide(cdb, lun, data_len, None)


def store_limits(lun, lim):
    """Copy what the C twin reads of lun into lim (a struct scsi_fast_limits)."""
    lim.num_blocks = lun.num_blocks
    lim.block_size = lun.block_size
    lim.read_only = lun.read_only
    lim.ua_pending = lun.ua_capacity_changed
