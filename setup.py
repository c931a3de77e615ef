"""Build hook for the one C extension (the packed-table lane decoder, nzip/entropy/_lanes_c.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be compiled, the
install still succeeds and nzip decodes with its numba kernels (same output, slower).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("nzip.entropy._lanes_c", ["nzip/entropy/_lanes_c.c"],
                             extra_compile_args=["-O3", "-std=c11"], optional=True)])
