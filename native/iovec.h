/*
 * Copies, fills and comparisons over struct iovec arrays (the ring's data
 * area as a command's iovecs describe it), so Python never copies data byte
 * by byte.  Each takes `skip` bytes to pass over first and works on at most
 * `len` bytes; the copies return how many bytes they moved.
 *
 * Belongs here: pure memory work over iovec arrays.  Not here: file or
 * device I/O (file_io.c, rbd_aio.c), anything that knows about the ring.
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_IOVEC_H
#define TCMU_RBD_IOVEC_H

#include <stdint.h>
#include <sys/uio.h>

/* The bytes the vectors hold. */
uint64_t iov_total(const struct iovec *iov, uint32_t cnt);
uint64_t iov_from_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *src, uint64_t len);
uint64_t iov_to_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, void *dst, uint64_t len);
uint64_t iov_fill(const struct iovec *iov, uint32_t cnt, uint64_t skip, int c, uint64_t len);
/* Offset (from skip) of the first byte that differs from buf, or -1. */
int64_t  iov_compare(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *buf, uint64_t len);
/* Offset (from skip) of the first nonzero byte, or -1. */
int64_t  iov_first_nonzero(const struct iovec *iov, uint32_t cnt, uint64_t skip, uint64_t len);

#endif
