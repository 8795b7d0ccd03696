"""Rows -> ratios, one printed table, JSON and a PNG chart.

A row is a dict with "section" (native, vm, native scaling, vm scaling, memory,
settings), "path" (what served the I/O), "workload" and figures.  The baseline of
a workload is direct librbd: the mean of the "fio rbd (before)" and "(after)" rows
of the same section (the OSD's speed drifts over a run).
"""

from __future__ import annotations

import json
import statistics

LIBRBD = "fio rbd"
RUNNER = "tcmu-runner"


def _is_baseline(row: dict) -> bool:
    return row["path"].startswith(LIBRBD)


_KEY = ("section", "path", "workload", "luns")
_MEAN = ("iops", "mbps", "lat_mean_us", "lat_p99_us", "cpu_us_per_cmd",
         "commands", "rss_kb", "pss_kb", "private_kb", "ring_kb")


def merge_passes(rows: list[dict]) -> list[dict]:
    """One row per (section, path, workload, LUNs): the median of its passes (the VM
    alternates the TCMU daemons, A B A B..., so that drift cancels), with the spread
    of their IOPS (max - min, % of the median) and each pass's IOPS and CPU per
    command in order (pass_iops, pass_cpu: annotate pairs them).  Identical
    settings rows collapse."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in _KEY)
        if r["section"] == "settings":
            key += tuple(sorted(r.items()))
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        if len(group) == 1 or group[0]["section"] == "settings":
            out.append(group[0])
            continue
        m = dict(group[0], passes=len(group))
        for f in _MEAN:
            if f in m:
                m[f] = statistics.median(g[f] for g in group)
        if "cpu_us_by_group" in m:
            m["cpu_us_by_group"] = {k: statistics.median(g["cpu_us_by_group"][k] for g in group)
                                    for k in m["cpu_us_by_group"]}
        if "iops" in m and m["iops"]:
            ios = [g["iops"] for g in group]
            m["spread_pct"] = (max(ios) - min(ios)) / m["iops"] * 100
            m["pass_iops"] = ios
            if "cpu_us_per_cmd" in m:
                m["pass_cpu"] = [g["cpu_us_per_cmd"] for g in group]
        out.append(m)
    return out


def _pairs(a: list, b: list) -> list[float]:
    """a[i] / b[i] for the passes run next to each other (A B A B...)."""
    return [x / y for x, y in zip(a, b) if y]


def _against_runner(r: dict, runner: dict) -> None:
    """x_runner: the median over the pairs of passes of IOPS / tcmu-runner's IOPS,
    with the lowest and highest pair (x_runner_lo/hi); cpu_x_runner the same for CPU
    per command (below 1: less CPU than tcmu-runner).  Without passes to pair: the
    ratio of the figures."""
    ios = _pairs(r.get("pass_iops", [r["iops"]]), runner.get("pass_iops", [runner["iops"]]))
    if ios:
        r["x_runner"] = statistics.median(ios)
        r["x_runner_lo"], r["x_runner_hi"] = min(ios), max(ios)
    if r.get("cpu_us_per_cmd") and runner.get("cpu_us_per_cmd"):
        cpu = _pairs(r.get("pass_cpu", [r["cpu_us_per_cmd"]]),
                     runner.get("pass_cpu", [runner["cpu_us_per_cmd"]]))
        if cpu:
            r["cpu_x_runner"] = statistics.median(cpu)


def annotate(rows: list[dict]) -> list[dict]:
    """Merge repeated passes, then add x_librbd, x_runner (same section and
    workload) and x_1lun (scaling) ratios.  Returns the rows to report."""
    rows = merge_passes(rows)
    by = {}
    for r in rows:
        by.setdefault((r["section"], r.get("workload")), []).append(r)
    for (section, _), group in by.items():
        if section in ("native", "vm"):
            base = [r["iops"] for r in group if _is_baseline(r)]
            runner = next((r for r in group if r["path"] == RUNNER), None)
            for r in group:
                if base and not _is_baseline(r):
                    r["x_librbd"] = r["iops"] / statistics.fmean(base)
                if runner is not None and r["path"] != RUNNER and not _is_baseline(r):
                    _against_runner(r, runner)
        elif section.endswith("scaling"):
            one = {r["path"]: r["iops"] for r in group if r["luns"] == 1}
            for r in group:
                if r["path"] in one:
                    r["x_1lun"] = r["iops"] / one[r["path"]]
    mem = {}
    for r in rows:
        if r["section"] == "memory":
            mem.setdefault(r["path"], {})[r["luns"]] = r
    for path, by_luns in mem.items():
        for n, r in by_luns.items():
            r["pss_mb_per_lun"] = r["pss_kb"] / 1024 / n
            if n > 1 and 1 in by_luns:
                # what one more LUN costs: shared libraries and the daemon are paid once
                r["added_mb_per_lun"] = (r["pss_kb"] - by_luns[1]["pss_kb"]) / 1024 / (n - 1)
    return rows


# key, heading, width, format (text columns left-aligned)
_COLS = [("workload", "workload", 33, "%s"), ("path", "path", 17, "%s"),
         ("iops", "IOPS", 9, "%.0f"), ("mbps", "MB/s", 8, "%.1f"),
         ("lat_mean_us", "mean us", 8, "%.0f"), ("lat_p99_us", "p99 us", 8, "%.0f"),
         ("cpu_us_per_cmd", "CPU us", 8, "%.1f"), ("x_librbd", "xlibrbd", 7, "%.2f"),
         ("x_runner", "xrunner", 7, "%.2f"), ("pairs", "pairs", 9, "%s"),
         ("cpu_x_runner", "CPUxR", 5, "%.2f"), ("cpu_groups", "loop/msgr/rbd us", 16, "%s"),
         ("x_1lun", "x1LUN", 6, "%.2f"), ("spread_pct", "spread", 6, "%.0f%%")]
_TITLES = {"engine": "engine ceiling: emulated ring -> engine -> memory backend, one core",
           "native": "native (no kernel): emulated ring -> engine",
           "native scaling": "native scaling: LUNs at once, one process each",
           "vm": "full stack in the VM: fio libaio direct on the disk",
           "vm scaling": "VM scaling: LUNs at once, one iSCSI session each"}


def _cell(text: str, width: int, left: bool) -> str:
    return text.ljust(width) if left else text.rjust(width)


def table(rows: list[dict]) -> str:
    out = []
    for s, title in _TITLES.items():
        if not any(r["section"] == s for r in rows):
            continue
        out.append("== " + title)
        out.append("  ".join(_cell(h, w, i < 2) for i, (_, h, w, _f) in enumerate(_COLS)).rstrip())
        for r in rows:
            if r["section"] != s:
                continue
            cells = []
            for i, (key, _, width, fmt) in enumerate(_COLS):
                v = r.get(key)
                if key == "pairs" and "x_runner_lo" in r:
                    v = "%.2f-%.2f" % (r["x_runner_lo"], r["x_runner_hi"])
                if key == "cpu_groups" and "cpu_us_by_group" in r:
                    v = "/".join("%.0f" % x for x in r["cpu_us_by_group"].values())
                if key == "workload" and "luns" in r:
                    v = "%d LUN%s: %s" % (r["luns"], "s" if r["luns"] > 1 else "", v.replace(" per LUN", " each"))
                cells.append(_cell("" if v is None else fmt % v, width, i < 2))
            out.append("  ".join(cells).rstrip())
    _plain(out, "memory of the server processes (PSS: shared pages split among the processes "
           "that map them; ring: the kernel's TCMU data area they map)",
           (("LUNs", 4), ("procs", 5), ("RSS MB", 8), ("PSS MB", 8), ("PSS/LUN", 9),
            ("added/LUN", 9), ("ring MB", 8)),
           [(r["path"], "%d" % r["luns"], "%d" % r["processes"], "%.1f" % (r["rss_kb"] / 1024),
             "%.1f" % (r["pss_kb"] / 1024), "%.1f" % r["pss_mb_per_lun"],
             "%.1f" % r["added_mb_per_lun"] if r.get("added_mb_per_lun") is not None else "",
             "%.1f" % (r.get("ring_kb", 0) / 1024))
            for r in rows if r["section"] == "memory"])
    _plain(out, "many LUNs on one gateway (created 8 at a time through rtslib, then a 4 KiB "
           "read from each; CPU/LUN: the daemon's CPU while they came up, per LUN; idle: no "
           "I/O for 10 s; PSS without the rings)",
           (("LUNs", 4), ("procs", 5), ("start s", 9), ("CPU/LUN", 9), ("read all", 9),
            ("PSS MB", 8), ("PSS/LUN", 8), ("idle CPU", 8)),
           [(r["path"], "%d" % r["luns"], "%d" % r["processes"], "%.1f" % r["export_s"],
             "%.2f s" % (r["start_cpu_s"] / r["luns"]) if "start_cpu_s" in r else "",
             "%.1f" % r["read_all_s"], "%.1f" % (r["pss_kb"] / 1024),
             "%.1f" % r["pss_mb_per_lun"], "%.1f%%" % r["idle_cpu_pct"])
            for r in rows if r["section"] == "many"])
    for r in rows:
        if r["section"] == "many" and r.get("start_cpu_pct_by_thread"):
            out.append("start CPU %-11s %s" % (r["path"] + ":", ", ".join(
                "%s %.1f%%" % kv for kv in r["start_cpu_pct_by_thread"].items())))
    for r in rows:
        if r["section"] == "many" and r.get("idle_cpu_pct_by_thread"):
            out.append("idle CPU %-12s %s" % (r["path"] + ":", ", ".join(
                "%s %.1f%%" % kv for kv in r["idle_cpu_pct_by_thread"].items())))
    for r in rows:
        if r["section"] == "settings":
            out.append("settings %-12s %s" % (r["path"] + ":", " ".join(
                "%s=%s" % (k, v) for k, v in r.items() if k not in ("section", "path"))))
    return "\n".join(out)


def _plain(out: list[str], title: str, heads, rows) -> None:
    """A titled table (nothing when there are no rows): a path column, then the
    (name, width) columns of heads, right-aligned; rows: their cells, formatted."""
    if not rows:
        return
    out.append("== " + title)
    for cells in [("path",) + tuple(h for h, _ in heads)] + rows:
        out.append("  ".join(["%-22s" % cells[0]] + ["%*s" % (w, c) for (_, w), c in
                                                      zip(heads, cells[1:])]).rstrip())


def write_json(rows: list[dict], path: str, meta: dict) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


def chart(rows: list[dict], path: str) -> None:
    """One PNG: ratios to direct librbd per workload (VM, native), and scaling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for section in ("vm", "native"):
        ratio_rows = [r for r in rows if r["section"] == section and "x_librbd" in r]
        if ratio_rows:
            panels.append(("ratio", section, ratio_rows))
    scaling = [r for r in rows if r["section"].endswith("scaling") and "x_1lun" in r]
    if scaling:
        panels.append(("scaling", None, scaling))
    if not panels:
        raise ValueError("nothing to chart: no ratios in the rows")
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for ax, (kind, section, rs) in zip(axes[:, 0], panels):
        if kind == "ratio":
            workloads = list(dict.fromkeys(r["workload"] for r in rs))
            paths = list(dict.fromkeys(r["path"] for r in rs))
            width = 0.8 / len(paths)
            for i, p in enumerate(paths):
                ys = [next((r["x_librbd"] for r in rs if r["path"] == p and r["workload"] == w), 0)
                      for w in workloads]
                ax.bar([x + i * width for x in range(len(workloads))], ys, width, label=p)
            ax.set_xticks([x + width * (len(paths) - 1) / 2 for x in range(len(workloads))])
            ax.set_xticklabels(workloads, rotation=20, ha="right", fontsize=8)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.axhline(0.9, color="grey", linewidth=0.8, linestyle="--")
            ax.set_ylabel("IOPS / direct librbd (fio rbd)")
            ax.set_title({"vm": "Full stack in the VM (iSCSI, LIO, TCMU)",
                          "native": "Native: emulated ring -> engine -> librbd"}[section])
        else:
            for key in dict.fromkeys((r["section"], r["path"]) for r in rs):
                pts = sorted((r["luns"], r["x_1lun"]) for r in rs if (r["section"], r["path"]) == key)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label="%s: %s" % key)
            ax.set_xlabel("LUNs at once")
            ax.set_ylabel("total IOPS / one LUN")
            ax.set_title("Scaling (%s per LUN)" % rs[0]["workload"].replace(" per LUN", ""))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
