"""Builds the C core (csrc/) and the CPython binding into reqrep._reqrep."""

from pathlib import Path

from setuptools import Extension, setup

core = sorted(str(p) for p in Path("csrc").glob("rr_*.c"))

setup(
    ext_modules=[
        Extension(
            "reqrep._reqrep",
            sources=["src/reqrep/_reqrepmodule.c", *core],
            include_dirs=["csrc"],
            depends=[str(p) for p in Path("csrc").glob("*.h")],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-fvisibility=hidden"],
        )
    ],
)
