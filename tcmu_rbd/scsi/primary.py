"""SPC-4 primary commands, decoded and checked: TEST UNIT READY, REQUEST
SENSE, INQUIRY, MODE SENSE/SELECT, MAINTENANCE IN (REPORT TARGET PORT GROUPS,
REPORT SUPPORTED OPERATION CODES) and MAINTENANCE OUT (SET TARGET PORT GROUPS).

Belongs here: each command's handler(cdb, lun, data_len, data_out), which
cdb.py's table calls.  Not here: the block commands (block.py), EXTENDED
COPY and RECEIVE COPY RESULTS (xcopy.py), the data these commands return
(pages.py), the command table (cdb.py).
"""

from . import pages
from .fields import BE16, BE32, done, param_data
from .lun import ALUA_ACTIVE_OPTIMIZED, ALUA_STANDBY, ALUA_STATUS_EXPLICIT_STPG
from .sense import (
    GOOD_RESULT, INVALID_OPCODE, PARAM_LIST_LENGTH_ERROR, SAVING_NOT_SUPPORTED, invalid_cdb,
    invalid_param,
)


def good(cdb, lun, data_len, data_out):      # TEST UNIT READY, PREVENT ALLOW MEDIUM REMOVAL
    return GOOD_RESULT


def request_sense(cdb, lun, data_len, data_out):
    if cdb[1] & 0x01:                       # DESC: descriptor format, NO SENSE
        data = bytes((0x72, 0, 0, 0, 0, 0, 0, 0))
    else:
        data = bytes((0x70, 0, 0, 0, 0, 0, 0, 0x0A)) + bytes(10)
    return done(data, cdb[4])


def inquiry(cdb, lun, data_len, data_out):
    b1 = cdb[1]
    if b1 & 0x02:                           # CMDDT (obsolete)
        return invalid_cdb(1, 1)
    alloc = BE16.unpack_from(cdb, 3)[0]
    page = cdb[2]
    if not b1 & 0x01:
        if page:
            return invalid_cdb(2)
        return done(pages.std_inquiry(lun), alloc)
    builder = pages.VPD_BUILDERS.get(page)
    if builder is None:
        return invalid_cdb(2)
    return done(builder(lun), alloc)


def make_mode_sense(ten):
    def handler(cdb, lun, data_len, data_out):
        pc = cdb[2] >> 6
        page = cdb[2] & 0x3F
        sub = cdb[3]
        alloc = BE16.unpack_from(cdb, 7)[0] if ten else cdb[4]
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
            hdr = BE16.pack(len(body) + 6) + bytes((0, dev_spec, 0, 0, 0, 0))
        else:
            hdr = bytes((len(body) + 3, 0, dev_spec, 0))
        return done(hdr + body, alloc)
    return handler


def make_mode_select(ten):
    def handler(cdb, lun, data_len, data_out):
        b1 = cdb[1]
        if b1 & 0x01:                           # SP: no savable pages
            return invalid_cdb(1, 0)
        plen = BE16.unpack_from(cdb, 7)[0] if ten else cdb[4]
        if plen == 0:
            return GOOD_RESULT
        if not b1 & 0x10:                       # PF: only SPC-format pages
            return invalid_cdb(1, 4)
        hlen = 8 if ten else 4
        par = param_data(data_out, min(plen, data_len))
        if len(par) < hlen:
            return PARAM_LIST_LENGTH_ERROR
        bdlen = BE16.unpack_from(par, 6)[0] if ten else par[3]
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


def maintenance_in(cdb, lun, data_len, data_out):
    sa = cdb[1] & 0x1F
    alloc = BE32.unpack_from(cdb, 6)[0]
    if sa == 0x0A and pages.has_alua(lun):  # REPORT TARGET PORT GROUPS
        fmt = cdb[1] >> 5
        if fmt > 1:
            return invalid_cdb(1, 7)
        return done(pages.rtpg_data(lun, fmt == 1), alloc)
    if sa == 0x0C:                          # REPORT SUPPORTED OPERATION CODES
        opts = cdb[2] & 0x07
        rctd = bool(cdb[2] & 0x80)
        if opts == 0:
            return done(pages.rsoc_all(lun, rctd), alloc)
        if opts > 3:
            return invalid_cdb(2, 2)
        rop = cdb[3]
        rsa = BE16.unpack_from(cdb, 4)[0]
        has_sa = rop in pages.SA_OPCODES
        known = any(op == rop for op, _, _ in pages.supported_commands(lun))
        if opts == 1:
            if has_sa:
                return invalid_cdb(2, 2)
            return done(pages.rsoc_one(lun, rop, None, rctd), alloc)
        if opts == 2:
            if known and not has_sa:
                return invalid_cdb(2, 2)
            return done(pages.rsoc_one(lun, rop, rsa, rctd), alloc)
        return done(pages.rsoc_one(lun, rop, rsa if has_sa else None, rctd), alloc)
    return invalid_cdb(1, 4)


def maintenance_out(cdb, lun, data_len, data_out):
    if not pages.explicit_alua(lun):
        return INVALID_OPCODE
    if cdb[1] & 0x1F != 0x0A:
        return invalid_cdb(1, 4)
    # SET TARGET PORT GROUPS: only the local group may change, to AO or Standby
    plen = BE32.unpack_from(cdb, 6)[0]
    if plen == 0:
        return GOOD_RESULT
    par = param_data(data_out, min(plen, data_len))
    if len(par) < 4:
        return PARAM_LIST_LENGTH_ERROR
    local, _ = lun.local_port()
    changes = []
    for off in range(4, len(par) - 3, 4):
        state = par[off] & 0x0F
        gid = BE16.unpack_from(par, off + 2)[0]
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
