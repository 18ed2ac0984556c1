"""Reference counts of host clusters: the refcount table, cached refcount blocks, allocation, freeing.

Placement follows qemu 7.2 (block/qcow2-refcount.c) so that images grow the way qemu's grow:
first fit from a cursor that only moves back when a cluster is freed; a missing refcount block is
placed at the cursor, describing itself when it falls in its own range; when the table is full, new
blocks and a bigger table go at the start of the first uncovered range (`refcount_area`).

Crash ordering: a decrement is never made durable before the metadata that dropped the reference.
Decrements are applied in memory at once but written out as "pending" (old value) until the owner
has made its L1/L2 tables durable and calls `commit_pending`. A freed cluster is reused at once, as
qemu does; reusing one whose decrement is still pending first makes the owner's tables durable
(`make_frees_durable`, qemu's cache dependency flush). Increments may reach the disk early: at worst
a crash leaks a cluster.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from emu.errors import CorruptImage, ImageError
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.tables import RefcountCodec, TableCache, decode_u64, encode_u64


class Refcounts:
    """The refcount table and cached refcount blocks of one open image: lookups, allocation and
    freeing, write-out in crash-safe order, and the rebuild a repair may need."""

    def __init__(self, host: HostFile, cluster_bits: int, refcount_order: int, table_offset: int,
                 table_clusters: int, cache_blocks: int,
                 write_table_pointer: Callable[[int, int], None],
                 make_frees_durable: Callable[[], None],
                 check_overlap: Callable[[int, int], None] | None = None) -> None:
        self.host = host
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.codec = RefcountCodec(refcount_order, self.cluster_size)
        self.block_bits = cluster_bits + 3 - refcount_order   # log2(entries per refcount block)
        self.block_entries = 1 << self.block_bits
        self.block_mask = self.block_entries - 1
        self.table_offset = table_offset
        self.table_clusters = table_clusters
        table_bytes = table_clusters << cluster_bits
        self.table = decode_u64(host.pread(table_offset, table_bytes))
        self.table_dirty: set[int] = set()
        self.cache = TableCache(cache_blocks, self._load_block, self._store_block)
        self.free_cursor = 0
        self.pending: dict[int, int] = {}   # cluster index -> decrements not yet written
        self._first_cluster: dict[int, int] = {}  # refcount block offset -> first cluster it counts
        self._write_table_pointer = write_table_pointer   # points the header at a new table
        self._make_frees_durable = make_frees_durable
        # called with (first cluster, count) before free clusters are handed out: refcounts can lie in
        # a damaged image, and nothing may be allocated on top of metadata (qemu's overlap check)
        self.check_overlap = check_overlap
        self.block_clusters = {(e & L.REFT_OFFSET_MASK) >> cluster_bits for e in self.table
                               if e & L.REFT_OFFSET_MASK}

    # -- reading -----------------------------------------------------------------------------------
    def block_offset(self, table_index: int) -> int:
        if table_index >= len(self.table):
            return 0
        offset = self.table[table_index] & L.REFT_OFFSET_MASK
        if offset & (self.cluster_size - 1):
            raise CorruptImage(f"refcount block offset {offset:#x} is not cluster aligned", path=self.host.path,
                               field="refcount_table", offset=self.table_offset + 8 * table_index)
        return offset

    def get(self, cluster_index: int) -> int:
        table_index = cluster_index >> self.block_bits
        offset = self.block_offset(table_index)
        if not offset:
            return 0
        return self._block(table_index, offset)[cluster_index & self.block_mask]

    def _block(self, table_index: int, offset: int) -> array:
        self._first_cluster[offset] = table_index << self.block_bits
        return self.cache.get(offset)

    # -- allocation --------------------------------------------------------------------------------
    def alloc(self, count: int) -> int:
        """Allocate `count` contiguous clusters (refcount 1); returns the host offset of the first."""
        while True:
            start = self._find_free(count)
            if self._ensure_blocks(start, count):
                for ci in range(start, start + count):
                    self.set(ci, 1)
                return start << self.cluster_bits
            # New refcount metadata was placed; try the same place again (qemu: EAGAIN).
            self.free_cursor = min(self.free_cursor, start)

    def alloc_at(self, host_offset: int, count: int) -> None:
        """Claim specific clusters (qcow2_alloc_clusters_at); they must be free and covered."""
        start = host_offset >> self.cluster_bits
        for ci in range(start, start + count):
            if self.get(ci):
                raise ImageError(f"cluster {ci} is already in use", path=self.host.path, field="refcount")
        self._before_reuse(start, count)
        if not self._ensure_blocks(start, count):
            raise ImageError("refcount metadata landed in the area being claimed", path=self.host.path,
                             field="refcount")
        for ci in range(start, start + count):
            self.set(ci, 1)

    def increment(self, cluster_index: int) -> None:
        while not self._ensure_blocks(cluster_index, 1):
            pass
        value = self.get(cluster_index) + 1
        if value > self.codec.max:
            raise CorruptImage(f"refcount of cluster {cluster_index} overflows {self.codec.bits} bits",
                               path=self.host.path, field="refcount")
        self.set(cluster_index, value)

    def decrement(self, cluster_index: int, *, durable: bool = False) -> bool:
        """Drop one reference; True if the cluster became free. Unless the caller has already made
        the dereference durable, the write-out stays pending."""
        value = self.get(cluster_index)
        if value == 0:
            raise CorruptImage(f"refcount of cluster {cluster_index} would drop below zero", path=self.host.path,
                               field="refcount", offset=cluster_index << self.cluster_bits)
        self.set(cluster_index, value - 1)
        if not durable:
            self.pending[cluster_index] = self.pending.get(cluster_index, 0) + 1
        if value == 1:
            if cluster_index < self.free_cursor:
                self.free_cursor = cluster_index
            return True
        return False

    def _find_free(self, count: int) -> int:
        """First fit from the cursor. Used clusters are skipped with a byte search over the block,
        so even a damaged table claiming every cluster is in use is scanned in well under a second."""
        bits, mask = self.block_bits, self.block_mask
        limit = L.MAX_HOST_OFFSET >> self.cluster_bits
        ci, run = self.free_cursor, 0
        while run < count:
            if ci >= limit:
                raise ImageError("host offset space of the image exhausted", path=self.host.path,
                                 field="refcount")
            table_index = ci >> bits
            offset = self.block_offset(table_index)
            block_end = (table_index + 1) << bits
            if not offset:                       # no refcount block: its whole range is free
                step = min(count - run, block_end - ci)
                run += step
                ci += step
                continue
            block = self._block(table_index, offset)
            i = ci & mask
            while ci < block_end and run < count:
                if block[i]:
                    run = 0
                    i = _next_zero(block, i + 1)
                    if i < 0:
                        ci = block_end
                        break
                    ci = (table_index << bits) + i
                else:
                    run += 1
                    i += 1
                    ci += 1
        self.free_cursor = ci
        if self.check_overlap is not None:
            self.check_overlap(ci - count, count)
        self._before_reuse(ci - count, count)
        return ci - count

    def _before_reuse(self, start: int, count: int) -> None:
        pending = self.pending
        if pending and any(ci in pending for ci in range(start, start + count)):
            self._make_frees_durable()

    def set(self, cluster_index: int, value: int) -> None:
        """Set a refcount in memory (its refcount block must exist); written out with the block."""
        table_index = cluster_index >> self.block_bits
        offset = self.block_offset(table_index)
        block = self._block(table_index, offset)
        block[cluster_index & self.block_mask] = value
        self.cache.mark_dirty(offset, block)

    def _ensure_blocks(self, start: int, count: int) -> bool:
        """Make sure refcount blocks cover the clusters; False if metadata had to be allocated."""
        first = start >> self.block_bits
        last = (start + count - 1) >> self.block_bits
        for table_index in range(first, last + 1):
            if not self.block_offset(table_index):
                self._alloc_block(max(start, table_index << self.block_bits))
                return False
        return True

    def _alloc_block(self, cluster_index: int) -> None:
        """Create the refcount block covering cluster_index (qemu alloc_refcount_block)."""
        table_index = cluster_index >> self.block_bits
        new_index = self._find_free(1)
        new_offset = new_index << self.cluster_bits
        block = self.codec.empty()
        if new_index >> self.block_bits == table_index:
            block[new_index & self.block_mask] = 1   # the block describes itself
        else:
            self.increment(new_index)                # described elsewhere (recurses at most twice)
        self._first_cluster[new_offset] = table_index << self.block_bits
        self.cache.put_new(new_offset, block)
        self.block_clusters.add(new_index)
        if table_index < len(self.table):
            self.table[table_index] = new_offset
            self.table_dirty.add(table_index)
            return
        blocks_used = -(-max(cluster_index + 1, new_index + 1) // self.block_entries)
        self.refcount_area(blocks_used * self.block_entries * self.cluster_size, 0, False,
                           table_index, new_offset)

    def refcount_area(self, start_offset: int, additional_clusters: int, exact: bool,
                      new_table_index: int = 0, new_block_offset: int = 0) -> int:
        """Grow the table: new blocks + table at start_offset covering everything up to the end of
        that metadata plus `additional_clusters`. Returns the end offset of the new metadata."""
        cs = self.cluster_size
        total_blocks = metadata_blocks(start_offset // cs + additional_clusters, cs,
                                       self.block_entries, generous=not exact)
        if total_blocks * 8 > L.MAX_REFTABLE_BYTES:
            raise ImageError("refcount table would exceed qemu's 8 MiB limit", path=self.host.path,
                             field="refcount_table")
        area_index = (start_offset // cs) >> self.block_bits
        table_size = total_blocks if exact else total_blocks + -(-total_blocks // 2)
        per_cluster = cs // 8
        table_size = -(-table_size // per_cluster) * per_cluster
        table_clusters = table_size // per_cluster
        new_table = array("Q", bytes(8 * table_size))
        keep = min(len(self.table), table_size)
        new_table[:keep] = self.table[:keep]
        if new_block_offset:
            new_table[new_table_index] = new_block_offset
        additional_blocks = sum(1 for i in range(area_index, total_blocks) if not new_table[i])
        table_offset = start_offset + additional_blocks * cs
        end_offset = table_offset + table_clusters * cs
        block_offset = start_offset
        for i in range(area_index, total_blocks):
            if new_table[i]:
                offset = new_table[i] & L.REFT_OFFSET_MASK
                block = self._block(i, offset)
            else:
                offset = block_offset
                block = self.codec.empty()
                self._first_cluster[offset] = i << self.block_bits
                self.cache.put_new(offset, block)
                new_table[i] = offset
                block_offset += cs
            first_covered = (i << self.block_bits) * cs
            if first_covered < end_offset:
                j = (start_offset - first_covered) // cs if first_covered < start_offset else 0
                for k in range(j, min((end_offset - first_covered) // cs, self.block_entries)):
                    block[k] = 1
                self.cache.mark_dirty(offset, block)
        # Blocks first, then the table, then the header switch: each durable before the next.
        self.cache.write_dirty()
        self.host.sync()
        self.host.pwrite(table_offset, encode_u64(new_table))
        self.host.sync()
        self._write_table_pointer(table_offset, table_clusters)
        self.host.sync()
        old_offset, old_clusters = self.table_offset, self.table_clusters
        self.table = new_table
        self.table_offset, self.table_clusters = table_offset, table_clusters
        self.table_dirty.clear()
        self.block_clusters = {(e & L.REFT_OFFSET_MASK) >> self.cluster_bits for e in new_table
                               if e & L.REFT_OFFSET_MASK}
        for ci in range(old_offset >> self.cluster_bits, (old_offset >> self.cluster_bits) + old_clusters):
            self.decrement(ci, durable=True)   # the header switch above is already on disk
        return end_offset

    # -- write-out ---------------------------------------------------------------------------------
    def write_dirty(self) -> bool:
        """Write dirty refcount blocks (with pending decrements held back), then new table entries."""
        wrote = self.cache.write_dirty()
        if self.table_dirty:
            self.host.sync()   # a table entry must never point at a block that is not on disk yet
            for index in sorted(self.table_dirty):
                self.host.pwrite(self.table_offset + 8 * index, self.table[index].to_bytes(8, "big"))
            self.table_dirty.clear()
            wrote = True
        return wrote

    def commit_pending(self) -> bool:
        """The references are gone on disk: write the decrements too and let the clusters be reused.

        Block by block: a block is (re)loaded while its decrements are still pending (so a copy the
        disk holds is corrected), its clusters leave the pending set, and it is written at once, since
        a later eviction would no longer know to hold anything back. The caller syncs afterwards."""
        if not self.pending:
            return False
        by_block: dict[int, list[int]] = {}
        for ci in self.pending:
            by_block.setdefault(ci >> self.block_bits, []).append(ci)
        for table_index, clusters in by_block.items():
            offset = self.block_offset(table_index)
            block = self._block(table_index, offset)
            for ci in clusters:
                del self.pending[ci]
            self.cache.mark_dirty(offset, block)
            self.cache.write(offset)
        return True

    # -- repair ------------------------------------------------------------------------------------
    def rebuild(self, counts: array) -> None:
        """Replace the whole refcount structure by one holding `counts` (the references check counted,
        per host cluster), written after everything in use (qemu's rebuild_refcount_structure): new
        blocks, then the new table, then the header switch, each durable before the next."""
        self.cache.clear()
        self.pending.clear()
        cs, cb = self.cluster_size, self.cluster_bits
        counts = array("Q", counts)
        for entry in self.table:   # the old structure is dropped: do not count it
            offset = entry & L.REFT_OFFSET_MASK
            if offset and not offset & (cs - 1) and (offset >> cb) < len(counts) and counts[offset >> cb]:
                counts[offset >> cb] -= 1
        for ci in range(self.table_offset >> cb, (self.table_offset >> cb) + self.table_clusters):
            if ci < len(counts) and counts[ci]:
                counts[ci] -= 1
        used = max((ci for ci in range(len(counts)) if counts[ci]), default=0) + 1
        start = max(used, -(-self.host.size() // cs))
        per_block = self.block_entries
        blocks = table_clusters = 0
        while True:
            total = start + blocks + table_clusters
            need_blocks = -(-total // per_block)
            need_table = -(-need_blocks * 8 // cs)
            if (need_blocks, need_table) == (blocks, table_clusters):
                break
            blocks, table_clusters = need_blocks, need_table
        counts.extend(array("Q", [0]) * max(0, start + blocks + table_clusters - len(counts)))
        for ci in range(start, start + blocks + table_clusters):
            counts[ci] = 1
        new_table = array("Q", bytes(table_clusters * cs))
        for b in range(blocks):
            block = self.codec.empty()
            base = b * per_block
            for k in range(min(per_block, len(counts) - base)):
                block[k] = counts[base + k]
            offset = (start + b) << cb
            new_table[b] = offset
            self.host.pwrite(offset, self.codec.encode(block))
        table_offset = (start + blocks) << cb
        self.host.sync()
        self.host.pwrite(table_offset, encode_u64(new_table))
        self.host.sync()
        self._write_table_pointer(table_offset, table_clusters)
        self.host.sync()
        self.table = new_table
        self.table_offset, self.table_clusters = table_offset, table_clusters
        self.table_dirty.clear()
        self._first_cluster.clear()
        self.block_clusters = set(range(start, start + blocks))

    def _load_block(self, offset: int) -> array:
        if offset + self.cluster_size > self.host.size():
            raise CorruptImage(f"refcount block at {offset:#x} lies past the end of the file",
                               path=self.host.path, field="refcount_table", offset=offset)
        block = self.codec.decode(self.host.pread(offset, self.cluster_size))
        if self.pending:   # the disk still holds the values before the pending decrements
            first = self._first_cluster[offset]
            for ci, count in self.pending.items():
                if first <= ci < first + self.block_entries:
                    block[ci - first] -= count
        return block

    def _store_block(self, offset: int, block: array) -> None:
        if self.pending:
            first = self._first_cluster[offset]
            adjusted = None
            for ci, count in self.pending.items():
                if first <= ci < first + self.block_entries:
                    if adjusted is None:
                        adjusted = array(block.typecode, block)
                    adjusted[ci - first] += count
            if adjusted is not None:
                block = adjusted
        self.host.pwrite(offset, self.codec.encode(block))


def _next_zero(block: array, start: int) -> int:
    """Index of the first zero entry at or after start, or -1 (bytes.find runs at memchr speed)."""
    size = block.itemsize
    data = block.tobytes()
    zero = bytes(size)
    pos = start * size
    while True:
        pos = data.find(zero, pos)
        if pos < 0:
            return -1
        if pos % size == 0:
            return pos // size
        pos += size - pos % size


def metadata_blocks(clusters: int, cluster_size: int, block_entries: int, *, generous: bool) -> int:
    """Refcount blocks needed to count `clusters` plus the refcount metadata itself (a fixed point,
    as qemu's qcow2_refcount_metadata_size; `generous` adds headroom for table growth)."""
    per_table_cluster = cluster_size // 8
    table = blocks = 0
    n = -1
    while True:
        last = n
        blocks = -(-(clusters + table + blocks) // block_entries)
        table = -(-blocks // per_table_cluster)
        n = clusters + blocks + table
        if n == last:
            if not generous:
                return blocks
            clusters += -(-table // 2)
            generous = False
            n = -1
