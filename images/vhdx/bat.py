"""The block allocation table (BAT, [MS-VHDX] 2.5): one 64-bit entry per payload block, and a sector-bitmap
entry after every chunk of blocks (the blocks whose sectors one 1 MiB sector bitmap covers).

The image (reads, writes, discards, checks), creation and relinking (which changes the table's shape)
share this one model of the table: where a block's entry is, the states an entry may have, which file
ranges it gives to payload and sector-bitmap blocks, and how a changed entry is staged, as its whole 4 KiB
page, in a log transaction.
"""

from __future__ import annotations

import sys
from array import array

from emu.errors import InvalidImage
from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.transaction import Transaction

SECTOR = 512                       # the logical sector size qemu (and emu) support; chunks are counted in it
PAGE = L.LOG_SECTOR                # the table is updated in 4 KiB pages, one log sector each
ENTRIES_PER_PAGE = PAGE // 8
ABSENT = (L.PAYLOAD_NOT_PRESENT, L.PAYLOAD_UNDEFINED, L.PAYLOAD_ZERO, L.PAYLOAD_UNMAPPED, L.PAYLOAD_UNMAPPED_V095)
PRESENT = (L.PAYLOAD_FULLY_PRESENT, L.PAYLOAD_PARTIALLY_PRESENT)


def chunk_ratio(block_size: int) -> int:
    """Payload blocks per chunk."""
    return L.SECTORS_PER_BITMAP * SECTOR // block_size


