"""Property tests: hostile CDBs and parameter data never raise, results are well formed."""

import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from tcmu_rbd import scsi
from tcmu_rbd.scsi.cdb import _parse_slow
from tcmu_rbd.scsi.pages import COMMANDS

SETTINGS = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SUPPORTED_OPS = sorted({op for op, _, _, _ in COMMANDS})
_CDB_LEN = {op: len(mask) for op, _, mask, _ in COMMANDS}

# valid-looking seeds that mutation starts from
SEEDS = [
    struct.pack(">BBIBHB", 0x28, 0, 10, 0, 8, 0),
    struct.pack(">BBIBHB", 0x2A, 0x08, 10, 0, 8, 0),
    struct.pack(">BBQIBB", 0x88, 0, 10, 8, 0, 0),
    struct.pack(">BBQIBB", 0x8A, 0, 10, 8, 0, 0),
    struct.pack(">BBQIBB", 0x93, 0x08, 10, 8, 0, 0),
    struct.pack(">BBQ3xBBB", 0x89, 0, 10, 1, 0, 0),
    struct.pack(">BBIBHB", 0x42, 0, 0, 0, 24, 0),
    struct.pack(">BB8xIBB", 0x83, 0, 80, 0, 0),
    struct.pack(">BBQIBB", 0x9E, 0x12, 0, 64, 0, 0),
    struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0),
    struct.pack(">BBBBHIBB", 0xA3, 0x0C, 0x01, 0x28, 0, 512, 0, 0),
    struct.pack(">BBBBHIBB", 0xA3, 0x0A, 0, 0, 0, 512, 0, 0),
    bytes((0x12, 1, 0x83, 0, 255, 0)),
    bytes((0x1A, 0, 0x3F, 0, 255, 0)),
    bytes((0x15, 0x10, 0, 0, 24, 0)),
    bytes((0x08, 0, 0, 1, 0, 0)),
    bytes((0x04, 0x10, 0, 0, 0, 0)),
]

lun_st = st.builds(
    scsi.Lun,
    num_blocks=st.one_of(st.integers(0, 64), st.integers(0, 1 << 24), st.just((1 << 40) - 1)),
    block_size=st.sampled_from([512, 4096]),
    serial=st.sampled_from(["", "a1b2c3d4-e5f6-7890-abcd-ef0123456789", "zz-not-hex"]),
    max_xfer_blocks=st.integers(1, 4096),
    read_only=st.booleans(),
    thin=st.booleans(),
    write_cache=st.booleans(),
    max_unmap_descriptors=st.integers(1, 8),
    port_groups=st.sampled_from([None, "none", "explicit"]).map(
        lambda k: [] if k == "none" else
        [scsi.PortGroup(tpgs=scsi.TPGS_EXPLICIT)] if k == "explicit" else [scsi.PortGroup()]),
    ua_capacity_changed=st.booleans(),
)


def _mutate(seed_and_edits):
    seed, edits, cut = seed_and_edits
    b = bytearray(seed)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:max(1, len(b) - cut)])


cdb_st = st.one_of(
    st.binary(min_size=1, max_size=32),
    st.tuples(st.sampled_from(SUPPORTED_OPS), st.binary(min_size=0, max_size=31)).map(
        lambda t: bytes([t[0]]) + t[1]),
    st.tuples(st.sampled_from(SUPPORTED_OPS), st.binary(min_size=31, max_size=31)).map(
        lambda t: bytes([t[0]]) + t[1][:_CDB_LEN[t[0]] - 1]),
    st.tuples(st.sampled_from(SEEDS),
              st.lists(st.tuples(st.integers(0, 31), st.integers(0, 255)), max_size=4),
              st.sampled_from([0, 0, 0, 1, 3])).map(_mutate),
)

data_len_st = st.one_of(st.integers(0, 1 << 21), st.sampled_from([0, 8, 24, 512, 1024, 4096, 8192]))


