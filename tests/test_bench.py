"""The benchmark's own machinery: fio command lines and parsing against the real fio
and cluster, /proc readings, ratios, the table, JSON and the chart, and short real
runs of the engine and rbd benchmarks (figures are printed by the benchmark, not
asserted here: only that every row is real and complete)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tcmu_rbd_lab.bench import fio, guest, native, procs, report
from tcmu_rbd_lab.bench.__main__ import main as bench_main
from tcmu_rbd_lab.bench.workloads import FULL, QUICK, SCALING, Workload

FIGURES = ("iops", "mbps", "lat_mean_us", "lat_p99_us", "cpu_us_per_cmd")


def test_workloads_cover_the_issue():
    labels = [w.label for w in FULL]
    for qd in (1, 32, 128):
        assert "randread 4K QD%d" % qd in labels and "randwrite 4K QD%d" % qd in labels
    for size in ("64K", "1M"):
        assert "read %s QD8" % size in labels and "write %s QD8" % size in labels
    assert SCALING in FULL and set(QUICK) <= set(FULL)


def test_fio_command_rbd_and_device_targets():
    w = Workload("randwrite", 4096, 32)
    cmd = fio.command(["rbd:rbd/img0", "/dev/sdb"], w, 10, 2)
    assert cmd.count("--name=t0") == 1 and cmd.count("--name=t1") == 1
    t0, t1 = cmd.index("--name=t0"), cmd.index("--name=t1")
    # options after a --name belong to that job
    assert cmd[t0:t1] == ["--name=t0", "--ioengine=rbd", "--clientname=admin", "--pool=rbd",
                          "--rbdname=img0"]
    assert cmd[t1:] == ["--name=t1", "--ioengine=libaio", "--filename=/dev/sdb"]
    for opt in ("--direct=1", "--rw=randwrite", "--bs=4096", "--iodepth=32", "--runtime=10",
                "--ramp_time=2", "--group_reporting", "--time_based"):
        assert opt in cmd[:t0]


def _sample_report(read: bool) -> dict:
    side = {"total_ios": 5000, "iops": 1000.0, "bw_bytes": 4096000,
            "clat_ns": {"mean": 31000.0, "percentile": {"99.000000": 90000}}}
    idle = {"total_ios": 0, "iops": 0, "bw_bytes": 0, "clat_ns": {"mean": 0}}
    return {"jobs": [{"read": side if read else idle, "write": idle if read else side,
                      "error": 0}]}


def test_fio_parse_takes_the_workloads_direction():
    r = fio.parse(_sample_report(True), Workload("randread", 4096, 1))
    assert r["iops"] == 1000 and r["mbps"] == pytest.approx(4.096)
    assert r["lat_mean_us"] == 31 and r["lat_p99_us"] == 90
    w = fio.parse(_sample_report(False), Workload("write", 1 << 20, 8))
    assert w["iops"] == 1000 and w["commands"] == 5000


def test_procs_cpu_and_memory_of_a_real_process():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt=time.time()\nwhile time.time()-t<30: pass",
                              "bench-probe-marker"])
    try:
        time.sleep(0.3)
        assert procs.pids_matching("bench-probe-marker") == [child.pid]
        c0 = procs.cpu_seconds([child.pid])
        time.sleep(0.5)
        used = procs.cpu_seconds([child.pid]) - c0
        assert 0.2 < used < 0.8         # a busy loop: about one CPU
        m = procs.memory_kb(child.pid)
        assert 0 < m["pss_kb"] <= m["rss_kb"] and 0 < m["private_kb"] <= m["rss_kb"]
        kinds = m["private_by_kind"]
        assert sum(kinds.values()) == m["private_kb"] and kinds["heap"] > 0 and kinds["file"] > 0
    finally:
        child.kill()
        child.wait()
    assert procs.pids_matching("bench-probe-marker") == []
    assert procs.cpu_seconds([child.pid]) == 0      # gone: nothing, no error


def _rows():
    return [
        {"section": "vm", "path": "fio rbd (before)", "workload": "randread 4K QD32", "iops": 900.0},
        {"section": "vm", "path": "tcmu-rbd", "workload": "randread 4K QD32", "iops": 1000.0},
        {"section": "vm", "path": "tcmu-runner", "workload": "randread 4K QD32", "iops": 800.0},
        {"section": "vm", "path": "fio rbd (after)", "workload": "randread 4K QD32", "iops": 1100.0},
        {"section": "native", "path": "engine+rbd", "workload": "randread 4K QD32", "iops": 5.0},
        {"section": "vm scaling", "path": "tcmu-rbd", "luns": 1, "workload": "w", "iops": 100.0},
        {"section": "vm scaling", "path": "tcmu-rbd", "luns": 4, "workload": "w", "iops": 190.0},
        {"section": "memory", "path": "tcmu-rbd", "luns": 1, "processes": 2,
         "rss_kb": 80 << 10, "pss_kb": 60 << 10, "private_kb": 30 << 10},
        {"section": "memory", "path": "tcmu-rbd", "luns": 4, "processes": 5,
         "rss_kb": 200 << 10, "pss_kb": 120 << 10, "private_kb": 90 << 10},
        {"section": "settings", "path": "tcmu-rbd", "hw_max_sectors": "2048"},
    ]


def test_annotate_ratios():
    rows = report.annotate(_rows())
    ours = rows[1]
    assert ours["x_librbd"] == pytest.approx(1.0)       # against the mean of 900 and 1100
    assert ours["x_runner"] == pytest.approx(1.25)
    assert rows[2]["x_librbd"] == pytest.approx(0.8) and "x_runner" not in rows[2]
    assert "x_librbd" not in rows[0] and "x_librbd" not in rows[4]   # no baseline there
    assert rows[6]["x_1lun"] == pytest.approx(1.9)
    assert rows[8]["added_mb_per_lun"] == pytest.approx(20)          # (120 - 60) / 3
    assert rows[8]["pss_mb_per_lun"] == pytest.approx(30)


def test_repeated_passes_are_averaged():
    a = {"section": "vm", "path": "tcmu-rbd", "workload": "w", "iops": 900.0, "lat_mean_us": 10.0}
    b = dict(a, iops=1100.0, lat_mean_us=30.0)
    base = {"section": "vm", "path": "fio rbd (before)", "workload": "w", "iops": 1000.0}
    s1 = {"section": "settings", "path": "tcmu-rbd", "queue_depth": "128"}
    rows = report.annotate([a, base, dict(s1), b, dict(s1)])
    assert len(rows) == 3
    ours = rows[0]
    assert ours["passes"] == 2 and ours["iops"] == 1000 and ours["lat_mean_us"] == 20
    assert ours["spread_pct"] == pytest.approx(20) and ours["x_librbd"] == pytest.approx(1.0)
    assert "20%" in report.table(rows)


def test_table_json_and_chart(tmp_path):
    rows = report.annotate(_rows())
    text = report.table(rows)
    lines = text.splitlines()
    ours = next(l for l in lines if "tcmu-rbd" in l and "randread" in l)
    assert "1000" in ours and "1.00" in ours and "1.25" in ours
    assert any(l.startswith("4 LUNs: w") and "1.90" in l for l in lines)
    assert any(l.startswith("settings tcmu-rbd:") and "hw_max_sectors=2048" in l for l in lines)
    report.write_json(rows, str(tmp_path / "b.json"), {"k": 1})
    assert json.loads((tmp_path / "b.json").read_text())["rows"][1]["x_runner"] == 1.25
    report.chart(rows, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to chart"):
        report.chart([rows[0]], str(tmp_path / "c.png"))


def _complete(row):
    missing = [k for k in FIGURES if not isinstance(row.get(k), (int, float))]
    assert not missing, (missing, row)
    assert row["iops"] > 0 and row["commands"] > 0 and row["lat_p99_us"] > 0


def test_engine_bench_end_to_end(tmp_path, capsys):
    assert bench_main(["engine", "--set", "quick", "--seconds", "0.3", "--luns", "2",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    engine = [r for r in rows if r["section"] == "engine"]
    assert [r["workload"] for r in engine] == [w.label for w in QUICK]
    for r in engine:
        _complete(r)
    scaling = [r for r in rows if r["section"] == "native scaling"]
    assert [r["luns"] for r in scaling] == [1, 2] and scaling[0]["x_1lun"] == 1.0
    assert "randread 4K QD32" in out and "2 LUNs" in out
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert (tmp_path / "bench.txt").read_text().strip() in out


def test_rbd_bench_against_fio_on_the_cluster(ceph, rbd_image):
    rows = native.bench_rbd([Workload("randread", 4096, 8)], 0.5, 0, cluster=False,
                            conf=ceph.conf_path, keyring=ceph.admin_keyring,
                            image=rbd_image.name, pin=False)
    assert [r["path"] for r in rows] == ["fio rbd (before)", "engine+rbd", "fio rbd (after)"]
    for r in rows:
        _complete(r)
    report.annotate(rows)
    assert rows[1]["x_librbd"] > 0.2


def test_guest_cli_rows(ceph, rbd_image, tmp_path, monkeypatch):
    out = str(tmp_path / "rows.jsonl")
    monkeypatch.setenv("CEPH_CONF", ceph.conf_path)
    assert guest.main(["jobs", "--path", "fio rbd (before)", "--set", "quick",
                       "--seconds", "0.5", "--ramp", "0", "--out", out,
                       "rbd:" + rbd_image.spec]) == 0
    sleeper = subprocess.Popen(["sleep", "30.0417"])  # a command line no other process has
    deadline = time.monotonic() + 10
    while not procs.pids_matching("sleep 30.0417") and time.monotonic() < deadline:
        time.sleep(0.05)          # until the child has exec'd
    try:
        assert guest.main(["memory", "--path", "sleep", "--luns", "1", "--pattern", "sleep 30.0417",
                           "--out", out]) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert guest.main(["settings", "--path", "x", "--out", out, "queue_depth=128"]) == 0
    rows = [json.loads(l) for l in open(out)]
    jobs = [r for r in rows if r["section"] == "vm"]
    assert [r["workload"] for r in jobs] == [w.label for w in QUICK]
    for r in jobs:
        _complete(r)
    mem = next(r for r in rows if r["section"] == "memory")
    assert mem["processes"] == 1 and mem["rss_kb"] > 0
    assert rows[-1] == {"section": "settings", "path": "x", "queue_depth": "128"}
    with pytest.raises(SystemExit, match="no process matches"):
        guest.main(["memory", "--path", "none", "--luns", "1", "--pattern", "no-such-thing-xyz",
                    "--out", out])


def _readings_while_spinning(read, *names):
    """read() twice, 1 s apart, while a child's threads spin, each named as in
    names (None: left as Python leaves it)."""
    code = ("import ctypes, sys, threading, time\n"
            "def spin(name):\n"
            "    if name: ctypes.CDLL(None).prctl(15, name.encode())\n"
            "    t = time.time()\n    while time.time() - t < 3: pass\n"
            "for n in sys.argv[1:]:\n"
            "    threading.Thread(target=spin, args=(n if n != '-' else None,)).start()\n")
    child = subprocess.Popen([sys.executable, "-c", code] + [n or "-" for n in names])
    try:
        time.sleep(0.5)
        a = read(child.pid)
        time.sleep(1.0)
        b = read(child.pid)
    finally:
        child.wait()
    return a, b


def test_busiest_threads_by_name():
    (a, s0), (b, s1) = _readings_while_spinning(
        lambda pid: (procs.thread_ticks(), procs.cpu_split()), None, None)
    top = dict(procs.busiest(a, b))
    # Python 3.11 leaves its threads' OS names alone: both spinners are python/python,
    # summed (they share the GIL: about one CPU between them)
    assert top.get("python/python", 0) > 0.5, top
    assert sum(s1[k] - s0[k] for k in s0) > 0


def test_runner_ratio_is_the_median_of_the_pairs_of_passes():
    def row(path, iops, cpu):
        return {"section": "vm", "path": path, "workload": "w", "iops": iops, "cpu_us_per_cmd": cpu}
    ours, runner = [(100.0, 10.0), (300.0, 10.0), (200.0, 10.0)], [(100.0, 20.0), (100.0, 5.0), (250.0, 10.0)]
    rows = []
    for (a, ca), (b, cb) in zip(ours, runner):      # A B A B A B, as the VM runs them
        rows += [row("tcmu-rbd", a, ca), row(report.RUNNER, b, cb)]
    r = next(x for x in report.annotate(rows) if x["path"] == "tcmu-rbd")
    # pairs 1.0, 3.0, 0.8: their median, not the ratio of medians (200 / 100)
    assert (r["x_runner"], r["x_runner_lo"], r["x_runner_hi"]) == (1.0, 0.8, 3.0)
    assert r["cpu_x_runner"] == 1.0 and r["iops"] == 200 and r["passes"] == 3
    assert "0.80-3.00" in report.table([r])


def test_cpu_is_split_by_thread_group():
    assert procs.thread_group("tcmu-runner", "tcmu-runner") == "loop"
    assert procs.thread_group("python3", "python3") == "loop"
    assert procs.thread_group("python3", "msgr-worker-2") == "msgr"
    assert procs.thread_group("python3", "io_context_pool") == "librbd"
    a, b = _readings_while_spinning(lambda pid: procs.by_group(procs.cpu_by_thread([pid])),
                                    "msgr-worker-0")
    used = {k: b[k] - a[k] for k in a}
    assert used["msgr"] > 0.5 and used["librbd"] == 0 and used["loop"] < 0.3, used


def test_many_luns_table():
    row = {"section": "many", "path": "tcmu-rbd", "luns": 64, "processes": 66,
           "export_s": 181.25, "read_all_s": 4.5, "idle_cpu_pct": 3.25, "rss_kb": 900 << 10,
           "pss_kb": 640 << 10, "private_kb": 500 << 10, "ring_kb": 0, "pss_mb_per_lun": 10.0}
    lines = report.table(report.annotate([row])).splitlines()
    assert lines[0].startswith("== many LUNs on one gateway")
    assert lines[2].split() == ["tcmu-rbd", "64", "66", "181.2", "4.5", "640.0", "10.0", "3.2%"]
    assert not any(line.startswith("idle CPU ") for line in lines)    # an older row
    row["idle_cpu_pct_by_thread"] = {"python3/python": 20.5, "python3/msgr-worker": 9.0}
    lines = report.table(report.annotate([row])).splitlines()
    assert "idle CPU tcmu-rbd:    python3/python 20.5%, python3/msgr-worker 9.0%" in lines


def test_many_luns_helper_refuses_an_incomplete_up():
    from tcmu_rbd_lab.bench import many
    with pytest.raises(SystemExit):
        many.main(["up", "--luns", "2", "--target", "iqn.2003-01.x:y"])


def test_vm_passes_alternate_with_the_hosted_daemon_in_each_round():
    from tcmu_rbd_lab.bench.vm import alternation
    assert alternation(2) == ("tcmu-rbd", "tcmu-runner") * 2
    assert alternation(2, 8) == ("tcmu-rbd", "tcmu-rbd:8", "tcmu-runner") * 2
    assert alternation(1, 1) == ("tcmu-rbd", "tcmu-runner")     # 1 is the default model
