"""Block-layer requests and their completions: what a controller front end hands the Drive."""

from __future__ import annotations

import enum
from typing import NamedTuple

from emu.errors import BlockError
from emu.trace import Trace


class Op(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    DISCARD = "discard"
    WRITE_ZEROES = "write-zeroes"
    FLUSH = "flush"


class Flags(enum.IntFlag):
    NONE = 0
    FUA = 1          # force unit access: durable before completion
    MAY_UNMAP = 2    # write-zeroes may deallocate instead of writing zeros


class Request(NamedTuple):
    """One block-layer request (a NamedTuple: immutable and cheap to build on the hot path).

    `payload` is a write's data, or the buffers a read lands in (`read_into`: a device's views of guest RAM,
    filled in order); a read without buffers returns its data in the Completion. A device releases the views it
    lent once its command completes, so a Completion kept for later (timing, records) must use the request's
    op, offset and length, never its payload."""

    op: Op
    offset: int = 0
    length: int = 0
    payload: bytes | bytearray | memoryview | list[memoryview] | None = None
    flags: Flags = Flags.NONE

    @classmethod
    def read(cls, offset: int, length: int) -> Request:
        return cls(Op.READ, offset, length)

    @classmethod
    def read_into(cls, offset: int, buffers: list[memoryview]) -> Request:
        return cls(Op.READ, offset, sum(len(b) for b in buffers), buffers)

    @classmethod
    def write(cls, offset: int, data: bytes | bytearray | memoryview, *, fua: bool = False) -> Request:
        return cls(Op.WRITE, offset, len(data), data, Flags.FUA if fua else Flags.NONE)

    @classmethod
    def discard(cls, offset: int, length: int) -> Request:
        return cls(Op.DISCARD, offset, length)

    @classmethod
    def write_zeroes(cls, offset: int, length: int, *, may_unmap: bool = False, fua: bool = False) -> Request:
        flags = (Flags.MAY_UNMAP if may_unmap else Flags.NONE) | (Flags.FUA if fua else Flags.NONE)
        return cls(Op.WRITE_ZEROES, offset, length, None, flags)

    @classmethod
    def flush(cls) -> Request:
        return cls(Op.FLUSH)


class Completion(NamedTuple):
    """The outcome of one request: an error (with errno) or success, read data, and the trace."""

    request: Request
    error: BlockError | None
    data: bytes | None
    trace: Trace

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def errno(self) -> int:
        return self.error.errno if self.error is not None else 0
