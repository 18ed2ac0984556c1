"""What the block layer needs from an image: the backend contract, its limits and its block status.

The block layer owns this contract and `images/` implements it, as QEMU's block_int-common.h is owned by the
generic block layer and filled in by each driver. The Drive is written against `Backend` only, so nothing here
knows a format; everything above the Drive asks the Drive, never the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from emu.trace import NULL_TRACE, Trace


class Status:
    """Block status flags, with the meaning of QEMU's BDRV_BLOCK_* (include/block/block-common.h).
    Plain ints, not an enum.IntFlag: block status is asked on every copy-on-write and map step, and
    IntFlag arithmetic made it several times slower."""

    NONE = 0
    DATA = 1           # reads come from this layer's data
    ZERO = 2           # reads as zeros
    OFFSET_VALID = 4   # host_offset is where the data lives in this layer's file
    ALLOCATED = 8      # this layer answers for the range (set by the generic rules, not by formats)
    RECURSE = 16       # ask the host file too: data may sit in a hole (preallocated metadata)


@dataclass(slots=True, frozen=True)
class BlockStatus:
    flags: int    # Status bits
    length: int
    host_offset: int = 0


@dataclass(slots=True, frozen=True)
class BlockLimits:
    """Alignment and size limits a backend imposes; the Drive splits requests by them (QEMU BlockLimits)."""

    request_alignment: int = 1
    discard_alignment: int = 1      # pdiscard_alignment
    zero_alignment: int = 1         # pwrite_zeroes_alignment
    max_discard: int = 0            # 0 = no limit
    max_write_zeroes: int = 0


class Backend(Protocol):
    """One image node as the Drive sees it (a backing chain is behind it, not beside it).

    Offsets and lengths are guest bytes of the virtual disk. The capability flags say what the Drive may ask:
    without `supports_discard` a discard succeeds doing nothing; without `supports_write_zeroes` the Drive
    writes zero buffers; with `takes_views` write() accepts a memoryview it is done with on return (so the
    Drive may lend it guest RAM).
    """

    format_name: str
    virtual_size: int
    read_only: bool
    supports_discard: bool
    supports_write_zeroes: bool
    takes_views: bool
    limits: BlockLimits
    # The node's BDRV_O_UNMAP: may freed space be handed back to the host file? Set by the Drive from its
    # discard= option.
    host_unmap: bool

    def read(self, offset: int, length: int) -> bytes: ...

    def read_into(self, offset: int, buffers: list[memoryview]) -> None: ...

    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None: ...

    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None: ...

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def block_status(self, offset: int, length: int) -> BlockStatus:
        """This layer's own status (bdrv_co_block_status): ALLOCATED says this layer answers for the run."""
        ...

    def status_above(self, offset: int, length: int) -> tuple[BlockStatus, int]:
        """Status through the backing chain and the depth of the layer that answered (qemu-img map's walk)."""
        ...
