"""The LUN's copy manager: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS.

EXTENDED COPY copies blocks within this LUN (block -> block segments between
CSCDs that name it by its NAA designator: VMware's clone path, sg_xcopy).
The whole parameter list is checked before anything is copied, in the
kernel's order (target_core_xcopy.c), with SPC-4's sense codes:
  descriptor lists longer than MAX DESCRIPTOR LIST LENGTH    1A/00 (first)
  inline data                                                26/00 at byte 12
  a list shorter than it says                                1A/00
  CSCD list not a whole number of descriptors                26/07
  more CSCDs / segments than OPERATING PARAMETERS say        26/06 / 26/08
  a CSCD type other than E4h (identification)               26/07
  a segment type other than 02h (block -> block)            26/09
  a segment naming a CSCD not in the list or not this LUN,
  or blocks outside the LUN                                  COPY ABORTED 0D/02
RECEIVE COPY RESULTS answers OPERATING PARAMETERS (03h) and COPY STATUS
(00h) of the last copies by LIST IDENTIFIER (usage 00b and 10b; 11b carries
no identifier), which the handler records as a copy starts and ends (a
list rejected here is recorded as failed at once).

Belongs here: both commands' decoding and checks, their parameter data,
the copy manager's limits and `record_copy`.  Not here: the copying itself
(handler.py, through the backend), the command table (cdb.py).
"""

from .fields import BE16, BE32, BE64, done, param_data
from .sense import (
    COPY, COPY_ABORTED, COPY_TARGET_NOT_REACHABLE, GOOD_RESULT, PARAM_LIST_LENGTH_ERROR,
    TOO_MANY_CSCD, TOO_MANY_SEGMENTS, UNSUPPORTED_CSCD_TYPE, UNSUPPORTED_SEGMENT_TYPE,
    WRITE_PROTECTED, check, invalid_cdb, invalid_param,
)

MAX_CSCD = 2
MAX_DESC_LIST_LEN = 1024
CSCD_ID = 0xE4              # identification descriptor CSCD
CSCD_LEN = 32
SEG_B2B = 0x02              # block device to block device segment
SEG_LEN = 28
HEADER_LEN = 16
REMEMBERED_COPIES = 16      # COPY STATUS answers for this many list identifiers

# COPY STATUS: COPY MANAGER STATUS
COPY_IN_PROGRESS = 0x00
COPY_COMPLETED = 0x01
COPY_FAILED = 0x02


def extended_copy(cdb, lun, data_len, data_out):
    """(COPY, [(src, dst, length) bytes, ...], list_id or None, 0): every
    segment in order, zero-length ones too (they count as processed)."""
    if cdb[1] & 0x1F != 0x00:               # only LID1
        return invalid_cdb(1, 4)
    plen = BE32.unpack_from(cdb, 10)[0]
    if plen == 0:
        return GOOD_RESULT
    if lun.read_only:
        return WRITE_PROTECTED
    if plen < HEADER_LEN or data_len < HEADER_LEN:
        return PARAM_LIST_LENGTH_ERROR
    par = param_data(data_out, min(plen, data_len, HEADER_LEN + MAX_DESC_LIST_LEN))
    if len(par) < HEADER_LEN:
        return PARAM_LIST_LENGTH_ERROR
    tdll = BE16.unpack_from(par, 2)[0]
    sdll = BE32.unpack_from(par, 8)[0]
    if tdll + sdll > MAX_DESC_LIST_LEN:
        return PARAM_LIST_LENGTH_ERROR
    usage = (par[1] >> 3) & 0x03
    if usage == 0x01:                       # reserved
        return invalid_param(1, 4)
    if usage == 0x03 and par[0]:            # no list identifier: it must be zero
        return invalid_param(0)
    list_id = None if usage == 0x03 else par[0]
    res = _check_lists(par, tdll, sdll, lun)
    if res[0] == COPY:
        return (COPY, res[1], list_id, 0)
    record_copy(lun, list_id, COPY_FAILED, 0, 0)     # COPY STATUS after a rejected list too
    return res


def _check_lists(par, tdll, sdll, lun):
    """(COPY, segments) for the descriptor lists, or the answer for a bad one."""
    if BE32.unpack_from(par, 12)[0]:        # INLINE DATA LENGTH: we take none
        return invalid_param(12)
    if len(par) < HEADER_LEN + tdll + sdll or tdll == 0:
        return PARAM_LIST_LENGTH_ERROR
    if tdll % CSCD_LEN:
        return UNSUPPORTED_CSCD_TYPE
    if tdll // CSCD_LEN > MAX_CSCD:
        return TOO_MANY_CSCD
    if sdll > lun.max_copy_segments * SEG_LEN:
        return TOO_MANY_SEGMENTS
    ours = _cscds(par, tdll, lun)
    if not isinstance(ours, list):
        return ours
    segs = _segments(par, HEADER_LEN + tdll, sdll, ours, lun)
    if not isinstance(segs, list):
        return segs
    return (COPY, segs)


