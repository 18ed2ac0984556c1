"""A Linux 6.1 guest on a machine's disk: the tools a scenario's steps run (mkfs.ext4, mount, dd, rm, sync,
fstrim, blkdiscard, umount) over the block device and the file system, in simulated time.

Each method is a SimPy generator over the machine's simulation; what a step sends to the disk is recorded by the
block device (`dev.issued`), the way the kernel's block:block_rq_issue tracepoint records a real guest's.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

from emu.errors import UsageError
from scenarios.guest.content import Uniform
from scenarios.guest.ext4.fs import Committed, Ext4
from scenarios.guest.ext4.mkfs import MkfsOptions, mkfs
from scenarios.guest.fat.fs import FatOptions, fat32_layout, format_fat32
from scenarios.guest.linux.block import BlockDevice

SECTOR = 512
DD_BLOCK = 1 << 20          # dd bs=1M: the writes a file is made of (page cache granularity hides them)


class LinuxGuest:
    """One guest: its disk as /dev/XXX and, once made, an ext4 on it. `rng` is the run's seeded generator."""

    def __init__(self, machine, rng: random.Random) -> None:
        self.machine = machine
        self.rng = rng
        self.dev: BlockDevice | None = None
        self.fs: Ext4 | None = None

    def boot(self) -> Generator[Any, Any, None]:
        """The kernel finds the disk: its driver sets up the queue."""
        disk = self.machine.disk
        limits = yield from disk.queue_limits()
        self.dev = BlockDevice(disk, limits, self.machine.sectors, clock=lambda: self.machine.sim.now)

    def _fs(self) -> Ext4:
        if self.fs is None:
            raise UsageError("there is no file system: run mkfs first")
        return self.fs

    # -- the tools ----------------------------------------------------------------------------------------------------
    def mkfs(self, fstype: str, options: str) -> Generator[Any, Any, None]:
        if fstype not in ("ext4", "fat32"):
            raise UsageError(f"file system '{fstype}': Linux guests make ext4 or fat32 (vfat)")
        if self.fs is not None and self.fs.mounted:
            raise UsageError("mkfs: the file system is mounted")
        if fstype == "fat32":       # mkfs.fat -F 32 (dosfstools 4.2), mounted as vfat
            layout = fat32_layout(self.dev.sectors, FatOptions.parse_mkfs(options).spc, chooser="mkfs.fat")
            self.fs = yield from format_fat32(self.dev, layout)
            return
        # Linux 6.1 has ext4's lazy inode-table init, so mke2fs finds /sys/fs/ext4/features/lazy_itable_init
        layout = yield from mkfs(self.dev, MkfsOptions.parse(options), lazy_itable_default=True)
        self.fs = Ext4(self.dev, layout, self.rng)

    def mount(self, options: str) -> Generator[Any, Any, None]:
        fs = self._fs()
        if fs.mounted:
            raise UsageError("mount: already mounted")
        yield from fs.mount(options)

    def umount(self) -> Generator[Any, Any, None]:
        yield from self._fs().umount()

    def write(self, name: str, data: bytes, offset: int | None = None) -> Generator[Any, Any, None]:
        """dd of `data` into the file (appended, or at `offset`)."""
        yield from self._fs().write(name, data, offset)

    def delete(self, name: str) -> Generator[Any, Any, None]:
        yield from self._fs().delete(name)

    def truncate(self, name: str, size: int) -> Generator[Any, Any, None]:
        yield from self._fs().truncate(name, size)

    def sync(self) -> Generator[Any, Any, None]:
        fs = self.fs
        if fs is not None and fs.mounted:
            yield from fs.sync()
        else:
            yield from self.dev.fsync()

    def fstrim(self, offset: int = 0, length: int | None = None, minlen: int = 0) -> Generator[Any, Any, int]:
        return (yield from self._fs().fstrim(offset, length, minlen))

    def blkdiscard(self, offset: int = 0, length: int | None = None) -> Generator[Any, Any, None]:
        if self.fs is not None and self.fs.mounted:
            raise UsageError("blkdiscard: the device is in use by a mounted file system")
        length = self.dev.size - offset if length is None else length
        if not (yield from self.dev.discard(offset, length)):
            raise UsageError("blkdiscard: the device does not support discard (BLKDISCARD: Operation not supported)")
        self.fs = None          # its blocks are gone: mkfs again before the next mount

    def zero_fill(self, name: str, size: int | None) -> Generator[Any, Any, None]:
        """dd if=/dev/zero of=FILE (up to `size`, default until the file system is full), sync, rm, sync."""
        fs = self._fs()
        if size is None:
            size = fs.free_blocks * fs.bs
        whole = size - size % fs.bs
        if whole:           # a run of zeros, never made: a fill of the free space may be larger than memory
            yield from fs.write(name, Uniform("zeros", whole), 0)
        if size > whole:
            yield from fs.write(name, bytes(size - whole), whole)
        yield from fs.sync()
        yield from fs.delete(name)
        yield from fs.sync()

    @property
    def used_bytes(self) -> int:
        """What the guest's df shows as used (0 before mkfs)."""
        return 0 if self.fs is None else self.fs.used_bytes

    def checkpoint(self) -> Committed | None:
        """What the disk holds for the file system now (its last commit): a snapshot's content."""
        return None if self.fs is None else self.fs.committed

    def power_cut(self, state: Committed | None = None) -> None:
        """The VM stops, or its disk is put back to `state` (a snapshot reverted): the page cache and everything not
        committed are gone; the file system is as its journal left it (or as `state` holds it), unmounted."""
        if self.dev is not None:
            self.dev.cache.drop(0, self.dev.size // 4096)
        if self.fs is not None:
            self.fs.restore(state or self.fs.committed)

    def idle(self, seconds: float) -> Generator[Any, Any, None]:
        """Nothing asked of the guest for `seconds`: a mounted ext4's background work runs when it is due."""
        sim = self.machine.sim
        end = sim.now + seconds
        fs = self.fs
        while isinstance(fs, Ext4) and fs.mounted:
            due = fs.next_due()
            if due is None or due > end:
                break
            if due > sim.now:
                yield sim.timeout(due - sim.now)
            yield from fs.background()
        if end > sim.now:
            yield sim.timeout(end - sim.now)
