"""The Debian package (debian/, built by scripts/build-deb), built once from this
tree and checked on the host: its files (dpkg-deb -c), control fields and
maintainer scripts, no lab and no tests inside, its Python modules and cffi
extension importing from the extracted tree with Debian's python3, lintian without
errors, and an install: dpkg -i in a private mount namespace whose /usr, /etc and
/var are tmpfs overlays (the host's files stay as they are), where tcmu-runner
gives way (Conflicts + Replaces), `systemd-analyze verify` passes on the installed
unit and both entry points run.

Not here: the package serving an image in the real kernel (tests/vm/test_package_lab.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("dpkg-buildpackage", "dh", "pybuild", "dpkg-deb", "systemd-analyze", "lintian")
SYSTEM_PY = "/usr/bin/python3"

UNIT = "lib/systemd/system/tcmu-rbd.service"
FILES = {  # path in the package -> the tree's file it must be, byte for byte
    UNIT: "packaging/tcmu-rbd.service",
    "usr/share/dbus-1/system.d/org.kernel.TCMUService1.conf": "packaging/org.kernel.TCMUService1.conf",
    "usr/share/dbus-1/system-services/org.kernel.TCMUService1.service":
        "packaging/org.kernel.TCMUService1.service",
    "etc/tcmu-rbd/tcmu-rbd.conf": "packaging/tcmu-rbd.conf",
    "lib/systemd/system/rtslib-fb-targetctl.service.d/tcmu-rbd.conf":
        "packaging/rtslib-fb-targetctl.service.d/tcmu-rbd.conf",
}
DIST = "usr/lib/python3/dist-packages"
EXECUTABLES = ("usr/bin/tcmu-rbd", "usr/bin/targetcli-rbd")
DEPENDS = ("python3-cffi-backend", "python3-rbd", "python3-rados", "python3-dbus",
           "python3-rtslib-fb", "python3-configshell-fb", "python3-prometheus-client",
           "targetcli-fb", "librbd1", "librados2", "libc6")


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: scripts/setup installs the package build tools")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(REPO / "scripts" / "build-deb"), str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"scripts/build-deb failed:\n{r.stderr}"
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out, r.stdout
    return path


@pytest.fixture(scope="module")
def contents(deb) -> dict[str, str]:
    """Path (no leading ./) -> the mode column of dpkg-deb -c, files and links only."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                         check=True).stdout
    rows = {}
    for line in out.splitlines():
        mode, *_, name = line.split(None, 5)
        name = name.split(" -> ")[0].removeprefix("./")
        if not mode.startswith("d"):
            rows[name] = mode
    return rows


@pytest.fixture(scope="module")
def extracted(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                          text=True, check=True).stdout.strip()


def _version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def names(relation: str) -> set[str]:
    """Package names of a Depends-style field (versions and :any dropped)."""
    return {alt.strip().split()[0].split(":")[0]
            for part in relation.split(",") for alt in part.split("|") if alt.strip()}


def test_files_and_modes(contents, extracted):
    for path, source in FILES.items():
        assert path in contents, f"{path} not in the package"
        assert (extracted / path).read_bytes() == (REPO / source).read_bytes(), path
    for exe in EXECUTABLES:
        assert contents.get(exe, "").startswith("-rwxr-xr-x"), (exe, contents.get(exe))
        assert (extracted / exe).read_text().startswith("#!/usr/bin/python3\n"), exe
    assert f"{DIST}/tcmu_rbd/_native.abi3.so" in contents
    # the unit's Documentation= names a file the package ships
    assert "Documentation=file:/usr/share/doc/tcmu-rbd/README.md.gz" in (extracted / UNIT).read_text()
    assert "usr/share/doc/tcmu-rbd/README.md.gz" in contents
    assert "usr/share/doc/tcmu-rbd/copyright" in contents
    # debian/rules gives Debian 12's setuptools the license in the form it reads
    metadata = (extracted / DIST / f"tcmu_rbd-{_version()}.dist-info" / "METADATA").read_text()
    assert "\nLicense: Apache-2.0\n" in metadata


def test_every_gateway_module_is_packaged(contents):
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "tcmu_rbd/*.py",
                              "targetcli_ext/*.py"], capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout
        tracked = [str(p.relative_to(REPO)) for d in ("tcmu_rbd", "targetcli_ext")
                   for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts]
    missing = [m for m in tracked if f"{DIST}/{m}" not in contents]
    assert tracked and not missing, missing


def test_no_lab_no_tests(contents):
    bad = [p for p in contents if "tcmu_rbd_lab" in p or "/tests/" in p or "conftest" in p
           or Path(p).name.startswith("test_") or "/vagrant/" in p]
    assert not bad, bad
    tops = {p.split("/")[4] for p in contents if p.startswith(DIST + "/")}
    assert tops == {"tcmu_rbd", "targetcli_ext", f"tcmu_rbd-{_version()}.dist-info"}, tops


