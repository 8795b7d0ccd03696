"""Status bytes, operation kinds, fixed-format sense data and backend-error mapping.

Sense data is always fixed format (SPC-4 4.5.3), 18 bytes:
  byte 0   0x70 (current error), 0xF0 when INFORMATION is valid
  byte 2   sense key
  bytes 3-6  INFORMATION (big-endian)
  byte 7   additional sense length = 0x0A
  bytes 12/13 ASC/ASCQ
  bytes 15-17 sense-key specific: SKSV 0x80, C/D 0x40 (1 = CDB, 0 = parameter
           list), BPV 0x08 + bit pointer (bits 2-0), FIELD POINTER (bytes 16-17)
"""

import errno

# ---- SAM status bytes -------------------------------------------------------
GOOD = 0x00
CHECK_CONDITION = 0x02
CONDITION_MET = 0x04
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28
TASK_ABORTED = 0x40

# ---- operation kinds returned by parse() -------------------------------------
DONE = 0
READ = 1
WRITE = 2
WRITE_VERIFY = 3
VERIFY = 4
FLUSH = 5
UNMAP = 6
WRITE_SAME = 7
WRITE_ZEROES = 8
COMPARE_AND_WRITE = 9
GET_LBA_STATUS = 10
COPY = 11

KIND_NAMES = {
    DONE: "DONE", READ: "READ", WRITE: "WRITE", WRITE_VERIFY: "WRITE_VERIFY",
    VERIFY: "VERIFY", FLUSH: "FLUSH", UNMAP: "UNMAP", WRITE_SAME: "WRITE_SAME",
    WRITE_ZEROES: "WRITE_ZEROES", COMPARE_AND_WRITE: "COMPARE_AND_WRITE",
    GET_LBA_STATUS: "GET_LBA_STATUS", COPY: "COPY",
}

# ---- sense keys ---------------------------------------------------------------
NO_SENSE = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
COPY_ABORTED = 0xA
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

SENSE_LEN = 18


def sense(key, asc, ascq, info=None, field_pointer=None, bit=None, cd=True):
    """Fixed-format sense data (18 bytes).

    info: INFORMATION field (sets VALID) when it fits in 32 bits.
    field_pointer: byte offset of the offending field (sets SKSV); cd says
    whether it points into the CDB (True) or the parameter list (False); bit
    is the most significant bit of the field within that byte (sets BPV).
    """
    b = bytearray(SENSE_LEN)
    b[0] = 0x70
    b[2] = key & 0x0F
    b[7] = 0x0A
    b[12] = asc & 0xFF
    b[13] = ascq & 0xFF
    if info is not None and 0 <= info <= 0xFFFFFFFF:
        b[0] = 0xF0
        b[3:7] = info.to_bytes(4, "big")
    if field_pointer is not None and 0 <= field_pointer <= 0xFFFF:
        b[15] = 0x80 | (0x40 if cd else 0)
        if bit is not None:
            b[15] |= 0x08 | (bit & 0x07)
        b[16:18] = field_pointer.to_bytes(2, "big")
    return bytes(b)


def check(key, asc, ascq, info=None, field_pointer=None, bit=None, cd=True):
    """A complete parse() answer: (DONE, CHECK_CONDITION, sense, None)."""
    return (DONE, CHECK_CONDITION,
            sense(key, asc, ascq, info, field_pointer, bit, cd), None)


# ---- the rejections used everywhere ---------------------------------------------
def invalid_cdb(byte=None, bit=None):
    """ILLEGAL REQUEST / INVALID FIELD IN CDB (24/00) pointing at byte/bit."""
    return check(ILLEGAL_REQUEST, 0x24, 0x00, field_pointer=byte, bit=bit, cd=True)


def invalid_param(byte=None, bit=None):
    """ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST (26/00)."""
    return check(ILLEGAL_REQUEST, 0x26, 0x00, field_pointer=byte, bit=bit, cd=False)


