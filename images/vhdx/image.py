"""VHDX (Hyper-V, qemu-img's "vhdx"): dynamic, fixed and differencing disks.

Opening: two headers (the valid one with the higher sequence number wins), the metadata log (a
non-zero log GUID means a writer stopped between logging and applying an update: the newest valid
sequence is replayed on a read-write open and the open is refused read-only, as qemu), the region
table (BAT and metadata regions), the metadata items, then the BAT, whose payload entries are
interleaved with one sector-bitmap entry per chunk ([MS-VHDX] 2.5).

Writing follows qemu's order: data first and flushed, then every BAT or sector-bitmap sector the
request changed goes through one log entry (log GUID set, entry written, flushed, applied, flushed,
GUID cleared), so a crash anywhere leaves either the old or the new metadata. Before the first change
after opening, both headers get a new file-write and data-write GUID, as the specification asks;
a differencing child names its parent by that data-write GUID, so writing into a parent breaks its
children, which are then refused (parent linkage mismatch), never read silently.

Block states emu writes ([MS-VHDX] 2.5.1.1; Hyper-V's TRIM handling is not published, this is the
model): a discard or a may-unmap zero write of a whole block sets PAYLOAD_BLOCK_UNMAPPED in a dynamic
disk and PAYLOAD_BLOCK_ZERO in a differencing one (UNMAPPED would let a reader consult the parent;
ZERO is defined to read zeros in every disk type); the block's file range is punched and reused by
the next allocation in this session. A fixed disk (LeaveBlockAllocated) keeps every block present and
passes discards to the host file as holes. Partial blocks are not deallocated. UNDEFINED, UNMAPPED and
ZERO blocks read as zeros, as in qemu. Differencing: NOT_PRESENT reads the parent, FULLY_PRESENT this
file, PARTIALLY_PRESENT asks the chunk's sector bitmap (bit set: this file); a partial write into a
block copies the parent's data for the rest of each 4 KiB page it touches and sets the page's bits.
qemu 7.2 cannot open differencing VHDX files; libvhdi can.
"""

from __future__ import annotations

import sys
import uuid
from array import array


from emu.errors import InvalidImage, UnsupportedFeature
from emu.units import human_size
from emu.trace import Act, NULL_TRACE, Trace
from emu.block.backend import BlockLimits, BlockStatus, Status
from images.backend import CheckResult, ImageBackend, zeros
from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.headers import (format_guid, parse_parent_locator, read_headers, read_metadata,
                                 read_regions)
from images.vhdx.log import Log, checksum

FORMAT = "vhdx"
SECTOR = 512                       # the logical sector size qemu (and emu) support
PAGE = L.LOG_SECTOR                # metadata is updated, and differencing data copied, in 4 KiB pages
BAT_PER_PAGE = PAGE // 8
_ABSENT = (L.PAYLOAD_NOT_PRESENT, L.PAYLOAD_UNDEFINED, L.PAYLOAD_ZERO, L.PAYLOAD_UNMAPPED,
           L.PAYLOAD_UNMAPPED_V095)
_PRESENT = (L.PAYLOAD_FULLY_PRESENT, L.PAYLOAD_PARTIALLY_PRESENT)
BITMAP_CACHE = 64                  # sector-bitmap pages kept in memory


def probe(head: bytes) -> bool:
    return head[:8] == L.FILE_SIGNATURE


