"""Response data: INQUIRY/VPD, mode pages, READ CAPACITY, RTPG, REPORT SUPPORTED
OPERATION CODES (and the table of supported commands it reports) and GET LBA
STATUS parameter data.

Every builder returns the full (untruncated) response; parse() truncates to the
CDB's allocation length.  Not here: RECEIVE COPY RESULTS data (xcopy.py, with
the copy manager), the commands' checks (block.py, primary.py, xcopy.py).
"""

import struct


_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

VPD_PAGES = (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2)
MAX_CAW_BLOCKS = 1


def _ascii(s, n):
    return s.encode("ascii", "replace")[:n].ljust(n, b" ")


# ---- INQUIRY ------------------------------------------------------------------------
# version descriptors (SPC-4 table 'Version descriptor values'), the codes that
# claim no particular version, as the kernel's own standard INQUIRY does
VD_SAM5 = 0x00A0
VD_ISCSI = 0x0960
VD_SPC4 = 0x0460
VD_SBC3 = 0x04C0
STD_INQUIRY_LEN = 96


def std_inquiry(lun):
    grp, port = lun.local_port()
    b = bytearray(STD_INQUIRY_LEN)
    b[0] = 0x00                  # connected, direct access block device
    b[2] = 0x06                  # SPC-4
    b[3] = 0x02                  # response data format 2
    b[4] = STD_INQUIRY_LEN - 5   # additional length
    b[5] = 0x08                  # 3PC: EXTENDED COPY
    if port is not None:
        b[5] |= grp.tpgs & 0x30
    b[7] = 0x02                  # CmdQue
    b[8:16] = _ascii(lun.vendor, 8)
    b[16:32] = _ascii(lun.product, 16)
    b[32:36] = _ascii(lun.revision, 4)
    b[58:60] = _BE16.pack(VD_SAM5)
    b[60:62] = _BE16.pack(lun.transport_version_descriptor & 0xFFFF)    # 0: not known
    b[62:64] = _BE16.pack(VD_SPC4)
    b[64:66] = _BE16.pack(VD_SBC3)
    return bytes(b)


def vpd_supported(lun):
    return bytes((0, 0x00, 0, len(VPD_PAGES))) + bytes(VPD_PAGES)


def _serial_bytes(lun):
    # the kernel limits vpd_unit_serial to 254 characters
    return lun.serial.encode("ascii", "replace")[:254]


def vpd_serial(lun):
    s = _serial_bytes(lun) + b"\0"      # tcmu-runner counts the terminating NUL
    return bytes((0, 0x80, 0, len(s))) + s


def _name_designator(proto, assoc, text):
    # NUL terminated, NUL padded to a multiple of 4; the length is one byte
    body = text.encode("utf-8", "replace")[:251] + b"\0"
    body += b"\0" * (-len(body) & 3)
    return bytes(((proto & 0xF) << 4 | 0x3, 0x80 | assoc | 0x8, 0, len(body))) + body


def vpd_device_id(lun):
    d = bytearray()
    # T10 vendor identification: vendor + serial (+ NUL as tcmu-runner)
    t10 = _ascii(lun.vendor, 8) + _serial_bytes(lun)[:245] + b"\0"
    d += bytes((0x02, 0x01, 0, len(t10))) + t10
    # NAA IEEE Registered Extended (type 6), LUN association
    d += bytes((0x01, 0x03, 0, 16)) + lun.naa_id()
    # vendor specific: the device's config string
    if lun.config_string:
        cfg = lun.config_string.encode("utf-8", "replace")[:250] + b"\0"
        d += bytes((0x02, 0x00, 0, len(cfg))) + cfg
    grp, port = lun.local_port()
    if port is not None:
        pid = (port.proto_id & 0xF) << 4
        # relative target port identifier, target port association, PIV
        d += bytes((pid | 0x1, 0x94, 0, 4, 0, 0)) + _BE16.pack(port.rel_port_id & 0xFFFF)
        # target port group
        d += bytes((pid | 0x1, 0x95, 0, 4, 0, 0)) + _BE16.pack(grp.id & 0xFFFF)
        if port.wwn:
            d += _name_designator(port.proto_id, 0x10,
                                  "%s,t,0x%04x" % (port.wwn, port.tpgt & 0xFFFF))
            d += _name_designator(port.proto_id, 0x20, port.wwn)
    return bytes((0, 0x83)) + _BE16.pack(len(d)) + bytes(d)


