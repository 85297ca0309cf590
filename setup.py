"""Builds fasttun's extension: the Cython wrappers in src/fasttun/_core.pyx over the C core in csrc/."""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

COMMON = ["ft_device.c", "ft_reader.c", "ft_backend_memory.c", "ft_offload.c", "ft_icmp.c",
          "ft_linux_events.c"]
PLATFORM = {
    "win32": ["ft_os_win32.c", "ft_wintun_loader.c", "ft_backend_wintun.c", "ft_win_config.c", "ft_backend_udp.c"],
    "linux": ["ft_os_posix.c", "ft_backend_linux.c", "ft_linux_netlink.c", "ft_backend_udp.c"],
}


def platform_key():
    if sys.platform == "win32":
        return "win32"
    if sys.platform.startswith("linux"):
        return "linux"
    return "posix"


key = platform_key()
sources = ["src/fasttun/_core.pyx"] + [os.path.join("csrc", f) for f in COMMON + PLATFORM.get(key, ["ft_os_posix.c"])]

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
