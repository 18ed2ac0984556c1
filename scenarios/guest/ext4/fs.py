"""A mounted ext4 on Linux 6.1: files written through the page cache with delayed allocation, the block allocator,
the journal, deletes, FITRIM and online discard, and what each of them sends to the disk.

What is modelled and how (Linux 6.1 fs/ext4, checked against the kernel's own trace in tests/oracle/linux-6.1):

- Writes dirty pages of the file; blocks are chosen at writeback (delalloc), in chunks of at most 2048 blocks
  (MAX_WRITEPAGES_EXTENT_LEN). A regular file's first blocks are sought in the group after its inode's flex
  group start (ext4_inode_to_goal_block), later ones right after its last extent; mballoc normalises a request
  to the size table of ext4_mb_normalize_request and takes a buddy-aligned free chunk of that size when the size
  is a power of two (the criteria-0 scan), else the first free run that fits.
- Each chunk is one bio of contiguous pages: requests of max_sectors (the split pieces do not merge).
- Metadata blocks an operation changes join the running transaction (inode table block, inode and block
  bitmaps, group descriptor blocks, the directory block; the superblock for the orphan list of an unlink, and on
  the first regular-file open after mount, when ext4 records where it is mounted).
- `sync` is ksys_sync: data writeback, the commit, then the block device's writeback (committed metadata in
  place); with nothing to commit, a cache flush instead (ext4_sync_fs's barrier).
- Freed blocks become free (for allocation, FITRIM and online discard) when their transaction commits.
- FITRIM walks the groups and discards every free extent of at least minlen blocks, one discard call per extent;
  groups trimmed since mount and not freed into since are skipped (EXT4_GROUP_INFO_WAS_TRIMMED).
- `-o discard`: the extents a commit freed are discarded after it, in one plug.
- While the guest idles (`background`): the ext4lazyinit thread zeroes the inode tables a lazy mkfs left, jbd2
  commits a transaction older than the commit interval, the flusher writes back what has been dirty for 30 s
  (scenarios.guest.ext4.background).
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

from emu.errors import UsageError
from scenarios.guest.content import Uniform
from scenarios.guest.ext4.background import COMMIT_INTERVAL, DIRTY_EXPIRE, MAX_START_DELAY, WAIT_MULT, LazyInit
from scenarios.guest.ext4.journal import Journal
from scenarios.guest.ext4.layout import FIRST_INO, FLEX_BG, INODE_SIZE, Layout
from scenarios.guest.linux.block import BlockDevice

SECTOR = 512
PAGE = 4096
EXTENT_CHUNK = 2048             # fs/ext4/inode.c MAX_WRITEPAGES_EXTENT_LEN


@dataclass
class File:
    """A regular file: its inode, size, extents (logical block, physical block, count) and dirty pages."""

    ino: int
    size: int = 0
    extents: list[tuple[int, int, int]] = field(default_factory=list)
    dirty: dict[int, bytes] = field(default_factory=dict)        # file block -> content not yet written back
    uniform: list[tuple[int, int, Uniform]] = field(default_factory=list)   # dirty runs: (block, count, content)

    def physical(self, block: int) -> int | None:
        for logical, phys, n in self.extents:
            if logical <= block < logical + n:
                return phys + block - logical
        return None

    def run_at(self, block: int) -> tuple[int | None, int]:
        """(physical block, blocks) of the mapped run from `block` to its extent's end, or (None, blocks) of the
        hole from `block` to the next extent (a huge count past the last)."""
        hole = 1 << 62
        for i, (logical, phys, n) in enumerate(self.extents):
            if logical <= block < logical + n:
                end = logical + n
                for next_logical, next_phys, next_n in self.extents[i + 1:]:     # physically contiguous too
                    if next_logical != end or next_phys != phys + end - logical:
                        break
                    end += next_n
                return phys + block - logical, end - block
            if logical > block:
                hole = min(hole, logical - block)
        return None, hole

    @property
    def allocated(self) -> int:
        return sum(n for _, _, n in self.extents)


def _cut_runs(f: File, first: int, end: int) -> None:
    """Take blocks [first, end) out of the file's uniform runs (written over, or truncated away)."""
    kept = []
    for start, n, content in f.uniform:
        if start + n <= first or end <= start:
            kept.append((start, n, content))
            continue
        if start < first:
            kept.append((start, first - start, content))
        if end < start + n:
            kept.append((end, start + n - end, content))
    f.uniform = kept


