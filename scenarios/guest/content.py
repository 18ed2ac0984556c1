"""What the guest's writes carry: seeded random bytes, a repeating pattern, or zeros. Real bytes, so that every
read of the guest's view can be checked against what was written."""

from __future__ import annotations

import random

CONTENTS = ("random", "pattern", "zeros")
_PATTERN = bytes(range(256))


def fresh_content(rng: random.Random, size: int, kind: str) -> bytes:
    """`size` bytes of `kind`; random ones come from `rng`, so a run with the same seed writes the same bytes."""
    if kind == "zeros":
        return bytes(size)
    if kind == "pattern":
        return (_PATTERN * (size // len(_PATTERN) + 1))[:size]
    return rng.randbytes(size)
