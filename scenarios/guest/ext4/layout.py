"""Where mke2fs 1.47 puts an ext4 file system's metadata on a disk of a given size: the geometry and every group's
superblock backup, descriptors, bitmaps and inode table, then the blocks of the root directory, lost+found, the
resize inode and the journal.

Written from e2fsprogs 1.47.0's rules (misc/mke2fs.c and mke2fs.conf's defaults, lib/ext2fs/initialize.c,
alloc_tables.c, res_gdt.c, mkjournal.c) and checked against the real mke2fs with dumpe2fs
(tests/scenarios/guest/test_ext4_layout.py). Only the default ext4 feature set is modelled (has_journal, extent,
huge_file, flex_bg with 16 groups, metadata_csum, 64bit, dir_nlink, extra_isize, sparse_super, resize_inode);
that is what mkfs.ext4 makes without -O or -T.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from emu.errors import UsageError

MiB = 1 << 20
INODE_SIZE = 256            # mke2fs.conf [defaults] inode_size
DESC_SIZE = 64              # the 64bit feature's group descriptor (EXT2_MIN_DESC_SIZE_64BIT)
FLEX_BG = 16                # mke2fs.c: flex_bg_size default 16
FIRST_INO = 11              # EXT2_GOOD_OLD_FIRST_INO: inodes 1..10 are reserved, lost+found is 11
LPF_BYTES = 16 * 1024       # mke2fs.c create_lost_and_found: lost+found grows to 16 KiB (at most 12 blocks)
NDIR_BLOCKS = 12            # EXT2_NDIR_BLOCKS
EXTENT_MAX = 32768          # EXT_INIT_MAX_LEN: the longest initialized extent
END_WIPE_BYTES = 65536      # mke2fs.c: the end of the device is zeroed, 64 KiB rounded to the block size


@dataclass(frozen=True)
class UsageType:
    """One of mke2fs.conf's size classes: block size and bytes of disk per inode."""

    name: str
    block_size: int
    inode_ratio: int


# mke2fs.c parse_fs_type: floppy below 3 MiB, small below 512 MiB, default below 4 TiB, big below 16 TiB, else huge;
# mke2fs.conf gives each its block size and inode ratio.
USAGE_TYPES = (
    (3 * MiB, UsageType("floppy", 1024, 8192)),
    (512 * MiB, UsageType("small", 1024, 4096)),
    (4 << 40, UsageType("default", 4096, 16384)),
    (16 << 40, UsageType("big", 4096, 32768)),
)
HUGE = UsageType("huge", 4096, 65536)


def usage_type(size: int) -> UsageType:
    for limit, kind in USAGE_TYPES:
        if size < limit:
            return kind
    return HUGE


def has_super(group: int) -> bool:
    """sparse_super: groups 0, 1 and the powers of 3, 5 and 7 hold a superblock and descriptor backup."""
    if group <= 1:
        return True
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


def journal_blocks(blocks: int) -> int:
    """lib/ext2fs/mkjournal.c ext2fs_default_journal_size: the journal's blocks for a file system of `blocks`."""
    if blocks < 2048:
        return 0
    for limit, size in ((32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192), (4096 * 1024, 16384),
                        (8192 * 1024, 32768), (16384 * 1024, 65536), (32768 * 1024, 131072)):
        if blocks < limit:
            return size
    return 262144


@dataclass
class Group:
    """One block group: its blocks [first, last] and where its metadata sits (blocks anywhere in the fs)."""

    index: int
    first: int
    last: int
    super: bool                      # a superblock (primary or backup) and descriptors at its start
    block_bitmap: int = 0
    inode_bitmap: int = 0
    inode_table: int = 0

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