def _u32(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


class VhdxImage(ImageBackend):
    format_name = FORMAT
    supports_backing = True
    supports_discard = True
    supports_write_zeroes = True

    def __init__(self, host: HostFile, *, read_only: bool, check_mode: bool = False) -> None:
        current, headers = read_headers(host)
        self.headers = headers
        self.current = current
        header = headers[current]
        if header.log_version != 0:
            raise UnsupportedFeature(f"log version {header.log_version} (only 0 exists)", field="log_version")
        if header.log_offset < L.HEADER_SECTION_END or header.log_offset % L.MiB:
            raise InvalidImage(f"log at {header.log_offset}: not 1 MiB aligned after the header section",
                               field="log_offset")
        if header.log_length % L.MiB:
            raise InvalidImage(f"log of {header.log_length} bytes: not a multiple of 1 MiB", field="log_length")
        if header.log_offset + header.log_length > host.size():
            raise InvalidImage("the log runs past the end of the file (truncated?)", field="log_offset")
        self.log = Log(host, header.log_offset, header.log_length)
        self.session_guid = uuid.uuid4().bytes_le
        self.replayed = False
        self.host = host
        self.path = host.path
        if header.log_guid != L.ZERO_GUID and header.log_length:
            entries = self.log.active_sequence(header.log_guid)
            if entries:
                if read_only:
                    raise InvalidImage("the log holds updates that a crashed writer did not apply; open the image "
                                       "read-write to replay them (emu img check -r all)", field="log_guid")
                self.log.replay(entries)
                self.replayed = True
            self.sequence = (entries[-1].sequence + 1) if entries else 1
            if entries:
                self._update_headers(log_guid=L.ZERO_GUID)
            stale_log_guid = not entries and not read_only
        else:
            stale_log_guid = False
            self.sequence = 1
        bat_region, meta_region = read_regions(host)
        self._check_regions(bat_region, meta_region, header)
        items = read_metadata(host, meta_region)
        params = L.FILE_PARAMETERS.parse(items[L.FILE_PARAMS_GUID])
        size = int.from_bytes(items[L.VIRTUAL_SIZE_GUID][:8], "little")
        logical = _u32(items[L.LOGICAL_SECTOR_GUID])
        physical = _u32(items[L.PHYSICAL_SECTOR_GUID])
        bs = params.block_size
        if bs < L.BLOCK_SIZE_MIN or bs > L.BLOCK_SIZE_MAX or bs & (bs - 1):
            raise InvalidImage(f"block size {bs} (a power of two from 1 MiB to 256 MiB)", field="block_size")
        if logical not in (512, 4096):
            raise InvalidImage(f"logical sector size {logical} (512 or 4096)", field="logical_sector_size")
        if physical not in (512, 4096):     # qemu 7.2 does not look at it; [MS-VHDX] 2.6.2.5 allows these two
            raise InvalidImage(f"physical sector size {physical} (512 or 4096)", field="physical_sector_size")
        if logical != SECTOR:
            raise UnsupportedFeature("4096-byte logical sectors are not supported (qemu 7.2 refuses them too)",
                                     field="logical_sector_size")
        if size % logical or size > L.MAX_DISK_SIZE or size == 0:
            raise InvalidImage(f"virtual disk size {size} (a multiple of the sector size, at most 64 TiB)",
                               field="virtual_disk_size")
        super().__init__(host, size, read_only=read_only)
        self.block_size = bs
        self.fixed = bool(params.flags & L.PARAM_LEAVE_ALLOCATED) and not params.flags & L.PARAM_HAS_PARENT
        self.is_diff = bool(params.flags & L.PARAM_HAS_PARENT)
        self.params = params
        self.page83 = items[L.PAGE83_GUID][:16]
        self.physical_sector_size = physical
        self.chunk_ratio = L.SECTORS_PER_BITMAP * SECTOR // bs
        self.blocks = -(-size // bs)
        chunks = -(-self.blocks // self.chunk_ratio)
        entries = chunks * (self.chunk_ratio + 1) if self.is_diff \
            else self.blocks + (self.blocks - 1) // self.chunk_ratio
        if bat_region.length < entries * 8:
            raise InvalidImage(f"BAT region of {bat_region.length} bytes cannot hold {entries} entries",
                               field="bat")
        if bat_region.file_offset + entries * 8 > host.size():
            raise InvalidImage("the BAT runs past the end of the file (truncated?)", field="bat")
        self.bat_offset = bat_region.file_offset
        self.bat_region_length = bat_region.length
        self.bat = array("Q")
        self.bat.frombytes(host.pread(self.bat_offset, entries * 8))
        if sys.byteorder == "big":
            self.bat.byteswap()
        self.regions = [(0, L.HEADER_SECTION_END), (header.log_offset, header.log_offset + header.log_length),
                        (bat_region.file_offset, bat_region.file_offset + bat_region.length),
                        (meta_region.file_offset, meta_region.file_offset + meta_region.length)]
        if not check_mode:
            problems = self._bat_problems()
            if problems:
                raise InvalidImage(problems[0], field="bat")
        self.locator: dict[str, str] = {}
        if self.is_diff:
            if L.PARENT_LOCATOR_GUID not in items:
                raise InvalidImage("a differencing VHDX without a parent locator", field="parent_locator")
            self.locator = parse_parent_locator(items[L.PARENT_LOCATOR_GUID])
            self.backing_name = self._parent_path()
            self.backing_format = FORMAT
        self.limits = BlockLimits(request_alignment=SECTOR, discard_alignment=bs, zero_alignment=bs)
        self.free_slots: list[int] | None = None   # unused block-sized slots inside the file, found lazily
        self._bitmaps: dict[int, bytearray] = {}   # 4 KiB sector-bitmap pages by file offset
        self._modified = False
        if stale_log_guid:       # a log GUID that no valid entry carries: cleared once the file proved valid,
            self._update_headers(log_guid=L.ZERO_GUID)   # so a refused open leaves the file untouched

    # -- validation --------------------------------------------------------------------------------
    @staticmethod
    def _check_regions(bat, meta, header) -> None:
        spans = [("log", header.log_offset, header.log_length), ("BAT", bat.file_offset, bat.length),
                 ("metadata", meta.file_offset, meta.length)]
        for name, start, length in spans[1:]:
            if start < L.HEADER_SECTION_END or length % PAGE or length == 0:
                raise InvalidImage(f"{name} region at {start}, {length} bytes: inside the header section or not "
                                   "4 KiB aligned", field="region_table")
        for i, (name, start, length) in enumerate(spans):
            for other, ostart, olength in spans[i + 1:]:
                if start < ostart + olength and ostart < start + length and length and olength:
                    raise InvalidImage(f"the {name} and {other} regions overlap", field="region_table")

    def _bat_problems(self) -> list[str]:
        """What qemu's vhdx_check_bat_entries finds, plus states that may not appear in this disk type."""
        problems = []
        size = self.host.size()
        ratio = self.chunk_ratio + 1
        regions = self.regions
        bs = self.block_size
        for index, entry in enumerate(self.bat):
            state = entry & L.STATE_MASK
            if not state:
                continue
            bitmap = index % ratio == self.chunk_ratio
            if bitmap:
                if state != L.SB_PRESENT:
                    problems.append(f"sector bitmap entry {index} has the invalid state {state}")
                    continue
                if not self.is_diff:
                    problems.append(f"sector bitmap entry {index} is present in a disk without a parent")
                    continue
                length = L.BITMAP_BLOCK
            elif state == 4 or (state == L.PAYLOAD_PARTIALLY_PRESENT and not self.is_diff):
                problems.append(f"BAT entry {index} has the state {state}, invalid in this disk type")
                continue
            elif state not in _PRESENT:
                continue
            else:
                block = index - index // ratio
                length = min(bs, self.virtual_size - block * bs)
            offset = entry & L.OFFSET_MASK
            if offset >= size:
                problems.append(f"VHDX BAT entry {index} start offset {offset} points after end of file ({size}). "
                                "Image has probably been truncated.")
            elif offset + length > size:
                problems.append(f"VHDX BAT entry {index} end offset {offset + length - 1} points after end of file "
                                f"({size}). Image has probably been truncated.")
            elif any(offset < end and start < offset + length for start, end in regions):
                problems.append(f"VHDX BAT entry {index} at {offset} overlaps the header section, log, BAT or "
                                "metadata")
        return problems

    # -- headers and the log -----------------------------------------------------------------------
    def _update_headers(self, *, data_guid: bool = False, log_guid: bytes | None = None) -> None:
        """Write the non-current header with the next sequence number, twice, so both copies are
        valid and current ([MS-VHDX] 2.2.2.1); each write is flushed before the next."""
        new_data_guid = uuid.uuid4().bytes_le if data_guid else None
        for _ in range(2):
            target = 1 - self.current
            header = dict(self.headers[self.current])
            header.pop("_io", None)
            header["sequence_number"] += 1
            header["file_write_guid"] = self.session_guid
            if new_data_guid is not None:
                header["data_write_guid"] = new_data_guid
            if log_guid is not None:
                header["log_guid"] = log_guid
            raw = bytearray(self.host.pread(L.HEADER_OFFSETS[target], L.HEADER_AREA))
            raw[:L.HEADER.sizeof()] = L.HEADER.build(header)
            raw[4:8] = checksum(raw).to_bytes(4, "little")
            self.host.pwrite(L.HEADER_OFFSETS[target], raw)
            self.host.sync()
            self.headers[target] = L.HEADER.parse(raw)
            self.current = target

    def _begin_change(self) -> None:
        self.check_writable()
        if not self._modified:
            self._modified = True
            self._update_headers(data_guid=True)

    def _commit(self, pages: dict[int, bytes]) -> None:
        """Make metadata page updates atomic through the log, as qemu's vhdx_log_write_and_flush. An
        update larger than the log holds (a discard of a terabyte in 1 MiB blocks changes thousands of
        BAT pages) goes through in several entries: each page stands alone (a block's BAT entry, a
        sector-bitmap page), so a crash between entries leaves every block old or new, never torn."""
        if not pages:
            return
        host = self.host
        host.sync()                                  # the data the new metadata points at is stable
        ordered = sorted(pages.items())
        per_entry = self.log.max_sectors_per_entry()
        for first in range(0, len(ordered), per_entry):
            chunk = dict(ordered[first:first + per_entry])
            log_guid = uuid.uuid4().bytes_le
            self._update_headers(log_guid=log_guid)
            host.sync()
            entry = self.log.build_entry(log_guid, self.sequence, chunk, host.size())
            self.sequence += 1
            self.log.write_entry(entry)
            host.sync()
            for offset, data in chunk.items():
                host.pwrite(offset, data)
            host.sync()
            self._update_headers(log_guid=L.ZERO_GUID)

    def _bat_page(self, index: int, pages: dict[int, bytes]) -> None:
        """Queue the 4 KiB BAT page holding entry `index` (current in-memory contents)."""
        first = index // BAT_PER_PAGE * BAT_PER_PAGE
        offset = self.bat_offset + first * 8
        chunk = self.bat[first:first + BAT_PER_PAGE]
        data = chunk.tobytes() if sys.byteorder == "little" else _swapped(chunk)
        pages[offset] = data.ljust(PAGE, b"\0")

    def _set_entry(self, index: int, state: int, offset: int, pages: dict[int, bytes]) -> None:
        # qemu writes FileOffsetMB 0 for states without data: Hyper-V refuses ZERO blocks with an offset
        self.bat[index] = (offset if state in _PRESENT else 0) | state   # SB_PRESENT == FULLY_PRESENT
        self._bat_page(index, pages)

    # -- addressing --------------------------------------------------------------------------------
    def _index(self, block: int) -> int:
        return block + block // self.chunk_ratio

    def _bitmap_index(self, block: int) -> int:
        chunk = block // self.chunk_ratio
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def _block_len(self, block: int) -> int:
        return min(self.block_size, self.virtual_size - block * self.block_size)

    def _bitmap_page(self, block: int, sector: int) -> tuple[int, bytearray, int]:
        """(page file offset, page, bit index within the page) for a sector of a block."""
        sb = self.bat[self._bitmap_index(block)] & L.OFFSET_MASK
        bit = (block % self.chunk_ratio) * (self.block_size // SECTOR) + sector
        page_offset = sb + bit // 8 // PAGE * PAGE
        page = self._bitmaps.get(page_offset)
        if page is None:
            page = bytearray(self.host.pread(page_offset, PAGE))
            if len(self._bitmaps) >= BITMAP_CACHE:
                self._bitmaps.pop(next(iter(self._bitmaps)))
            self._bitmaps[page_offset] = page
        return page_offset, page, bit % (PAGE * 8)

    def _runs(self, block: int, within: int, n: int):
        """(start, length, present) runs of a partially present block, from its sector bitmap."""
        pos, end = within, within + n
        while pos < end:
            sector = pos // SECTOR
            _, page, bit = self._bitmap_page(block, sector)
            present = bool(page[bit >> 3] >> (bit & 7) & 1)
            stop = (sector + 1) * SECTOR
            while stop < end:
                sector = stop // SECTOR
                _, page, bit = self._bitmap_page(block, sector)
                if not bit & 7 and page[bit >> 3] == (0xFF if present else 0) and stop + 8 * SECTOR <= end:
                    stop += 8 * SECTOR
                    continue
                if bool(page[bit >> 3] >> (bit & 7) & 1) != present:
                    break
                stop += SECTOR
            stop = min(stop, end)
            yield pos, stop - pos, present
            pos = stop

    def _parent_path(self) -> str | None:
        for key in ("relative_path", "absolute_win32_path", "volume_path"):
            value = self.locator.get(key)
            if value:
                value = value.replace("\\", "/")
                return value[2:] if value.startswith("./") else value
        return None

    def check_parent(self, parent: ImageBackend) -> None:
        if not isinstance(parent, VhdxImage):
            raise InvalidImage(f"parent of a differencing VHDX must be a VHDX, not {parent.format_name}",
                               path=self.path, field="parent_linkage")
        linkage = format_guid(parent.data_write_guid)
        wanted = {self.locator.get("parent_linkage", "").lower(), self.locator.get("parent_linkage2", "").lower()}
        if linkage.lower() not in wanted:
            raise InvalidImage(f"parent linkage mismatch: the image links to data write GUID "
                               f"{self.locator.get('parent_linkage')}, {parent.path} has {linkage} (the parent "
                               "was modified after this child was made)", path=self.path, field="parent_linkage")

    @property
    def data_write_guid(self) -> bytes:
        return self.headers[self.current].data_write_guid

    # -- reads -------------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        bs = self.block_size
        pieces = []
        while length > 0:
            block, within = divmod(offset, bs)
            n = min(length, bs - within)
            entry = self.bat[self._index(block)]
            state = entry & L.STATE_MASK
            if state == L.PAYLOAD_FULLY_PRESENT:
                pieces.append(self.host.pread((entry & L.OFFSET_MASK) + within, n))
            elif state == L.PAYLOAD_NOT_PRESENT and self.is_diff:
                pieces.append(self.read_backing(offset, n))
            elif state == L.PAYLOAD_PARTIALLY_PRESENT:
                base = entry & L.OFFSET_MASK
                for start, run, present in self._runs(block, within, n):
                    pieces.append(self.host.pread(base + start, run) if present
                                  else self.read_backing(block * bs + start, run))
            else:
                pieces.append(zeros(n))
            offset += n
            length -= n
        return b"".join(pieces)

    # -- allocation --------------------------------------------------------------------------------
    def _unused_slots(self) -> list[int]:
        """1 MiB aligned, block-sized ranges inside the file that no region or BAT entry uses (left by
        discards, or by a writer that crashed before its BAT update), lowest last so pop() takes it.
        Only ranges above the lowest block in use count: the space between the metadata and the first
        block is what qemu and Hyper-V keep for the metadata to grow (qemu leaves 4 MiB there, and a
        fixed disk made with block_state_zero=on reserves its whole data area with no block in it),
        and qemu puts the first block at the end of the file."""
        bs, ratio = self.block_size, self.chunk_ratio + 1
        used = []
        for index, entry in enumerate(self.bat):
            if entry & 6 == 6:                     # FULLY/PARTIALLY_PRESENT, or SB_PRESENT
                used.append((entry & L.OFFSET_MASK,
                             (entry & L.OFFSET_MASK) + (L.BITMAP_BLOCK if index % ratio == self.chunk_ratio else bs)))
        if not used:
            return []
        floor = min(start for start, _ in used)
        used += self.regions
        used.sort()
        slots, pos, size = [], floor, self.host.size()
        for start, end in used + [(size, size)]:
            pos = -(-pos // L.MiB) * L.MiB
            while pos + bs <= min(start, size):
                slots.append(pos)
                pos += bs
            pos = max(pos, end)
        return slots[::-1]

    def _allocate(self, length: int, need_zero: bool, trace: Trace, what: str) -> int:
        """A 1 MiB aligned slot: one freed by a discard in this session, else at the end of the file
        (qemu vhdx_allocate_block: the file is extended, so the slot reads as zeros)."""
        if length == self.block_size and self.free_slots is None:
            self.free_slots = self._unused_slots()
        if length == self.block_size and self.free_slots:
            offset = self.free_slots.pop()
            if need_zero:                          # a hole reads as zeros and costs no space
                self.host.punch_hole(offset, length)
                if not self.host.can_punch:
                    self.host.zero_range(offset, length)
            how = "reused a freed slot"
        else:
            offset = -(-self.host.size() // L.MiB) * L.MiB
            self.host.truncate(offset + length)
            how = "file extended"
        trace.add(FORMAT, Act.ALLOCATED, 0, length, f"{what} at host {offset:#x} ({how})", length)
        return offset

    # -- writes ------------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self._begin_change()
        bs = self.block_size
        view = memoryview(data)
        pages: dict[int, bytes] = {}
        pos = 0
        while pos < len(data):
            block, within = divmod(offset + pos, bs)
            n = min(len(data) - pos, bs - within)
            index = self._index(block)
            entry = self.bat[index]
            state = entry & L.STATE_MASK
            chunk = view[pos:pos + n]
            if state == L.PAYLOAD_FULLY_PRESENT:
                self.host.pwrite((entry & L.OFFSET_MASK) + within, chunk)
                trace.add(FORMAT, Act.WRITTEN, offset + pos, n, "in place")
            elif state == L.PAYLOAD_PARTIALLY_PRESENT:
                self._write_partial(block, entry & L.OFFSET_MASK, within, chunk, pages, trace)
            elif self.is_diff and state == L.PAYLOAD_NOT_PRESENT and n < self._block_len(block):
                slot = self._allocate(bs, False, trace, f"block {block}")
                self._ensure_bitmap(block, pages, trace)
                self._set_entry(index, L.PAYLOAD_PARTIALLY_PRESENT, slot, pages)
                self._write_partial(block, slot, within, chunk, pages, trace)
            else:
                # a whole new block; what the write does not cover reads as zeros (ZERO, UNMAPPED...)
                slot = self._allocate(bs, n < self._block_len(block), trace, f"block {block}")
                self.host.pwrite(slot + within, chunk)
                self._set_entry(index, L.PAYLOAD_FULLY_PRESENT, slot, pages)
            pos += n
        self._commit(pages)

    def _ensure_bitmap(self, block: int, pages: dict[int, bytes], trace: Trace) -> None:
        index = self._bitmap_index(block)
        if self.bat[index] & L.STATE_MASK != L.SB_PRESENT:
            # zeroed: a reused slot holds a discarded block's data, which would read as set bits
            slot = self._allocate(L.BITMAP_BLOCK, True, trace, f"sector bitmap of chunk {block // self.chunk_ratio}")
            self._set_entry(index, L.SB_PRESENT, slot, pages)

    def _write_partial(self, block: int, base: int, within: int, data: memoryview, pages: dict[int, bytes],
                       trace: Trace) -> None:
        """Write into a partially present block in whole 4 KiB pages (8 sectors, one bitmap byte): sectors
        of a touched page that this file does not hold yet are copied from the parent first."""
        block_len = self._block_len(block)
        first = within // PAGE * PAGE
        last = min(block_len, -(-(within + len(data)) // PAGE) * PAGE)
        copied = 0
        for page_start in range(first, last, PAGE):
            page_end = min(page_start + PAGE, block_len)
            page_offset, bitmap, bit = self._bitmap_page(block, page_start // SECTOR)
            lo, hi = max(page_start, within), min(page_end, within + len(data))
            piece = data[lo - within:hi - within]
            sectors = (page_end - page_start) // SECTOR
            full_mask = (1 << sectors) - 1
            held = bitmap[bit >> 3] & full_mask
            if held == full_mask or (lo == page_start and hi == page_end):
                self.host.pwrite(base + lo, piece)
            else:
                buf = bytearray(self.read(block * self.block_size + page_start, page_end - page_start)) \
                    if held else bytearray(self.read_backing(block * self.block_size + page_start,
                                                             page_end - page_start))
                buf[lo - page_start:hi - page_start] = piece
                self.host.pwrite(base + page_start, buf)
                copied += len(buf) - len(piece)
            if held != full_mask:
                bitmap[bit >> 3] |= full_mask
                pages[page_offset] = bytes(bitmap)
        detail = f"{copied} bytes of the parent copied; " if copied else ""
        detail += "sector bitmap updated"
        trace.add(FORMAT, Act.COW if copied else Act.WRITTEN, block * self.block_size + within, len(data), detail)

    # -- discard and write-zeroes ------------------------------------------------------------------
    def _whole_blocks(self, offset: int, length: int):
        """(block, within, n, whole) pieces of a range."""
        bs = self.block_size
        end = offset + length
        while offset < end:
            block, within = divmod(offset, bs)
            n = min(end - offset, bs - within)
            yield block, within, n, n == self._block_len(block)
            offset += n

    def _release(self, block: int, state: int, pages: dict[int, bytes], freed: list[int]) -> None:
        index = self._index(block)
        entry = self.bat[index]
        if entry & L.STATE_MASK in _PRESENT:
            freed.append(entry & L.OFFSET_MASK)
        self._set_entry(index, state, 0, pages)

    def _punch(self, slots: list[int], trace: Trace, first: int, length: int) -> None:
        released = 0
        for slot in slots:
            if self.host_unmap:
                released += self.host.punch_hole(slot, self.block_size)
            if self.free_slots is not None:
                self.free_slots.append(slot)
        if slots:
            if self.host_unmap:
                trace.add("file", Act.PUNCHED, first, length, f"{len(slots)} block slot(s), reused by later "
                          "allocations", released)
            else:
                trace.add(FORMAT, Act.KEPT, first, length, "block slots kept in the file (discard passthrough off)")

    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        self._begin_change()
        if self.fixed:
            released = 0
            if self.host_unmap:
                for block, within, n, _ in self._whole_blocks(offset, length):
                    entry = self.bat[self._index(block)]
                    if entry & L.STATE_MASK == L.PAYLOAD_FULLY_PRESENT:   # a ZERO block (qemu's default
                        released += self.host.punch_hole((entry & L.OFFSET_MASK) + within, n)   # fixed) has none
            trace.add("file", Act.PUNCHED if self.host_unmap else Act.IGNORED, offset, length,
                      "fixed VHDX: blocks stay allocated, the host range is punched"
                      if self.host_unmap else "fixed VHDX and discard passthrough off", released)
            return
        target = L.PAYLOAD_ZERO if self.is_diff else L.PAYLOAD_UNMAPPED
        pages: dict[int, bytes] = {}
        freed: list[int] = []
        changed = ignored = 0
        for block, _, n, whole in self._whole_blocks(offset, length):
            state = self.bat[self._index(block)] & L.STATE_MASK
            if not whole:
                ignored += n
            elif state in _PRESENT or (self.is_diff and state == L.PAYLOAD_NOT_PRESENT):
                self._release(block, target, pages, freed)
                changed += 1
        self._commit(pages)
        if changed:
            trace.add(FORMAT, Act.UNMAPPED if target == L.PAYLOAD_UNMAPPED else Act.ZEROED, offset, length,
                      f"{changed} block(s) set to {L.STATE_NAMES[target]}")
        if ignored:
            trace.add(FORMAT, Act.IGNORED, offset, ignored, "partial block: VHDX deallocates whole blocks only")
        if not changed and not ignored:
            trace.add(FORMAT, Act.IGNORED, offset, length, "nothing allocated there")
        self._punch(freed, trace, offset, length)

    def _reads_zero(self, state: int) -> bool:
        return state in _ABSENT and (state != L.PAYLOAD_NOT_PRESENT or not self.is_diff)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        pieces = [(block, within, n, whole, self.bat[self._index(block)] & L.STATE_MASK)
                  for block, within, n, whole in self._whole_blocks(offset, length)]
        if any(not whole and state != L.PAYLOAD_FULLY_PRESENT and not self._reads_zero(state)
               for _, _, _, whole, state in pieces):
            return False            # part of a block that needs data written: the Drive writes zeros
        self._begin_change()
        pages: dict[int, bytes] = {}
        freed: list[int] = []
        for block, within, n, whole, state in pieces:
            index = self._index(block)
            slot = self.bat[index] & L.OFFSET_MASK
            if state == L.PAYLOAD_FULLY_PRESENT and (not whole or self.fixed or not may_unmap):
                if self.fixed and may_unmap and self.host_unmap:
                    self.host.punch_hole(slot + within, n)
                else:
                    self.host.zero_range(slot + within, n)
            elif state == L.PAYLOAD_PARTIALLY_PRESENT and not may_unmap:
                self.host.zero_range(slot, n)
                self._set_entry(index, L.PAYLOAD_FULLY_PRESENT, slot, pages)
            elif whole and state != L.PAYLOAD_ZERO and not (state == L.PAYLOAD_NOT_PRESENT and not self.is_diff):
                self._release(block, L.PAYLOAD_ZERO, pages, freed)
        self._commit(pages)
        trace.add(FORMAT, Act.ZEROED, offset, length,
                  f"{sum(1 for p in pieces if p[3])} whole block(s) made to read zeros")
        self._punch(freed, trace, offset, length)
        return True

    # -- status, check, information ------------------------------------------------------------------
    def _block_status(self, offset: int, length: int) -> BlockStatus:
        bs = self.block_size
        block, within = divmod(offset, bs)
        entry = self.bat[self._index(block)]
        state = entry & L.STATE_MASK
        n = min(length, bs - within)
        base = entry & L.OFFSET_MASK
        if state == L.PAYLOAD_FULLY_PRESENT:
            flags = Status.DATA | Status.OFFSET_VALID | (Status.RECURSE if self.fixed else Status.NONE)
            return BlockStatus(flags, n, base + within)
        if state == L.PAYLOAD_PARTIALLY_PRESENT:
            start, run, present = next(self._runs(block, within, n))
            if present:
                return BlockStatus(Status.DATA | Status.OFFSET_VALID, run, base + start)
            return BlockStatus(Status.NONE, run)
        if state == L.PAYLOAD_NOT_PRESENT:
            end = offset + length
            stop = (block + 1) * bs
            while stop < end and self.bat[self._index(stop // bs)] & L.STATE_MASK == L.PAYLOAD_NOT_PRESENT:
                stop += bs
            return BlockStatus(Status.NONE, min(end, stop) - offset)
        return BlockStatus(Status.ZERO, n)

    def check(self, repair: str | None = None) -> CheckResult:
        """qemu's vhdx_co_check (a log replayed on open counts as a fixed corruption; BAT entries past
        the end of the file or over metadata are corruptions), plus blocks that share a file range."""
        res = CheckResult()
        if self.replayed:
            res.corruptions_fixed += 1
        for problem in self._bat_problems():
            res.corruption(problem)
        owners: dict[int, int] = {}
        ratio = self.chunk_ratio + 1
        for index, entry in enumerate(self.bat):
            state = entry & L.STATE_MASK
            is_bitmap = index % ratio == self.chunk_ratio
            if (is_bitmap and state == L.SB_PRESENT) or (not is_bitmap and state in _PRESENT):
                offset = entry & L.OFFSET_MASK
                if offset in owners:
                    res.corruption(f"ERROR: BAT entries {owners[offset]} and {index} share the file offset {offset}")
                owners[offset] = index
            if not is_bitmap and state == L.PAYLOAD_PARTIALLY_PRESENT:
                sb = self.bat[(index // ratio) * ratio + self.chunk_ratio] if (index // ratio) * ratio + \
                    self.chunk_ratio < len(self.bat) else 0
                if sb & L.STATE_MASK != L.SB_PRESENT:
                    res.corruption(f"ERROR: BAT entry {index} is partially present but its chunk has no sector bitmap")
        return res

    def reclaim(self) -> dict[str, str]:
        bs = human_size(self.block_size)
        if self.fixed:
            discard = "blocks stay allocated; the host range of fully present blocks is punched with discard=unmap"
        else:
            state = "PAYLOAD_BLOCK_ZERO (the parent stays hidden)" if self.is_diff else "PAYLOAD_BLOCK_UNMAPPED"
            discard = (f"whole {bs} blocks become {state} and their slots are punched with discard=unmap and "
                       "reused; partial blocks ignored (qemu's vhdx driver has no discard)")
        return {"discard": discard,
                "write-zeroes": f"whole {bs} blocks become PAYLOAD_BLOCK_ZERO (freed with MAY_UNMAP); parts of "
                                "blocks are zeroed in place",
                "offline": "nothing: a fixed image is fully allocated" if self.fixed else
                "emu img compact rewrites the image without its zero blocks (qemu-img convert -S 4k)"}

    def info_fields(self) -> dict:
        return {"cluster-size": self.block_size}

    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """The parent locator and HasParent, through the log (see images/vhdx/relink.py)."""
        from images.vhdx.relink import set_backing
        set_backing(self, parent, name, fmt)

    def creation_options(self) -> dict[str, str]:
        from images.vhdx.relink import creation_options
        return creation_options(self)

    def close(self) -> None:
        # close is a flush (qemu's bdrv_close): in-place writes and punches since the last barrier
        # must be durable once close returns
        if self.host.fd >= 0 and self._modified and not self.read_only:
            self.host.sync()
        super().close()


def _swapped(chunk: array) -> bytes:
    copy = array("Q", chunk)
    copy.byteswap()
    return copy.tobytes()


def open_vhdx(host: HostFile, *, read_only: bool, check_mode: bool = False) -> VhdxImage:
    head = host.pread_exact(0, 8)
    if head != L.FILE_SIGNATURE:
        raise InvalidImage(f"bad file signature {head!r} (expected b'vhdxfile')", field="signature")
    if host.size() < L.HEADER_SECTION_END:
        raise InvalidImage(f"file of {host.size()} bytes is shorter than the 1 MiB header section", field="header")
    return VhdxImage(host, read_only=read_only, check_mode=check_mode)
