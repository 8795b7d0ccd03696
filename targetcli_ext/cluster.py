"""The Ceph cluster as targetcli-rbd needs it: an image's size, growing it, and
its QoS settings (librbd's config_list / config_set / config_remove).

Belongs here: the librbd operations of the extension, connecting with the
export's conf/id/keyring (and its qos_* options) as the daemon will, and their
errors for the operator.

Not here: checking a config in depth (tcmu_rbd/validate.py, which
:meth:`Cluster.image_size` calls), I/O on an image (tcmu_rbd/backends/rbd.py),
anything in configfs.  rados and rbd are imported when an operation runs.
"""

from __future__ import annotations

import contextlib

from tcmu_rbd import qos as _qos
from tcmu_rbd.config import ConfigError, RbdConfig
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
        with _open_image(ref.cfg, timeout) as img:
            old = img.size()
            if size > old:
                img.resize(size)
            return old

    def qos(self, cfg: RbdConfig, values: dict[str, int] | None = None,
            clear: bool = False, timeout: float = 20.0) -> tuple[list[dict], list[dict]]:
        """The image's QoS entries of librbd's config_list (name, value, source)
        before and after removing its own QoS settings (``clear``) and setting
        ``values`` (setting name -> int) on it.  ``cfg``'s qos_* options are set on
        this client, as the daemon sets them on the LUN's, so that librbd names
        them as the "config" source.  Open LUNs of the image apply the change on
        their next refresh (librbd notifies them), without a reopen."""
        import rbd

        def entries(img):
            return [dict(e) for e in img.config_list() if e["name"].startswith("rbd_qos_")]
        with _open_image(cfg, timeout) as img:
            before = entries(img)
            if not clear and not values:
                return before, before
            try:
                if clear:
                    own = {e["name"] for e in before if e["source"] == _qos.SOURCE_IMAGE}
                    for key in own:
                        img.config_remove(key)
                for n, v in (values or {}).items():
                    img.config_set(_qos.librbd_key(n), str(v))
            except rbd.ReadOnlyImage:
                raise ExtError(f"image {cfg.image_spec} is read-only for "
                               f"{cfg.user}", "read-only") from None
            except rbd.PermissionError:
                raise ExtError(f"{cfg.user} may not change image {cfg.image_spec}'s "
                               f"settings: it needs the 'profile rbd' osd cap on its "
                               f"pool", "cluster") from None
        with _open_image(cfg, timeout) as img:
            return before, entries(img)


@contextlib.contextmanager
def _open_image(c: RbdConfig, timeout: float):
    """The image (at its head) on a client connected with ``c``'s options."""
    import rados
    import rbd
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
                    yield img
            except rbd.ImageNotFound:
                spec = c.image_spec.split("@")[0]
                raise ExtError(f"image {spec} does not exist", "image-missing") from None
    except rados.ObjectNotFound:
        raise ExtError(f"pool {c.pool} does not exist", "image-missing") from None
    finally:
        cluster.shutdown()
