"""Offline compaction: give the host back the space of blocks that hold nothing but zeros.

VDI is compacted in place, as `VBoxManage modifymedium --compact` does: every allocated block that
reads as zeros is freed, and the last block of the file moves into the hole, so the file shrinks (the
"virtualbox" discard of images/vdi). Every other format is rewritten as `qemu-img convert -S 4k`
writes it: a new file of the same format and layout with the same backing link, into which only
non-zero data is written (over a backing file: only sectors that differ from what the backing file
reads), and which then replaces the old file. Children of the image are relinked to the new file,
since formats that link by identity give it a new UUID or CID.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from emu.block.backend import Status
from emu.errors import UnsupportedFeature, UsageError
from images.chain import relink, sparse_options
from images.convert import convert
from images.hostfile import HostFile
from images.probe import create_image, open_image
from images.snapshots import children_of


@dataclass
class Compaction:
    path: str
    method: str
    file_before: int        # file size in bytes
    file_after: int
    host_before: int        # bytes allocated on the host
    host_after: int
    blocks_freed: int = 0   # in-place compaction only


def _host(path: str) -> tuple[int, int]:
    """(file size, bytes allocated on the host) of the file at path."""
    host = HostFile(path, writable=False)
    try:
        return host.size(), host.allocated_bytes()
    finally:
        host.close()


def compact(path: str, fmt: str | None = None) -> Compaction:
    """Compact one image offline (nothing else may have it open); returns the before/after sizes."""
    file_before, host_before = _host(path)
    image = open_image(path, fmt, read_only=True, open_backing=False)
    fmt, fixed = image.format_name, sparse_options(image)[1]
    has_snapshots = bool(image.info_fields().get("snapshots"))
    image.close()
    if fixed:
        raise UnsupportedFeature("a fixed-size image is fully allocated by design: nothing to compact",
                                 path=path)
    if has_snapshots:
        raise UsageError(f"{path}: has internal snapshots, which compacting by rewriting would drop")
    if fmt == "vdi":
        method, freed = "VirtualBox in place", _compact_vdi(path)
    else:
        method, freed = "rewritten as qemu-img convert -S 4k", _rewrite(path, fmt)
    file_after, host_after = _host(path)
    return Compaction(path, method, file_before, file_after, host_before, host_after, freed)


def _compact_vdi(path: str) -> int:
    image = open_image(path, "vdi", read_only=False, options={"discard": "virtualbox"})
    try:
        block = image.block_size
        freed = 0
        for offset in range(0, image.virtual_size, block):
            n = min(block, image.virtual_size - offset)
            status = image.block_status(offset, n)
            if status.flags & Status.DATA and status.length == n and image.read(offset, n).count(0) == n:
                image.discard(offset, n)
                freed += 1
        image.flush()
        return freed
    finally:
        image.close()


def _rewrite(path: str, fmt: str) -> int:
    children = children_of(path)
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.compact")
    source = open_image(path, fmt, read_only=True)
    try:
        create_image(temporary, fmt, source.virtual_size, sparse_options(source)[0],
                     backing=source.backing_name, backing_fmt=source.backing_format)
        target = open_image(temporary, fmt, read_only=False)
        try:
            convert(source, target)
        finally:
            target.close()
        os.replace(temporary, path)
    finally:
        source.close()
        if os.path.exists(temporary):
            os.remove(temporary)
    for child in children:
        relink(child)
    return 0

