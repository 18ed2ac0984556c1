"""Copying an image file as a host tool does, and measuring what a file's bytes cost to write.

A full copy of a VM's disk is a copy of its image files: `cp --sparse=always` (and coreutils 9's default, which
asks SEEK_DATA/SEEK_HOLE where the data is) writes only the file's data and leaves holes where the source has
them; `cp --sparse=never` writes every byte of the file's length, zeros too, so the copy holds its whole length
on the host. Both read through the HostFile, so a hole, a punched discard and an fallocated but never written
range (an unwritten extent, a hole to SEEK_DATA) count the same way they do for qemu-img map.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from images.hostfile import HostFile

CHUNK = 4 << 20         # bytes read and written per call


@dataclass(frozen=True)
class Copied:
    """A file copied: the bytes read from the source and written to the copy, and the copy's host space."""

    copied_bytes: int
    host_bytes: int


def data_runs(host: HostFile) -> Iterator[tuple[int, int]]:
    """(offset, length) of every data run of the file, in order (SEEK_DATA/SEEK_HOLE)."""
    offset, size = 0, host.size()
    while offset < size:
        is_data, end = host.extent_at(offset)
        end = min(max(end, offset + 1), size)
        if is_data:
            yield offset, end - offset
        offset = end


def data_bytes(path: str) -> int:
    """The bytes of `path` that hold written data (not holes, not fallocated-only ranges): what making the
    file had to write."""
    host = HostFile(path, writable=False)
    try:
        return sum(length for _, length in data_runs(host))
    finally:
        host.close()


def copy_file(source: str, target: str, *, sparse: bool) -> Copied:
    """Copy `source` to a new file `target` as `cp --sparse=always` (`sparse`) or `cp --sparse=never` does;
    the copy is made durable (fsync). A failed copy leaves no target behind."""
    src = HostFile(source, writable=False)
    try:
        size = src.size()
        runs = list(data_runs(src)) if sparse else [(0, size)] if size else []
        dst = HostFile(target, writable=True, create=True)
        try:
            moved = 0
            for offset, length in runs:
                for start in range(offset, offset + length, CHUNK):
                    piece = src.pread(start, min(CHUNK, offset + length - start))
                    dst.pwrite(start, piece)
                    moved += len(piece)
            dst.truncate(size)
            dst.sync_all()
            host = dst.allocated_bytes()
        except BaseException:
            dst.close()
            os.remove(target)
            raise
        dst.close()
    finally:
        src.close()
    return Copied(moved, host)
