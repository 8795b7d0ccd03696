"""parse(): CDB -> an emulated answer or a backend operation.

Pure: no I/O. parse() never raises on hostile CDBs/parameter data; it returns
either (DONE, status, sense_or_None, data_or_None) or an I/O tuple whose
offsets/lengths (bytes) lie within the LUN.

Belongs here: the command table and every command's decoding and checks (the
slow path).  Not here: the plain READ/WRITE(10/16) rule parse() applies first
(fast.py), sense data and op kinds (sense.py), the data pages (pages.py).
"""

import logging
import struct

from . import fast, pages
from .fast import LBA_LEN10, LBA_LEN16
from .lun import ALUA_ACTIVE_OPTIMIZED, ALUA_STANDBY, ALUA_STATUS_EXPLICIT_STPG
from .sense import (
    CAPACITY_CHANGED, COMPARE_AND_WRITE, COPY, COPY_ABORTED, COPY_TARGET_NOT_REACHABLE,
    DONE, FLUSH, GET_LBA_STATUS, GOOD, GOOD_RESULT, INTERNAL_TARGET_FAILURE,
    INVALID_CDB_NO_POINTER, INVALID_OPCODE, LBA_OUT_OF_RANGE, PARAM_LIST_LENGTH_ERROR,
    READ, SAVING_NOT_SUPPORTED, TOO_MANY_CSCD, TOO_MANY_SEGMENTS, UNMAP,
    UNSUPPORTED_CSCD_TYPE, UNSUPPORTED_SEGMENT_TYPE, VERIFY, WRITE, WRITE_PROTECTED,
    WRITE_SAME, WRITE_VERIFY, WRITE_ZEROES, check, invalid_cdb, invalid_param,
)

log = logging.getLogger(__name__)

_LBA_LEN12 = struct.Struct(">II")   # from byte 2: LBA(4), TRANSFER LENGTH(4)
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

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


def _done(data, alloc_len):
    return (DONE, GOOD, None, data[:alloc_len])


def _param_data(data_out, n):
    """First n bytes of Data-Out as bytes (the handler's callable may return
    any buffer; it may also return fewer bytes)."""
    if n <= 0:
        return b""
    return bytes(data_out(n))[:n]


# ---- READ / WRITE / VERIFY -----------------------------------------------------------
def _rw(lun, data_len, lba, n, len_field, kind, flag):
    if kind != READ and lun.read_only:
        return WRITE_PROTECTED
    bs = lun.block_size
    if n > lun.max_xfer_blocks or n * bs != data_len:
        return invalid_cdb(len_field)
    if lba + n > lun.num_blocks:
        return LBA_OUT_OF_RANGE
    if n == 0:
        return GOOD_RESULT
    return (kind, lba * bs, n * bs, flag)


def _make_rw6(kind):
    def handler(cdb, lun, data_len, data_out):
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        return _rw(lun, data_len, lba, cdb[4] or 256, 4, kind, 0)
    return handler


def _make_rw(struct_, len_field, kind):
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0xE0:                       # RDPROTECT/WRPROTECT: no protection information
            return invalid_cdb(1, 7)
        lba, n = struct_.unpack_from(cdb, 2)
        flag = (b1 >> 3) & 1 if kind == WRITE else 0
        return _rw(lun, data_len, lba, n, len_field, kind, flag)
    return handler


def _make_verify(struct_, len_field):
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0xE0:                       # VRPROTECT
            return invalid_cdb(1, 7)
        bytchk = (b1 >> 1) & 0x03
        if bytchk > 1:                      # 10b reserved, 11b (single block) unsupported
            return invalid_cdb(1, 2)
        lba, n = struct_.unpack_from(cdb, 2)
        bs = lun.block_size
        if bytchk:
            if n > lun.max_xfer_blocks or n * bs != data_len:
                return invalid_cdb(len_field)
        elif data_len != 0:
            return invalid_cdb(1, 2)
        if lba + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if n == 0:
            return GOOD_RESULT
        return (VERIFY, lba * bs, n * bs, bytchk)
    return handler


def _make_sync(struct_):
    def handler(cdb, lun, data_len, data_out):
        lba, n = struct_.unpack_from(cdb, 2)
        if lba + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if lun.read_only:
            return GOOD_RESULT
        return (FLUSH, 0, 0, 0)
    return handler


