"""Prometheus metrics: each LUN's counters region, and the daemon's /metrics.

Each LUN the supervisor serves has a :class:`LunRegion`: a memfd holding one
``struct lun_metrics`` (native/metrics.h), made by the supervisor and handed
to each of the LUN's workers in turn (``--metrics-fd``), whose ring and
engine record every completion into it in C (nothing per command in Python).
The counters live as long as the LUN, not the worker, so they stay monotone
across worker restarts.  On scrape, :class:`Collector` reads every region
through the same cffi declaration (no IPC) and adds what the supervisor
knows (worker restarts, ring resets, ALUA state, LUNs served, uptime).

Belongs here: the region's life (create, map, check, close), the exposition
(names, labels, units), the HTTP endpoint.  Not here: recording (native/
metrics.c, ring.c, engine.c), when workers start or stop (supervisor.py),
the ``metrics_address`` setting's syntax (settings.py).

prometheus_client (Debian: python3-prometheus-client) is needed only by the
daemon's endpoint; a worker maps its region without it.
"""

from __future__ import annotations

import errno
import http.server
import logging
import os
import socket
import threading
import time

from tcmu_rbd import alua, config
from tcmu_rbd._native import ffi, lib

log = logging.getLogger("tcmu_rbd.metrics")

KINDS = {lib.LM_READ: "read", lib.LM_WRITE: "write", lib.LM_UNMAP: "unmap",
         lib.LM_WRITE_SAME: "write_same", lib.LM_COMPARE_AND_WRITE: "compare_and_write",
         lib.LM_OTHER: "other"}
SENSE_KEYS = ("no_sense", "recovered_error", "not_ready", "medium_error", "hardware_error",
              "illegal_request", "unit_attention", "data_protect", "blank_check",
              "vendor_specific", "copy_aborted", "aborted_command", "reserved_0c",
              "volume_overflow", "miscompare", "completed")
ALUA_STATES = {0x0: "active_optimized", 0x1: "active_non_optimized", 0x2: "standby",
               0x3: "unavailable", 0x4: "lba_dependent", 0xE: "offline", 0xF: "transitioning"}
LABELS = ("pool", "namespace", "image", "backstore")

# Held while a scrape reads the regions and while one is unmapped (a read of
# an unmapped region would crash the daemon).
_lock = threading.Lock()


class MetricsError(Exception):
    """A region that is not this build's layout, or no prometheus_client."""


