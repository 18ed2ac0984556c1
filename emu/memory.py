"""Guest RAM: the bytes a guest driver encodes commands into and a controller decodes them from.

`GuestMemory` is one anonymous ``MAP_SHARED`` mapping, so a forked process (a later out-of-process device
model) sees the same bytes. Addresses are guest-physical byte addresses starting at 0. Every access is
checked against the RAM size before anything is touched: an out-of-range DMA raises `DmaError` and never
writes part of its data. Transfers are slices of the mapping (one memcpy each), never Python loops.

The small allocator is for guest-driver models (command tables, PRD lists, virtqueues, data buffers). It
never hands out the first page, so a NULL pointer in a descriptor is always memory the driver did not
allocate, while a controller that follows it still reads bytes (zeros unless a test put something there).
"""

from __future__ import annotations

import bisect
import mmap
import struct
from types import TracebackType

from emu.errors import DmaError, GuestMemoryError, OutOfGuestMemory

NULL_GUARD_BYTES = 4096   # the first page: never allocated, so address 0 never names a driver buffer
_FILL_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_FILL_CHUNK))   # fill(..., 0) copies from here: no buffer allocated per call

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def scatter(data: bytes | memoryview, buffers: list[memoryview]) -> None:
    """Copy `data` into the buffers in order (each is filled before the next): a read's data into guest RAM."""
    pos = 0
    for buf in buffers:
        n = len(buf)
        buf[:] = data[pos:pos + n]
        pos += n


