# The cffi extension (tcmu_rbd._native) is built from native/ at install time.
from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])
