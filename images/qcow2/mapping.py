"""What an L2 entry says about its guest cluster, decoded without any I/O.

An L2 entry is one of five kinds (qemu 7.2's qcow2_get_cluster_type): unallocated, zero without a
host cluster, zero with one (ZERO_ALLOC: the cluster stays reserved), data (NORMAL) and compressed.
A standard entry holds a host cluster offset; a compressed one holds a host byte offset and a sector
count, split at a bit that depends on the cluster size (qcow2.txt, "Compressed Clusters
Descriptor"). Reads, block status, freeing and check all decode entries here, and reads and block
status walk the same runs: neighbouring clusters of one L2 table that map alike.
"""

from __future__ import annotations

from array import array

from emu.errors import CorruptImage
from images.qcow2 import layout as L

UNALLOCATED, ZERO_PLAIN, ZERO_ALLOC, NORMAL, COMPRESSED = range(5)


class ClusterMap:
    """Decodes the L2 entries of one image (the cluster size fixes the compressed fields)."""

    def __init__(self, cluster_bits: int, path: str) -> None:
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.l2_mask = (1 << (cluster_bits - 3)) - 1
        self.path = path   # named by the corruption errors
        csize_shift = 62 - (cluster_bits - 8)
        self._csize_shift = csize_shift
        self._csize_mask = (1 << (cluster_bits - 8)) - 1
        self._coffset_mask = (1 << csize_shift) - 1

    @staticmethod
    def kind(entry: int) -> int:
        if entry & L.OFLAG_COMPRESSED:
            return COMPRESSED
        if entry & L.OFLAG_ZERO:
            return ZERO_ALLOC if entry & L.L2E_OFFSET_MASK else ZERO_PLAIN
        if entry & L.L2E_OFFSET_MASK:
            return NORMAL
        return UNALLOCATED

    def compressed_extent(self, entry: int) -> tuple[int, int]:
        """(host offset, length) of a compressed cluster's data: whole 512-byte sectors counted from
        the sector the data starts in."""
        offset = entry & self._coffset_mask
        sectors = ((entry >> self._csize_shift) & self._csize_mask) + 1
        return offset, sectors * L.COMPRESSED_SECTOR - (offset & (L.COMPRESSED_SECTOR - 1))

    def extent(self, entry: int) -> tuple[int, int]:
        """(host offset, length) of what the entry references in the host file, the bytes its reference
        counts cover; (0, 0) for an entry without host data (unallocated, plain zero)."""
        if entry & L.OFLAG_COMPRESSED:
            return self.compressed_extent(entry)
        host = entry & L.L2E_OFFSET_MASK
        return (host, self.cluster_size) if host else (0, 0)

    def aligned(self, host_offset: int, guest_offset: int) -> int:
        """host_offset, if it is a cluster boundary: a data cluster anywhere else means a corrupt L2
        table, and qemu fails the request (qcow2_get_host_offset)."""
        if host_offset & (self.cluster_size - 1):
            raise CorruptImage(f"data cluster offset {host_offset:#x} for guest offset {guest_offset:#x} is not "
                               "cluster aligned", field="l2_table", path=self.path)
        return host_offset

    def host_cluster(self, entry: int, guest_offset: int) -> int:
        """The host cluster of a NORMAL or ZERO_ALLOC entry (checked to be aligned)."""
        return self.aligned(entry & L.L2E_OFFSET_MASK, guest_offset)

    def run(self, table: array, offset: int, end: int) -> tuple[int, int, int, int]:
        """The run starting at guest `offset` (whose L2 table is `table`): guest bytes that map alike,
        with the same kind and, where there are host clusters, host clusters that follow each other,
        up to guest `end` or the end of the table. A compressed cluster is a run of its own.

        Returns (kind, host_offset, length, compressed_length): the host cluster of the run's first
        cluster (NORMAL, ZERO_ALLOC; not checked, see `aligned`), or where its compressed data starts,
        else 0; the guest bytes from `offset` to the end of the run; the compressed data's length, or
        0. (A plain tuple: block status asks for a run on every step, and a named one costs more.)"""
        cb, mask = self.cluster_bits, self.l2_mask
        ci = offset >> cb
        entry = table[ci & mask]
        kind = self.kind(entry)
        if kind == COMPRESSED:
            host, length = self.compressed_extent(entry)
            return kind, host, min(end, (ci + 1) << cb) - offset, length
        host = entry & L.L2E_OFFSET_MASK      # 0 for UNALLOCATED and ZERO_PLAIN
        stop = ci + 1
        table_end = (ci | mask) + 1
        while stop < table_end and (stop << cb) < end:
            nxt = table[stop & mask]
            if self.kind(nxt) != kind or host and nxt & L.L2E_OFFSET_MASK != host + ((stop - ci) << cb):
                break
            stop += 1
        return kind, host, min(end, stop << cb) - offset, 0
