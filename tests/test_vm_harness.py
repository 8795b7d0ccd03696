"""Host-side tests of the VM harness (no VM boots here): kernel discovery, the guest
check library's JSON records, result parsing and the lab scripts' syntax."""

import json
import subprocess
from pathlib import Path

import pytest

from tcmu_rbd_lab import vm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "vagrant" / "scripts").glob("*.sh")) + sorted(
    (REPO / "tests" / "vm").glob("**/*.sh"))


def _kernel(boot, mods, ver, with_tcmu=True):
    (boot / f"vmlinuz-{ver}").write_text("")
    d = mods / ver / "kernel" / "drivers" / "target"
    d.mkdir(parents=True)
    if with_tcmu:
        (d / "target_core_user.ko").write_text("")


def test_find_kernel_newest_with_tcmu(tmp_path):
    boot, mods = tmp_path / "boot", tmp_path / "mods"
    boot.mkdir()
    _kernel(boot, mods, "6.1.0-9-amd64")
    _kernel(boot, mods, "6.1.0-56-amd64")
    _kernel(boot, mods, "6.1.0-60-amd64", with_tcmu=False)
    image, ver = vm.find_kernel(boot, mods)
    assert ver == "6.1.0-56-amd64" and image == boot / "vmlinuz-6.1.0-56-amd64"


def test_find_kernel_none_is_loud(tmp_path):
    with pytest.raises(vm.VMError, match="target_core_user"):
        vm.find_kernel(tmp_path, tmp_path)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_guest_lib_records(tmp_path):
    lib = REPO / "tests" / "vm" / "guest" / "lib.sh"
    script = tmp_path / "s.sh"
    script.write_text(f""". {lib}
check good echo 'quote" back\\ tab\t'
check bad sh -c 'echo oops >&2; exit 3'
fact disk /dev/sdz
step last true
""")
    env = {"PATH": "/usr/bin:/bin", "TCMU_RBD_RESULTS": str(tmp_path), "LAB_SCRIPTS": "/x"}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    res = vm.VMResult(0, tmp_path, 1.0, 2.0)
    (tmp_path / "console.out").write_text("")
    run = vm.GuestRun.load(res)
    assert run.get("good")["ok"] and 'quote" back\\ tab' in run.get("good")["output"]
    assert not run.get("bad")["ok"] and run.get("bad")["rc"] == 3
    assert "oops" in run.get("bad")["output"]
    assert run.fact("disk") == "/dev/sdz"
    assert [r["name"] for r in run.failed()] == ["bad"]
    run.assert_ok("good")
    with pytest.raises(AssertionError, match="oops"):
        run.assert_ok("bad")
    with pytest.raises(AssertionError, match="never ran"):
        run.assert_ok("missing")


def test_step_failure_ends_script(tmp_path):
    lib = REPO / "tests" / "vm" / "guest" / "lib.sh"
    script = tmp_path / "s.sh"
    script.write_text(f". {lib}\nstep first false\ncheck second true\n")
    env = {"PATH": "/usr/bin:/bin", "TCMU_RBD_RESULTS": str(tmp_path), "LAB_SCRIPTS": "/x"}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True)
    assert r.returncode == 1
    names = [json.loads(line)["name"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert names == ["first"]
