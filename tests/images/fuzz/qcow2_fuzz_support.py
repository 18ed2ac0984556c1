"""Shared helpers of the qcow2 fuzz tests: header field offsets, byte patching, guards against hangs
and runaway memory, and a map of where a qcow2 file keeps its metadata.

Everything here reads files with `struct` on its own, never through the code under test, so a bug in
the library cannot hide itself from the tests.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
import subprocess
from dataclasses import dataclass, field

import pytest

from images.qcow2 import layout as L
from tests.support import Hang, patch_bytes, time_limit, traced_memory  # noqa: F401  (re-exported)


def qemu_img_run(qemu_img: str, *args: str, cwd: str | None = None) -> None:
    """Run qemu-img; fail the test with its output if it fails."""
    proc = subprocess.run([qemu_img, *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        pytest.fail(f"qemu-img {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def _header_fields() -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of every header field, taken from layout.HEADER (a v3 header of 112 bytes)."""
    fields = {}
    pos = 0
    for sub in L.HEADER.subcons:
        size = sub.sizeof(version=3, header_length=L.V3_HEADER_LENGTH)
        if sub.name:
            fields[sub.name] = (pos, size)
        pos += size
    return fields


HEADER_FIELDS = _header_fields()
_PACK = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


def read_field(data: bytes, name: str) -> int | bytes:
    offset, size = HEADER_FIELDS[name]
    if name == "magic":
        return bytes(data[offset:offset + size])
    return struct.unpack_from(_PACK[size], data, offset)[0]


def patch_field(path, name: str, value: int | bytes) -> None:
    """Overwrite one header field of the file in place (big-endian, the field's own width)."""
    offset, size = HEADER_FIELDS[name]
    raw = value if isinstance(value, bytes) else struct.pack(_PACK[size], value)
    assert len(raw) == size, (name, raw)
    patch_bytes(path, offset, raw)


def patch_u64(path, offset: int, value: int) -> None:
    patch_bytes(path, offset, struct.pack(">Q", value))


def read_u64(path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


def extensions(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the extension header, type, length) of each header extension, end marker excluded."""
    version = struct.unpack_from(">I", data, 4)[0]
    pos = L.V2_HEADER_LENGTH if version == 2 else struct.unpack_from(">I", data, 100)[0]
    out = []
    while pos + 8 <= len(data):
        ext_type, length = struct.unpack_from(">II", data, pos)
        if ext_type == L.EXT_END:
            break
        out.append((pos, ext_type, length))
        pos += 8 + ((length + 7) & ~7)
    return out


# -- guards ----------------------------------------------------------------------------------------

def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def address_space_cap(extra_bytes: int):
    """Make an allocation of more than `extra_bytes` raise MemoryError instead of letting the kernel's
    OOM killer end the test run (tracemalloc only reports a peak once the allocation succeeded)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        current = _vm_size()
    except OSError:
        current = 0
    if not current:
        yield
        return
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- where the metadata is -------------------------------------------------------------------------

@dataclass
class Region:
    name: str
    start: int
    end: int
    unit: int = 8          # the width of the entries in the region (for aligned whole-entry mutations)


@dataclass
class Layout:
    """Where a (well-formed, seed) qcow2 file keeps its metadata."""

    cluster_size: int
    file_size: int
    regions: list[Region] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)   # every metadata/data cluster offset in use

    def boundaries(self) -> list[int]:
        """Interesting truncation lengths: every region edge, a little either side."""
        out = {0, 1, 4, 8, 50, 71, 72, 100, 103, 104, 111, 112, self.file_size - 1}
        for region in self.regions:
            for edge in (region.start, region.end):
                out.update({edge - 1, edge, edge + 1, edge + 4})
        return sorted(x for x in out if 0 <= x < self.file_size)


