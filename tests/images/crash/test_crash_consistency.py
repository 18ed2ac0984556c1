"""Crash consistency: cut every metadata/data write sequence at each write (simulated power loss),
reopen: `qemu-img check` finds no corruption and every flushed write reads back.

Each scenario runs a seeded workload (writes that allocate and overwrite, partial clusters, discards
of whole and partial clusters, zero writes with and without MAY_UNMAP, flushes) through the Drive
while the host file's journal records every mutation and barrier. A crashed file is rebuilt from the
pre-crash bytes and part of the journal (crash_support.py), in two models:

* prefix: the first N entries reached the disk, for every N (a seeded sample for long journals);
* reorder: all entries before a sync, plus any subset of those up to the next sync.

Then, for each crashed file:

* `qemu-img check` reports no corruption and no check error (leaks, exit 3, are allowed). A dirty
  lazy-refcounts image may have refcount damage; after emu's repair on a read-write open (and, in
  the prefix model, qemu's) the check must be clean;
* emu, opening it read-only, reads every byte written before the last completed flush and not
  touched since as flushed; in the prefix model ranges touched since hold their flushed content or
  what a later request left there, whole per cluster; never-written ranges read as before the crash;
* on every third distinct file (and the final one) qemu-io reads the whole disk and qemu's view of
  the data (`qemu-img convert`) obeys the same rules.

The short scenarios at the end aim at one ordering rule each and check every reordering. Each once
exposed a real ordering bug (a missing barrier, or pending refcount decrements lost across cache
eviction); they stay as regression tests.
"""

from __future__ import annotations

import os
import random

import pytest
from crash_support import (
    KiB,
    MiB,
    Scenario,
    brief,
    check_prefix_cuts,
    check_reordered,
    close,
    coverage_prelude,
    discard,
    flush,
    make_backing,
    qemu_check,
    random_ops,
    recorder,
    replay,
    select_cuts,
    write,
    zero,
)

from emu.block import DriveOptions

V3_64K = {"cluster_size": "65536", "compat": "1.1", "lazy_refcounts": "off"}
V3_512 = {"cluster_size": "512", "compat": "1.1", "lazy_refcounts": "off"}
V2_4K = {"cluster_size": "4096", "compat": "0.10"}
LAZY_64K = {"cluster_size": "65536", "compat": "1.1", "lazy_refcounts": "on"}
SIZE = 64 * MiB


