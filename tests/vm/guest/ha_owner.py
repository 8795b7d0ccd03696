"""Guest helper of ha.sh: who owns an image's lock, as the cluster says.

  ha_owner.py POOL/IMAGE                 prints the owner gateway (the owner
                                         record whose client holds the lock), or
                                         "none"
  ha_owner.py --service-map POOL/IMAGE GW [--all]
                                         waits (60 s: a status reaches the mgr
                                         with the next 5 s report, later on a
                                         loaded TCG guest) until
                                         `ceph service status`
                                         lists GW's daemon for the image with
                                         lock_owner true and every other one
                                         listed with false (--all: both gw1 and
                                         gw2 listed; a dead gateway's entry goes)
  ha_owner.py --watch-owner POOL/IMAGE SECONDS
                                         polls the lock's holder every 50 ms for
                                         SECONDS and prints how often it changed
                                         (any daemon: tcmu-runner writes no record)
  ha_owner.py --killed-writer            a writer of the shared configuration
                                         SIGKILLed while holding its lock does
                                         not block the next writer past the lease
"""

import json
import os
import signal
import subprocess
import sys
import time

import rados
import rbd

OWNER_KEY = "tcmu-rbd.owner"


def cluster():
    c = rados.Rados(conffile=os.environ.get("CEPH_CONF", ""))
    c.connect(timeout=30)
    return c


def owner(spec: str) -> str:
    pool, image = spec.split("/", 1)
    c = cluster()
    try:
        with c.open_ioctx(pool) as io, rbd.Image(io, image) as img:
            try:
                rec = json.loads(img.metadata_get(OWNER_KEY))
            except KeyError:
                return "none"
            holders = [o.get("owner") if isinstance(o, dict) else o
                       for o in img.lock_get_owners()]
            return rec["gateway"] if rec.get("addr") in holders else "none"
    finally:
        c.shutdown()


def service_map(spec: str, gw: str, everyone: bool) -> int:
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        out = subprocess.run(["ceph", "service", "status", "-f", "json"], capture_output=True,
                             text=True, timeout=30)
        try:
            daemons = json.loads(out.stdout or "{}").get("tcmu-runner", {})
        except ValueError:
            daemons = {}
        mine = {k: v for k, v in daemons.items() if k.endswith(":" + spec)}
        states = {k.split(":", 1)[0]: v.get("status", {}).get("lock_owner") for k, v in mine.items()}
        last = states
        want = {g: ("true" if g == gw else "false") for g in ("gw1", "gw2")}
        if not everyone:
            want = {g: v for g, v in want.items() if g == gw or g in states}
        if states == want:
            print(json.dumps(mine, indent=1))
            return 0
        time.sleep(1)
    print("service status for %s: %s (want lock_owner true on %s only)" % (spec, last, gw),
          file=sys.stderr)
    return 1


def killed_writer() -> int:
    from targetcli_ext.store import DEFAULT_LEASE, ConfigStore
    conf = os.environ.get("CEPH_CONF")
    code = ("import sys, time\nfrom targetcli_ext.store import ConfigStore\n"
            "s = ConfigStore.open(conf=sys.argv[1])\n"
            "def hold(cfg):\n    print('locked', flush=True)\n    time.sleep(600)\n"
            "s.update(hold)\n")
    p = subprocess.Popen([sys.executable, "-c", code, conf], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if "locked" not in line:
        print("the writer did not take the lock: %r" % line, file=sys.stderr)
        return 1
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    s = ConfigStore.open(conf=conf)
    s.update(lambda cfg: cfg)          # a write: waits out the dead writer's lease
    took = time.monotonic() - t0
    s.close()
    print("next writer waited %.1f s (lease %d s)" % (took, DEFAULT_LEASE))
    return 0 if took <= DEFAULT_LEASE + 5 else 1


def watch_owner(spec: str, seconds: float) -> int:
    pool, image = spec.split("/", 1)
    c = cluster()
    changes, last = 0, None
    try:
        with c.open_ioctx(pool) as io, rbd.Image(io, image) as img:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                holders = [o.get("owner") for o in img.lock_get_owners()]
                now = holders[0] if holders else None
                if now is not None and last is not None and now != last:
                    changes += 1
                last = now if now is not None else last
                time.sleep(0.05)
    finally:
        c.shutdown()
    print(changes)
    return 0


def main(argv):
    if argv[:1] == ["--service-map"]:
        return service_map(argv[1], argv[2], "--all" in argv[3:])
    if argv[:1] == ["--watch-owner"]:
        return watch_owner(argv[1], float(argv[2]))
    if argv[:1] == ["--killed-writer"]:
        return killed_writer()
    print(owner(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
