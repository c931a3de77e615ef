"""Build hook for the C extensions: the lane decoder (nzip/entropy/_lanes_c.c) and the top-k scan
(nzip/_scan_c.c).

Everything else is in pyproject.toml. The extensions are optional: where they cannot be compiled,
the install still succeeds and nzip runs its numba kernels (same output, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("nzip.entropy._lanes_c", ["nzip/entropy/_lanes_c.c"],
                             extra_compile_args=["-O3", "-std=c11"], libraries=["m"], optional=True),
                   Extension("nzip._scan_c", ["nzip/_scan_c.c"], extra_compile_args=["-O3", "-std=c11"],
                             optional=True)])
