"""An open qcow2 image's metadata and every write of it: header fields, the L1 table, cached L2
tables, the refcounts' place, the dirty bit, in the order that keeps the image crash safe.

Changes are made in memory and written back at flush (or when a cache evicts a table) in qemu 7.2's
order (block/qcow2.c, qcow2-cluster.c, qcow2-cache.c): refcount increments, then L2 tables, then L1
entries, then refcount decrements (held back by refcount.py until then), each durable before the
next, so a crash at any write leaves leaks at worst. With lazy refcounts the dirty bit reaches the
disk before the first change, and the next read-write open repairs the refcounts. Nothing is ever
written over metadata: refcounts and L2 entries can lie in a damaged image, so `check_overlap`
refuses such a write and marks the image corrupt, as qemu's qcow2_pre_write_overlap_check does.
"""

from __future__ import annotations

from array import array

from emu.errors import CorruptImage, InvalidImage, UsageError
from emu.trace import Act, Trace
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.header import Qcow2Header
from images.qcow2.mapping import ClusterMap
from images.qcow2.refcount import Refcounts
from images.qcow2.snapshot import Snapshot, read_snapshots, table_length
from images.qcow2.tables import TableCache, decode_u64, encode_u64

DEFAULT_L2_CACHE_BYTES = 1 << 20
DEFAULT_REFCOUNT_CACHE_BYTES = 256 << 10


