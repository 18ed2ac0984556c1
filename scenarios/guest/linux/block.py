"""A Linux 6.1 guest's view of its disk: the block device's page cache and the requests its block layer makes.

File systems and tools ask this module, never the driver: buffered writes dirty 4 KiB pages of the device's page
cache (a partial page is read in first), `fsync` writes the dirty pages back in device order and flushes the
cache, `zeroout` is BLKZEROOUT / fallocate(ZERO_RANGE) (WRITE ZEROES where the queue has it, else zero-page writes),
`discard` is BLKDISCARD, and `submit_write` is a file system's own bio (ext4's data, jbd2's journal). Every request
handed to the driver is recorded as the kernel's block:block_rq_issue tracepoint would show it, so a run can be
compared with a real guest's trace (tests/oracle).

How requests form (Linux 6.1 block/blk-merge.c, blk-mq.c, fs/buffer.c): a bio is split at the queue's limits and
the split pieces are REQ_NOMERGE; writeback of a block device's cache submits one bio per page and plugs them, so
neighbouring pages merge into requests up to max_sectors and max_segments (their pages are scattered in guest
memory: one segment each); a file system's data comes from pages that lie together (segments up to
max_segment_size). Zero-page writes repeat one page: one segment per 4 KiB.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from controllers.drivers.blk_layer import PAGE, QueueLimits, discard_requests, rw_requests
from emu.errors import EmuError

SECTOR = 512
PER_PAGE = PAGE // SECTOR


class GuestIOError(EmuError):
    """A request the guest sent failed (the device answered with an error): the guest tool fails with EIO."""


@dataclass(frozen=True)
class Issued:
    """One request as block_rq_issue records it: the operation, its first sector and its sectors; `time` is the
    simulated second it went to the driver."""

    op: str          # "read", "write", "write-zeroes", "discard", "flush"
    sector: int
    sectors: int
    time: float = 0.0


@dataclass
class PageCache:
    """The block device's cached pages: content of pages read or written, and which are dirty."""

    pages: dict[int, bytes] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)

    def drop(self, first: int, last: int) -> None:
        """truncate_bdev_range: forget the pages of [first, last] (dirty ones too, unwritten)."""
        for index in [i for i in self.pages if first <= i <= last]:
            del self.pages[index]
        self.dirty -= {i for i in self.dirty if first <= i <= last}


