"""The qcow2 backend: address translation, reads, copy-on-write allocation, discard and zero writes.

Behaviour is QEMU 7.2's (block/qcow2.c, qcow2-cluster.c): guest discards free whole clusters only;
v3 turns a discarded allocated cluster (or any cluster over a backing file) into a zero cluster, v2
clears the entry and ignores discards when it has a backing file; write-zeroes sets the zero flag
and frees the cluster only with MAY_UNMAP; freed host ranges are punched only when discards are
passed down (pass-discard-request follows the drive's discard=unmap).

Metadata is written back at flush (or cache eviction) in crash-safe order: refcount increments,
then L2 tables, then L1 entries, then refcount decrements; see refcount.py.
"""

from __future__ import annotations

import os
import zlib
from array import array

from emu.errors import BlockError, CorruptImage, ImageError, InvalidImage, UsageError
from emu.units import human_size
from emu.trace import Act, NULL_TRACE, Trace
from emu.block.backend import BlockLimits, BlockStatus, Status
from images.backend import ImageBackend, zeros
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.header import Qcow2Header
from images.qcow2.refcount import Refcounts
from images.qcow2.snapshot import Snapshot, read_snapshots, table_length
from images.qcow2.tables import TableCache, decode_u64, encode_u64

MAGIC = L.MAGIC
_L1_OFFSET = L.L1E_OFFSET_MASK
_L2_OFFSET = L.L2E_OFFSET_MASK
_SPECIAL = L.OFLAG_COMPRESSED | L.OFLAG_ZERO
DEFAULT_L2_CACHE_BYTES = 1 << 20
DEFAULT_REFCOUNT_CACHE_BYTES = 256 << 10

# Cluster types (qcow2_get_cluster_type)
UNALLOCATED, ZERO_PLAIN, ZERO_ALLOC, NORMAL, COMPRESSED = range(5)
_TYPE_NAMES = ("unallocated", "zero", "zero (allocated)", "data", "compressed")

# Why a cluster is freed (enum qcow2_discard_type) and whether that frees host space by default.
DISCARD_REQUEST, DISCARD_OTHER, DISCARD_ALWAYS = "request", "other", "always"