GOOD_RESULT = (DONE, GOOD, None, None)
INVALID_OPCODE = check(ILLEGAL_REQUEST, 0x20, 0x00)
LBA_OUT_OF_RANGE = check(ILLEGAL_REQUEST, 0x21, 0x00)
PARAM_LIST_LENGTH_ERROR = check(ILLEGAL_REQUEST, 0x1A, 0x00)
WRITE_PROTECTED = check(DATA_PROTECT, 0x27, 0x00)
CAPACITY_CHANGED = check(UNIT_ATTENTION, 0x2A, 0x09)
SAVING_NOT_SUPPORTED = check(ILLEGAL_REQUEST, 0x39, 0x00)
INVALID_CDB_NO_POINTER = check(ILLEGAL_REQUEST, 0x24, 0x00)
# a Data-Out length that is not the CDB's: what LIO answers for its own backstores
INVALID_FIELD_IN_IU = check(ILLEGAL_REQUEST, 0x0E, 0x03)
INTERNAL_TARGET_FAILURE = check(HARDWARE_ERROR, 0x44, 0x00)
# EXTENDED COPY
COPY_TARGET_NOT_REACHABLE = check(COPY_ABORTED, 0x0D, 0x02)
TOO_MANY_CSCD = check(ILLEGAL_REQUEST, 0x26, 0x06)
UNSUPPORTED_CSCD_TYPE = check(ILLEGAL_REQUEST, 0x26, 0x07)
TOO_MANY_SEGMENTS = check(ILLEGAL_REQUEST, 0x26, 0x08)
UNSUPPORTED_SEGMENT_TYPE = check(ILLEGAL_REQUEST, 0x26, 0x09)


# ---- backend completion -> status ------------------------------------------------
_BUSY_ERRNOS = frozenset(-e for e in (
    errno.ETIMEDOUT, errno.ESHUTDOWN, errno.EROFS, errno.EAGAIN, errno.EBUSY,
    errno.ENOTCONN))
_MISCOMPARE_KINDS = frozenset((COMPARE_AND_WRITE, VERIFY, WRITE_VERIFY))
_READ_KINDS = frozenset((READ, VERIFY, GET_LBA_STATUS))

_GOOD_STATUS = (GOOD, None)
_BUSY_STATUS = (BUSY, None)
_TSF_STATUS = (TASK_SET_FULL, None)
_READ_ERROR = (CHECK_CONDITION, sense(MEDIUM_ERROR, 0x11, 0x00))
_WRITE_ERROR = (CHECK_CONDITION, sense(MEDIUM_ERROR, 0x0C, 0x00))
_EINVAL = (CHECK_CONDITION, sense(ILLEGAL_REQUEST, 0x24, 0x00))
_ENOSPC = (CHECK_CONDITION, sense(DATA_PROTECT, 0x27, 0x07))
_ERANGE = (CHECK_CONDITION, sense(ILLEGAL_REQUEST, 0x21, 0x00))


def io_result(kind, ret, extra=None):
    """Map a backend completion (ret >= 0 or -errno) to (status, sense_or_None).

    As tcmu-runner's rbd handler: timeouts, blocklisting (-ESHUTDOWN), a lost
    exclusive lock (-EROFS) and transient errors are BUSY so the initiator
    retries (possibly on another path); -EILSEQ from a compare is MISCOMPARE
    with INFORMATION = extra (offset of the first differing byte); -EINVAL is
    INVALID FIELD IN CDB; -ERANGE (past the end of an image that shrank under
    the LUN) is LOGICAL BLOCK ADDRESS OUT OF RANGE; -ENOSPC/-EDQUOT is SPACE ALLOCATION FAILED WRITE
    PROTECT; -ENOMEM is TASK SET FULL; anything else is a MEDIUM ERROR
    (unrecovered read error for read kinds, write error otherwise).
    """
    if ret >= 0:
        return _GOOD_STATUS
    if ret in _BUSY_ERRNOS:
        return _BUSY_STATUS
    if ret == -errno.EILSEQ and kind in _MISCOMPARE_KINDS:
        return (CHECK_CONDITION, sense(MISCOMPARE, 0x1D, 0x00,
                                       info=extra if isinstance(extra, int) else None))
    if ret == -errno.EINVAL:
        return _EINVAL
    if ret == -errno.ERANGE:          # past the backend's end (the image shrank)
        return _ERANGE
    if ret == -errno.ENOSPC or ret == -errno.EDQUOT:
        return _ENOSPC
    if ret == -errno.ENOMEM:
        return _TSF_STATUS
    if kind in _READ_KINDS:
        return _READ_ERROR
    return _WRITE_ERROR
