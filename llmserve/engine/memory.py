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


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _own_cgroups() -> list[tuple[str, str]]:
    """(controllers, path) of each line of /proc/self/cgroup; controllers "" is cgroup v2's."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        found.append((controllers, path))
    return found


def cgroup_memory(root: str = "/sys/fs/cgroup") -> tuple[int, int] | None:
    """(limit, usage) in bytes of the memory cgroup this process is in, v2 (`memory.max`,
    `memory.current`) or v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`), usage without the
    inactive page cache; None when no limit is set (v1 writes a huge number for none)."""
    for controllers, path in _own_cgroups():
        if controllers == "":
            base = os.path.join(root, path.lstrip("/"))
            limit, usage = _read_int(f"{base}/memory.max"), _read_int(f"{base}/memory.current")
            inactive = _stat(f"{base}/memory.stat", "inactive_file")
        elif "memory" in controllers.split(","):
            base = os.path.join(root, "memory", path.lstrip("/"))
            limit = _read_int(f"{base}/memory.limit_in_bytes")
            usage = _read_int(f"{base}/memory.usage_in_bytes")
            inactive = _stat(f"{base}/memory.stat", "total_inactive_file")
        else:
            continue
        if limit is not None and usage is not None and limit < 1 << 60:
            # page cache the kernel reclaims before it kills anything is not in use (as `docker stats`)
            return limit, max(0, usage - inactive)
    return None


def _stat(path: str, key: str) -> int:
    try:
        with open(path, encoding="ascii") as file:
            for line in file:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def meminfo_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_host_memory() -> int | None:
    """Bytes this process may still take on the host: the least of what its memory cgroup leaves and what
    the kernel says is available. None where neither can be read."""
    found = [n for n in (meminfo_available(),) if n is not None]
    cgroup = cgroup_memory()
    if cgroup is not None:
        found.append(max(0, cgroup[0] - cgroup[1]))
    return min(found) if found else None


def available_memory(device: str) -> int | None:
    """Bytes still free on `device` ("cpu", "cuda:N") for this process."""
    if device == "cpu":
        return available_host_memory()
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)
