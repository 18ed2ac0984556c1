"""Crash consistency of VHDX: power loss at any point of a workload, then recovery by log replay.

VHDX makes every BAT and sector-bitmap change atomic through its metadata log: the data is written
and flushed, the headers get a log GUID, the log entry is written and flushed, the new metadata
pages are applied and flushed, and the log GUID is cleared. A crash in between leaves a pending log
that every reader must replay before it trusts the BAT. The workloads run through the Drive with the
host file's journal on, and the crashed files are rebuilt by the same machinery as the qcow2 tests
(crash_support.py, prefix and reorder models). Each crashed file is recovered two ways:

* qemu (dynamic disk only: qemu 7.2 cannot open a differencing VHDX): `qemu-img check -r all -f vhdx`
  on a copy replays a pending log and must find nothing else wrong; `qemu-img convert -O raw` of the
  result must show every flushed write and never-written ranges as before;
* emu: a read-only open must refuse a file whose log is pending, with an error naming the log and
  the read-write open that replays it, and open any other; a read-write open replays the log (and
  only a pending one); then emu's check finds no corruption, emu's view of the data obeys the same
  rules, and `qemu-img check` accepts the file emu's replay wrote (dynamic). A differencing disk's
  view is also read through libvhdi, in the blocks libvhdi reads as [MS-VHDX] says (it takes ZERO
  blocks of a differencing disk from the parent, and reads a missing sector bitmap at offset 0).

qemu's verdict on whether the log was pending (it counts a replay as a fixed corruption) and emu's
parser's must agree. Requests not yet flushed may read old or new, but in both models whole per
atom: a block, or in a differencing disk a 4 KiB page (partial writes copy and write page by page).
A clean close must leave nothing after its last barrier (close is a flush).

The journals are long (about a dozen entries and seven distinct files per metadata update), so the
prefix model checks a seeded sample that keeps every cut inside the first requests, the cut right
after each log entry is written (pending, nothing applied) and the end. The short scenarios aim at
one rule each and check every reordering (the one on a host that cannot punch holes once exposed a
bug: a sector bitmap put in a reused, unzeroed slot).
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
from crash_support import (
    MiB,
    Recording,
    Scenario,
    Tools,
    brief,
    check_prefix_cuts,
    check_reordered,
    close,
    discard,
    flush,
    landmarks,
    make_backing,
    qemu_check,
    random_ops,
    recorder,
    replay,
    select_cuts,
    vhdx_log_pending,
    write,
    zero,
)

from emu.errors import EmuError
from images import open_image
from images.vhdx import layout as VL
from tests.conftest import oracle_module

BLOCK_1M = {"block_size": "1M"}
SIZE = 16 * MiB
PAGE = 4096


def unflushed_tail(rng: random.Random, bs: int) -> list:
    """Requests after the last flush: they may or may not survive."""
    return [write(bs // 3, rng.randbytes(bs)), discard(12 * bs, bs), zero(13 * bs, bs, may_unmap=True)]


def dynamic_ops(bs: int) -> list:
    rng = random.Random(21)
    b = rng.randbytes
    blk = [i * bs for i in range(16)]
    prelude = [
        write(blk[0], b(bs)),                        # allocating a whole block: file extended, BAT via the log
        write(blk[1] + 5000, b(3000)),               # allocating part of a block: the rest reads as zeros
        write(blk[2] + bs // 2, b(bs)),              # two new blocks, one log entry for both BAT entries
        flush(),
        write(blk[0] + 10, b(bs // 4)),              # in place: no metadata
        discard(blk[0], bs),                         # whole block: UNMAPPED through the log, slot punched
        discard(blk[1] + 1, bs // 2),                # part of a block: ignored
        zero(blk[2], bs),                            # whole present block, no unmap: zeroed in place
        zero(blk[3], bs, may_unmap=True),            # whole block with unmap: ZERO, slot punched
        zero(blk[1] + 7, bs // 3, may_unmap=True),   # part of a present block: zeroed in place
        flush(),
        write(blk[4] + 3, b(bs // 2)),               # allocating into a freed slot (punched again first)
        write(blk[5], b(bs)),                        # allocating a whole block into a freed slot
        write(blk[0] + bs // 3, b(bs)),              # the discarded block again, and in place in the next
        flush(),
        discard(blk[4], 2 * bs),                     # two blocks in one log entry ...
        write(blk[6], b(2 * bs)),                    # ... their slots reused before the punches are durable
        zero(blk[7] + bs // 2, bs, may_unmap=True),  # halves of a present and an absent block
        flush(),
    ]
    zones = [(0, 8 * bs), (10 * bs, 6 * bs)]
    return (prelude + random_ops(rng, bs, zones, 18) + [flush()] + unflushed_tail(rng, bs) + [close()])


BACKED = [(0, 3 * MiB), (8 * MiB, 2 * MiB)]    # where the parent holds data


def make_parent(directory: str):
    """A 16 MiB dynamic VHDX parent with random data in BACKED; returns its content reader."""
    return make_backing(directory, "vhdx", SIZE, BLOCK_1M, BACKED, 22)


def differencing_ops(bs: int) -> list:
    rng = random.Random(23)
    b = rng.randbytes
    blk = [i * bs for i in range(16)]
    prelude = [
        write(blk[0] + 5000, b(3000)),               # part of a NOT_PRESENT block: sector bitmap allocated,
                                                     # the parent copied around it, PARTIALLY_PRESENT
        write(blk[4], b(bs)),                        # a whole block: FULLY_PRESENT
        flush(),
        write(blk[0] + 100_000, b(10_000)),          # more pages of a partially present block
        write(blk[1] + bs - 2048, b(PAGE)),          # partial pages of two blocks over the parent
        discard(blk[4], bs),                         # whole present block: ZERO (hides the parent), punched
        discard(blk[8], bs),                         # whole NOT_PRESENT block over parent data: ZERO
        flush(),
        zero(blk[0], bs),                            # whole partially present block, no unmap: FULLY_PRESENT
        zero(blk[2], bs, may_unmap=True),            # whole partially present block with unmap: ZERO
        zero(blk[9] + 512, PAGE),                    # part of a NOT_PRESENT block: the Drive writes zeros
        write(blk[8] + 1000, b(5000)),               # into a ZERO block: a whole new block, zeros around
        flush(),
    ]
    zones = [(0, 4 * bs), (8 * bs, 4 * bs)]
    ops = prelude
    for i in range(14):                              # small writes: pages copied from the parent
        zo, zl = rng.choice(zones)
        length = rng.randrange(512, 3 * PAGE)
        ops.append(write(zo + rng.randrange(zl - length), b(length)))
        if i % 5 == 4:
            ops.append(flush())
    return (ops + random_ops(rng, bs, zones, 10) + [flush()] + unflushed_tail(rng, bs) + [close()])


def reused_slot_ops(bs: int) -> list:
    """A discarded block's slot is punched and reused by the next allocation; the new BAT entry may
    only become durable after the new data, and the old entry's UNMAPPED state before the reuse."""
    rng = random.Random(24)
    return [write(0, rng.randbytes(bs)), flush(), discard(0, bs), write(3 * bs, rng.randbytes(bs // 2)),
            flush()]


def unpunched_bitmap_slot_ops(bs: int) -> list:
    """A host file that cannot punch holes: two blocks freed by a zero write keep their data, and the
    next partial write puts its block and then the chunk's sector bitmap into those slots. The bitmap
    slot must be zeroed first (once it was not, and the old data read as set bits), and durably so
    before the BAT names it."""
    rng = random.Random(25)
    return [write(5 * bs, rng.randbytes(2 * bs)), flush(), zero(5 * bs, 2 * bs, may_unmap=True),
            write(12 * bs + PAGE, rng.randbytes(512)), flush()]


SCENARIOS = {s.name: s for s in [
    # sampled cuts; in the reorder model too, every request not yet flushed leaves each atom (the block,
    # or the 4 KiB page a differencing disk copies and writes separately) old or new, never a mix
    Scenario("vhdx-dynamic-1m", BLOCK_1M, SIZE, dynamic_ops, fmt="vhdx", cut_budget=60, keep_first=3,
             reorder_budget=14, strict_reorder=True, seed=21),
    Scenario("vhdx-differencing-1m", BLOCK_1M, SIZE, differencing_ops, fmt="vhdx", backing=make_parent,
             backing_data=BACKED, atom=PAGE, cut_budget=50, keep_first=1, reorder_budget=12, strict_reorder=True,
             seed=22),
    # short sequences, every reordering
    Scenario("vhdx-reused-slot", BLOCK_1M, SIZE, reused_slot_ops, fmt="vhdx", cut_budget=24, exhaustive=True,
             strict_reorder=True),
    Scenario("vhdx-unpunched-bitmap-slot", BLOCK_1M, SIZE, unpunched_bitmap_slot_ops, fmt="vhdx",
             backing=make_parent, backing_data=BACKED, atom=PAGE, host_punch=False, cut_budget=24,
             exhaustive=True, strict_reorder=True),
]}
NAMES = list(SCENARIOS)
WORKLOADS = [n for n in NAMES if not SCENARIOS[n].exhaustive]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return recorder(SCENARIOS, tmp_path_factory)


def tools_for(rec: Recording, tools: Tools) -> Tools:
    """libvhdi reads a differencing disk, which qemu cannot open."""
    if rec.scenario.backing is None:
        return tools
    return dataclasses.replace(tools, vhdi=oracle_module("pyvhdi", "libvhdi-python"))


# -- the harness itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_replaying_the_whole_journal_rebuilds_the_file_the_workload_left(name, recorded):
    rec = recorded(name)
    assert bytes(replay(rec.pre, rec.journal)) == rec.final


def test_workloads_reach_the_paths_they_are_meant_to_exercise(recorded):
    for name in WORKLOADS:
        rec = recorded(name)
        kinds = {op for op, _ in rec.journal}
        assert {"pwrite", "sync", "punch", "truncate"} <= kinds, name   # extended, and slots punched
        assert sum(op.kind == "flush" for op in rec.ops) >= 4, name
        assert len(landmarks(rec)) >= 10, f"{name}: few metadata updates went through the log"
        assert len(select_cuts(rec)) < len(rec.journal) // 2, f"{name}: the cut sample is not a sample"
    diff = recorded("vhdx-differencing-1m")
    # every present state, and a sector bitmap, reached the BAT
    image = open_image(diff.path, read_only=True)
    try:
        states = {entry & VL.STATE_MASK for entry in image.bat.entries}
        assert image.is_diff and image.bat.entries[image.bat.bitmap_index(0)] & VL.STATE_MASK == VL.SB_PRESENT
    finally:
        image.close()
    assert {VL.PAYLOAD_PARTIALLY_PRESENT, VL.PAYLOAD_FULLY_PRESENT, VL.PAYLOAD_ZERO} <= states
    dynamic = open_image(recorded("vhdx-dynamic-1m").path, read_only=True)
    try:
        states = {entry & VL.STATE_MASK for entry in dynamic.bat.entries}
    finally:
        dynamic.close()
    assert {VL.PAYLOAD_FULLY_PRESENT, VL.PAYLOAD_ZERO, VL.PAYLOAD_UNMAPPED} <= states


def test_a_pending_log_is_refused_read_only_and_replayed_read_write(recorded, tmp_path):
    """The cut right after a log entry is written leaves the update pending and unapplied: a read-only
    open refuses it and says how to replay it; the read-write open applies it."""
    rec = recorded("vhdx-dynamic-1m")
    cut = min(landmarks(rec))
    path = str(tmp_path / "pending.vhdx")
    with open(path, "wb") as f:
        f.write(replay(rec.pre, rec.journal[:cut]))
    assert vhdx_log_pending(path)
    with pytest.raises(EmuError, match="log.*read-write"):
        open_image(path, read_only=True)
    image = open_image(path)
    assert image.replayed
    image.close()
    assert not vhdx_log_pending(path)
    open_image(path, read_only=True).close()


# -- power loss ------------------------------------------------------------------------------------
@pytest.mark.qemu
@pytest.mark.parametrize("name", NAMES)
def test_power_loss_after_any_journal_entry_leaves_a_recoverable_image_with_flushed_data(name, recorded,
                                                                                          tools):
    """Prefix model: the host file holds exactly the first N mutations (a seeded sample of N)."""
    rec = recorded(name)
    summary = check_prefix_cuts(rec, tools_for(rec, tools), select_cuts(rec))
    print(f"\n{name}: journal of {len(rec.journal)} entries; prefix model: {summary.crash_states} crash states, "
          f"{summary.files} distinct files")
    assert not summary.problems, f"{len(summary.problems)} problem(s):\n" + "\n".join(summary.problems[:8])


@pytest.mark.qemu
@pytest.mark.parametrize("name", NAMES)
def test_writes_reordered_between_barriers_leave_a_recoverable_image_with_flushed_data(name, recorded, tools):
    """Reorder model: everything before the last sync is on disk, and any subset of the writes after
    it. The log protocol needs a barrier between data and log entry, entry and applied pages, pages
    and the cleared log GUID."""
    rec = recorded(name)
    summary = check_reordered(rec, tools_for(rec, tools))
    print(f"\n{name}: reorder model: {summary.crash_states} crash states")
    assert summary.crash_states > 0
    assert not summary.problems, f"{len(summary.problems)} problem(s):\n" + "\n".join(summary.problems[:8])


@pytest.mark.qemu
@pytest.mark.parametrize("name", WORKLOADS)
def test_a_clean_close_leaves_everything_durable_and_no_pending_log(name, recorded, tools):
    """close is a flush: nothing after its last barrier, and a file qemu-img check finds clean."""
    rec = recorded(name)
    assert rec.ops[-1].kind == "close"
    assert rec.journal[-1][0] == "sync", "close left writes without a barrier after them"
    path = os.path.join(rec.dir, "closed-copy.vhdx")
    with open(path, "wb") as f:
        f.write(rec.final)
    try:
        assert not vhdx_log_pending(path)
        if rec.scenario.backing is None:
            rc, info, text = qemu_check(tools.qemu_img, path, "vhdx")
            assert rc == 0 and not info.get("corruptions", 0), brief(text)
    finally:
        os.unlink(path)
