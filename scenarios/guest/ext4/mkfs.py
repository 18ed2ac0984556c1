"""mkfs.ext4 (e2fsprogs 1.47) on a guest's block device: what it discards, zeroes and writes, in its order.

The order is the real mke2fs's (misc/mke2fs.c main, checked with strace of the real tool in
tests/scenarios/guest/test_ext4_mkfs.py): an fsync of the device, the discard of the whole device when asked and
possible (a probe of the first block, then 2 GiB steps), the first sectors wiped, the last 64 KiB zeroed, the inode
tables zeroed (all of them with lazy_itable_init=0, only their used blocks otherwise), the resize inode's block
zeroed, the journal zeroed unless lazy_journal_init, then every metadata block written through the page cache,
an fsync, the superblock written once more and a last fsync. Zeroing is the kernel's blkdev_issue_zeroout on the
device (fallocate ZERO_RANGE): WRITE ZEROES where the queue has it, zero-page writes where it does not.

The blocks' contents are placeholders (each block names what it is): the model decides where the file system
writes, not a byte-exact ext4 image.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from emu.errors import UsageError
from scenarios.guest.ext4.layout import END_WIPE_BYTES, FIRST_INO, INODE_SIZE, Layout
from scenarios.guest.linux.block import BlockDevice

DISCARD_STEP = 2048 << 20       # mke2fs.c DISCARD_STEP_MB


@dataclass(frozen=True)
class MkfsOptions:
    """The options of one mkfs.ext4 command line that change what it writes."""

    discard: bool = True                # -E discard (mke2fs's default) / nodiscard
    lazy_itable_init: bool | None = None    # None: as the kernel allows (/sys/fs/ext4/features/lazy_itable_init)
    lazy_journal_init: bool = False

    @classmethod
    def parse(cls, text: str) -> MkfsOptions:
        """Options as mkfs.ext4 takes them: `-E opt[,opt...]` (discard, nodiscard, lazy_itable_init[=0|1],
        lazy_journal_init[=0|1]), and the flags that change nothing here (-F, -q, -t ext4)."""
        args = shlex.split(text)
        values: dict[str, bool] = {}
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-F", "-q", "-FF"):
                i += 1
                continue
            if arg == "-t" and i + 1 < len(args) and args[i + 1] == "ext4":
                i += 2
                continue
            if arg.startswith("-E"):
                spec = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
                i += 1 if arg[2:] else 2
                for opt in filter(None, spec.split(",")):
                    name, _, value = opt.partition("=")
                    if name in ("discard", "nodiscard"):
                        values["discard"] = name == "discard"
                    elif name in ("lazy_itable_init", "lazy_journal_init"):
                        if value not in ("", "0", "1"):
                            raise UsageError(f"mkfs.ext4 -E {name}={value}: expected 0 or 1")
                        values[name] = value != "0"
                    else:
                        raise UsageError(f"mkfs.ext4 -E {name}: not modelled (known: discard, nodiscard, "
                                         "lazy_itable_init, lazy_journal_init)")
                continue
            raise UsageError(f"mkfs.ext4 option '{arg}': not modelled (known: -E ..., -F, -q, -t ext4)")
        return cls(**values)


def _filler(role: str, size: int) -> bytes:
    """A metadata block's placeholder content: never all zeros (detect-zeroes must see metadata as data)."""
    text = f"ext4 {role} ".encode()
    return (text * (size // len(text) + 1))[:size]


def metadata_writes(layout: Layout) -> list[tuple[int, bytes]]:
    """(byte offset, data) of every metadata write mke2fs makes through the page cache, before its first fsync."""
    bs = layout.block_size
    writes: list[tuple[int, bytes]] = []

    def block(b: int, role: str, length: int | None = None) -> None:
        writes.append((b * bs, _filler(role, length or bs)))

    for g in layout.groups:
        if g.super:
            sb_offset = 1024 if g.index == 0 else g.first * bs    # the primary superblock sits at byte 1024
            writes.append((sb_offset, _filler("superblock", 1024)))
            for d in range(layout.desc_blocks):
                block(g.first + 1 + d, "group descriptors")
            if g.index == 0:
                for r in range(layout.reserved_gdt):
                    block(g.first + 1 + layout.desc_blocks + r, "reserved GDT")
        if g.index not in layout.block_uninit:
            # a full group with nothing in use has an all-zero bitmap; a short last group's padding bits are set
            empty = g.blocks == layout.blocks_per_group and not any(layout.bitmap.used[g.first:g.last + 1])
            writes.append((g.block_bitmap * bs, bytes(bs) if empty else _filler("block bitmap", bs)))
        if g.index == 0:
            block(g.inode_bitmap, "inode bitmap")
    used_inode_bytes = FIRST_INO * INODE_SIZE
    for n in range(-(-used_inode_bytes // bs)):
        block(layout.groups[0].inode_table + n, "inode table")
    block(layout.root_dir, "root directory")
    for b in layout.lost_found:
        block(b, "lost+found")
    block(layout.resize_dind, "resize inode")
    if layout.journal:
        block(layout.journal[0][0], "journal superblock")
    if layout.journal_leaf is not None:
        block(layout.journal_leaf, "journal extents")
    return writes


def zeroouts(layout: Layout, options: MkfsOptions, lazy_itable_init: bool) -> list[tuple[int, int]]:
    """(byte offset, length) of every range mke2fs zeroes, in its order."""
    bs = layout.block_size
    out = []
    rsv = END_WIPE_BYTES // bs
    start = layout.blocks & ~(rsv - 1)
    if start > rsv:
        start -= rsv
    if start > 0:
        out.append((start * bs, (layout.blocks - start) * bs))
    used = -(-(FIRST_INO - 1) * INODE_SIZE // bs)       # group 0's inodes 1..10 before the first file exists
    for g in layout.groups:
        count = layout.inode_table_blocks if not lazy_itable_init else (used if g.index == 0 else 0)
        if count:
            out.append((g.inode_table * bs, count * bs))
    out.append((layout.resize_dind * bs, bs))
    if not options.lazy_journal_init:
        out.extend((first * bs, n * bs) for first, n in layout.journal)
    return out


def mkfs(dev: BlockDevice, options: MkfsOptions, *, lazy_itable_default: bool) -> Generator[Any, Any, Layout]:
    """Make the file system on the whole device; the layout made. `lazy_itable_default` is what mke2fs finds in
    /sys/fs/ext4/features/lazy_itable_init (a guest kernel fact)."""
    layout = Layout(dev.size)
    lazy = options.lazy_itable_init if options.lazy_itable_init is not None else lazy_itable_default
    yield from dev.flush()                              # the device's fsync when mke2fs opens it
    if options.discard and dev.limits.discard is not None:
        # mke2fs_discard_device: a probe of the first block, then the device in steps; BLKDISCARDZEROES answers 0
        # on Linux 6.1 (block/ioctl.c), so the inode tables are still zeroed
        yield from dev.discard(0, layout.block_size)
        for cur in range(0, dev.size, DISCARD_STEP):
            yield from dev.discard(cur, min(DISCARD_STEP, dev.size - cur))
    yield from dev.pwrite(1024, bytes(3072))            # zap_sector(2, 6): an old superblock
    yield from dev.pwrite(0, bytes(1024))               # zap_sector(0, 2): an old boot sector
    if lazy:
        layout.zeroed_itables = frozenset()
    for offset, length in zeroouts(layout, options, lazy):
        yield from dev.zeroout(offset, length)
    for offset, data in metadata_writes(layout):
        yield from dev.pwrite(offset, data)
    yield from dev.fsync()
    yield from dev.pwrite(1024, _filler("superblock", 1024))
    yield from dev.fsync()
    return layout