def vpd_block_limits(lun):
    b = bytearray(64)
    b[1] = 0xB0
    b[2:4] = _BE16.pack(0x3C)
    b[4] = 0x01                                  # WSNZ
    b[5] = MAX_CAW_BLOCKS
    b[8:12] = _BE32.pack(lun.max_xfer_blocks & 0xFFFFFFFF)    # MAXIMUM TRANSFER LENGTH
    b[12:16] = _BE32.pack(lun.max_xfer_blocks & 0xFFFFFFFF)   # OPTIMAL TRANSFER LENGTH
    if lun.thin:
        b[20:24] = _BE32.pack(lun.max_unmap_blocks & 0xFFFFFFFF)
        b[24:28] = _BE32.pack(lun.max_unmap_descriptors & 0xFFFFFFFF)
        b[28:32] = _BE32.pack(lun.unmap_granularity & 0xFFFFFFFF)
        b[32:36] = _BE32.pack(0x80000000)        # UGAVALID, alignment 0
    b[36:44] = _BE64.pack(lun.max_write_same_blocks)
    return bytes(b)


def vpd_block_characteristics(lun):
    b = bytearray(64)
    b[1] = 0xB1
    b[2:4] = _BE16.pack(0x3C)
    if lun.solid_state:
        b[4:6] = _BE16.pack(1)                   # non-rotating medium
    return bytes(b)


def vpd_lbp(lun):
    b = bytearray(8)
    b[1] = 0xB2
    b[3] = 4
    if lun.thin:
        b[5] = 0x80 | 0x40 | 0x20 | 0x04         # LBPU LBPWS LBPWS10, LBPRZ=001b
        b[6] = 0x02                              # provisioning type: thin
    return bytes(b)


VPD_BUILDERS = {
    0x00: vpd_supported, 0x80: vpd_serial, 0x83: vpd_device_id,
    0xB0: vpd_block_limits, 0xB1: vpd_block_characteristics, 0xB2: vpd_lbp,
}


# ---- READ CAPACITY -------------------------------------------------------------------
def read_capacity10(lun):
    last = max(lun.num_blocks - 1, 0)
    if last > 0xFFFFFFFF:
        last = 0xFFFFFFFF
    return _BE32.pack(last) + _BE32.pack(lun.block_size)


def read_capacity16(lun):
    b = bytearray(32)
    b[0:8] = _BE64.pack(max(lun.num_blocks - 1, 0) & 0xFFFFFFFFFFFFFFFF)
    b[8:12] = _BE32.pack(lun.block_size)
    if lun.thin:
        b[14] = 0x80 | 0x40                      # LBPME, LBPRZ
    return bytes(b)


# ---- mode pages (current values) --------------------------------------------------------
def mode_page_rw_recovery(lun):
    return bytes((0x01, 0x0A)) + bytes(10)


def mode_page_caching(lun):
    b = bytearray(20)
    b[0], b[1] = 0x08, 0x12
    if lun.write_cache:
        b[2] = 0x04                              # WCE
    return bytes(b)


def mode_page_control(lun):
    b = bytearray(12)
    b[0], b[1] = 0x0A, 0x0A
    b[2] = 0x02                                  # GLTSD
    b[5] = 0x40                                  # TAS
    b[8], b[9] = 0xFF, 0xFF                      # busy timeout: unlimited
    return bytes(b)


MODE_PAGES = {0x01: mode_page_rw_recovery, 0x08: mode_page_caching, 0x0A: mode_page_control}


def mode_page(lun, code, pc=0):
    """One mode page; pc 1 (changeable) gives the mask: nothing is changeable."""
    page = MODE_PAGES[code](lun)
    if pc == 1:
        return page[:2] + bytes(len(page) - 2)
    return page


# ---- ALUA ---------------------------------------------------------------------------------
def rtpg_data(lun, extended):
    body = bytearray()
    for g in lun.port_groups:
        body += bytes(((0x80 if g.preferred else 0) | (g.state & 0x0F),
                       g.supported & 0xFF)) + _BE16.pack(g.id & 0xFFFF)
        body += bytes((0, g.status & 0xFF, 0, len(g.ports) & 0xFF))
        for p in g.ports[:255]:
            body += bytes((0, 0)) + _BE16.pack(p.rel_port_id & 0xFFFF)
    if extended:
        trans = lun.port_groups[0].implicit_trans_secs if lun.port_groups else 0
        hdr = _BE32.pack(len(body)) + bytes((0x10, min(trans, 255) & 0xFF, 0, 0))
    else:
        hdr = _BE32.pack(len(body))
    return hdr + bytes(body)


def has_alua(lun):
    return lun.local_port()[1] is not None


