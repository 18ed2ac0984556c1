"""How long a device takes per block-layer request: the latency model a `DeviceClock` times completions with.

Time wraps the functional layers and never lives inside them (SimPy's `Cable` pattern): the Drive runs
each request at once and deterministically; the device's clock only decides when its completion is delivered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from emu.block.request import Op

# A model, not a measurement: round numbers in the range of a SATA/NVMe SSD behind a host page cache,
# chosen so reads, writes, discards and flushes are distinguishable on a timeline. Seconds, per request.
DEFAULT_FIXED: Mapping[str, float] = MappingProxyType({
    "read": 50e-6,
    "write": 20e-6,            # absorbed by a write cache
    "discard": 100e-6,         # metadata update (and a hole punch) per request
    "write-zeroes": 50e-6,
    "flush": 1e-3,             # the cache goes to stable storage
})
# Seconds per byte: 2 GB/s reads, 1 GB/s writes; discards and zero writes change metadata, not data.
DEFAULT_PER_BYTE: Mapping[str, float] = MappingProxyType({
    "read": 1 / 2e9,
    "write": 1 / 1e9,
    "discard": 0.0,
    "write-zeroes": 0.0,
    "flush": 0.0,
})
_OPS = frozenset(str(op) for op in Op)


def _frozen(name: str, costs: Mapping[str, float]) -> Mapping[str, float]:
    table = {}
    for op, seconds in costs.items():
        if op not in _OPS:
            raise ValueError(f"LatencyModel {name}: unknown operation {op!r} (expected one of {sorted(_OPS)})")
        if not seconds >= 0:
            raise ValueError(f"LatencyModel {name}[{op!r}] must be a non-negative number of seconds, not {seconds}")
        table[str(op)] = float(seconds)
    return MappingProxyType(table)


@dataclass(frozen=True)
class LatencyModel:
    """How long a device takes per request: ``fixed[op] + per_byte[op] * nbytes`` seconds.

    An omitted mapping takes the defaults (`DEFAULT_FIXED`, `DEFAULT_PER_BYTE`: a model, not a
    measurement); an operation missing from a mapping that is given costs nothing in that part, so
    ``LatencyModel(fixed={"read": 1.0}, per_byte={})`` makes a read take exactly one second.
    Keys are the block layer's operation names (`emu.block.Op`: "read", "write", "discard",
    "write-zeroes", "flush"); any other key is refused, so a misspelt one cannot silently cost nothing.
    """

    fixed: Mapping[str, float] = field(default_factory=lambda: DEFAULT_FIXED)
    per_byte: Mapping[str, float] = field(default_factory=lambda: DEFAULT_PER_BYTE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", _frozen("fixed", self.fixed))
        object.__setattr__(self, "per_byte", _frozen("per_byte", self.per_byte))

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.fixed.items())), tuple(sorted(self.per_byte.items()))))

    def cost(self, op: str, nbytes: int) -> float:
        """Simulated seconds for one request of `op` moving `nbytes`."""
        return self.fixed.get(op, 0.0) + self.per_byte.get(op, 0.0) * nbytes
