"""Builds fasttun's extension: the Cython wrappers in src/fasttun/_core.pyx over the C core in csrc/."""

import os
import runpy
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

# The C sources come from the one manifest, csrc/sources.py (folders per part, per platform).
_manifest = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "sources.py"))
sources = ["src/fasttun/_core.pyx"] + [os.path.relpath(str(p)) for p in _manifest["sources"](sys.platform)]

if sys.platform == "win32":
    compile_args = ["/O2", "/W3", "/std:c11"] if "GCC" not in sys.version else ["-O2", "-std=c11"]
    libraries = ["iphlpapi", "ws2_32", "ole32"]
else:
    compile_args = ["-O2", "-std=c11", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"]
    libraries = ["pthread"]

extension = Extension(
    "fasttun._core",
    sources=sources,
    include_dirs=["csrc", "include"],
    extra_compile_args=compile_args,
    libraries=libraries,
    define_macros=[("_FILE_OFFSET_BITS", "64")],
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={"language_level": "3", "embedsignature": True},
        include_path=["src"],
    ),
)
