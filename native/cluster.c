/*
 * The image's cluster client; see cluster.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <rados/librados.h>

#include "cluster.h"

static rados_t cl(struct rbd_dev *d) { return (rados_t)rbd_dev_rados(d); }

int rbd_dev_client_addr(struct rbd_dev *d, char *buf, uint32_t len)
{
    char *addrs = NULL;
    int rc = rados_getaddrs(cl(d), &addrs);
    if (rc < 0)
        return rc;
    snprintf(buf, len, "%s", addrs ? addrs : "");
    rados_buffer_free(addrs);
    return 0;
}

uint64_t rbd_dev_instance_id(struct rbd_dev *d)
{
    return rados_get_instance_id(cl(d));
}

int rbd_dev_wait_for_osdmap(struct rbd_dev *d)
{
    return rados_wait_for_latest_osdmap(cl(d));
}

static void copy_out(char *dst, uint32_t len, const char *src, size_t n)
{
    if (!dst || !len)
        return;
    if (n > len - 1)
        n = len - 1;
    if (src && n)
        memcpy(dst, src, n);
    dst[src ? n : 0] = 0;
}

int rbd_dev_mon_command(struct rbd_dev *d, const char *cmd, char *out, uint32_t outlen,
                        char *status, uint32_t statuslen)
{
    const char *cmds[1] = { cmd };
    char *o = NULL, *s = NULL;
    size_t olen = 0, slen = 0;
    int rc = rados_mon_command(cl(d), cmds, 1, NULL, 0, &o, &olen, &s, &slen);
    copy_out(out, outlen, o, olen);
    copy_out(status, statuslen, s, slen);
    rados_buffer_free(o);
    rados_buffer_free(s);
    return rc;
}

int rbd_dev_service_register(struct rbd_dev *d, const char *service, const char *daemon,
                             const char *metadata)
{
    return rados_service_register(cl(d), service, daemon, metadata);
}

int rbd_dev_service_update(struct rbd_dev *d, const char *status)
{
    return rados_service_update_status(cl(d), status);
}