# ---- WRITE SAME / COMPARE AND WRITE / UNMAP / FORMAT UNIT ----------------------------------
def _make_write_same(struct_, len_field, sixteen):
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
            block = _param_data(data_out, bs)
            if len(block) < bs:
                return PARAM_LIST_LENGTH_ERROR
            if block.count(0) == bs:
                return (WRITE_ZEROES, lba * bs, n * bs, 0)
        return (WRITE_SAME, lba * bs, n * bs, bs)
    return handler


def _compare_and_write(cdb, lun, data_len, data_out):
    if lun.read_only:
        return WRITE_PROTECTED
    if cdb[1] & 0xE0:
        return invalid_cdb(1, 7)
    lba = _BE64.unpack_from(cdb, 2)[0]
    n = cdb[13]
    bs = lun.block_size
    if n > pages.MAX_CAW_BLOCKS or 2 * n * bs != data_len:
        return invalid_cdb(13)
    if lba + n > lun.num_blocks:
        return LBA_OUT_OF_RANGE
    if n == 0:
        return GOOD_RESULT
    return (COMPARE_AND_WRITE, lba * bs, n * bs, 0)


def _unmap(cdb, lun, data_len, data_out):
    if not lun.thin:
        return INVALID_OPCODE
    if lun.read_only:
        return WRITE_PROTECTED
    if cdb[1] & 0x01:                       # ANCHOR
        return invalid_cdb(1, 0)
    plen = _BE16.unpack_from(cdb, 7)[0]
    if plen == 0:
        return GOOD_RESULT
    if plen < 8 or data_len < 8:
        return PARAM_LIST_LENGTH_ERROR
    par = _param_data(data_out, min(plen, data_len))
    if len(par) < 8:
        return PARAM_LIST_LENGTH_ERROR
    bddl = _BE16.unpack_from(par, 2)[0]
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


def _format_unit(cdb, lun, data_len, data_out):
    if lun.read_only:
        return WRITE_PROTECTED
    b1 = cdb[1]
    if b1 & 0xC0:                           # FMTPINFO: no protection information
        return invalid_cdb(1, 7)
    if b1 & 0x10:                           # FMTDATA: a parameter list header follows
        hlen = 8 if b1 & 0x20 else 4
        if data_len < hlen:
            return PARAM_LIST_LENGTH_ERROR
        par = _param_data(data_out, hlen)
        if len(par) < hlen:
            return PARAM_LIST_LENGTH_ERROR
        if par[0] & 0x07:                   # PROTECTION FIELD USAGE
            return invalid_param(0, 2)
        if par[1] & 0x08:                   # IP: initialization patterns unsupported
            return invalid_param(1, 3)
    if lun.num_blocks == 0:
        return GOOD_RESULT
    return (WRITE_ZEROES, 0, lun.num_blocks * lun.block_size, 0)


# ---- emulated commands ---------------------------------------------------------------------
def _good(cdb, lun, data_len, data_out):      # TEST UNIT READY, PREVENT ALLOW MEDIUM REMOVAL
    return GOOD_RESULT


def _request_sense(cdb, lun, data_len, data_out):
    if cdb[1] & 0x01:                       # DESC: descriptor format, NO SENSE
        data = bytes((0x72, 0, 0, 0, 0, 0, 0, 0))
    else:
        data = bytes((0x70, 0, 0, 0, 0, 0, 0, 0x0A)) + bytes(10)
    return _done(data, cdb[4])


def _inquiry(cdb, lun, data_len, data_out):
    b1 = cdb[1]
    if b1 & 0x02:                           # CMDDT (obsolete)
        return invalid_cdb(1, 1)
    alloc = _BE16.unpack_from(cdb, 3)[0]
    page = cdb[2]
    if not b1 & 0x01:
        if page:
            return invalid_cdb(2)
        return _done(pages.std_inquiry(lun), alloc)
    builder = pages.VPD_BUILDERS.get(page)
    if builder is None:
        return invalid_cdb(2)
    return _done(builder(lun), alloc)


def _start_stop(cdb, lun, data_len, data_out):
    if cdb[4] & 0xF0:                       # POWER CONDITION
        return invalid_cdb(4, 7)
    return GOOD_RESULT


