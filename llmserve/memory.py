"""Process memory: give freed pages back to the OS, and read the resident set size. No heavy imports."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys


def trim_process_memory() -> bool:
    """`malloc_trim(0)` on glibc, so that freed heap pages leave the RSS. Returns whether it ran."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False
    return True


def resident_bytes() -> int | None:
    """This process's resident set size, from /proc on Linux; None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