class Bitmap:
    """The blocks in use while mke2fs lays the file system out (ext2fs_get_free_blocks2's view)."""

    def __init__(self, blocks: int, first_data_block: int) -> None:
        self.used = bytearray(blocks)
        self.first_data_block = first_data_block

    def mark(self, start: int, count: int = 1) -> None:
        self.used[start:start + count] = b"\1" * count

    def free_range(self, start: int, count: int) -> bool:
        return start + count <= len(self.used) and not any(self.used[start:start + count])

    def find(self, start: int, finish: int, count: int) -> int | None:
        """The first run of `count` free blocks at or after `start` (wrapping to the first data block at the end of
        the fs, as ext2fs_get_free_blocks2 does), before `finish`; None when there is none."""
        b = start or self.first_data_block
        finish = finish or start
        n = len(self.used)
        for _ in range(n + 1):
            if b + count - 1 >= n:
                if finish > start:
                    return None
                b = self.first_data_block
            if self.free_range(b, count):
                return b
            b += 1
            if b == finish:
                return None
        return None

    def first_free(self, goal: int) -> int:
        """ext2fs_new_block2: the first free block at or after `goal`, wrapping around."""
        found = self.find(goal, goal, 1)
        if found is None:
            raise UsageError("the file system has no free block left")
        return found


