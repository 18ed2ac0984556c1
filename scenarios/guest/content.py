"""What the guest's writes carry: seeded random bytes, a repeating pattern, or zeros. Real bytes, so that every
read of the guest's view can be checked against what was written; or, for a disk of `payload = "synthetic"`,
runs of the synthetic payload page that the model never materialises (`Uniform`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from emu.block.payload import payload

_PATTERN = bytes(range(256))


def fresh_content(rng: random.Random, size: int, kind: str) -> bytes:
    """`size` bytes of `kind`; random ones come from `rng`, so a run with the same seed writes the same bytes."""
    if kind == "zeros":
        return bytes(size)
    if kind == "pattern":
        return (_PATTERN * (size // len(_PATTERN) + 1))[:size]
    return rng.randbytes(size)


@dataclass(frozen=True)
class Uniform:
    """`length` bytes of one page repeated, kept as a run and never made: the synthetic payload (emu.block.payload)
    or zeros, written by a large scenario. Its file offset and length are whole blocks."""

    kind: str               # "synthetic" or "zeros"
    length: int

    def view(self, length: int) -> memoryview:
        """The first `length` bytes (a run's pieces all start on a page, so any piece reads the same)."""
        if self.kind == "zeros":
            return _ZEROS[:length] if length <= len(_ZEROS) else memoryview(bytes(length))
        return payload(length)

    def page(self, size: int) -> bytes:
        return bytes(self.view(size))


_ZEROS = memoryview(bytes(8 << 20))


def synthetic_content(rng: random.Random, size: int, kind: str, block: int, offset: int) -> list[tuple[int, object]]:
    """A write of `size` bytes at `offset` in synthetic mode, as (offset, content) pieces: the whole blocks as a
    Uniform run (zeros stay zeros, so detect-zeroes stories still hold), the partial blocks at either end as real
    bytes."""
    end = offset + size
    first, last = -(-offset // block) * block, end // block * block
    if first >= last:
        return [(offset, fresh_content(rng, size, kind))]
    pieces: list[tuple[int, object]] = []
    if offset < first:
        pieces.append((offset, fresh_content(rng, first - offset, kind)))
    pieces.append((first, Uniform("zeros" if kind == "zeros" else "synthetic", last - first)))
    if last < end:
        pieces.append((last, fresh_content(rng, end - last, kind)))
    return pieces
