"""Builds the C core (csrc/) and its CPython binding (src/reqrep/_reqrep/) into reqrep._reqrep."""

from pathlib import Path

from setuptools import Extension, setup

core = sorted(str(p) for p in Path("csrc").glob("rr_*.c"))
binding = sorted(str(p) for p in Path("src/reqrep/_reqrep").glob("*.c"))
headers = sorted(str(p) for d in ("csrc", "src/reqrep/_reqrep") for p in Path(d).glob("*.h"))

setup(
    ext_modules=[
        Extension(
            "reqrep._reqrep",
            sources=[*binding, *core],
            include_dirs=["csrc"],
            depends=headers,
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-fvisibility=hidden"],
        )
    ],
)