def _valid_param_list():
    """Parameter data that is often close to valid for UNMAP / EXTENDED COPY / MODE SELECT."""
    unmap = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 64)), max_size=6).map(
        lambda ds: struct.pack(">HH4x", 6 + 16 * len(ds), 16 * len(ds)) +
        b"".join(struct.pack(">QI4x", a, n) for a, n in ds))
    return st.one_of(st.binary(max_size=1200), unmap)


KEYS = {scsi.ILLEGAL_REQUEST, scsi.UNIT_ATTENTION, scsi.DATA_PROTECT, scsi.COPY_ABORTED}
_IO_KINDS = (scsi.READ, scsi.WRITE, scsi.WRITE_VERIFY, scsi.VERIFY, scsi.WRITE_SAME,
             scsi.WRITE_ZEROES, scsi.COMPARE_AND_WRITE)
_WRITE_KINDS = (scsi.WRITE, scsi.WRITE_VERIFY, scsi.WRITE_SAME, scsi.WRITE_ZEROES,
                scsi.COMPARE_AND_WRITE, scsi.UNMAP, scsi.COPY)


def check_well_formed(r, cdb, lun, data_len, param_len):
    assert isinstance(r, tuple) and len(r) == 4, r
    kind = r[0]
    bs = lun.block_size
    size = lun.num_blocks * bs
    if kind == scsi.DONE:
        status, s, data = r[1], r[2], r[3]
        if status == scsi.GOOD:
            assert s is None
            assert data is None or isinstance(data, bytes)
        else:
            assert status == scsi.CHECK_CONDITION, r
            assert data is None
            assert isinstance(s, bytes) and len(s) == 18
            assert s[0] in (0x70, 0xF0) and s[7] == 0x0A
            assert s[2] in KEYS, s.hex()
            if s[15] & 0x80:
                fp = int.from_bytes(s[16:18], "big")
                if s[15] & 0x40:
                    assert fp < len(cdb)
                else:
                    assert fp < max(param_len, 1)
        return
    if lun.read_only:
        assert kind not in _WRITE_KINDS, r
    if kind in _IO_KINDS:
        off, length, extra = r[1], r[2], r[3]
        assert off >= 0 and length > 0 and off + length <= size, r
        assert off % bs == 0
        if kind == scsi.READ:       # what the Data-In buffer holds of what the CDB asks
            assert length <= data_len and extra == 0
            assert length == data_len or length % bs == 0
        else:
            assert length % bs == 0
        if kind in (scsi.WRITE, scsi.WRITE_VERIFY):
            assert length == data_len and extra in (0, 1)
        elif kind == scsi.COMPARE_AND_WRITE:
            assert 2 * length == data_len and length == bs
        elif kind == scsi.VERIFY:
            assert data_len == (length if extra else 0)
        elif kind == scsi.WRITE_SAME:
            assert extra == bs == data_len
    elif kind == scsi.FLUSH:
        assert r == (scsi.FLUSH, 0, 0, 0)
    elif kind == scsi.UNMAP:
        assert lun.thin
        for off, length in r[1]:
            assert 0 <= off and 0 < length and off + length <= size and off % bs == 0
    elif kind == scsi.COPY:
        assert r[2] is None or 0 <= r[2] <= 255
        for src, dst, length in r[1]:
            assert 0 <= length and src + length <= size and dst + length <= size
    elif kind == scsi.GET_LBA_STATUS:
        assert 0 <= r[1] < size and r[2] > 0 and r[1] % bs == 0
    else:
        raise AssertionError("unknown kind %r" % (r,))


@SETTINGS
@given(lun=lun_st, cdb=cdb_st, data_len=data_len_st, param=_valid_param_list())
def test_hostile_cdbs_never_raise(lun, cdb, data_len, param):
    calls = []

    def data_out(n):
        assert 0 < n <= data_len, (n, data_len)
        calls.append(n)
        return (param + bytes(max(0, n - len(param))))[:n]

    r = scsi.parse(cdb, lun, data_len, data_out)
    param_len = max(calls) if calls else 0
    check_well_formed(r, cdb, lun, data_len, param_len)


