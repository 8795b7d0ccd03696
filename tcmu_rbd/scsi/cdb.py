"""parse(): CDB -> an emulated answer or a backend operation.

Pure: no I/O. parse() never raises on hostile CDBs/parameter data; it returns
either (DONE, status, sense_or_None, data_or_None) or an I/O tuple whose
offsets/lengths (bytes) lie within the LUN.

Belongs here: the entry point, what comes before any command (a pending
unit attention, an unknown opcode, a CDB too short for its opcode) and the
command table.  Not here: the plain READ/WRITE(10/16) rule parse() applies
first (fast.py), each command's decoding and checks (block.py for SBC-3,
primary.py for SPC-4, xcopy.py for EXTENDED COPY / RECEIVE COPY RESULTS),
sense data and op kinds (sense.py), the data pages (pages.py).
"""

import logging

from . import block, fast, pages, primary, xcopy
from .fast import LBA_LEN10, LBA_LEN16
from .fields import LBA_LEN12
from .sense import (
    CAPACITY_CHANGED, INTERNAL_TARGET_FAILURE, INVALID_CDB_NO_POINTER, INVALID_OPCODE, READ,
    WRITE, WRITE_VERIFY,
)

log = logging.getLogger(__name__)

# commands that neither report nor clear a pending unit attention
_UA_EXEMPT = frozenset((0x12, 0x03, 0xA0))


def _parse_slow(cdb, lun, data_len, data_out):
    """Every command the plain READ/WRITE rule (fast.py) does not answer; for
    a plain one, the same answer as the rule."""
    if not cdb:
        return INVALID_OPCODE
    op = cdb[0]
    if lun.ua_capacity_changed and op not in _UA_EXEMPT:
        lun.ua_capacity_changed = False
        return CAPACITY_CHANGED
    entry = _TABLE[op]
    if entry is None:
        return INVALID_OPCODE
    need, fn = entry
    if len(cdb) < need:
        return INVALID_CDB_NO_POINTER
    try:
        return fn(cdb, lun, data_len, data_out)
    except Exception:   # a bug here must not take the device down
        log.exception("internal error parsing CDB %s", bytes(cdb).hex())
        return INTERNAL_TARGET_FAILURE


# The hot path: plain READ/WRITE(10/16) are answered by the rule in fast.py,
# everything else by the slow path.  parse(cdb, lun, data_len, data_out)
# returns the tuples of the package docstring.
parse = fast.or_else(_parse_slow)


def _cdb_len(op):
    g = op >> 5
    return (6, 10, 10, 0, 16, 12, 0, 0)[g]


# ---- the command table ---------------------------------------------------------------
_HANDLERS = {
    0x00: primary.good,                                 # TEST UNIT READY
    0x03: primary.request_sense,
    0x04: block.format_unit,
    0x08: block.make_rw6(READ),
    0x0A: block.make_rw6(WRITE),
    0x12: primary.inquiry,
    0x15: primary.make_mode_select(False),
    0x1A: primary.make_mode_sense(False),
    0x1B: block.start_stop,
    0x1E: primary.good,                                 # PREVENT ALLOW MEDIUM REMOVAL
    0x25: block.read_capacity10,
    0x28: block.make_rw(LBA_LEN10, READ),
    0x2A: block.make_rw(LBA_LEN10, WRITE),
    0x2E: block.make_rw(LBA_LEN10, WRITE_VERIFY),
    0x2F: block.make_verify(LBA_LEN10),
    0x34: block.make_prefetch(LBA_LEN10),
    0x35: block.make_sync(LBA_LEN10),
    0x37: block.read_defect_data10,
    0x41: block.make_write_same(LBA_LEN10, 7, False),
    0x42: block.unmap,
    0x55: primary.make_mode_select(True),
    0x5A: primary.make_mode_sense(True),
    0x83: xcopy.extended_copy,
    0x84: xcopy.receive_copy_results,
    0x88: block.make_rw(LBA_LEN16, READ),
    0x89: block.compare_and_write,
    0x8A: block.make_rw(LBA_LEN16, WRITE),
    0x8E: block.make_rw(LBA_LEN16, WRITE_VERIFY),
    0x8F: block.make_verify(LBA_LEN16),
    0x90: block.make_prefetch(LBA_LEN16),
    0x91: block.make_sync(LBA_LEN16),
    0x93: block.make_write_same(LBA_LEN16, 10, True),
    0x9E: block.service_action_in16,
    0xA3: primary.maintenance_in,
    0xA4: primary.maintenance_out,
    0xA8: block.make_rw(LBA_LEN12, READ),
    0xAA: block.make_rw(LBA_LEN12, WRITE),
    0xAE: block.make_rw(LBA_LEN12, WRITE_VERIFY),
    0xAF: block.make_verify(LBA_LEN12),
    0xB7: block.read_defect_data12,
}

_TABLE = [None] * 256
for _op, _fn in _HANDLERS.items():
    _TABLE[_op] = (_cdb_len(_op), _fn)
del _op, _fn

# parse() and the RSOC table must agree on what is supported
assert {op for op, _, _, _ in pages.COMMANDS} == set(_HANDLERS), \
    set(_HANDLERS) ^ {op for op, _, _, _ in pages.COMMANDS}
