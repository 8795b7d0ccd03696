/*
 * The cluster client of one open image (struct rbd_dev): what failover and
 * the service map need from librados.
 *
 * Belongs here: librados calls on the image's own client (its address, the
 * OSD map, monitor commands, the mgr service map).  Not here: librbd
 * (rbd_aio.c), what to do with the answers (tcmu_rbd/failover.py,
 * tcmu_rbd/service_map.py).  All synchronous: never on the loop thread.
 * The declarations below are also fed to cffi's cdef (see build_native.py).
 */
#ifndef TCMU_RBD_CLUSTER_H
#define TCMU_RBD_CLUSTER_H

#include <stdint.h>

#include "rbd_aio.h"

/* This client's address(es) as the OSD blocklist names them. */
int rbd_dev_client_addr(struct rbd_dev *d, char *buf, uint32_t len);
uint64_t rbd_dev_instance_id(struct rbd_dev *d);
/* Wait until this client has the newest OSD map (a blocklist in effect). */
int rbd_dev_wait_for_osdmap(struct rbd_dev *d);
/* A monitor command (JSON); its output (up to len-1 bytes) and status
 * message are copied out NUL-terminated.  0 or -errno. */
int rbd_dev_mon_command(struct rbd_dev *d, const char *cmd, char *out, uint32_t outlen,
                        char *status, uint32_t statuslen);
/* Service map: metadata/status are "key\0value\0...\0\0". */
int rbd_dev_service_register(struct rbd_dev *d, const char *service, const char *daemon,
                             const char *metadata);
int rbd_dev_service_update(struct rbd_dev *d, const char *status);

#endif
