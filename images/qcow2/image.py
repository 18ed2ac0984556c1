"""The qcow2 backend: reads, copy-on-write allocation, discard, zero writes, block status, relinking.

Behaviour is QEMU 7.2's (block/qcow2.c, qcow2-cluster.c): guest discards free whole clusters only;
v3 turns a discarded allocated cluster (or any cluster over a backing file) into a zero cluster, v2
clears the entry and ignores discards when it has a backing file; write-zeroes sets the zero flag
and frees the cluster only with MAY_UNMAP; freed host ranges are punched only when discards are
passed down (pass-discard-request follows the drive's discard=unmap).

The tables and their crash-safe write-back are metadata.py's, the decoding of L2 entries is
mapping.py's; this module decides what each request does with them.
"""

from __future__ import annotations

import errno
import zlib
from array import array

from emu.block.backend import BlockLimits, BlockStatus, Status
from emu.errors import BlockError, CorruptImage, ImageError, UsageError
from emu.trace import NULL_TRACE, Act, Trace
from emu.units import human_size
from images.backend import ImageBackend, zeros
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.check import check_image
from images.qcow2.header import Qcow2Header
from images.qcow2.mapping import COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, ZERO_PLAIN
from images.qcow2.metadata import DEFAULT_L2_CACHE_BYTES, DEFAULT_REFCOUNT_CACHE_BYTES, Metadata
from images.qcow2.snapshot import Snapshot

_L1_OFFSET = L.L1E_OFFSET_MASK
_L2_OFFSET = L.L2E_OFFSET_MASK
_SPECIAL = L.OFLAG_COMPRESSED | L.OFLAG_ZERO

# Why clusters are freed (qemu's enum qcow2_discard_type), for the trace: a guest request, or emptying
# the image. Both are passed down to the host file when the node allows it. Clusters freed by
# copy-on-write (QCOW2_DISCARD_OTHER, not passed down by default) are never punched: they are reused.
DISCARD_REQUEST, DISCARD_ALWAYS = "request", "always"