class BlockDevice:
    """/dev/XXX of a guest: its queue limits (from the driver), page cache and the requests it issues.

    `disk` is the machine's GuestDisk; `clock` gives the simulated time for the record. All I/O methods are
    generators for the machine's simulation."""

    def __init__(self, disk, limits: QueueLimits, sectors: int, clock=lambda: 0.0) -> None:
        self.disk = disk
        self.limits = limits
        self.sectors = sectors
        self.clock = clock
        self.cache = PageCache()
        self.issued: list[Issued] = []

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    # -- requests ---------------------------------------------------------------------------------------------------
    def _record(self, op: str, sector: int, sectors: int) -> None:
        self.issued.append(Issued(op, sector, sectors, self.clock()))

    def _check(self, ok: bool, what: str) -> None:
        if not ok:
            raise GuestIOError(f"the disk failed a {what} request")

    def read_requests(self, sector: int, sectors: int) -> Generator[Any, Any, bytes]:
        """A read bio of contiguous pages (readahead, a page brought in), split at the queue's limits."""
        data = []
        for start, n in rw_requests(sector, sectors, self.limits, contiguous=True):
            self._record("read", start, n)
            got = yield from self.disk.read(start, n)
            self._check(got is not None, "read")
            data.append(got)
        return b"".join(data)

    def submit_write(self, sector: int, data: bytes, *, contiguous: bool = True) -> Generator[Any, Any, None]:
        """One write bio (a file system's data or journal blocks), split at the queue's limits."""
        view = memoryview(data)
        for start, n in rw_requests(sector, len(data) // SECTOR, self.limits, contiguous=contiguous):
            self._record("write", start, n)
            off = (start - sector) * SECTOR
            ok = yield from self.disk.write(start, bytes(view[off:off + n * SECTOR]))
            self._check(ok, "write")

    def submit_writes(self, runs: Iterable[tuple[int, bytes]]) -> Generator[Any, Any, None]:
        """Bios of one page each, plugged together (writeback of this device's cache, or of metadata buffers):
        back-to-back pages merge into requests of at most `rw_sectors(contiguous=False)`."""
        step = self.limits.rw_sectors(contiguous=False)
        merged: list[tuple[int, bytearray]] = []
        for sector, data in sorted(runs):
            if merged and merged[-1][0] + len(merged[-1][1]) // SECTOR == sector \
                    and len(merged[-1][1]) // SECTOR + len(data) // SECTOR <= step:
                merged[-1][1].extend(data)
            else:
                merged.append((sector, bytearray(data)))
        for sector, data in merged:
            self._record("write", sector, len(data) // SECTOR)
            ok = yield from self.disk.write(sector, bytes(data))
            self._check(ok, "write")

    def flush(self) -> Generator[Any, Any, None]:
        """A cache flush (REQ_PREFLUSH with no data: blkdev_issue_flush)."""
        self._record("flush", 0, 0)
        ok = yield from self.disk.flush()
        self._check(ok, "flush")

    def write_fua(self, sector: int, data: bytes) -> Generator[Any, Any, None]:
        """A write with REQ_PREFLUSH | REQ_FUA (a journal commit block, a superblock commit) on a queue without FUA:
        blk-flush makes it a flush, the write, and a flush that stands for FUA (every emulated disk here reports
        fua 0 in sysfs)."""
        yield from self.flush()
        yield from self.submit_write(sector, data, contiguous=False)
        yield from self.flush()

    def write_sync(self, sector: int, data: bytes) -> Generator[Any, Any, None]:
        """A write with REQ_FUA but no preflush (ext4_commit_super): the write, then the flush standing for FUA."""
        yield from self.submit_write(sector, data, contiguous=False)
        yield from self.flush()

    # -- the block device's cache: what tools writing /dev/XXX get ------------------------------------------------
    def pwrite(self, offset: int, data: bytes) -> Generator[Any, Any, None]:
        """A buffered write: every page it touches becomes dirty; a page only partly written and not cached is read
        first (block_write_begin)."""
        end = offset + len(data)
        cache = self.cache
        for index in range(offset // PAGE, -(-end // PAGE)):
            start, stop = max(offset, index * PAGE), min(end, (index + 1) * PAGE)
            page = cache.pages.get(index)
            if page is None:
                if stop - start == PAGE:
                    page = bytes(PAGE)
                else:
                    page = yield from self.read_requests(index * PER_PAGE, PER_PAGE)
            buf = bytearray(page)
            buf[start - index * PAGE:stop - index * PAGE] = data[start - offset:stop - offset]
            cache.pages[index] = bytes(buf)
            cache.dirty.add(index)

    def pread(self, offset: int, length: int) -> Generator[Any, Any, bytes]:
        """A buffered read: cached pages from the cache, the others read in."""
        out = bytearray()
        for index in range(offset // PAGE, -(-(offset + length) // PAGE)):
            page = self.cache.pages.get(index)
            if page is None:
                page = yield from self.read_requests(index * PER_PAGE, PER_PAGE)
                self.cache.pages[index] = page
            out += page
        skip = offset % PAGE
        return bytes(out[skip:skip + length])

    def writeback(self) -> Generator[Any, Any, None]:
        """Write every dirty page back, in device order (sync_blockdev)."""
        cache = self.cache
        dirty = sorted(cache.dirty)
        cache.dirty.clear()
        yield from self.submit_writes((index * PER_PAGE, cache.pages[index]) for index in dirty)

    def fsync(self) -> Generator[Any, Any, None]:
        """fsync of the device (blkdev_fsync): writeback, then a cache flush."""
        yield from self.writeback()
        yield from self.flush()

    def zeroout(self, offset: int, length: int, *, unmap: bool = False) -> Generator[Any, Any, None]:
        """BLKZEROOUT, or fallocate(ZERO_RANGE) (unmap False: BLKDEV_ZERO_NOUNMAP) on the device: cached pages of the
        range are dropped, then WRITE ZEROES requests of at most max_write_zeroes sectors, or, without them,
        zero-page writes (__blkdev_issue_zero_pages) split at the queue's limits."""
        sector, sectors = offset // SECTOR, length // SECTOR
        self.cache.drop(offset // PAGE, (offset + length - 1) // PAGE)
        step = self.limits.max_write_zeroes
        if step and hasattr(self.disk, "write_zeroes"):
            for start in range(sector, sector + sectors, step):
                n = min(step, sector + sectors - start)
                self._record("write-zeroes", start, n)
                ok = yield from self.disk.write_zeroes(start, n, unmap=unmap)
                self._check(ok, "write-zeroes")
            return
        zeros = bytes(min(sectors, self.limits.rw_sectors(contiguous=False)) * SECTOR)
        for start, n in rw_requests(sector, sectors, self.limits, contiguous=False):
            self._record("write", start, n)
            ok = yield from self.disk.write(start, zeros[:n * SECTOR])
            self._check(ok, "write")

    def discard(self, offset: int, length: int) -> Generator[Any, Any, bool]:
        """BLKDISCARD: cached pages of the range are dropped, then the block layer's discard requests; False when
        the queue has no discard (EOPNOTSUPP)."""
        self.cache.drop(offset // PAGE, (offset + length - 1) // PAGE)
        return (yield from self.discard_ranges([(offset // SECTOR, length // SECTOR)]))

    def discard_ranges(self, ranges: list[tuple[int, int]]) -> Generator[Any, Any, bool]:
        """Discards of (sector, count) ranges, submitted in one plug (a file system's freed extents, FITRIM's)."""
        limits = self.limits.discard
        if limits is None:
            return False
        for request in discard_requests(ranges, limits):      # a request of several segments shows as one
            self._record("discard", request[0][0], sum(n for _, n in request))
        _sent, ok = yield from self.disk.discard(ranges)
        self._check(ok, "discard")
        return True