def _cscds(par, tdll, lun):
    """For each CSCD descriptor: does it name this LUN?  Or the answer for a
    bad one."""
    naa = lun.naa_id()
    ours = []
    for off in range(HEADER_LEN, HEADER_LEN + tdll, CSCD_LEN):
        if par[off] != CSCD_ID:
            return UNSUPPORTED_CSCD_TYPE
        if par[off + 4] & 0x0F != 0x01:      # CODE SET: binary
            return invalid_param(off + 4, 3)
        if par[off + 5] & 0x30:             # ASSOCIATION: logical unit
            return invalid_param(off + 5, 5)
        if par[off + 5] & 0x0F != 0x03:      # DESIGNATOR TYPE: NAA
            return invalid_param(off + 5, 3)
        if par[off + 7] != 16:              # NAA IEEE Registered Extended length
            return invalid_param(off + 7)
        if par[off + 8] >> 4 != 0x6:
            return invalid_param(off + 8, 7)
        match = par[off + 8:off + 24] == naa
        disk_bs = int.from_bytes(par[off + 29:off + 32], "big")
        if match and disk_bs and disk_bs != lun.block_size:
            return check(COPY_ABORTED, 0x0D, 0x03)      # incorrect copy target device type
        ours.append(match)
    return ours


def _segments(par, base, sdll, ours, lun):
    """[(src, dst, length) bytes, ...] of the segment descriptors, or the
    answer for a bad one: all checked before anything is copied."""
    bs = lun.block_size
    end = base + sdll
    segs = []
    for off in range(base, end, SEG_LEN):
        if par[off] != SEG_B2B or off + SEG_LEN > end:     # another type, or another length
            return UNSUPPORTED_SEGMENT_TYPE
        if BE16.unpack_from(par, off + 2)[0] != SEG_LEN - 4:
            return invalid_param(off + 2)
        src_i = BE16.unpack_from(par, off + 4)[0]
        dst_i = BE16.unpack_from(par, off + 6)[0]
        if src_i >= len(ours) or dst_i >= len(ours) or not (ours[src_i] and ours[dst_i]):
            return COPY_TARGET_NOT_REACHABLE
        n = BE16.unpack_from(par, off + 10)[0]
        if n * bs > lun.max_copy_segment_bytes:
            return invalid_param(off + 10)
        src = BE64.unpack_from(par, off + 12)[0]
        dst = BE64.unpack_from(par, off + 20)[0]
        if src + n > lun.num_blocks or dst + n > lun.num_blocks:
            return COPY_TARGET_NOT_REACHABLE
        segs.append((src * bs, dst * bs, n * bs))
    return segs


def record_copy(lun, list_id, status, segments, nbytes):
    """What COPY STATUS answers for list_id from now on (None: nothing to
    record); the oldest of more than REMEMBERED_COPIES is forgotten."""
    if list_id is None:
        return
    results = lun.copy_results
    results.pop(list_id, None)
    results[list_id] = (status, segments, nbytes)
    if len(results) > REMEMBERED_COPIES:
        del results[next(iter(results))]


def receive_copy_results(cdb, lun, data_len, data_out):
    sa = cdb[1] & 0x1F
    alloc = BE32.unpack_from(cdb, 10)[0]
    if sa == 0x03:
        return done(operating_parameters(lun), alloc)
    if sa == 0x00:
        rec = lun.copy_results.get(cdb[2])
        if rec is None:                     # no copy with this LIST IDENTIFIER
            return invalid_cdb(2)
        return done(copy_status(*rec), alloc)
    return invalid_cdb(1, 4)


def operating_parameters(lun):
    b = bytearray(46)
    b[0:4] = BE32.pack(42)                        # AVAILABLE DATA
    b[4] = 0x01                                   # SNLID
    b[8:10] = BE16.pack(MAX_CSCD)
    b[10:12] = BE16.pack(lun.max_copy_segments & 0xFFFF)
    b[12:16] = BE32.pack(MAX_DESC_LIST_LEN)
    b[16:20] = BE32.pack(lun.max_copy_segment_bytes & 0xFFFFFFFF)
    b[34:36] = BE16.pack(1)                       # TOTAL CONCURRENT COPIES
    b[36] = 1                                     # MAXIMUM CONCURRENT COPIES
    gran = lun.block_size.bit_length() - 1
    b[37] = b[38] = b[39] = gran                  # data/inline/held granularity (log2)
    b[43] = 2                                     # implemented descriptor list length
    b[44] = SEG_B2B
    b[45] = CSCD_ID
    return bytes(b)


def copy_status(status, segments, nbytes):
    """COPY STATUS parameter data: AVAILABLE DATA 8, HDD 0 | COPY MANAGER
    STATUS, SEGMENTS PROCESSED, TRANSFER COUNT UNITS 00h (bytes), TRANSFER
    COUNT."""
    return (BE32.pack(8) + bytes((status & 0x7F,)) + BE16.pack(min(segments, 0xFFFF))
            + b"\x00" + BE32.pack(min(nbytes, 0xFFFFFFFF)))
