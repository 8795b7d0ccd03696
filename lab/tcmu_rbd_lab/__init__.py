"""The tcmu-rbd lab: what tests and benchmarks need, never installed on a gateway.

A distribution of its own (``lab/pyproject.toml``): the gateway package
(``tcmu_rbd``, ``targetcli_ext``) never imports it, and a test pins that.

emulator  the kernel side of the TCMU ring, in C (native/emulator.c), for tests
rig       the emulator wired to the real engine and handler
ceph      a throwaway single-node Ceph cluster on loopback (Debian's packages)
vm        Debian's kernel under QEMU/TCG with the host root shared in (virtme-ng)
bench     the benchmarks, side by side with the peers
"""
