"""SBC-3 block commands, decoded and checked: the slow path's READ/WRITE
(6/10/12/16), WRITE AND VERIFY, VERIFY, PRE-FETCH, SYNCHRONIZE CACHE, WRITE
SAME, COMPARE AND WRITE, UNMAP, FORMAT UNIT, READ CAPACITY, SERVICE ACTION
IN(16) (READ CAPACITY(16), GET LBA STATUS), READ DEFECT DATA, START STOP UNIT.

READ, WRITE, WRITE AND VERIFY, VERIFY and COMPARE AND WRITE check in one
order: the CDB's own fields (PROTECT bits, reserved values: 24/00 with a
pointer), CDB-derived limits, write protect (27/00), the LBA range (21/00,
whatever the length), a zero length (GOOD, no I/O), then the Data-In/Out
length the kernel delivered against the CDB's: a READ transfers what fits
(READ_LEN says how much), a command with Data-Out gets 0E/03 as from LIO's
own backstores.  None has a transfer limit: the kernel delivered the data
(and bounds what it maps); MAXIMUM TRANSFER LENGTH only advises.

Belongs here: each command's handler(cdb, lun, data_len, data_out), which
cdb.py's table calls.  Not here: the plain READ/WRITE(10/16) rule (fast.py,
which gives a plain command the answer _rw would), SPC commands
(primary.py), EXTENDED COPY (xcopy.py), the data pages (pages.py).
"""

from . import pages
from .fast import LBA_LEN16
from .fields import BE16, BE32, BE64, done, param_data
from .sense import (
    COMPARE_AND_WRITE, DONE, FLUSH, GET_LBA_STATUS, GOOD, GOOD_RESULT, INVALID_CDB_NO_POINTER,
    INVALID_FIELD_IN_IU, INVALID_OPCODE, LBA_OUT_OF_RANGE, PARAM_LIST_LENGTH_ERROR, READ,
    UNMAP, VERIFY, WRITE, WRITE_PROTECTED, WRITE_SAME, WRITE_ZEROES, invalid_cdb,
    invalid_param,
)


# ---- READ / WRITE / WRITE AND VERIFY / VERIFY / PRE-FETCH ---------------------------
def _rw(lun, data_len, lba, n, kind, flag):
    """READ, WRITE, WRITE AND VERIFY after their CDB fields."""
    if kind != READ and lun.read_only:
        return WRITE_PROTECTED
    if lba + n > lun.num_blocks:
        return LBA_OUT_OF_RANGE
    if n == 0:
        return GOOD_RESULT
    bs = lun.block_size
    length = n * bs
    if length != data_len:
        if kind != READ:
            return INVALID_FIELD_IN_IU
        if data_len == 0:
            return GOOD_RESULT
        # as much as the buffer holds: READ_LEN gives the initiator its
        # underflow residual (an overflow residual TCMU cannot express)
        length = min(length, data_len)
    return (kind, lba * bs, length, flag)


def make_rw6(kind):
    def handler(cdb, lun, data_len, data_out):
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return _rw(lun, data_len, lba, cdb[4] or 256, kind, 0)
    return handler


def make_rw(struct_, kind):
    """READ, WRITE and WRITE AND VERIFY (10/12/16): struct_ reads LBA and
    TRANSFER LENGTH from byte 2."""
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0xE0:                       # RDPROTECT/WRPROTECT: no protection information
            return invalid_cdb(1, 7)
        lba, n = struct_.unpack_from(cdb, 2)
        flag = (b1 >> 3) & 1 if kind == WRITE else 0
        return _rw(lun, data_len, lba, n, kind, flag)
    return handler


