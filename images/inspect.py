"""What `emu img info`, `map` and `compare` report, computed the way qemu-img computes it.

These functions return data (dicts with qemu-img's JSON key names, lists of extents, a comparison
result); the command line only formats them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from emu.block.backend import Status
from images.backend import ImageBackend

_COMPARE_CHUNK = 1 << 20


def image_info(image: ImageBackend) -> dict:
    """qemu-img info --output=json for one layer, keys in qemu-img's order, plus emu's "reclaim"."""
    info: dict = {}
    if image.backing_name:
        if image.backing_format:
            info["backing-filename-format"] = image.backing_format
    info["virtual-size"] = image.virtual_size
    info["filename"] = image.path
    fields = image.info_fields()
    if "cluster-size" in fields:
        info["cluster-size"] = fields.pop("cluster-size")
    info["format"] = image.format_name
    info["actual-size"] = image.host.allocated_bytes()
    dirty = fields.pop("dirty-flag", False)
    snapshots = fields.pop("snapshots", None)
    info.update(fields)
    if image.backing_name:
        info["full-backing-filename"] = backing_path(image)
        info["backing-filename"] = image.backing_name
    info["dirty-flag"] = dirty
    info["reclaim"] = image.reclaim()    # emu's own key: what discards, zero writes and compaction give back
    if snapshots:
        info = {"snapshots": snapshots, **info}
    return info


def backing_path(image: ImageBackend) -> str:
    name = image.backing_name or ""
    if os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(image.path), name) if os.path.dirname(image.path) else name


@dataclass(slots=True)
class MapEntry:
    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: int | None
    filename: str | None

    def mergeable(self, nxt: MapEntry) -> bool:
        """qemu-img.c entry_mergeable."""
        if self.length == 0:
            return False
        if (self.zero, self.data, self.depth, self.present, self.filename, self.offset is None) != \
                (nxt.zero, nxt.data, nxt.depth, nxt.present, nxt.filename, nxt.offset is None):
            return False
        return self.offset is None or self.offset + self.length == nxt.offset

    def to_json(self) -> dict:
        out = {"start": self.start, "length": self.length, "depth": self.depth, "present": self.present,
               "zero": self.zero, "data": self.data}
        if self.offset is not None:
            out["offset"] = self.offset
        return out


def map_extents(image: ImageBackend, start: int = 0, length: int | None = None) -> list[MapEntry]:
    """The extents `qemu-img map` prints: one per run of equal status, merged as qemu-img merges."""
    end = image.virtual_size if length is None else min(image.virtual_size, start + length)
    layers = image.chain()
    entries: list[MapEntry] = []
    offset = start
    while offset < end:
        status, depth = image.status_above(offset, end - offset)
        flags = status.flags
        has_offset = bool(flags & Status.OFFSET_VALID)
        entry = MapEntry(offset, status.length, depth, bool(flags & Status.ALLOCATED), bool(flags & Status.ZERO),
                         bool(flags & Status.DATA), status.host_offset if has_offset else None,
                         layers[depth].path if has_offset else None)
        if entries and entries[-1].mergeable(entry):
            entries[-1].length += entry.length
        else:
            entries.append(entry)
        offset += status.length
    return entries


@dataclass(slots=True)
class Comparison:
    identical: bool
    message: str
    mismatch_offset: int | None = None


def compare_images(a: ImageBackend, b: ImageBackend, *, strict: bool = False) -> Comparison:
    """qemu-img compare: same guest-visible content; a size difference is allowed if the extra area
    reads as zeros, except in strict mode, which also fails on allocation differences."""
    warnings = []
    if a.virtual_size != b.virtual_size:
        if strict:
            return Comparison(False, "Strict mode: Image size mismatch!")
        warnings.append("Warning: Image size mismatch!")
    common = min(a.virtual_size, b.virtual_size)
    offset = 0
    while offset < common:
        sa, _ = a.status_above(offset, common - offset)
        sb, _ = b.status_above(offset, common - offset)
        n = min(sa.length, sb.length)
        if strict and bool(sa.flags & Status.ALLOCATED) != bool(sb.flags & Status.ALLOCATED):
            return Comparison(False, f"Strict mode: Offset {offset} block status mismatch!", offset)
        if not (sa.flags & Status.ZERO and sb.flags & Status.ZERO):
            n = min(n, _COMPARE_CHUNK)
            da, db = a.read(offset, n), b.read(offset, n)
            if da != db:
                bad = offset + _first_difference(da, db)
                return Comparison(False, f"Content mismatch at offset {bad}!", bad)
        offset += n
    longer = a if a.virtual_size > b.virtual_size else b
    while offset < longer.virtual_size:
        st, _ = longer.status_above(offset, longer.virtual_size - offset)
        n = st.length
        if not st.flags & Status.ZERO:
            n = min(n, _COMPARE_CHUNK)
            data = longer.read(offset, n)
            if data.count(0) != len(data):
                bad = offset + _first_difference(data, bytes(len(data)))
                return Comparison(False, f"Content mismatch at offset {bad}!", bad)
        offset += n
    return Comparison(True, "\n".join(warnings + ["Images are identical."]))


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first differing 512-byte sector (qemu-img compares in sectors)."""
    for start in range(0, len(a), 512):
        if a[start:start + 512] != b[start:start + 512]:
            return start
    return len(a)