def _read_capacity10(cdb, lun, data_len, data_out):
    return (DONE, GOOD, None, pages.read_capacity10(lun))


def _make_mode_sense(ten):
    def handler(cdb, lun, data_len, data_out):
        pc = cdb[2] >> 6
        page = cdb[2] & 0x3F
        sub = cdb[3]
        alloc = _BE16.unpack_from(cdb, 7)[0] if ten else cdb[4]
        if pc == 3:
            return SAVING_NOT_SUPPORTED
        if page == 0x3F:
            if sub not in (0x00, 0xFF):
                return invalid_cdb(3)
            body = b"".join(pages.mode_page(lun, code, pc) for code in sorted(pages.MODE_PAGES))
        elif page in pages.MODE_PAGES:
            if sub not in (0x00, 0xFF):
                return invalid_cdb(3)
            body = pages.mode_page(lun, page, pc)
        else:
            return invalid_cdb(2, 5)
        dev_spec = (0x80 if lun.read_only else 0) | 0x10          # WP, DPOFUA
        if ten:
            hdr = _BE16.pack(len(body) + 6) + bytes((0, dev_spec, 0, 0, 0, 0))
        else:
            hdr = bytes((len(body) + 3, 0, dev_spec, 0))
        return _done(hdr + body, alloc)
    return handler


def _make_mode_select(ten):
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0x01:                           # SP: no savable pages
            return invalid_cdb(1, 0)
        plen = _BE16.unpack_from(cdb, 7)[0] if ten else cdb[4]
        if plen == 0:
            return GOOD_RESULT
        if not b1 & 0x10:                       # PF: only SPC-format pages
            return invalid_cdb(1, 4)
        hlen = 8 if ten else 4
        par = _param_data(data_out, min(plen, data_len))
        if len(par) < hlen:
            return PARAM_LIST_LENGTH_ERROR
        bdlen = _BE16.unpack_from(par, 6)[0] if ten else par[3]
        if bdlen % 8:
            return invalid_param(hlen - 1)
        if hlen + bdlen > len(par):
            return PARAM_LIST_LENGTH_ERROR
        for pos in range(hlen, hlen + bdlen, 8):
            blen = int.from_bytes(par[pos + 5:pos + 8], "big")
            if blen != lun.block_size:
                return invalid_param(pos + 5)
        pos = hlen + bdlen
        n = len(par)
        while pos < n:
            if pos + 2 > n:
                return PARAM_LIST_LENGTH_ERROR
            code = par[pos] & 0x3F
            if par[pos] & 0x40:                 # SPF: we have no subpages
                return invalid_param(pos, 6)
            if code not in pages.MODE_PAGES:
                return invalid_param(pos, 5)
            cur = pages.mode_page(lun, code)
            if par[pos + 1] != cur[1]:
                return invalid_param(pos + 1)
            if pos + len(cur) > n:
                return PARAM_LIST_LENGTH_ERROR
            for i in range(2, len(cur)):        # nothing is changeable: must be identical
                if par[pos + i] != cur[i]:
                    return invalid_param(pos + i)
            pos += len(cur)
        return GOOD_RESULT
    return handler


def _service_action_in16(cdb, lun, data_len, data_out):
    sa = cdb[1] & 0x1F
    alloc = _BE32.unpack_from(cdb, 10)[0]
    if sa == 0x10:                          # READ CAPACITY(16)
        return _done(pages.read_capacity16(lun), alloc)
    if sa == 0x12:                          # GET LBA STATUS
        lba = _BE64.unpack_from(cdb, 2)[0]
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