def make_verify(struct_):
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0xE0:                       # VRPROTECT
            return invalid_cdb(1, 7)
        bytchk = (b1 >> 1) & 0x03
        if bytchk > 1:                      # 10b reserved, 11b (single block) unsupported
            return invalid_cdb(1, 2)
        if not bytchk and data_len != 0:    # a medium check takes no data
            return invalid_cdb(1, 2)
        lba, n = struct_.unpack_from(cdb, 2)
        if lba + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if n == 0:
            return GOOD_RESULT
        bs = lun.block_size
        if bytchk and n * bs != data_len:
            return INVALID_FIELD_IN_IU
        return (VERIFY, lba * bs, n * bs, bytchk)
    return handler


def make_prefetch(struct_):
    """PRE-FETCH(10/16): nothing to cache, so GOOD (never CONDITION MET) once
    the range is in the LUN; IMMED changes nothing."""
    def handler(cdb, lun, data_len, data_out):
        lba, n = struct_.unpack_from(cdb, 2)
        if lba + max(n, 1) > lun.num_blocks:    # n == 0: from lba to the last LBA
            return LBA_OUT_OF_RANGE
        return GOOD_RESULT
    return handler


def make_sync(struct_):
    def handler(cdb, lun, data_len, data_out):
        lba, n = struct_.unpack_from(cdb, 2)
        if lba + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if lun.read_only:
            return GOOD_RESULT
        return (FLUSH, 0, 0, 0)
    return handler


# ---- WRITE SAME / COMPARE AND WRITE / UNMAP / FORMAT UNIT ----------------------------
def make_write_same(struct_, len_field, sixteen):
    def handler(cdb, lun, data_len, data_out):
        if lun.read_only:
            return WRITE_PROTECTED
        b1 = cdb[1]
        if b1 & 0xE0:                       # WRPROTECT
            return invalid_cdb(1, 7)
        if b1 & 0x10:                       # ANCHOR: no anchored LBAs
            return invalid_cdb(1, 4)
        if b1 & 0x04:                       # PBDATA
            return invalid_cdb(1, 2)
        if b1 & 0x02:                       # LBDATA
            return invalid_cdb(1, 1)
        ndob = sixteen and (b1 & 0x01)
        lba, n = struct_.unpack_from(cdb, 2)
        bs = lun.block_size
        if n == 0 or n > lun.max_write_same_blocks:   # WSNZ=1
            return invalid_cdb(len_field)
        if data_len != (0 if ndob else bs):
            return invalid_cdb(1, 0) if ndob else INVALID_CDB_NO_POINTER
        if lba + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if ndob:
            return (WRITE_ZEROES, lba * bs, n * bs, 0)
        if b1 & 0x08:                       # UNMAP: zero block -> zero (deallocate) the range
            block = param_data(data_out, bs)
            if len(block) < bs:
                return PARAM_LIST_LENGTH_ERROR
            if block.count(0) == bs:
                return (WRITE_ZEROES, lba * bs, n * bs, 0)
        return (WRITE_SAME, lba * bs, n * bs, bs)
    return handler


def compare_and_write(cdb, lun, data_len, data_out):
    if cdb[1] & 0xE0:
        return invalid_cdb(1, 7)
    n = cdb[13]
    if n > pages.MAX_CAW_BLOCKS:
        return invalid_cdb(13)
    if lun.read_only:
        return WRITE_PROTECTED
    lba = BE64.unpack_from(cdb, 2)[0]
    if lba + n > lun.num_blocks:
        return LBA_OUT_OF_RANGE
    if n == 0:
        return GOOD_RESULT
    bs = lun.block_size
    if 2 * n * bs != data_len:              # the blocks to compare, then those to write
        return INVALID_FIELD_IN_IU
    return (COMPARE_AND_WRITE, lba * bs, n * bs, 0)