@SETTINGS
@given(lun=lun_st, cdb=cdb_st, data_len=data_len_st)
def test_short_data_out_never_raises(lun, cdb, data_len):
    """A handler whose Data-Out is shorter than claimed must still get a clean answer."""
    r = scsi.parse(cdb, lun, data_len, lambda n: b"\x01" * (n // 3))
    check_well_formed(r, cdb, lun, data_len, data_len)


@settings(max_examples=400, deadline=None)
@given(lun=lun_st, op=st.sampled_from([0x28, 0x2A, 0x88, 0x8A]), lba=st.integers(0, (1 << 64) - 1),
       small_lba=st.integers(0, 1 << 22), use_small=st.booleans(),
       n=st.integers(0, 5000), b1=st.integers(0, 255), dl_delta=st.sampled_from([0, 0, 0, -512, 512]))
def test_fast_path_equals_slow_path(lun, op, lba, small_lba, use_small, n, b1, dl_delta):
    lba = small_lba if use_small else lba
    if op < 0x80:
        lba &= 0xFFFFFFFF
        n &= 0xFFFF
        cdb = struct.pack(">BBIBHB", op, b1, lba, 0, n, 0)
    else:
        cdb = struct.pack(">BBQIBB", op, b1, lba, n, 0, 0)
    data_len = max(0, n * lun.block_size + dl_delta)
    ua = lun.ua_capacity_changed
    fast = scsi.parse(cdb, lun, data_len, None)
    lun.ua_capacity_changed = ua
    slow = _parse_slow(cdb, lun, data_len, None)
    assert fast == slow
    check_well_formed(fast, cdb, lun, data_len, 0)


@settings(max_examples=300, deadline=None)
@given(num_blocks=st.integers(1, 5000), lba_frac=st.floats(0, 0.999),
       extents=st.lists(st.tuples(st.integers(0, 5000 * 512), st.integers(0, 100 * 512)), max_size=12),
       alloc=st.integers(0, 600), window=st.one_of(st.none(), st.integers(1, 6000)))
def test_lba_status_descriptors_are_contiguous(num_blocks, lba_frac, extents, alloc, window):
    lun = scsi.Lun(num_blocks=num_blocks)
    lba = int(num_blocks * lba_frac)
    # a bounded scan (window blocks from lba) answers up to its end only
    scanned_end = None if window is None else lba + window
    d = scsi.lba_status_data(lun, lba, extents, alloc, scanned_end)
    assert len(d) <= alloc
    full = scsi.lba_status_data(lun, lba, extents, 1 << 20, scanned_end)
    # a short allocation length returns the leading descriptors (at least one, maybe cut)
    assert d[8:] == full[8:len(d)]
    if alloc >= 8:
        shown = max(1, (alloc - 8) // 16)
        assert struct.unpack_from(">I", d, 0)[0] == 4 + 16 * min(shown, (len(full) - 8) // 16)
    n = (len(full) - 8) // 16
    assert struct.unpack_from(">I", full, 0)[0] == 4 + 16 * n
    pos, prev = lba, None
    mapped = set()
    for off, ln in extents:
        if ln > 0:
            mapped.update(range(off // 512, min(num_blocks, -(-(off + ln) // 512))))
    for i in range(n):
        start, count, status = struct.unpack_from(">QIB", full, 8 + 16 * i)
        assert start == pos and count > 0 and status in (0, 1) and status != prev
        # every block in the descriptor has the reported state
        for b in range(start, start + count):
            assert (b in mapped) == (status == 0)
        pos, prev = start + count, status
    assert pos == (num_blocks if scanned_end is None else min(num_blocks, scanned_end))
