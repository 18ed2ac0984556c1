"""A guest virtio-blk driver modelled on Linux 6.1 drivers/block/virtio_blk.c over VirtioPciDriver.

Reads and writes go in requests of at most the block layer's default max_sectors (`BlockLayerConfig.max_sectors`,
1280 KiB in Linux 6.1). Requests are laid out as Linux's virtblk_add_req does: the 16-byte header (device-readable),
the data (readable for writes and discard / write-zeroes payloads, writable for reads and GET_ID), and the status
byte (device-writable) last. Discards are sent only when DISCARD was negotiated, as the block layer makes requests
of them (blk_layer: split at max_discard_sectors on the granularity, unsplit bios merged up to max_discard_seg
segments, which virtblk_probe takes from the device, else seg_max, at most MAX_DISCARD_SEGMENTS), one segment per
bio. Zero writes go as WRITE_ZEROES with the UNMAP flag unless the caller passes unmap=False (REQ_NOUNMAP), one
segment of at most max_write_zeroes_sectors (and what one bio carries) per request; without WRITE_ZEROES they become
writes of zero pages (__blkdev_issue_zero_pages), as Linux falls back.

`raw()` sends a header and buffers of the caller's own (any type, any sector, any payload), which is what tests
and `emu replay` use to hand the device bytes a real driver would never produce.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.drivers.blk_layer import DiscardLimits, bio_allowed_max_sectors, discard_requests
from controllers.drivers.config import GuestConfig, feature_bits
from controllers.drivers.virtio_pci import ChainOutcome, VirtioPciDriver
from controllers.virtio.layouts import (
    BLK_CONFIG_FIELDS,
    BLK_F_BLK_SIZE,
    BLK_F_CONFIG_WCE,
    BLK_F_DISCARD,
    BLK_F_FLUSH,
    BLK_F_MQ,
    BLK_F_SEG_MAX,
    BLK_F_WRITE_ZEROES,
    BLK_ID_BYTES,
    BLK_OUTHDR_FAST,
    BLK_SEGMENT_FAST,
    BLK_T_DISCARD,
    BLK_T_FLUSH,
    BLK_T_GET_ID,
    BLK_T_IN,
    BLK_T_OUT,
    BLK_T_WRITE_ZEROES,
    BLK_WRITE_ZEROES_FLAG_UNMAP,
    PCI_NOTIFY_OFF_MULTIPLIER,
    SECTOR_SIZE,
    bit,
)
from emu.errors import DriverLayoutError

if TYPE_CHECKING:
    from controllers.virtio.pci import VirtioPciTransport
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, Simulation

UINT_MAX_SECTORS = 0xFFFFFFFF           # the limit Linux uses when the device reports 0


@dataclass
class BlkOutcome:
    """One request as the guest sees it: the status byte (None when the request never completed), the data of a
    read or GET_ID, the used length, and why it did not complete (broken device, timeout)."""

    status: int | None
    data_in: bytes
    used_len: int | None
    broken: bool
    timed_out: bool
    time: float

    @property
    def completed(self) -> bool:
        return self.used_len is not None

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class BlkLimits:
    """What virtblk_probe reads from the configuration space."""

    capacity: int
    blk_size: int
    seg_max: int
    num_queues: int
    max_discard_sectors: int
    max_discard_seg: int
    discard_granularity: int            # sectors
    max_write_zeroes_sectors: int
    write_zeroes_may_unmap: bool
    writeback: bool


def segment(sector: int, num_sectors: int, flags: int = 0) -> bytes:
    """One 16-byte discard / write-zeroes segment."""
    return BLK_SEGMENT_FAST.pack(sector, num_sectors, flags)


def header(type_: int, sector: int = 0, ioprio: int = 0) -> bytes:
    """The 16-byte request header."""
    return BLK_OUTHDR_FAST.pack(type_, ioprio, sector)


class VirtioBlkDriver:
    """Linux virtio_blk on one virtio-pci function, as `guest` configures it and the block layer above it. Run
    `probe()` first; every request method is a generator. `supported` is the feature word the driver accepts."""

    def __init__(self, sim: Simulation, mem: GuestMemory, transport: VirtioPciTransport, irq: InterruptLine, *,
                 guest: GuestConfig, notify_multiplier: int = PCI_NOTIFY_OFF_MULTIPLIER) -> None:
        self.pci = VirtioPciDriver(sim, mem, transport, irq, timeout=guest.block.request_timeout,
                                   notify_multiplier=notify_multiplier)
        self.supported = feature_bits(guest.virtio_blk.features)
        self.max_sectors = guest.block.max_sectors
        self.max_discard_segments = guest.virtio_blk.max_discard_segments
        self.zero_pages_bytes = guest.block.zero_pages_bytes
        self.limits: BlkLimits | None = None

    @property
    def features(self) -> int:
        return self.pci.features

    def has(self, feature: int) -> bool:
        return bool(self.pci.features & bit(feature))

    def probe(self) -> Generator[Any, Any, bool]:
        """virtblk_probe: negotiate, read the limits, one queue (or num_queues with MQ), DRIVER_OK."""
        if not (yield from self.pci.probe(self.supported)):
            return False
        self.limits = self._read_limits()
        self.pci.setup_queues(self.limits.num_queues)
        self.pci.driver_ok()
        return True

    def _cfg(self, name: str) -> int:
        offset, size = BLK_CONFIG_FIELDS[name]
        return self.pci.config_read(offset, size)

    def _read_limits(self) -> BlkLimits:
        blk_size = self._cfg("blk_size") if self.has(BLK_F_BLK_SIZE) else SECTOR_SIZE
        discard = self.has(BLK_F_DISCARD)
        zeroes = self.has(BLK_F_WRITE_ZEROES)
        alignment = self._cfg("discard_sector_alignment") if discard else 0
        seg_max = self._cfg("seg_max") if self.has(BLK_F_SEG_MAX) else 1
        return BlkLimits(
            capacity=self._cfg("capacity"),
            blk_size=blk_size,
            seg_max=seg_max,
            num_queues=self._cfg("num_queues") if self.has(BLK_F_MQ) else 1,
            max_discard_sectors=(self._cfg("max_discard_sectors") or UINT_MAX_SECTORS) if discard else 0,
            # "max_discard_seg == 0 is out of spec but we always handled it": sg_elems instead
            max_discard_seg=(min(self._cfg("max_discard_seg") or seg_max or 1, self.max_discard_segments)
                             if discard else 0),
            discard_granularity=alignment or blk_size // SECTOR_SIZE,
            max_write_zeroes_sectors=(self._cfg("max_write_zeroes_sectors") or UINT_MAX_SECTORS) if zeroes else 0,
            write_zeroes_may_unmap=bool(self._cfg("write_zeroes_may_unmap")) if zeroes else False,
            writeback=bool(self._cfg("writeback")) if self.has(BLK_F_CONFIG_WCE) else self.has(BLK_F_FLUSH),
        )

    # -- requests -----------------------------------------------------------------------------------------------
    def raw(self, hdr: bytes, data_out: Sequence[bytes] = (), data_in_len: int | Sequence[int] = 0, *,
            status_len: int = 1, queue: int = 0) -> Generator[Any, Any, BlkOutcome]:
        """Any request: `hdr` as given (need not be 16 bytes), then the readable buffers, then writable buffers of
        `data_in_len` bytes (one length or several) and a writable status buffer of `status_len` bytes (0 leaves it
        out). The status is the last writable byte, as the device reads it; data_in is every writable byte before it."""
        in_lens = [data_in_len] if isinstance(data_in_len, int) else list(data_in_len)
        in_lens = [n for n in in_lens if n] + ([status_len] if status_len else [])
        out = yield from self.pci.submit(queue, [hdr, *[d for d in data_out if d]], in_lens)
        return _outcome(out, status_len)

    def read(self, sector: int, count: int, queue: int = 0) -> Generator[Any, Any, BlkOutcome]:
        """`count` sectors in requests of at most the queue's max_sectors (`_pieces`); stops at the first failure."""
        outcomes = []
        for start, n in _pieces(sector, count, self.max_sectors):
            outcome = yield from self.raw(header(BLK_T_IN, start), (), n * SECTOR_SIZE, queue=queue)
            outcomes.append(outcome)
            if not outcome.ok:
                break
        return _joined(outcomes)

    def write(self, sector: int, data: bytes, queue: int = 0) -> Generator[Any, Any, BlkOutcome]:
        """`data` in requests of at most the queue's max_sectors (`_pieces`); stops at the first failure."""
        if not data or len(data) % SECTOR_SIZE:
            raise DriverLayoutError(f"write of {len(data)} bytes is not whole 512-byte sectors")
        view, outcomes = memoryview(data), []
        for start, n in _pieces(sector, len(data) // SECTOR_SIZE, self.max_sectors):
            offset = (start - sector) * SECTOR_SIZE
            outcome = yield from self.raw(header(BLK_T_OUT, start), [view[offset:offset + n * SECTOR_SIZE]], 0,
                                          queue=queue)
            outcomes.append(outcome)
            if not outcome.ok:
                break
        return _joined(outcomes)

    def flush(self, queue: int = 0) -> Generator[Any, Any, BlkOutcome]:
        return (yield from self.raw(header(BLK_T_FLUSH), (), 0, queue=queue))

    def get_id(self, queue: int = 0) -> Generator[Any, Any, BlkOutcome]:
        """VIRTIO_BLK_T_GET_ID into a 20-byte buffer (virtblk_get_id)."""
        return (yield from self.raw(header(BLK_T_GET_ID), (), BLK_ID_BYTES, queue=queue))

    def discard(self, ranges: Sequence[tuple[int, int]], queue: int = 0) -> Generator[Any, Any, list[BlkOutcome]]:
        """(sector, count) ranges as discard requests; [] when DISCARD was not negotiated (the block layer has no
        discard: blkdev_issue_discard fails with EOPNOTSUPP before any request)."""
        if not self.has(BLK_F_DISCARD):
            return []
        lim = self.limits
        limits = DiscardLimits(lim.max_discard_sectors, lim.discard_granularity, max_segments=lim.max_discard_seg,
                               logical_block=lim.blk_size)
        outcomes = []
        for request in discard_requests(ranges, limits):
            payload = b"".join(segment(s, n) for s, n in request)      # one segment per bio (virtblk_setup_discard_...)
            outcome = yield from self.raw(header(BLK_T_DISCARD), [payload], 0, queue=queue)
            outcomes.append(outcome)
            if not outcome.ok:
                break
        return outcomes

    def write_zeroes(self, sector: int, count: int, *, unmap: bool = True,
                     queue: int = 0) -> Generator[Any, Any, list[BlkOutcome]]:
        """blkdev_issue_zeroout: WRITE_ZEROES pieces (UNMAP unless unmap=False), or zero-page writes without the
        feature; stops at the first failure."""
        outcomes = []
        if self.has(BLK_F_WRITE_ZEROES):
            flags = BLK_WRITE_ZEROES_FLAG_UNMAP if unmap else 0
            # a bio carries at most UINT_MAX bytes (bio_write_zeroes_limit since 6.10; 6.1's shift overflows instead)
            step = min(self.limits.max_write_zeroes_sectors, bio_allowed_max_sectors(self.limits.blk_size))
            requests = [(header(BLK_T_WRITE_ZEROES), [segment(s, min(step, sector + count - s), flags)])
                        for s in range(sector, sector + count, step)]
        else:
            step = self.zero_pages_bytes // SECTOR_SIZE
            requests = [(header(BLK_T_OUT, s), [bytes(min(step, sector + count - s) * SECTOR_SIZE)])
                        for s in range(sector, sector + count, step)]
        for hdr, data in requests:
            outcome = yield from self.raw(hdr, data, 0, queue=queue)
            outcomes.append(outcome)
            if not outcome.ok:
                break
        return outcomes


def _pieces(sector: int, count: int, max_sectors: int) -> list[tuple[int, int]]:
    """The requests the block layer makes of one read or write: at most its default `max_sectors` each
    (virtblk_probe sets max_hw_sectors to -1U, so the default applies); a 0-sector transfer is one empty request."""
    end = sector + count
    return [(s, min(max_sectors, end - s)) for s in range(sector, end, max_sectors)] or [(sector, 0)]


def _joined(outcomes: list[BlkOutcome]) -> BlkOutcome:
    """One transfer's outcome: the last request's (the first that failed), with the data of all of them."""
    last = outcomes[-1]
    if len(outcomes) == 1:
        return last
    return BlkOutcome(last.status, b"".join(o.data_in for o in outcomes), last.used_len, last.broken,
                      last.timed_out, last.time)


def _outcome(out: ChainOutcome, status_len: int) -> BlkOutcome:
    if not out.completed:
        return BlkOutcome(None, b"", None, out.broken, out.timed_out, out.time)
    status = out.data_in[-1] if status_len else None
    data = out.data_in[:-1] if status_len else out.data_in
    return BlkOutcome(status, data, out.used_len, False, False, out.time)
