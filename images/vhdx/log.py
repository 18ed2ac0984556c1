"""The VHDX metadata log: a circular buffer of entries that make metadata updates atomic.

[MS-VHDX] 2.3: an entry is a 4 KiB header sector (entry header + descriptors), then one 4 KiB data
sector per data descriptor. A data descriptor carries bytes 0-7 and 4092-4095 of the target sector
and its data sector the middle 4084; a zero descriptor zeroes a range. The whole entry is covered
by one CRC-32C. Entries count only while the active header's log GUID matches theirs: a writer sets
a fresh log GUID, writes the entry, flushes, applies it and clears the GUID; a reader that finds a
non-zero GUID replays the newest valid sequence of entries before touching anything else.

This module knows the log's bytes; `images.vhdx.image` decides when to use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from construct import ConstructError

from emu.crc32c import crc32c
from emu.errors import InvalidImage
from images.hostfile import HostFile
from images.vhdx import layout as L

SECTOR = L.LOG_SECTOR
_HDR = L.LOG_ENTRY_HEADER.sizeof()
_DESC = L.LOG_DESCRIPTOR.sizeof()


def _descriptor_sectors(count: int) -> int:
    """Sectors holding the entry header (the size of two descriptors) and `count` descriptors."""
    return -(-(count + 2) // L.DESCRIPTORS_PER_SECTOR)


def checksum(buf: bytearray | bytes) -> int:
    """CRC-32C of a structure whose checksum field (bytes 4-7) counts as zero."""
    return crc32c(bytes(buf[:4]) + bytes(4) + bytes(buf[8:]))


@dataclass(slots=True)
class Entry:
    """A parsed, checksum-valid log entry."""

    position: int          # offset within the log
    header: object
    writes: list           # (file_offset, 4 KiB of data) or (file_offset, zero length as int)

    @property
    def sequence(self) -> int:
        return self.header.sequence_number

    @property
    def end(self) -> int:
        return self.position + self.header.entry_length


class Log:
    """The log region of one file: `offset` and `length` from the active header."""

    def __init__(self, host: HostFile, offset: int, length: int) -> None:
        self.host = host
        self.offset = offset
        self.length = length

    def _read(self, position: int, sectors: int) -> bytes:
        """Read sectors from a log position, wrapping at the end of the circular buffer."""
        out = []
        for _ in range(sectors):
            position %= self.length
            out.append(self.host.pread(self.offset + position, SECTOR))
            position += SECTOR
        return b"".join(out)

    # -- reading -----------------------------------------------------------------------------------
    def _entry_at(self, position: int, log_guid: bytes) -> Entry | None:
        first = self.host.pread(self.offset + position, SECTOR)
        if first[:4] != L.LOG_SIGNATURE:
            return None
        hdr = L.LOG_ENTRY_HEADER.parse(first)
        length = hdr.entry_length
        if (hdr.log_guid != log_guid or hdr.sequence_number == 0 or length == 0 or length % SECTOR
                or length > self.length):
            return None
        desc_sectors = _descriptor_sectors(hdr.descriptor_count)
        if desc_sectors * SECTOR > length:
            return None
        raw = self._read(position, length // SECTOR)
        if checksum(raw) != hdr.checksum:
            return None
        writes = []
        data_index = desc_sectors
        for i in range(hdr.descriptor_count):
            try:
                desc = L.LOG_DESCRIPTOR.parse(raw[_HDR + i * _DESC:_HDR + (i + 1) * _DESC])
            except ConstructError:
                return None
            if desc.sequence_number != hdr.sequence_number or desc.file_offset % SECTOR:
                return None
            if desc.signature == L.ZERO_SIGNATURE:
                zero_length = int.from_bytes(desc.leading_bytes, "little")
                if zero_length % SECTOR:
                    return None
                writes.append((desc.file_offset, zero_length))
            elif desc.signature == L.DESC_SIGNATURE:
                if (data_index + 1) * SECTOR > length:
                    return None
                sector = L.LOG_DATA_SECTOR.parse(raw[data_index * SECTOR:(data_index + 1) * SECTOR])
                data_index += 1
                if (sector.signature != L.DATA_SIGNATURE
                        or (sector.sequence_high << 32 | sector.sequence_low) != hdr.sequence_number):
                    return None
                writes.append((desc.file_offset, desc.leading_bytes + sector.data + desc.trailing_bytes))
            else:
                return None
        return Entry(position, hdr, writes)

    def active_sequence(self, log_guid: bytes) -> list[Entry]:
        """The newest run of valid entries with consecutive sequence numbers ([MS-VHDX] 2.3.3),
        found by trying every sector of the log as a start; [] when there is none."""
        best: list[Entry] = []
        for start in range(0, self.length, SECTOR):
            entry = self._entry_at(start, log_guid)
            if entry is None:
                continue
            run = [entry]
            seen = {start}
            while True:
                nxt = run[-1].end % self.length
                if nxt in seen:
                    break
                following = self._entry_at(nxt, log_guid)
                if following is None or following.sequence != run[-1].sequence + 1:
                    break
                run.append(following)
                seen.add(nxt)
            if not best or run[-1].sequence > best[-1].sequence:
                best = run
        return best

    def replay(self, entries: list[Entry]) -> None:
        """Apply a sequence to the file: data sectors written, zero ranges zeroed, file extended to
        the size the writer recorded. A log claiming a longer file than exists means the file was
        truncated after the entry was written, and the log is refused."""
        host = self.host
        for entry in entries:
            hdr = entry.header
            if hdr.flushed_file_offset > host.size():
                raise InvalidImage(f"log entry {hdr.sequence_number} records a file of {hdr.flushed_file_offset} "
                                   f"bytes but the file has {host.size()}: it has been truncated",
                                   field="log", offset=self.offset + entry.position)
            limit = max(host.size(), hdr.last_file_offset)
            for file_offset, payload in entry.writes:
                length = payload if isinstance(payload, int) else SECTOR
                if file_offset < L.HEADER_SECTION_END or file_offset + length > limit:
                    raise InvalidImage(f"log entry {hdr.sequence_number} writes {length} bytes at {file_offset}, "
                                       "outside the file's metadata and data area", field="log",
                                       offset=self.offset + entry.position)
            for file_offset, payload in entry.writes:
                if isinstance(payload, int):
                    host.zero_range(file_offset, payload)
                else:
                    host.pwrite(file_offset, payload)
            if host.size() < hdr.last_file_offset:
                host.truncate(-(-hdr.last_file_offset // L.MiB) * L.MiB)
        host.sync()

    # -- writing -----------------------------------------------------------------------------------
    def max_sectors_per_entry(self) -> int:
        """How many 4 KiB sectors one entry can replace in this log (at least one: the log is >= 1 MiB)."""
        count = self.length // SECTOR * L.DESCRIPTORS_PER_SECTOR // (L.DESCRIPTORS_PER_SECTOR + 1)
        while count > 1 and (_descriptor_sectors(count) + count) * SECTOR > self.length:
            count -= 1
        return count

    def build_entry(self, log_guid: bytes, sequence: int, sectors: dict[int, bytes], file_size: int) -> bytes:
        """One entry replacing whole 4 KiB file sectors {file_offset: data}, written at position 0."""
        count = len(sectors)
        desc_sectors = _descriptor_sectors(count)
        total = (desc_sectors + count) * SECTOR
        if total > self.length:
            raise InvalidImage(f"a metadata update of {count} sectors does not fit the {self.length}-byte log",
                               field="log_length")
        buf = bytearray(total)
        buf[:_HDR] = L.LOG_ENTRY_HEADER.build(dict(
            signature=L.LOG_SIGNATURE, checksum=0, entry_length=total, tail=0, sequence_number=sequence,
            descriptor_count=count, reserved=0, log_guid=log_guid, flushed_file_offset=file_size,
            last_file_offset=file_size))
        for i, (file_offset, data) in enumerate(sorted(sectors.items())):
            assert len(data) == SECTOR and file_offset % SECTOR == 0
            buf[_HDR + i * _DESC:_HDR + (i + 1) * _DESC] = L.LOG_DESCRIPTOR.build(dict(
                signature=L.DESC_SIGNATURE, trailing_bytes=data[4092:], leading_bytes=data[:8],
                file_offset=file_offset, sequence_number=sequence))
            at = (desc_sectors + i) * SECTOR
            buf[at:at + SECTOR] = L.LOG_DATA_SECTOR.build(dict(
                signature=L.DATA_SIGNATURE, sequence_high=sequence >> 32, data=data[8:4092],
                sequence_low=sequence & 0xFFFFFFFF))
        buf[4:8] = checksum(buf).to_bytes(4, "little")
        return bytes(buf)

    def write_entry(self, entry: bytes) -> None:
        self.host.pwrite(self.offset, entry)