class Metadata:
    """The header, L1 table, L2 table cache, refcounts and snapshot list of one open image.

    `l1`, `l1_dirty` and `l2_cache` are the tables as they are in memory; change an L2 table through
    `l2_for_write` and `l2_cache.mark_dirty`, an L1 entry through `set_l1_entry`, and `flush` makes
    it all durable. `last_l2_offset` / `last_l2` remember the table looked up last, so the hot paths
    of the image can skip the cache for runs of requests into one table.
    """

    def __init__(self, host: HostFile, header: Qcow2Header, *, l2_cache_bytes: int = DEFAULT_L2_CACHE_BYTES,
                 refcount_cache_bytes: int = DEFAULT_REFCOUNT_CACHE_BYTES) -> None:
        self.host = host
        self.header = header
        cb = header.cluster_bits
        self.cluster_bits = cb
        self.cluster_size = cs = 1 << cb
        self.l2_bits = cb - 3
        self.l2_entries = 1 << self.l2_bits
        self.l2_mask = self.l2_entries - 1
        self.l1_shift = cb + self.l2_bits      # log2 of the guest bytes one L1 entry maps
        self.clusters = ClusterMap(cb, host.path)
        self.l1 = decode_u64(host.pread(header.l1_table_offset, header.l1_size * 8))
        self.l1_dirty: set[int] = set()
        self.l2_cache = TableCache(max(2, l2_cache_bytes // cs), self._load_l2, self._store_l2,
                                   self._before_l2_store)
        self.last_l2_offset = -1
        self.last_l2: array | None = None
        self.refs = Refcounts(host, cb, header.refcount_order, header.refcount_table_offset,
                              header.refcount_table_clusters, max(2, refcount_cache_bytes // cs),
                              self.write_refcount_table_pointer, self.flush, self.check_overlap)
        self._overlap: tuple[set[int], set[int]] | None = None   # see metadata_clusters
        self.lazy_refcounts = bool(header.compatible_features & L.COMPAT_LAZY_REFCOUNTS)
        self.snapshots: list[Snapshot] = read_snapshots(host, header.snapshots_offset, header.nb_snapshots, cs)
        self.broken = False     # corruption was found: no more writes (see signal_corruption)

    # -- header ------------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self.header.incompatible_features & L.INCOMPAT_DIRTY)

    @property
    def corrupt(self) -> bool:
        return bool(self.header.incompatible_features & L.INCOMPAT_CORRUPT)

    def _write_features(self) -> None:
        """Rewrite the incompatible/compatible/autoclear words (v3 only) and make them durable."""
        h = self.header
        self.host.pwrite(L.HEADER_OFFSETS["incompatible_features"], h.incompatible_features.to_bytes(8, "big")
                         + h.compatible_features.to_bytes(8, "big") + h.autoclear_features.to_bytes(8, "big"))
        self.host.sync()

    def mark_dirty(self) -> None:
        """Lazy refcounts: the dirty bit goes to disk before the first metadata change."""
        if self.lazy_refcounts and not self.dirty:
            self.header.incompatible_features |= L.INCOMPAT_DIRTY
            self._write_features()

    def mark_clean(self, *, consistent: bool = False) -> None:
        """Clear the dirty bit (and, after a successful repair, the corrupt bit) on disk."""
        clear = L.INCOMPAT_DIRTY | (L.INCOMPAT_CORRUPT if consistent else 0)
        if self.header.incompatible_features & clear:
            self.header.incompatible_features &= ~clear
            self._write_features()

    def write_header(self) -> None:
        """Write the header as `Qcow2Header.build` lays it out (not durable until the caller syncs)."""
        self.host.pwrite(0, self.header.build())

    def clear_autoclear_features(self) -> None:
        """Drop what a read-write open does not maintain (persistent bitmaps): a cleared autoclear bit
        tells qemu they are stale."""
        self.header.autoclear_features = 0
        self.header.bitmaps_extension = None
        self.write_header()
        self.host.sync()

    def write_refcount_table_pointer(self, offset: int, clusters: int) -> None:
        """Point the header at a new refcount table (the caller syncs around it)."""
        self._overlap = None   # the refcount table moved
        self.header.refcount_table_offset = offset
        self.header.refcount_table_clusters = clusters
        self.host.pwrite(L.HEADER_OFFSETS["refcount_table_offset"],
                         offset.to_bytes(8, "big") + clusters.to_bytes(4, "big"))

    def write_backing_link(self, name: str | None, fmt: str | None) -> None:
        """Record a new backing file name and format in cluster 0 (qcow2_change_backing_file).

        Cluster 0 is rebuilt as qemu's qcow2_update_header lays it out; only the sectors that differ are
        written, in one write (the header, extensions and name share the first few sectors), then
        flushed: a crash leaves the old header or the new one."""
        h, cs = self.header, self.cluster_size
        old = (h.backing_file, h.backing_format)
        h.backing_file, h.backing_format = name, fmt
        try:
            new = h.build().ljust(cs, b"\0")
        except InvalidImage:
            h.backing_file, h.backing_format = old
            raise UsageError(f"{self.host.path}: backing file name '{name}' does not fit in the "
                             f"{cs}-byte header cluster with the header and its extensions") from None
        current = self.host.pread(0, cs)
        changed = [i for i in range(0, cs, 512) if new[i:i + 512] != current[i:i + 512]]
        if changed:
            start, end = changed[0], changed[-1] + 512
            self.host.pwrite(start, new[start:end])
            self.host.sync()

    def new_l1_table(self, l1_size: int) -> None:
        """Give an image without an L1 table (a fresh one) an empty table of l1_size entries: its
        clusters are allocated and counted durably, then zeroed, then the header points at them."""
        l1_bytes = 8 * l1_size
        offset = self.refs.alloc(-(-l1_bytes // self.cluster_size))
        self.flush()
        self.host.pwrite(offset, bytes(l1_bytes))
        self.host.sync()
        self.host.pwrite(L.HEADER_OFFSETS["l1_size"], l1_size.to_bytes(4, "big") + offset.to_bytes(8, "big"))
        self.host.sync()
        self.header.l1_size, self.header.l1_table_offset = l1_size, offset
        self.l1 = array("Q", bytes(l1_bytes))
        self._overlap = None   # the L1 table moved

    def write_virtual_size(self, size: int) -> None:
        """Set the header's virtual size, durably (create sets it last, as qemu's truncate does)."""
        self.header.size = size
        self.host.pwrite(L.HEADER_OFFSETS["size"], size.to_bytes(8, "big"))
        self.host.sync()

    # -- L1 and L2 tables --------------------------------------------------------------------------
    def _load_l2(self, offset: int) -> array:
        if offset & (self.cluster_size - 1):
            raise CorruptImage(f"L2 table offset {offset:#x} is not cluster aligned", field="l1_table",
                               path=self.host.path)
        if offset + self.cluster_size > self.host.size():
            raise CorruptImage(f"L2 table at {offset:#x} lies past the end of the file", field="l1_table",
                               path=self.host.path)
        return decode_u64(self.host.pread(offset, self.cluster_size))

    def _store_l2(self, offset: int, table: array) -> None:
        self.host.pwrite(offset, encode_u64(table))

    def _before_l2_store(self) -> None:
        """An L2 table may only reach the disk after the data and the refcounts of what it references
        (including refcount blocks that an eviction wrote earlier without a barrier)."""
        self.refs.write_dirty()
        self.host.sync()

    def l2_table(self, offset: int) -> array:
        """The L2 table at host `offset`, from the cache (or the disk)."""
        if offset == self.last_l2_offset:
            return self.last_l2  # type: ignore[return-value]
        table = self.l2_cache.get(offset)
        self.last_l2_offset, self.last_l2 = offset, table
        return table

    def l2_offset(self, l1_index: int) -> int:
        """Host offset of the L2 table of L1 entry l1_index; 0 if there is none."""
        if l1_index >= len(self.l1):
            return 0
        return self.l1[l1_index] & L.L1E_OFFSET_MASK

    def l2_entry(self, cluster_index: int) -> int:
        """The L2 entry of guest cluster cluster_index (0 where no L2 table exists)."""
        offset = self.l2_offset(cluster_index >> self.l2_bits)
        if not offset:
            return 0
        return self.l2_table(offset)[cluster_index & self.l2_mask]

    def set_l1_entry(self, l1_index: int, entry: int) -> None:
        self.l1[l1_index] = entry
        self.l1_dirty.add(l1_index)

    def l2_for_write(self, l1_index: int, trace: Trace) -> array:
        """The L2 table for l1_index, allocated or copied (if shared with a snapshot) as needed."""
        entry = self.l1[l1_index]
        offset = entry & L.L1E_OFFSET_MASK
        if offset and entry & L.OFLAG_COPIED:
            return self.l2_table(offset)
        self.mark_dirty()
        new_offset = self.refs.alloc(1)
        span = 1 << self.l1_shift
        if offset:
            table = array("Q", self.l2_table(offset))
            self.free(offset, self.cluster_size)
            trace.add(L.FORMAT_NAME, Act.COW, l1_index << self.l1_shift, span,
                      f"L2 table shared with a snapshot copied to {new_offset:#x}")
        else:
            table = array("Q", bytes(self.cluster_size))
            trace.add(L.FORMAT_NAME, Act.ALLOCATED, l1_index << self.l1_shift, span,
                      f"new L2 table at host {new_offset:#x}", self.cluster_size)
        self.l2_cache.put_new(new_offset, table)
        self.last_l2_offset, self.last_l2 = new_offset, table
        self.set_l1_entry(l1_index, new_offset | L.OFLAG_COPIED)
        if self._overlap is not None:
            self._overlap[1].add(new_offset >> self.cluster_bits)
        return table

    def free(self, host_offset: int, length: int, freed: list[int] | None = None) -> None:
        """Drop one reference to every host cluster of the range. A cluster that becomes free is no
        L2 table any more and is appended to `freed`, for the caller to hand back to the host (or
        not); the decrements reach the disk after the tables that dropped the references (see flush)."""
        cb = self.cluster_bits
        for ci in range(host_offset >> cb, ((host_offset + length - 1) >> cb) + 1):
            if self.refs.decrement(ci):
                if self._overlap is not None:
                    self._overlap[1].discard(ci)   # an L2 table that is gone (fixed metadata stays)
                if self.l2_cache.cached(ci << cb) is not None:
                    self.l2_cache.drop(ci << cb)
                    if self.last_l2_offset == ci << cb:
                        self.last_l2_offset, self.last_l2 = -1, None
                if freed is not None:
                    freed.append(ci)

    # -- metadata overlap check (qcow2_pre_write_overlap_check) ------------------------------------
    def metadata_clusters(self) -> tuple[set[int], set[int]]:
        """Host clusters holding metadata, as (fixed, L2 tables): the header, L1 table, refcount table
        and snapshot tables never move while the image is open (but for the refcount table growing),
        L2 tables come and go. Refcount blocks are in refs.block_clusters."""
        if self._overlap is None:
            cb, cs, h = self.cluster_bits, self.cluster_size, self.header
            spans = [(0, cs), (h.l1_table_offset, h.l1_size * 8),
                     (self.refs.table_offset, self.refs.table_clusters * cs)]
            if h.nb_snapshots:
                spans.append((h.snapshots_offset, table_length(self.host, h.snapshots_offset, h.nb_snapshots)))
            spans += [(snap.l1_table_offset, snap.l1_size * 8) for snap in self.snapshots]
            fixed: set[int] = set()
            for offset, length in spans:
                if length > 0:
                    fixed.update(range(offset >> cb, ((offset + length - 1) >> cb) + 1))
            l2 = {(e & L.L1E_OFFSET_MASK) >> cb for e in self.l1 if e & L.L1E_OFFSET_MASK}
            self._overlap = (fixed, l2)
        return self._overlap

    def check_overlap(self, first: int, count: int) -> None:
        """Refuse to write data or new metadata over host clusters [first, first+count) if any of them
        holds metadata. Like qemu, the image is then marked corrupt."""
        fixed, l2 = self._overlap or self.metadata_clusters()
        blocks = self.refs.block_clusters
        for ci in range(first, first + count):
            if ci in fixed or ci in l2 or ci in blocks:
                self.signal_corruption(f"a write to host cluster {ci} would overwrite metadata")

    def signal_corruption(self, what: str) -> None:
        """As qemu's qcow2_signal_corruption: mark the image corrupt and stop writing to it."""
        self.broken = True
        if self.header.version >= 3 and not self.corrupt:
            self.header.incompatible_features |= L.INCOMPAT_CORRUPT
            self._write_features()
        raise CorruptImage(f"{what}; the image is now marked corrupt (emu img check -r all repairs it)",
                           field="refcount", path=self.host.path)

    # -- write-back --------------------------------------------------------------------------------
    def flush(self) -> None:
        """Make every metadata change durable, in crash-safe order: data and refcount increments, then
        L2 tables, then L1 entries, then refcount decrements, each durable before the next. Lazy
        refcounts keep the same order (the dirty bit only excuses stale refcounts, not lost tables)."""
        host = self.host
        self.refs.write_dirty()
        if self.l2_cache.dirty or self.l1_dirty:
            host.sync()
            self.l2_cache.write_dirty()
        if self.l1_dirty:
            host.sync()   # also covers L2 tables that cache eviction wrote earlier
            self._write_l1_entries()
        host.sync()
        if self.refs.commit_pending():
            host.sync()

    def _write_l1_entries(self) -> None:
        """The dirty L1 entries, one write per run of neighbouring entries."""
        indices = sorted(self.l1_dirty)
        self.l1_dirty.clear()
        start = prev = indices[0]
        for index in indices[1:] + [None]:
            if index is not None and index == prev + 1:
                prev = index
                continue
            self.host.pwrite(self.header.l1_table_offset + 8 * start, encode_u64(self.l1[start:prev + 1]))
            if index is not None:
                start = prev = index