def describe(data: bytes) -> Layout:
    """Find the header, extensions, L1/L2 tables, refcount table/blocks and snapshot table of a seed."""
    u32 = lambda off: struct.unpack_from(">I", data, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from(">Q", data, off)[0]  # noqa: E731
    version = u32(4)
    cluster_bits = u32(20)
    cs = 1 << cluster_bits
    lay = Layout(cs, len(data))
    header_length = L.V2_HEADER_LENGTH if version == 2 else u32(100)
    lay.regions.append(Region("header", 0, header_length, 4))
    exts = extensions(data[:cs])
    ext_end = (exts[-1][0] + 8 + ((exts[-1][2] + 7) & ~7) if exts else header_length) + 8
    backing_offset, backing_size = u64(8), u32(16)
    lay.regions.append(Region("extensions", header_length, max(ext_end, backing_offset + backing_size), 4))
    lay.regions.append(Region("cluster 0", 0, cs, 1))

    def add_l1(name: str, l1_offset: int, l1_size: int) -> None:
        lay.regions.append(Region(name, l1_offset, l1_offset + 8 * l1_size))
        lay.offsets.append(l1_offset)
        for i in range(l1_size):
            l2 = u64(l1_offset + 8 * i) & L.L1E_OFFSET_MASK
            if not l2:
                continue
            lay.offsets.append(l2)
            entries = [u64(l2 + 8 * k) for k in range(cs // 8)]
            used = [k for k, e in enumerate(entries) if e]
            lay.regions.append(Region(f"{name} L2[{i}]", l2, l2 + cs))
            if used:
                lay.regions.append(Region(f"{name} L2[{i}] used", l2 + 8 * used[0], l2 + 8 * (used[-1] + 1)))
            for e in entries:
                if e & L.OFLAG_COMPRESSED:
                    lay.offsets.append(e & ((1 << (62 - (cluster_bits - 8))) - 1))
                elif e & L.L2E_OFFSET_MASK:
                    lay.offsets.append(e & L.L2E_OFFSET_MASK)

    add_l1("L1", u64(40), u32(36))
    rt_offset, rt_clusters = u64(48), u32(56)
    lay.offsets.append(rt_offset)
    table = [u64(rt_offset + 8 * i) for i in range(rt_clusters * cs // 8)]
    used = [i for i, e in enumerate(table) if e]
    lay.regions.append(Region("refcount table", rt_offset, rt_offset + 8 * (max(used, default=0) + 2)))
    refcount_bytes = (1 << (u32(96) if version >= 3 else 4)) // 8 or 1
    file_clusters = -(-len(data) // cs)
    for i in used:
        block = table[i] & L.REFT_OFFSET_MASK
        lay.offsets.append(block)
        used_bytes = min(cs, refcount_bytes * (file_clusters + 2))
        lay.regions.append(Region(f"refcount block {i}", block, block + used_bytes, min(refcount_bytes, 8)))
    nb_snapshots, snapshots_offset = u32(60), u64(64)
    pos = snapshots_offset
    for i in range(nb_snapshots):
        l1_offset, l1_size, id_size, name_size = struct.unpack_from(">QIHH", data, pos)
        extra = u32(pos + 36)
        add_l1(f"snapshot {i} L1", l1_offset, l1_size)
        pos += 40 + extra + id_size + name_size
        pos += -(pos - snapshots_offset) % 8
    if nb_snapshots:
        lay.offsets.append(snapshots_offset)
        lay.regions.append(Region("snapshot table", snapshots_offset, pos, 4))
    lay.offsets = sorted(set(lay.offsets))
    return lay


FAR_PAST_EOF = 64 << 20


class _Source:
    """Random access to a file's bytes (a path, read on demand) or to bytes in memory."""

    def __init__(self, source: bytes | str) -> None:
        self._data = source if isinstance(source, (bytes, bytearray)) else None
        self._path = None if self._data is not None else source
        self.size = len(self._data) if self._data is not None else os.path.getsize(source)
        self._fd = os.open(source, os.O_RDONLY) if self._path else -1

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            chunk = b""
        elif self._data is not None:
            chunk = bytes(self._data[offset:offset + length])
        else:
            chunk = os.pread(self._fd, length, offset)
        return chunk + bytes(length - len(chunk))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