def explicit_alua(lun):
    grp, port = lun.local_port()
    return port is not None and bool(grp.tpgs & 0x20)


# ---- REPORT SUPPORTED OPERATION CODES ----------------------------------------------------------
_F = 0xFF


def _m(*b):
    return bytes(b)


# (opcode, service action or None, usage data / CDB mask, supported(lun) or None)
COMMANDS = [
    (0x00, None, _m(0x00, 0, 0, 0, 0, 0), None),                       # TEST UNIT READY
    (0x03, None, _m(0x03, 0x01, 0, 0, _F, 0), None),                   # REQUEST SENSE
    (0x04, None, _m(0x04, 0x3F, 0, 0, 0, 0), None),                    # FORMAT UNIT
    (0x08, None, _m(0x08, 0x1F, _F, _F, _F, 0), None),                 # READ(6)
    (0x0A, None, _m(0x0A, 0x1F, _F, _F, _F, 0), None),                 # WRITE(6)
    (0x12, None, _m(0x12, 0x01, _F, _F, _F, 0), None),                 # INQUIRY
    (0x15, None, _m(0x15, 0x10, 0, 0, _F, 0), None),                   # MODE SELECT(6)
    (0x1A, None, _m(0x1A, 0x08, _F, _F, _F, 0), None),                 # MODE SENSE(6)
    (0x1B, None, _m(0x1B, 0x01, 0, 0, 0x03, 0), None),                 # START STOP UNIT
    (0x1E, None, _m(0x1E, 0, 0, 0, 0x03, 0), None),                    # PREVENT ALLOW MEDIUM REMOVAL
    (0x25, None, _m(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0), None),           # READ CAPACITY(10)
    (0x28, None, _m(0x28, 0x18, _F, _F, _F, _F, 0, _F, _F, 0), None),  # READ(10)
    (0x2A, None, _m(0x2A, 0x18, _F, _F, _F, _F, 0, _F, _F, 0), None),  # WRITE(10)
    (0x2E, None, _m(0x2E, 0x12, _F, _F, _F, _F, 0, _F, _F, 0), None),  # WRITE AND VERIFY(10)
    (0x2F, None, _m(0x2F, 0x16, _F, _F, _F, _F, 0, _F, _F, 0), None),  # VERIFY(10)
    (0x34, None, _m(0x34, 0x02, _F, _F, _F, _F, 0, _F, _F, 0), None),  # PRE-FETCH(10)
    (0x35, None, _m(0x35, 0x02, _F, _F, _F, _F, 0, _F, _F, 0), None),  # SYNCHRONIZE CACHE(10)
    (0x37, None, _m(0x37, 0, 0x1F, 0, 0, 0, 0, _F, _F, 0), None),      # READ DEFECT DATA(10)
    (0x41, None, _m(0x41, 0x08, _F, _F, _F, _F, 0, _F, _F, 0), None),  # WRITE SAME(10)
    (0x42, None, _m(0x42, 0, 0, 0, 0, 0, 0, _F, _F, 0), lambda lun: lun.thin),  # UNMAP
    (0x55, None, _m(0x55, 0x10, 0, 0, 0, 0, 0, _F, _F, 0), None),      # MODE SELECT(10)
    (0x5A, None, _m(0x5A, 0x18, _F, _F, 0, 0, 0, _F, _F, 0), None),    # MODE SENSE(10)
    (0x83, 0x00, _m(0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), None),   # EXTENDED COPY(LID1)
    (0x84, 0x00, _m(0x84, 0x1F, _F, 0, 0, 0, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), None),  # RCR COPY STATUS
    (0x84, 0x03, _m(0x84, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), None),   # RCR OPERATING PARAMETERS
    (0x88, None, _m(0x88, 0x18, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # READ(16)
    (0x89, None, _m(0x89, 0x18, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0, 0, _F, 0, 0), None),     # COMPARE AND WRITE
    (0x8A, None, _m(0x8A, 0x18, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # WRITE(16)
    (0x8E, None, _m(0x8E, 0x12, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # WRITE AND VERIFY(16)
    (0x8F, None, _m(0x8F, 0x16, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # VERIFY(16)
    (0x90, None, _m(0x90, 0x02, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # PRE-FETCH(16)
    (0x91, None, _m(0x91, 0x02, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # SYNCHRONIZE CACHE(16)
    (0x93, None, _m(0x93, 0x09, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # WRITE SAME(16)
    (0x9E, 0x10, _m(0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), None),          # READ CAPACITY(16)
    (0x9E, 0x12, _m(0x9E, 0x1F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),   # GET LBA STATUS
    (0xA3, 0x0A, _m(0xA3, 0x3F, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), has_alua),                 # RTPG
    (0xA3, 0x0C, _m(0xA3, 0x1F, 0x87, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),               # RSOC
    (0xA4, 0x0A, _m(0xA4, 0x1F, 0, 0, 0, 0, _F, _F, _F, _F, 0, 0), explicit_alua),            # STPG
    (0xA8, None, _m(0xA8, 0x18, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),                 # READ(12)
    (0xAA, None, _m(0xAA, 0x18, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),                 # WRITE(12)
    (0xAE, None, _m(0xAE, 0x12, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),                 # WRITE AND VERIFY(12)
    (0xAF, None, _m(0xAF, 0x16, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),                 # VERIFY(12)
    (0xB7, None, _m(0xB7, 0x1F, _F, _F, _F, _F, _F, _F, _F, _F, 0, 0), None),                 # READ DEFECT DATA(12)
]

# opcodes whose CDB carries a SERVICE ACTION field (byte 1 bits 4-0)
SA_OPCODES = frozenset(op for op, sa, _, _ in COMMANDS if sa is not None)

# command timeouts descriptor (RCTD): nominal and recommended timeouts unspecified (0)
_TIMEOUTS = _BE16.pack(0x0A) + bytes(10)


def supported_commands(lun):
    return [(op, sa, mask) for op, sa, mask, pred in COMMANDS if pred is None or pred(lun)]


def rsoc_all(lun, rctd):
    out = bytearray()
    for op, sa, mask in supported_commands(lun):
        flags = (0x02 if rctd else 0) | (0x01 if sa is not None else 0)
        out += bytes((op, 0)) + _BE16.pack(sa or 0) + bytes((0, flags)) + _BE16.pack(len(mask))
        if rctd:
            out += _TIMEOUTS
    return _BE32.pack(len(out)) + bytes(out)


def rsoc_one(lun, op, sa, rctd):
    """One-command parameter data; sa is None for a command without service action."""
    for cop, csa, mask in supported_commands(lun):
        if cop == op and csa == sa:
            out = bytes((0, (0x80 if rctd else 0) | 0x03)) + _BE16.pack(len(mask)) + mask
            return out + _TIMEOUTS if rctd else out
    return bytes((0, (0x80 if rctd else 0) | 0x01, 0, 0)) + (_TIMEOUTS if rctd else b"")


# ---- GET LBA STATUS ---------------------------------------------------------------------------
def lba_status_data(lun, lba, extents, alloc_len, scanned_end=None):
    """GET LBA STATUS parameter data from the backend's allocated extents.

    lba: starting LBA (blocks). extents: [(offset_bytes, length_bytes), ...]
    allocated ranges (any order, may overlap, may extend before lba). Blocks
    covered partly by an extent count as mapped; the rest are deallocated
    (LBPRZ: they read as zeros). Descriptors run from lba contiguously until
    the end of the LUN, or of the range the extents were looked up in
    (scanned_end, blocks, exclusive: a bounded scan; SBC-3 lets the answer
    stop early and the initiator asks again from there), or until no more fit
    in alloc_len (at least one is built). Returns the parameter data
    truncated to alloc_len.
    """
    bs = lun.block_size
    end = lun.num_blocks if scanned_end is None else min(lun.num_blocks, scanned_end)
    if lba >= end:
        return (_BE32.pack(4) + bytes(4))[:alloc_len]
    ranges = []
    for off, length in extents:
        if length <= 0:
            continue
        s = max(off // bs, lba)
        e = min(-(-(off + length) // bs), end)
        if s < e:
            ranges.append((s, e))
    ranges.sort()
    merged = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1][1] = e
        else:
            merged.append([s, e])
    max_desc = max(1, (alloc_len - 8) // 16) if alloc_len > 8 else 1
    descs = []
    pos = lba
    it = iter(merged)
    nxt = next(it, None)
    while pos < end and len(descs) < max_desc:
        if nxt is not None and nxt[0] <= pos:
            stop, status = nxt[1], 0          # mapped
            nxt = next(it, None)
        else:
            stop, status = (nxt[0] if nxt is not None else end), 1   # deallocated
        while pos < stop and len(descs) < max_desc:
            n = min(stop - pos, 0xFFFFFFFF)
            descs.append(_BE64.pack(pos) + _BE32.pack(n) + bytes((status, 0, 0, 0)))
            pos += n
    body = b"".join(descs)
    data = _BE32.pack(len(body) + 4) + bytes(4) + body
    return data[:alloc_len]
