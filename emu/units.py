"""Sizes: parsing `64k`-style arguments the way qemu-img does, and printing them the way it does."""

from __future__ import annotations

import math
import re

from emu.errors import UsageError

SECTOR_SIZE = 512
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_SUFFIX = {"b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": 1 << 50, "e": 1 << 60}
_SIZE_RE = re.compile(r"^(\d+)(?:\.(\d*))?([bkmgtpeBKMGTPE]?)$")


def parse_size(text: str, *, what: str = "size", default_suffix: str = "b") -> int:
    """Parse `512`, `64k`, `1.5G` (binary suffixes, as qemu_strtosz) into bytes."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise UsageError(f"invalid {what} '{text}': expected a number with an optional k/M/G/T/P/E suffix")
    whole, frac, suffix = match.groups()
    mul = _SUFFIX[(suffix or default_suffix).lower()]
    if frac and mul == 1:
        raise UsageError(f"invalid {what} '{text}': a fraction needs a k/M/G/T suffix")
    value = int(whole) * mul
    if frac:
        value += int(frac) * mul // (10 ** len(frac))
    if value >= 1 << 63:
        raise UsageError(f"invalid {what} '{text}': too large")
    return value


def human_size(value: int) -> str:
    """Format like qemu's size_to_str: three significant digits and an IEC prefix (`1023.938 MiB` is %g)."""
    if value == 0:
        return "0 B"
    exp = math.frexp(value / (1000.0 / 1024.0))[1]
    shift = (exp - 1) // 10 * 10
    prefix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][shift // 10]
    return f"{value / (1 << shift):0.3g} {prefix}B"


def align_down(value: int, align: int) -> int:
    return value - value % align


def align_up(value: int, align: int) -> int:
    return -(-value // align) * align
