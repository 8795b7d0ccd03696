"""prctl(2) through tcmu_rbd.prctl: the one binding the worker, the spawner and the
failover thread use."""

import errno
import threading

from tcmu_rbd import prctl


def test_a_thread_is_named_for_the_kernel_in_15_bytes():
    got = []

    def run():
        prctl.name_thread(b"tcmu-failover-and-more")
        with open("/proc/self/task/%d/comm" % threading.get_native_id()) as f:
            got.append(f.read().strip())
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert got == ["tcmu-failover-a"]


def test_a_refusal_answers_its_errno():
    assert prctl.prctl(-1, 0) == errno.EINVAL
    assert prctl.prctl(prctl.PR_SET_PDEATHSIG, 12345) == errno.EINVAL    # no such signal
