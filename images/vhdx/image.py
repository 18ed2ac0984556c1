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

This module opens the file (replaying a pending log) and serves requests. The BAT (`bat`), the sector
bitmaps (`bitmaps`), where new blocks go (`slots`) and one log transaction (`transaction`) have modules
of their own, which relinking (`relink`) uses as well.
"""

from __future__ import annotations

from emu.block.backend import BlockLimits, BlockStatus, Status
from emu.errors import InvalidImage, UnsupportedFeature
from emu.trace import NULL_TRACE, Act, Trace
from emu.units import human_size
from images.backend import CheckResult, ImageBackend, zeros
from images.hostfile import HostFile
from images.vhdx import FORMAT, relink
from images.vhdx import layout as L
from images.vhdx.bat import ABSENT, PAGE, PRESENT, SECTOR, Bat
from images.vhdx.bitmaps import SectorBitmaps
from images.vhdx.headers import (
    Headers,
    build_parent_locator,
    check_regions,
    format_guid,
    locator_path,
    parse_parent_locator,
    read_metadata,
    read_regions,
)
from images.vhdx.log import Log
from images.vhdx.slots import BlockSlots
from images.vhdx.transaction import LogWriter, Transaction


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
        headers = Headers(host)
        self.headers = headers
        header = headers.active
        if header.log_version != 0:
            raise UnsupportedFeature(f"log version {header.log_version} (only 0 exists)", field="log_version")
        if header.log_offset < L.HEADER_SECTION_END or header.log_offset % L.MiB:
            raise InvalidImage(f"log at {header.log_offset}: not 1 MiB aligned after the header section",
                               field="log_offset")
        if header.log_length % L.MiB:
            raise InvalidImage(f"log of {header.log_length} bytes: not a multiple of 1 MiB", field="log_length")
        if header.log_offset + header.log_length > host.size():
            raise InvalidImage("the log runs past the end of the file (truncated?)", field="log_offset")
        log = Log(host, header.log_offset, header.log_length)
        self.replayed = False
        self.host = host
        self.path = host.path
        sequence = 1
        stale_log_guid = False
        if header.log_guid != L.ZERO_GUID and header.log_length:
            entries = log.active_sequence(header.log_guid)
            if entries:
                if read_only:
                    raise InvalidImage("the log holds updates that a crashed writer did not apply; open the image "
                                       "read-write to replay them (emu img check -r all)", field="log_guid")
                log.replay(entries)
                self.replayed = True
                sequence = entries[-1].sequence + 1
                headers.rewrite(log_guid=L.ZERO_GUID)
            stale_log_guid = not entries and not read_only
        self.log_writer = LogWriter(host, log, headers, sequence)
        bat_region, meta_region = read_regions(host)
        check_regions(bat_region, meta_region, header)
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
        differencing = bool(params.flags & L.PARAM_HAS_PARENT)
        self.fixed = bool(params.flags & L.PARAM_LEAVE_ALLOCATED) and not differencing
        self.bat = Bat.read(host, bat_region, bs, size, differencing)
        regions = [(0, L.HEADER_SECTION_END), (header.log_offset, header.log_offset + header.log_length),
                   (bat_region.file_offset, bat_region.file_offset + bat_region.length),
                   (meta_region.file_offset, meta_region.file_offset + meta_region.length)]
        self.regions = regions
        if not check_mode:
            problems = self.bat.problems(host.size(), regions)
            if problems:
                raise InvalidImage(problems[0], field="bat")
        self.locator: dict[str, str] = {}
        if differencing:
            if L.PARENT_LOCATOR_GUID not in items:
                raise InvalidImage("a differencing VHDX without a parent locator", field="parent_locator")
            self.locator = parse_parent_locator(items[L.PARENT_LOCATOR_GUID])
            self.backing_name = locator_path(self.locator)
            self.backing_format = FORMAT
        self.limits = BlockLimits(request_alignment=SECTOR, discard_alignment=bs, zero_alignment=bs)
        self.slots = BlockSlots(host, self.bat, regions)
        self.bitmaps = SectorBitmaps(host, self.bat)
        self._modified = False
        if stale_log_guid:       # a log GUID that no valid entry carries: cleared once the file proved valid,
            headers.rewrite(log_guid=L.ZERO_GUID)   # so a refused open leaves the file untouched

    @property
    def is_diff(self) -> bool:
        return self.bat.differencing

    @property
    def data_write_guid(self) -> bytes:
        return self.headers.active.data_write_guid

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

    def _begin_change(self) -> None:
        """Before the first change after opening, both headers get a new data-write GUID."""
        self.check_writable()
        if not self._modified:
            self._modified = True
            self.headers.rewrite(data_guid=True)

    # -- reads -------------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        bat = self.bat
        bs = self.block_size
        pieces = []
        while length > 0:
            block, within = divmod(offset, bs)
            n = min(length, bs - within)
            entry = bat.entry(block)
            state = entry & L.STATE_MASK
            if state == L.PAYLOAD_FULLY_PRESENT:
                pieces.append(self.host.pread((entry & L.OFFSET_MASK) + within, n))
            elif state == L.PAYLOAD_NOT_PRESENT and self.is_diff:
                pieces.append(self.read_backing(offset, n))
            elif state == L.PAYLOAD_PARTIALLY_PRESENT:
                base = entry & L.OFFSET_MASK
                for start, run, present in self.bitmaps.runs(block, within, n):
                    pieces.append(self.host.pread(base + start, run) if present
                                  else self.read_backing(block * bs + start, run))
            else:
                pieces.append(zeros(n))
            offset += n
            length -= n
        return b"".join(pieces)

    # -- writes ------------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self._begin_change()
        bat = self.bat
        bs = self.block_size
        view = memoryview(data)
        tx = None                   # begun by the first block whose metadata changes: overwrites need none
        pos = 0
        while pos < len(data):
            block, within = divmod(offset + pos, bs)
            n = min(len(data) - pos, bs - within)
            entry = bat.entry(block)
            chunk = view[pos:pos + n]
            if entry & L.STATE_MASK == L.PAYLOAD_FULLY_PRESENT:
                self.host.pwrite((entry & L.OFFSET_MASK) + within, chunk)
                trace.add(FORMAT, Act.WRITTEN, offset + pos, n, "in place")
            else:
                if tx is None:
                    tx = Transaction(self.log_writer)
                self._write_into(block, entry, within, chunk, tx, trace)
            pos += n
        if tx is not None:
            tx.commit()

    def _write_into(self, block: int, entry: int, within: int, chunk: memoryview, tx: Transaction,
                    trace: Trace) -> None:
        """Write into a block that is not fully present, staging the metadata that changes."""
        bat = self.bat
        state = entry & L.STATE_MASK
        if state == L.PAYLOAD_PARTIALLY_PRESENT:
            self._write_partial(block, entry & L.OFFSET_MASK, within, chunk, tx, trace)
        elif state == L.PAYLOAD_NOT_PRESENT and self.is_diff and len(chunk) < bat.block_len(block):
            slot = self.slots.allocate(self.block_size, False, trace, f"block {block}")
            self._ensure_bitmap(block, tx, trace)
            bat.set(bat.index(block), L.PAYLOAD_PARTIALLY_PRESENT, slot, tx)
            self._write_partial(block, slot, within, chunk, tx, trace)
        else:
            # a whole new block; what the write does not cover reads as zeros (ZERO, UNMAPPED...)
            slot = self.slots.allocate(self.block_size, len(chunk) < bat.block_len(block), trace, f"block {block}")
            self.host.pwrite(slot + within, chunk)
            bat.set(bat.index(block), L.PAYLOAD_FULLY_PRESENT, slot, tx)

    def _ensure_bitmap(self, block: int, tx: Transaction, trace: Trace) -> None:
        index = self.bat.bitmap_index(block)
        if self.bat.entries[index] & L.STATE_MASK != L.SB_PRESENT:
            # zeroed: a reused slot holds a discarded block's data, which would read as set bits
            slot = self.slots.allocate(L.BITMAP_BLOCK, True, trace,
                                       f"sector bitmap of chunk {block // self.bat.ratio}")
            self.bat.set(index, L.SB_PRESENT, slot, tx)

    def _write_partial(self, block: int, base: int, within: int, data: memoryview, tx: Transaction,
                       trace: Trace) -> None:
        """Write into a partially present block in whole 4 KiB pages (8 sectors, one bitmap byte): sectors
        of a touched page that this file does not hold yet are copied from the parent first."""
        block_len = self.bat.block_len(block)
        first = within // PAGE * PAGE
        last = min(block_len, -(-(within + len(data)) // PAGE) * PAGE)
        copied = 0
        for page_start in range(first, last, PAGE):
            page_end = min(page_start + PAGE, block_len)
            page_offset, bitmap, bit = self.bitmaps.page(block, page_start // SECTOR)
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
                tx.stage(page_offset, bytes(bitmap))
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
            yield block, within, n, n == self.bat.block_len(block)
            offset += n

    def _release(self, block: int, state: int, tx: Transaction, freed: list[int]) -> None:
        index = self.bat.index(block)
        entry = self.bat.entries[index]
        if entry & L.STATE_MASK in PRESENT:
            freed.append(entry & L.OFFSET_MASK)
        self.bat.set(index, state, 0, tx)

    def _punch(self, slots: list[int], trace: Trace, first: int, length: int) -> None:
        released = 0
        for slot in slots:
            if self.host_unmap:
                released += self.host.punch_hole(slot, self.block_size)
            self.slots.release(slot)
        if slots:
            if self.host_unmap:
                trace.add("file", Act.PUNCHED, first, length, f"{len(slots)} block slot(s), reused by later "
                          "allocations", released)
            else:
                trace.add(FORMAT, Act.KEPT, first, length, "block slots kept in the file (discard passthrough off)")

    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        self._begin_change()
        bat = self.bat
        if self.fixed:
            released = 0
            if self.host_unmap:
                for block, within, n, _ in self._whole_blocks(offset, length):
                    entry = bat.entry(block)
                    if entry & L.STATE_MASK == L.PAYLOAD_FULLY_PRESENT:   # a ZERO block (qemu's default
                        released += self.host.punch_hole((entry & L.OFFSET_MASK) + within, n)   # fixed) has none
            trace.add("file", Act.PUNCHED if self.host_unmap else Act.IGNORED, offset, length,
                      "fixed VHDX: blocks stay allocated, the host range is punched"
                      if self.host_unmap else "fixed VHDX and discard passthrough off", released)
            return
        target = L.PAYLOAD_ZERO if self.is_diff else L.PAYLOAD_UNMAPPED
        tx = Transaction(self.log_writer)
        freed: list[int] = []
        changed = ignored = 0
        for block, _, n, whole in self._whole_blocks(offset, length):
            state = bat.state(block)
            if not whole:
                ignored += n
            elif state in PRESENT or (self.is_diff and state == L.PAYLOAD_NOT_PRESENT):
                self._release(block, target, tx, freed)
                changed += 1
        tx.commit()
        if changed:
            trace.add(FORMAT, Act.UNMAPPED if target == L.PAYLOAD_UNMAPPED else Act.ZEROED, offset, length,
                      f"{changed} block(s) set to {L.STATE_NAMES[target]}")
        if ignored:
            trace.add(FORMAT, Act.IGNORED, offset, ignored, "partial block: VHDX deallocates whole blocks only")
        if not changed and not ignored:
            trace.add(FORMAT, Act.IGNORED, offset, length, "nothing allocated there")
        self._punch(freed, trace, offset, length)

    def _reads_zero(self, state: int) -> bool:
        return state in ABSENT and (state != L.PAYLOAD_NOT_PRESENT or not self.is_diff)

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        bat = self.bat
        pieces = [(block, within, n, whole, bat.state(block))
                  for block, within, n, whole in self._whole_blocks(offset, length)]
        if any(not whole and state != L.PAYLOAD_FULLY_PRESENT and not self._reads_zero(state)
               for _, _, _, whole, state in pieces):
            return False            # part of a block that needs data written: the Drive writes zeros
        self._begin_change()
        tx = Transaction(self.log_writer)
        freed: list[int] = []
        for block, within, n, whole, state in pieces:
            index = bat.index(block)
            slot = bat.entries[index] & L.OFFSET_MASK
            if state == L.PAYLOAD_FULLY_PRESENT and (not whole or self.fixed or not may_unmap):
                if self.fixed and may_unmap and self.host_unmap:
                    self.host.punch_hole(slot + within, n)
                else:
                    self.host.zero_range(slot + within, n)
            elif state == L.PAYLOAD_PARTIALLY_PRESENT and not may_unmap:
                self.host.zero_range(slot, n)
                bat.set(index, L.PAYLOAD_FULLY_PRESENT, slot, tx)
            elif whole and state != L.PAYLOAD_ZERO and not (state == L.PAYLOAD_NOT_PRESENT and not self.is_diff):
                self._release(block, L.PAYLOAD_ZERO, tx, freed)
        tx.commit()
        trace.add(FORMAT, Act.ZEROED, offset, length,
                  f"{sum(1 for p in pieces if p[3])} whole block(s) made to read zeros")
        self._punch(freed, trace, offset, length)
        return True

    # -- status, check, information ------------------------------------------------------------------
    def layer_status(self, offset: int, length: int) -> BlockStatus:
        bat = self.bat
        bs = self.block_size
        block, within = divmod(offset, bs)
        entry = bat.entry(block)
        state = entry & L.STATE_MASK
        n = min(length, bs - within)
        base = entry & L.OFFSET_MASK
        if state == L.PAYLOAD_FULLY_PRESENT:
            flags = Status.DATA | Status.OFFSET_VALID | (Status.RECURSE if self.fixed else Status.NONE)
            return BlockStatus(flags, n, base + within)
        if state == L.PAYLOAD_PARTIALLY_PRESENT:
            start, run, present = next(self.bitmaps.runs(block, within, n))
            if present:
                return BlockStatus(Status.DATA | Status.OFFSET_VALID, run, base + start)
            return BlockStatus(Status.NONE, run)
        if state == L.PAYLOAD_NOT_PRESENT:
            end = offset + length
            stop = (block + 1) * bs
            while stop < end and bat.state(stop // bs) == L.PAYLOAD_NOT_PRESENT:
                stop += bs
            return BlockStatus(Status.NONE, min(end, stop) - offset)
        return BlockStatus(Status.ZERO, n)

    def check(self, repair: str | None = None) -> CheckResult:
        """qemu's vhdx_co_check (a log replayed on open counts as a fixed corruption; BAT entries past
        the end of the file or over metadata are corruptions), plus blocks that share a file range."""
        res = CheckResult()
        if self.replayed:
            res.corruptions_fixed += 1
        for problem in self.bat.problems(self.host.size(), self.regions) + self.bat.conflicts():
            res.corruption(problem)
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
        """The parent locator and HasParent, through the log (images/vhdx/relink.py)."""
        if self.fixed:
            raise UnsupportedFeature("a fixed VHDX (LeaveBlockAllocated) cannot have a parent", path=self.path,
                                     field="file_parameters")
        self.check_relink(parent, name, fmt, FORMAT)
        locator = None
        if parent is not None and name is not None:
            locator = build_parent_locator(relink.parent_locator_pairs(self.path, name, parent.data_write_guid))
        relink.rewrite_link(self.host, self.bat, self.bitmaps, self.log_writer, locator, self.path)
        self.slots.forget()
        self.locator = parse_parent_locator(locator) if locator is not None else {}
        self.backing = parent
        self.backing_name = locator_path(self.locator) if locator is not None else None
        self.backing_format = FORMAT if locator is not None else None

    def creation_options(self) -> dict[str, str]:
        return relink.creation_options(self.bat, fixed=self.fixed, log_length=self.headers.active.log_length)

    def close(self) -> None:
        # close is a flush (qemu's bdrv_close): in-place writes and punches since the last barrier
        # must be durable once close returns
        if not self.host.closed and self._modified and not self.read_only:
            self.host.sync()
        super().close()


def open_vhdx(host: HostFile, *, read_only: bool, check_mode: bool = False) -> VhdxImage:
    head = host.pread_exact(0, 8)
    if head != L.FILE_SIGNATURE:
        raise InvalidImage(f"bad file signature {head!r} (expected b'vhdxfile')", field="signature")
    if host.size() < L.HEADER_SECTION_END:
        raise InvalidImage(f"file of {host.size()} bytes is shorter than the 1 MiB header section", field="header")
    return VhdxImage(host, read_only=read_only, check_mode=check_mode)
