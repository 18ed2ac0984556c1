"""FAT32 on a guest's disk (Windows' format and FAT driver, Linux's mkfs.fat and vfat), and the cluster volume both it
and NTFS (scenarios.guest.ntfs.fs) are made of.

The cluster volume (`ClusterFs`): the volume is the whole disk (no partition table: a "superfloppy"), cut into
blocks of the cluster size from offset 0, so block numbers are what `emu explain` follows (`used`, `freed`, `bs`).
A file's clusters are allocated when it is written (FAT and NTFS have no delayed allocation), next-fit: the first
free run at or after the last allocation, wrapping; a reserved zone (NTFS's MFT zone) is used only when nothing
else is free. Data stays in the cache until `sync` (the cache manager's lazy writer, Linux's writeback), then goes
out in physically contiguous runs; changed metadata sectors follow, then a cache flush. A delete frees its clusters
at once (no journal delay); when the volume sends delete notifications, the freed runs are discarded right away.

FAT32 (Microsoft's FAT32 File System Specification, fatgen103, 2000; checked against dosfstools 4.2's mkfs.fat in
tests/scenarios/guest/test_fat.py): 32 reserved sectors (boot sector 0, FSInfo 1, backup boot sector 6), two FATs
of 32-bit entries, the data area aligned to a cluster as mkfs.fat aligns it, the root directory in cluster 2.
Sectors per cluster by volume size: mkfs.fat follows fatgen103's DskTableFAT32 (measured); Windows' format uses
the table of Microsoft KB 140365 (https://mskb.pkisolutions.com/kb/140365; the same figures in
https://www.serverwatch.com/tutorials/article.php/10825_1467061_5/ for Windows XP). Metadata contents are
placeholders (each names what it is, never all zeros): the model decides where the file system writes.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from emu.errors import UsageError

SECTOR = 512
DATA_CHUNK = 8 << 20            # a sync's data goes out in writes of at most this (the block layer splits them)
DIR_ENTRY = 32
ENTRIES_PER_FILE = 2            # one long-name entry and the 8.3 entry (names here are short)


def filler(role: str, size: int) -> bytes:
    """A metadata block's placeholder: never all zeros, so detect-zeroes sees metadata as data."""
    text = f"{role} ".encode()
    return (text * (size // len(text) + 1))[:size]


@dataclass
class File:
    """A file: its number (MFT record, directory slot), size, extents (logical cluster, physical block, count) and
    the clusters written but not yet on the disk."""

    ino: int
    size: int = 0
    extents: list[tuple[int, int, int]] = field(default_factory=list)
    dirty: dict[int, bytes] = field(default_factory=dict)

    def physical(self, block: int) -> int | None:
        for logical, phys, n in self.extents:
            if logical <= block < logical + n:
                return phys + block - logical
        return None

    @property
    def allocated(self) -> int:
        return sum(n for _, _, n in self.extents)


@dataclass(frozen=True)
class Committed:
    """A durable state: the files (extents, sizes), the cluster bitmap, the next file number, the file system's
    own counters (`extra`)."""

    files: dict[str, File]
    used: bytearray
    next_ino: int
    extra: tuple = ()


def _copy(files: dict[str, File]) -> dict[str, File]:
    return {name: replace(f, extents=list(f.extents), dirty={}) for name, f in files.items()}


class ClusterFs:
    """A volume of `blocks` clusters of `bs` bytes on `dev`; `used` marks metadata and file clusters; `zone` is
    [start, end) of blocks kept for last; `discard_on_delete` makes a delete discard what it freed."""

    kind = "volume"

    def __init__(self, dev, bs: int, used: bytearray, *, first_ino: int, cursor: int,
                 zone: tuple[int, int] = (0, 0), discard_on_delete: bool = False) -> None:
        self.dev = dev
        self.bs = bs
        self.blocks = len(used)
        self.used = used
        self.zone = zone
        self.discard_on_delete = discard_on_delete
        self.files: dict[str, File] = {}
        self.next_ino = first_ino
        self.cursor = cursor
        self.mounted = False
        self.options: frozenset[str] = frozenset()
        self.freed: list[tuple[int, int]] = []      # every run a delete or truncate freed (what `emu explain` follows)
        self.meta: dict[int, bytes] = {}            # metadata sectors changed since the last sync
        self.committed = self.checkpoint()
        self._zero = bytes(bs)

    # -- durable state ------------------------------------------------------------------------------------------------
    def _extra(self) -> tuple:
        return ()

    def _set_extra(self, extra: tuple) -> None:
        """Put back the file system's own counters of a durable state."""

    def checkpoint(self) -> Committed:
        """The volume as it is now, without its cache: what a sync makes durable."""
        return Committed(_copy(self.files), bytearray(self.used), self.next_ino, self._extra())

    def restore(self, state: Committed) -> None:
        """Go back to `state` (a power cut, a snapshot reverted): unmounted, the cache and unsynced changes lost."""
        self.files = _copy(state.files)
        self.used[:] = state.used
        self.next_ino = state.next_ino
        self._set_extra(state.extra)
        self.committed = self.checkpoint()      # what the disk holds now, until the next sync
        self.meta = {}
        self.mounted = False

    # -- space ----------------------------------------------------------------------------------------------------
    @property
    def free_blocks(self) -> int:
        return self.blocks - sum(self.used)

    @property
    def used_bytes(self) -> int:
        """What the guest reports as used: every cluster in use, metadata included."""
        return (self.blocks - self.free_blocks) * self.bs

    def free_runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """(first block, count) of every free run in [start, end)."""
        end = self.blocks if end is None else end
        used, pos = self.used, start
        while pos < end:
            s = used.find(0, pos, end)
            if s < 0:
                return
            e = used.find(1, s, end)
            e = end if e < 0 else e
            yield s, e - s
            pos = e

    def _sector(self, block: int) -> int:
        return block * self.bs // SECTOR

    def _allocate(self, count: int) -> list[tuple[int, int]]:
        """Runs of `count` free blocks, next-fit from the cursor (wrapping), the zone last."""
        if count > self.free_blocks:
            raise UsageError(f"{self.kind}: the volume is full ({count * self.bs} bytes asked, "
                             f"{self.free_blocks * self.bs} free)")
        z0, z1 = self.zone
        runs: list[tuple[int, int]] = []
        for lo, hi, in_zone in ((self.cursor, self.blocks, False), (0, self.cursor, False), (z0, z1, True)):
            for s, n in self.free_runs(lo, hi):
                pieces = [(s, n)] if in_zone else [(a, b - a) for a, b in ((s, min(s + n, z0)),
                                                                          (max(s, z1), s + n)) if a < b]
                for a, m in pieces:
                    take = min(m, count)
                    self.used[a:a + take] = b"\1" * take
                    runs.append((a, take))
                    count -= take
                    self.cursor = a + take
                    if not count:
                        return runs
        raise AssertionError("free blocks counted but not found")  # pragma: no cover

    # -- hooks: the metadata each change dirties --------------------------------------------------------------------
    def _created(self, f: File) -> None:
        """A new file's entry (directory entry, MFT record)."""

    def _changed(self, f: File) -> None:
        """A file's size or extents changed."""

    def _removed(self, f: File) -> None:
        """A file's entry is gone."""

    def _bitmap(self, runs: list[tuple[int, int]]) -> None:
        """Blocks of `runs` were allocated or freed."""

    def _dirty(self, sector: int, role: str, size: int = SECTOR) -> None:
        self.meta[sector] = filler(f"{self.kind} {role}", size)

    # -- mount ---------------------------------------------------------------------------------------------------
    def _need_mounted(self) -> None:
        if not self.mounted:
            raise UsageError("the file system is not mounted")

    def mount(self, options: str = "") -> Generator[Any, Any, None]:
        self.options = frozenset(o for o in options.split(",") if o)
        self.mounted = True
        yield from ()

    def umount(self) -> Generator[Any, Any, None]:
        self._need_mounted()
        yield from self.sync()
        self.mounted = False

    # -- files -------------------------------------------------------------------------------------------------
    def _open(self, name: str, create: bool) -> File:
        self._need_mounted()
        f = self.files.get(name)
        if f is None:
            if not create:
                raise UsageError(f"no file '{name}'")
            f = File(self.next_ino)
            self.next_ino += 1
            self.files[name] = f
            self._created(f)
        return f

    def _map(self, f: File, first: int, last: int) -> None:
        """Give clusters [first, last] of `f` their blocks where they have none."""
        block = first
        while block <= last:
            if f.physical(block) is not None:
                block += 1
                continue
            n = 1
            while block + n <= last and f.physical(block + n) is None:
                n += 1
            runs = self._allocate(n)
            for phys, m in runs:
                self._add_extent(f, block, phys, m)
                block += m
            self._bitmap(runs)
        self._changed(f)

    @staticmethod
    def _add_extent(f: File, block: int, phys: int, n: int) -> None:
        for i, (logical, start, count) in enumerate(f.extents):
            if logical + count == block and start + count == phys:
                f.extents[i] = (logical, start, count + n)
                return
        f.extents.append((block, phys, n))
        f.extents.sort()

    def write(self, name: str, data: bytes, offset: int | None = None) -> Generator[Any, Any, None]:
        """A cached write of `data` at `offset` (default: the end of the file): its clusters are allocated now, the
        bytes reach the disk at the next sync."""
        f = self._open(name, create=True)
        offset = f.size if offset is None else offset
        bs = self.bs
        run = getattr(data, "length", None)     # a run of one repeated page (content.Uniform), never made whole
        if run is not None:
            yield from self._write_run(f, offset, run, data.page(bs))
            return
        end = offset + len(data)
        if not data:
            return
        first, last = offset // bs, (end - 1) // bs
        partial = [b for b in {first, last} if b not in f.dirty and f.physical(b) is not None
                   and (max(offset, b * bs) > b * bs or min(end, (b + 1) * bs) < (b + 1) * bs)]
        old = {}
        for b in partial:          # a cluster only partly overwritten is read in first
            old[b] = yield from self.dev.read_requests(self._sector(f.physical(b)), bs // SECTOR)
        self._map(f, first, last)
        zero = self._zero
        for block in range(first, last + 1):
            lo, hi = max(offset, block * bs), min(end, (block + 1) * bs)
            piece = data[lo - offset:hi - offset]
            if hi - lo == bs:
                f.dirty[block] = zero if piece == zero else piece
                continue
            page = f.dirty.get(block) or old.get(block) or zero
            buf = bytearray(page)
            buf[lo - block * bs:hi - block * bs] = piece
            f.dirty[block] = bytes(buf)
        f.size = max(f.size, end)

    def _write_run(self, f: File, offset: int, length: int, page: bytes) -> Generator[Any, Any, None]:
        """`length` bytes of `page` repeated, at a cluster-aligned `offset`: every cluster shares the one page."""
        if offset % self.bs or length % self.bs:
            raise UsageError(f"{self.kind}: a repeated-page write must cover whole clusters")
        if length:
            first, last = offset // self.bs, (offset + length) // self.bs - 1
            self._map(f, first, last)
            page = self._zero if page == self._zero else page
            f.dirty.update(dict.fromkeys(range(first, last + 1), page))
            f.size = max(f.size, offset + length)
        yield from ()

    def read(self, name: str) -> Generator[Any, Any, bytes]:
        """The file's content as a reader sees it: the cache, else the disk; clusters never written read zeros
        (NTFS's valid data length, FAT's zeroed clusters)."""
        f = self._open(name, create=False)
        bs = self.bs
        out = bytearray()
        for block in range(-(-f.size // bs)):
            if block in f.dirty:
                out += f.dirty[block]
            elif f.physical(block) is not None:
                out += yield from self.dev.read_requests(self._sector(f.physical(block)), bs // SECTOR)
            else:
                out += self._zero
        return bytes(out[:f.size])

    def _free(self, f: File, keep: int) -> list[tuple[int, int]]:
        """Free the clusters of `f` from cluster `keep` on; the runs freed."""
        kept, runs = [], []
        for logical, phys, n in f.extents:
            if logical + n <= keep:
                kept.append((logical, phys, n))
                continue
            cut = max(0, keep - logical)
            if cut:
                kept.append((logical, phys, cut))
            runs.append((phys + cut, n - cut))
        f.extents = kept
        f.dirty = {b: d for b, d in f.dirty.items() if b < keep}
        for start, count in runs:
            self.used[start:start + count] = bytes(count)
        self.freed.extend(runs)
        self._bitmap(runs)
        return runs

    def _notify(self, runs: list[tuple[int, int]]) -> Generator[Any, Any, None]:
        """Delete notifications: the freed runs discarded now, in one plug (nothing when the disk takes none)."""
        if self.discard_on_delete and runs:
            yield from self.dev.discard_ranges([(self._sector(s), n * self.bs // SECTOR) for s, n in sorted(runs)])

    def delete(self, name: str) -> Generator[Any, Any, None]:
        """Remove the file: its entry and clusters are freed at once; with notifications they are discarded."""
        f = self._open(name, create=False)
        del self.files[name]
        self._removed(f)
        runs = self._free(f, 0)
        yield from self._notify(runs)

    def truncate(self, name: str, size: int) -> Generator[Any, Any, None]:
        f = self._open(name, create=False)
        keep = -(-size // self.bs)
        runs = self._free(f, keep) if size < f.size else []
        if size < f.size and size % self.bs and (size // self.bs) in f.dirty:
            block = size // self.bs
            buf = bytearray(f.dirty[block])
            buf[size % self.bs:] = bytes(self.bs - size % self.bs)
            f.dirty[block] = bytes(buf)
        f.size = size
        self._changed(f)
        yield from self._notify(runs)

    # -- sync ----------------------------------------------------------------------------------------------------
    def _write_data(self) -> Generator[Any, Any, None]:
        """Every cached cluster to its block, in block order, physically contiguous clusters in one write."""
        pending = []
        for f in self.files.values():
            pending += [(f.physical(b), d) for b, d in f.dirty.items()]
            f.dirty = {}
        pending.sort(key=lambda item: item[0])
        i = 0
        while i < len(pending):
            j = i + 1
            while (j < len(pending) and pending[j][0] == pending[j - 1][0] + 1
                   and (j - i + 1) * self.bs <= DATA_CHUNK):
                j += 1
            yield from self.dev.submit_write(self._sector(pending[i][0]), b"".join(d for _, d in pending[i:j]))
            i = j

    def _write_meta(self) -> Generator[Any, Any, None]:
        meta, self.meta = self.meta, {}
        if meta:
            yield from self.dev.submit_writes(sorted(meta.items()))

    def sync(self) -> Generator[Any, Any, None]:
        """Data, then metadata, then a cache flush; the volume as it is becomes durable."""
        if self.mounted:
            yield from self._write_data()
        yield from self._write_meta()
        yield from self.dev.flush()
        self.committed = self.checkpoint()

    # -- bulk tools ------------------------------------------------------------------------------------------------
    def fstrim(self, offset: int = 0, length: int | None = None, minlen: int = 0) -> Generator[Any, Any, int]:
        """FITRIM (Linux's vfat has one since 4.19, "fat: add FITRIM ioctl for FAT file system": unsourced in the
        research notes) over the blocks of [offset, offset + length)."""
        end = self.blocks if length is None else min(self.blocks, (offset + length) // self.bs)
        return (yield from self.trim_free(minlen, -(-offset // self.bs), end))

    def trim_free(self, minlen: int = 0, start: int = 0, end: int | None = None) -> Generator[Any, Any, int]:
        """Discard every free run (of blocks in [start, end)) of at least `minlen` bytes and of the disk's discard
        granularity; the bytes discarded."""
        self._need_mounted()
        limits = self.dev.limits.discard
        if limits is None:
            raise UsageError(f"{self.kind}: the disk does not support discard (trim)")
        min_blocks = max(1, -(-max(minlen, limits.granularity * SECTOR) // self.bs))
        trimmed = 0
        for first, n in list(self.free_runs(start, end)):
            if n >= min_blocks:
                yield from self.dev.discard_ranges([(self._sector(first), n * self.bs // SECTOR)])
                trimmed += n * self.bs
        return trimmed


# -- FAT32 ---------------------------------------------------------------------------------------------------------
RESERVED = 32                   # fatgen103: BPB_RsvdSecCnt 32 for FAT32; mkfs.fat 4.2's default (measured)
NUM_FATS = 2                    # fatgen103: BPB_NumFATs 2; mkfs.fat's default
FSINFO_SECTOR = 1               # fatgen103: BPB_FSInfo usually 1
BACKUP_BOOT = 6                 # fatgen103: BPB_BkBootSec 6
ROOT_CLUSTER = 2                # fatgen103: BPB_RootClus, usually 2
MIN_FAT32_SECTORS = 66600       # fatgen103 DskTableFAT32: smaller disks are an error for FAT32
MAX_WINDOWS_FAT32 = 32 << 30    # KB 140365 / serverwatch: Windows formats FAT32 volumes of at most 32 GB
MIN_WINDOWS_FAT32 = 32 << 20    # KB 140365: FAT32 "not supported" below 32 MB (the 16-32 MB row)

# fatgen103 DskTableFAT32: (disk sectors up to, sectors per cluster); mkfs.fat 4.2 picks the same (measured).
FATGEN_TABLE = ((532480, 1), (16777216, 8), (33554432, 16), (67108864, 32))
# KB 140365, FAT32 on Windows 2000 and later: (volume bytes up to, cluster bytes).
WINDOWS_TABLE = ((64 << 20, 512), (128 << 20, 1024), (256 << 20, 2048), (8 << 30, 4096), (16 << 30, 8192),
                 (32 << 30, 16384))


def sectors_per_cluster(sectors: int, chooser: str) -> int:
    """The default cluster size, in sectors, of a FAT32 of `sectors` made by `chooser` ("mkfs.fat" or "windows")."""
    if chooser == "windows":
        size = sectors * SECTOR
        if not MIN_WINDOWS_FAT32 <= size <= MAX_WINDOWS_FAT32:
            raise UsageError(f"format /FS:FAT32: Windows formats FAT32 volumes of 32 MB to 32 GB, not {size} bytes")
        return next(cluster for limit, cluster in WINDOWS_TABLE if size <= limit) // SECTOR
    if sectors < MIN_FAT32_SECTORS:
        raise UsageError(f"mkfs.fat -F 32: {sectors} sectors are too few for FAT32 (at least {MIN_FAT32_SECTORS})")
    return next((spc for limit, spc in FATGEN_TABLE if sectors <= limit), 64)


@dataclass(frozen=True)
class FatLayout:
    """Where a FAT32's parts lie, in 512-byte sectors of the volume."""

    sectors: int
    spc: int                    # sectors per cluster
    reserved: int
    fat_sectors: int            # one FAT's size
    clusters: int               # data clusters (numbered from 2)

    @property
    def data_start(self) -> int:
        return self.reserved + NUM_FATS * self.fat_sectors

    @property
    def cluster_size(self) -> int:
        return self.spc * SECTOR

    def block(self, cluster: int) -> int:
        """The volume block (of the cluster size, from offset 0) of data cluster `cluster`."""
        return self.data_start // self.spc + cluster - ROOT_CLUSTER

    def cluster(self, block: int) -> int:
        return block - self.data_start // self.spc + ROOT_CLUSTER

    def fat_entry_sector(self, cluster: int, copy: int = 0) -> int:
        return self.reserved + copy * self.fat_sectors + cluster * 4 // SECTOR


def fat32_layout(sectors: int, spc: int | None = None, *, chooser: str = "mkfs.fat") -> FatLayout:
    """The layout of a FAT32 of `sectors` (cluster size `spc`, default by `chooser`'s table).

    The FAT size is worked out as mkfs.fat 4.2 does it (measured): the clusters that fit beside two FATs of 4-byte
    entries, the FAT rounded up to a whole number of clusters and the reserved sectors to a cluster multiple, so
    the data area starts on a cluster boundary."""
    spc = spc or sectors_per_cluster(sectors, chooser)
    if spc not in (1, 2, 4, 8, 16, 32, 64, 128):
        raise UsageError(f"FAT32: {spc} sectors per cluster is not a power of two up to 128")
    reserved = -(-RESERVED // spc) * spc
    data = sectors - reserved
    clusters = (data * SECTOR + NUM_FATS * 8) // (spc * SECTOR + NUM_FATS * 4)
    fat_sectors = -(-((clusters + 2) * 4) // SECTOR)
    fat_sectors = -(-fat_sectors // spc) * spc
    clusters = (data - NUM_FATS * fat_sectors) // spc
    if clusters < 65525:
        raise UsageError(f"FAT32: {clusters} clusters are too few (FAT32 needs at least 65525): a smaller cluster "
                         "size or a larger disk")
    return FatLayout(sectors, spc, reserved, fat_sectors, clusters)


@dataclass(frozen=True)
class FatOptions:
    """The options of one mkfs.fat or format command line that change what it makes."""

    spc: int | None = None

    @classmethod
    def parse_mkfs(cls, text: str) -> FatOptions:
        """mkfs.fat: `-F 32` (the only FAT type modelled), `-s N` (sectors per cluster), `-n LABEL`, `-I`."""
        args, spc, i = shlex.split(text), None, 0
        while i < len(args):
            arg = args[i]
            if arg in ("-F", "-s", "-n") and i + 1 < len(args):
                if arg == "-F" and args[i + 1] != "32":
                    raise UsageError(f"mkfs.fat -F {args[i + 1]}: only FAT32 is modelled")
                if arg == "-s":
                    spc = _int(args[i + 1], "mkfs.fat -s")
                i += 2
            elif arg == "-I":
                i += 1
            else:
                raise UsageError(f"mkfs.fat option '{arg}': not modelled (known: -F 32, -s N, -n LABEL, -I)")
        return cls(spc)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} {text}: not a number") from None


class Fat32(ClusterFs):
    """A FAT32 volume on `dev` laid out as `layout`. `discard_on_delete`: Linux's `-o discard` (fs/fat frees a
    cluster chain and discards each contiguous run at once); Windows sends none (profile fact fat_notifies)."""

    kind = "fat32"

    def __init__(self, dev, layout: FatLayout, *, discard_on_delete: bool = False) -> None:
        self.layout = layout
        blocks = layout.sectors // layout.spc
        used = bytearray(b"\1" * blocks)
        first, last = layout.block(ROOT_CLUSTER), layout.block(ROOT_CLUSTER + layout.clusters - 1)
        used[first:last + 1] = bytes(last + 1 - first)
        used[first] = 1                             # the root directory's cluster
        self.root = [ROOT_CLUSTER]
        super().__init__(dev, layout.cluster_size, used, first_ino=0, cursor=first + 1,
                         discard_on_delete=discard_on_delete)

    def _extra(self) -> tuple:
        return (tuple(self.root),)

    def _set_extra(self, extra: tuple) -> None:
        self.root = list(extra[0])

    def mount(self, options: str = "") -> Generator[Any, Any, None]:
        opts = frozenset(o for o in options.split(",") if o)
        unknown = opts - {"discard", "nodiscard", "defaults"}
        if unknown:
            raise UsageError(f"mount -o {','.join(sorted(unknown))}: not modelled for FAT32 (known: discard)")
        self.discard_on_delete = "discard" in opts
        yield from super().mount(options)

    def _fat(self, clusters: list[int]) -> None:
        for cluster in clusters:
            for copy in range(NUM_FATS):
                self._dirty(self.layout.fat_entry_sector(cluster, copy), "FAT")
        self._dirty(FSINFO_SECTOR, "FSInfo")

    def _bitmap(self, runs: list[tuple[int, int]]) -> None:
        per_sector = SECTOR // 4
        sectors = {self.layout.cluster(s + k) // per_sector for s, n in runs for k in range(0, n, per_sector)}
        sectors |= {self.layout.cluster(s + n - 1) // per_sector for s, n in runs}
        self._fat([sector * per_sector for sector in sorted(sectors)])

    def _entry(self, f: File) -> None:
        """The directory entry of `f` in the root directory (a new cluster for the directory when it is full)."""
        per_cluster = self.bs // (DIR_ENTRY * ENTRIES_PER_FILE)
        index = f.ino // per_cluster
        while index >= len(self.root):
            (block, _n), = self._allocate(1)
            self.root.append(self.layout.cluster(block))
            self._fat([self.root[-2], self.root[-1]])
        offset = (f.ino % per_cluster) * DIR_ENTRY * ENTRIES_PER_FILE
        self._dirty(self._sector(self.layout.block(self.root[index])) + offset // SECTOR, "directory")

    _created = _changed = _removed = _entry


def format_fat32(dev, layout: FatLayout) -> Generator[Any, Any, Fat32]:
    """What mkfs.fat (and Windows' quick format) write: the reserved sectors (boot sector, FSInfo, their backups),
    both FATs whole (zeros but their first sector), the root directory's cluster zeroed; then a flush."""
    writes = [(0, filler("fat32 boot sector", SECTOR)), (FSINFO_SECTOR, filler("fat32 FSInfo", SECTOR)),
              (BACKUP_BOOT, filler("fat32 backup boot sector", SECTOR)),
              (BACKUP_BOOT + 1, filler("fat32 backup FSInfo", SECTOR))]
    for copy in range(NUM_FATS):
        writes.append((layout.reserved + copy * layout.fat_sectors, filler("fat32 FAT", SECTOR)))
    written = {s for s, _ in writes}
    for start in range(0, layout.data_start, 2048):
        zeros = [s for s in range(start, min(start + 2048, layout.data_start)) if s not in written]
        writes += [(s, bytes(SECTOR)) for s in zeros]
    root = layout.data_start
    writes += [(root + k, bytes(SECTOR)) for k in range(layout.spc)]
    yield from dev.submit_writes(writes)
    yield from dev.flush()
    return Fat32(dev, layout)


__all__ = ["ClusterFs", "Committed", "Fat32", "FatLayout", "FatOptions", "File", "fat32_layout", "format_fat32"]
