/*
 * The plain READ/WRITE(10/16) rule in C: which commands may go straight to
 * the backend without the SCSI core, and where they go.  The C twin of
 * tcmu_rbd/scsi/fast.py; tests/test_fast_path_props.py feeds both the same
 * CDBs and requires the same decisions, so a change to one side alone fails.
 *
 * Belongs here: the rule, a pure function of the CDB bytes, the data length
 * and the LUN's limits.  Not here: the ring, the backend, the engine's own
 * reasons to leave a command to the handler (a malformed entry, a pending
 * abort: engine.c), and every answer other than "fast" (the SCSI core).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_SCSI_FAST_H
#define TCMU_RBD_SCSI_FAST_H

#include <stdint.h>

/* What the rule reads of the LUN: tcmu_rbd.scsi.fast.store_limits() copies
 * it from the SCSI core's Lun. */
struct scsi_fast_limits {
    uint64_t num_blocks;
    uint32_t block_size;
    uint8_t  read_only;
    uint8_t  ua_pending;    /* a CAPACITY DATA HAS CHANGED unit attention waits */
};

enum { SCSI_FAST_NO = 0, SCSI_FAST_READ = 1, SCSI_FAST_WRITE = 2 };

/* Where a fast command goes (bytes). */
struct scsi_fast_io {
    uint64_t offset;
    uint64_t length;
    uint8_t  fua;
};

/* SCSI_FAST_READ or SCSI_FAST_WRITE with *io filled in, or SCSI_FAST_NO (the
 * SCSI core answers it: maybe with an error, maybe with the same I/O).
 * Reads no more than cdb_len bytes of cdb. */
int scsi_fast_decide(const uint8_t *cdb, uint32_t cdb_len, uint64_t data_len,
                     const struct scsi_fast_limits *lim, struct scsi_fast_io *io);

#endif
