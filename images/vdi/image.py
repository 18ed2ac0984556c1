"""VDI (VirtualBox): dynamic, fixed and differencing images, in 1 MiB blocks.

Writes follow qemu's vdi driver: a block is allocated at the end of the data area on its first
write and written whole (data, plus zeros or the parent's data), then the header and the changed
block-map sectors are rewritten.

Discards depend on whose VDI code you model, chosen by the `discard` open option (profiles set it):
  "qemu"        qemu's vdi driver has no discard: a discard succeeds and changes nothing.
  "virtualbox"  VirtualBox frees whole blocks: the block map entry becomes ZERO, the last allocated
                block is moved into the hole and the file is truncated by one block. Partial-block
                discards are remembered in memory per sector until the whole block is unused (and
                forgotten when the image is closed), as VirtualBox's VD layer does. In a differencing
                image a whole discarded block that was never written there becomes ZERO too, so the
                parent's data does not show through (a discarded range reads zeros).

Differencing images link to their parent by UUID (uuid_link = the parent's uuid_image); VirtualBox
keeps the parent's file name in its media registry, not in the image, so emu writes a name hint into
the image comment ("emu-parent: NAME"). FREE blocks of a differencing image read from the parent,
ZERO blocks read zeros and hide it.
"""

from __future__ import annotations

import sys
import uuid
from array import array

from construct import ConstructError

from emu.block.backend import BlockStatus, Status
from emu.errors import CorruptImage, ImageError, InvalidImage, UnsupportedFeature, UsageError
from emu.trace import NULL_TRACE, Act, Trace
from emu.units import human_size
from images.backend import CheckResult, ImageBackend, backing_path, zeros
from images.hostfile import HostFile
from images.vdi import layout as L

FORMAT = "vdi"
PARENT_HINT = b"emu-parent: "
DISCARD_MODES = ("qemu", "virtualbox")
CREATE_OPTIONS = ("size", "static", "backing_file", "backing_fmt")
OPEN_OPTIONS = ("discard",)


def probe(head: bytes) -> bool:
    return len(head) >= 0x48 and int.from_bytes(head[0x40:0x44], "little") == L.SIGNATURE


def _decode_bmap(data: bytes) -> array:
    bmap = array("I")
    bmap.frombytes(data)
    if sys.byteorder == "big":
        bmap.byteswap()
    return bmap


def _encode_bmap(bmap: array) -> bytes:
    if sys.byteorder == "big":
        bmap = array("I", bmap)
        bmap.byteswap()
    return bmap.tobytes()