class Qcow2Image(ImageBackend):
    """One open qcow2 image as a block backend; its tables are `meta`'s, their decoding `clusters`'."""

    format_name = L.FORMAT_NAME
    supports_backing = True
    supports_discard = True
    supports_write_zeroes = True

    def __init__(self, host: HostFile, header: Qcow2Header, *, read_only: bool,
                 l2_cache_bytes: int = DEFAULT_L2_CACHE_BYTES,
                 refcount_cache_bytes: int = DEFAULT_REFCOUNT_CACHE_BYTES) -> None:
        super().__init__(host, header.size, read_only=read_only)
        self.meta = meta = Metadata(host, header, l2_cache_bytes=l2_cache_bytes,
                                    refcount_cache_bytes=refcount_cache_bytes)
        self.clusters = meta.clusters
        # the geometry, copied for the per-request paths
        self.cluster_bits = meta.cluster_bits
        self.cluster_size = cs = meta.cluster_size
        self._cmask = cs - 1
        self.l2_bits = meta.l2_bits
        self.l2_entries = meta.l2_entries
        self.l2_mask = meta.l2_mask
        self._l1_shift = meta.l1_shift
        self.version = header.version
        self.backing_name = header.backing_file
        self.backing_format = header.backing_format
        self._compressed_cache: tuple[tuple[int, int], bytes] | None = None
        self._prealloc_detected: bool | None = None
        self.limits = BlockLimits(discard_alignment=cs, zero_alignment=cs)

    @property
    def dirty(self) -> bool:
        return self.meta.dirty

    @property
    def snapshots(self) -> list[Snapshot]:
        return self.meta.snapshots

    def check_writable(self) -> None:
        if self.meta.broken:
            raise CorruptImage("the image was found corrupt; no more writes", path=self.path)
        super().check_writable()

    # -- reads -------------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        in_cluster = offset & self._cmask
        if in_cluster + length <= self.cluster_size:
            # One cluster of data, or of zeros: ClusterMap.run's one-cluster case, inlined, since it
            # is the path of every small request.
            meta = self.meta
            l1 = meta.l1
            l1_index = offset >> self._l1_shift
            l2 = l1[l1_index] & _L1_OFFSET if l1_index < len(l1) else 0
            if l2:
                table = meta.last_l2 if l2 == meta.last_l2_offset else meta.l2_table(l2)
                entry = table[(offset >> self.cluster_bits) & self.l2_mask]
            else:
                entry = 0
            if entry & _L2_OFFSET and not entry & (_SPECIAL | self._cmask):   # aligned data cluster
                return self.host.pread((entry & _L2_OFFSET) + in_cluster, length)
            if entry & L.OFLAG_ZERO and not entry & L.OFLAG_COMPRESSED or not entry and self.backing is None:
                return zeros(length)
            if not entry:
                return self.read_backing(offset, length)
        return b"".join(self._read_runs(offset, length))

    def _read_runs(self, offset: int, length: int):
        meta, clusters, shift = self.meta, self.clusters, self._l1_shift
        end = offset + length
        while offset < end:
            l2 = meta.l2_offset(offset >> shift)
            if not l2:     # no L2 table: unallocated up to the next one
                n = min(end, ((offset >> shift) + 1) << shift) - offset
                yield self.read_backing(offset, n)
                offset += n
                continue
            kind, host, n, compressed_length = clusters.run(meta.l2_table(l2), offset, end)
            in_cluster = offset & self._cmask
            if kind == COMPRESSED:
                yield self._decompress(host, compressed_length, offset)[in_cluster:in_cluster + n]
            elif kind == NORMAL:
                yield self.host.pread(clusters.aligned(host, offset) + in_cluster, n)
            elif kind == UNALLOCATED:
                yield self.read_backing(offset, n)
            else:
                yield zeros(n)
            offset += n

    def _decompress(self, host_offset: int, host_length: int, guest_offset: int) -> bytes:
        """The cluster whose compressed data is at host_offset (raw deflate, qemu's zlib compression type)."""
        key = (host_offset, host_length)
        cached = self._compressed_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        raw = self.host.pread(host_offset, host_length)
        try:
            data = zlib.decompressobj(-12).decompress(raw, self.cluster_size)
        except zlib.error as exc:
            raise BlockError(errno.EIO, f"{self.path}: compressed cluster at guest {guest_offset:#x} is corrupt: "
                                f"{exc}") from None
        if len(data) != self.cluster_size:
            raise BlockError(errno.EIO, f"{self.path}: compressed cluster at guest {guest_offset:#x} inflates to "
                                f"{len(data)} bytes, not {self.cluster_size}")
        self._compressed_cache = (key, data)
        return data

    def _cluster_content(self, entry: int, guest_cluster_offset: int) -> bytes:
        """What a whole cluster reads as now (for copy-on-write of a partial write)."""
        clusters = self.clusters
        kind = clusters.kind(entry)
        if kind == NORMAL:
            return self.host.pread(clusters.host_cluster(entry, guest_cluster_offset), self.cluster_size)
        if kind == COMPRESSED:
            return self._decompress(*clusters.compressed_extent(entry), guest_cluster_offset)
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
            meta = self.meta
            l1e = meta.l1[offset >> self._l1_shift]
            if l1e & L.OFLAG_COPIED:
                entry = meta.l2_table(l1e & _L1_OFFSET)[(offset >> cb) & self.l2_mask]
                host = entry & _L2_OFFSET
                if host and entry & L.OFLAG_COPIED and not entry & (_SPECIAL | self._cmask):
                    fixed, l2 = meta.metadata_clusters()   # check_overlap, inlined but for the refusal
                    host_ci = host >> cb
                    if host_ci in fixed or host_ci in l2 or host_ci in meta.refs.block_clusters:
                        meta.check_overlap(host_ci, 1)
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
        meta, clusters = self.meta, self.clusters
        cs, cb = self.cluster_size, self.cluster_bits
        ci = offset >> cb
        table = meta.l2_for_write(ci >> self.l2_bits, trace)
        index = ci & self.l2_mask
        in_cluster = offset & self._cmask
        limit = min(len(data), ((self.l2_entries - index) << cb) - in_cluster)
        entry = table[index]
        kind = clusters.kind(entry)
        if entry & L.OFLAG_COPIED and kind in (NORMAL, ZERO_ALLOC):
            # in place; a zero-allocated cluster must read zeros around the new data
            host = clusters.host_cluster(entry, offset)
            meta.check_overlap(host >> cb, 1)
            n = min(limit, cs - in_cluster)
            if kind == ZERO_ALLOC:
                buf = bytearray(cs)
                buf[in_cluster:in_cluster + n] = data[:n]
                self.host.pwrite(host, buf)
                meta.mark_dirty()
                table[index] = entry & ~L.OFLAG_ZERO
                meta.l2_cache.mark_dirty(meta.l2_offset(ci >> self.l2_bits), table)
            else:
                self.host.pwrite(host + in_cluster, data[:n])
            trace.add(self.format_name, Act.WRITTEN, offset, n, f"in place at host {host + in_cluster:#x}")
            return n
        # allocate a run of clusters that all need a new host cluster
        count = 1
        covered = cs - in_cluster
        while covered < limit:
            nxt = table[index + count]
            if nxt & L.OFLAG_COPIED and clusters.kind(nxt) in (NORMAL, ZERO_ALLOC):
                break
            count += 1
            covered += cs
        n = min(limit, covered)
        meta.mark_dirty()
        new_host = meta.refs.alloc(count)
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
        table_offset = meta.l2_offset(ci >> self.l2_bits)
        for k in range(count):
            old = table[index + k]
            table[index + k] = (new_host + k * cs) | L.OFLAG_COPIED
            if old:
                self._free_entry(old, None)
        meta.l2_cache.mark_dirty(table_offset, table)
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
            kind = self.clusters.kind(entry)
            if kind in (ZERO_PLAIN, ZERO_ALLOC):
                continue
            if kind != UNALLOCATED or (self.backing is not None and not self.reads_as_zero(offset, length)):
                return False
        return True

    # -- freeing -----------------------------------------------------------------------------------
    def _free_entry(self, entry: int, freed: list[int] | None) -> None:
        """Drop the reference an L2 entry held (see Metadata.free)."""
        host, length = self.clusters.extent(entry)
        if length:
            self.meta.free(host, length, freed)

    def _release(self, freed: list[int], reason: str, trace: Trace, offset: int, length: int) -> None:
        """Hand clusters whose refcount dropped to zero back to the host, merged into ranges."""
        if not freed:
            return
        cb, cs = self.cluster_bits, self.cluster_size
        punch = self.host_unmap and self.host.can_punch
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
        changed = self._rewrite_entries(offset, length, discarded, freed, trace)
        if changed:
            detail = "zero flag set" if zero_entry else "entries cleared"
            trace.add(self.format_name, Act.ZEROED if zero_entry else Act.UNMAPPED, offset, length,
                      f"{changed} cluster(s): {detail}")
        else:
            trace.add(self.format_name, Act.IGNORED, offset, length, "already unallocated")
        self._release(freed, reason, trace, offset, length)

    def _rewrite_entries(self, offset: int, length: int, rule, freed: list[int], trace: Trace) -> int:
        """Apply rule(old_entry, kind) -> (new_entry, drop_old) to the L2 entries of the clusters in the
        range, freeing dropped clusters into `freed`. Returns how many entries changed."""
        meta, kind_of = self.meta, self.clusters.kind
        meta.mark_dirty()
        cb = self.cluster_bits
        ci, end = offset >> cb, (offset + length + self._cmask) >> cb
        changed = 0
        while ci < end:
            table = meta.l2_for_write(ci >> self.l2_bits, trace)
            index = ci & self.l2_mask
            stop = min(end, (ci | self.l2_mask) + 1)
            dirty = False
            for k in range(index, index + stop - ci):
                old = table[k]
                new, drop = rule(old, kind_of(old))
                if new == old:
                    continue
                table[k] = new
                dirty = True
                changed += 1
                if drop:
                    self._free_entry(old, freed)
            if dirty:
                meta.l2_cache.mark_dirty(meta.l2_offset(ci >> self.l2_bits), table)
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
            if self.clusters.kind(self.meta.l2_entry(start >> self.cluster_bits)) not in (UNALLOCATED, ZERO_PLAIN,
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
        changed = self._rewrite_entries(offset, length, zeroed, freed, trace)
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
    def layer_status(self, offset: int, length: int) -> BlockStatus:
        meta = self.meta
        end = offset + length
        shift = self._l1_shift
        l1_index = offset >> shift
        l2 = meta.l2_offset(l1_index)
        if not l2:     # no L2 table: unallocated, over every following L1 entry without one too
            l1 = meta.l1
            last = l1_index + 1
            stop = min(len(l1), -(-end >> shift))
            while last < stop and not l1[last] & _L1_OFFSET:
                last += 1
            return BlockStatus(Status.NONE, min(end, last << shift) - offset)
        kind, host, run, _ = self.clusters.run(meta.l2_table(l2), offset, end)
        host = self.clusters.aligned(host, offset) if kind in (NORMAL, ZERO_ALLOC) else 0
        flags = Status.NONE
        if kind in (NORMAL, ZERO_ALLOC):
            flags |= Status.OFFSET_VALID
        if kind in (ZERO_PLAIN, ZERO_ALLOC):
            flags |= Status.ZERO
        elif kind in (NORMAL, COMPRESSED):
            flags |= Status.DATA
        if kind == NORMAL and self._metadata_preallocated():
            flags |= Status.RECURSE
        return BlockStatus(flags, run, host + (offset & self._cmask) if host else 0)

    def _metadata_preallocated(self) -> bool:
        """qcow2_detect_metadata_preallocation: far more clusters referenced than the host allocated."""
        if self._prealloc_detected is None:
            real = self.host.allocated_bytes() // self.cluster_size
            threshold = max(real * 10 // 9, real + 2)
            count = 0
            end = -(-self.host.size() // self.cluster_size)
            refs = self.meta.refs
            ci = 0
            while ci < end and count < threshold:
                count += refs.get(ci) != 0
                ci += 1
            self._prealloc_detected = count >= threshold
        return self._prealloc_detected

    # -- flush and close ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.read_only or self.meta.broken:
            return
        self.meta.flush()

    def close(self) -> None:
        if not self.host.closed and not self.read_only and not self.meta.broken:
            self.meta.flush()
            self.meta.mark_clean()
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
        meta = self.meta
        data: dict = {"compat": "1.1" if self.version >= 3 else "0.10", "compression-type": "zlib"}
        if self.version >= 3:
            data["lazy-refcounts"] = meta.lazy_refcounts
        data["refcount-bits"] = meta.refs.codec.bits
        if self.version >= 3:
            data["corrupt"] = meta.corrupt
            data["extended-l2"] = False
        fields: dict = {"cluster-size": self.cluster_size}
        if meta.snapshots:
            fields["snapshots"] = [s.to_json() for s in meta.snapshots]
        fields["format-specific"] = {"type": "qcow2", "data": data}
        fields["dirty-flag"] = meta.dirty
        return fields

    def check(self, repair: str | None = None):
        return check_image(self.meta, repair, read_only=self.read_only)

    # -- relinking and emptying (qemu-img rebase -u, commit) ---------------------------------------
    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """qcow2_change_backing_file: the name (at most 1023 bytes, in cluster 0) and the backing-format
        extension, written as Metadata.write_backing_link writes them."""
        self.check_relink(parent, name, fmt)
        if parent is not None:
            fmt = fmt or parent.format_name
        if name is not None and len(name.encode("utf-8")) > L.MAX_BACKING_NAME:
            raise UsageError(f"{self.path}: backing file name of {len(name.encode('utf-8'))} bytes is too long "
                             f"(qcow2 stores at most {L.MAX_BACKING_NAME} bytes)")
        if fmt is not None and len(fmt) > L.MAX_BACKING_FORMAT:
            raise UsageError(f"{self.path}: backing format name '{fmt}' is too long (at most "
                             f"{L.MAX_BACKING_FORMAT} bytes)")
        self.meta.write_backing_link(name, fmt)
        self.backing = parent
        self.backing_name, self.backing_format = name, fmt

    def creation_options(self) -> dict[str, str]:
        """compat, cluster_size, lazy_refcounts, refcount_bits (emu creates neither extended L2 entries
        nor other compression types, so those stay at their defaults)."""
        return {"compat": "1.1" if self.version >= 3 else "0.10", "cluster_size": str(self.cluster_size),
                "lazy_refcounts": "on" if self.meta.lazy_refcounts else "off",
                "refcount_bits": str(self.meta.refs.codec.bits)}

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
        meta = self.meta
        freed: list[int] = []
        shift = self._l1_shift
        l1_count = min(len(meta.l1), -(-self.virtual_size >> shift))
        index = 0
        while index < l1_count:
            l2 = meta.l1[index] & _L1_OFFSET
            if not l2 or not any(meta.l2_table(l2)):
                index += 1
                continue
            offset = index << shift
            length = min(self.virtual_size, (index + 1) << shift) - offset
            self._rewrite_entries(offset, length, lambda old, kind: (0, True), freed, NULL_TRACE)
            index += 1
        meta.flush()
        self._release(freed, DISCARD_ALWAYS, NULL_TRACE, 0, self.virtual_size)


def open_qcow2(host: HostFile, *, read_only: bool, check_mode: bool = False,
               **cache_options: int) -> Qcow2Image:
    head = host.pread_exact(0, L.V3_HEADER_LENGTH)
    if len(head) >= 24:
        bits = int.from_bytes(head[20:24], "big")
        if head[:4] == L.MAGIC and L.MIN_CLUSTER_BITS <= bits <= L.MAX_CLUSTER_BITS:
            head = host.pread_exact(0, 1 << bits)
    header = Qcow2Header.parse(head, host.size())
    if header.incompatible_features & L.INCOMPAT_CORRUPT and not read_only and not check_mode:
        raise ImageError("image is marked corrupt; it can only be opened read-only (qemu-img check -r all "
                         "repairs it)", field="incompatible_features")
    image = Qcow2Image(host, header, read_only=read_only, **cache_options)
    if not read_only:
        _prepare_for_writing(image.meta, repair_dirty=not check_mode)
    return image


def _prepare_for_writing(meta: Metadata, *, repair_dirty: bool) -> None:
    """What qemu does on a read-write open: repair a dirty image, clear autoclear bits we don't keep."""
    if meta.header.version >= 3 and meta.header.autoclear_features:
        meta.clear_autoclear_features()
    if meta.dirty and repair_dirty:
        check_image(meta, "all", read_only=False)
        meta.mark_clean()