def unmap(cdb, lun, data_len, data_out):
    if not lun.thin:
        return INVALID_OPCODE
    if lun.read_only:
        return WRITE_PROTECTED
    if cdb[1] & 0x01:                       # ANCHOR
        return invalid_cdb(1, 0)
    plen = BE16.unpack_from(cdb, 7)[0]
    if plen == 0:
        return GOOD_RESULT
    if plen < 8 or data_len < 8:
        return PARAM_LIST_LENGTH_ERROR
    par = param_data(data_out, min(plen, data_len))
    if len(par) < 8:
        return PARAM_LIST_LENGTH_ERROR
    bddl = BE16.unpack_from(par, 2)[0]
    # a descriptor truncated by BLOCK DESCRIPTOR DATA LENGTH or by the list is ignored
    ndesc = min(bddl & ~0xF, len(par) - 8) // 16
    if ndesc > lun.max_unmap_descriptors:
        return invalid_param(2)
    bs = lun.block_size
    end = lun.num_blocks
    total = 0
    out = []
    for i in range(ndesc):
        off = 8 + 16 * i
        lba, n = LBA_LEN16.unpack_from(par, off)
        if lba + n > end:
            return LBA_OUT_OF_RANGE
        total += n
        if total > lun.max_unmap_blocks:
            return invalid_param(off + 8)
        if n:
            out.append((lba * bs, n * bs))
    return (UNMAP, out, 0, 0)


def format_unit(cdb, lun, data_len, data_out):
    if lun.read_only:
        return WRITE_PROTECTED
    b1 = cdb[1]
    if b1 & 0xC0:                           # FMTPINFO: no protection information
        return invalid_cdb(1, 7)
    if b1 & 0x10:                           # FMTDATA: a parameter list header follows
        hlen = 8 if b1 & 0x20 else 4
        if data_len < hlen:
            return PARAM_LIST_LENGTH_ERROR
        par = param_data(data_out, hlen)
        if len(par) < hlen:
            return PARAM_LIST_LENGTH_ERROR
        if par[0] & 0x07:                   # PROTECTION FIELD USAGE
            return invalid_param(0, 2)
        if par[1] & 0x08:                   # IP: initialization patterns unsupported
            return invalid_param(1, 3)
    if lun.num_blocks == 0:
        return GOOD_RESULT
    return (WRITE_ZEROES, 0, lun.num_blocks * lun.block_size, 0)


# ---- capacity, LBA status, defects, power -----------------------------------------------
def read_capacity10(cdb, lun, data_len, data_out):
    return (DONE, GOOD, None, pages.read_capacity10(lun))


def service_action_in16(cdb, lun, data_len, data_out):
    sa = cdb[1] & 0x1F
    alloc = BE32.unpack_from(cdb, 10)[0]
    if sa == 0x10:                          # READ CAPACITY(16)
        return done(pages.read_capacity16(lun), alloc)
    if sa == 0x12:                          # GET LBA STATUS
        lba = BE64.unpack_from(cdb, 2)[0]
        if lba >= lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if alloc == 0:
            return (DONE, GOOD, None, b"")
        if not lun.thin:
            data = pages.lba_status_data(
                lun, lba, [(0, lun.num_blocks * lun.block_size)], alloc)
            return (DONE, GOOD, None, data)
        return (GET_LBA_STATUS, lba * lun.block_size, alloc, 0)
    return invalid_cdb(1, 4)


# An empty defect list is a list supplied (GOOD, not RECOVERED ERROR 1C/0x):
# the header says which lists (PLISTV, GLISTV) in which format, as asked.
def read_defect_data10(cdb, lun, data_len, data_out):
    return done(bytes((0, cdb[2] & 0x1F, 0, 0)), BE16.unpack_from(cdb, 7)[0])


def read_defect_data12(cdb, lun, data_len, data_out):
    # 2-3 GENERATION CODE, 4-7 DEFECT LIST LENGTH: 0
    return done(bytes((0, cdb[1] & 0x1F)) + bytes(6), BE32.unpack_from(cdb, 6)[0])


def start_stop(cdb, lun, data_len, data_out):
    if cdb[4] & 0xF0:                       # POWER CONDITION
        return invalid_cdb(4, 7)
    return GOOD_RESULT