def _maintenance_in(cdb, lun, data_len, data_out):
    sa = cdb[1] & 0x1F
    alloc = _BE32.unpack_from(cdb, 6)[0]
    if sa == 0x0A and pages.has_alua(lun):  # REPORT TARGET PORT GROUPS
        fmt = cdb[1] >> 5
        if fmt > 1:
            return invalid_cdb(1, 7)
        return _done(pages.rtpg_data(lun, fmt == 1), alloc)
    if sa == 0x0C:                          # REPORT SUPPORTED OPERATION CODES
        opts = cdb[2] & 0x07
        rctd = bool(cdb[2] & 0x80)
        if opts == 0:
            return _done(pages.rsoc_all(lun, rctd), alloc)
        if opts > 3:
            return invalid_cdb(2, 2)
        rop = cdb[3]
        rsa = _BE16.unpack_from(cdb, 4)[0]
        has_sa = rop in pages.SA_OPCODES
        known = any(op == rop for op, _, _ in pages.supported_commands(lun))
        if opts == 1:
            if has_sa:
                return invalid_cdb(2, 2)
            return _done(pages.rsoc_one(lun, rop, None, rctd), alloc)
        if opts == 2:
            if known and not has_sa:
                return invalid_cdb(2, 2)
            return _done(pages.rsoc_one(lun, rop, rsa, rctd), alloc)
        return _done(pages.rsoc_one(lun, rop, rsa if has_sa else None, rctd), alloc)
    return invalid_cdb(1, 4)


def _maintenance_out(cdb, lun, data_len, data_out):
    if not pages.explicit_alua(lun):
        return INVALID_OPCODE
    if cdb[1] & 0x1F != 0x0A:
        return invalid_cdb(1, 4)
    # SET TARGET PORT GROUPS: only the local group may change, to AO or Standby
    plen = _BE32.unpack_from(cdb, 6)[0]
    if plen == 0:
        return GOOD_RESULT
    par = _param_data(data_out, min(plen, data_len))
    if len(par) < 4:
        return PARAM_LIST_LENGTH_ERROR
    local, _ = lun.local_port()
    changes = []
    for off in range(4, len(par) - 3, 4):
        state = par[off] & 0x0F
        gid = _BE16.unpack_from(par, off + 2)[0]
        if gid != local.id:
            return invalid_param(off + 2)
        if state not in (ALUA_ACTIVE_OPTIMIZED, ALUA_STANDBY) or \
                not local.supported & (1 << state):
            return invalid_param(off, 3)
        changes.append(state)
    for state in changes:
        local.state = state
        local.status = ALUA_STATUS_EXPLICIT_STPG
        if state == ALUA_ACTIVE_OPTIMIZED:
            for g in lun.port_groups:
                if g is not local:
                    g.state = ALUA_STANDBY
                    g.status = ALUA_STATUS_EXPLICIT_STPG
    return GOOD_RESULT


