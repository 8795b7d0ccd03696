/*
 * The kernel's ring layout, as both sides of the ring need it: the UAPI
 * header (include/uapi/linux/target_core_user.h), the mailbox offsets of
 * cmd_head and cmd_tail, their acquire/release accessors, and the entry
 * offsets the kernel's structs hide behind flexible arrays.
 *
 * Belongs here: what ring.c (handler side) and emulator.c (kernel side)
 * both read of the ABI, and how one side reads what the other writes.
 * Not here: anything either side does with it.
 * Internal to native/: not in build_native.py's HEADERS, so not in the cdef
 * (it has macros and static inline functions, which cffi's cdef cannot take).
 */
#ifndef TCMU_RBD_TCMU_ABI_H
#define TCMU_RBD_TCMU_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
/* glibc already defines struct iovec: keep linux/uio.h from defining it again */
#define __LINUX_UIO_H
#include <linux/target_core_user.h>

#define TCMU_IDS 65536u            /* cmd_id is 16 bits: per-id tables have this many entries */
#define MB_HEAD_OFF 12u            /* offsetof(struct tcmu_mailbox, cmd_head) */
#define MB_TAIL_OFF 64u            /* cmd_tail, on its own cache line */
#define REQ_IOV_OFF ((uint32_t)offsetof(struct tcmu_cmd_entry, req.iov))   /* 48 */
#define TMR_IDS_OFF ((uint32_t)offsetof(struct tcmu_tmr_entry, cmd_ids))   /* 32 */

_Static_assert(sizeof(struct tcmu_mailbox) == 128, "mailbox layout");
_Static_assert(offsetof(struct tcmu_mailbox, cmd_head) == MB_HEAD_OFF, "cmd_head");
_Static_assert(offsetof(struct tcmu_mailbox, cmd_tail) == MB_TAIL_OFF, "cmd_tail");
_Static_assert(sizeof(struct tcmu_cmd_entry) == 112, "cmd entry layout");
_Static_assert(offsetof(struct tcmu_cmd_entry, req.cdb_off) == 24, "cdb_off");
_Static_assert(offsetof(struct tcmu_cmd_entry, rsp.read_len) == 12, "read_len");
_Static_assert(offsetof(struct tcmu_cmd_entry, rsp.sense_buffer) == 16, "sense");
_Static_assert(offsetof(struct tcmu_tmr_entry, cmd_ids) == 32, "tmr ids");

/* Any other field of the shared mapping the other side may rewrite at any
 * time: read it once into a local, check the local and use only that (a
 * second read may see another value than the one checked). */
#define READ_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* cmd_head is published by the kernel and cmd_tail by the handler with a
 * release store; the other side reads them with an acquire load. */
static inline uint32_t load_acquire(uint8_t *base, uint32_t off)
{
    return __atomic_load_n((uint32_t *)(base + off), __ATOMIC_ACQUIRE);
}

static inline void store_release(uint8_t *base, uint32_t off, uint32_t v)
{
    __atomic_store_n((uint32_t *)(base + off), v, __ATOMIC_RELEASE);
}

#endif