def unflushed_tail(rng: random.Random, cs: int, zone: int) -> list:
    """Requests after the last flush: they may or may not survive."""
    return [write(zone + cs // 3, rng.randbytes(cs)), discard(zone + 4 * cs, cs),
            zero(zone + 6 * cs, cs, may_unmap=True)]


def v3_64k_ops(cs: int) -> list:
    rng = random.Random(1)
    zones = [(0, 16 * cs), (32 * MiB, 8 * cs), (SIZE - 4 * cs, 4 * cs)]
    return (coverage_prelude(0, cs, rng) + random_ops(rng, cs, zones, 30) + [flush()]
            + unflushed_tail(rng, cs, 0) + [close()])


def v2_4k_ops(cs: int) -> list:
    # 4 KiB clusters: an L2 table covers 2 MiB, so the zones sit in three different L2 tables.
    rng = random.Random(2)
    zones = [(0, 16 * cs), (5 * MiB, 8 * cs), (40 * MiB, 4 * cs)]
    return (coverage_prelude(0, cs, rng) + random_ops(rng, cs, zones, 30) + [flush()]
            + unflushed_tail(rng, cs, 0))


def lazy_ops(cs: int) -> list:
    rng = random.Random(3)
    zones = [(0, 16 * cs), (20 * MiB, 8 * cs)]
    return (coverage_prelude(0, cs, rng) + random_ops(rng, cs, zones, 25) + [flush()]
            + unflushed_tail(rng, cs, 0))


BACKED = [(0, 2 * MiB), (32 * MiB, MiB)]   # where the backing file holds data


def make_base(directory: str):
    """A 64 MiB qcow2 backing file with random data in BACKED; returns its content reader."""
    return make_backing(directory, "qcow2", SIZE, V3_64K, BACKED, 4)


def overlay_ops(cs: int) -> list:
    # Partial writes copy backing data into the new cluster (COW); discards and zero writes hide it.
    rng = random.Random(5)
    zones = [(0, 16 * cs), (32 * MiB - 2 * cs, 8 * cs), (48 * MiB, 4 * cs)]
    return (coverage_prelude(0, cs, rng) + random_ops(rng, cs, zones, 30) + [flush()]
            + unflushed_tail(rng, cs, 0) + [close()])


def reftable_growth_ops(cs: int) -> list:
    """512-byte clusters: one refcount-table cluster covers 8 MiB of host file. Over 8 MiB of
    scattered 64 KiB writes (each touching several 32 KiB L2 tables) force the table to grow."""
    rng = random.Random(6)
    ops = coverage_prelude(0, cs, rng)
    written: list[tuple[int, int]] = []
    for i in range(170):
        offset = rng.randrange(64 * KiB, SIZE - 64 * KiB) // 4096 * 4096
        ops.append(write(offset, rng.randbytes(64 * KiB)))
        written.append((offset, 64 * KiB))
        if i % 10 == 5:
            o, n = rng.choice(written)
            pick = rng.random()
            if pick < 0.3:
                ops.append(discard(o + 8 * KiB, 8 * KiB))
            elif pick < 0.6:
                ops.append(zero(o + 3 * cs, 5 * cs, may_unmap=rng.random() < 0.5))
            else:
                ops.append(write(o + rng.randrange(n - cs), rng.randbytes(cs // 2)))
        if i % 12 == 11:
            ops.append(flush())
    return ops + [flush()] + unflushed_tail(rng, cs, 0) + [close()]


def small_cache_ops(cs: int) -> list:
    """Zones in 24 different L2 tables, and enough data (~600 KiB) for several refcount blocks,
    against caches of two tables each: tables are evicted and written back inside requests."""
    rng = random.Random(7)
    zones = [(i * (SIZE // 24) // cs * cs, 64 * cs) for i in range(24)]
    ops = coverage_prelude(0, cs, rng)
    for i in range(60):
        zo, zl = rng.choice(zones)
        length = rng.randrange(2 * KiB, 16 * KiB)
        ops.append(write(zo + rng.randrange(zl - length), rng.randbytes(length)))
        if i % 7 == 6:
            ops.append(flush())
    return ops + random_ops(rng, cs, zones, 60, flush_every=(4, 9)) + [flush()] + unflushed_tail(rng, cs, 0)


# -- short sequences aimed at one ordering rule each (every reordering is checked) ---------------
def zeroed_cluster_partial_write_ops(cs: int) -> list:
    """Write-zeroes without MAY_UNMAP keeps the cluster allocated with the zero flag; a later
    partial write fills it in place (zeros around the data) and clears the flag. The flag may only
    be cleared on disk once those zeros are durable, or the zeroed (flushed) data comes back."""
    rng = random.Random(11)
    return [write(0, rng.randbytes(cs)), flush(), zero(0, cs), flush(),
            write(100, rng.randbytes(50)), flush()]


def lazy_cow_from_backing_ops(cs: int) -> list:
    """A partial write into a backed cluster copies the backing data into a new cluster (COW). With
    lazy refcounts too, the L2 entry may only reach the disk after that copy (qemu makes the L2
    cache depend on a flush after every COW)."""
    rng = random.Random(12)
    return [write(cs + 100, rng.randbytes(50)), flush(), write(3 * cs, rng.randbytes(cs)), flush()]


def evicted_refcount_block_ops(cs: int) -> list:
    """Minimal caches, 512-byte clusters, four refcount blocks. A new cluster's refcount block is
    evicted (written without a barrier) by the refcount scan of the first block-status query (an
    unaligned zero write); the flush then writes the L2 entry: the refcount write must be durable
    first, whether it went out at the flush or earlier by eviction."""
    rng = random.Random(13)
    fill = [write(MiB + i * 128 * KiB, rng.randbytes(100 * KiB)) for i in range(4)]
    return fill + [flush(), write(MiB + 110 * KiB, rng.randbytes(cs)), zero(MiB + 97 * KiB + 100, 200),
                   flush()]


def evicted_new_l2_table_ops(cs: int) -> list:
    """Minimal caches, discard=ignore (freed clusters keep their old bytes). A new L2 table lands on
    a freed data cluster and is evicted (written) by two in-place writes; the flush then writes the
    L1 entry: the table must be durable first, or the L1 entry points at the old data."""
    rng = random.Random(14)
    fill = [write(MiB, rng.randbytes(4 * KiB)), write(2 * MiB, rng.randbytes(4 * KiB)),
            write(3 * MiB, rng.randbytes(4 * KiB)), write(4 * MiB, rng.randbytes(cs))]
    return fill + [flush(), zero(4 * MiB, cs, may_unmap=True), flush(), write(10 * MiB, rng.randbytes(cs)),
                   write(MiB + cs, rng.randbytes(100)), write(2 * MiB + cs, rng.randbytes(100)), flush()]


def lazy_new_l2_table_ops(cs: int) -> list:
    """Lazy refcounts: the first write allocates an L2 table. Whatever else may be lazy, qemu flushes
    a new L2 table before it writes the L1 entry that points to it."""
    rng = random.Random(15)
    return [write(0, rng.randbytes(cs)), flush()]


def evicted_pending_decrements_ops(cs: int) -> list:
    """Minimal caches: a discard frees clusters counted by five refcount blocks. Their decrements
    stay pending until the L2 tables are durable, so evicted blocks are written with the old counts;
    when a block is read back the decrements must not be lost, or the clusters leak for good."""
    rng = random.Random(16)
    return [write(0, rng.randbytes(600 * KiB)), flush(), discard(0, 600 * KiB),
            write(8 * MiB, rng.randbytes(4 * KiB)), close()]


LAZY_OVERLAY = {"cluster_size": "65536", "compat": "1.1", "lazy_refcounts": "on"}

SCENARIOS = {s.name: s for s in [
    Scenario("qcow2-v3-64k", V3_64K, SIZE, v3_64k_ops, seed=1),
    Scenario("qcow2-v2-4k", V2_4K, SIZE, v2_4k_ops, seed=2),
    Scenario("qcow2-v3-64k-lazy-refcounts", LAZY_64K, SIZE, lazy_ops, seed=3),
    Scenario("qcow2-v3-64k-over-backing", {}, SIZE, overlay_ops, backing=make_base, backing_data=BACKED,
             seed=4),
    Scenario("qcow2-v3-512-refcount-table-growth", V3_512, SIZE, reftable_growth_ops, cut_budget=60,
             reorder_budget=12, seed=5),
    Scenario("qcow2-v3-512-small-caches", V3_512, SIZE, small_cache_ops, small_caches=True, cut_budget=120,
             seed=6),
    # short sequences, every reordering
    Scenario("zeroed-cluster-partial-write", V3_64K, 16 * MiB, zeroed_cluster_partial_write_ops,
             exhaustive=True, full_every=1),
    Scenario("lazy-cow-from-backing", LAZY_OVERLAY, SIZE, lazy_cow_from_backing_ops, backing=make_base,
             backing_data=BACKED, exhaustive=True, full_every=1),
    Scenario("lazy-new-l2-table", LAZY_64K, 16 * MiB, lazy_new_l2_table_ops, exhaustive=True, full_every=1),
    Scenario("evicted-refcount-block", V3_512, 16 * MiB, evicted_refcount_block_ops, small_caches=True,
             exhaustive=True, reorder_from=5),
    Scenario("evicted-new-l2-table", V3_512, 16 * MiB, evicted_new_l2_table_ops, small_caches=True,
             drive=DriveOptions(discard="ignore"), exhaustive=True, reorder_from=7),
    Scenario("evicted-pending-decrements", V3_512, 16 * MiB, evicted_pending_decrements_ops,
             small_caches=True, exhaustive=True, reorder_from=3),
]}
NAMES = list(SCENARIOS)
WORKLOADS = [n for n in NAMES if not SCENARIOS[n].exhaustive]
CLOSING = ["qcow2-v3-64k", "qcow2-v3-64k-over-backing", "qcow2-v3-512-refcount-table-growth",
           "evicted-pending-decrements"]     # the workloads that end with close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return recorder(SCENARIOS, tmp_path_factory)


# -- the harness itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_replaying_the_whole_journal_rebuilds_the_file_the_workload_left(name, recorded):
    """The journal must record every mutation, or the cut files would not be real crash states."""
    rec = recorded(name)
    assert bytes(replay(rec.pre, rec.journal)) == rec.final


def test_workloads_reach_the_paths_they_are_meant_to_exercise(recorded):
    """A scenario that silently stopped exercising its path would keep passing; pin what each reaches."""
    assert all(recorded(n).ops[-1].kind == "close" for n in CLOSING)
    for name in WORKLOADS:
        rec = recorded(name)
        kinds = {op for op, _ in rec.journal}
        assert {"pwrite", "sync", "punch"} <= kinds, name     # discards reach the host as punched holes
        assert sum(op.kind == "flush" for op in rec.ops) >= 4, name
    growth = recorded("qcow2-v3-512-refcount-table-growth")
    assert int.from_bytes(growth.pre[56:60], "big") == 1
    assert int.from_bytes(growth.final[56:60], "big") > 1, "the refcount table never grew"
    assert any(op == "pwrite" and args[0] == 48 for op, args in growth.journal)
    assert len(growth.final) > 8 * MiB
    lazy = recorded("qcow2-v3-64k-lazy-refcounts")
    assert lazy.lazy and lazy.final[72:80] != lazy.pre[72:80], "the dirty bit was never set"
    small = recorded("qcow2-v3-512-small-caches")
    in_requests = [(op.start, op.end) for op in small.ops if op.kind in ("write", "discard", "zero")]
    assert any(kind == "sync" and any(s <= i < e for s, e in in_requests)
               for i, (kind, _) in enumerate(small.journal)), "tables were never evicted in a request"


# -- power loss ------------------------------------------------------------------------------------
@pytest.mark.qemu
@pytest.mark.parametrize("name", NAMES)
def test_power_loss_after_any_journal_entry_leaves_a_consistent_image_with_flushed_data(name, recorded,
                                                                                         tools):
    """Prefix model: the host file holds exactly the first N mutations, for every N (or a seeded
    sample of N that keeps every header write, for the long 512-byte-cluster journals)."""
    rec = recorded(name)
    cuts = select_cuts(rec)
    summary = check_prefix_cuts(rec, tools, cuts)
    print(f"\n{name}: journal of {len(rec.journal)} entries; prefix model: {summary}")
    assert not summary.problems, f"{len(summary.problems)} problem(s):\n" + "\n".join(summary.problems[:8])


@pytest.mark.qemu
@pytest.mark.parametrize("name", NAMES)
def test_writes_reordered_between_barriers_leave_a_consistent_image_with_flushed_data(name, recorded, tools):
    """Reorder model: everything before the last sync is on disk, and any subset of the writes
    after it (a volatile cache persists them in any order or not at all). Refcounts, tables and
    data that must precede a table update need a barrier in between, not just an earlier write."""
    rec = recorded(name)
    summary = check_reordered(rec, tools)
    print(f"\n{name}: reorder model: {summary}")
    assert summary.crash_states > 0
    assert not summary.problems, f"{len(summary.problems)} problem(s):\n" + "\n".join(summary.problems[:8])


@pytest.mark.qemu
@pytest.mark.parametrize("name", CLOSING)
def test_a_clean_close_leaves_no_leaks(name, recorded, tools):
    """Without a crash nothing may leak: close writes every refcount back."""
    rec = recorded(name)
    path = os.path.join(rec.dir, "closed-copy.qcow2")
    with open(path, "wb") as f:
        f.write(rec.final)
    try:
        rc, info, text = qemu_check(tools.qemu_img, path)
    finally:
        os.unlink(path)
    assert rc == 0 and not info.get("leaks", 0), brief(text)