class LunRegion:
    """One LUN's ``struct lun_metrics``: ``LunRegion()`` makes a new one (the
    supervisor), ``LunRegion(fd)`` maps a worker's inherited one (checked
    against this build's layout; the fd is closed)."""

    def __init__(self, fd: int | None = None):
        self.size = lib.lm_region_size()
        created = fd is None
        if created:
            fd = os.memfd_create("tcmu-rbd-metrics", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                os.close(fd)
                raise
        try:
            if not created and os.fstat(fd).st_size < self.size:
                raise MetricsError("metrics fd %d holds %d bytes, expected %d: not a region of "
                                   "this tcmu-rbd" % (fd, os.fstat(fd).st_size, self.size))
            base = lib.tr_mmap(fd, self.size)
            if base == ffi.NULL:
                raise OSError(ffi.errno, "mmap of the metrics region: " + os.strerror(ffi.errno))
        except BaseException:
            os.close(fd)
            raise
        self.m = ffi.cast("struct lun_metrics *", base)
        if created:
            lib.lm_init(self.m)
            self.fd = fd        # for the workers (pass_fds)
        else:
            os.close(fd)
            self.fd = -1
            if lib.lm_check(self.m, self.size) < 0:
                got = (self.m.magic, self.m.version, self.m.size)
                self.close()
                raise MetricsError("metrics region has magic %#x version %d size %d, this "
                                   "worker expects %#x version %d size %d (a worker of another "
                                   "tcmu-rbd version: restart the daemon)"
                                   % (got + (lib.LM_MAGIC, lib.LM_VERSION,
                                             ffi.sizeof("struct lun_metrics"))))

    def set_lock_owner(self, owner: bool | None) -> None:
        """The worker's exclusive-lock state (None: the image has none to follow)."""
        if self.m is not None:
            lib.lm_set(ffi.addressof(self.m, "lock_owner"), 2 if owner is None else int(owner))

    def close(self) -> None:
        with _lock:
            if self.m is not None:
                lib.tr_munmap(self.m, self.size)
                self.m = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lun_labels(tcmu) -> dict[str, str]:
    """pool, namespace, image, backstore of a TcmuDevice."""
    try:
        c = config.parse_config(tcmu.name.dev_config, check_files=False)
        pool, ns, image = c.pool, c.namespace or "", c.image + ("@" + c.snapshot
                                                              if c.snapshot else "")
    except config.ConfigError:
        pool = ns = image = ""
    return {"pool": pool, "namespace": ns, "image": image, "backstore": tcmu.name.name}


def _client():
    try:
        import prometheus_client
        from prometheus_client import core, utils
    except ImportError:
        raise MetricsError("prometheus_client is not installed: apt-get install "
                           "python3-prometheus-client, or set [daemon] metrics_address = 0 "
                           "to serve no metrics") from None
    return prometheus_client, core, utils


class Collector:
    """prometheus_client's custom collector over a Supervisor's devices."""

    def __init__(self, supervisor, started: float | None = None):
        self.sup = supervisor
        self.started = time.monotonic() if started is None else started
        _, self._core, utils = _client()
        self._bounds = [utils.floatToGoString(us / 1e6) for us in lib.lm_latency_bounds_us]

    def collect(self):
        core = self._core
        C, G, H = core.CounterMetricFamily, core.GaugeMetricFamily, core.HistogramMetricFamily
        lab = list(LABELS)
        f = {
            "cmds": C("tcmu_rbd_lun_commands", "SCSI commands completed, by kind", labels=lab + ["kind"]),
            "bytes": C("tcmu_rbd_lun_bytes", "data-area bytes of commands completed GOOD, by kind",
                       labels=lab + ["kind"]),
            "lat": H("tcmu_rbd_lun_latency_seconds", "time from taking a READ or WRITE off the "
                     "ring to its completion", labels=lab + ["kind"]),
            "inflight": G("tcmu_rbd_lun_commands_in_flight", "commands taken, not completed", labels=lab),
            "sense": C("tcmu_rbd_lun_check_conditions", "CHECK CONDITION answers, by sense key",
                       labels=lab + ["sense_key"]),
            "errno": C("tcmu_rbd_lun_librbd_errors", "backend (librbd) ops that failed, by errno",
                       labels=lab + ["errno"]),
            "busy": C("tcmu_rbd_lun_busy", "BUSY answers (e.g. writes while another gateway "
                      "holds the exclusive lock)", labels=lab),
            "other": C("tcmu_rbd_lun_other_status", "answers neither GOOD, CHECK CONDITION nor BUSY "
                       "(e.g. TASK ABORTED)", labels=lab),
            "restarts": C("tcmu_rbd_lun_worker_restarts", "restarts of the LUN's worker after it "
                          "died", labels=lab),
            "resets": C("tcmu_rbd_lun_ring_resets", "resets of the LUN's command ring "
                        "(reset_ring)", labels=lab),
            "data": G("tcmu_rbd_lun_data_area_bytes", "size of the ring's data area", labels=lab),
            "used": G("tcmu_rbd_lun_data_area_used_bytes", "data-area bytes of the commands in "
                      "flight", labels=lab),
            "lock": G("tcmu_rbd_lun_exclusive_lock_owner", "1 while this gateway holds the "
                      "image's exclusive lock (absent: the image has none to follow)", labels=lab),
            "alua": G("tcmu_rbd_lun_alua_state", "ALUA state of this gateway's target port group "
                      "(0 active/optimized, 1 active/non-optimized, 2 standby, 3 unavailable, "
                      "14 offline, 15 transitioning); absent with LIO's default group only",
                      labels=lab + ["state"]),
        }
        states: dict[str, int] = {}
        with _lock:
            devices = list(self.sup.devices.values())
            for dev in devices:
                states[dev.state] = states.get(dev.state, 0) + 1
                region = getattr(dev, "metrics", None)
                if region is None or region.m is None:
                    continue
                self._lun(f, dev, region.m, [lun_labels(dev.tcmu)[k] for k in LABELS])
        for dev in devices:
            self._alua(f, dev)
        yield from f.values()
        luns = G("tcmu_rbd_luns", "LUNs the daemon serves, by worker state", labels=["state"])
        for st in ("starting", "ready", "backoff", "stopping"):
            luns.add_metric([st], states.get(st, 0))
        yield luns
        yield G("tcmu_rbd_uptime_seconds", "seconds since the daemon started",
                value=time.monotonic() - self.started)

    def _lun(self, f, dev, m, lv) -> None:
        for k, name in KINDS.items():
            f["cmds"].add_metric(lv + [name], m.cmds[k])
            f["bytes"].add_metric(lv + [name], m.bytes[k])
        for k in (lib.LM_READ, lib.LM_WRITE):
            total, buckets = 0, []
            for i, le in enumerate(self._bounds):
                total += m.latency[k][i]
                buckets.append((le, total))
            buckets.append(("+Inf", total + m.latency[k][lib.LM_BOUNDS]))
            f["lat"].add_metric(lv + [KINDS[k]], buckets, m.latency_sum_ns[k] / 1e9)
        ready = dev.state == "ready"
        f["inflight"].add_metric(lv, m.in_flight if ready else 0)
        f["used"].add_metric(lv, m.data_in_use if ready else 0)
        f["data"].add_metric(lv, m.data_size)
        for key in range(16):
            if m.sense_keys[key]:
                f["sense"].add_metric(lv + [SENSE_KEYS[key]], m.sense_keys[key])
        for e in range(lib.LM_ERRNOS):
            if m.errnos[e]:
                name = errno.errorcode.get(e, str(e)) if e else "other"
                f["errno"].add_metric(lv + [name], m.errnos[e])
        f["busy"].add_metric(lv, m.busy)
        f["other"].add_metric(lv, m.other_status)
        f["restarts"].add_metric(lv, dev.restarts)
        f["resets"].add_metric(lv, dev.ring_resets)
        if m.lock_owner in (0, 1):
            f["lock"].add_metric(lv, m.lock_owner)

    @staticmethod
    def _alua(f, dev) -> None:
        try:
            mine = alua.local_group(dev.tcmu.alua_groups())
        except OSError:
            return
        if mine is not None:
            lv = [lun_labels(dev.tcmu)[k] for k in LABELS]
            f["alua"].add_metric(lv + [ALUA_STATES.get(mine.state, str(mine.state))], mine.state)


class MetricsServer:
    """/metrics over HTTP on its own thread (the scrape reads the regions
    there; the supervisor's loop is never blocked by a scraper)."""

    def __init__(self, address: tuple[str, int], supervisor):
        prometheus_client, _, _ = _client()
        self.registry = prometheus_client.CollectorRegistry()
        self.registry.register(Collector(supervisor))
        host, port = address

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        try:
            self.httpd = Server((host, port), prometheus_client.MetricsHandler.factory(self.registry))
        except OSError as e:
            raise MetricsError("metrics_address %s: cannot listen: %s (set [daemon] "
                               "metrics_address to a free host:port, or 0 to serve no metrics)"
                               % (format_address(address), e.strerror)) from None
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()
        log.info("serving Prometheus metrics on http://%s/metrics", format_address(self.address))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
