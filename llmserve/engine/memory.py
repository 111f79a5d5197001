"""Process memory: give freed pages back to the OS, read the resident set size, and measure what a model
load adds to it. No heavy imports."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

_LAST_LOAD = threading.local()  # .growth: this thread's last metered load


def trim_process_memory() -> bool:
    """`malloc_trim(0)` on glibc, so that freed heap pages leave the RSS. Returns whether it ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def resident_bytes() -> int | None:
    """This process's resident set size, from /proc on Linux; None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def settle() -> None:
    """Collects garbage and gives the freed heap pages back to the OS, so the RSS is what is held."""
    gc.collect()
    trim_process_memory()


@contextlib.contextmanager
def metered_load(trim_every: float = 0.25) -> Iterator[None]:
    """Around one model load: records what the process's RSS grew by (never below 0), settled on both
    sides so that the load's freed temporaries do not count, for `last_load_growth` on this thread.
    Meanwhile a thread trims the heap every `trim_every` seconds: glibc keeps the holes the load's
    temporaries leave (each tensor read, then quantized or converted), and they would add up to a peak
    above the model's own size. The RSS is the whole process's: hold the engines' load lock, so that
    loads are measured one at a time."""
    _LAST_LOAD.growth = None
    settle()
    before = resident_bytes()
    done = threading.Event()
    trimmer = threading.Thread(target=_trim_until, args=(done, trim_every), name="llmserve-trim", daemon=True)
    trimmer.start()
    try:
        yield
    finally:
        done.set()
        trimmer.join()
    settle()
    after = resident_bytes()
    _LAST_LOAD.growth = None if before is None or after is None else max(0, after - before)


def _trim_until(done: threading.Event, every: float) -> None:
    while not done.wait(every):
        trim_process_memory()


def last_load_growth() -> int | None:
    """The growth of this thread's last metered load, and forgets it; None when no load was metered."""
    growth = getattr(_LAST_LOAD, "growth", None)
    _LAST_LOAD.growth = None
    return growth