class GuestMemory:
    """Byte-addressable guest RAM backed by an anonymous shared mmap, with a first-fit allocator.

    The object owns the mapping; `close()` (or leaving a ``with`` block) unmaps it. Views handed out by
    `view()` borrow the mapping and must be released (``with mem.view(a, n) as v:``) before `close()`.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"guest RAM size must be positive, not {size}")
        self.size = size
        self._mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._mv = memoryview(self._mm)
        # allocator state: free blocks as sorted, disjoint, non-adjacent [start, end) pairs
        self._free_starts: list[int] = []
        self._free_ends: list[int] = []
        if size > NULL_GUARD_BYTES:
            self._free_starts.append(NULL_GUARD_BYTES)
            self._free_ends.append(size)
        self._allocated: dict[int, int] = {}

    # -- lifetime ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._mm.closed

    def close(self) -> None:
        """Unmap the RAM. Raises BufferError while a view from `view()` is still alive (a caller's bug)."""
        if self._mm.closed:
            return
        self._mv.release()
        try:
            self._mm.close()
        except BufferError:
            self._mv = memoryview(self._mm)
            raise BufferError("guest memory cannot be unmapped: a view from view() is still alive; "
                              "release it first (with mem.view(...) as v: ...)") from None

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mm.closed else f"{len(self._allocated)} allocations"
        return f"GuestMemory(size={self.size:#x}, {state})"

    # -- DMA -----------------------------------------------------------------------------------------
    def check(self, addr: int, length: int, op: str = "access") -> None:
        """Raise DmaError unless [addr, addr+length) lies inside guest RAM (a zero length at `size` does)."""
        if addr < 0 or length < 0 or addr + length > self.size:
            raise DmaError(addr, length, self.size, op)

    def read(self, addr: int, length: int) -> bytes:
        """Copy `length` bytes out of guest RAM (one memcpy)."""
        if addr < 0 or length < 0 or addr + length > self.size:
            raise DmaError(addr, length, self.size, "read")
        return self._mm[addr:addr + length]

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Copy `data` into guest RAM (one memcpy); nothing is written if any byte would fall outside.

        `data` must not overlap the destination when it is a view of this RAM; use `copy()` for that.
        """
        if not isinstance(data, (bytes, bytearray)):
            data = memoryview(data).cast("B")
        length = len(data)
        if addr < 0 or addr + length > self.size:
            raise DmaError(addr, length, self.size, "write")
        self._mm[addr:addr + length] = data

    def view(self, addr: int, length: int) -> memoryview:
        """A writable zero-copy view of guest RAM, for scatter/gather of large transfers.

        The view borrows the mapping: release it (or use it as a context manager) when done.
        """
        if addr < 0 or length < 0 or addr + length > self.size:
            raise DmaError(addr, length, self.size, "view")
        return self._mv[addr:addr + length]

    @staticmethod
    def release(views: list[memoryview]) -> None:
        """Give back views from `view()` (a device does this when the request that borrowed them is done)."""
        for v in views:
            v.release()

    def copy(self, dst: int, src: int, length: int) -> None:
        """Move bytes inside guest RAM (memmove: overlapping ranges are fine)."""
        self.check(src, length, "copy from")
        self.check(dst, length, "copy to")
        if length:
            self._mm.move(dst, src, length)

    def fill(self, addr: int, length: int, byte: int) -> None:
        """Set `length` bytes to `byte` (memset-like, in 1 MiB pieces)."""
        if not 0 <= byte <= 255:
            raise ValueError(f"fill byte must be 0..255, not {byte}")
        self.check(addr, length, "fill")
        chunk = _ZEROS if byte == 0 else memoryview(bytes([byte]) * min(length, _FILL_CHUNK))
        end = addr + length
        while addr < end:
            n = min(len(chunk), end - addr)
            self._mm[addr:addr + n] = chunk[:n]
            addr += n

    # -- little-endian scalars and records -----------------------------------------------------------
    def unpack(self, layout: struct.Struct, addr: int) -> tuple:
        """Decode one fixed-size record (a `struct.Struct`) at `addr`, bounds-checked."""
        if addr < 0 or addr + layout.size > self.size:
            raise DmaError(addr, layout.size, self.size, "read")
        return layout.unpack_from(self._mm, addr)

    def pack(self, layout: struct.Struct, addr: int, *values: object) -> None:
        """Encode one fixed-size record at `addr`; a value that does not fit raises ValueError."""
        if addr < 0 or addr + layout.size > self.size:
            raise DmaError(addr, layout.size, self.size, "write")
        try:
            layout.pack_into(self._mm, addr, *values)
        except struct.error as exc:
            raise ValueError(f"cannot pack {values!r} as {layout.format!r}: {exc}") from None

    # the scalar reads inline their bounds check: controllers read descriptors field by field
    def read_u8(self, addr: int) -> int:
        if addr < 0 or addr + 1 > self.size:
            raise DmaError(addr, 1, self.size, "read")
        return _U8.unpack_from(self._mm, addr)[0]

    def read_u16(self, addr: int) -> int:
        if addr < 0 or addr + 2 > self.size:
            raise DmaError(addr, 2, self.size, "read")
        return _U16.unpack_from(self._mm, addr)[0]

    def read_u32(self, addr: int) -> int:
        if addr < 0 or addr + 4 > self.size:
            raise DmaError(addr, 4, self.size, "read")
        return _U32.unpack_from(self._mm, addr)[0]

    def read_u64(self, addr: int) -> int:
        if addr < 0 or addr + 8 > self.size:
            raise DmaError(addr, 8, self.size, "read")
        return _U64.unpack_from(self._mm, addr)[0]

    def write_u8(self, addr: int, value: int) -> None:
        self._put(_U8, addr, value)

    def write_u16(self, addr: int, value: int) -> None:
        self._put(_U16, addr, value)

    def write_u32(self, addr: int, value: int) -> None:
        self._put(_U32, addr, value)

    def write_u64(self, addr: int, value: int) -> None:
        self._put(_U64, addr, value)

    def _put(self, layout: struct.Struct, addr: int, value: int) -> None:
        """`pack` of one scalar, without the argument tuple (rings are updated field by field)."""
        if addr < 0 or addr + layout.size > self.size:
            raise DmaError(addr, layout.size, self.size, "write")
        try:
            layout.pack_into(self._mm, addr, value)
        except struct.error as exc:
            raise ValueError(f"cannot pack {value!r} as {layout.format!r}: {exc}") from None

    # -- allocator for guest-driver models -------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        """First fit: the lowest address with `size` free bytes aligned to `align` (a power of two).

        The memory is not cleared (like RAM handed out by a guest kernel); use `fill()` when it matters.
        """
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align}")
        starts, ends = self._free_starts, self._free_ends
        for i, start in enumerate(starts):
            addr = (start + align - 1) & -align
            stop, end = addr + size, ends[i]
            if stop > end:
                continue
            # the block keeps what lies before `addr` and after `stop` (drivers allocate per request: no lists built)
            if addr == start:
                if stop == end:
                    del starts[i], ends[i]
                else:
                    starts[i] = stop
            else:
                ends[i] = addr
                if stop < end:
                    starts.insert(i + 1, stop)
                    ends.insert(i + 1, end)
            self._allocated[addr] = size
            return addr
        raise OutOfGuestMemory(size, align, self.size, self.free_bytes)

    def free(self, addr: int) -> None:
        """Return a block from `alloc()`; freeing anything else (or twice) is an error."""
        size = self._allocated.pop(addr, None)
        if size is None:
            raise GuestMemoryError(f"free of guest address {addr:#x}: not an allocated block "
                                   f"(double free or a wrong address)")
        start, end = addr, addr + size
        starts, ends = self._free_starts, self._free_ends
        i = bisect.bisect_left(starts, start)
        if i < len(starts) and starts[i] == end:        # merge with the next free block
            end = ends[i]
            del starts[i], ends[i]
        if i > 0 and ends[i - 1] == start:              # merge with the previous one
            ends[i - 1] = end
        else:
            starts.insert(i, start)
            ends.insert(i, end)

    def allocated(self) -> dict[int, int]:
        """The live allocations as {address: size}, in address order (for tests and leak checks)."""
        return dict(sorted(self._allocated.items()))

    @property
    def free_bytes(self) -> int:
        return sum(e - s for s, e in zip(self._free_starts, self._free_ends))
