"""SCSI emulation core: pure functions over bytes (no I/O, no kernel).

    from tcmu_rbd import scsi
    result = scsi.parse(cdb, lun, data_len, data_out)

parse() returns a 4-tuple (offsets/lengths in bytes):
  (DONE, status, sense_or_None, data_or_None)   emulated; data already truncated
                                                to the CDB's allocation length
  (READ, offset, length, 0)                     length <= the Data-In buffer: when
                                                less, only that much is read and
                                                READ_LEN reports it
  (WRITE, offset, length, fua)
  (WRITE_VERIFY, offset, length, 0)
  (VERIFY, offset, length, bytchk)              bytchk 1: compare with Data-Out
  (FLUSH, 0, 0, 0)
  (UNMAP, [(offset, length), ...], 0, 0)        every range reads zero after (LBPRZ)
  (WRITE_SAME, offset, length, pattern_len)     pattern = first block of Data-Out
  (WRITE_ZEROES, offset, length, 0)             WRITE SAME UNMAP+zero block / NDOB, FORMAT UNIT
  (COMPARE_AND_WRITE, offset, length, 0)        Data-Out: length to compare + length to write
  (GET_LBA_STATUS, offset, alloc_len, 0)        then lba_status_data(lun, lba, extents, alloc_len)
  (COPY, [(src_offset, dst_offset, length), ...], list_id, 0)
                                                every segment (zero-length too);
                                                list_id None: not to be recorded,
                                                else record_copy() it as it runs
After the backend completes: io_result(kind, ret, extra) -> (status, sense_or_None).

Modules: cdb (parse: the command table), fast (the plain READ/WRITE(10/16)
rule, parse()'s hot path; native/scsi_fast.c is its C twin), block (SBC-3
commands), primary (SPC-4 commands), xcopy (EXTENDED COPY, RECEIVE COPY
RESULTS: the copy manager), fields (field layouts, parameter lists, answers
with data), sense (status, sense data, op kinds), lun (the LUN parse()
answers for), pages (INQUIRY/VPD, mode pages, capacity and the other data
parse() returns).
"""

from .sense import (  # noqa: F401
    GOOD, CHECK_CONDITION, CONDITION_MET, BUSY, RESERVATION_CONFLICT, TASK_SET_FULL,
    TASK_ABORTED,
    DONE, READ, WRITE, WRITE_VERIFY, VERIFY, FLUSH, UNMAP, WRITE_SAME, WRITE_ZEROES,
    COMPARE_AND_WRITE, GET_LBA_STATUS, COPY, KIND_NAMES,
    NO_SENSE, RECOVERED_ERROR, NOT_READY, MEDIUM_ERROR, HARDWARE_ERROR, ILLEGAL_REQUEST,
    UNIT_ATTENTION, DATA_PROTECT, COPY_ABORTED, ABORTED_COMMAND, MISCOMPARE,
    SENSE_LEN, sense, check, invalid_cdb, invalid_param, io_result,
)
from .lun import (  # noqa: F401
    Lun, Port, PortGroup, naa_from_serial,
    ALUA_ACTIVE_OPTIMIZED, ALUA_ACTIVE_NON_OPTIMIZED, ALUA_STANDBY, ALUA_UNAVAILABLE,
    ALUA_OFFLINE, ALUA_TRANSITIONING, TPGS_NONE, TPGS_IMPLICIT, TPGS_EXPLICIT, PROTO_ISCSI,
    ALUA_SUP_LIO_DEFAULT, ALUA_STATUS_IMPLICIT,
)
from .pages import VD_ISCSI, lba_status_data  # noqa: F401
from .xcopy import COPY_COMPLETED, COPY_FAILED, COPY_IN_PROGRESS, record_copy  # noqa: F401
from .cdb import parse  # noqa: F401