# ---- EXTENDED COPY (LID1) -----------------------------------------------------------------------
def _extended_copy(cdb, lun, data_len, data_out):
    if cdb[1] & 0x1F != 0x00:               # only LID1
        return invalid_cdb(1, 4)
    plen = _BE32.unpack_from(cdb, 10)[0]
    if plen == 0:
        return GOOD_RESULT
    if lun.read_only:
        return WRITE_PROTECTED
    if plen < 16 or data_len < 16:
        return PARAM_LIST_LENGTH_ERROR
    par = _param_data(data_out, min(plen, data_len, 16 + pages.XCOPY_MAX_DESC_LIST_LEN))
    if len(par) < 16:
        return PARAM_LIST_LENGTH_ERROR
    usage = (par[1] >> 3) & 0x03
    if usage == 0x01:                       # reserved
        return invalid_param(1, 4)
    if usage == 0x03 and par[0]:            # no list identifier: it must be zero
        return invalid_param(0)
    tdll = _BE16.unpack_from(par, 2)[0]
    sdll = _BE32.unpack_from(par, 8)[0]
    inline = _BE32.unpack_from(par, 12)[0]
    if tdll < 32 or tdll % 32:
        return PARAM_LIST_LENGTH_ERROR
    if tdll // 32 > pages.XCOPY_MAX_CSCD:
        return TOO_MANY_CSCD
    if sdll > lun.max_copy_segments * 28:
        return TOO_MANY_SEGMENTS
    if sdll < 28 or tdll + sdll > pages.XCOPY_MAX_DESC_LIST_LEN or inline:
        return PARAM_LIST_LENGTH_ERROR
    if len(par) < 16 + tdll + sdll:
        return PARAM_LIST_LENGTH_ERROR
    naa = lun.naa_id()
    bs = lun.block_size
    ours = []
    for i in range(tdll // 32):
        off = 16 + 32 * i
        if par[off] != pages.XCOPY_CSCD_ID:
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
        if match and disk_bs and disk_bs != bs:
            return check(COPY_ABORTED, 0x0D, 0x03)      # invalid copy target device type
        ours.append(match)
    ncscd = len(ours)
    segs = []
    base = 16 + tdll
    pos = 0
    while pos < sdll:
        off = base + pos
        if pos + 4 > sdll:
            return PARAM_LIST_LENGTH_ERROR
        if par[off] != pages.XCOPY_SEG_B2B:
            return UNSUPPORTED_SEGMENT_TYPE
        if _BE16.unpack_from(par, off + 2)[0] != 0x18:
            return invalid_param(off + 2)
        if pos + 28 > sdll:
            return PARAM_LIST_LENGTH_ERROR
        src_i = _BE16.unpack_from(par, off + 4)[0]
        dst_i = _BE16.unpack_from(par, off + 6)[0]
        if src_i >= ncscd:
            return invalid_param(off + 4)
        if dst_i >= ncscd:
            return invalid_param(off + 6)
        if not (ours[src_i] and ours[dst_i]):
            return COPY_TARGET_NOT_REACHABLE
        n = _BE16.unpack_from(par, off + 10)[0]
        src = _BE64.unpack_from(par, off + 12)[0]
        dst = _BE64.unpack_from(par, off + 20)[0]
        if n * bs > lun.max_copy_segment_bytes:
            return invalid_param(off + 10)
        if src + n > lun.num_blocks or dst + n > lun.num_blocks:
            return LBA_OUT_OF_RANGE
        if n:
            segs.append((src * bs, dst * bs, n * bs))
        pos += 28
    if not segs:
        return GOOD_RESULT
    return (COPY, segs, 0, 0)


def _receive_copy_results(cdb, lun, data_len, data_out):
    if cdb[1] & 0x1F != 0x03:               # only OPERATING PARAMETERS
        return invalid_cdb(1, 4)
    return _done(pages.copy_operating_parameters(lun), _BE32.unpack_from(cdb, 10)[0])


# ---- dispatch table ---------------------------------------------------------------------------------
_HANDLERS = {
    0x00: _good,
    0x03: _request_sense,
    0x04: _format_unit,
    0x08: _make_rw6(READ),
    0x0A: _make_rw6(WRITE),
    0x12: _inquiry,
    0x15: _make_mode_select(False),
    0x1A: _make_mode_sense(False),
    0x1B: _start_stop,
    0x1E: _good,
    0x25: _read_capacity10,
    0x28: _make_rw(LBA_LEN10, 7, READ),
    0x2A: _make_rw(LBA_LEN10, 7, WRITE),
    0x2E: _make_rw(LBA_LEN10, 7, WRITE_VERIFY),
    0x2F: _make_verify(LBA_LEN10, 7),
    0x35: _make_sync(LBA_LEN10),
    0x41: _make_write_same(LBA_LEN10, 7, False),
    0x42: _unmap,
    0x55: _make_mode_select(True),
    0x5A: _make_mode_sense(True),
    0x83: _extended_copy,
    0x84: _receive_copy_results,
    0x88: _make_rw(LBA_LEN16, 10, READ),
    0x89: _compare_and_write,
    0x8A: _make_rw(LBA_LEN16, 10, WRITE),
    0x8E: _make_rw(LBA_LEN16, 10, WRITE_VERIFY),
    0x8F: _make_verify(LBA_LEN16, 10),
    0x91: _make_sync(LBA_LEN16),
    0x93: _make_write_same(LBA_LEN16, 10, True),
    0x9E: _service_action_in16,
    0xA3: _maintenance_in,
    0xA4: _maintenance_out,
    0xA8: _make_rw(_LBA_LEN12, 6, READ),
    0xAA: _make_rw(_LBA_LEN12, 6, WRITE),
}

_TABLE = [None] * 256
for _op, _fn in _HANDLERS.items():
    _TABLE[_op] = (_cdb_len(_op), _fn)
del _op, _fn

# parse() and the RSOC table must agree on what is supported
assert {op for op, _, _, _ in pages.COMMANDS} == set(_HANDLERS), \
    set(_HANDLERS) ^ {op for op, _, _, _ in pages.COMMANDS}
