"""Benchmarks side by side with the peers (python -m tcmu_rbd_lab.bench; see __main__).

workloads  the jobs, one list for every path
fio        fio command lines and their JSON
procs      CPU and memory of the servers under test, from /proc
native     emulated ring -> engine -> memory / rbd backend, no kernel
vm         the full stack in a VM (host side); guest.py + vm_guest.sh inside it
report     ratios, the table, JSON, the chart
"""
