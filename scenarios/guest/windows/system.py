"""A Windows guest on a machine's disk: the tools a scenario's steps run (format, bringing the volume online and
offline, writing and deleting files, sync, Optimize-Volume -ReTrim, sdelete -z), over NTFS or FAT32, in simulated
time. The same method names and signatures as scenarios.guest.linux.system.LinuxGuest, so the Player drives both.

Whether a delete, a format or a retrim tells the disk is the guest profile's (scenarios.profiles.windows: delete
notifications per controller, DisableDeleteNotify, retrim); the requests themselves go out through the guest block
device in the Linux 6.1 drivers' shapes (scenarios.guest.select.driver_profile), an approximation of storport's.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

from emu.errors import UsageError
from scenarios.guest.fat.fs import ClusterFs, Committed, fat32_layout, format_fat32
from scenarios.guest.linux.block import BlockDevice
from scenarios.guest.ntfs.fs import FormatOptions, format_ntfs, ntfs_layout
from scenarios.profiles.windows import windows_config

SDELETE_CHUNK = 64 << 20        # sdelete's fill file is written in pieces of this size (memory, not behaviour)


class WindowsGuest:
    """One Windows guest of profile `name`: its disk and, once formatted, a volume on it."""

    def __init__(self, name: str, machine, rng: random.Random) -> None:
        self.name = name
        self.machine = machine
        self.rng = rng
        self.config = windows_config(name, machine.controller)
        self.dev: BlockDevice | None = None
        self.fs: ClusterFs | None = None

    def boot(self) -> Generator[Any, Any, None]:
        """The disk driver finds the disk and sets up its queue."""
        limits = yield from self.machine.disk.queue_limits()
        self.dev = BlockDevice(self.machine.disk, limits, self.machine.sectors, clock=lambda: self.machine.sim.now)

    def _fs(self) -> ClusterFs:
        if self.fs is None:
            raise UsageError("there is no volume: run mkfs (format) first")
        return self.fs

    def _mounted(self) -> ClusterFs:
        fs = self._fs()
        if not fs.mounted:
            raise UsageError("the volume is offline: mount it first")
        return fs

    # -- the tools ----------------------------------------------------------------------------------------------------
    def mkfs(self, fstype: str, options: str) -> Generator[Any, Any, None]:
        """format X: /FS:NTFS or /FS:FAT32 with `options` (/Q for a quick format)."""
        if self.fs is not None and self.fs.mounted:
            raise UsageError("format: the volume is online (umount it first)")
        opts = FormatOptions.parse(options)
        if opts.fs is not None and opts.fs != fstype:
            raise UsageError(f"format /FS:{opts.fs.upper()}: the scenario's file system is {fstype}")
        fs_config = self.config.fs
        if fstype == "ntfs":
            layout = ntfs_layout(self.dev.size, opts.cluster_size or 4096)
            notify = self.config.ntfs_discards
            self.fs = yield from format_ntfs(self.dev, layout, quick=opts.quick,
                                             trim=opts.quick and notify and fs_config.format_trims,
                                             zero_full=fs_config.full_format_zeroes, discard_on_delete=notify)
        elif fstype == "fat32":
            spc = None if opts.cluster_size is None else opts.cluster_size // 512
            layout = fat32_layout(self.dev.sectors, spc, chooser="windows")
            if not opts.quick:
                raise UsageError("format /FS:FAT32 without /Q: the full format's surface pass is modelled for NTFS "
                                 "only (use /Q)")
            self.fs = yield from format_fat32(self.dev, layout)
            self.fs.discard_on_delete = self.config.notifies and fs_config.fat_notifies
        else:
            raise UsageError(f"file system '{fstype}': Windows guests format ntfs or fat32")

    def mount(self, options: str) -> Generator[Any, Any, None]:
        """The volume comes online (a drive letter): nothing is written."""
        fs = self._fs()
        if fs.mounted:
            raise UsageError("mount: the volume is already online")
        discards = fs.discard_on_delete
        yield from fs.mount(options)
        fs.discard_on_delete = discards         # Windows' notifications are the profile's, not a mount option

    def umount(self) -> Generator[Any, Any, None]:
        """The volume goes offline (or the guest shuts down): everything cached is written and flushed."""
        yield from self._mounted().umount()

    def write(self, name: str, data: bytes, offset: int | None = None) -> Generator[Any, Any, None]:
        yield from self._mounted().write(name, data, offset)

    def delete(self, name: str) -> Generator[Any, Any, None]:
        yield from self._mounted().delete(name)

    def truncate(self, name: str, size: int) -> Generator[Any, Any, None]:
        yield from self._mounted().truncate(name, size)

    def sync(self) -> Generator[Any, Any, None]:
        """FlushFileBuffers of the volume (or of the disk when nothing is online)."""
        if self.fs is not None and self.fs.mounted:
            yield from self.fs.sync()
        else:
            yield from self.dev.flush()

    def fstrim(self, offset: int = 0, length: int | None = None, minlen: int = 0) -> Generator[Any, Any, int]:
        """Optimize-Volume -ReTrim (defrag /L): a trim of every free cluster; the bytes trimmed."""
        fs = self._mounted()
        if not self.config.fs.retrim:
            raise UsageError(f"fstrim: retrim needs Windows 8 or later ({self.name} has no Optimize-Volume -ReTrim)")
        if fs.kind != "ntfs":
            raise UsageError(f"fstrim: retrim of a {fs.kind} volume is not modelled (NTFS only)")
        if offset or length is not None or minlen:
            raise UsageError("fstrim: Optimize-Volume -ReTrim takes no range or minimum length")
        if not self.config.ntfs_discards:
            raise UsageError("fstrim: the operation requested is not supported by the hardware backing the volume "
                             f"(no delete notifications to a {self.machine.controller} disk on {self.name})")
        return (yield from fs.trim_free())

    def blkdiscard(self, offset: int = 0, length: int | None = None) -> Generator[Any, Any, None]:
        raise UsageError("blkdiscard: there is no such tool on Windows")
        yield  # pragma: no cover

    def zero_fill(self, name: str, size: int | None = None) -> Generator[Any, Any, None]:
        """sdelete -z: a file filling the free space, written with zeros, flushed, then deleted (which sends delete
        notifications where they are on), as SDelete does it (http://www.raxco.com/zero-fill-free-space.aspx,
        http://blog.whatsupduck.net/2012/03/powershell-alternative-to-sdelete.html)."""
        fs = self._mounted()
        yield from fs.write(name, b"")          # the fill file created first: its MFT record may take clusters
        size = fs.free_blocks * fs.bs if size is None else size
        zeros = bytes(min(size, SDELETE_CHUNK))
        for offset in range(0, size, SDELETE_CHUNK):
            yield from fs.write(name, zeros[:min(SDELETE_CHUNK, size - offset)])
        yield from fs.sync()
        yield from fs.delete(name)
        yield from fs.sync()

    sdelete = zero_fill

    def idle(self, seconds: float) -> Generator[Any, Any, None]:
        yield self.machine.sim.timeout(seconds)

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        """What the volume's properties show as used (0 before format)."""
        return 0 if self.fs is None else self.fs.used_bytes

    def checkpoint(self) -> Committed | None:
        """What the disk holds for the volume now: a snapshot's content."""
        return None if self.fs is None else self.fs.committed

    def power_cut(self, state: Committed | None = None) -> None:
        """The VM stops, or its disk is put back to `state`: the cache and everything not synced are gone."""
        if self.dev is not None:
            self.dev.cache.drop(0, self.dev.size // 4096)
        if self.fs is not None:
            self.fs.restore(state or self.fs.committed)
