"""Shared fixtures.

``ceph``       session-scoped: a started throwaway CephCluster (memstore unless
               TCMU_RBD_TEST_OBJECTSTORE=bluestore). Started only when a test asks for
               it; every such test gets the ``ceph`` marker, so ``-m 'not ceph'`` skips
               them all. Skipped (not failed) when the Ceph daemons are not installed.
``rbd_image``  a fresh uniquely named 256 MiB image in pool rbd, removed afterwards:
               an ``RbdImage`` with .pool .name .size .spec ("rbd/<name>") and
               .cfgstring ("rbd/rbd/<name>", what CheckConfig/the kernel see).
``store``      a targetcli_ext.store.ConfigStore on a fresh uniquely named object in
               pool rbd (the shared configuration of several gateways), removed
               afterwards.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ceph" in getattr(item, "fixturenames", ()) or \
                "rbd_image" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def ceph():
    missing = [b for b in ("ceph-mon", "ceph-osd", "ceph", "rbd", "rados",
                           "monmaptool", "ceph-authtool") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Ceph not installed (missing {', '.join(missing)}): "
                    f"run scripts/setup")
    from tcmu_rbd_lab.ceph import CephCluster

    objectstore = os.environ.get("TCMU_RBD_TEST_OBJECTSTORE", "memstore")
    cluster = CephCluster(objectstore=objectstore)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class RbdImage:
    pool: str
    name: str
    size: int

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.name}"

    @property
    def cfgstring(self) -> str:
        return f"rbd/{self.pool}/{self.name}"


@pytest.fixture
def rbd_image(ceph):
    name = f"img-{uuid.uuid4().hex[:12]}"
    size = 256 << 20
    ceph.create_image(name, size)
    yield RbdImage("rbd", name, size)
    # a daemon under test may still hold the image open for a moment
    deadline = time.monotonic() + 60
    ceph.run("rbd", "snap", "purge", "--no-progress", f"rbd/{name}", check=False)
    while True:
        r = ceph.run("rbd", "rm", "--no-progress", f"rbd/{name}", check=False)
        if r.returncode == 0 or "No such file" in r.stderr or "does not exist" in r.stderr:
            break
        if time.monotonic() > deadline:
            warnings.warn(f"could not remove rbd/{name}: {r.stderr.strip()[-300:]}")
            break
        time.sleep(1)


@pytest.fixture
def store(ceph):
    from targetcli_ext.store import ConfigStore
    s = ConfigStore.open("rbd", f"tcmu-rbd.config-{uuid.uuid4().hex[:8]}",
                         conf=ceph.conf_path)
    yield s
    try:
        s.ioctx.remove_object(s.obj)
    except Exception:   # never written, or already removed by the test
        pass
    finally:
        s.close()
