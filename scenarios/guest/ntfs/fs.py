"""NTFS on a Windows guest's disk, good enough for space stories: where format puts the metadata, which clusters a
file takes, what a delete frees and tells the disk, retrim, and what each of them writes.

The layout is the one ntfs-3g's mkntfs (2022.10.3, Debian 12) makes with 4 KiB clusters, checked against it in
tests/scenarios/guest/test_ntfs.py: $Boot at cluster 0 (8 KiB), the $MFT's bitmap at cluster 2, the $MFT at 16 KiB
(27 records of 1 KiB), the MFT zone from the $MFT's start over an eighth of the volume (12.5%: the default MFT zone
multiplier 1 of mkntfs(8) and of Windows' NtfsMftZoneReservation, per the mkntfs man page), right after the zone
the root directory's index, $AttrDef, the cluster bitmap $Bitmap, $Secure and $UpCase (128 KiB), the $MFTMirr in
the volume's middle and the $LogFile right after it (2 MiB up to 200 MiB volumes, else 1/200 of the volume, at most
64 MiB), a backup boot sector in the last sector. Windows' own format differs in places the research notes do not
source (its $MFT sits at cluster 786432 on large volumes, commonly observed; its $LogFile sizes): those are not
modelled. Cluster size: 4 KiB, the default of Windows NT 4.0 and later, and the only one modelled (format /A:4096;
Microsoft KB 140365, https://mskb.pkisolutions.com/kb/140365: "the maximum [default] cluster size for NTFS under
Windows NT 4.0 and later versions of Windows is 4 kilobytes"; an XP-era table at
https://www.serverwatch.com/tutorials/article.php/10825_1467061_4/ gives 1 KB for 513 MB-1 GB volumes instead).

Behaviour (a model where not cited): a file's clusters are allocated when it is written, next-fit outside the MFT
zone (the zone is used once the rest is full); files take clusters from the first byte (small files resident in
their MFT record are not modelled); a new file takes the next MFT record from 27 (mkntfs' 27 system records),
growing the $MFT by 64 KiB inside the zone when full. Deletes free clusters at once; with delete notifications on
(discard-matrix.md W1: "NTFS sends TRIM for ... deletefile") the log is forced first (so the delete is durable
before its clusters are trimmed) and the freed runs are discarded right away. Metadata changes (MFT records, the
root index, $Bitmap pages, one $LogFile page per operation) reach the disk at sync with the data.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

from emu.errors import UsageError
from scenarios.guest.fat.fs import SECTOR, ClusterFs, Committed, File, filler

CLUSTER = 4096
RECORD = 1024                   # mkntfs: MFT records of 1 KiB (ntfsinfo "MFT Record Size: 1024")
BOOT_BYTES = 8192               # mkntfs: $Boot's 2 clusters at 4 KiB
MFT_OFFSET = 16384              # mkntfs: $MFT at cluster 4 of 4 KiB
SYSTEM_RECORDS = 27             # mkntfs: the $MFT's 28 KiB hold the system files' records 0-26
MFT_GROW_CLUSTERS = 16          # model (unsourced): the $MFT grows by 64 KiB
ROOT_INDEX_CLUSTERS = 3         # mkntfs: the root directory's index and its bitmap at the zone's end
ATTRDEF_CLUSTERS = 1            # mkntfs: $AttrDef (2560 bytes)
SECURE_CLUSTERS = 65            # mkntfs: $Secure's $SDS (260 KiB)
UPCASE_CLUSTERS = 32            # $UpCase: 65536 UTF-16 characters, 128 KiB
LOG_SMALL = 2 << 20             # mkntfs: a 2 MiB $LogFile on volumes up to 200 MiB (measured)
LOG_SMALL_LIMIT = 200 << 20
LOG_MAX = 64 << 20              # mkntfs: the $LogFile at most 64 MiB (measured from 13 GiB volumes on)
LOG_PAGE = 4096                 # $LogFile pages; the first two hold the restart areas
MIN_VOLUME = 16 << 20           # model: smaller volumes are refused


@dataclass(frozen=True)
class NtfsLayout:
    """Where a fresh NTFS's system files lie, in clusters of the volume (as mkntfs lays it out)."""

    clusters: int
    cluster_size: int = CLUSTER

    @property
    def boot_clusters(self) -> int:
        return BOOT_BYTES // self.cluster_size

    @property
    def mft_bitmap_lcn(self) -> int:
        return self.boot_clusters

    @property
    def mft_lcn(self) -> int:
        return MFT_OFFSET // self.cluster_size

    @property
    def mft_clusters(self) -> int:
        return -(-SYSTEM_RECORDS * RECORD // self.cluster_size)

    @property
    def zone_end(self) -> int:
        """The MFT zone is [mft_lcn, zone_end): an eighth of the volume's clusters."""
        return self.mft_lcn + self.clusters // 8

    @property
    def root_lcn(self) -> int:
        return self.zone_end

    @property
    def attrdef_lcn(self) -> int:
        return self.root_lcn + ROOT_INDEX_CLUSTERS

    @property
    def bitmap_lcn(self) -> int:
        return self.attrdef_lcn + ATTRDEF_CLUSTERS

    @property
    def bitmap_clusters(self) -> int:
        size = -(-self.clusters // 64) * 8              # one bit per cluster, in whole 8-byte words
        return -(-size // self.cluster_size)

    @property
    def secure_lcn(self) -> int:
        return self.bitmap_lcn + self.bitmap_clusters

    @property
    def upcase_lcn(self) -> int:
        return self.secure_lcn + SECURE_CLUSTERS

    @property
    def mirr_lcn(self) -> int:
        return self.clusters // 2

    @property
    def log_lcn(self) -> int:
        return self.mirr_lcn + 1

    @property
    def log_clusters(self) -> int:
        size = self.clusters * self.cluster_size
        if size <= LOG_SMALL_LIMIT:
            return LOG_SMALL // self.cluster_size
        return min(size // 200, LOG_MAX) // self.cluster_size

    def system_runs(self) -> list[tuple[int, int, str]]:
        """(first cluster, clusters, name) of every system file's data."""
        return [(0, self.boot_clusters, "$Boot"), (self.mft_bitmap_lcn, 1, "$MFT bitmap"),
                (self.mft_lcn, self.mft_clusters, "$MFT"), (self.root_lcn, ROOT_INDEX_CLUSTERS, "root index"),
                (self.attrdef_lcn, ATTRDEF_CLUSTERS, "$AttrDef"), (self.bitmap_lcn, self.bitmap_clusters, "$Bitmap"),
                (self.secure_lcn, SECURE_CLUSTERS, "$Secure"), (self.upcase_lcn, UPCASE_CLUSTERS, "$UpCase"),
                (self.mirr_lcn, 1, "$MFTMirr"), (self.log_lcn, self.log_clusters, "$LogFile")]


def ntfs_layout(size: int, cluster_size: int = CLUSTER) -> NtfsLayout:
    """The layout of an NTFS over a volume of `size` bytes: mkntfs leaves the last sector (the backup boot sector)
    out of the clusters."""
    if cluster_size != CLUSTER:
        raise UsageError(f"format /A:{cluster_size}: only 4096-byte NTFS clusters are modelled")
    if size < MIN_VOLUME:
        raise UsageError(f"format /FS:NTFS: {size} bytes is too small (at least {MIN_VOLUME} modelled)")
    return NtfsLayout((size // SECTOR - 1) * SECTOR // cluster_size, cluster_size)


@dataclass(frozen=True)
class FormatOptions:
    """A `format` command line: /FS:NTFS|FAT32, /Q (quick), /A:size, and the flags that change nothing here."""

    fs: str | None = None
    quick: bool = False
    cluster_size: int | None = None

    @classmethod
    def parse(cls, text: str) -> FormatOptions:
        fs, quick, size = None, False, None
        for arg in text.split():
            key, _, value = arg.upper().partition(":")
            if key == "/Q":
                quick = True
            elif key == "/FS" and value in ("NTFS", "FAT32"):
                fs = value.lower()
            elif key == "/A" and value:
                units = {"K": 1024, "M": 1 << 20}
                mult = units.get(value[-1], 1)
                digits = value[:-1] if value[-1] in units else value
                if not digits.isdigit():
                    raise UsageError(f"format {arg}: the cluster size is not a number")
                size = int(digits) * mult
            elif key in ("/Y", "/X") or (key == "/V" and value):
                pass
            else:
                raise UsageError(f"format option '{arg}': not modelled (known: /Q, /FS:NTFS, /FS:FAT32, /A:size, "
                                 "/V:label, /X, /Y)")
        return cls(fs, quick, size)


class Ntfs(ClusterFs):
    """One NTFS on `dev` laid out as `layout`; `discard_on_delete`: delete notifications reach this disk."""

    kind = "ntfs"

    def __init__(self, dev, layout: NtfsLayout, *, discard_on_delete: bool = False) -> None:
        self.layout = layout
        used = bytearray(layout.clusters)
        for lcn, n, _name in layout.system_runs():
            used[lcn:lcn + n] = b"\1" * n
        self.mft = [(layout.mft_lcn, layout.mft_clusters)]
        self.log_head = 0
        super().__init__(dev, layout.cluster_size, used, first_ino=SYSTEM_RECORDS,
                         cursor=layout.upcase_lcn + UPCASE_CLUSTERS, zone=(layout.mft_lcn, layout.zone_end),
                         discard_on_delete=discard_on_delete)

    def _extra(self) -> tuple:
        return (tuple(self.mft),)

    def _set_extra(self, extra: tuple) -> None:
        self.mft = list(extra[0])

    def mount(self, options: str = "") -> Generator[Any, Any, None]:
        if {o for o in options.split(",") if o} - {"defaults"}:
            raise UsageError(f"mount -o {options}: an NTFS volume comes online without options")
        yield from super().mount(options)

    # -- metadata ----------------------------------------------------------------------------------------------------
    def _record_sector(self, record: int) -> int:
        """The first sector of MFT record `record`, growing the $MFT (inside the MFT zone) when it is past the end."""
        per_cluster = self.bs // RECORD
        while record >= sum(n for _, n in self.mft) * per_cluster:
            last, n = self.mft[-1]
            end = last + n
            grow = MFT_GROW_CLUSTERS
            if end + grow <= self.blocks and not any(self.used[end:end + grow]):
                self.used[end:end + grow] = b"\1" * grow
                self.mft[-1] = (last, n + grow)
                runs = [(end, grow)]
            else:
                runs = self._allocate(grow)
                self.mft += runs
            self._bitmap(runs)
            self._dirty(self._sector(self.layout.mft_bitmap_lcn), "MFT bitmap", self.bs)
        index = record // per_cluster
        for lcn, n in self.mft:
            if index < n:
                return self._sector(lcn + index) + (record % per_cluster) * RECORD // SECTOR
            index -= n
        raise AssertionError("an MFT record past the grown $MFT")  # pragma: no cover

    def _log_sector(self) -> int:
        pages = self.layout.log_clusters * self.bs // LOG_PAGE - 2
        page = 2 + self.log_head % pages
        self.log_head += 1
        return self._sector(self.layout.log_lcn) + page * LOG_PAGE // SECTOR

    def _log(self) -> None:
        self._dirty(self._log_sector(), "$LogFile record", LOG_PAGE)

    def _record(self, f: File, role: str) -> None:
        self._dirty(self._record_sector(f.ino), role, RECORD)
        self._log()

    def _created(self, f: File) -> None:
        self._record(f, "MFT record")
        self._dirty(self._sector(self.layout.root_lcn), "root index", self.bs)
        self._dirty(self._sector(self.layout.mft_bitmap_lcn), "MFT bitmap", self.bs)

    def _changed(self, f: File) -> None:
        self._record(f, "MFT record")

    def _removed(self, f: File) -> None:
        self._created(f)

    def _bitmap(self, runs: list[tuple[int, int]]) -> None:
        per_page = self.bs * 8
        for start, n in runs:
            for page in range(start // per_page, (start + n - 1) // per_page + 1):
                self._dirty(self._sector(self.layout.bitmap_lcn + page), "$Bitmap", self.bs)

    # -- delete --------------------------------------------------------------------------------------------------
    def delete(self, name: str) -> Generator[Any, Any, None]:
        """Remove the file; with delete notifications the log is forced (a flush, the log page, a flush for FUA)
        before the freed runs are discarded, so the delete is durable before its clusters read as trimmed."""
        f = self._open(name, create=False)
        del self.files[name]
        self._removed(f)
        runs = self._free(f, 0)
        if self.discard_on_delete and runs:
            yield from self.dev.write_fua(self._log_sector(), filler("ntfs $LogFile commit", LOG_PAGE))
            used = bytearray(self.committed.used)
            for start, n in runs:
                used[start:start + n] = bytes(n)
            files = {k: v for k, v in self.committed.files.items() if k != name}
            self.committed = replace(self.committed, files=files, used=used)
        yield from self._notify(runs)


def format_ntfs(dev, layout: NtfsLayout, *, quick: bool, trim: bool, zero_full: bool,
                discard_on_delete: bool) -> Generator[Any, Any, Ntfs]:
    """format /FS:NTFS: the whole volume trimmed first when `trim` (a quick format with notifications on); a full
    format's surface pass (zeros written over every sector when `zero_full`, else every sector read); then the
    system files written and a flush."""
    if trim:
        yield from dev.discard(0, dev.size)
    if not quick:
        step = 1 << 20
        for offset in range(0, dev.size - dev.size % SECTOR, step):
            n = min(step, dev.size - offset) // SECTOR
            if zero_full:
                yield from dev.submit_write(offset // SECTOR, bytes(n * SECTOR))
            else:
                yield from dev.read_requests(offset // SECTOR, n)
    bs = layout.cluster_size
    for lcn, n, name in layout.system_runs():
        yield from dev.submit_write(lcn * bs // SECTOR, filler(f"ntfs {name}", n * bs))
    yield from dev.submit_write(dev.size // SECTOR - 1, filler("ntfs backup boot sector", SECTOR))
    yield from dev.flush()
    return Ntfs(dev, layout, discard_on_delete=discard_on_delete)


__all__ = ["Committed", "FormatOptions", "Ntfs", "NtfsLayout", "format_ntfs", "ntfs_layout"]