class Layout:
    """An ext4 file system as mkfs.ext4 lays it out on `size` bytes, with the default options."""

    def __init__(self, size: int) -> None:
        kind = usage_type(size)
        self.usage = kind.name
        self.block_size = bs = kind.block_size
        self.first_data_block = 1 if bs == 1024 else 0
        self.blocks_per_group = 8 * bs
        blocks = size // bs
        inodes = blocks * bs // kind.inode_ratio
        self._geometry(blocks, inodes)
        if self.groups_count < 1 or self.blocks < 64:
            raise UsageError(f"a {size}-byte disk is too small for an ext4 file system")
        self.desc_per_block = bs // DESC_SIZE
        self.desc_blocks = -(-self.groups_count // self.desc_per_block)
        self.reserved_gdt = self._reserved_gdt()
        self.groups = [Group(g, self.first_data_block + g * self.blocks_per_group,
                             min(self.blocks - 1, self.first_data_block + (g + 1) * self.blocks_per_group - 1),
                             has_super(g)) for g in range(self.groups_count)]
        self.bitmap = Bitmap(self.blocks, self.first_data_block)
        if self.first_data_block:
            self.bitmap.mark(0)
        for g in self.groups:
            if g.super:
                self.bitmap.mark(g.first, 1 + self.desc_blocks + self.reserved_gdt)
        for g in self.groups:
            self._allocate_tables(g)
        self._root_and_special_inodes()
        # groups whose inode tables mkfs zeroed whole (EXT4_BG_INODE_ZEROED): all of them, unless lazy_itable_init
        self.zeroed_itables = frozenset(g.index for g in self.groups)

    # -- geometry (lib/ext2fs/initialize.c) -------------------------------------------------------------------------
    def _geometry(self, blocks: int, inodes: int) -> None:
        bs, bpg = self.block_size, self.blocks_per_group
        while True:
            groups = -(-(blocks - self.first_data_block) // bpg)
            ipg = -(-inodes // groups)
            ipg = min(ipg, bs * 8, 65536 - 8)
            itable = -(-ipg * INODE_SIZE // bs)
            ipg = itable * bs // INODE_SIZE
            ipg = max(ipg, 8) & ~7
            itable = -(-ipg * INODE_SIZE // bs)
            # the last group must hold its bitmaps and inode table (and its backup, if it has one) and 50 more
            overhead = 2 + itable
            if has_super(groups - 1):
                overhead += 1 + self._gdt_overhead(groups, blocks)
            rem = (blocks - self.first_data_block) % bpg
            if rem and rem < overhead + 50 and groups > 1:
                blocks -= rem          # ext2fs_initialize: a last group too small for its metadata is dropped
                continue
            break
        self.blocks = blocks
        self.groups_count = groups
        self.inodes_per_group = ipg
        self.inode_table_blocks = itable

    def _gdt_overhead(self, groups: int, blocks: int) -> int:
        desc_blocks = -(-groups // (self.block_size // DESC_SIZE))
        return desc_blocks + self._reserved_gdt_for(blocks, desc_blocks)

    def _reserved_gdt_for(self, blocks: int, desc_blocks: int) -> int:
        """lib/ext2fs/res_gdt.c calc_reserved_gdt_blocks: room to grow 1024-fold (or to 2^32 blocks)."""
        max_blocks = 0xFFFFFFFF
        if blocks < max_blocks // 1024:
            max_blocks = blocks * 1024
        rsv_groups = -(-(max_blocks - self.first_data_block) // self.blocks_per_group)
        rsv = -(-rsv_groups // (self.block_size // DESC_SIZE)) - desc_blocks
        return max(0, min(rsv, self.block_size // 4))

    def _reserved_gdt(self) -> int:
        return self._reserved_gdt_for(self.blocks, self.desc_blocks)

    # -- group tables (lib/ext2fs/alloc_tables.c with flex_bg) ------------------------------------------------------
    def _flexbg_offset(self, group: int, prev_block: int, rem_grps: int, elem_size: int) -> int:
        flexbg = group // FLEX_BG
        size = min(rem_grps * elem_size, self.blocks_per_group // 4)
        bitmap = self.bitmap
        if prev_block and prev_block < self.blocks:
            # the previous group's tables end here: take what follows, skipping small obstructions (a backup)
            found = bitmap.find(prev_block, prev_block + size, elem_size)
            if found is not None:
                return found
        start = self.groups[flexbg * FLEX_BG].first
        last_grp = min(group | (FLEX_BG - 1), self.groups_count - 1)
        last_blk = self.groups[last_grp].last
        for lo, count in ((start, size), (start, elem_size), (0, elem_size)):
            found = bitmap.find(lo, last_blk, count)
            if found is not None:
                return found
        return start

    def _allocate_tables(self, g: Group) -> None:
        last_grp = min(g.index | (FLEX_BG - 1), self.groups_count - 1)
        rem_grps = last_grp - g.index + 1
        table_offset = FLEX_BG
        prev = 0
        if g.index % FLEX_BG:
            prev = self.groups[g.index - 1].block_bitmap + 1
        elif last_grp == self.groups_count - 1:
            table_offset = last_grp & (FLEX_BG - 1)
            table_offset = table_offset + 1 if table_offset else FLEX_BG
        last_blk = self.groups[last_grp].last
        g.block_bitmap = self._take(self._flexbg_offset(g.index, prev, rem_grps, 1), last_blk, 1, g)
        prev = (self.groups[g.index - 1].inode_bitmap + 1 if g.index % FLEX_BG
                else g.block_bitmap + table_offset)
        g.inode_bitmap = self._take(self._flexbg_offset(g.index, prev, rem_grps, 1), last_blk, 1, g)
        prev = (self.groups[g.index - 1].inode_table + self.inode_table_blocks if g.index % FLEX_BG
                else g.inode_bitmap + table_offset)
        start = self._flexbg_offset(g.index, prev, rem_grps, self.inode_table_blocks)
        g.inode_table = self._take(start, last_blk, self.inode_table_blocks, g)

    def _take(self, start: int, last_blk: int, count: int, g: Group) -> int:
        found = self.bitmap.find(start, last_blk, count)
        if found is None:
            found = self.bitmap.find(g.first, last_blk, count)
        if found is None:
            raise UsageError("no room for a block group's tables")
        self.bitmap.mark(found, count)
        return found

    # -- the first inodes (misc/mke2fs.c, res_gdt.c, mkjournal.c) --------------------------------------------------
    def _root_and_special_inodes(self) -> None:
        bm = self.bitmap
        goal = self.first_data_block
        self.root_dir = bm.first_free(goal)
        bm.mark(self.root_dir)
        lpf = min(NDIR_BLOCKS, max(2, -(-LPF_BYTES // self.block_size)))
        self.lost_found = []
        for _ in range(lpf):
            b = bm.first_free(self.root_dir)
            bm.mark(b)
            self.lost_found.append(b)
        # ext2fs_create_resize_inode: the double-indirect block, with a goal past the first inode table
        goal = self.first_data_block + self.desc_blocks + self.reserved_gdt + 2 + self.inode_table_blocks
        self.resize_dind = bm.first_free(goal)
        bm.mark(self.resize_dind)
        self.journal_blocks = journal_blocks(self.blocks)
        self.journal = self._journal_extents()

    def _free_in(self, g: Group) -> int:
        return g.blocks - sum(self.bitmap.used[g.first:g.last + 1])

    def _journal_extents(self) -> list[tuple[int, int]]:
        """mkjournal.c get_midpoint_journal_block, then the blocks from there on, in extents of at most 32768."""
        self.journal_leaf = None
        if not self.journal_blocks:
            return []
        mid = (self.blocks - self.first_data_block) // 2
        group = (mid - self.first_data_block) // self.blocks_per_group if mid >= self.first_data_block else 0
        group = min(group, self.groups_count - 1)
        if group > FLEX_BG:
            group &= ~(FLEX_BG - 1)
            while group < self.groups_count and self._free_in(self.groups[group]) == 0:
                group += 1
            if group == self.groups_count:
                group = 0
            start = group
        else:
            start = group - 1 if group > 0 else group
        end = group + 1 if group + 1 < self.groups_count else group
        best = start
        for i in range(start + 1, end + 1):
            if self._free_in(self.groups[i]) > self._free_in(self.groups[best]):
                best = i
        goal = self.groups[best].first
        # more than the inode's four extents need a leaf block; ext2fs's fallocate takes the block before the goal
        # (seen on a 130 GiB file system: leaf at the last block of the group before the journal's)
        self.journal_leaf = None
        if -(-self.journal_blocks // EXTENT_MAX) > 4:
            self.journal_leaf = self.bitmap.first_free(goal - 1)
            self.bitmap.mark(self.journal_leaf)
        extents: list[tuple[int, int]] = []
        left = self.journal_blocks
        b = goal
        while left:
            b = self.bitmap.first_free(b)
            run = 0
            while run < left and run < EXTENT_MAX and b + run < self.blocks and not self.bitmap.used[b + run]:
                run += 1
            self.bitmap.mark(b, run)
            if extents and extents[-1][0] + extents[-1][1] == b and extents[-1][1] + run <= EXTENT_MAX:
                extents[-1] = (extents[-1][0], extents[-1][1] + run)
            else:
                extents.append((b, run))
            left -= run
            b += run
        return extents

    # -- what a reader asks -----------------------------------------------------------------------------------------
    @cached_property
    def block_uninit(self) -> frozenset[int]:
        """Groups mke2fs marks BLOCK_UNINIT (their block bitmap is never written): every group but the last whose
        blocks hold nothing but its own superblock backup and descriptors (lib/ext2fs/csum.c ext2fs_set_gdt_csum
        after mke2fs; the journal's and the flex tables' groups are in use)."""
        uninit = set()
        for g in self.groups[:-1]:
            meta = (1 + self.desc_blocks + self.reserved_gdt) if g.super else 0
            if sum(self.bitmap.used[g.first:g.last + 1]) == meta:
                uninit.add(g.index)
        return frozenset(uninit)

    @property
    def free_blocks(self) -> int:
        return self.blocks - sum(self.bitmap.used)

    def free_extents(self) -> list[tuple[int, int]]:
        """Runs (first block, count) of free blocks, in block order, never across a group boundary."""
        runs = []
        used = self.bitmap.used
        for g in self.groups:
            b = g.first
            while b <= g.last:
                if used[b]:
                    b += 1
                    continue
                start = b
                while b <= g.last and not used[b]:
                    b += 1
                runs.append((start, b - start))
        return runs