def _normalized(size_bytes: int, block_size: int) -> int:
    """ext4_mb_normalize_request's size table: the bytes an allocation is rounded up to for a file of this size."""
    for limit in (16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20):
        if size_bytes <= limit:
            return limit
    for limit, size in ((4 << 20, 2 << 20), (8 << 20, 4 << 20)):
        if size_bytes <= limit:
            return size
    return 8 << 20


@dataclass(frozen=True)
class Committed:
    """A durable state of the file system: its files (extents and sizes), the block bitmap, the next inode, the
    groups whose inode tables are zeroed."""

    files: dict[str, File]
    used: bytearray
    next_ino: int
    zeroed: frozenset[int]                  # groups whose inode table is zeroed (EXT4_BG_INODE_ZEROED)


class Ext4:
    """One ext4 file system on `dev`, as mkfs laid it out; `mount()` before file operations."""

    def __init__(self, dev: BlockDevice, layout: Layout, rng: random.Random) -> None:
        self.dev = dev
        self.layout = layout
        self.rng = rng
        self.bs = layout.block_size
        self.used = layout.bitmap.used            # the block bitmap; it becomes the file system's own
        self.files: dict[str, File] = {}
        self.next_ino = FIRST_INO + 1
        self.mounted = False
        self.options: frozenset[str] = frozenset()
        self.journal: Journal | None = None
        self.freed_pending: list[tuple[int, int]] = []      # freed by the running transaction
        self.freed: list[tuple[int, int]] = []              # every extent a commit freed (what `emu explain` follows)
        self.trimmed: set[int] = set()
        self.dirty_home: set[int] = set()                   # committed metadata not yet written in place
        self.home_dirtied: float | None = None              # ... since when
        self.dirtied_when: dict[str, float] = {}            # files with dirty pages, since when (inode dirtied_when)
        self.zeroed = set(layout.zeroed_itables)
        self.lazyinit: LazyInit | None = None
        self.sampled_mount = False
        self.committed = self.checkpoint()                  # what the disk holds once the journal is replayed

    # -- what survives a power cut ----------------------------------------------------------------------------------
    def checkpoint(self) -> Committed:
        """The file system as it is now, without its page cache: what a commit makes durable."""
        return Committed({name: replace(f, extents=list(f.extents), dirty={}, uniform=[])
                          for name, f in self.files.items()},
                         bytearray(self.used), self.next_ino, frozenset(self.zeroed))

    def restore(self, state: Committed) -> None:
        """Go back to `state` (a power cut, a snapshot reverted): unmounted, dirty pages and the running
        transaction lost; the journal's committed blocks are replayed at the next mount, so the committed state is
        the file system's."""
        self.files = {name: replace(f, extents=list(f.extents), dirty={}, uniform=[])
                      for name, f in state.files.items()}
        self.used[:] = state.used
        self.next_ino = state.next_ino
        self.zeroed = set(state.zeroed)
        self.committed = self.checkpoint()      # what the disk holds now, until the next commit
        self.dirtied_when, self.home_dirtied, self.lazyinit = {}, None, None
        self.mounted = False
        self.journal = None
        self.freed_pending = []
        self.dirty_home = set()

    # -- blocks -----------------------------------------------------------------------------------------------------
    def _group_of(self, block: int) -> int:
        return (block - self.layout.first_data_block) // self.layout.blocks_per_group

    def _gdt_block(self, group: int) -> int:
        return self.layout.first_data_block + 1 + group // self.layout.desc_per_block

    def _itable_block(self, ino: int) -> int:
        ipg = self.layout.inodes_per_group
        g = (ino - 1) // ipg
        return self.layout.groups[g].inode_table + ((ino - 1) % ipg) * INODE_SIZE // self.bs

    def _sector(self, block: int) -> int:
        return block * self.bs // SECTOR

    @property
    def free_blocks(self) -> int:
        return self.used.count(0)

    @property
    def used_bytes(self) -> int:
        """What df shows as used: every block in use, metadata included."""
        return (self.layout.blocks - self.free_blocks) * self.bs

    # -- mount ------------------------------------------------------------------------------------------------------
    def mount(self, options: str = "") -> Generator[Any, Any, None]:
        """mount: the superblock is committed with REQ_FUA (ext4_setup_super); the journal is loaded, empty; with
        inode tables left to zero and without noinit_itable, the lazy-init request is registered, to run first at a
        random time within MAX_START_DELAY (ext4_li_request_new)."""
        opts = frozenset(o for o in options.split(",") if o)
        wait_mult = WAIT_MULT
        for o in opts:
            name, _, value = o.partition("=")
            if name == "init_itable" and value:
                if not value.isdigit():
                    raise UsageError(f"mount -o {o}: init_itable takes a whole number (the wait multiplier)")
                wait_mult = int(value)
        unknown = {o for o in opts if o.partition("=")[0] != "init_itable"} - {"discard", "nodiscard",
                                                                                "noinit_itable", "defaults"}
        if unknown:
            raise UsageError(f"mount -o {','.join(sorted(unknown))}: not modelled (known: discard, nodiscard, "
                             "noinit_itable, init_itable[=N])")
        self.options = opts
        pending = len(self.zeroed) < self.layout.groups_count
        if pending and "noinit_itable" not in opts:
            self.lazyinit = LazyInit(self.dev.clock() + self.rng.random() * MAX_START_DELAY, wait_mult)
        self.mounted = True
        self.sampled_mount = False
        self.trimmed = set()
        self.journal = Journal(self.dev, self.layout.journal, self.bs)
        yield from self._commit_super()

    def _commit_super(self) -> Generator[Any, Any, None]:
        first = self.layout.first_data_block
        yield from self.dev.write_sync(self._sector(first) if self.bs == 1024 else 0,
                                       self._filler("superblock", 1024 if self.bs == 1024 else self.bs))

    def umount(self) -> Generator[Any, Any, None]:
        """umount: sync_filesystem, then the journal destroyed (its superblock rewritten as the log empties) and
        the superblock committed."""
        self._need_mounted()
        committed = yield from self.sync()
        yield from self.dev.flush()
        # jbd2_journal_destroy: log-tail updates as the checkpoint completes, then the journal marked empty. Seen
        # three times when umount's own sync committed a transaction (tests/oracle/linux-6.1/fstrim-after-delete-*),
        # twice when everything was committed and written home before (lazy-init-*): an observed rule.
        for _ in range(3 if committed else 2):
            yield from self.journal.write_superblock()
            yield from self.dev.flush()
        yield from self._commit_super()
        self.mounted = False
        self.lazyinit = None        # ext4_unregister_li_request

    def _need_mounted(self) -> None:
        if not self.mounted:
            raise UsageError("the file system is not mounted")

    def _filler(self, role: str, size: int) -> bytes:
        text = f"ext4 {role} ".encode()
        return (text * (size // len(text) + 1))[:size]

    # -- files ------------------------------------------------------------------------------------------------------
    def _open(self, name: str, create: bool) -> File:
        self._need_mounted()
        f = self.files.get(name)
        if f is None:
            if not create:
                raise UsageError(f"no file '{name}'")
            f = File(self.next_ino)
            self.next_ino += 1
            self.files[name] = f
            g = (f.ino - 1) // self.layout.inodes_per_group
            self.journal.add(self._itable_block(f.ino), self.layout.groups[g].inode_bitmap, self._gdt_block(g),
                             self.layout.root_dir)
        if not self.sampled_mount:
            # ext4_sample_last_mounted: the first open of a regular file records the mount point in the superblock
            self.sampled_mount = True
            self.journal.add(self.layout.first_data_block)
        return f

    def write(self, name: str, data: bytes | Uniform, offset: int | None = None) -> Generator[Any, Any, None]:
        """Buffered write of `data` at `offset` (default: the end of the file); nothing reaches the disk yet."""
        f = self._open(name, create=True)
        offset = f.size if offset is None else offset
        self.dirtied_when.setdefault(name, self.dev.clock())
        if isinstance(data, Uniform):
            self._write_uniform(f, offset, data)
            return
        end = offset + len(data)
        bs = self.bs
        _cut_runs(f, offset // bs, -(-end // bs))
        for block in range(offset // bs, -(-end // bs)):
            lo, hi = max(offset, block * bs), min(end, (block + 1) * bs)
            page = f.dirty.get(block)
            if page is None:
                page = bytes(bs)
                if lo - block * bs or hi - (block + 1) * bs:
                    if f.physical(block) is not None:
                        page = yield from self.dev.pread(f.physical(block) * bs, bs)
            buf = bytearray(page)
            buf[lo - block * bs:hi - block * bs] = data[lo - offset:hi - offset]
            f.dirty[block] = bytes(buf)
        f.size = max(f.size, end)
        yield from ()

    def _write_uniform(self, f: File, offset: int, data: Uniform) -> None:
        bs = self.bs
        if offset % bs or data.length % bs:
            raise UsageError(f"a synthetic write must be whole {bs}-byte blocks (offset {offset}, {data.length} bytes)")
        first, count = offset // bs, data.length // bs
        for block in [b for b in f.dirty if first <= b < first + count]:
            del f.dirty[block]
        _cut_runs(f, first, first + count)
        f.uniform.append((first, count, data))
        f.uniform.sort(key=lambda run: run[0])
        f.size = max(f.size, offset + data.length)

    def read(self, name: str) -> Generator[Any, Any, bytes]:
        """The file's content as a reader sees it (dirty pages, else the disk, holes as zeros)."""
        f = self._open(name, create=False)
        out = bytearray()
        runs = {b: content for first, n, content in f.uniform for b in range(first, first + n)}
        for block in range(-(-f.size // self.bs)):
            if block in f.dirty:
                out += f.dirty[block]
            elif block in runs:
                out += runs[block].page(self.bs)
            elif f.physical(block) is not None:
                out += yield from self.dev.pread(f.physical(block) * self.bs, self.bs)
            else:
                out += bytes(self.bs)
        return bytes(out[:f.size])

    def delete(self, name: str) -> Generator[Any, Any, None]:
        """unlink of a closed file: its blocks are freed with the transaction (the orphan list on the superblock
        while it is torn down)."""
        f = self._open(name, create=False)
        del self.files[name]
        self.dirtied_when.pop(name, None)
        g = (f.ino - 1) // self.layout.inodes_per_group
        self.journal.add(self._itable_block(f.ino), self.layout.groups[g].inode_bitmap, self._gdt_block(g),
                         self.layout.root_dir, self.layout.first_data_block)
        self._free_extents(f, 0)
        yield from ()

    def truncate(self, name: str, size: int) -> Generator[Any, Any, None]:
        f = self._open(name, create=False)
        keep = -(-size // self.bs)
        f.dirty = {b: d for b, d in f.dirty.items() if b < keep}
        _cut_runs(f, keep, 1 << 62)
        if size < f.size:
            self.journal.add(self._itable_block(f.ino), self.layout.first_data_block)
            self._free_extents(f, keep)
        f.size = size
        yield from ()

    def _free_extents(self, f: File, keep: int) -> None:
        kept = []
        for logical, phys, n in f.extents:
            if logical + n <= keep:
                kept.append((logical, phys, n))
                continue
            cut = max(0, keep - logical)
            if cut:
                kept.append((logical, phys, cut))
            start, count = phys + cut, n - cut
            self.freed_pending.append((start, count))
            for g in range(self._group_of(start), self._group_of(start + count - 1) + 1):
                self.journal.add(self.layout.groups[g].block_bitmap, self._gdt_block(g))
        f.extents = kept

    # -- allocation -------------------------------------------------------------------------------------------------
    def _goal(self, f: File, block: int) -> int:
        for logical, phys, _n in reversed(f.extents):
            if logical <= block:
                return phys + (block - logical)
        g = (f.ino - 1) // self.layout.inodes_per_group
        g = (g & ~(FLEX_BG - 1)) + 1              # ext4_inode_to_goal_block: regular files skip the flex group's first
        g = min(g, self.layout.groups_count - 1)
        return self.layout.groups[g].first

    def _find(self, goal: int, count: int, aligned: bool) -> int | None:
        """A free run of `count` blocks at or after `goal`, group by group and wrapping; aligned runs start on a
        multiple of `count` within their group (a buddy of that order)."""
        used = self.used
        groups = self.layout.groups
        g0 = self._group_of(goal)
        for k in range(len(groups)):
            g = groups[(g0 + k) % len(groups)]
            start = goal if k == 0 else g.first
            if aligned:
                rel = start - g.first
                start = g.first + -(-rel // count) * count
            b = start
            while b + count - 1 <= g.last:
                window = used[b:b + count]
                if not any(window):
                    return b
                if aligned:
                    b += count
                else:
                    b += window.rindex(1) + 1
        return None

    def _allocate(self, f: File, block: int, count: int) -> tuple[int, int]:
        """mballoc for `count` blocks of `f` from file block `block`: (first physical block, blocks given).

        ext4_mb_regular_allocator: the goal itself when the run there is free (ext4_mb_find_by_goal); else a
        buddy-aligned chunk of the normalised size when that is a power of two, else the first free run. The part
        of a normalised chunk beyond `count` is the inode's preallocation; the next allocation's goal (right after
        the last extent) takes it, so it is not tracked apart."""
        goal = self._goal(f, block)
        used = self.used
        if goal + count <= len(used) and not any(used[goal:goal + count]):
            start, n = goal, count
        else:
            size = count if f.extents else max(count, _normalized(max(f.size, (block + count) * self.bs), self.bs)
                                               // self.bs)
            size = min(size, EXTENT_CHUNK)
            aligned = size & (size - 1) == 0
            start = self._find(goal, size, aligned)
            n = count
            while start is None and n:
                start = self._find(goal, n, aligned=False)
                if start is None:
                    n //= 2
            if not n:
                raise UsageError("the file system is full")
        used[start:start + n] = b"\1" * n
        return start, n

    # -- writeback, commit, sync ------------------------------------------------------------------------------------
    def _writeback_file(self, f: File) -> Generator[Any, Any, None]:
        """ext4_writepages: the file's dirty blocks in order, in stretches of contiguous file blocks of at most one
        chunk; unmapped blocks get their space now (delalloc), and every physically contiguous piece is one bio."""
        for first, count, content in self._stretches(f):
            pos = 0
            while pos < count:
                block = first + pos
                phys, length = f.run_at(block)
                length = min(length, count - pos)
                if phys is None:
                    phys, length = self._allocate(f, block, length)
                    self._add_extent(f, block, phys, length)
                    for g in range(self._group_of(phys), self._group_of(phys + length - 1) + 1):
                        self.journal.add(self.layout.groups[g].block_bitmap, self._gdt_block(g))
                    self.journal.add(self._itable_block(f.ino))
                yield from self.dev.submit_write(self._sector(phys), content(pos, length), contiguous=True)
                pos += length
        f.dirty, f.uniform = {}, []

    def _stretches(self, f: File) -> list[tuple[int, int, Any]]:
        """The dirty blocks as (first block, count, content(pos, n)) stretches of at most one chunk, in block order:
        runs of dirty pages, and the uniform runs."""
        out = []
        blocks = sorted(f.dirty)
        i = 0
        while i < len(blocks):
            j = i
            while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1 and j + 1 - i < EXTENT_CHUNK:
                j += 1
            pages = [f.dirty[b] for b in blocks[i:j + 1]]
            out.append((blocks[i], j + 1 - i, lambda pos, n, pages=pages: b"".join(pages[pos:pos + n])))
            i = j + 1
        for first, count, content in f.uniform:
            for start in range(first, first + count, EXTENT_CHUNK):
                n = min(EXTENT_CHUNK, first + count - start)
                out.append((start, n, lambda _pos, k, content=content: content.view(k * self.bs)))
        return sorted(out, key=lambda stretch: stretch[0])

    def _add_extent(self, f: File, block: int, phys: int, n: int) -> None:
        if f.extents:
            logical, last, count = f.extents[-1]
            if logical + count == block and last + count == phys and count + n <= 32768:
                f.extents[-1] = (logical, last, count + n)
                return
        f.extents.append((block, phys, n))
        f.extents.sort()

    def _commit(self) -> Generator[Any, Any, bool]:
        """Commit the running transaction; True when there was one. Freed blocks become free, and with -o discard
        they are discarded."""
        blocks = yield from self.journal.commit()
        if not blocks:
            return False
        if self.home_dirtied is None:
            self.home_dirtied = self.dev.clock()
        self.dirty_home.update(blocks)
        freed, self.freed_pending = self.freed_pending, []
        self.freed.extend(freed)
        for start, count in freed:
            self.used[start:start + count] = bytes(count)
            for g in range(self._group_of(start), self._group_of(start + count - 1) + 1):
                self.trimmed.discard(g)
        self.committed = self.checkpoint()
        if "discard" in self.options and freed:
            yield from self.dev.discard_ranges([(self._sector(s), n * self.bs // SECTOR) for s, n in freed])
        return True

    def _write_home(self) -> Generator[Any, Any, None]:
        """The block device's writeback: committed metadata blocks at their home location."""
        blocks, self.dirty_home, self.home_dirtied = sorted(self.dirty_home), set(), None
        yield from self.dev.submit_writes((self._sector(b), self._filler("metadata", self.bs)) for b in blocks)

    def sync(self) -> Generator[Any, Any, bool]:
        """sync(2) as ksys_sync does it for this file system; True when it committed a transaction."""
        self._need_mounted()
        for f in self.files.values():
            yield from self._writeback_file(f)
        self.dirtied_when = {}
        committed = yield from self._commit()
        if not committed:
            yield from self.dev.flush()
        yield from self._write_home()
        return committed

    # -- while the guest idles --------------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        """When the next background work is due (None: none is pending): the lazy-init thread's next group, the
        running transaction's commit, the flusher's writeback of what has been dirty for DIRTY_EXPIRE."""
        due = []
        if self.lazyinit is not None:
            due.append(self.lazyinit.next_sched)
        if self.journal is not None and self.journal.started is not None:
            due.append(self.journal.started + COMMIT_INTERVAL)
        dirtied = list(self.dirtied_when.values()) + ([self.home_dirtied] if self.home_dirtied is not None else [])
        if dirtied:
            due.append(min(dirtied) + DIRTY_EXPIRE)
        return min(due) if due else None

    def background(self) -> Generator[Any, Any, None]:
        """Run the background work due now: a lazy-init group, a commit, the flusher (files first, by the time they
        were dirtied, then the block device's metadata)."""
        self._need_mounted()
        now = self.dev.clock()
        if self.lazyinit is not None and self.lazyinit.next_sched <= now:
            yield from self._lazy_init_group()
        if self.journal.started is not None and self.journal.started + COMMIT_INTERVAL <= now:
            yield from self._commit()
        for name, since in sorted(self.dirtied_when.items(), key=lambda item: item[1]):
            if since + DIRTY_EXPIRE <= now:
                yield from self._writeback_file(self.files[name])
                del self.dirtied_when[name]
        if self.home_dirtied is not None and self.home_dirtied + DIRTY_EXPIRE <= now:
            yield from self._write_home()

    def _lazy_init_group(self) -> Generator[Any, Any, None]:
        """ext4_run_li_request in its inode-table mode: the next group not zeroed gets ext4_init_inode_table (the
        table's blocks past those of inodes in use, zeroed with unmap allowed; a flush while the pause is 0), its
        descriptor journalled; then the thread sleeps for the pause. No group left: the request ends."""
        li, layout = self.lazyinit, self.layout
        group = next((g for g in range(li.next_group, layout.groups_count) if g not in self.zeroed), None)
        if group is None:
            self.lazyinit = None
            return
        start = self.dev.clock()
        ipg, per_block = layout.inodes_per_group, self.bs // INODE_SIZE
        in_use = max(0, min(self.next_ino - 1, (group + 1) * ipg) - group * ipg)
        used_blocks = -(-in_use // per_block)
        count = layout.inode_table_blocks - used_blocks
        if count > 0:
            first = layout.groups[group].inode_table + used_blocks
            yield from self.dev.zeroout(first * self.bs, count * self.bs, unmap=True)
        if li.timeout == 0:
            yield from self.dev.flush()
        li.paused(self.dev.clock() - start)
        self.zeroed.add(group)
        self.journal.add(self._gdt_block(group))
        li.next_sched, li.next_group = self.dev.clock() + li.timeout, group + 1

    # -- FITRIM -----------------------------------------------------------------------------------------------------
    def fstrim(self, offset: int = 0, length: int | None = None, minlen: int = 0) -> Generator[Any, Any, int]:
        """FITRIM over [offset, offset+length) (bytes), extents of at least `minlen` bytes (at least the queue's
        discard granularity); the bytes trimmed, as fstrim prints them."""
        self._need_mounted()
        limits = self.dev.limits.discard
        if limits is None:
            raise UsageError("fstrim: the discard operation is not supported")
        bs = self.bs
        granularity = limits.granularity * SECTOR
        min_blocks = max(1, -(-max(minlen, granularity) // bs))
        first = offset // bs
        last = self.layout.blocks - 1 if length is None else min(self.layout.blocks - 1, (offset + length) // bs - 1)
        trimmed = 0
        for g in self.layout.groups:
            if g.last < first or g.first > last:
                continue
            if g.index in self.trimmed:
                continue
            b = max(g.first, first)
            end = min(g.last, last)
            while b <= end:
                if self.used[b]:
                    b += 1
                    continue
                start = b
                while b <= end and not self.used[b]:
                    b += 1
                if b - start >= min_blocks:
                    yield from self.dev.discard_ranges([(self._sector(start), (b - start) * bs // SECTOR)])
                    trimmed += (b - start) * bs
            self.trimmed.add(g.index)
        return trimmed


__all__ = ["Ext4", "File"]
