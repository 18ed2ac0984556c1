"""qcow2 consistency check and repair, counted the way `qemu-img check` counts (block/qcow2-refcount.c).

Every reference is counted into an in-memory table sized by the host file (not the virtual disk):
header, L1 tables (active and snapshots), L2 tables, data and compressed clusters, the snapshot
table, the refcount table and blocks. Then on-disk refcounts are compared: lower than the references
is a corruption, higher is a leak (only below the end of the file, as qemu). COPIED flags of active
tables must equal "refcount is 1".

Repair fixes refcounts in place where a refcount block exists and otherwise rebuilds the refcount
structure at the end of the file (qemu's rebuild_refcount_structure, `Refcounts.rebuild`).
"""

from __future__ import annotations

from array import array

from emu.errors import CorruptImage
from images.backend import CheckResult
from images.qcow2 import layout as L
from images.qcow2.mapping import COMPRESSED
from images.qcow2.metadata import Metadata
from images.qcow2.snapshot import table_length
from images.qcow2.tables import decode_u64


class _Counter:
    """References per host cluster, sized by the file (qcow2_inc_refcounts_imrt): a reference one
    cluster or more past the end of the file, or one more than the refcount width can hold, is a
    corruption and is not counted, so a lying table cannot make the check allocate or loop."""

    def __init__(self, file_size: int, cluster_bits: int, refcount_max: int, res: CheckResult) -> None:
        self.cluster_bits = cluster_bits
        self.file_size = file_size
        self.counts = array("Q", bytes(8 * max(1, -(-file_size >> cluster_bits))))
        self.max = refcount_max
        self.res = res

    def add(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        cb = self.cluster_bits
        if offset + length - self.file_size >= 1 << cb:
            self.res.corruption(f"ERROR: counting reference for region exceeding the end of the file by one "
                                f"cluster or more: offset {offset:#x} size {length:#x}")
            return
        last = (offset + length - 1) >> cb
        if last >= len(self.counts):   # within a cluster of the end: the last cluster may be partial
            self.counts.extend(array("Q", bytes(8 * (last + 1 - len(self.counts)))))
        for ci in range(offset >> cb, last + 1):
            if self.counts[ci] >= self.max:
                self.res.corruption(f"ERROR: overflow cluster offset={ci << cb:#x}")
                continue
            self.counts[ci] += 1


def check_image(meta: Metadata, repair: str | None = None, *, read_only: bool) -> CheckResult:
    """Check (and with repair="leaks"|"all", fix) the image. Returns the state after any repair."""
    if not read_only:
        meta.flush()
    result, found = _check(meta)
    if repair and (result.leaks or (repair == "all" and result.corruptions)):
        if read_only:
            result.messages.append("cannot repair a read-only image")
            return result
        fixed_leaks, fixed_corruptions = _repair(meta, result, found, repair)
        after, _ = _check(meta)
        if not after.corruptions and not after.check_errors:
            meta.mark_clean(consistent=True)
        after.leaks_fixed = fixed_leaks
        after.corruptions_fixed = fixed_corruptions
        after.messages = result.messages + ["Double checking the fixed image now..."] + after.messages
        return after
    return result


class _Found:
    """What the counting pass found, for the repair pass."""

    def __init__(self, counts: array, copied_l2: list, copied_data: list) -> None:
        self.counts = counts
        self.copied_l2 = copied_l2
        self.copied_data = copied_data


def _check(meta: Metadata) -> tuple[CheckResult, _Found]:
    res = CheckResult()
    cs, cb = meta.cluster_size, meta.cluster_bits
    file_size = meta.host.size()
    refs = _Counter(file_size, cb, meta.refs.codec.max, res)
    h = meta.header
    res.total_clusters = -(-h.size // cs)
    refs.add(0, cs)
    copied_l2: list[tuple[int, int]] = []    # (l1_index, l2_offset) of the active table
    copied_data: list[tuple[int, int, int]] = []  # (l2_offset, index, entry)
    _count_l1(meta, res, refs, h.l1_table_offset, h.l1_size, active=True, copied_l2=copied_l2,
              copied_data=copied_data)
    for snap in meta.snapshots:
        _count_l1(meta, res, refs, snap.l1_table_offset, snap.l1_size, active=False)
    if h.nb_snapshots:
        refs.add(h.snapshots_offset, table_length(meta.host, h.snapshots_offset, h.nb_snapshots))
    refs.add(meta.refs.table_offset, meta.refs.table_clusters * cs)
    # refcount blocks
    block_clusters: list[int] = []
    for index, entry in enumerate(meta.refs.table):
        offset = entry & L.REFT_OFFSET_MASK
        if not offset:
            continue
        if offset & (cs - 1):
            res.corruption(f"ERROR refcount block {index} is not cluster aligned; refcount table entry "
                                "corrupted")
            continue
        if offset >= file_size:
            res.corruption(f"ERROR refcount block {index} is outside image")
            continue
        refs.add(offset, cs)
        block_clusters.append(offset >> cb)
    # compare
    highest = -1
    counts = refs.counts
    for ci in range(len(counts)):
        try:
            on_disk = meta.refs.get(ci)
        except CorruptImage as exc:
            res.check_errors += 1
            res.messages.append(f"ERROR: {exc.what}")
            continue
        want = counts[ci]
        if on_disk or want:
            highest = ci
        if on_disk == want:
            continue
        if on_disk < want:
            res.corruption(f"ERROR cluster {ci} refcount={on_disk} reference={want}")
        else:
            res.leak(f"Leaked cluster {ci} refcount={on_disk} reference={want}")
    for ci in block_clusters:
        if counts[ci] != 1:
            res.corruption(f"ERROR refcount block {ci} refcount={counts[ci]}")
    res.image_end_offset = (highest + 1) * cs
    # COPIED flags of the active tables (check_oflag_copied)
    for l1_index, l2_offset in copied_l2:
        want_copied = meta.refs.get(l2_offset >> cb) == 1
        if bool(meta.l1[l1_index] & L.OFLAG_COPIED) != want_copied:
            res.corruption(f"ERROR OFLAG_COPIED L2 cluster: l1_index={l1_index} "
                           f"l1_entry={meta.l1[l1_index]:x} refcount={meta.refs.get(l2_offset >> cb)}")
    for _l2_offset, _index, entry in copied_data:
        rc = meta.refs.get(meta.clusters.extent(entry)[0] >> cb)
        if bool(entry & L.OFLAG_COPIED) != (rc == 1):
            res.corruption(f"ERROR OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}")
    return res, _Found(counts, copied_l2, copied_data)


def _count_l1(meta: Metadata, res: CheckResult, refs: _Counter, l1_offset: int, l1_size: int, *,
              active: bool, copied_l2: list | None = None, copied_data: list | None = None) -> None:
    cs = meta.cluster_size
    clusters = meta.clusters
    refs.add(l1_offset, l1_size * 8)
    l1 = meta.l1 if active else decode_u64(meta.host.pread(l1_offset, l1_size * 8))
    file_size = meta.host.size()
    for l1_index, l1_entry in enumerate(l1):
        if not l1_entry:
            continue
        if l1_entry & L.L1E_RESERVED_MASK:
            res.corruption(f"ERROR found L1 entry with reserved bits set: {l1_entry:x}")
        l2_offset = l1_entry & L.L1E_OFFSET_MASK
        if not l2_offset:
            continue
        refs.add(l2_offset, cs)
        if l2_offset & (cs - 1):
            res.corruption(f"ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry corrupted")
            continue
        if l2_offset + cs > file_size:
            res.check_errors += 1
            res.messages.append(f"ERROR l2_offset={l2_offset:x}: L2 table lies past the end of the file")
            continue
        if active and copied_l2 is not None:
            copied_l2.append((l1_index, l2_offset))
        cached = meta.l2_cache.cached(l2_offset) if active else None
        table = cached if cached is not None else decode_u64(meta.host.pread(l2_offset, cs))
        next_contiguous = 0
        for index, entry in enumerate(table):
            if not entry:
                continue
            host, length = clusters.extent(entry)
            if clusters.kind(entry) == COMPRESSED:
                if entry & L.OFLAG_COPIED:
                    res.corruption(f"ERROR: coffset=0x{host:x}: copied flag must never be set for compressed "
                                   "clusters")
                refs.add(host, length)
                if active:
                    res.allocated_clusters += 1
                    res.compressed_clusters += 1
                    res.fragmented_clusters += 1
                continue
            if entry & L.L2E_STD_RESERVED_MASK:
                res.corruption(f"ERROR found l2 entry with reserved bits set: {entry:x}")
            if not length:
                continue   # unallocated or zero-plain
            if host & (cs - 1):
                res.corruption(f"ERROR offset={host:x}: Data cluster is not properly aligned; L2 entry "
                               "corrupted.")
            if active:
                res.allocated_clusters += 1
                if next_contiguous and host != next_contiguous:
                    res.fragmented_clusters += 1
                next_contiguous = host + cs
                if copied_data is not None:
                    copied_data.append((l2_offset, index, entry))
            refs.add(host, length)


def _repair(meta: Metadata, result: CheckResult, found: _Found, mode: str) -> tuple[int, int]:
    """Set on-disk refcounts to the counted references (leaks only, or everything), fix COPIED flags."""
    counts = found.counts
    refs = meta.refs
    fixed_leaks = fixed_corruptions = 0
    needs_rebuild = False
    for ci in range(len(counts)):
        on_disk = refs.get(ci)
        want = counts[ci]
        if on_disk == want or (on_disk < want and mode != "all"):
            continue
        if not refs.block_offset(ci >> refs.block_bits):
            needs_rebuild = True
            break
        refs.set(ci, want)
        if on_disk > want:
            fixed_leaks += 1
        else:
            fixed_corruptions += 1
    if needs_rebuild or (mode == "all" and any(m.startswith("ERROR refcount block") for m in result.messages)):
        fixed_corruptions = result.corruptions
        fixed_leaks = result.leaks
        refs.rebuild(counts)
    else:
        refs.pending.clear()   # the counted values are the truth: write them as they are
        refs.write_dirty()
        meta.host.sync()
    if mode == "all":
        fixed_corruptions += _fix_copied(meta, found)
    refs.free_cursor = 0
    return fixed_leaks, fixed_corruptions


def _fix_copied(meta: Metadata, found: _Found) -> int:
    cb = meta.cluster_bits
    fixed = 0
    for l1_index, l2_offset in found.copied_l2:
        want = meta.refs.get(l2_offset >> cb) == 1
        entry = meta.l1[l1_index]
        if bool(entry & L.OFLAG_COPIED) != want:
            meta.set_l1_entry(l1_index, entry | L.OFLAG_COPIED if want else entry & ~L.OFLAG_COPIED)
            fixed += 1
    for l2_offset, index, entry in found.copied_data:
        want = meta.refs.get(meta.clusters.extent(entry)[0] >> cb) == 1
        if bool(entry & L.OFLAG_COPIED) != want:
            table = meta.l2_table(l2_offset)
            table[index] = entry | L.OFLAG_COPIED if want else entry & ~L.OFLAG_COPIED
            meta.l2_cache.mark_dirty(l2_offset, table)
            fixed += 1
    if fixed:
        meta.flush()
    return fixed
