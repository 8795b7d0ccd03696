"""Issue 11's SCSI answers through the real kernel and initiator, in one VM boot
(tests/vm/guest/scsi.sh): OUR daemon serves two LUNs over iSCSI on 127.0.0.1, "stock"
(stock targetcli, kernel defaults: hw_max_sectors 128) and "ext" (targetcli-rbd's
defaults), and sg3-utils (sg_raw, sg_unmap, sg_write_same, sg_inq, sg_xcopy,
sg_copy_results, sg_opcodes, sg_compare_and_write, sg_verify, sg_write_verify) send
each LUN the same suite through SG_IO: large transfers, LBA range before length,
EDTL/CDB length mismatches, UNMAP zeroing, standard INQUIRY, EXTENDED COPY and
RECEIVE COPY RESULTS, the new opcodes; exact status, sense and data bytes.

Check names are "<lun>_<what>": a failure says which LUN and which item. A failure
shows the check's own output, then the daemon's log and the kernel log of the guest.
"""

from pathlib import Path

import pytest
from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
)

GUEST = Path(__file__).parent / "guest" / "scsi.sh"
guest_logs = daemon_logs  # appended to a failed check

# waiting for another developer's VM (one at a time) counts against pytest-timeout
pytestmark = pytest.mark.timeout(3600)

LUNS = ("stock", "ext")

SET_UP = [
    "ceph_up", "dbus", "kernel_target", "daemon_start",
    "export_stock", "export_ext", "login_stock", "login_ext",
    # block size, capacity, NAA designator of both (each LUN's XCOPY checks name the other)
    "stock_identity", "ext_identity",
]

# every LUN runs these, in this order (lun_suite in the guest script)
SUITE = [
    # 1. READ/WRITE/WRITE AND VERIFY above hw_max_sectors (stock: 128) are served
    "hw_max_sectors", "vpd_b0_mtl",
    "write10_256", "read10_256", "write10_2048", "read10_2048",
    "write16_256", "read16_256", "write16_2048", "read16_2048",
    "wav10_256", "wav10_256_data",
    # 2. LBA OUT OF RANGE whatever the length, and before the EDTL check
    "read10_beyond_end_2048", "read10_crosses_end_2048", "read16_lba_wraps",
    "write10_beyond_end_2048", "read10_beyond_end_edtl_short", "write16_beyond_end_edtl_short",
    # 3. EDTL != CDB length: READ GOOD with the residual; Data-Out commands 0E/03, nothing written
    "write10_128", "read10_edtl_long", "read10_edtl_short", "read10_edtl_zero",
    "write10_edtl_long", "write10_edtl_short", "write16_edtl_long", "wav10_edtl_long",
    "verify10_bytchk_edtl_short", "caw_edtl_short",
    # 4. UNMAP / WRITE SAME UNMAP: the range reads zero, its neighbours unchanged
    "unmap_zone_written", "unmap_1", "unmap_7", "unmap_8", "unmap_127",
    "unmap_129_across_objects", "unmap_3_descriptors", "unmap_20000",
    "ws16_unmap_1000", "ws10_unmap_16000",
    # 5. standard INQUIRY: 96 bytes, SPC-4, SAM-5/iSCSI/SPC-4/SBC-3 descriptors
    "inquiry_96", "inquiry_alloc36", "inquiry_sg_inq_descriptors",
    # 6. EXTENDED COPY (LID1) and RECEIVE COPY RESULTS
    "rcr_params", "sg_xcopy_2048", "sg_copy_results_status", "xcopy_two_segments",
    "xcopy_status_bytes", "xcopy_status_alloc6", "sg_xcopy_usage11",
    "xcopy_usage11_not_recorded", "xcopy_status_unknown_list_id", "xcopy_keeps_last_16",
    "xcopy_list_too_long", "xcopy_too_many_cscd", "xcopy_too_many_segments",
    "xcopy_cscd_type", "xcopy_cscd_list_len", "xcopy_segment_type",
    "xcopy_src_beyond_end", "xcopy_dst_beyond_end", "xcopy_cscd_index_outside",
    "xcopy_other_lun", "xcopy_inline_data", "xcopy_validated_first",
    # 7. PRE-FETCH, VERIFY(12), WRITE AND VERIFY(12), READ DEFECT DATA, RSOC
    "prefetch10", "prefetch10_immed", "prefetch16", "prefetch16_immed",
    "prefetch10_whole_lun", "prefetch10_last_lba", "prefetch10_beyond_end",
    "prefetch16_crosses_end", "prefetch16_lba_wraps",
    "write16_verify_zone", "verify12", "verify12_bytchk", "verify12_miscompare",
    "wav12_256", "wav12_256_data", "rdd10", "rdd10_alloc2", "rdd12",
    "rsoc_lists_new", "rsoc_mask_34", "rsoc_mask_90", "rsoc_mask_af", "rsoc_mask_ae",
    "rsoc_mask_37", "rsoc_mask_b7",
    # COMPARE AND WRITE, VERIFY(10/16) BYTCHK 0/1 through sg_compare_and_write / sg_verify
    "caw_match", "caw_miscompare", "verify10_bytchk0_256", "verify16_bytchk0_256",
    "verify10_bytchk1_256", "verify16_bytchk1_256", "verify10_miscompare", "verify16_miscompare",
]

TEARDOWN = [
    "logout", "unexport_ext", "teardown", "lio_empty", "daemons_stopped",
    "daemon_log_clean", "dmesg_no_tcmu_errors",
]

CHECKS = SET_UP + [f"{lun}_{what}" for lun in LUNS for what in SUITE] + TEARDOWN

# Ceph ~35 s + 2 exports and logins ~1 min + 2 x ~100 checks (~0.5-1 s each under TCG)
VM_TIMEOUT = 15 * 60


def test_guest_script_and_checks_agree():
    """Every name listed here is recorded by the guest script: the set-up and teardown
    ones literally, the suite's as "${L}_<what>" (a renamed check would otherwise only
    show up as 'never ran')."""
    text = GUEST.read_text()
    literal = SET_UP + TEARDOWN
    missing = [c for c in literal if f"check {c} " not in text and f"step {c} " not in text]
    missing += [c for c in SUITE if f'check "${{L}}_{c}" ' not in text]
    assert not missing, missing
    assert len(set(CHECKS)) == len(CHECKS)
