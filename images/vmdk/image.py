"""VMDK monolithicSparse images and delta links, as qemu reads and writes them.

One file: the sparse extent header, the embedded descriptor (text), a redundant grain directory and
grain tables, the grain directory and its grain tables (all preallocated), then grains. A grain is
allocated at the end of the file on its first write, written whole (the parent's data or zeros
around the new data), and its entry written to both grain tables, then flushed.

Delta links: a child's descriptor carries parentCID (the parent's content id when the child was
made) and parentFileNameHint. qemu writes a new random CID into an image on the first write after
each open, so writing to a parent breaks its children: a child whose parentCID no longer matches
is reported when it needs its parent's data (qemu fails those reads with EINVAL), never read
silently. VMDK has no discard; with zeroed_grain=on a whole-grain zero write sets the "zeroed" entry.
"""

from __future__ import annotations

import errno
import random
import re
import sys
from array import array
from collections import OrderedDict

from construct import ConstructError

from emu.block.backend import BlockStatus, Status
from emu.errors import BlockError, ImageError, InvalidImage, UnsupportedFeature, UsageError
from emu.trace import NULL_TRACE, Act, Trace
from emu.units import human_size
from images.backend import CheckResult, ImageBackend, backing_path, zeros
from images.hostfile import HostFile
from images.vmdk import layout as L

FORMAT = "vmdk"
CREATE_OPTIONS = ("size", "subformat", "adapter_type", "compat6", "hwversion", "toolsversion", "zeroed_grain",
                  "backing_file", "backing_fmt")
ADAPTERS = ("ide", "lsilogic", "buslogic", "legacyESX")
GT_CACHE = 256


def probe(head: bytes) -> bool:
    return head[:4] == L.MAGIC


def _decode_u32(data: bytes) -> array:
    table = array("I")
    table.frombytes(data)
    if sys.byteorder == "big":
        table.byteswap()
    return table


