/*
 * The plain READ/WRITE(10/16) rule; see scsi_fast.h.  Pure: no ring, no
 * backend, no state.  Line for line the twin of tcmu_rbd/scsi/fast.py: each
 * reason not to be fast is one line on each side, so changing the rule is a
 * one-line edit on each side, which tests/test_fast_path_props.py pins.
 */
#include "scsi_fast.h"

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    while (n--)
        v = v << 8 | *p++;
    return v;
}

int scsi_fast_decide(const uint8_t *cdb, uint32_t cdb_len, uint64_t data_len,
                     const struct scsi_fast_limits *lim, struct scsi_fast_io *io)
{
    uint64_t lba, n;
    int dir;

    if (cdb_len == 0)
        return SCSI_FAST_NO;
    switch (cdb[0]) {
    case 0x28: case 0x2A:                   /* READ(10), WRITE(10) */
        if (cdb_len < 10)
            return SCSI_FAST_NO;
        lba = be(cdb + 2, 4);
        n = be(cdb + 7, 2);
        break;
    case 0x88: case 0x8A:                   /* READ(16), WRITE(16) */
        if (cdb_len < 16)
            return SCSI_FAST_NO;
        lba = be(cdb + 2, 8);
        n = be(cdb + 10, 4);
        break;
    default:
        return SCSI_FAST_NO;
    }
    dir = cdb[0] & 0x02 ? SCSI_FAST_WRITE : SCSI_FAST_READ;
    if (cdb[1] & 0xE0                           /* RDPROTECT/WRPROTECT: no protection information */
            || n == 0                           /* nothing to transfer: GOOD without I/O */
            || n * lim->block_size != data_len  /* n < 2^32, block_size < 2^32: no overflow */
            || lba > lim->num_blocks || n > lim->num_blocks - lba   /* lba + n > num_blocks */
            || lim->ua_pending                  /* the SCSI core reports it first */
            || (dir == SCSI_FAST_WRITE && lim->read_only))
        return SCSI_FAST_NO;
    io->offset = lba * lim->block_size;
    io->length = data_len;
    io->fua = dir == SCSI_FAST_WRITE ? (cdb[1] >> 3) & 1 : 0;
    return dir;
}
