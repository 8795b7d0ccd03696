"""The Ceph cluster as targetcli-rbd needs it: an image's size, and growing it.

Belongs here: the two librbd operations of the extension, connecting with the
export's conf/id/keyring as the daemon will, and their errors for the operator.

Not here: checking a config in depth (tcmu_rbd/validate.py, which
:meth:`Cluster.image_size` calls), I/O on an image (tcmu_rbd/backends/rbd.py),
anything in configfs.  rados and rbd are imported when an operation runs.
"""

from __future__ import annotations

from tcmu_rbd.config import ConfigError
from tcmu_rbd.validate import validate

from .spec import ExtError, ImageRef


class Cluster:
    def image_size(self, ref: ImageRef, timeout: float = 20.0) -> int:
        try:
            info = validate(ref.cfg, timeout=timeout)
        except ConfigError as e:
            code = "image-missing" if e.code in ("image-missing", "pool-missing",
                                                 "namespace-missing", "snapshot-missing") \
                else "cluster"
            raise ExtError(f"{ref.spec}: {e}", code) from None
        return info.size

    def resize(self, ref: ImageRef, size: int, timeout: float = 30.0) -> int:
        """Grow the image to ``size``; returns the old size."""
        import rados
        import rbd
        c = ref.cfg
        cluster = rados.Rados(rados_id=c.client_id or "admin")
        try:
            cluster.conf_read_file(c.conf)  # None: librados' search ($CEPH_CONF, /etc/ceph)
            for k, v in c.rados_conf().items():
                cluster.conf_set(k, v)
            for k in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
                cluster.conf_set(k, str(int(timeout)))
            cluster.connect(timeout=int(timeout))
            with cluster.open_ioctx(c.pool) as io:
                if c.namespace:
                    io.set_namespace(c.namespace)
                try:
                    with rbd.Image(io, c.image) as img:
                        old = img.size()
                        if size > old:
                            img.resize(size)
                        return old
                except rbd.ImageNotFound:
                    raise ExtError(f"image {ref.spec} does not exist", "image-missing") \
                        from None
        except rados.ObjectNotFound:
            raise ExtError(f"pool {c.pool} does not exist", "image-missing") from None
        finally:
            cluster.shutdown()