class Descriptor:
    """The embedded text descriptor: key=value lines and extent lines (kept as text to rewrite CIDs)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[str, str] = {}
        self.extents: list[tuple[str, int, str, str]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            extent = re.match(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]*)"', line)
            if extent:
                self.extents.append((extent.group(1), int(extent.group(2)), extent.group(3), extent.group(4)))
            elif "=" in line:
                key, _, value = line.partition("=")
                self.values[key.strip()] = value.strip().strip('"')

    def cid(self, key: str) -> int:
        try:
            return int(self.values[key], 16)
        except (KeyError, ValueError):
            raise InvalidImage(f"descriptor has no valid {key}", field=key) from None

    def with_cid(self, cid: int) -> str:
        return re.sub(r"(?m)^CID=[0-9a-fA-F]+", f"CID={cid:08x}", self.text, count=1)


def relink_descriptor(text: str, parent_cid: int, name: str | None, path: str) -> str:
    """The descriptor with parentCID set and parentFileNameHint (after createType, as qemu writes it)
    naming the parent, or removed when name is None."""
    if name is not None and any(c in name for c in '"\r\n'):
        raise UsageError(f"{path}: a VMDK parentFileNameHint cannot hold quotes or line breaks: {name!r}")
    lines = [line for line in text.split("\n") if not line.strip().startswith("parentFileNameHint")]
    out = []
    for line in lines:
        if re.match(r"\s*parentCID\s*=", line):
            line = f"parentCID={parent_cid:x}"
        out.append(line)
        if name is not None and re.match(r"\s*createType\s*=", line):
            out.append(f'parentFileNameHint="{name}"')
    return "\n".join(out)


class VmdkImage(ImageBackend):
    format_name = FORMAT
    supports_backing = True
    supports_write_zeroes = True    # whole grains with zeroed_grain=on; otherwise the Drive writes zeros

    def __init__(self, host: HostFile, header, descriptor: Descriptor, *, read_only: bool) -> None:
        super().__init__(host, header.capacity * L.SECTOR, read_only=read_only)
        self.header = header
        self.descriptor = descriptor
        self.grain_bytes = header.grain_size * L.SECTOR
        self.gt_entries = header.num_gtes_per_gt
        self.gt_span = self.grain_bytes * self.gt_entries
        gd_entries = -(-header.capacity // (header.grain_size * header.num_gtes_per_gt))
        self.gd = _decode_u32(host.pread(header.gd_offset * L.SECTOR, gd_entries * 4))
        self.rgd = (_decode_u32(host.pread(header.rgd_offset * L.SECTOR, gd_entries * 4))
                    if header.flags & L.FLAG_RGD else None)
        self.zero_grains = bool(header.flags & L.FLAG_ZERO_GRAIN)
        self._gts: OrderedDict[int, array] = OrderedDict()
        self._last_gd, self._last_gt = -1, None   # the grain table used last (see _gt)
        self.next_grain = -(-host.size() // self.grain_bytes) * self.grain_bytes   # new grains go at the end
        self.cid = descriptor.cid("CID")
        self.parent_cid = descriptor.cid("parentCID")
        self.cid_updated = False
        self.parent_mismatch: str | None = None
        if self.parent_cid != L.NO_PARENT_CID:
            self.backing_name = descriptor.values.get("parentFileNameHint")
            self.backing_format = FORMAT

    # -- grain tables ------------------------------------------------------------------------------
    def _gt(self, gd_index: int) -> array | None:
        if gd_index == self._last_gd:   # the table used last is always in the cache: no LRU bookkeeping
            return self._last_gt
        sector = self.gd[gd_index]
        if not sector:
            return None
        table = self._gts.get(sector)
        if table is None:
            offset = sector * L.SECTOR
            if offset + self.gt_entries * 4 > self.host.size():
                raise ImageError(f"grain table at {offset:#x} lies past the end of the file", path=self.path,
                                 field="gd_offset")
            table = _decode_u32(self.host.pread(offset, self.gt_entries * 4))
            self._gts[sector] = table
            if len(self._gts) > GT_CACHE:
                self._gts.popitem(last=False)
        else:
            self._gts.move_to_end(sector)
        self._last_gd, self._last_gt = gd_index, table
        return table

    def _entry(self, grain: int) -> int:
        table = self._gt(grain // self.gt_entries)
        return table[grain % self.gt_entries] if table is not None else 0

    def _set_entry(self, grain: int, value: int) -> None:
        """Write the entry to the grain table and the redundant one, then flush (vmdk_L2update)."""
        gd_index, index = divmod(grain, self.gt_entries)
        table = self._gt(gd_index)
        if table is None:
            raise ImageError(f"grain directory entry {gd_index} is empty: no grain table to update",
                             path=self.path, field="gd_offset")
        raw = value.to_bytes(4, "little")
        self.host.pwrite(self.gd[gd_index] * L.SECTOR + 4 * index, raw)
        if self.rgd is not None and self.rgd[gd_index]:
            self.host.pwrite(self.rgd[gd_index] * L.SECTOR + 4 * index, raw)
        self.host.sync()
        table[index] = value

    # -- parent link -------------------------------------------------------------------------------
    def check_parent(self, parent: ImageBackend) -> None:
        if not isinstance(parent, VmdkImage):
            self.parent_mismatch = f"the parent {parent.path} is {parent.format_name}, not vmdk: it has no CID"
        elif parent.cid != self.parent_cid:
            self.parent_mismatch = (f"parentCID {self.parent_cid:08x} does not match the parent's CID "
                                    f"{parent.cid:08x} ({parent.path} was written after this image was made)")

    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """parentCID (the parent's CID) and parentFileNameHint in the embedded descriptor; standalone is
        parentCID ffffffff without a hint. This image's own CID is kept (its children stay linked).
        Only the descriptor sectors that change are written, in one write (one sector unless the
        descriptor outgrows 512 bytes), then flushed: a crash leaves the old link or the new one."""
        self.check_relink(parent, name, fmt, FORMAT)
        parent_cid = parent.cid if isinstance(parent, VmdkImage) else L.NO_PARENT_CID
        text = relink_descriptor(self.descriptor.text, parent_cid, name, self.path).encode()
        area = self.header.descriptor_size * L.SECTOR
        if len(text) > area:
            raise UsageError(f"{self.path}: parent name too long: the descriptor would be {len(text)} bytes, the "
                             f"embedded descriptor holds {area}")
        start = self.header.descriptor_offset * L.SECTOR
        current = self.host.pread(start, area)
        new = text.ljust(area, b"\0")
        changed = [i for i in range(0, area, L.SECTOR) if new[i:i + L.SECTOR] != current[i:i + L.SECTOR]]
        if changed:
            self.host.pwrite(start + changed[0], new[changed[0]:changed[-1] + L.SECTOR])
            self.host.sync()
        self.descriptor = Descriptor(text.decode())
        self.parent_cid = parent_cid
        self.parent_mismatch = None
        self.backing = parent
        self.backing_name, self.backing_format = (name, FORMAT) if parent is not None else (None, None)

    def creation_options(self) -> dict[str, str]:
        """subformat, adapter_type, hwversion, toolsversion and zeroed_grain from the header and the
        descriptor's DDB (an adapter emu cannot create is left to the default)."""
        ddb = self.descriptor.values
        options = {"subformat": "monolithicSparse"}
        if ddb.get("ddb.adapterType") in ADAPTERS:
            options["adapter_type"] = ddb["ddb.adapterType"]
        if ddb.get("ddb.virtualHWVersion"):
            options["hwversion"] = ddb["ddb.virtualHWVersion"]
        if ddb.get("ddb.toolsVersion"):
            options["toolsversion"] = ddb["ddb.toolsVersion"]
        options["zeroed_grain"] = "on" if self.zero_grains else "off"
        return options

    def read_backing(self, offset: int, length: int) -> bytes:
        if self.backing is not None and self.parent_mismatch:
            raise BlockError(errno.EINVAL, f"{self.path}: {self.parent_mismatch}")
        return super().read_backing(offset, length)

    # -- reads and writes --------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        gb = self.grain_bytes
        grain, within = divmod(offset, gb)
        if within + length <= gb:       # one grain: the common case, without the loop
            entry = self._entry(grain)
            if not entry:
                return zeros(length) if self.backing is None else self.read_backing(offset, length)
            if entry == L.GTE_ZEROED and self.zero_grains:
                return zeros(length)
            return self.host.pread(entry * L.SECTOR + within, length)
        pieces = []
        while length > 0:
            grain, within = divmod(offset, gb)
            n = min(length, gb - within)
            entry = self._entry(grain)
            if entry == L.GTE_ZEROED and self.zero_grains:
                pieces.append(zeros(n))
            elif entry:
                pieces.append(self.host.pread(entry * L.SECTOR + within, n))
            else:
                pieces.append(self.read_backing(offset, n))
            offset += n
            length -= n
        return b"".join(pieces)

    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        gb = self.grain_bytes
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            grain, within = divmod(offset + pos, gb)
            n = min(len(data) - pos, gb - within)
            entry = self._entry(grain)
            if entry and not (entry == L.GTE_ZEROED and self.zero_grains):
                self.host.pwrite(entry * L.SECTOR + within, view[pos:pos + n])
            else:
                self._allocate(grain, entry, within, view[pos:pos + n], trace)
            pos += n
            self._update_cid()

    def _allocate(self, grain: int, entry: int, within: int, data: memoryview, trace: Trace) -> None:
        gb = self.grain_bytes
        if (self.next_grain // L.SECTOR) >= L.MAX_HOST_SECTORS:
            raise BlockError(errno.ENOSPC, f"{self.path}: no room for another grain (2 TiB extent limit)")
        host = self.next_grain
        self.next_grain += gb
        if within or len(data) < gb:
            base = zeros(gb) if entry == L.GTE_ZEROED else self.read_backing(grain * gb, gb)
            buf = bytearray(base)
            buf[within:within + len(data)] = data
            self.host.pwrite(host, buf)
        else:
            self.host.pwrite(host, data)
        self._set_entry(grain, host // L.SECTOR)
        why = "parent data copied" if self.backing is not None else "zero filled"
        trace.add(FORMAT, Act.ALLOCATED, grain * gb, gb, f"grain at host {host:#x}; {why}", gb)

    def _update_cid(self) -> None:
        """qemu: a new random CID on the first write after every open."""
        if self.cid_updated:
            return
        self.cid_updated = True
        self.cid = random.getrandbits(32)
        text = self.descriptor.with_cid(self.cid).encode()
        self.descriptor = Descriptor(text.decode())
        self.host.pwrite(self.header.descriptor_offset * L.SECTOR,
                         text.ljust(self.header.descriptor_size * L.SECTOR, b"\0"))
        self.host.sync()

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        """Whole grains only, and only with zeroed_grain=on (vmdk_co_pwrite_zeroes)."""
        self.check_writable()
        gb = self.grain_bytes
        if not self.zero_grains or offset % gb or (length % gb and offset + length != self.virtual_size):
            return False
        for grain in range(offset // gb, -(-(offset + length) // gb)):
            if self._entry(grain) != L.GTE_ZEROED:
                self._set_entry(grain, L.GTE_ZEROED)
        self._update_cid()
        trace.add(FORMAT, Act.ZEROED, offset, length, "zeroed grain entries (the grains stay in the file)")
        return True

    # -- status, check, info -----------------------------------------------------------------------
    def layer_status(self, offset: int, length: int) -> BlockStatus:
        gb = self.grain_bytes
        grain, within = divmod(offset, gb)
        n = min(length, gb - within)
        entry = self._entry(grain)
        if entry == L.GTE_ZEROED and self.zero_grains:
            return BlockStatus(Status.ZERO, n)
        if entry:
            return BlockStatus(Status.DATA | Status.OFFSET_VALID, n, entry * L.SECTOR + within)
        return BlockStatus(Status.NONE, n)

    def check(self, repair: str | None = None) -> CheckResult:
        """qemu's vmdk_co_check: every allocated grain must start inside the file."""
        if repair:
            raise UnsupportedFeature("vmdk images cannot be repaired", path=self.path)
        res = CheckResult()
        size = self.host.size()
        for gd_index in range(len(self.gd)):
            table = self._gt(gd_index)
            if table is None:
                continue
            for index, entry in enumerate(table):
                if entry and not (entry == L.GTE_ZEROED and self.zero_grains) and entry * L.SECTOR >= size:
                    sector = (gd_index * self.gt_entries + index) * self.header.grain_size
                    res.corruption(f"ERROR: cluster offset for sector {sector} points after EOF")
                    return res
        if self.parent_mismatch:
            res.corruption(f"ERROR: {self.parent_mismatch}")
        return res

    def reclaim(self) -> dict[str, str]:
        grain = human_size(self.grain_bytes)
        return {"discard": "ignored: qemu's vmdk driver has no discard",
                "write-zeroes": f"whole {grain} grains are marked zeroed (the grains stay in the file)"
                if self.zero_grains else "written as zero data (zeroed_grain=off)",
                "offline": "emu img compact rewrites the image without its zero grains (qemu-img convert -S 4k)"}

    def info_fields(self) -> dict:
        extent = {"virtual-size": self.virtual_size, "filename": self.path, "cluster-size": self.grain_bytes,
                  "format": ""}
        data = {"cid": self.cid, "parent-cid": self.parent_cid,
                "create-type": self.descriptor.values.get("createType", ""), "extents": [extent]}
        return {"cluster-size": self.grain_bytes, "format-specific": {"type": "vmdk", "data": data}}


# -- opening ----------------------------------------------------------------------------------------
def open_vmdk(host: HostFile, *, read_only: bool) -> VmdkImage:
    data = host.pread_exact(0, L.SECTOR)
    if len(data) < L.SECTOR:
        raise InvalidImage("file too short for a VMDK sparse header", field="header")
    try:
        h = L.HEADER.parse(data)
    except ConstructError:
        raise InvalidImage("VMDK header unreadable", field="header") from None
    if h.magic != L.MAGIC:
        raise InvalidImage(f"bad magic {h.magic!r}", field="magic")
    if h.version > 3:
        raise UnsupportedFeature(f"unsupported VMDK version {h.version}", field="version")
    if h.flags & (L.FLAG_COMPRESS | L.FLAG_MARKER) or h.version == 3:
        raise UnsupportedFeature("streamOptimized (compressed) VMDK extents are not supported by emu",
                                 field="flags")
    if h.gd_offset == 0xFFFFFFFFFFFFFFFF:
        raise UnsupportedFeature("grain directory at the end (streamOptimized) is not supported", field="gd_offset")
    if not 0 < h.num_gtes_per_gt <= 512:
        raise InvalidImage(f"grain table of {h.num_gtes_per_gt} entries (1..512 allowed)", field="num_gtes_per_gt")
    if not h.grain_size or h.grain_size > 0x200000 or h.grain_size & (h.grain_size - 1):
        raise InvalidImage(f"grain size of {h.grain_size} sectors is invalid", field="grain_size")
    gd_entries = -(-h.capacity // (h.grain_size * h.num_gtes_per_gt))
    if gd_entries > L.MAX_GD_ENTRIES:
        raise InvalidImage(f"grain directory of {gd_entries} entries is too large", field="capacity")
    if host.size() < h.overhead * L.SECTOR:
        raise InvalidImage(f"file truncated: expecting at least {h.overhead * L.SECTOR} bytes", field="overhead")
    for name in ("gd_offset", "rgd_offset"):
        offset = getattr(h, name)
        if (name == "gd_offset" or h.flags & L.FLAG_RGD) and (offset + -(-gd_entries * 4 // L.SECTOR)) * L.SECTOR \
                > host.size():
            raise InvalidImage("grain directory runs past the end of the file", field=name)
    if not h.descriptor_offset or h.descriptor_size * L.SECTOR > L.MAX_DESCRIPTOR:
        raise UnsupportedFeature("a sparse extent without an embedded descriptor (a separate descriptor file) "
                                 "is not supported by emu", field="descriptor_offset")
    if (h.descriptor_offset + h.descriptor_size) * L.SECTOR > host.size():
        raise InvalidImage("the embedded descriptor runs past the end of the file", field="descriptor_offset")
    text = host.pread(h.descriptor_offset * L.SECTOR, h.descriptor_size * L.SECTOR).split(b"\0", 1)[0]
    descriptor = Descriptor(text.decode("utf-8", "replace"))
    create_type = descriptor.values.get("createType")
    if create_type != "monolithicSparse":
        raise UnsupportedFeature(f"createType {create_type!r}: emu supports monolithicSparse", field="createType")
    if len(descriptor.extents) != 1 or descriptor.extents[0][2] != "SPARSE":
        raise InvalidImage("a monolithicSparse descriptor must name exactly one SPARSE extent", field="extent")
    if descriptor.extents[0][1] != h.capacity:
        raise InvalidImage(f"extent of {descriptor.extents[0][1]} sectors but the header says {h.capacity}",
                           field="capacity")
    return VmdkImage(host, h, descriptor, read_only=read_only)


# -- creating ---------------------------------------------------------------------------------------
def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    backing = options.get("backing_file", backing)
    link = f" backing_file={backing} backing_fmt={options.get('backing_fmt', backing_fmt) or 'vmdk'}" if backing \
        else ""
    return (f"size={size}{link} compat6={options.get('compat6', 'off')} "
            f"hwversion={options.get('hwversion', 'undefined')}")


def create(path: str, size: int | None, options: dict[str, str], *, backing: str | None,
           backing_fmt: str | None, opener) -> None:
    for key in options:
        if key not in CREATE_OPTIONS:
            raise UsageError(f"vmdk: invalid parameter '{key}'")
    subformat = options.get("subformat", "monolithicSparse")
    if subformat != "monolithicSparse":
        raise UsageError(f"vmdk: subformat {subformat} is not supported by emu (monolithicSparse is)")
    adapter = options.get("adapter_type", "ide")
    if adapter not in ADAPTERS:
        raise UsageError(f"vmdk: unknown adapter type '{adapter}'")
    zeroed = options.get("zeroed_grain", "off") == "on"
    compat6 = options.get("compat6", "off") == "on"
    hw_version = options.get("hwversion")
    if compat6 and hw_version:
        raise UsageError("vmdk: compat6 cannot be enabled with hwversion set")
    hw_version = "6" if compat6 else hw_version or "4"
    tools = options.get("toolsversion", "2147483647")
    backing = options.get("backing_file", backing)
    backing_fmt = options.get("backing_fmt", backing_fmt)
    parent_cid = L.NO_PARENT_CID
    if backing:
        if backing_fmt not in (None, FORMAT):
            raise UsageError(f"vmdk: invalid backing file format: {backing_fmt}. Must be vmdk")
        full = backing_path(path, backing)
        parent = opener(full, read_only=True, open_backing=False)
        if parent.format_name != FORMAT:
            parent.close()
            raise UsageError(f"vmdk: invalid backing file format: {parent.format_name}. Must be vmdk")
        parent_cid, size = parent.cid, parent.virtual_size if size is None else size
        parent.close()
    if size is None:
        raise UsageError("vmdk: image creation needs a size parameter")
    size += -size % L.SECTOR
    capacity = size // L.SECTOR
    grains = -(-capacity // L.DEFAULT_GRAIN)
    gt_sectors = -(-L.GTES_PER_GT * 4 // L.SECTOR)
    gt_count = -(-grains // L.GTES_PER_GT)
    if gt_count > L.MAX_GD_ENTRIES:   # qemu-img makes such a file but cannot open it ("L1 size too big")
        raise UsageError(f"vmdk: image size too large: {gt_count} grain directory entries, at most "
                         f"{L.MAX_GD_ENTRIES} can be opened (1 PiB with 64 KiB grains)")
    gd_sectors = -(-gt_count * 4 // L.SECTOR)
    rgd = L.DESCRIPTOR_OFFSET + L.DESCRIPTOR_SIZE
    gd = rgd + gd_sectors + gt_sectors * gt_count
    overhead = -(-(gd + gd_sectors + gt_sectors * gt_count) // L.DEFAULT_GRAIN) * L.DEFAULT_GRAIN
    header = dict(magic=L.MAGIC, version=2 if zeroed else 1,
                  flags=L.FLAG_RGD | L.FLAG_NL_DETECT | (L.FLAG_ZERO_GRAIN if zeroed else 0), capacity=capacity,
                  grain_size=L.DEFAULT_GRAIN, descriptor_offset=L.DESCRIPTOR_OFFSET,
                  descriptor_size=L.DESCRIPTOR_SIZE, num_gtes_per_gt=L.GTES_PER_GT, rgd_offset=rgd, gd_offset=gd,
                  overhead=overhead, unclean_shutdown=0, newline_check=L.NEWLINE_CHECK, compress_algorithm=0,
                  pad=bytes(433))
    heads = 16 if adapter == "ide" else 255
    descriptor = (
        "# Disk DescriptorFile\nversion=1\n"
        f"CID={random.getrandbits(32):x}\nparentCID={L.NO_PARENT_CID:x}\n"
        'createType="monolithicSparse"\n\n'
        "# Extent description\n"
        f'RW {capacity} SPARSE "{path}"\n\n'
        "# The Disk Data Base\n#DDB\n\n"
        f'ddb.virtualHWVersion = "{hw_version}"\n'
        f'ddb.geometry.cylinders = "{size // (63 * heads * L.SECTOR)}"\n'
        f'ddb.geometry.heads = "{heads}"\nddb.geometry.sectors = "63"\n'
        f'ddb.adapterType = "{adapter}"\nddb.toolsVersion = "{tools}"\n')
    if backing:
        descriptor = relink_descriptor(descriptor, parent_cid, backing, path)
    descriptor = descriptor.encode()
    if len(descriptor) > L.DESCRIPTOR_SIZE * L.SECTOR:
        raise UsageError(f"vmdk: descriptor too long (file names too long?): {len(descriptor)} bytes, the "
                         f"embedded descriptor holds {L.DESCRIPTOR_SIZE * L.SECTOR}")
    host = HostFile(path, writable=True, create=True)
    try:
        host.pwrite(0, L.HEADER.build(header))
        host.truncate(overhead * L.SECTOR)
        for directory in (rgd, gd):
            table = array("I", range(directory + gd_sectors, directory + gd_sectors + gt_sectors * gt_count,
                                     gt_sectors))
            if sys.byteorder == "big":
                table.byteswap()
            host.pwrite(directory * L.SECTOR, table.tobytes().ljust(gd_sectors * L.SECTOR, b"\0"))
        host.pwrite(L.DESCRIPTOR_OFFSET * L.SECTOR, descriptor)
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None
    finally:
        host.close()
