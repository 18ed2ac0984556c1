"""DATA SET MANAGEMENT (TRIM) payloads: 8-byte LBA Range Entries in whole 512-byte blocks.

Wire format (ACS-2/3 DATA SET MANAGEMENT; layout `layouts.DSM_RANGE_ENTRY`): little-endian u64 per entry,
bits 47:0 the starting LBA, bits 63:48 the length in sectors (at most 65535); a length of 0 marks an unused
entry. COUNT of the command is the number of 512-byte blocks. Decoding follows QEMU's ide_issue_trim: walk
whole 8-byte entries in order, skip zero-length ones; range checks are the device's business, not this one's.
"""

from __future__ import annotations

import struct

from controllers.ata.layouts import (
    DSM_MAX_RANGE_SECTORS,
    DSM_RANGE_ENTRY_SIZE,
    LBA48_LIMIT,
    SECTOR_SIZE,
)

_ENTRY = struct.Struct("<Q")
_LBA_MASK = LBA48_LIMIT - 1


def pieces(lba: int, count: int, limit: int) -> list[tuple[int, int]]:
    """A run of `count` sectors from `lba` cut into consecutive pieces of at most `limit` sectors."""
    return [(start, min(limit, lba + count - start)) for start in range(lba, lba + count, limit)]


def split_ranges(ranges) -> list[tuple[int, int]]:
    """(lba, count) ranges as range entries: each cut into pieces of at most 65535 sectors, empty ones
    dropped. Raises ValueError for a negative count or a range past the 48-bit LBA space."""
    entries = []
    for lba, count in ranges:
        if lba < 0 or count < 0 or lba + count > LBA48_LIMIT:
            raise ValueError(f"range (lba={lba}, count={count}) does not fit 48-bit LBA range entries")
        entries += pieces(lba, count, DSM_MAX_RANGE_SECTORS)
    return entries


def encode_entries(entries) -> bytes:
    """Raw range entries, in order and as given (count 0 kept as an unused entry), zero-padded to whole
    512-byte blocks; no entries give no bytes."""
    out = bytearray()
    for lba, count in entries:
        if not 0 <= lba < LBA48_LIMIT or not 0 <= count <= DSM_MAX_RANGE_SECTORS:
            raise ValueError(f"entry (lba={lba}, count={count}) does not fit an LBA Range Entry")
        out += _ENTRY.pack(count << 48 | lba)
    out += bytes(-len(out) % SECTOR_SIZE)
    return bytes(out)


def encode_ranges(ranges) -> bytes:
    """A DSM TRIM payload for (lba, count) ranges: long ranges split, empty ones dropped, padded to whole
    512-byte blocks (COUNT = len(result) // 512)."""
    return encode_entries(split_ranges(ranges))


def decode_entries(data) -> list[tuple[int, int]]:
    """Every whole 8-byte entry of `data` as (lba, count), unused ones included; a trailing partial entry is
    ignored, as QEMU walks iov_len / 8 entries."""
    whole = len(data) - len(data) % DSM_RANGE_ENTRY_SIZE
    return [(v & _LBA_MASK, v >> 48) for (v,) in _ENTRY.iter_unpack(memoryview(data)[:whole])]


def decode_ranges(data) -> list[tuple[int, int]]:
    """The (lba, count) ranges a DSM TRIM payload asks for, in order, count-0 entries skipped."""
    return [(lba, count) for lba, count in decode_entries(data) if count]
