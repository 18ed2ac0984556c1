"""The Drive: one image backend behind QEMU-like drive options, alignment and splitting.

This is QEMU's generic block layer for one node (block/io.c, block/block-backend.c): range checks,
discard=ignore dropping discards, detect-zeroes, the head/bulk/tail split of discards and zero
writes at the backend's alignment (the unaligned pieces go down on their own and the format decides),
the zero-buffer fallback for write-zeroes, FUA as a flush. Every request leaves a `Trace`.
The Drive knows no time: it hands every request's trace to its monitor (an `emu.sim.Monitor` in a run), and
`emu.sim` decides when completions are delivered. Everything above the block layer asks the Drive, never the
image behind it: size, read-only, limits, what a discard leaves, block status.
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import Protocol

from emu.block.backend import Backend, BlockLimits, Status
from emu.block.options import DriveOptions
from emu.block.request import Completion, Flags, Op, Request
from emu.errors import BlockError, ImageError, UsageError
from emu.memory import scatter
from emu.trace import Act, Trace

MAX_BOUNCE_BUFFER = 32768 * 512  # QEMU MAX_BOUNCE_BUFFER: largest zero buffer of the fallback
_ZEROS = bytes(1 << 20)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True if every byte is zero (compared in 1 MiB pieces against a shared zero buffer)."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n and (view[0] or view[n - 1]):
        return False
    zeros = memoryview(_ZEROS)
    for start in range(0, n, len(_ZEROS)):
        piece = view[start:start + len(_ZEROS)]
        if piece != zeros[:len(piece)]:
            return False
    return True


def split(offset: int, length: int, align: int, request_alignment: int, max_chunk: int) -> list[tuple[int, int]]:
    """QEMU's discard/write-zeroes fragmentation: an unaligned head up to the first boundary, the
    aligned bulk, and the unaligned tail last, each capped at max_chunk (bdrv_co_pdiscard)."""
    head = offset % align
    tail = (offset + length) % align
    max_chunk = max_chunk - max_chunk % align if max_chunk else 0
    chunks = []
    while length > 0:
        num = length
        if head:
            num = min(length, align - head)
            if num % request_alignment:
                num %= request_alignment
            head = (head + num) % align
        elif tail:
            if num > align:
                num -= tail
            elif tail % request_alignment and tail > request_alignment:
                tail %= request_alignment
                num -= tail
        if max_chunk and num > max_chunk:
            num = max_chunk
        chunks.append((offset, num))
        offset += num
        length -= num
    return chunks


class DriveMonitor(Protocol):
    """Who hears of every request the Drive served: how a run learns which layer dropped a discard the guest
    sent through a controller (the controller only sees the status). `emu.sim.Monitor` is one."""

    def request(self, trace: Trace) -> None: ...


class _Unmonitored:
    """The monitor of a Drive nobody watches."""

    def request(self, trace: Trace) -> None:
        pass


UNMONITORED: DriveMonitor = _Unmonitored()


class Drive:
    """Owns one image backend (and through it the backing chain) and applies the drive options."""

    def __init__(self, backend: Backend, options: DriveOptions | None = None,
                 monitor: DriveMonitor = UNMONITORED) -> None:
        self.backend = backend
        self.options = options or DriveOptions()
        backend.host_unmap = self.options.unmap   # the node's BDRV_O_UNMAP
        self.capacity = backend.virtual_size
        self.stats: Counter[str] = Counter()
        self.monitor = monitor
        self._plain_reads = self.options.request_alignment == 1
        self._handlers = {Op.READ: self._read, Op.WRITE: self._write, Op.DISCARD: self._discard,
                          Op.WRITE_ZEROES: self._write_zeroes, Op.FLUSH: self._flush}

    # -- convenience -------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> Completion:
        return self.execute(Request.read(offset, length))

    def read_into(self, offset: int, buffers: list[memoryview]) -> Completion:
        """A read whose data lands in `buffers` (Completion.data is None)."""
        return self.execute(Request.read_into(offset, buffers))

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> Completion:
        return self.execute(Request.write(offset, data, fua=fua))

    def discard(self, offset: int, length: int) -> Completion:
        return self.execute(Request.discard(offset, length))

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> Completion:
        return self.execute(Request.write_zeroes(offset, length, may_unmap=may_unmap))

    def flush(self) -> Completion:
        return self.execute(Request.flush())

    def close(self) -> None:
        self.backend.close()

    def reattach(self, backend: Backend) -> None:
        """Put another image under the running guest (QEMU's blockdev-snapshot, or a drive reopened after an
        offline operation): the device and its options stay; the caller has flushed and closed the old image.
        The new one must have the same size, since the guest already knows the disk's capacity."""
        if backend.virtual_size != self.capacity:
            raise UsageError(f"the new image has {backend.virtual_size} bytes; the drive has {self.capacity}")
        backend.host_unmap = self.options.unmap
        self.backend = backend

    # -- what the drive is: asked by devices and guests, never of the image behind it ------------------------
    @property
    def read_only(self) -> bool:
        """Writes are refused: the drive's read-only option or an image opened read-only."""
        return self.options.read_only or self.backend.read_only

    @property
    def format_name(self) -> str:
        return self.backend.format_name

    @property
    def limits(self) -> BlockLimits:
        """The alignments and maximum sizes requests are split at (the image's, QEMU's BlockLimits)."""
        return self.backend.limits

    def zeroes_after_discard(self, sector_size: int) -> bool:
        """Whether every `sector_size` block a guest discards reads zeros afterwards: what a device may promise
        (ATA RZAT, SCSI LBPRZ). It must hold for every sector, since a guest relies on it (Linux treats such a
        discard as zeroing), so only a drive that passes discards (discard=unmap) to a format whose discard
        zeroes, at a granularity that divides the sector, says yes. raw punching holes: granularity 512;
        qcow2 v3: whole clusters (a partial one keeps its data); vdi, vpc, vmdk in QEMU: no discard."""
        if sector_size < 1:
            raise ValueError(f"sector size {sector_size} must be at least 1 byte")
        return (self.options.unmap and self.backend.supports_discard
                and sector_size % self.backend.limits.discard_alignment == 0)

    def allocated(self, offset: int, length: int) -> tuple[bool, int]:
        """Whether this image alone (not its backing files) holds the range at `offset`, and how many bytes from
        `offset` share the answer (bdrv_is_allocated, what qemu-io's map prints)."""
        status = self.backend.block_status(offset, length)
        return bool(status.flags & Status.ALLOCATED), status.length

    def mapped(self, offset: int, length: int) -> tuple[bool, int]:
        """Whether the guest range at `offset` holds data in any layer of the chain (`qemu-img map`'s "data")
        and how many bytes from `offset` share that answer: what a device reports for GET LBA STATUS.
        Out-of-range or empty ranges are a BlockError (EIO), as for any request."""
        if not (0 <= offset and 0 < length <= self.capacity - offset):
            raise BlockError(errno.EIO, f"block status of {offset:#x}+{length:#x} outside the "
                                        f"{self.capacity}-byte disk")
        status, _depth = self.backend.status_above(offset, length)
        return bool(status.flags & Status.DATA), status.length

    # -- execution ---------------------------------------------------------------------------------
    def execute(self, req: Request) -> Completion:
        op, offset, length = req.op, req.offset, req.length
        trace = Trace(op, offset, length)
        try:
            if op is Op.READ and self._plain_reads and 0 <= offset and 0 <= length <= self.capacity - offset:
                if req.payload is None:                        # the hot path: nothing to adjust
                    data = self.backend.read(offset, length)
                else:
                    self.backend.read_into(offset, req.payload)
                    data = None
            else:
                if op is not Op.FLUSH:
                    self._check_range(req)
                data = self._handlers[op](req, trace)
        except BlockError as exc:
            return self._fail(req, exc, trace)
        except ImageError as exc:   # metadata found corrupt while serving the request
            return self._fail(req, BlockError(errno.EIO, str(exc)), trace)
        except OSError as exc:
            return self._fail(req, BlockError(exc.errno or errno.EIO, f"host I/O error: {exc.strerror}"), trace)
        self.stats[op] += 1
        self.monitor.request(trace)
        return Completion(req, None, data, trace)

    def _fail(self, req: Request, exc: BlockError, trace: Trace) -> Completion:
        trace.add("drive", Act.REJECTED, req.offset, req.length, str(exc))
        self.stats["errors"] += 1
        self.monitor.request(trace)
        return Completion(req, exc, None, trace)

    def _check_range(self, req: Request) -> None:
        if req.offset < 0 or req.length < 0:
            raise BlockError(errno.EIO, f"negative offset or length ({req.offset}, {req.length})")
        if req.offset + req.length > self.capacity:
            raise BlockError(errno.EIO, f"range {req.offset:#x}+{req.length:#x} is past the end of the "
                                        f"{self.capacity}-byte disk")
        if req.op is Op.WRITE and (req.payload is None or len(req.payload) != req.length):
            raise BlockError(errno.EINVAL, "write payload length differs from the request length")

    def _check_writable(self) -> None:
        if self.read_only:
            raise BlockError(errno.EPERM, "drive is read-only")

    # -- reads and writes --------------------------------------------------------------------------
    def _read(self, req: Request, trace: Trace) -> bytes | None:
        offset, length = req.offset, req.length
        align = self.options.request_alignment
        start = offset - offset % align
        end = min(self.capacity, -(-(offset + length) // align) * align)
        if start == offset and end == offset + length:
            data = self.backend.read(offset, length)
        else:
            trace.add("drive", Act.SPLIT, start, end - start, f"padded to request alignment {align}")
            data = self.backend.read(start, end - start)[offset - start:offset - start + length]
        if req.payload is None:
            return data
        scatter(data, req.payload)
        return None

    def _write(self, req: Request, trace: Trace) -> None:
        self._check_writable()
        offset, data = req.offset, req.payload
        align = self.options.request_alignment
        if offset % align or (offset + req.length) % align:
            start = offset - offset % align
            end = min(self.capacity, -(-(offset + req.length) // align) * align)
            buf = bytearray(self.backend.read(start, end - start))
            buf[offset - start:offset - start + req.length] = data
            trace.add("drive", Act.SPLIT, start, end - start, f"read-modify-write to alignment {align}")
            offset, data = start, bytes(buf)
        backend = self.backend
        if self.options.detect_zeroes != "off" and backend.supports_write_zeroes and is_zero(data):
            may_unmap = self.options.detect_zeroes == "unmap"
            trace.add("drive", Act.ZERO_DETECTED, offset, len(data),
                      f"detect-zeroes={self.options.detect_zeroes}: write of zeros became write-zeroes"
                      + (" with MAY_UNMAP" if may_unmap else ""))
            self._zero_chunks(offset, len(data), may_unmap, trace)
        else:
            if type(data) is memoryview and not backend.takes_views:
                data = data.tobytes()                   # a borrowed view of guest RAM must not outlive the request
            backend.write(offset, data, trace)
        if req.flags and req.flags & Flags.FUA:
            self._flush(req, trace)

    # -- discard -----------------------------------------------------------------------------------
    def _discard(self, req: Request, trace: Trace) -> None:
        backend = self.backend
        if not self.options.unmap:
            trace.add("drive", Act.DROPPED, req.offset, req.length,
                      "discard=ignore: the request succeeds and nothing is freed")
            self.stats["discards-dropped"] += 1
            return
        if not backend.supports_discard:
            trace.add("drive", Act.DROPPED, req.offset, req.length,
                      f"{backend.format_name} has no discard operation; the request succeeds")
            self.stats["discards-dropped"] += 1
            return
        self._check_writable()
        limits = backend.limits
        align = max(limits.discard_alignment, self.options.request_alignment)
        chunks = split(req.offset, req.length, align, self.options.request_alignment, limits.max_discard)
        if len(chunks) > 1:
            trace.add("drive", Act.SPLIT, req.offset, req.length,
                      f"{len(chunks)} pieces at {align}-byte discard alignment: "
                      + ", ".join(f"{o:#x}+{n:#x}" for o, n in chunks))
        else:
            trace.add("drive", Act.PASSED, req.offset, req.length, f"to {backend.format_name}")
        for offset, length in chunks:
            backend.discard(offset, length, trace)

    # -- write-zeroes ------------------------------------------------------------------------------
    def _write_zeroes(self, req: Request, trace: Trace) -> None:
        self._check_writable()
        may_unmap = bool(req.flags & Flags.MAY_UNMAP)
        if may_unmap and not self.options.unmap and self.options.zero_unmap == "gated":
            trace.add("drive", Act.DROPPED, req.offset, req.length,
                      "MAY_UNMAP removed: discard=ignore and zero_unmap=gated")
            may_unmap = False
        self._zero_chunks(req.offset, req.length, may_unmap, trace)
        if req.flags and req.flags & Flags.FUA:
            self._flush(req, trace)

    def _zero_chunks(self, offset: int, length: int, may_unmap: bool, trace: Trace) -> None:
        backend = self.backend
        limits = backend.limits
        align = max(limits.zero_alignment, self.options.request_alignment)
        chunks = split(offset, length, align, self.options.request_alignment, limits.max_write_zeroes)
        if len(chunks) > 1:
            trace.add("drive", Act.SPLIT, offset, length, f"{len(chunks)} pieces at {align}-byte zero alignment")
        for start, num in chunks:
            if backend.supports_write_zeroes and backend.write_zeroes(start, num, may_unmap, trace):
                continue
            trace.add("drive", Act.FALLBACK, start, num,
                      f"{backend.format_name} cannot zero this range efficiently: writing zero buffers")
            for piece in range(start, start + num, MAX_BOUNCE_BUFFER):
                n = min(MAX_BOUNCE_BUFFER, start + num - piece)
                backend.write(piece, _ZEROS[:n] if n <= len(_ZEROS) else bytes(n), trace)

    def _flush(self, req: Request, trace: Trace) -> None:
        self.backend.flush()
        trace.add("drive", Act.FLUSHED, 0, 0)