def entry_count(blocks: int, ratio: int, differencing: bool) -> int:
    """Entries of a table of `blocks` payload blocks: a sector-bitmap entry follows every full chunk and,
    in a differencing disk, the last partial one too."""
    return -(-blocks // ratio) * (ratio + 1) if differencing else blocks + (blocks - 1) // ratio


class Bat:
    """The table of one image in memory; `entries` holds the raw entries, as on disk."""

    def __init__(self, entries: array, offset: int, region_length: int, block_size: int, virtual_size: int,
                 differencing: bool) -> None:
        self.entries = entries
        self.offset = offset                  # of the BAT region in the file
        self.region_length = region_length
        self.block_size = block_size
        self.virtual_size = virtual_size
        self.differencing = differencing      # sector-bitmap entries are used (and one ends the table)
        self.ratio = chunk_ratio(block_size)
        self.blocks = -(-virtual_size // block_size)

    @classmethod
    def read(cls, host: HostFile, region, block_size: int, virtual_size: int, differencing: bool) -> Bat:
        """The table of a BAT region entry, refused if the region or the file is too short for it."""
        blocks = -(-virtual_size // block_size)
        count = entry_count(blocks, chunk_ratio(block_size), differencing)
        if region.length < count * 8:
            raise InvalidImage(f"BAT region of {region.length} bytes cannot hold {count} entries", field="bat")
        if region.file_offset + count * 8 > host.size():
            raise InvalidImage("the BAT runs past the end of the file (truncated?)", field="bat")
        entries = array("Q")
        entries.frombytes(host.pread(region.file_offset, count * 8))
        if sys.byteorder == "big":
            entries.byteswap()
        return cls(entries, region.file_offset, region.length, block_size, virtual_size, differencing)

    # -- addressing --------------------------------------------------------------------------------
    def index(self, block: int) -> int:
        return block + block // self.ratio

    def entry(self, block: int) -> int:
        return self.entries[block + block // self.ratio]

    def state(self, block: int) -> int:
        return self.entries[block + block // self.ratio] & L.STATE_MASK

    def bitmap_index(self, block: int) -> int:
        """The entry of the sector bitmap of the block's chunk."""
        return block // self.ratio * (self.ratio + 1) + self.ratio

    def is_bitmap(self, index: int) -> bool:
        return index % (self.ratio + 1) == self.ratio

    def block_len(self, block: int) -> int:
        """Bytes of the virtual disk in the block (the last one may be short)."""
        return min(self.block_size, self.virtual_size - block * self.block_size)

    # -- updating ----------------------------------------------------------------------------------
    def set(self, index: int, state: int, offset: int, tx: Transaction) -> None:
        """Change an entry and stage its page."""
        # qemu writes FileOffsetMB 0 for states without data: Hyper-V refuses ZERO blocks with an offset
        self.entries[index] = (offset if state in PRESENT else 0) | state   # SB_PRESENT == FULLY_PRESENT
        first = index // ENTRIES_PER_PAGE * ENTRIES_PER_PAGE
        tx.stage(self.offset + first * 8, self.encode(first, ENTRIES_PER_PAGE).ljust(PAGE, b"\0"))

    def encode(self, first: int, count: int) -> bytes:
        """Entries as stored (little-endian)."""
        chunk = self.entries[first:first + count]
        if sys.byteorder == "big":
            chunk.byteswap()
        return chunk.tobytes()

    # -- what the table claims ---------------------------------------------------------------------
    def used_ranges(self) -> list[tuple[int, int]]:
        """(start, end) of the file ranges of payload and sector-bitmap blocks the table names."""
        bs, ratio = self.block_size, self.ratio + 1
        used = []
        for index, entry in enumerate(self.entries):
            if entry & 6 == 6:                     # FULLY/PARTIALLY_PRESENT, or SB_PRESENT
                used.append((entry & L.OFFSET_MASK,
                             (entry & L.OFFSET_MASK) + (L.BITMAP_BLOCK if index % ratio == self.ratio else bs)))
        return used

    def problems(self, file_size: int, regions: list[tuple[int, int]]) -> list[str]:
        """What qemu's vhdx_check_bat_entries finds (blocks past the end of the file or over `regions`), plus
        states that may not appear in this disk type. An image with any is refused unless opened for check."""
        problems = []
        ratio = self.ratio + 1
        bs = self.block_size
        for index, entry in enumerate(self.entries):
            state = entry & L.STATE_MASK
            if not state:
                continue
            bitmap = index % ratio == self.ratio
            if bitmap:
                if state != L.SB_PRESENT:
                    problems.append(f"sector bitmap entry {index} has the invalid state {state}")
                    continue
                if not self.differencing:
                    problems.append(f"sector bitmap entry {index} is present in a disk without a parent")
                    continue
                length = L.BITMAP_BLOCK
            elif state == 4 or (state == L.PAYLOAD_PARTIALLY_PRESENT and not self.differencing):
                problems.append(f"BAT entry {index} has the state {state}, invalid in this disk type")
                continue
            elif state not in PRESENT:
                continue
            else:
                block = index - index // ratio
                length = min(bs, self.virtual_size - block * bs)
            offset = entry & L.OFFSET_MASK
            if offset >= file_size:
                problems.append(f"VHDX BAT entry {index} start offset {offset} points after end of file "
                                f"({file_size}). Image has probably been truncated.")
            elif offset + length > file_size:
                problems.append(f"VHDX BAT entry {index} end offset {offset + length - 1} points after end of file "
                                f"({file_size}). Image has probably been truncated.")
            elif any(offset < end and start < offset + length for start, end in regions):
                problems.append(f"VHDX BAT entry {index} at {offset} overlaps the header section, log, BAT or "
                                "metadata")
        return problems

    def conflicts(self) -> list[str]:
        """What emu's check adds to `problems`: blocks that share a file offset, and partially present blocks
        whose chunk has no sector bitmap."""
        found = []
        owners: dict[int, int] = {}
        ratio = self.ratio + 1
        entries = self.entries
        for index, entry in enumerate(entries):
            state = entry & L.STATE_MASK
            is_bitmap = index % ratio == self.ratio
            if (is_bitmap and state == L.SB_PRESENT) or (not is_bitmap and state in PRESENT):
                offset = entry & L.OFFSET_MASK
                if offset in owners:
                    found.append(f"ERROR: BAT entries {owners[offset]} and {index} share the file offset {offset}")
                owners[offset] = index
            if not is_bitmap and state == L.PAYLOAD_PARTIALLY_PRESENT:
                bitmap_index = (index // ratio) * ratio + self.ratio
                sb = entries[bitmap_index] if bitmap_index < len(entries) else 0
                if sb & L.STATE_MASK != L.SB_PRESENT:
                    found.append(f"ERROR: BAT entry {index} is partially present but its chunk has no sector bitmap")
        return found