class VdiImage(ImageBackend):
    format_name = FORMAT
    supports_backing = True

    def __init__(self, host: HostFile, header, *, read_only: bool, discard: str = "qemu") -> None:
        super().__init__(host, header.disk_size, read_only=read_only)
        if discard not in DISCARD_MODES:
            raise UsageError(f"vdi: discard mode '{discard}' is not one of {', '.join(DISCARD_MODES)}")
        self.header = header
        self.block_size = header.block_size
        self.discard_mode = discard
        self.supports_discard = discard == "virtualbox"
        self.is_diff = header.image_type == L.TYPE_DIFF or any(header.uuid_link)
        bmap_bytes = header.blocks_in_image * 4
        self.bmap = _decode_bmap(host.pread(header.offset_bmap, bmap_bytes))
        bad = next((i for i, entry in enumerate(self.bmap) if header.blocks_allocated <= entry < L.BLOCK_ZERO), None)
        if bad is not None:
            raise InvalidImage(f"block {bad} points to block {self.bmap[bad]} of the {header.blocks_allocated} "
                               "allocated", field="block_map", offset=header.offset_bmap + 4 * bad)
        self._discarded: dict[int, set[int]] = {}   # block -> discarded sectors (VirtualBox mode)
        name = _parent_hint(header.comment)
        if self.is_diff:
            self.backing_name = name
            self.backing_format = FORMAT

    # -- addressing --------------------------------------------------------------------------------
    def _data_offset(self, index: int) -> int:
        h = self.header
        return h.offset_data + index * (h.block_size + h.block_extra) + h.block_extra

    def _block_content(self, block: int, entry: int) -> bytes:
        start = block * self.block_size
        length = min(self.block_size, self.virtual_size - start)
        if entry < L.BLOCK_ZERO:
            return self.host.pread(self._data_offset(entry), length)
        if entry == L.BLOCK_FREE and self.is_diff:
            return self.read_backing(start, length)
        return zeros(length)

    # -- reads and writes --------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        bs = self.block_size
        pieces = []
        while length > 0:
            block, within = divmod(offset, bs)
            n = min(length, bs - within)
            entry = self.bmap[block]
            if entry < L.BLOCK_ZERO:
                pieces.append(self.host.pread(self._data_offset(entry) + within, n))
            elif entry == L.BLOCK_FREE and self.is_diff:
                pieces.append(self.read_backing(offset, n))
            else:
                pieces.append(zeros(n))
            offset += n
            length -= n
        return b"".join(pieces)

    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        bs = self.block_size
        view = memoryview(data)
        pos = 0
        changed: list[int] = []
        while pos < len(data):
            block, within = divmod(offset + pos, bs)
            n = min(len(data) - pos, bs - within)
            entry = self.bmap[block]
            self._discarded.pop(block, None)
            if entry < L.BLOCK_ZERO:
                self.host.pwrite(self._data_offset(entry) + within, view[pos:pos + n])
            else:
                index = self.header.blocks_allocated
                if index >= self.header.blocks_in_image:
                    raise CorruptImage("no room for another block: blocks_allocated reached blocks_in_image",
                                       path=self.path, field="blocks_allocated")
                buf = bytearray(self._block_content(block, entry).ljust(bs, b"\0"))
                buf[within:within + n] = view[pos:pos + n]
                self.host.pwrite(self._data_offset(index), buf)
                self.bmap[block] = index
                self.header.blocks_allocated += 1
                changed.append(block)
                why = "parent data copied" if entry == L.BLOCK_FREE and self.is_diff else "zero filled"
                trace.add(FORMAT, Act.ALLOCATED, block * bs, bs,
                          f"block {block} at host {self._data_offset(index):#x}; {why}", bs)
            pos += n
        if changed:
            self._write_metadata(changed)
        else:
            trace.add(FORMAT, Act.WRITTEN, offset, len(data), "in place")

    def _write_metadata(self, blocks: list[int]) -> None:
        """The header (blocks_allocated) and the block-map sectors holding these entries (as qemu)."""
        self.host.pwrite(0, L.HEADER.build(self.header))
        per_sector = L.SECTOR_SIZE // 4
        for sector in sorted({b // per_sector for b in blocks}):
            first = sector * per_sector
            self.host.pwrite(self.header.offset_bmap + sector * L.SECTOR_SIZE,
                             _encode_bmap(self.bmap[first:first + per_sector]).ljust(L.SECTOR_SIZE, b"\0"))

    # -- discard (VirtualBox) ----------------------------------------------------------------------
    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        bs = self.block_size
        end = offset + length
        freed: list[int] = []
        hidden: list[int] = []
        pending = 0
        while offset < end:
            block, within = divmod(offset, bs)
            n = min(end - offset, bs - within)
            block_len = min(bs, self.virtual_size - block * bs)
            if self.bmap[block] == L.BLOCK_FREE and self.is_diff and n == block_len:
                hidden.append(block)     # the parent's data must not show through a discarded block
            elif self.bmap[block] < L.BLOCK_ZERO:
                if n == block_len:
                    freed.append(block)
                else:
                    sectors = self._discarded.setdefault(block, set())
                    sectors.update(range(within // L.SECTOR_SIZE, -(-(within + n) // L.SECTOR_SIZE)))
                    if len(sectors) * L.SECTOR_SIZE >= block_len:
                        freed.append(block)
                    else:
                        pending += n
            offset += n
        released = 0
        for block in freed:
            released += self._free_block(block)
        if hidden:
            for block in hidden:
                self.bmap[block] = L.BLOCK_ZERO
            self._write_metadata(hidden)
        if hidden:
            trace.add(FORMAT, Act.ZEROED, hidden[0] * bs, len(hidden) * bs,
                      f"{len(hidden)} unallocated block(s) of a differencing image marked zero, hiding the "
                      "parent's data")
        if freed:
            trace.add(FORMAT, Act.FREED, freed[0] * bs, len(freed) * bs,
                      f"{len(freed)} block(s) marked zero; last blocks moved into the holes, file "
                      "truncated", released)
        if pending:
            trace.add(FORMAT, Act.DEFERRED, end - length, length,
                      f"{pending} bytes of partly discarded blocks remembered until the whole block is "
                      "discarded (kept in memory only)")
        if not freed and not pending and not hidden:
            trace.add(FORMAT, Act.IGNORED, end - length, length, "nothing allocated there")

    def _free_block(self, block: int) -> int:
        """VirtualBox vdiDiscardBlock: mark ZERO, move the last block into the hole, truncate."""
        h = self.header
        index = self.bmap[block]
        last = h.blocks_allocated - 1
        moved = []
        if index != last:
            owner = self.bmap.index(last)
            self.host.pwrite(self._data_offset(index), self.host.pread(self._data_offset(last), self.block_size))
            self.bmap[owner] = index
            moved.append(owner)
        self.bmap[block] = L.BLOCK_ZERO
        h.blocks_allocated -= 1
        self._discarded.pop(block, None)
        self._write_metadata([block] + moved)
        before = self.host.allocated_bytes()
        self.host.truncate(self._data_offset(h.blocks_allocated) - h.block_extra)
        return max(0, before - self.host.allocated_bytes())

    # -- status, check, info -----------------------------------------------------------------------
    def layer_status(self, offset: int, length: int) -> BlockStatus:
        bs = self.block_size
        block, within = divmod(offset, bs)
        entry = self.bmap[block]
        run = min(length, bs - within)
        if entry < L.BLOCK_ZERO:
            flags = Status.DATA | Status.OFFSET_VALID
            if self.header.image_type == L.TYPE_FIXED:
                flags |= Status.RECURSE
            return BlockStatus(flags, run, self._data_offset(entry) + within)
        if entry == L.BLOCK_FREE and self.is_diff:
            return BlockStatus(Status.NONE, run)
        return BlockStatus(Status.ZERO, run)   # qemu answers ZERO for unallocated VDI blocks

    def check(self, repair: str | None = None) -> CheckResult:
        """qemu's vdi_co_check: every allocated index used once, below blocks_in_image, counted right."""
        if repair:
            raise UnsupportedFeature("vdi images cannot be repaired", path=self.path)
        res = CheckResult()
        seen: dict[int, int] = {}
        count = 0
        for block, entry in enumerate(self.bmap):
            if entry >= L.BLOCK_ZERO:
                continue
            if entry >= self.header.blocks_in_image:
                res.corruption(f"ERROR: block index {block} too large, is {entry}")
                continue
            count += 1
            if entry in seen:
                res.corruption(f"ERROR: block index {seen[entry]} also used by {entry}")
            else:
                seen[entry] = entry
        if count != self.header.blocks_allocated:
            res.corruption(f"ERROR: allocated blocks mismatch, is {count}, should be "
                                f"{self.header.blocks_allocated}")
        return res

    def reclaim(self) -> dict[str, str]:
        bs = human_size(self.block_size)
        if self.header.image_type == L.TYPE_FIXED:
            discard = "ignored: a fixed image keeps every block"
        elif self.supports_discard:
            discard = (f"whole {bs} blocks are freed and the file's last block moves into the hole (the file "
                       "shrinks), as VirtualBox does; partial blocks are remembered until the whole block is "
                       "discarded")
        else:
            discard = "ignored, as qemu's vdi driver does (open option discard=virtualbox frees whole blocks)"
        return {"discard": discard, "write-zeroes": "written as zero data",
                "offline": "emu img compact frees zero blocks in place, as VBoxManage modifymedium --compact"
                if self.header.image_type != L.TYPE_FIXED else "nothing: a fixed image is fully allocated"}

    def info_fields(self) -> dict:
        return {"cluster-size": self.block_size}

    def check_parent(self, parent: ImageBackend) -> None:
        """A differencing VDI's uuid_link must be its parent's uuid_image."""
        if not isinstance(parent, VdiImage):
            raise InvalidImage(f"parent of a differencing VDI must be a VDI, not {parent.format_name}",
                               path=self.path, field="uuid_link")
        if parent.header.uuid_image != self.header.uuid_link:
            raise InvalidImage(f"parent UUID mismatch: the image links to {_uuid(self.header.uuid_link)}, "
                               f"{parent.path} is {_uuid(parent.header.uuid_image)}",
                               path=self.path, field="uuid_link")

    # -- relinking ----------------------------------------------------------------------------------
    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """A differencing VDI (type 4) links to its parent by uuid_link = the parent's uuid_image and
        uuid_parent = the parent's uuid_last_snap (VirtualBox's uuidParentModify), and emu keeps the
        name in the comment; standalone is a normal dynamic image with both UUIDs zero. All of it is
        in the header sector, written once and flushed: a crash leaves the old link or the new one."""
        if self.header.image_type == L.TYPE_FIXED:
            raise UnsupportedFeature("a fixed (static) VDI cannot have a parent", path=self.path,
                                     field="image_type")
        self.check_relink(parent, name, fmt, FORMAT)
        header = dict(self.header)
        header.pop("_io", None)
        header.update(link_fields(parent.header if isinstance(parent, VdiImage) else None, name, self.path))
        if parent is None and _parent_hint(self.header.comment) is None:
            header["comment"] = self.header.comment       # a comment that is not our hint stays
        self.host.pwrite(0, L.HEADER.build(header))
        self.host.sync()
        self.header = L.HEADER.parse(L.HEADER.build(header))
        self.is_diff = parent is not None
        self.backing = parent
        self.backing_name, self.backing_format = (name, FORMAT) if parent is not None else (None, None)

    def creation_options(self) -> dict[str, str]:
        return {"static": "on" if self.header.image_type == L.TYPE_FIXED else "off"}


def link_fields(parent_header, name: str | None, path: str) -> dict:
    """The header fields that link a VDI to its parent (or, parent_header None, to none): image type,
    parent UUIDs and the name hint in the comment, as create and set_backing write them."""
    if parent_header is None:
        return dict(image_type=L.TYPE_NORMAL, comment=bytes(256), uuid_link=bytes(16), uuid_parent=bytes(16))
    comment = PARENT_HINT + (name or "").encode("utf-8")
    if len(comment) >= 256:
        raise UsageError(f"{path}: parent file name too long for the VDI comment ({len(comment) - len(PARENT_HINT)} "
                         f"bytes; at most {255 - len(PARENT_HINT)})")
    return dict(image_type=L.TYPE_DIFF, comment=comment.ljust(256, b"\0"), uuid_link=bytes(parent_header.uuid_image),
                uuid_parent=bytes(parent_header.uuid_last_snap))


def _uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(raw)))


def _parent_hint(comment: bytes) -> str | None:
    text = bytes(comment).split(b"\0", 1)[0]
    if text.startswith(PARENT_HINT):
        return text[len(PARENT_HINT):].decode("utf-8", "replace") or None
    return None


def read_header(host: HostFile):
    """Parse and validate the header and the block map's bounds before allocating anything."""
    data = host.pread_exact(0, L.HEADER_BYTES)
    if len(data) < 0x1C8:
        raise InvalidImage(f"file too short for a VDI header ({len(data)} bytes)", field="header")
    try:
        h = L.HEADER.parse(data)
    except ConstructError:
        raise InvalidImage("VDI header unreadable", field="header") from None
    if h.signature != L.SIGNATURE:
        raise InvalidImage(f"bad signature {h.signature:#010x} (expected {L.SIGNATURE:#010x})", field="signature")
    if h.version != L.VERSION_1_1:
        raise InvalidImage(f"unsupported VDI version {h.version >> 16}.{h.version & 0xffff} (1.1 only)",
                           field="version")
    if h.header_size < L.HEADER_SIZE_QEMU or h.header_size > L.HEADER_BYTES - 0x48:
        raise InvalidImage(f"header size {h.header_size:#x} out of range", field="header_size")
    if h.image_type not in (L.TYPE_NORMAL, L.TYPE_FIXED, L.TYPE_UNDO, L.TYPE_DIFF):
        raise InvalidImage(f"unknown image type {h.image_type}", field="image_type")
    if h.offset_bmap % L.SECTOR_SIZE or h.offset_bmap < L.HEADER_BYTES:
        raise InvalidImage(f"block map offset {h.offset_bmap:#x} is not a sector past the header",
                           field="offset_bmap")
    if h.offset_data % L.SECTOR_SIZE:
        raise InvalidImage(f"data offset {h.offset_data:#x} is not sector aligned", field="offset_data")
    if h.sector_size != L.SECTOR_SIZE:
        raise UnsupportedFeature(f"sector size {h.sector_size} is not 512", field="sector_size")
    if h.block_size != L.BLOCK_SIZE:
        raise UnsupportedFeature(f"block size {h.block_size} is not 1 MiB", field="block_size")
    if h.block_extra:
        raise UnsupportedFeature(f"block extra data ({h.block_extra} bytes) is not supported", field="block_extra")
    if h.blocks_in_image > L.MAX_BLOCKS or h.disk_size > L.MAX_DISK_SIZE:
        raise InvalidImage(f"disk of {h.disk_size} bytes in {h.blocks_in_image} blocks exceeds the VDI limit",
                           field="disk_size")
    if h.disk_size > h.blocks_in_image * h.block_size:
        raise InvalidImage(f"disk size {h.disk_size} exceeds the {h.blocks_in_image} blocks of the block map",
                           field="blocks_in_image")
    if h.blocks_allocated > h.blocks_in_image:
        raise InvalidImage(f"{h.blocks_allocated} blocks allocated of {h.blocks_in_image}",
                           field="blocks_allocated")
    bmap_end = h.offset_bmap + h.blocks_in_image * 4
    if bmap_end > h.offset_data or bmap_end > host.size():
        raise InvalidImage("block map runs past the data area or the end of the file (truncated?)",
                           field="offset_bmap", offset=h.offset_bmap)
    if h.offset_data + h.blocks_allocated * (h.block_size + h.block_extra) > host.size():
        raise InvalidImage(f"the data area of {h.blocks_allocated} blocks at {h.offset_data:#x} runs past the end of "
                           "the file (truncated?)", field="offset_data", offset=h.offset_data)
    if h.disk_size % L.SECTOR_SIZE:   # qemu accepts odd sizes from VBoxManage and rounds them up
        h.disk_size += -h.disk_size % L.SECTOR_SIZE
    return h


def open_vdi(host: HostFile, *, read_only: bool, discard: str = "qemu") -> VdiImage:
    return VdiImage(host, read_header(host), read_only=read_only, discard=discard)


def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    link = f" backing_file={backing} backing_fmt=vdi" if backing else ""
    return f"size={size}{link} static={options.get('static', 'off')}"


def create(path: str, size: int | None, options: dict[str, str], *, backing: str | None,
           backing_fmt: str | None, opener) -> None:
    for key in options:
        if key not in CREATE_OPTIONS:
            raise UsageError(f"vdi: invalid parameter '{key}'")
    backing = options.get("backing_file", backing)
    backing_fmt = options.get("backing_fmt", backing_fmt)
    static = options.get("static", "off")
    if static not in ("on", "off"):
        raise UsageError(f"vdi: static expects on or off, not '{static}'")
    parent = None
    if backing:
        if backing_fmt not in (None, FORMAT):
            raise UsageError("vdi: a differencing VDI's parent must be a VDI (-F vdi)")
        if static == "on":
            raise UsageError("vdi: a differencing image cannot be static")
        full = backing_path(path, backing)
        parent = opener(full, FORMAT, read_only=True, open_backing=False)
        parent_header = parent.header
        size = parent.virtual_size if size is None else size
        parent.close()
    if size is None:
        raise UsageError("vdi: image creation needs a size parameter")
    if size > L.MAX_DISK_SIZE:
        raise UsageError(f"vdi: unsupported VDI image size (size is {size:#x}, max supported is "
                         f"{L.MAX_DISK_SIZE:#x})")
    size += -size % L.SECTOR_SIZE
    blocks = -(-size // L.BLOCK_SIZE)
    bmap_size = -(-blocks * 4 // L.SECTOR_SIZE) * L.SECTOR_SIZE
    link = link_fields(parent_header if parent else None, backing, path)
    if static == "on":
        link["image_type"] = L.TYPE_FIXED
    image_type = link["image_type"]
    header = dict(text=L.TEXT_QEMU.ljust(64, b"\0"), signature=L.SIGNATURE, version=L.VERSION_1_1,
                  header_size=L.HEADER_SIZE_QEMU, image_flags=0, offset_bmap=L.HEADER_BYTES,
                  offset_data=L.HEADER_BYTES + bmap_size, cylinders=0, heads=0, sectors=0,
                  sector_size=L.SECTOR_SIZE, unused1=0, disk_size=size, block_size=L.BLOCK_SIZE, block_extra=0,
                  blocks_in_image=blocks, blocks_allocated=blocks if image_type == L.TYPE_FIXED else 0,
                  uuid_image=uuid.uuid4().bytes_le, uuid_last_snap=uuid.uuid4().bytes_le, lchs=None, **link)
    bmap = array("I", range(blocks)) if image_type == L.TYPE_FIXED else array("I", [L.BLOCK_FREE]) * blocks
    host = HostFile(path, writable=True, create=True)
    try:
        host.pwrite(0, L.HEADER.build(header).ljust(L.HEADER_BYTES, b"\0"))
        host.pwrite(L.HEADER_BYTES, _encode_bmap(bmap).ljust(bmap_size, b"\0"))
        if image_type == L.TYPE_FIXED:
            host.truncate(L.HEADER_BYTES + bmap_size + blocks * L.BLOCK_SIZE)
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None
    finally:
        host.close()