def test_control_fields(deb):
    assert field(deb, "Package") == "tcmu-rbd"
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert field(deb, "Architecture") == arch
    assert field(deb, "Version") == _version()
    depends = names(field(deb, "Depends"))
    assert set(DEPENDS) <= depends, set(DEPENDS) - depends
    assert "python3" in depends
    # the cffi compiler (python3-cffi, pycparser) is a build dependency only
    assert "python3-cffi" not in depends
    for rel in ("Conflicts", "Replaces"):
        assert names(field(deb, rel)) == {"tcmu-runner"}, rel


def test_maintainer_scripts(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "c")], check=True)
    control = tmp_path / "c"
    assert (control / "conffiles").read_text().split() == ["/etc/tcmu-rbd/tcmu-rbd.conf"]
    postinst = (control / "postinst").read_text()
    # dh_installsystemd: enabled at install, started where systemd runs
    assert "deb-systemd-helper enable 'tcmu-rbd.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'tcmu-rbd.service'" in postinst
    assert "py3compile -p tcmu-rbd" in postinst


def test_extracted_modules_import(extracted):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(extracted / DIST),
           "PYTHONDONTWRITEBYTECODE": "1"}
    code = ("import tcmu_rbd._native, tcmu_rbd.daemon, targetcli_ext.cli, tcmu_rbd_lab\n")
    r = subprocess.run([SYSTEM_PY, "-s", "-c", code], env=env, cwd=extracted,
                       capture_output=True, text=True)
    # the lab is not in the package, and Debian's python3 has no other copy
    assert "No module named 'tcmu_rbd_lab'" in r.stderr, r.stderr
    code = "import tcmu_rbd._native as n, targetcli_ext.cli; print(n.__file__); print(n.lib)"
    r = subprocess.run([SYSTEM_PY, "-s", "-c", code], env=env, cwd=extracted,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(extracted / DIST / "tcmu_rbd" / "_native.abi3.so")


def test_lintian_no_errors(deb):
    r = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True,
                       text=True, timeout=300)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors, r.stdout


# dpkg -i where only this process sees it: every directory dpkg writes is an overlay
# in a private mount namespace (checked before dpkg runs), no service is started or
# stopped (policy-rc.d; /run/systemd hidden if the host runs systemd)
INSTALL = r"""
set -euo pipefail
deb=$1 up=$2
mount -t tmpfs tmpfs "$up"
for d in usr etc var; do
  mkdir -p "$up/$d/u" "$up/$d/w"
  mount -t overlay -o "lowerdir=/$d,upperdir=$up/$d/u,workdir=$up/$d/w" "pkgtest-$d" "/$d"
  [ "$(findmnt -n -o FSTYPE --mountpoint "/$d")" = overlay ] || { echo "/$d: no overlay" >&2; exit 1; }
done
[ ! -d /run/systemd ] || mount -t tmpfs tmpfs /run/systemd
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
rm -f /var/lib/man-db/auto-update
dpkg -i "$deb" >"$up/dpkg.log" 2>&1 || { cat "$up/dpkg.log" >&2; exit 1; }
echo "status: $(dpkg-query -W -f='${Status}' tcmu-rbd)"
echo "runner: $(dpkg-query -W -f='${Status}' tcmu-runner 2>/dev/null || echo unknown)"
echo "enabled: $(readlink /etc/systemd/system/multi-user.target.wants/tcmu-rbd.service)"
if v=$(systemd-analyze verify tcmu-rbd.service 2>&1); then echo "verify: ok"
else echo "verify: failed: ${v//$'\n'/ | }"; fi
/usr/bin/tcmu-rbd --help | head -n 1 | sed 's/^/daemon: /'
/usr/bin/targetcli-rbd --help | head -n 1 | sed 's/^/targetcli-rbd: /'
"""


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory) -> dict[str, str]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the namespace install needs root and unshare (util-linux)")
    up = tmp_path_factory.mktemp("overlay")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                        INSTALL, "install", str(deb), str(up)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert not Path("/usr/bin/targetcli-rbd").exists(), "the install reached the host"
    return dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)


def test_installs_replacing_tcmu_runner(installed):
    assert installed["status"] == "install ok installed"
    # removed where it was installed (scripts/setup installs it as a benchmark peer)
    # (dpkg keeps its selection: "install ok config-files")
    assert installed["runner"] == "unknown" or \
        installed["runner"].endswith((" config-files", " not-installed")), installed["runner"]
    assert installed["enabled"] == "/lib/systemd/system/tcmu-rbd.service"


def test_systemd_analyze_verify_installed_unit(installed):
    assert installed.get("verify") == "ok", installed


def test_installed_entry_points_run(installed):
    assert installed["daemon"].startswith("usage: tcmu-rbd")
    assert installed["targetcli-rbd"].startswith("usage: targetcli-rbd")
