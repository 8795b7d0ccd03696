"""The full-stack benchmark (python -m tcmu_rbd_lab.bench vm) in one short VM run: every
path of the issue serves the same image and runs the same jobs, with the same LIO and
initiator settings, read back from the kernel. Figures are the benchmark's to print;
this asserts that every row is there, real and complete, and that the settings match.
"""

from __future__ import annotations

import pytest

from tcmu_rbd_lab.bench import report
from tcmu_rbd_lab.bench.vm import alternation, bench_vm
from tcmu_rbd_lab.bench.workloads import QUICK

PATHS = ["fio rbd (before)", "tcmu-rbd", "tcmu-runner", "rbd-nbd", "fio rbd (after)"]
DAEMONS = ["tcmu-rbd", "tcmu-runner"]
# what vm_guest.sh sets for both TCMU daemons, as the kernel reports it back
EQUAL = {"hw_max_sectors": "2048", "max_data_area_mb": "64", "cmdsn_depth": "128",
         "node.session.cmds_max": "128", "node.session.queue_depth": "128"}


@pytest.fixture(scope="module")
def rows(vm_results_dir):
    # one pair (A B): the benchmark's three take 10 min more than they prove here (the
    # median of pairs and their range are tests/test_bench.py's)
    return report.annotate(bench_vm(vm_results_dir, set_name="quick", seconds=3, ramp=1, luns=2,
                                    daemons=alternation(1)))


def _section(rows, name):
    return [r for r in rows if r["section"] == name]


@pytest.mark.parametrize("path", PATHS)
def test_every_job_ran_on_every_path(rows, path):
    got = [r for r in _section(rows, "vm") if r["path"] == path]
    assert [r["workload"] for r in got] == [w.label for w in QUICK]
    for r in got:
        assert r["iops"] > 0 and r["commands"] > 0 and r["lat_mean_us"] > 0, r
        assert r["cpu_us_per_cmd"] > 0, r      # the server's CPU, read from /proc
        if not path.startswith("fio rbd"):
            assert r["x_librbd"] > 0


def test_tcmu_rbd_is_compared_with_tcmu_runner(rows):
    ours = [r for r in _section(rows, "vm") if r["path"] == "tcmu-rbd"]
    for r in ours:      # pass by pass, with the CPU per command split by thread group
        assert 0 < r["x_runner_lo"] <= r["x_runner"] <= r["x_runner_hi"] and r["cpu_x_runner"] > 0
        assert r["cpu_us_by_group"]["loop"] > 0 and r["cpu_us_by_group"]["msgr"] > 0, r


@pytest.mark.parametrize("daemon", DAEMONS)
def test_equal_settings_read_back(rows, daemon):
    s = next(r for r in _section(rows, "settings") if r["path"] == daemon)
    assert {k: s[k] for k in EQUAL} == EQUAL


def test_initiator_queue_is_the_same_for_both_daemons(rows):
    s = {r["path"]: r for r in _section(rows, "settings")}
    for key in ("queue_depth", "max_sectors_kb", "nr_requests", "scheduler"):
        assert s["tcmu-rbd"][key] == s["tcmu-runner"][key], key


@pytest.mark.parametrize("daemon", DAEMONS)
def test_scaling_rows(rows, daemon):
    got = [r for r in _section(rows, "vm scaling") if r["path"] == daemon]
    assert [r["luns"] for r in got] == [1, 2]
    assert all(r["iops"] > 0 for r in got) and got[0]["x_1lun"] == 1.0


def test_each_daemon_ran_once_per_pair(rows):
    for daemon in DAEMONS:
        got = [r for r in _section(rows, "vm") if r["path"] == daemon]
        # (report.merge_passes marks merged rows only: one pass has no "passes")
        assert len(got) == len(QUICK) and all(r.get("passes", 1) == 1 for r in got), got


def test_memory_per_lun(rows):
    mem = {(r["path"], r["luns"]): r for r in _section(rows, "memory")}
    # our daemon: the supervisor, the spawner, one worker per LUN
    assert mem[("tcmu-rbd", 1)]["processes"] == 3 and mem[("tcmu-rbd", 2)]["processes"] == 4
    assert mem[("tcmu-runner", 1)]["processes"] == 1
    for key in [("tcmu-rbd", 2), ("tcmu-runner", 2)]:
        assert mem[key]["added_mb_per_lun"] > 0 and mem[key]["pss_kb"] <= mem[key]["rss_kb"]
    assert mem[("rbd-nbd", 1)]["rss_kb"] > 0
