"""VHD (qemu-img's "vpc"): fixed, dynamic and differencing disks.

Fixed: the disk followed by a footer. A fixed VHD has no magic at offset 0, so qemu-img probes it
as raw; emu recognises it by its footer (a "conectix" cookie, type 2 and a valid checksum in the last
512 bytes).

Dynamic: a footer copy at 0, the dynamic disk header, the BAT (one big-endian sector number per
2 MiB block), then blocks, each a sector bitmap followed by the data, and the footer at the end.
As qemu: a new block goes where the footer was, its bitmap all ones, the footer is rewritten after
it and the BAT entry updated, each step synced; reads ignore the bitmap.

Differencing (type 4; qemu opens these as dynamic and ignores the parent): the dynamic header names
the parent by UUID, time stamp, Unicode name and locators (W2ru relative, W2ku absolute). Here the
bitmap decides: a set bit reads from this file, a clear one from the parent; writes copy what they
do not cover of their 4 KiB pages from the parent and set the bits.

The size of a VHD is CHS geometry x 512 for creators "qemu" and "vpc " (1 GiB asked gives
1,073,995,776 bytes) and the footer's current size for Hyper-V, Disk2vhd, XenServer and qemu's
force_size ("qem2"), as qemu decides. VHD has no discard and no efficient zeroing: discards succeed
doing nothing and zero writes write zeros.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from array import array

from construct import ConstructError

from emu.block.backend import BlockStatus, Status
from emu.errors import ImageError, InvalidImage, UnsupportedFeature, UsageError
from emu.trace import NULL_TRACE, Act, Trace
from images.backend import ImageBackend, backing_path, zeros
from images.hostfile import HostFile
from images.vhd import layout as L

FORMAT = "vpc"
CREATE_OPTIONS = ("size", "subformat", "force_size", "backing_file", "backing_fmt")
OPEN_OPTIONS = ("size_calc",)
SECTOR = 512


# -- geometry ---------------------------------------------------------------------------------------
def chs_geometry(total_sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for a sector count, the VHD specification's algorithm
    as qemu implements it (the geometry may round the size down)."""
    total_sectors = min(total_sectors, L.MAX_GEOMETRY)
    if total_sectors >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total_sectors // spt
    else:
        spt = 17
        cth = total_sectors // spt
        heads = max(4, -(-cth // 1024))
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total_sectors // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total_sectors // spt
    return cth // heads, heads, spt


def rounded_size(size: int, force_size: bool) -> tuple[int, tuple[int, int, int]]:
    """qemu-img create's size for a request: the smallest CHS geometry covering it (or the exact
    size with force_size, whose geometry is the maximum)."""
    size += -size % SECTOR
    if force_size:
        geometry = (L.CHS_MAX_C, L.CHS_MAX_H, L.CHS_MAX_S)
    else:
        wanted = min(L.MAX_GEOMETRY, size // SECTOR)
        geometry = (0, 0, 0)
        i = 0
        while wanted > geometry[0] * geometry[1] * geometry[2]:
            geometry = chs_geometry(wanted + i)
            i += 1
    product = geometry[0] * geometry[1] * geometry[2]
    if product == L.MAX_GEOMETRY:       # the size is kept; the geometry only says "large"
        if size // SECTOR > L.MAX_SECTORS:
            raise UsageError("vpc: disk size is too large, max size is 2040 GiB")
        return size, geometry
    return product * SECTOR, geometry


# -- parsing ----------------------------------------------------------------------------------------
def _parse_footer(data: bytes, where: str):
    try:
        footer = L.FOOTER.parse(data)
    except ConstructError:
        raise InvalidImage(f"VHD footer {where} unreadable", field="footer") from None
    if footer.cookie != L.COOKIE:
        raise InvalidImage(f"no VHD footer {where} (cookie {footer.cookie!r})", field="cookie")
    if L.checksum(data, L.FOOTER_CHECKSUM_OFFSET) != footer.checksum:
        raise InvalidImage(f"incorrect footer checksum {where}", field="checksum")
    return footer


def _footer_at_end(host: HostFile):
    size = host.size()
    if size < L.FOOTER_SIZE:
        raise InvalidImage("file too small for a VHD footer", field="footer")
    return _parse_footer(host.pread_exact(size - L.FOOTER_SIZE, L.FOOTER_SIZE), "at the end of the file")


def probe(head: bytes, tail: bytes) -> bool:
    """Dynamic and differencing disks start with "conectix"; a fixed one only ends with it."""
    if head[:8] == L.COOKIE:
        return True
    if len(tail) == L.FOOTER_SIZE and tail[:8] == L.COOKIE:
        fields = L.FOOTER.parse(tail)
        return fields.disk_type == L.TYPE_FIXED and L.checksum(tail, L.FOOTER_CHECKSUM_OFFSET) == fields.checksum
    return False


def _decode_bat(data: bytes) -> array:
    bat = array("I")
    bat.frombytes(data)
    if sys.byteorder == "little":
        bat.byteswap()
    return bat


class VhdImage(ImageBackend):
    format_name = FORMAT
    supports_backing = True

    def __init__(self, host: HostFile, footer, *, read_only: bool, size_calc: str = "auto") -> None:
        if size_calc not in ("auto", "chs", "current_size"):
            raise UsageError(f"vpc: size_calc '{size_calc}' is not one of auto, chs, current_size")
        chs = footer.cylinders * footer.heads * footer.sectors_per_track
        use_chs = footer.creator_app not in L.SIZE_FROM_FOOTER or size_calc == "chs"
        sectors = chs if use_chs else footer.current_size // SECTOR
        if chs == L.MAX_GEOMETRY or size_calc == "current_size" or not use_chs:
            sectors = footer.current_size // SECTOR
        if sectors > L.MAX_SECTORS:
            raise InvalidImage(f"virtual size of {sectors} sectors exceeds 2040 GiB", field="current_size")
        super().__init__(host, sectors * SECTOR, read_only=read_only)
        self.footer = footer
        self.fixed = footer.disk_type == L.TYPE_FIXED
        self.is_diff = footer.disk_type == L.TYPE_DIFF
        self.dyn = None
        if not self.fixed:
            self._open_dynamic()

    def _open_dynamic(self) -> None:
        host = self.host
        data = host.pread_exact(self.footer.data_offset, L.DYNAMIC_HEADER_SIZE)
        if len(data) < L.DYNAMIC_HEADER_SIZE:
            raise InvalidImage("dynamic disk header runs past the end of the file", field="data_offset")
        dyn = L.DYNAMIC_HEADER.parse(data)
        if dyn.cookie != L.DYNAMIC_COOKIE:
            raise InvalidImage(f"invalid dynamic header magic {dyn.cookie!r}", field="dynamic_header")
        if L.checksum(data, L.DYNAMIC_CHECKSUM_OFFSET) != dyn.checksum:
            raise InvalidImage("incorrect dynamic header checksum", field="dynamic_header")
        bs = dyn.block_size
        if bs < SECTOR or bs & (bs - 1):
            raise InvalidImage(f"invalid block size {bs}", field="block_size")
        if dyn.max_table_entries * bs < self.virtual_size:
            raise InvalidImage("block allocation table too small for the disk", field="max_table_entries")
        if dyn.max_table_entries > 0x7FFFFFFF // 4:
            raise InvalidImage(f"too many BAT entries ({dyn.max_table_entries})", field="max_table_entries")
        bat_bytes = dyn.max_table_entries * 4
        if dyn.table_offset + bat_bytes > host.size():
            raise InvalidImage("block allocation table runs past the end of the file (truncated?)",
                               field="table_offset", offset=dyn.table_offset)
        self.dyn = dyn
        self.block_size = bs
        self.bitmap_size = -(-(bs // (8 * SECTOR)) // SECTOR) * SECTOR or SECTOR
        self.bat = _decode_bat(host.pread(dyn.table_offset, bat_bytes))
        end = dyn.table_offset + bat_bytes
        end += -end % SECTOR
        for entry in self.bat:
            if entry != L.BAT_UNUSED:
                end = max(end, entry * SECTOR + self.bitmap_size + bs)
        for loc in dyn.parent_locators:       # locator data (differencing disks) lies before the blocks
            if loc.platform_code and loc.data_length:
                space = max(loc.data_length, loc.data_space * SECTOR if loc.data_space < 1 << 20 else 0)
                end = max(end, loc.data_offset + -(-space // SECTOR) * SECTOR)
        if end > host.size():
            raise InvalidImage("free_data_block_offset points after the end of file: the image has been "
                               "truncated", field="bat")
        self.free_data_offset = end
        self._bitmaps: dict[int, bytearray] = {}
        self._full_bitmaps: set[int] = set()
        if self.is_diff:
            self.backing_name = self._parent_name()
            self.backing_format = FORMAT

    # -- parent links ------------------------------------------------------------------------------
    def _parent_name(self) -> str | None:
        """The parent's path from the locators (relative first), else the Unicode name."""
        for wanted in (L.PLATFORM_W2RU, L.PLATFORM_W2KU, L.PLATFORM_MACX):
            for loc in self.dyn.parent_locators:
                if loc.platform_code != wanted or not loc.data_length or loc.data_length > 65536:
                    continue
                raw = self.host.pread(loc.data_offset, loc.data_length)
                if wanted == L.PLATFORM_MACX:
                    name = raw.decode("utf-8", "replace").removeprefix("file://")
                else:
                    name = raw.decode("utf-16-le", "replace").replace("\\", "/").removeprefix("./")
                name = name.rstrip("\0")
                if name:
                    return name
        name = bytes(self.dyn.parent_unicode_name).decode("utf-16-be", "replace").rstrip("\0")
        return name or None

    def check_parent(self, parent: ImageBackend) -> None:
        if not isinstance(parent, VhdImage):
            raise InvalidImage(f"parent of a differencing VHD must be a VHD, not {parent.format_name}",
                               path=self.path, field="parent_unique_id")
        if parent.footer.unique_id != self.dyn.parent_unique_id:
            raise InvalidImage(f"parent UUID mismatch: the image links to {uuid.UUID(bytes=self.dyn.parent_unique_id)}"
                               f", {parent.path} is {uuid.UUID(bytes=parent.footer.unique_id)}",
                               path=self.path, field="parent_unique_id")

    # -- reads ---------------------------------------------------------------------------------------
    def _bitmap(self, block: int) -> bytearray:
        bitmap = self._bitmaps.get(block)
        if bitmap is None:
            bitmap = bytearray(self.host.pread(self.bat[block] * SECTOR, self.bitmap_size))
            if len(self._bitmaps) > 64:
                self._bitmaps.pop(next(iter(self._bitmaps)))
            self._bitmaps[block] = bitmap
        return bitmap

    def _runs_in_block(self, block: int, within: int, n: int):
        """(start, length, present) runs of a differencing block by its sector bitmap."""
        bitmap = self._bitmap(block)
        pos, end = within, within + n
        while pos < end:
            sector = pos // SECTOR
            present = bool(bitmap[sector >> 3] & (0x80 >> (sector & 7)))
            stop = min(end, (sector + 1) * SECTOR)
            while stop < end:
                s = stop // SECTOR
                if bool(bitmap[s >> 3] & (0x80 >> (s & 7))) != present:
                    break
                stop = min(end, (s + 1) * SECTOR)
            yield pos, stop - pos, present
            pos = stop

    def read(self, offset: int, length: int) -> bytes:
        if self.fixed:
            return self.host.pread(offset, length)
        bs = self.block_size
        pieces = []
        while length > 0:
            block, within = divmod(offset, bs)
            n = min(length, bs - within)
            entry = self.bat[block]
            if entry == L.BAT_UNUSED:
                pieces.append(self.read_backing(offset, n) if self.is_diff else zeros(n))
            elif not self.is_diff:
                pieces.append(self.host.pread(entry * SECTOR + self.bitmap_size + within, n))
            else:
                data_start = entry * SECTOR + self.bitmap_size
                for start, run, present in self._runs_in_block(block, within, n):
                    pieces.append(self.host.pread(data_start + start, run) if present
                                  else self.read_backing(block * bs + start, run))
            offset += n
            length -= n
        return b"".join(pieces)

    # -- writes --------------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        if self.fixed:
            self.host.pwrite(offset, data)
            return
        bs = self.block_size
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            block, within = divmod(offset + pos, bs)
            n = min(len(data) - pos, bs - within)
            if self.bat[block] == L.BAT_UNUSED:
                self._allocate(block, trace)
            data_start = self.bat[block] * SECTOR + self.bitmap_size
            if self.is_diff:
                self._write_diff(block, within, view[pos:pos + n], data_start)
            else:
                if block not in self._full_bitmaps:   # qemu sets every bit of a block it writes to
                    self.host.pwrite(self.bat[block] * SECTOR, b"\xff" * self.bitmap_size)
                    self._full_bitmaps.add(block)
                self.host.pwrite(data_start + within, view[pos:pos + n])
            pos += n

    def _allocate(self, block: int, trace: Trace) -> None:
        """qemu's alloc_block: bitmap at the old footer's place, footer after the block, BAT entry."""
        offset = self.free_data_offset
        fill = b"\0" if self.is_diff else b"\xff"
        self.host.pwrite(offset, fill * self.bitmap_size)
        self.host.sync()
        self.free_data_offset = offset + self.bitmap_size + self.block_size
        self.host.pwrite(self.free_data_offset, L.FOOTER.build(self.footer))
        self.host.sync()
        self.bat[block] = offset // SECTOR
        self.host.pwrite(self.dyn.table_offset + 4 * block, (offset // SECTOR).to_bytes(4, "big"))
        self.host.sync()
        if self.is_diff:
            self._bitmaps[block] = bytearray(self.bitmap_size)
        else:
            self._full_bitmaps.add(block)
        trace.add(FORMAT, Act.ALLOCATED, block * self.block_size, self.block_size,
                  f"block {block} at host {offset:#x}", self.bitmap_size + self.block_size)

    def _write_diff(self, block: int, within: int, data: memoryview, data_start: int) -> None:
        """Copy-on-write in 4 KiB pages (8 sectors, one bitmap byte): what a page holds besides the new
        data comes from this file or the parent, sector by sector, and all its bits are set. Pages
        rather than sectors, so readers that look at the bitmap a byte at a time (libvhdi) agree."""
        per_block = self.block_size // SECTOR
        first = within // SECTOR // 8 * 8
        last = min(per_block, ((within + len(data) - 1) // SECTOR // 8 + 1) * 8)
        start = first * SECTOR
        end = within + len(data)
        buf = bytearray((last - first) * SECTOR)
        bitmap = self._bitmap(block)
        for sector in range(first, last):
            lo = sector * SECTOR
            if lo >= within and lo + SECTOR <= end:
                continue                       # overwritten whole
            if bitmap[sector >> 3] & (0x80 >> (sector & 7)):
                content = self.host.pread(data_start + lo, SECTOR)
            else:
                content = self.read_backing(block * self.block_size + lo, SECTOR)
            buf[lo - start:lo - start + SECTOR] = content
        buf[within - start:end - start] = data
        self.host.pwrite(data_start + start, buf)
        for sector in range(first, last):
            bitmap[sector >> 3] |= 0x80 >> (sector & 7)
        lo, hi = (first >> 3) // SECTOR * SECTOR, ((last - 1) >> 3) // SECTOR * SECTOR + SECTOR
        self.host.pwrite(self.bat[block] * SECTOR + lo, bytes(bitmap[lo:hi]))

    # -- status and information --------------------------------------------------------------------
    def layer_status(self, offset: int, length: int) -> BlockStatus:
        if self.fixed:
            return BlockStatus(Status.DATA | Status.OFFSET_VALID | Status.RECURSE, length, offset)
        bs = self.block_size
        block, within = divmod(offset, bs)
        entry = self.bat[block]
        if entry == L.BAT_UNUSED:
            end = offset + length
            stop = (block + 1) * bs
            while stop < end and self.bat[stop // bs] == L.BAT_UNUSED:
                stop += bs
            return BlockStatus(Status.NONE if self.is_diff else Status.ZERO, min(end, stop) - offset)
        data_start = entry * SECTOR + self.bitmap_size
        n = min(length, bs - within)
        if not self.is_diff:
            return BlockStatus(Status.DATA | Status.OFFSET_VALID, n, data_start + within)
        start, run, present = next(self._runs_in_block(block, within, n))
        if present:
            return BlockStatus(Status.DATA | Status.OFFSET_VALID, run, data_start + start)
        return BlockStatus(Status.NONE, run)

    def reclaim(self) -> dict[str, str]:
        return {"discard": "ignored: VHD has no unallocated state a discard could return a block to in qemu's "
                           "vpc driver",
                "write-zeroes": "written as zero data",
                "offline": "nothing: a fixed image is fully allocated" if self.fixed else
                "emu img compact rewrites the image without its zero blocks (qemu-img convert -S 4k)"}

    def info_fields(self) -> dict:
        return {} if self.fixed else {"cluster-size": self.block_size}

    # -- relinking ----------------------------------------------------------------------------------
    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """The dynamic header's parent UUID, time stamp, Unicode name and W2ku/W2ru locators (as create
        writes them) and the footer's disk type (4 differencing, 3 dynamic when standalone).

        Crash order: new locator data goes where the end footer is, followed by the footer, in one
        write (old locator data is never overwritten); then the footer copy at offset 0 and the dynamic
        header after it go in one write, the point where the new link takes effect for readers that
        start at offset 0 (qemu, emu); the end footer follows when the disk type changes, or goes first
        when the parent is dropped, so a reader of the end footer (libvhdi) sees the old or the new
        disk type with a header that suits it. A dynamic disk that gets a parent first has every
        allocated block's bitmap set (qemu reads those blocks whole), and a disk made standalone loses
        the locator data after its last block (the footer moves there, the file is truncated)."""
        if self.fixed:
            raise UnsupportedFeature("a fixed VHD cannot have a parent", path=self.path, field="disk_type")
        self.check_relink(parent, name, fmt, FORMAT)
        host = self.host
        footer_at = max(self.free_data_offset, host.size() - L.FOOTER_SIZE)
        if parent is not None:
            link, locator_data = parent_link(self.path, name, parent.footer, footer_at)
        else:
            link, locator_data = no_parent_link(), b""
        footer = _fields(self.footer, disk_type=L.TYPE_DIFF if parent is not None else L.TYPE_DYNAMIC, checksum=0)
        footer["checksum"] = L.checksum(L.FOOTER.build(footer), L.FOOTER_CHECKSUM_OFFSET)
        footer_bytes = L.FOOTER.build(footer)
        dyn = _fields(self.dyn, checksum=0, **link)
        dyn["checksum"] = L.checksum(L.DYNAMIC_HEADER.build(dyn), L.DYNAMIC_CHECKSUM_OFFSET)
        dyn_bytes = L.DYNAMIC_HEADER.build(dyn)
        type_changes = footer["disk_type"] != self.footer.disk_type
        if parent is not None and not self.is_diff:
            self._fill_bitmaps()
        if locator_data:
            host.pwrite(footer_at, locator_data + L.FOOTER.build(self.footer))
            host.sync()
            self.free_data_offset = footer_at + len(locator_data)
        if type_changes and parent is None:
            host.pwrite(host.size() - L.FOOTER_SIZE, footer_bytes)
            host.sync()
        if self.footer.data_offset == L.FOOTER_SIZE:
            host.pwrite(0, footer_bytes + dyn_bytes)
        else:
            host.pwrite(self.footer.data_offset, dyn_bytes)
            host.sync()
            host.pwrite(0, footer_bytes)
        host.sync()
        if type_changes and parent is not None:
            host.pwrite(host.size() - L.FOOTER_SIZE, footer_bytes)
            host.sync()
        self.footer = L.FOOTER.parse(footer_bytes)
        self.dyn = L.DYNAMIC_HEADER.parse(dyn_bytes)
        self.is_diff = parent is not None
        self._bitmaps.clear()
        self._full_bitmaps.clear()
        if parent is None:
            self._trim_tail(footer_bytes)
        self.backing = parent
        self.backing_name, self.backing_format = (self._parent_name(), FORMAT) if parent is not None else (None, None)

    def _fill_bitmaps(self) -> None:
        """Set every bit of each allocated block's sector bitmap (what qemu reads: the whole block)."""
        full = b"\xff" * self.bitmap_size
        wrote = False
        for entry in self.bat:
            if entry != L.BAT_UNUSED and self.host.pread(entry * SECTOR, self.bitmap_size) != full:
                self.host.pwrite(entry * SECTOR, full)
                wrote = True
        if wrote:
            self.host.sync()

    def _trim_tail(self, footer_bytes: bytes) -> None:
        """Drop what lies between the last block and the end footer (locator data no longer named): the
        footer moves to the end of the data and the file is cut after it."""
        end = self.dyn.table_offset + len(self.bat) * 4
        end += -end % SECTOR
        for entry in self.bat:
            if entry != L.BAT_UNUSED:
                end = max(end, entry * SECTOR + self.bitmap_size + self.block_size)
        self.free_data_offset = end
        if self.host.size() > end + L.FOOTER_SIZE:
            self.host.pwrite(end, footer_bytes)
            self.host.sync()
            self.host.truncate(end + L.FOOTER_SIZE)
            self.host.sync()

    def creation_options(self) -> dict[str, str]:
        """subformat, and force_size=on where the size is not the CHS size qemu-img would round to."""
        options = {"subformat": "fixed" if self.fixed else "dynamic"}
        exact = self.footer.creator_app in L.SIZE_FROM_FOOTER or rounded_size(self.virtual_size, False)[0] \
            != self.virtual_size
        options["force_size"] = "on" if exact else "off"
        return options


# -- opening and creating ---------------------------------------------------------------------------
def open_vhd(host: HostFile, *, read_only: bool, size_calc: str = "auto") -> VhdImage:
    head = host.pread_exact(0, L.FOOTER_SIZE)
    if head[:8] == L.COOKIE:
        footer = _parse_footer(head, "at offset 0")
        if footer.disk_type not in (L.TYPE_DYNAMIC, L.TYPE_DIFF, L.TYPE_FIXED):
            raise UnsupportedFeature(f"VHD disk type {footer.disk_type} is not supported", field="disk_type")
        if footer.disk_type == L.TYPE_FIXED:
            footer = _footer_at_end(host)
    else:
        footer = _footer_at_end(host)
        if footer.disk_type != L.TYPE_FIXED:
            raise InvalidImage("a VHD with its footer only at the end must be fixed", field="disk_type")
    return VhdImage(host, footer, read_only=read_only, size_calc=size_calc)


def _fields(parsed, **changes) -> dict:
    """A parsed structure as a dict to build from, with some fields changed."""
    out = {k: v for k, v in parsed.items() if not k.startswith("_")}
    out.update(changes)
    return out


MAX_LOCATOR = 65536                 # longer locator data is not read back (see _parent_name)
NO_LOCATOR = dict(platform_code=0, data_space=0, data_length=0, reserved=0, data_offset=0)


def parent_link(path: str, name: str, parent_footer, data_at: int) -> tuple[dict, bytes]:
    """The dynamic-header fields that name a parent (UUID, time stamp, Unicode name, W2ku absolute and
    W2ru relative locators) for an image at `path` naming it `name`, with the locator data placed
    from file offset `data_at`; returns (fields, locator data to write at data_at)."""
    parent_path = os.path.realpath(backing_path(path, name))
    relative = os.path.relpath(parent_path, os.path.dirname(os.path.realpath(path)))
    unicode_name = os.path.basename(name).encode("utf-16-be")
    if len(unicode_name) > 512:
        raise UsageError(f"{path}: parent name '{os.path.basename(name)}' does not fit the 512-byte parent "
                         "Unicode name of the VHD header (256 UTF-16 code units)")
    blobs = [(L.PLATFORM_W2KU, parent_path.encode("utf-16-le")),
             (L.PLATFORM_W2RU, (".\\" + relative.replace("/", "\\")).encode("utf-16-le"))]
    locators, data = [], b""
    for code, blob in blobs:
        if len(blob) > MAX_LOCATOR:
            raise UsageError(f"{path}: parent path of {len(blob)} bytes (UTF-16) is too long for a VHD parent "
                             f"locator (at most {MAX_LOCATOR} bytes)")
        space = -(-len(blob) // SECTOR) * SECTOR
        locators.append(dict(platform_code=code, data_space=space // SECTOR, data_length=len(blob), reserved=0,
                             data_offset=data_at + len(data)))
        data += blob.ljust(space, b"\0")
    fields = dict(parent_unique_id=parent_footer.unique_id, parent_timestamp=parent_footer.timestamp,
                  parent_unicode_name=unicode_name.ljust(512, b"\0"),
                  parent_locators=locators + [NO_LOCATOR] * (8 - len(locators)))
    return fields, data


def no_parent_link() -> dict:
    return dict(parent_unique_id=bytes(16), parent_timestamp=0, parent_unicode_name=bytes(512),
                parent_locators=[NO_LOCATOR] * 8)


def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    link = f" backing_file={backing} backing_fmt=vpc" if backing else ""
    return f"size={size}{link}"


def _footer(size: int, geometry: tuple[int, int, int], disk_type: int, creator: bytes, data_offset: int) -> dict:
    footer = dict(cookie=L.COOKIE, features=L.FEATURES_RESERVED, version=L.VERSION, data_offset=data_offset,
                  timestamp=(int(time.time()) - L.TIMESTAMP_BASE) & 0xFFFFFFFF, creator_app=creator,
                  creator_major=5, creator_minor=3, creator_os=b"Wi2k", original_size=size, current_size=size,
                  cylinders=geometry[0], heads=geometry[1], sectors_per_track=geometry[2], disk_type=disk_type,
                  checksum=0, unique_id=uuid.uuid4().bytes, saved_state=0, reserved=bytes(427))
    footer["checksum"] = L.checksum(L.FOOTER.build(footer), L.FOOTER_CHECKSUM_OFFSET)
    return footer


def create(path: str, size: int | None, options: dict[str, str], *, backing: str | None,
           backing_fmt: str | None, opener) -> None:
    for key in options:
        if key not in CREATE_OPTIONS:
            raise UsageError(f"vpc: invalid parameter '{key}'")
    subformat = options.get("subformat", "dynamic")
    if subformat not in ("dynamic", "fixed"):
        raise UsageError(f"vpc: subformat '{subformat}' is not dynamic or fixed")
    force = options.get("force_size", "off")
    if force not in ("on", "off"):
        raise UsageError(f"vpc: force_size expects on or off, not '{force}'")
    backing = options.get("backing_file", backing)
    parent = None
    if backing:
        if options.get("backing_fmt", backing_fmt) not in (None, FORMAT):
            raise UsageError("vpc: a differencing VHD's parent must be a VHD (-F vpc)")
        if subformat == "fixed":
            raise UsageError("vpc: a differencing disk cannot be fixed")
        full = backing_path(path, backing)
        parent = opener(full, FORMAT, read_only=True, open_backing=False)
        parent_footer, size = parent.footer, parent.virtual_size
        parent.close()
    if size is None:
        raise UsageError("vpc: image creation needs a size parameter")
    if parent is not None:
        chs = parent_footer.cylinders * parent_footer.heads * parent_footer.sectors_per_track
        if chs * SECTOR == size:
            geometry, creator = (parent_footer.cylinders, parent_footer.heads, parent_footer.sectors_per_track), b"qemu"
        else:
            geometry, creator = (L.CHS_MAX_C, L.CHS_MAX_H, L.CHS_MAX_S), b"qem2"
    else:
        size, geometry = rounded_size(size, force == "on")
        creator = b"qem2" if force == "on" else b"qemu"
    if size // SECTOR > L.MAX_SECTORS:
        raise UsageError("vpc: disk size is too large, max size is 2040 GiB")
    entries = -(-size // L.DEFAULT_BLOCK_SIZE)
    bat_offset = 3 * SECTOR
    bat_bytes = -(-entries * 4 // SECTOR) * SECTOR
    end = bat_offset + bat_bytes
    link, locator_data = no_parent_link(), b""
    if parent is not None:
        link, locator_data = parent_link(path, backing, parent_footer, end)
    host = HostFile(path, writable=True, create=True)
    try:
        if subformat == "fixed":
            footer = L.FOOTER.build(_footer(size, geometry, L.TYPE_FIXED, creator, 0xFFFFFFFFFFFFFFFF))
            host.truncate(size + L.FOOTER_SIZE)
            host.pwrite(size, footer)
            return
        disk_type = L.TYPE_DIFF if parent is not None else L.TYPE_DYNAMIC
        footer = L.FOOTER.build(_footer(size, geometry, disk_type, creator, L.FOOTER_SIZE))
        if locator_data:
            host.pwrite(end, locator_data)
            end += len(locator_data)
        dyn = dict(cookie=L.DYNAMIC_COOKIE, data_offset=0xFFFFFFFFFFFFFFFF, table_offset=bat_offset,
                   header_version=L.VERSION, max_table_entries=entries, block_size=L.DEFAULT_BLOCK_SIZE,
                   checksum=0, reserved1=0, reserved2=bytes(256), **link)
        dyn["checksum"] = L.checksum(L.DYNAMIC_HEADER.build(dyn), L.DYNAMIC_CHECKSUM_OFFSET)
        host.pwrite(0, footer)
        host.pwrite(SECTOR, L.DYNAMIC_HEADER.build(dyn))
        host.pwrite(bat_offset, b"\xff" * bat_bytes)
        host.pwrite(end, footer)
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None
    finally:
        host.close()
