/*
 * The memory backend's plain READ and WRITE as the engine starts them
 * (struct engine_ops): copies between the ring's data-area iovecs and the
 * backend's mapping, completed at once into the engine's queue (rq_push).
 * The mapping and the allocation map (a byte per granule) belong to
 * tcmu_rbd/backends/memory.py, which serves every other command itself.
 *
 * Belongs here: those two ops.  Not here: bounds of the LUN (the SCSI rule
 * has checked the LBA range before an op starts; an op outside the mapping
 * is refused all the same), any other command, the queue (engine.c).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_MEMORY_DEV_H
#define TCMU_RBD_MEMORY_DEV_H

#include <stdint.h>

#include "engine.h"

struct mem_dev {
    uint8_t  *base;         /* the LUN's bytes */
    uint64_t size;
    uint8_t  *alloc;        /* one byte per granule: written since deallocated */
    uint64_t granularity;
    int      read_only;     /* writes refused: the handler answers them */
};

const struct engine_ops *mem_dev_engine_ops(void);

#endif
