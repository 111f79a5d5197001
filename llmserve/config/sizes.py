"""Memory sizes as people write them ("12GiB", "500MB", "1.5G") and the per-device memory budget.

`--memory-budget 12GiB` gives every device 12 GiB; `cpu=20GiB,cuda:0=70GiB` gives each named device its
own (a device not named is not limited; `cuda=...` covers every CUDA device not named on its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}

# A device's footprint: bytes per device name ("cpu", "cuda:0").
Footprint = dict[str, int]


def parse_size(text: str) -> int:
    """Bytes. KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB and the bare K/M/G/T powers of 1024."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not a size (examples: 12GiB, 500MB, 1.5G, 1073741824)")
    number, unit = float(match.group(1)), match.group(2).lower()
    prefix = unit.rstrip("b").rstrip("i")
    base = 1000 if unit.endswith("b") and not unit.endswith("ib") and prefix else 1024
    return int(number * base ** _POWER[prefix])


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class Budget:
    """How many bytes of models each device may hold. `every`: the limit of devices not in `devices`."""

    every: int | None = None
    devices: dict[str, int] = field(default_factory=dict)

    def limit(self, device: str) -> int | None:
        if device in self.devices:
            return self.devices[device]
        if device.startswith("cuda") and "cuda" in self.devices:
            return self.devices["cuda"]
        return self.every

    def describe(self) -> str:
        if self.every is not None:
            return f"{format_size(self.every)} per device"
        return ", ".join(f"{d}={format_size(b)}" for d, b in self.devices.items())


def parse_budget(text: str) -> Budget:
    """`12GiB` (every device) or `cpu=20GiB,cuda:0=70GiB`. Raises ValueError with a readable message."""
    if "=" not in text:
        return Budget(every=_positive(text))
    devices: dict[str, int] = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        name = name.strip().lower()
        if not _DEVICE.match(name):
            raise ValueError(f"'{name}' is not a device; use cpu, cuda or cuda:N")
        if name in devices:
            raise ValueError(f"device '{name}' is given twice")
        devices[name] = _positive(size)
    return Budget(devices=devices)


def _positive(text: str) -> int:
    size = parse_size(text)
    if size <= 0:
        raise ValueError(f"'{text.strip()}' is not a positive size")
    return size