class Qcow2Image(ImageBackend):
    format_name = "qcow2"
    supports_backing = True
    supports_discard = True
    supports_write_zeroes = True

    def __init__(self, host: HostFile, header: Qcow2Header, *, read_only: bool,
                 l2_cache_bytes: int = DEFAULT_L2_CACHE_BYTES,
                 refcount_cache_bytes: int = DEFAULT_REFCOUNT_CACHE_BYTES) -> None:
        super().__init__(host, header.size, read_only=read_only)
        self.header = header
        cb = header.cluster_bits
        self.cluster_bits = cb
        self.cluster_size = cs = 1 << cb
        self._cmask = cs - 1
        self.l2_bits = cb - 3
        self.l2_entries = 1 << self.l2_bits
        self.l2_mask = self.l2_entries - 1
        self._l1_shift = cb + self.l2_bits
        self.version = header.version
        self.csize_shift = 62 - (cb - 8)
        self.csize_mask = (1 << (cb - 8)) - 1
        self.coffset_mask = (1 << self.csize_shift) - 1
        self.l1 = decode_u64(host.pread(header.l1_table_offset, header.l1_size * 8))
        self.l1_dirty: set[int] = set()
        self.l2_cache = TableCache(max(2, l2_cache_bytes // cs), self._load_l2, self._store_l2,
                                   self._before_l2_store)
        self._last_l2_offset = -1
        self._last_l2: array | None = None
        self.refs = Refcounts(host, cb, header.refcount_order, header.refcount_table_offset,
                              header.refcount_table_clusters, max(2, refcount_cache_bytes // cs),
                              self._write_header_reftable, self.write_metadata, self._check_overlap)
        self._meta: tuple[set[int], set[int]] | None = None   # see metadata_clusters (overlap check)
        self.backing_name = header.backing_file
        self.backing_format = header.backing_format
        self.lazy_refcounts = bool(header.compatible_features & L.COMPAT_LAZY_REFCOUNTS)
        self.snapshots: list[Snapshot] = read_snapshots(host, header.snapshots_offset, header.nb_snapshots, cs)
        self._compressed_cache: tuple[int, bytes] | None = None
        self._broken = False
        self._prealloc_detected: bool | None = None
        self.limits = BlockLimits(discard_alignment=cs, zero_alignment=cs)

    # -- header updates ----------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self.header.incompatible_features & L.INCOMPAT_DIRTY)

    @property
    def corrupt(self) -> bool:
        return bool(self.header.incompatible_features & L.INCOMPAT_CORRUPT)

    def _write_features(self) -> None:
        """Rewrite the incompatible/compatible/autoclear words (v3 only) and make them durable."""
        h = self.header
        self.host.pwrite(72, h.incompatible_features.to_bytes(8, "big") + h.compatible_features.to_bytes(8, "big")
                         + h.autoclear_features.to_bytes(8, "big"))
        self.host.sync()

    def _write_header_reftable(self, offset: int, clusters: int) -> None:
        self._meta = None   # the refcount table moved
        self.header.refcount_table_offset = offset
        self.header.refcount_table_clusters = clusters
        self.host.pwrite(48, offset.to_bytes(8, "big") + clusters.to_bytes(4, "big"))

    def _mark_dirty(self) -> None:
        """Lazy refcounts: the dirty bit goes to disk before the first metadata change."""
        if self.lazy_refcounts and not self.dirty:
            self.header.incompatible_features |= L.INCOMPAT_DIRTY
            self._write_features()

    def _mark_clean(self, *, consistent: bool = False) -> None:
        """Clear the dirty bit (and, after a successful repair, the corrupt bit) on disk."""
        clear = L.INCOMPAT_DIRTY | (L.INCOMPAT_CORRUPT if consistent else 0)
        if self.header.incompatible_features & clear:
            self.header.incompatible_features &= ~clear
            self._write_features()

    # -- tables ------------------------------------------------------------------------------------
    def _load_l2(self, offset: int) -> array:
        if offset & self._cmask:
            raise CorruptImage(f"L2 table offset {offset:#x} is not cluster aligned", field="l1_table",
                               path=self.path)
        if offset + self.cluster_size > self.host.size():
            raise CorruptImage(f"L2 table at {offset:#x} lies past the end of the file", field="l1_table",
                               path=self.path)
        return decode_u64(self.host.pread(offset, self.cluster_size))

    def _store_l2(self, offset: int, table: array) -> None:
        self.host.pwrite(offset, encode_u64(table))

    def _before_l2_store(self) -> None:
        """An L2 table may only reach the disk after the data and the refcounts of what it references
        (including refcount blocks that an eviction wrote earlier without a barrier)."""
        self.refs.write_dirty()
        self.host.sync()

    def _l2(self, offset: int) -> array:
        if offset == self._last_l2_offset:
            return self._last_l2  # type: ignore[return-value]
        table = self.l2_cache.get(offset)
        self._last_l2_offset, self._last_l2 = offset, table
        return table

    def l2_offset(self, l1_index: int) -> int:
        if l1_index >= len(self.l1):
            return 0
        return self.l1[l1_index] & L.L1E_OFFSET_MASK

    def _l2_for_write(self, l1_index: int, trace: Trace) -> array:
        """The L2 table for l1_index, allocated or copied (if shared with a snapshot) as needed."""
        entry = self.l1[l1_index]
        offset = entry & L.L1E_OFFSET_MASK
        if offset and entry & L.OFLAG_COPIED:
            return self._l2(offset)
        self._mark_dirty()
        new_offset = self.refs.alloc(1)
        if offset:
            table = array("Q", self._l2(offset))
            self._free_host(offset, self.cluster_size, DISCARD_OTHER, None)
            trace.add(self.format_name, Act.COW, l1_index << self._l1_shift, 1 << self._l1_shift,
                      f"L2 table shared with a snapshot copied to {new_offset:#x}")
        else:
            table = array("Q", bytes(self.cluster_size))
            trace.add(self.format_name, Act.ALLOCATED, l1_index << self._l1_shift, 1 << self._l1_shift,
                      f"new L2 table at host {new_offset:#x}", self.cluster_size)
        self.l2_cache.put_new(new_offset, table)
        self._last_l2_offset, self._last_l2 = new_offset, table
        self.l1[l1_index] = new_offset | L.OFLAG_COPIED
        self.l1_dirty.add(l1_index)
        if self._meta is not None:
            self._meta[1].add(new_offset >> self.cluster_bits)
        return table

    # -- metadata overlap check (qcow2_pre_write_overlap_check) ------------------------------------
    def metadata_clusters(self) -> tuple[set[int], set[int]]:
        """Host clusters holding metadata, as (fixed, L2 tables): the header, L1 table, refcount table
        and snapshot tables never move while the image is open (but for the refcount table growing),
        L2 tables come and go. Refcount blocks are in refs.block_clusters."""
        if self._meta is None:
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
            l2 = {(e & _L1_OFFSET) >> cb for e in self.l1 if e & _L1_OFFSET}
            self._meta = (fixed, l2)
        return self._meta

    def _check_overlap(self, first: int, count: int) -> None:
        """Refuse to write data or new metadata over existing metadata: refcounts and L2 entries can
        lie in a damaged image. Like qemu, the image is then marked corrupt."""
        fixed, l2 = self.metadata_clusters()
        blocks = self.refs.block_clusters
        for ci in range(first, first + count):
            if ci in fixed or ci in l2 or ci in blocks:
                self._signal_corruption(f"a write to host cluster {ci} would overwrite metadata")

    def _signal_corruption(self, what: str) -> None:
        """As qemu's qcow2_signal_corruption: mark the image corrupt and stop writing to it."""
        self._broken = True
        if self.version >= 3 and not self.corrupt:
            self.header.incompatible_features |= L.INCOMPAT_CORRUPT
            self._write_features()
        raise CorruptImage(f"{what}; the image is now marked corrupt (emu img check -r all repairs it)",
                           field="refcount", path=self.path)

    def check_writable(self) -> None:
        if self._broken:
            raise CorruptImage("the image was found corrupt; no more writes", path=self.path)
        super().check_writable()

    def cluster_type(self, entry: int) -> int:
        if entry & L.OFLAG_COMPRESSED:
            return COMPRESSED
        if entry & L.OFLAG_ZERO:
            return ZERO_ALLOC if entry & L.L2E_OFFSET_MASK else ZERO_PLAIN
        if entry & L.L2E_OFFSET_MASK:
            return NORMAL
        return UNALLOCATED

    def l2_entry(self, cluster_index: int) -> int:
        offset = self.l2_offset(cluster_index >> self.l2_bits)
        if not offset:
            return 0
        return self._l2(offset)[cluster_index & self.l2_mask]

    def _host_of(self, entry: int, guest_offset: int) -> int:
        host = entry & L.L2E_OFFSET_MASK
        if host & self._cmask:
            raise CorruptImage(f"data cluster offset {host:#x} for guest offset {guest_offset:#x} is not "
                               "cluster aligned", field="l2_table", path=self.path)
        return host

    # -- reads -------------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        in_cluster = offset & self._cmask
        if in_cluster + length <= self.cluster_size:   # fast paths: one cluster of data, or of zeros
            l1_index = offset >> self._l1_shift
            l2 = self.l1[l1_index] & _L1_OFFSET if l1_index < len(self.l1) else 0
            if l2:
                table = self._last_l2 if l2 == self._last_l2_offset else self._l2(l2)
                entry = table[(offset >> self.cluster_bits) & self.l2_mask]
            else:
                entry = 0
            if entry & _L2_OFFSET and not entry & (_SPECIAL | self._cmask):
                data = os.pread(self.host.fd, length, (entry & _L2_OFFSET) + in_cluster)
                return data if len(data) == length else data + zeros(length - len(data))
            if entry & L.OFLAG_ZERO and not entry & L.OFLAG_COMPRESSED or not entry and self.backing is None:
                return zeros(length)
            if not entry:
                return self.read_backing(offset, length)
        return b"".join(self._read_runs(offset, length))

    def _read_runs(self, offset: int, length: int):
        cs, cb = self.cluster_size, self.cluster_bits
        end = offset + length
        while offset < end:
            ci = offset >> cb
            in_cluster = offset & self._cmask
            entry = self.l2_entry(ci)
            kind = self.cluster_type(entry)
            if kind == COMPRESSED:
                chunk = min(cs - in_cluster, end - offset)
                data = self._decompress(entry, offset)
                yield data[in_cluster:in_cluster + chunk]
                offset += chunk
                continue
            # extend over following clusters of the same kind (and contiguous host offsets)
            run_end = min(end, (ci + 1) << cb)
            host = self._host_of(entry, offset) if kind == NORMAL else 0
            next_ci = ci + 1
            while run_end < end:
                nxt = self.l2_entry(next_ci)
                if self.cluster_type(nxt) != kind or (kind == NORMAL and
                                                      nxt & L.L2E_OFFSET_MASK != host + ((next_ci - ci) << cb)):
                    break
                next_ci += 1
                run_end = min(end, next_ci << cb)
            n = run_end - offset
            if kind == NORMAL:
                yield self.host.pread(host + in_cluster, n)
            elif kind == UNALLOCATED:
                yield self.read_backing(offset, n)
            else:
                yield zeros(n)
            offset = run_end

    def _decompress(self, entry: int, guest_offset: int) -> bytes:
        cached = self._compressed_cache
        if cached is not None and cached[0] == entry:
            return cached[1]
        coffset = entry & self.coffset_mask
        nb_sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        csize = nb_sectors * L.COMPRESSED_SECTOR - (coffset & (L.COMPRESSED_SECTOR - 1))
        raw = self.host.pread(coffset, csize)
        try:
            data = zlib.decompressobj(-12).decompress(raw, self.cluster_size)
        except zlib.error as exc:
            raise BlockError(5, f"{self.path}: compressed cluster at guest {guest_offset:#x} is corrupt: "
                                f"{exc}") from None
        if len(data) != self.cluster_size:
            raise BlockError(5, f"{self.path}: compressed cluster at guest {guest_offset:#x} inflates to "
                                f"{len(data)} bytes, not {self.cluster_size}")
        self._compressed_cache = (entry, data)
        return data

    def _cluster_content(self, entry: int, guest_cluster_offset: int) -> bytes:
        """What a whole cluster reads as now (for copy-on-write of a partial write)."""
        kind = self.cluster_type(entry)
        if kind == NORMAL:
            return self.host.pread(self._host_of(entry, guest_cluster_offset), self.cluster_size)
        if kind == COMPRESSED:
            return self._decompress(entry, guest_cluster_offset)
        if kind == UNALLOCATED:
            return self.read_backing(guest_cluster_offset, self.cluster_size)
        return bytes(self.cluster_size)

    # -- writes ------------------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        cs, cb = self.cluster_size, self.cluster_bits
        in_cluster = offset & self._cmask
        length = len(data)
        if in_cluster + length <= cs:  # fast path: overwrite inside one allocated, unshared cluster
            l1_index = offset >> self._l1_shift
            l1e = self.l1[l1_index]
            if l1e & L.OFLAG_COPIED:
                entry = self._l2(l1e & L.L1E_OFFSET_MASK)[(offset >> cb) & self.l2_mask]
                host = entry & L.L2E_OFFSET_MASK
                if host and entry & L.OFLAG_COPIED and not entry & (L.OFLAG_ZERO | L.OFLAG_COMPRESSED | self._cmask):
                    fixed, l2 = self._meta or self.metadata_clusters()
                    host_ci = host >> cb
                    if host_ci in fixed or host_ci in l2 or host_ci in self.refs.block_clusters:
                        self._check_overlap(host_ci, 1)
                    self.host.pwrite(host + in_cluster, data)
                    trace.add(self.format_name, Act.WRITTEN, offset, length,
                              f"in place at host {host + in_cluster:#x}")
                    return
        view = memoryview(data)
        pos = 0
        while pos < length:
            pos += self._write_in_table(offset + pos, view[pos:], trace)

    def _write_in_table(self, offset: int, data: memoryview, trace: Trace) -> int:
        """Write as much of data as falls in one L2 table; returns the bytes consumed."""
        cs, cb = self.cluster_size, self.cluster_bits
        ci = offset >> cb
        table = self._l2_for_write(ci >> self.l2_bits, trace)
        index = ci & self.l2_mask
        in_cluster = offset & self._cmask
        limit = min(len(data), ((self.l2_entries - index) << cb) - in_cluster)
        entry = table[index]
        kind = self.cluster_type(entry)
        if entry & L.OFLAG_COPIED and kind in (NORMAL, ZERO_ALLOC):
            # in place; a zero-allocated cluster must read zeros around the new data
            host = self._host_of(entry, offset)
            self._check_overlap(host >> cb, 1)
            n = min(limit, cs - in_cluster)
            if kind == ZERO_ALLOC:
                buf = bytearray(cs)
                buf[in_cluster:in_cluster + n] = data[:n]
                self.host.pwrite(host, buf)
                self._mark_dirty()
                table[index] = entry & ~L.OFLAG_ZERO
                self.l2_cache.mark_dirty(self._table_offset(ci), table)
            else:
                self.host.pwrite(host + in_cluster, data[:n])
            trace.add(self.format_name, Act.WRITTEN, offset, n, f"in place at host {host + in_cluster:#x}")
            return n
        # allocate a run of clusters that all need a new host cluster
        count = 1
        covered = cs - in_cluster
        while covered < limit:
            nxt = table[index + count]
            if nxt & L.OFLAG_COPIED and self.cluster_type(nxt) in (NORMAL, ZERO_ALLOC):
                break
            count += 1
            covered += cs
        n = min(limit, covered)
        self._mark_dirty()
        new_host = self.refs.alloc(count)
        head_end = in_cluster + n
        if not in_cluster and head_end == count * cs:
            self.host.pwrite(new_host, data[:n])     # whole clusters: nothing to copy
        elif self._cow_reads_zero(table, index, count, ci, in_cluster, head_end):
            # as qemu's handle_alloc_space: zero the new clusters efficiently, then write only the data
            self.host.zero_range(new_host, count * cs)
            self.host.pwrite(new_host + in_cluster, data[:n])
        else:
            buf = bytearray(count * cs)
            if in_cluster:
                buf[:cs] = self._cluster_content(entry, ci << cb)
            if head_end < count * cs and (count > 1 or not in_cluster):
                buf[(count - 1) * cs:] = self._cluster_content(table[index + count - 1], (ci + count - 1) << cb)
            buf[in_cluster:head_end] = data[:n]
            self.host.pwrite(new_host, buf)
        table_offset = self._table_offset(ci)
        for k in range(count):
            old = table[index + k]
            table[index + k] = (new_host + k * cs) | L.OFLAG_COPIED
            self._free_entry(old, DISCARD_OTHER, None)
        self.l2_cache.mark_dirty(table_offset, table)
        why = {UNALLOCATED: "backing data copied" if self.backing else "zero filled",
               COMPRESSED: "decompressed", NORMAL: "shared cluster copied"}.get(kind, "zero filled")
        trace.add(self.format_name, Act.ALLOCATED, (ci << cb), count * cs,
                  f"{count} cluster(s) at host {new_host:#x}" + (f"; {why}" if n < count * cs else ""),
                  count * cs)
        return n

    def _cow_reads_zero(self, table: array, index: int, count: int, ci: int, head: int, end: int) -> bool:
        """Do the parts of the new clusters the write does not cover read as zeros now?"""
        cs, cb = self.cluster_size, self.cluster_bits
        regions = []
        if head:
            regions.append((table[index], ci << cb, head))
        if end < count * cs:
            regions.append((table[index + count - 1], (ci << cb) + end, count * cs - end))
        for entry, offset, length in regions:
            kind = self.cluster_type(entry)
            if kind in (ZERO_PLAIN, ZERO_ALLOC):
                continue
            if kind != UNALLOCATED or (self.backing is not None and not self.reads_as_zero(offset, length)):
                return False
        return True

    def _table_offset(self, cluster_index: int) -> int:
        return self.l1[cluster_index >> self.l2_bits] & L.L1E_OFFSET_MASK

    # -- freeing -----------------------------------------------------------------------------------
    def _passthrough(self, reason: str) -> bool:
        """qcow2 discard_passthrough[] defaults, gated by the node's discard option as the file layer is."""
        if reason == DISCARD_OTHER:
            return False
        return self.host_unmap

    def _free_entry(self, entry: int, reason: str, freed: list | None) -> None:
        kind = self.cluster_type(entry)
        if kind == COMPRESSED:
            coffset = entry & self.coffset_mask
            nb_sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
            csize = nb_sectors * L.COMPRESSED_SECTOR - (coffset & (L.COMPRESSED_SECTOR - 1))
            self._free_host(coffset, csize, reason, freed)
        elif kind in (NORMAL, ZERO_ALLOC):
            self._free_host(entry & L.L2E_OFFSET_MASK, self.cluster_size, reason, freed)

    def _free_host(self, host_offset: int, length: int, reason: str, freed: list | None) -> None:
        cb = self.cluster_bits
        first = host_offset >> cb
        last = (host_offset + length - 1) >> cb
        for ci in range(first, last + 1):
            if self.refs.decrement(ci):
                if self._meta is not None:
                    self._meta[1].discard(ci)   # an L2 table that is gone (fixed metadata stays)
                if self.l2_cache.cached(ci << cb) is not None:
                    self.l2_cache.drop(ci << cb)
                    if self._last_l2_offset == ci << cb:
                        self._last_l2_offset, self._last_l2 = -1, None
                if freed is not None:
                    freed.append(ci)
                elif self._passthrough(reason):
                    self.host.punch_hole(ci << cb, self.cluster_size)

    def _release(self, freed: list[int], reason: str, trace: Trace, offset: int, length: int) -> None:
        """Hand clusters whose refcount dropped to zero back to the host, merged into ranges."""
        if not freed:
            return
        cb, cs = self.cluster_bits, self.cluster_size
        punch = self._passthrough(reason) and self.host.can_punch
        released = 0
        freed.sort()
        start = prev = freed[0]
        for ci in freed[1:] + [None]:
            if ci is not None and ci == prev + 1:
                prev = ci
                continue
            if punch:
                released += self.host.punch_hole(start << cb, (prev - start + 1) << cb)
            if ci is not None:
                start = prev = ci
        trace.add(self.format_name, Act.FREED, offset, length,
                  f"{len(freed)} cluster(s), refcount now 0", len(freed) * cs)
        if punch:
            trace.add("file", Act.PUNCHED, freed[0] << cb, (freed[-1] - freed[0] + 1) << cb,
                      "pass-discard-request", released)
        else:
            why = "drive has discard=ignore" if reason == DISCARD_REQUEST and not self.host_unmap else \
                "host file cannot punch holes" if self.host_unmap else "not passed down"
            trace.add(self.format_name, Act.KEPT, offset, length,
                      f"host space kept ({why}); clusters are reused by later writes")

    # -- discard and write-zeroes ------------------------------------------------------------------
    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        if self.version < 3 and self.backing is not None:
            trace.add(self.format_name, Act.IGNORED, offset, length,
                      "v2 image with a backing file: no zero flag, discard would expose backing data")
            return
        if (offset | length) & self._cmask:
            if offset & self._cmask or offset + length != self.virtual_size:
                trace.add(self.format_name, Act.IGNORED, offset, length,
                          f"partial cluster (cluster size {self.cluster_size})")
                return
        self._discard_clusters(offset, length, full=False, reason=DISCARD_REQUEST, trace=trace)

    def _discard_clusters(self, offset: int, length: int, *, full: bool, reason: str,
                          trace: Trace) -> None:
        """qcow2_cluster_discard: zero clusters (v3), or clear entries (v2, or full to show the backing)."""
        zero_entry = L.OFLAG_ZERO if self.version >= 3 and not full else 0

        def discarded(old: int, kind: int) -> tuple[int, bool]:
            if full or self.backing is not None or kind in (NORMAL, ZERO_ALLOC, COMPRESSED):
                return zero_entry, True
            return old, False

        freed: list[int] = []
        changed = self._rewrite_entries(offset, length, discarded, reason, freed, trace)
        if changed:
            detail = "zero flag set" if zero_entry else "entries cleared"
            trace.add(self.format_name, Act.ZEROED if zero_entry else Act.UNMAPPED, offset, length,
                      f"{changed} cluster(s): {detail}")
        else:
            trace.add(self.format_name, Act.IGNORED, offset, length, "already unallocated")
        self._release(freed, reason, trace, offset, length)

    def _rewrite_entries(self, offset: int, length: int, rule, reason: str, freed: list[int],
                         trace: Trace) -> int:
        """Apply rule(old_entry, kind) -> (new_entry, drop_old) to the L2 entries of the clusters in the
        range, freeing dropped clusters. Returns how many entries changed."""
        self._mark_dirty()
        cb = self.cluster_bits
        ci, end = offset >> cb, (offset + length + self._cmask) >> cb
        changed = 0
        while ci < end:
            table = self._l2_for_write(ci >> self.l2_bits, trace)
            index = ci & self.l2_mask
            stop = min(end, (ci | self.l2_mask) + 1)
            dirty = False
            for k in range(index, index + stop - ci):
                old = table[k]
                new, drop = rule(old, self.cluster_type(old))
                if new == old:
                    continue
                table[k] = new
                dirty = True
                changed += 1
                if drop:
                    self._free_entry(old, reason, freed)
            if dirty:
                self.l2_cache.mark_dirty(self._table_offset(ci), table)
            ci = stop
        return changed

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        self.check_writable()
        cs = self.cluster_size
        head = offset & self._cmask
        tail = -(offset + length) & self._cmask
        if offset + length == self.virtual_size:
            tail = 0
        if head or tail:
            # qcow2_co_pwrite_zeroes: an unaligned piece is fine if the rest of its cluster already
            # reads as zeros and the cluster is unallocated or a zero cluster; then zero it whole.
            start = offset - head
            if not (self.reads_as_zero(start, head) and self.reads_as_zero(offset + length, tail)):
                return False
            if self.cluster_type(self.l2_entry(start >> self.cluster_bits)) not in (UNALLOCATED, ZERO_PLAIN,
                                                                                    ZERO_ALLOC):
                return False
            offset, length = start, min(cs, self.virtual_size - start)
        if self.version < 3:
            if self.backing is not None:
                return False
            self._discard_clusters(offset, length, full=False, reason=DISCARD_REQUEST, trace=trace)
            return True

        def zeroed(old: int, kind: int) -> tuple[int, bool]:
            unmap = kind == COMPRESSED or (may_unmap and kind in (NORMAL, ZERO_ALLOC))
            return (0 if unmap else old) | L.OFLAG_ZERO, unmap

        freed: list[int] = []
        changed = self._rewrite_entries(offset, length, zeroed, DISCARD_REQUEST, freed, trace)
        trace.add(self.format_name, Act.ZEROED, offset, length,
                  f"{changed} cluster(s): zero flag set" + (" (MAY_UNMAP)" if may_unmap else
                                                               ", clusters kept allocated"))
        self._release(freed, DISCARD_REQUEST, trace, offset, length)
        return True

    def reads_as_zero(self, offset: int, length: int) -> bool:
        """True if the range reads as zeros through the whole chain, by block status (qcow2 is_zero)."""
        length = min(length, self.virtual_size - offset)
        while length > 0:
            status, _depth = self.status_above(offset, length)
            if not status.flags & Status.ZERO:
                return False
            offset += status.length
            length -= status.length
        return True

    # -- block status ------------------------------------------------------------------------------
    def _block_status(self, offset: int, length: int) -> BlockStatus:
        cb = self.cluster_bits
        end = offset + length
        ci = offset >> cb
        l1_index = ci >> self.l2_bits
        if not self.l2_offset(l1_index):
            l1, shift, mask = self.l1, self._l1_shift, L.L1E_OFFSET_MASK
            last = l1_index + 1
            stop = min(len(l1), -(-end >> shift))
            while last < stop and not l1[last] & mask:
                last += 1
            return BlockStatus(Status.NONE, min(end, last << shift) - offset)
        table = self._l2(self.l2_offset(l1_index))
        entry = table[ci & self.l2_mask]
        kind = self.cluster_type(entry)
        host = self._host_of(entry, offset) if kind in (NORMAL, ZERO_ALLOC) else 0
        stop = ci + 1
        if kind != COMPRESSED:
            table_end = (l1_index + 1) << self.l2_bits
            while stop < table_end and (stop << cb) < end:
                nxt = table[stop & self.l2_mask]
                if self.cluster_type(nxt) != kind:
                    break
                if host and nxt & L.L2E_OFFSET_MASK != host + ((stop - ci) << cb):
                    break
                stop += 1
        run = min(end, stop << cb) - offset
        flags = Status.NONE
        in_cluster = offset & self._cmask
        if kind in (NORMAL, ZERO_ALLOC):
            flags |= Status.OFFSET_VALID
        if kind in (ZERO_PLAIN, ZERO_ALLOC):
            flags |= Status.ZERO
        elif kind in (NORMAL, COMPRESSED):
            flags |= Status.DATA
        if kind == NORMAL and self._metadata_preallocated():
            flags |= Status.RECURSE
        return BlockStatus(flags, run, host + in_cluster if host else 0)

    def _metadata_preallocated(self) -> bool:
        """qcow2_detect_metadata_preallocation: far more clusters referenced than the host allocated."""
        if self._prealloc_detected is None:
            real = self.host.allocated_bytes() // self.cluster_size
            threshold = max(real * 10 // 9, real + 2)
            count = 0
            end = -(-self.host.size() // self.cluster_size)
            ci = 0
            while ci < end and count < threshold:
                count += self.refs.get(ci) != 0
                ci += 1
            self._prealloc_detected = count >= threshold
        return self._prealloc_detected

    # -- flush and close ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.read_only or self._broken:
            return
        self.write_metadata()

    def write_metadata(self) -> None:
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

    def close(self) -> None:
        if self.host.fd >= 0 and not self.read_only and not self._broken:
            self.write_metadata()
            self._mark_clean()
        super().close()

    # -- information -------------------------------------------------------------------------------
    def reclaim(self) -> dict[str, str]:
        cs = human_size(self.cluster_size)
        if self.version < 3 and self.backing is not None:
            discard = "ignored: a v2 image has no zero flag, and clearing entries would expose the backing file"
        elif self.version < 3:
            discard = f"whole {cs} clusters are unallocated; partial clusters ignored"
        else:
            discard = (f"whole {cs} clusters become zero clusters (unallocated without a backing file); "
                       "partial clusters ignored")
        return {"discard": discard + "; freed host clusters are punched with discard=unmap and reused later",
                "write-zeroes": (f"whole {cs} clusters get the zero flag; MAY_UNMAP also frees them"
                                 if self.version >= 3 else "as a discard without a backing file; zero data "
                                 "with one"),
                "offline": "emu img compact rewrites the image without zero clusters (qemu-img convert -S 4k)"}

    def info_fields(self) -> dict:
        data: dict = {"compat": "1.1" if self.version >= 3 else "0.10", "compression-type": "zlib"}
        if self.version >= 3:
            data["lazy-refcounts"] = self.lazy_refcounts
        data["refcount-bits"] = self.refs.codec.bits
        if self.version >= 3:
            data["corrupt"] = self.corrupt
            data["extended-l2"] = False
        fields: dict = {"cluster-size": self.cluster_size}
        if self.snapshots:
            fields["snapshots"] = [s.to_json() for s in self.snapshots]
        fields["format-specific"] = {"type": "qcow2", "data": data}
        fields["dirty-flag"] = self.dirty
        return fields

    def check(self, repair: str | None = None):
        from images.qcow2.check import check_image
        return check_image(self, repair)

    # -- relinking and emptying (qemu-img rebase -u, commit) ---------------------------------------
    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """qcow2_change_backing_file: the name (at most 1023 bytes, in cluster 0) and the backing-format
        extension. Cluster 0 is rebuilt as qemu's qcow2_update_header lays it out; only the sectors
        that differ are written, in one write (the header, extensions and name share the first few
        sectors), then flushed: a crash leaves the old header or the new one."""
        self._check_relink(parent, name, fmt)
        if parent is not None:
            fmt = fmt or parent.format_name
        if name is not None and len(name.encode("utf-8")) > L.MAX_BACKING_NAME:
            raise UsageError(f"{self.path}: backing file name of {len(name.encode('utf-8'))} bytes is too long "
                             f"(qcow2 stores at most {L.MAX_BACKING_NAME} bytes)")
        if fmt is not None and len(fmt) > L.MAX_BACKING_FORMAT:
            raise UsageError(f"{self.path}: backing format name '{fmt}' is too long (at most "
                             f"{L.MAX_BACKING_FORMAT} bytes)")
        h = self.header
        old = (h.backing_file, h.backing_format)
        h.backing_file, h.backing_format = name, fmt
        try:
            new = h.build().ljust(self.cluster_size, b"\0")
        except InvalidImage:
            h.backing_file, h.backing_format = old
            raise UsageError(f"{self.path}: backing file name '{name}' does not fit in the "
                             f"{self.cluster_size}-byte header cluster with the header and its extensions") from None
        current = self.host.pread(0, self.cluster_size)
        changed = [i for i in range(0, self.cluster_size, 512) if new[i:i + 512] != current[i:i + 512]]
        if changed:
            start, end = changed[0], changed[-1] + 512
            self.host.pwrite(start, new[start:end])
            self.host.sync()
        self.backing = parent
        self.backing_name, self.backing_format = name, fmt

    def creation_options(self) -> dict[str, str]:
        """compat, cluster_size, lazy_refcounts, refcount_bits (emu creates neither extended L2 entries
        nor other compression types, so those stay at their defaults)."""
        return {"compat": "1.1" if self.version >= 3 else "0.10", "cluster_size": str(self.cluster_size),
                "lazy_refcounts": "on" if self.lazy_refcounts else "off",
                "refcount_bits": str(self.refs.codec.bits)}

    def make_empty(self) -> None:
        """qcow2_make_empty's discard of every cluster (qcow2_cluster_discard with full_discard, type
        QCOW2_DISCARD_SNAPSHOT): every L2 entry becomes 0, so the whole disk reads from the backing
        file again, data clusters are freed (shared ones keep their snapshot references) and punched.
        L2 tables are kept; ranges without an L2 table are already empty and are skipped (qemu would
        allocate tables there). The new tables and the refcount decrements are durable before any
        hole is punched, so a crash leaves the old mapping or the empty one, at worst with leaks.
        (For a v3 image without snapshots qemu takes a shortcut, make_completely_empty, that rebuilds
        the refcount structures and truncates the file; the guest view, `qemu-img map` and a clean
        `qemu-img check` are the same.)"""
        self.check_writable()
        freed: list[int] = []
        shift = self._l1_shift
        l1_count = min(len(self.l1), -(-self.virtual_size >> shift))
        index = 0
        while index < l1_count:
            l2 = self.l1[index] & L.L1E_OFFSET_MASK
            if not l2 or not any(self._l2(l2)):
                index += 1
                continue
            offset = index << shift
            length = min(self.virtual_size, (index + 1) << shift) - offset
            self._rewrite_entries(offset, length, lambda old, kind: (0, True), DISCARD_ALWAYS, freed, NULL_TRACE)
            index += 1
        self.write_metadata()
        self._release(freed, DISCARD_ALWAYS, NULL_TRACE, 0, self.virtual_size)


def open_qcow2(host: HostFile, *, read_only: bool, check_mode: bool = False,
               **cache_options: int) -> Qcow2Image:
    head = host.pread_exact(0, L.V3_HEADER_LENGTH)
    if len(head) >= 24:
        bits = int.from_bytes(head[20:24], "big")
        if head[:4] == MAGIC and L.MIN_CLUSTER_BITS <= bits <= L.MAX_CLUSTER_BITS:
            head = host.pread_exact(0, 1 << bits)
    header = Qcow2Header.parse(head, host.size())
    if header.incompatible_features & L.INCOMPAT_CORRUPT and not read_only and not check_mode:
        raise ImageError("image is marked corrupt; it can only be opened read-only (qemu-img check -r all "
                         "repairs it)", field="incompatible_features")
    image = Qcow2Image(host, header, read_only=read_only, **cache_options)
    if not read_only:
        _prepare_for_writing(image, repair_dirty=not check_mode)
    return image


def _prepare_for_writing(image: Qcow2Image, *, repair_dirty: bool) -> None:
    """What qemu does on a read-write open: repair a dirty image, clear autoclear bits we don't keep."""
    h = image.header
    if h.version >= 3 and h.autoclear_features:
        # We do not maintain persistent bitmaps: clearing the bit tells qemu they are stale.
        h.autoclear_features = 0
        h.bitmaps_extension = None
        image.host.pwrite(0, h.build())
        image.host.sync()
    if image.dirty and repair_dirty:
        from images.qcow2.check import check_image
        check_image(image, "all")
        image._mark_clean()
