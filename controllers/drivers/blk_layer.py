"""What a Linux 6.1 guest's block layer decides before any driver sees a request: a queue's limits, how large a
read or write request may be, and how discards become requests.

Every Linux disk driver gets its requests from the same code, so the rules live here once and each driver model
(virtio_blk, sd, libata under sd) only turns requests into commands. All numbers are 512-byte sectors.

Reads and writes: a queue's max_sectors is the block layer's default (`BlockLayerConfig.max_sectors`, a guest
profile's fact) unless the driver or the device sets less (blk_queue_max_hw_sectors caps max_sectors at it; 6.1).

Discards:

1. `issue_bios` (block/blk-lib.c __blkdev_issue_discard with bio_discard_limit): a range becomes bios; an
   unaligned head up to the next granularity boundary is a bio of its own, the rest goes in bios of at most
   round_down(UINT_MAX bytes, granularity).
2. `split_bio` (block/blk-merge.c bio_split_discard): a bio longer than max_discard_sectors (capped at
   bio_allowed_max_sectors and rounded down to the granularity) is cut; each cut is moved back so the next piece
   starts on the granularity (shifted by the discard alignment). A limit smaller than the granularity leaves the
   bio whole, as Linux does ("XXX: warn").
3. `discard_requests` (block/blk-mq.c blk_attempt_plug_merge, blk-merge.c): all bios of one call share one plug
   and may merge into the newest request: a device with several discard segments per request takes any bio as
   one more segment (bio_attempt_discard_merge: fewer than max_discard_segments, total within max_discard_sectors);
   a single-segment device takes a bio that continues the request or ends where it starts (back or front merge,
   total within max_discard_sectors). Pieces cut off by a split are REQ_NOMERGE (__bio_split_to_limits): they
   neither merge nor take merges. Elevator merges (mq-deadline on sd) are not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emu.errors import DriverError

UINT_MAX = 0xFFFFFFFF
SECTOR = 512


@dataclass(frozen=True)
class DiscardLimits:
    """A queue's discard limits as the driver set them, in 512-byte sectors (granularity at least 1)."""

    max_sectors: int                    # max_discard_sectors
    granularity: int = 1                # discard_granularity
    alignment: int = 0                  # discard_alignment
    max_segments: int = 1               # max_discard_segments
    logical_block: int = SECTOR         # logical_block_size, in bytes

    def __post_init__(self) -> None:
        if (self.max_sectors < 0 or not 1 <= self.granularity <= UINT_MAX // SECTOR or self.alignment < 0
                or self.max_segments < 1):
            raise DriverError(f"impossible discard limits {self}")


@dataclass(frozen=True)
class QueueLimits:
    """A disk queue's limits as its driver set them (what /sys/block/X/queue shows), in 512-byte sectors and bytes.

    max_sectors: the largest read or write request (max_sectors_kb); max_segments and max_segment_size: the
    scatter-gather entries a request may use and the bytes of one (blk_queue_max_segments, ..._segment_size);
    max_write_zeroes: sectors of one WRITE ZEROES request, 0 when the disk has none (write_zeroes_max_bytes);
    discard: None when the disk takes no discard.
    """

    max_sectors: int
    max_hw_sectors: int
    max_segments: int
    max_segment_size: int
    max_write_zeroes: int
    discard: DiscardLimits | None
    logical_block: int = SECTOR

    def rw_sectors(self, contiguous: bool) -> int:
        """The most sectors one read or write request carries: max_sectors, or fewer when its pages cannot share
        segments (`contiguous` False: every 4 KiB page is an entry of its own, as the zero page repeated or the
        scattered pages of a block device's cache are)."""
        per_segment = self.max_segment_size if contiguous else PAGE
        return min(self.max_sectors, self.max_segments * per_segment // SECTOR)


PAGE = 4096


def rw_requests(sector: int, count: int, limits: QueueLimits, *, contiguous: bool) -> list[tuple[int, int]]:
    """The requests of one read or write bio of `count` sectors (bio_split_rw, the split pieces REQ_NOMERGE): pieces
    of `limits.rw_sectors(contiguous)` and the rest."""
    step = limits.rw_sectors(contiguous)
    return [(s, min(step, sector + count - s)) for s in range(sector, sector + count, step)]


def bio_allowed_max_sectors(logical_block: int = SECTOR) -> int:
    """The most sectors one bio can carry: UINT_MAX bytes rounded down to the logical block size."""
    return UINT_MAX // logical_block * logical_block // SECTOR


def issue_bios(sector: int, count: int, granularity: int) -> list[tuple[int, int]]:
    """__blkdev_issue_discard: the bios one discard of `count` sectors from `sector` is submitted as."""
    bios = []
    while count:
        head = -sector % granularity
        limit = head or (UINT_MAX // (granularity * SECTOR) * granularity)
        n = min(count, limit)
        bios.append((sector, n))
        sector, count = sector + n, count - n
    return bios


def split_bio(sector: int, count: int, limits: DiscardLimits) -> list[tuple[int, int]]:
    """bio_split_discard, repeated until the rest fits: the pieces of one bio, in submission order."""
    granularity = limits.granularity
    max_sectors = min(limits.max_sectors, bio_allowed_max_sectors(limits.logical_block))
    max_sectors -= max_sectors % granularity
    if not max_sectors:
        return [(sector, count)]
    pieces = []
    while count > max_sectors:
        split = max_sectors
        misalign = (sector + split - limits.alignment % granularity) % granularity
        if split > misalign:
            split -= misalign
        pieces.append((sector, split))
        sector, count = sector + split, count - split
    pieces.append((sector, count))
    return pieces


def discard_requests(ranges: Sequence[tuple[int, int]], limits: DiscardLimits) -> list[list[tuple[int, int]]]:
    """The requests a driver receives for `ranges` (each one blkdev_issue_discard, all in one plug): each request
    is its segments, in order; a single-segment device's request is one merged (sector, count)."""
    requests: list[list[tuple[int, int]]] = []
    mergeable = False                   # whether the newest request may take a bio
    for sector, count in ranges:
        if count <= 0:
            continue
        for bio_sector, bio_count in issue_bios(sector, count, limits.granularity):
            pieces = split_bio(bio_sector, bio_count, limits)
            for piece in pieces[:-1]:
                requests.append([piece])
                mergeable = False
            last = pieces[-1]
            if not (mergeable and _merge(requests[-1], last, limits)):
                requests.append([last])
            mergeable = True
    return requests


def _merge(request: list[tuple[int, int]], bio: tuple[int, int], limits: DiscardLimits) -> bool:
    """Merge `bio` into `request` in place when the queue allows it."""
    total = sum(n for _, n in request)
    if total + bio[1] > min(limits.max_sectors, UINT_MAX >> 9):
        return False
    if limits.max_segments > 1:
        if len(request) >= limits.max_segments:
            return False
        request.append(bio)
        return True
    (start, n), (sector, count) = request[0], bio
    if sector == start + n:                     # back merge
        request[0] = (start, n + count)
    elif sector + count == start:               # front merge
        request[0] = (sector, count + n)
    else:
        return False
    return True
