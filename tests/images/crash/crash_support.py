"""Machinery for the crash-consistency tests: record, replay, and decide what must survive.

A workload runs through the Drive while the image's `HostFile.journal` records every host-file
mutation and every durability barrier (see images/hostfile.py). Power loss is simulated by
rebuilding the file from its pre-crash bytes and a part of the journal:

* prefix model: entries [0, N) reached the disk, nothing after;
* reorder model: everything before the last "sync" reached the disk, plus any subset of the entries
  after it (a volatile write cache may persist writes between two barriers in any order, or not at all).

The guest reference model (`Contents`) says what the guest must read back: everything it wrote
before the last *completed* flush (or close), except ranges it wrote, zeroed or discarded again
after that flush. Those may hold the flushed content or any newer one (`Expectation.strict`: with
the prefix model, whole per cluster, since every host write is applied atomically).

The machinery is format-neutral except where a crashed file is checked (`check_crashed_file`
dispatches on `Scenario.fmt`): qcow2 files go through `qemu-img check` (and, when dirty with lazy
refcounts, a repair by qemu and by emu); VHDX files are recovered the two ways a reader replays
the metadata log, emu's read-write open and `qemu-img check -r all` on a copy, and each result's
guest view is compared with the model (qemu's through `qemu-img convert`; for a differencing VHDX,
which qemu cannot open, libvhdi's instead).
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import images
from emu.block import Drive, DriveOptions
from emu.block.backend import Status
from emu.errors import EmuError
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.image import open_qcow2
from images.vhdx import layout as VL
from images.vhdx.headers import read_headers
from images.vhdx.log import Log

KiB = 1 << 10
MiB = 1 << 20
DATA_OPS = ("write", "discard", "zero")
BARRIER_OPS = ("flush", "close")
TOOL_TIMEOUT = 120


# -- journal replay --------------------------------------------------------------------------------
def _extend(buf: bytearray, end: int) -> None:
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))


def apply_entry(buf: bytearray, entry: tuple) -> None:
    """Apply one journal entry to an in-memory host file (what the disk holds once it is durable)."""
    op, args = entry
    if op == "pwrite":
        offset, data = args
        _extend(buf, offset + len(data))
        buf[offset:offset + len(data)] = data
    elif op == "punch":                       # PUNCH_HOLE | KEEP_SIZE: zeros, size unchanged
        offset, length = args
        end = min(offset + length, len(buf))
        if offset < end:
            buf[offset:end] = bytes(end - offset)
    elif op == "zero":                        # ZERO_RANGE without KEEP_SIZE
        offset, length = args
        _extend(buf, offset + length)
        buf[offset:offset + length] = bytes(length)
    elif op == "falloc":                      # posix_fallocate: may only grow the file
        offset, length = args
        _extend(buf, offset + length)
    elif op == "truncate":
        (size,) = args
        if size < len(buf):
            del buf[size:]
        else:
            _extend(buf, size)
    elif op == "sync":
        pass
    else:
        raise ValueError(f"unknown journal entry {op!r}")


def replay(pre: bytes, entries) -> bytearray:
    buf = bytearray(pre)
    for entry in entries:
        apply_entry(buf, entry)
    return buf


def describe_entry(entry: tuple) -> str:
    op, args = entry
    if op == "pwrite":
        return f"pwrite {args[0]:#x}+{len(args[1]):#x}"
    return f"{op} " + " ".join(f"{a:#x}" for a in args)


def sync_positions(journal: Sequence[tuple]) -> list[int]:
    return [i for i, (op, _) in enumerate(journal) if op == "sync"]


# -- guest operations ------------------------------------------------------------------------------
@dataclass
class Op:
    """One guest request, with the journal positions it spans once recorded."""

    kind: str                 # write | discard | zero | flush | close
    offset: int = 0
    length: int = 0
    data: bytes | None = None
    may_unmap: bool = False
    start: int = -1           # journal length before the request
    end: int = -1             # journal length after it
    result: bytes | None = None   # what the range read as right after the request (for the model)

    def __str__(self) -> str:
        if self.kind in BARRIER_OPS:
            return f"{self.kind} [{self.start},{self.end})"
        extra = " unmap" if self.kind == "zero" and self.may_unmap else ""
        return f"{self.kind}{extra} {self.offset:#x}+{self.length:#x} [{self.start},{self.end})"

    def effect(self) -> bytes:
        """What the guest reads in the range after the request."""
        if self.kind == "write":
            return self.data  # type: ignore[return-value]
        if self.kind == "zero":
            return bytes(self.length)
        return self.result  # type: ignore[return-value]

    def candidates(self, start: int, end: int) -> list[bytes]:
        """Contents this request may leave in [start, end) after a crash (besides older ones)."""
        rel = start - self.offset
        if self.kind == "write":
            return [self.data[rel:rel + end - start]]  # type: ignore[index]
        zeros = bytes(end - start)
        if self.kind == "zero":
            return [zeros]
        return [zeros, self.result[rel:rel + end - start]]  # type: ignore[index]


def write(offset: int, data: bytes) -> Op:
    return Op("write", offset, len(data), data=data)


def discard(offset: int, length: int) -> Op:
    return Op("discard", offset, length)


def zero(offset: int, length: int, may_unmap: bool = False) -> Op:
    return Op("zero", offset, length, may_unmap=may_unmap)


def flush() -> Op:
    return Op("flush")


def close() -> Op:
    return Op("close")


# -- guest content model ---------------------------------------------------------------------------
def merge_ranges(ranges: Sequence[tuple[int, int]], align: int) -> list[tuple[int, int]]:
    """Union of ranges, widened to `align`, as sorted disjoint (offset, length)."""
    spans = sorted((o - o % align, -(-(o + n) // align) * align) for o, n in ranges if n > 0)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e - s) for s, e in merged]


def gaps(regions: Sequence[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for offset, length in regions:
        if offset > pos:
            yield pos, offset - pos
        pos = offset + length
    if pos < size:
        yield pos, size - pos


class Contents:
    """Guest content of some regions of the disk; everything else is the pre-crash content."""

    def __init__(self, regions: Sequence[tuple[int, int]], base: Callable[[int, int], bytes],
                 bufs: list[bytearray] | None = None) -> None:
        self.regions = list(regions)
        self.base = base
        self._starts = [o for o, _ in self.regions]
        self.bufs = bufs if bufs is not None else [bytearray(base(o, n)) for o, n in self.regions]

    def copy(self) -> Contents:
        return Contents(self.regions, self.base, [bytearray(b) for b in self.bufs])

    def _locate(self, offset: int, length: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or offset + length > self.regions[i][0] + self.regions[i][1]:
            raise ValueError(f"range {offset:#x}+{length:#x} is outside the modelled regions")
        return i, offset - self.regions[i][0]

    def read(self, offset: int, length: int) -> bytes:
        i, rel = self._locate(offset, length)
        return bytes(self.bufs[i][rel:rel + length])

    def apply(self, op: Op) -> None:
        if op.kind in DATA_OPS:
            i, rel = self._locate(op.offset, op.length)
            self.bufs[i][rel:rel + op.length] = op.effect()


@dataclass
class Expectation:
    """What a crashed image must read back: `durable` except where `maybe` requests wrote since."""

    label: str
    durable: Contents
    maybe: list[Op]
    strict: bool


def first_diff(a: bytes, b: bytes) -> int:
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:   # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def verify_contents(read: Callable[[int, int], bytes], exp: Expectation, cluster_size: int) -> str | None:
    """None if what `read` returns is allowed by `exp`, else a description of the first violation.
    `cluster_size` is the unit a strict expectation holds whole (the recording's `atom`)."""
    for (ro, rn), dbuf in zip(exp.durable.regions, exp.durable.bufs):
        actual = read(ro, rn)
        if actual == dbuf:
            continue
        if len(actual) != rn:
            return f"read {ro:#x}+{rn:#x} returned {len(actual)} bytes"
        ops = [op for op in exp.maybe if op.offset < ro + rn and op.offset + op.length > ro]
        points = {ro, ro + rn}
        for op in ops:
            points.add(max(ro, op.offset))
            points.add(min(ro + rn, op.offset + op.length))
        edges = sorted(points)
        for a, b in zip(edges, edges[1:]):
            cover = [op for op in ops if op.offset <= a and b <= op.offset + op.length]
            got, want = actual[a - ro:b - ro], dbuf[a - ro:b - ro]
            if not cover:
                if got != want:
                    at = a + first_diff(got, want)
                    return (f"{exp.label}: guest byte {at:#x} lost its flushed content (not written since "
                            f"the last completed flush): reads {actual[at - ro]:#04x}, flushed "
                            f"{dbuf[at - ro]:#04x}")
                continue
            if not exp.strict:
                continue
            c = a
            while c < b:
                e = min(b, (c // cluster_size + 1) * cluster_size)
                piece = actual[c - ro:e - ro]
                if piece != dbuf[c - ro:e - ro] and not any(piece == cand for op in cover
                                                             for cand in op.candidates(c, e)):
                    return (f"{exp.label}: guest range {c:#x}+{e - c:#x} holds neither its flushed content "
                            f"nor what a later request left there ({', '.join(map(str, cover))})")
                c = e
    return None


# -- scenarios and recording -----------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    options: dict
    size: int
    ops: Callable[[int], list[Op]]        # cluster size -> the workload
    backing: Callable[[str], Callable[[int, int], bytes]] | None = None   # dir -> pre-crash content reader
    backing_data: Sequence[tuple[int, int]] = ()   # where that content may be non-zero
    small_caches: bool = False
    drive: DriveOptions = DriveOptions(discard="unmap")
    cut_budget: int | None = None        # None: every cut point
    reorder_budget: int = 16             # reordered crash states checked (sampled from all epochs)
    exhaustive: bool = False             # reorder: every subset of every short epoch, no sampling
    reorder_from: int = 0                # reorder: only epochs reaching past the start of ops[k]
    full_every: int = 3                  # qcow2: qemu-io and qemu's view of the data on every k-th file
    seed: int = 0
    fmt: str = "qcow2"                   # image format: qcow2 or vhdx
    atom: int | None = None              # unit a crash leaves whole (None: the cluster or block size)
    keep_first: int = 0                  # sampled prefix cuts: keep every cut inside ops[:keep_first]
    strict_reorder: bool = False         # reorder model: ranges written since the flush whole per atom too
    host_punch: bool = True              # False: the host file cannot punch holes (as on some file systems)


@dataclass
class Recording:
    scenario: Scenario
    dir: str
    path: str                     # the image as the workload left it
    pre: bytes                    # its bytes before the workload
    journal: list[tuple]
    ops: list[Op]
    cluster_size: int             # qcow2 cluster, VHDX block: the allocation unit
    lazy: bool
    base: Callable[[int, int], bytes]
    regions: list[tuple[int, int]]
    final: bytes                  # its bytes after the workload
    base_data: Sequence[tuple[int, int]] = ()   # where the pre-crash guest content may be non-zero
    _durable: dict[int, Contents] = field(default_factory=dict)

    @property
    def fmt(self) -> str:
        return self.scenario.fmt

    @property
    def atom(self) -> int:
        """The unit of guest data that a crash in the middle of a request leaves whole."""
        return self.scenario.atom or self.cluster_size

    @property
    def backing_path(self) -> str | None:
        return os.path.join(self.dir, f"base.{self.fmt}") if self.scenario.backing is not None else None

    # -- expectations ---------------------------------------------------------------------------
    def last_barrier(self, applied: int) -> int:
        """Index of the last flush/close whose every entry is among the first `applied` entries."""
        k = -1
        for i, op in enumerate(self.ops):
            if op.kind in BARRIER_OPS and op.end <= applied:
                k = i
        return k

    def durable_after(self, k: int) -> Contents:
        if k not in self._durable:
            lower = [j for j in self._durable if j < k]
            if lower:
                j = max(lower)
                contents = self._durable[j].copy()
            else:
                j, contents = -1, Contents(self.regions, self.base)
            for op in self.ops[j + 1:k + 1]:
                contents.apply(op)
            self._durable = {j: self._durable[j]} if lower else {}
            self._durable[k] = contents
        return self._durable[k]

    def expectation(self, label: str, applied: int, upper: int, strict: bool) -> Expectation:
        """Entries [0, applied) are surely on disk, [applied, upper) perhaps, none after."""
        k = self.last_barrier(applied)
        maybe = [op for op in self.ops[k + 1:] if op.kind in DATA_OPS and op.start < upper]
        return Expectation(label, self.durable_after(k), maybe, strict)

    def canonical(self, n: int) -> int:
        """The largest cut with the same file as cut n (the entries in between are syncs)."""
        while n < len(self.journal) and self.journal[n][0] == "sync":
            n += 1
        return n


def zero_base(offset: int, length: int) -> bytes:
    return bytes(length)


def open_for_workload(path: str, small_caches: bool):
    if not small_caches:
        return images.open_image(path)
    host = HostFile(path, writable=True)
    probe = host.pread(20, 4)
    cs = 1 << int.from_bytes(probe, "big")
    # The library's own cache knobs at their minimum (two tables each): evictions write tables
    # back in the middle of requests, which is where ordering mistakes hide.
    return open_qcow2(host, read_only=False, l2_cache_bytes=2 * cs, refcount_cache_bytes=2 * cs)


def record(scenario: Scenario, directory: str) -> Recording:
    """Create the image, run the workload through a Drive with the journal on, then close it (if
    the workload ends with close) or drop it without writing anything back (power loss)."""
    os.makedirs(directory, exist_ok=True)
    base = zero_base
    backing_name = None
    fmt = scenario.fmt
    if scenario.backing is not None:
        base = scenario.backing(directory)    # creates base.<fmt> in the directory
        backing_name = f"base.{fmt}"
    path = os.path.join(directory, f"disk.{fmt}")
    if backing_name:
        images.create_image(path, fmt, None, scenario.options, backing=backing_name, backing_fmt=fmt)
    else:
        images.create_image(path, fmt, scenario.size, scenario.options)
    with open(path, "rb") as f:
        pre = f.read()
    image = open_for_workload(path, scenario.small_caches)
    image.host.journal = journal = []
    if not scenario.host_punch:
        image.host.can_punch = False
    with open(path, "rb") as f:
        assert f.read() == pre, "opening the image changed it before the journal started"
    cs = image.cluster_size if fmt == "qcow2" else image.block_size
    assert image.virtual_size == scenario.size
    ops = scenario.ops(cs)
    regions = merge_ranges([(op.offset, op.length) for op in ops if op.kind in DATA_OPS], cs)
    current = Contents(regions, base)
    drive = Drive(image, scenario.drive)
    closed = False
    for op in ops:
        assert not closed, "requests after close"
        op.start = len(journal)
        if op.kind == "write":
            done = drive.write(op.offset, op.data)
        elif op.kind == "zero":
            done = drive.write_zeroes(op.offset, op.length, may_unmap=op.may_unmap)
        elif op.kind == "discard":
            before = current.read(op.offset, op.length)
            done = drive.discard(op.offset, op.length)
            after = drive.read(op.offset, op.length)
            assert after.ok, after.error
            op.result = after.data
            _check_discard_result(op, before, cs)
        elif op.kind == "flush":
            done = drive.flush()
        elif op.kind == "close":
            image.close()
            closed, done = True, None
        else:
            raise ValueError(op.kind)
        assert done is None or done.ok, f"{op}: {done.error}"
        op.end = len(journal)
        current.apply(op)
    if not closed:
        mismatches = list(_verify_live(drive, current))
        assert not mismatches, mismatches[0]
        for layer in image.chain():   # power loss: drop the image without writing anything back
            layer.host.close()
    with open(path, "rb") as f:
        final = f.read()
    version = int.from_bytes(pre[4:8], "big")
    lazy = fmt == "qcow2" and version >= 3 and bool(int.from_bytes(pre[80:88], "big") & L.COMPAT_LAZY_REFCOUNTS)
    return Recording(scenario, directory, path, pre, journal, ops, cs, lazy, base, regions, final,
                     scenario.backing_data if scenario.backing is not None else ())


def _verify_live(drive: Drive, current: Contents) -> Iterator[str]:
    for (o, n), buf in zip(current.regions, current.bufs):
        got = drive.read(o, n)
        if not got.ok or got.data != buf:
            yield f"before the crash the drive reads {o:#x}+{n:#x} differently from the model"


def _check_discard_result(op: Op, before: bytes, cs: int) -> None:
    """A discarded range reads back as zeros or as before, per cluster piece."""
    pos = op.offset
    while pos < op.offset + op.length:
        end = min(op.offset + op.length, (pos // cs + 1) * cs)
        rel, n = pos - op.offset, end - pos
        piece = op.result[rel:rel + n]  # type: ignore[index]
        assert piece == bytes(n) or piece == before[rel:rel + n], \
            f"{op}: {pos:#x}+{n:#x} reads neither zeros nor its old content after the discard"
        pos = end


# -- workloads -------------------------------------------------------------------------------------
def coverage_prelude(zone: int, cs: int, rng: random.Random) -> list[Op]:
    """Requests that reach each interesting path once: allocating and in-place writes, partial
    clusters, discards of whole and partial clusters, zero writes with and without MAY_UNMAP, a
    write into a zeroed-but-allocated cluster, reuse of freed clusters, with flushes in between."""
    c = [zone + i * cs for i in range(8)]
    b = rng.randbytes
    return [
        write(c[0], b(cs)),                            # allocating, whole cluster
        write(c[1] + cs // 5, b(cs // 3)),            # allocating, partial cluster (zero-filled COW)
        write(c[2] + cs // 2, b(2 * cs)),             # spanning three clusters, unaligned
        flush(),
        write(c[0] + 10, b(cs // 4)),                 # in-place partial overwrite
        discard(c[0], cs),                             # whole allocated cluster: freed and punched
        discard(c[1] + 1, cs // 2),                    # partial cluster: ignored
        zero(c[2], cs),                                # zero flag, cluster kept allocated
        zero(c[3], cs, may_unmap=True),                # zero flag, cluster freed
        zero(c[4] + 7, cs // 3, may_unmap=True),       # unaligned: zero buffers (or a zero cluster)
        flush(),
        write(c[2] + 33, b(cs // 4)),                 # partial write into a zeroed allocated cluster
        write(c[3], b(cs)),                            # allocating again after the unmap
        write(c[5] + 3, b(cs // 2)),                  # allocating, may reuse a freed host cluster
        flush(),
        discard(c[5], cs),                             # freed; its decrement is still pending ...
        write(c[6], b(cs)),                            # ... when this allocation may reuse it
        write(c[7] - cs // 2 + 5, b(cs)),             # spanning two clusters, unaligned
        zero(c[0], 2 * cs),                            # zero an unallocated and a partly written cluster
        flush(),
    ]


def random_ops(rng: random.Random, cs: int, zones: Sequence[tuple[int, int]], count: int,
               flush_every: tuple[int, int] = (3, 7)) -> list[Op]:
    """A seeded mix of writes, discards and zero writes inside `zones`, with flushes now and then."""
    ops: list[Op] = []
    until_flush = rng.randint(*flush_every)
    for _ in range(count):
        zo, zl = rng.choice(zones)
        clusters = zl // cs
        r = rng.random()
        shape = rng.choice(("aligned", "partial", "span"))
        if shape == "aligned":
            n = rng.randint(1, min(3, clusters))
            off, length = zo + rng.randrange(clusters - n + 1) * cs, n * cs
        elif shape == "partial":
            off = zo + rng.randrange(clusters) * cs + rng.randrange(cs - 1)
            length = rng.randint(1, zo + ((off - zo) // cs + 1) * cs - off)
        else:
            off = zo + rng.randrange(zl - cs)
            length = min(zo + zl - off, rng.randint(cs // 2, 3 * cs))
        if r < 0.55:
            ops.append(write(off, rng.randbytes(length)))
        elif r < 0.75:
            ops.append(discard(off, length))
        else:
            ops.append(zero(off, length, may_unmap=rng.random() < 0.5))
        until_flush -= 1
        if until_flush == 0:
            ops.append(flush())
            until_flush = rng.randint(*flush_every)
    return ops


# -- checking one crashed file ---------------------------------------------------------------------
def run_tool(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def qemu_check(qemu_img: str, path: str, fmt: str = "qcow2", repair: str | None = None
               ) -> tuple[int, dict, str]:
    """`qemu-img check` (with `-r repair` if given): exit status, JSON report, all output."""
    proc = run_tool(qemu_img, "check", "-f", fmt, *(("-r", repair) if repair else ()), "--output=json", path)
    try:
        info = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        info = {}
    return proc.returncode, info, (proc.stdout + proc.stderr).strip()


def brief(text: str, lines: int = 12) -> str:
    """At most `lines` lines of a tool's output (qemu-img check lists every leaked cluster)."""
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return "\n".join(parts[:lines] + [f"... ({len(parts) - lines} more lines)"])


def check_is_clean(result: tuple[int, dict, str]) -> bool:
    """No corruptions and no check errors: exit 0, or 3 (leaks only)."""
    rc, info, _ = result
    return rc in (0, 3) and not info.get("corruptions", 0) and not info.get("check-errors", 0)


def is_dirty(data: bytes) -> bool:
    version = int.from_bytes(data[4:8], "big")
    return version >= 3 and bool(int.from_bytes(data[72:80], "big") & L.INCOMPAT_DIRTY)


def emu_read_regions(path: str, regions: Sequence[tuple[int, int]], base: Callable[[int, int], bytes],
                     size: int) -> tuple[dict[int, bytes], list[str]]:
    """Read the regions through emu (read-only) and make sure the rest reads as before the crash."""
    image = images.open_image(path, read_only=True)
    try:
        return read_image_regions(image, regions, base, size)
    finally:
        image.close()


def read_image_regions(image, regions: Sequence[tuple[int, int]], base: Callable[[int, int], bytes],
                       size: int) -> tuple[dict[int, bytes], list[str]]:
    """emu_read_regions on an open image."""
    problems: list[str] = []
    got = {o: image.read(o, n) for o, n in regions}
    for go, gn in gaps(regions, size):
        pos, end = go, go + gn
        while pos < end:
            status = image.block_status(pos, end - pos)
            if status.length <= 0:
                problems.append(f"emu block status made no progress at {pos:#x}")
                break
            if status.flags & Status.ALLOCATED:
                data = image.read(pos, status.length)
                if data != base(pos, status.length):
                    problems.append(f"guest range {pos:#x}+{status.length:#x} was never written but "
                                    "no longer reads as before the crash (emu)")
            pos += status.length
    return got, problems


def qemu_read_regions(qemu_img: str, path: str, out: str, regions: Sequence[tuple[int, int]],
                      base: Callable[[int, int], bytes], base_data: Sequence[tuple[int, int]],
                      fmt: str = "qcow2") -> tuple[dict[int, bytes] | None, list[str]]:
    """qemu's view of the guest data, through `qemu-img convert -O raw`. `base_data` lists where the
    pre-crash disk may hold something other than zeros."""
    proc = run_tool(qemu_img, "convert", "-f", fmt, "-O", "raw", path, out)
    if proc.returncode != 0:
        return None, [f"qemu-img convert exited {proc.returncode}: {proc.stderr.strip()}"]
    problems: list[str] = []
    fd = os.open(out, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        got = {}
        for o, n in regions:
            data = os.pread(fd, n, o)
            got[o] = data + bytes(n - len(data))
        for go, gn in gaps(regions, size):
            pos, end = go, go + gn
            while pos < end:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        start = end
                    else:
                        raise
                if start > pos:   # a hole: zeros, which must be what the pre-crash disk held there
                    stop = min(start, end)
                    for o, n in base_data:
                        lo, hi = max(o, pos), min(o + n, stop)
                        if lo < hi and base(lo, hi - lo) != bytes(hi - lo):
                            problems.append(f"guest range {lo:#x}+{hi - lo:#x} reads zeros in qemu, not its "
                                            "pre-crash content")
                    pos = stop
                    continue
                stop = min(end, os.lseek(fd, pos, os.SEEK_HOLE))
                if os.pread(fd, stop - pos, pos) != base(pos, stop - pos):
                    problems.append(f"guest range {pos:#x}+{stop - pos:#x} was never written but reads "
                                    "differently in qemu")
                pos = stop
    finally:
        os.close(fd)
        os.unlink(out)
    return got, problems


def _reader(got: dict[int, bytes]) -> Callable[[int, int], bytes]:
    return lambda o, n: got[o]


@dataclass
class Tools:
    qemu_img: str
    qemu_io: str
    vhdi: object | None = None    # the pyvhdi module (libvhdi), which reads differencing VHDX


@dataclass
class FileResult:
    problems: list[str] = field(default_factory=list)


def _first_violation(got: dict[int, bytes], expectations: list[Expectation], atom: int) -> str | None:
    for exp in expectations:
        bad = verify_contents(_reader(got), exp, atom)
        if bad:
            return bad
    return None


def check_crashed_file(rec: Recording, tools: Tools, data: bytes, expectations: list[Expectation],
                       tag: str, full: bool, barrier_size: int | None = None) -> FileResult:
    """All the checks on one rebuilt file, by format. `full` adds qemu's view of the data where it
    is not always taken; `barrier_size` is set under the reorder model."""
    path = os.path.join(rec.dir, f"cut-{tag}.{rec.fmt}")
    out = FileResult()
    try:
        with open(path, "wb") as f:
            f.write(data)
        if rec.fmt == "vhdx":
            _check_vhdx_file(rec, tools, path, data, expectations, out.problems)
        else:
            _check_qcow2_file(rec, tools, path, data, expectations, full, barrier_size, out.problems)
    finally:
        for leftover in (path, path + ".qemu"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return out


def _check_qcow2_file(rec: Recording, tools: Tools, path: str, data: bytes, expectations: list[Expectation],
                      full: bool, barrier_size: int | None, problems: list[str]) -> None:
    """`qemu-img check` clean (a dirty lazy-refcounts image: after qemu's and emu's repair), emu's view
    of the data; `full`: qemu-io reads the whole disk and qemu's view of the data."""
    where = expectations[0].label
    size = rec.scenario.size

    def clean_after_repair(result: tuple[int, dict, str], who: str) -> None:
        if check_is_clean(result):
            return
        problems.append(f"{where}: after {who}'s repair, qemu-img check exited {result[0]}: "
                        f"{brief(result[2])}")

    raw = qemu_check(tools.qemu_img, path)
    if rec.lazy and is_dirty(data):
        # A crashed lazy-refcounts image may have any refcount damage: qemu allows it and repairs
        # it on the next read-write open. It must still be a qcow2 image qemu-img can check.
        if raw[0] not in (0, 2, 3):
            problems.append(f"{where}: qemu-img check on the dirty image exited {raw[0]}: "
                            f"{brief(raw[2])}")
        if barrier_size is None:
            # Prefix model: qemu's own repair (a read-write open) must cope too. Not under the
            # reorder model, where qemu's repair trips over states qemu itself can produce (a
            # reference just past the end of the file gets the rebuilt refcount block on top).
            qcopy = path + ".qemu"
            shutil.copyfile(path, qcopy)
            proc = run_tool(tools.qemu_io, "-f", "qcow2", "-c", "read 0 512", qcopy)   # rw open repairs
            if proc.returncode != 0 or "read 512/512 bytes" not in proc.stdout:
                problems.append(f"{where}: qemu-io could not open (and repair) the dirty image: "
                                f"{proc.stdout.strip()} {proc.stderr.strip()}")
            else:
                clean_after_repair(qemu_check(tools.qemu_img, qcopy), "qemu")
            os.unlink(qcopy)
        try:
            images.open_image(path).close()     # emu's repair on a read-write open
        except EmuError as exc:
            problems.append(f"{where}: emu could not open the dirty image read-write: {exc}")
            return
        clean_after_repair(qemu_check(tools.qemu_img, path), "emu")
        with open(path, "rb") as f:
            if is_dirty(f.read(L.V3_HEADER_LENGTH)):
                problems.append(f"{where}: emu's repair left the dirty bit set")
    elif not check_is_clean(raw):
        problems.append(f"{where}: qemu-img check exited {raw[0]}: {brief(raw[2])}")
    try:
        got, found = emu_read_regions(path, rec.regions, rec.base, size)
    except EmuError as exc:
        problems.append(f"{where}: emu cannot read the crashed image: {exc}")
    else:
        problems += [f"{where}: {p}" for p in found]
        bad = _first_violation(got, expectations, rec.atom)
        if bad:
            problems.append(f"(emu) {bad}")
    if full:
        proc = run_tool(tools.qemu_io, "-r", "-f", "qcow2", "-c", f"read 0 {size}", path)
        if proc.returncode != 0 or f"read {size}/{size} bytes" not in proc.stdout:
            problems.append(f"{where}: qemu-io cannot read the whole disk: {proc.stdout.strip()} "
                            f"{proc.stderr.strip()}")
        qgot, found = qemu_read_regions(tools.qemu_img, path, path + ".raw", rec.regions, rec.base,
                                        rec.base_data)
        problems += [f"{where}: {p}" for p in found]
        if qgot is not None:
            bad = _first_violation(qgot, expectations, rec.atom)
            if bad:
                problems.append(f"(qemu) {bad}")


def vhdx_log_pending(path: str) -> bool:
    """Whether the current header names a log GUID that a valid sequence of entries carries: the
    state in which a writer crashed between logging a metadata update and finishing it ([MS-VHDX]
    2.3.3), and readers must replay the log before they trust the BAT."""
    host = HostFile(path, writable=False)
    try:
        current, headers = read_headers(host)
        header = headers[current]
        if header.log_guid == VL.ZERO_GUID or not header.log_length:
            return False
        return bool(Log(host, header.log_offset, header.log_length).active_sequence(header.log_guid))
    finally:
        host.close()


def vhdi_readable_blocks(image) -> list[int]:
    """Blocks of a differencing VHDX whose content libvhdi reads as [MS-VHDX] defines it. libvhdi
    takes every state below FULLY_PRESENT as "ask the sector bitmap" and, where a bit is clear, the
    parent: right for NOT_PRESENT blocks of a chunk that has a sector bitmap, not for ZERO or
    UNMAPPED blocks (which read zeros) nor where the chunk has no bitmap (it reads one at offset 0)."""
    blocks = []
    bat = image.bat
    for block in range(bat.blocks):
        state = bat.state(block)
        bitmap = bat.entries[bat.bitmap_index(block)] & VL.STATE_MASK == VL.SB_PRESENT
        if state in (VL.PAYLOAD_FULLY_PRESENT, VL.PAYLOAD_PARTIALLY_PRESENT) \
                or (state == VL.PAYLOAD_NOT_PRESENT and bitmap):
            blocks.append(block)
    return blocks


def vhdi_read_blocks(vhdi, path: str, parent: str, blocks: Sequence[int], block_size: int) -> dict[int, bytes]:
    """libvhdi's view of some blocks of a differencing VHDX over its parent, by guest offset."""
    top, bottom = vhdi.file(), vhdi.file()
    bottom.open(parent)
    try:
        top.open(path)
        try:
            top.set_parent(bottom)
            return {b * block_size: top.read_buffer_at_offset(block_size, b * block_size) for b in blocks}
        finally:
            top.close()
    finally:
        bottom.close()


def _check_vhdx_file(rec: Recording, tools: Tools, path: str, data: bytes, expectations: list[Expectation],
                     problems: list[str]) -> None:
    """A crashed VHDX is recovered the two ways a reader replays its log, and each result checked:

    * qemu (not for a differencing disk, which qemu cannot open): `qemu-img check -r all` on a copy
      replays a pending log (and counts that as a fixed corruption) and finds nothing else; then
      the guest view through `qemu-img convert -O raw` must match the model;
    * emu: a read-only open refuses a file whose log is pending, with an error that says so, and
      opens any other; a read-write open replays the log (and only then); emu's check then finds
      no corruption and emu's view of the data matches the model; `qemu-img check` accepts the
      file emu's replay wrote; a differencing disk's view is also read through libvhdi where
      libvhdi reads it as the specification says (`vhdi_readable_blocks`).

    Whether the log is pending is qemu's verdict where qemu can open the file, else emu's parser's;
    where both exist they must agree."""
    where = expectations[0].label
    size = rec.scenario.size
    diff = rec.scenario.backing is not None
    pending = vhdx_log_pending(path)
    if not diff:
        qcopy = path + ".qemu"
        with open(qcopy, "wb") as f:
            f.write(data)
        rc, info, text = qemu_check(tools.qemu_img, qcopy, "vhdx", repair="all")
        if rc != 0 or info.get("corruptions", 0) or info.get("check-errors", 0):
            problems.append(f"{where}: qemu-img check -r all exited {rc}: {brief(text)}")
        if (info.get("corruptions-fixed", 0) > 0) != pending:   # qemu counts a replayed log as one
            problems.append(f"{where}: emu's log parser finds {'a' if pending else 'no'} pending log, but "
                            f"qemu-img check -r all {'did not replay one' if pending else 'replayed one'}")
        qgot, found = qemu_read_regions(tools.qemu_img, qcopy, qcopy + ".raw", rec.regions, rec.base,
                                        rec.base_data, fmt="vhdx")
        problems += [f"{where}: {p}" for p in found]
        if qgot is not None:
            bad = _first_violation(qgot, expectations, rec.atom)
            if bad:
                problems.append(f"(qemu) {bad}")
        os.unlink(qcopy)

    def check_and_read() -> bool:
        """emu's check and view of the data, read-only; False if it cannot open the file."""
        try:
            image = images.open_image(path, read_only=True, check_mode=True)
        except EmuError as exc:
            if not pending:
                problems.append(f"{where}: emu cannot open the image read-only: {exc}")
                return False
            if "log" not in str(exc) or "read-write" not in str(exc):
                problems.append(f"{where}: emu refuses a pending log read-only, but does not say why: {exc}")
            return False
        try:
            if pending:
                problems.append(f"{where}: emu opened an image with a pending log read-only (it must refuse)")
            result = image.check()
            if result.corruptions or result.check_errors:
                problems.append(f"{where}: emu's check: " + "; ".join(result.messages[:3]))
            got, found = read_image_regions(image, rec.regions, rec.base, size)
            vblocks = vhdi_readable_blocks(image) if diff and tools.vhdi is not None else []
        finally:
            image.close()
        problems.extend(f"{where}: {p}" for p in found)
        bad = _first_violation(got, expectations, rec.atom)
        if bad:
            problems.append(f"(emu) {bad}")
        if vblocks:
            check_vhdi(got, vblocks)
        return True

    def check_vhdi(got: dict[int, bytes], blocks: list[int]) -> None:
        """libvhdi's bytes in the blocks it reads as specified, emu's (already checked) elsewhere."""
        assert rec.backing_path is not None
        bs = rec.cluster_size
        vgot = vhdi_read_blocks(tools.vhdi, path, rec.backing_path, blocks, bs)
        mixed = {o: bytearray(d) for o, d in got.items()}
        starts = sorted(mixed)
        for offset, data in vgot.items():
            i = bisect.bisect_right(starts, offset) - 1
            if i >= 0 and offset < starts[i] + len(mixed[starts[i]]):   # regions are whole blocks
                mixed[starts[i]][offset - starts[i]:offset - starts[i] + bs] = data
            elif data != rec.base(offset, bs):
                at = offset + first_diff(data, rec.base(offset, bs))
                problems.append(f"{where}: guest byte {at:#x} was never written but reads differently in libvhdi")
        bad = _first_violation({o: bytes(d) for o, d in mixed.items()}, expectations, rec.atom)
        if bad:
            problems.append(f"(libvhdi) {bad}")

    if not check_and_read() and not pending:   # a pending log: the read-only open must have refused
        return
    try:
        image = images.open_image(path)        # read-write: replays a pending log
        replayed = image.replayed
        image.close()
    except EmuError as exc:
        problems.append(f"{where}: emu cannot open the crashed image read-write: {exc}")
        return
    if replayed != pending:
        problems.append(f"{where}: emu {'replayed' if replayed else 'did not replay'} the log on a read-write "
                        f"open, but it {'was' if pending else 'was not'} pending")
    if not pending:
        return
    if vhdx_log_pending(path):
        problems.append(f"{where}: the log is still pending after emu's read-write open")
    pending = False
    if check_and_read() and not diff:
        rc, info, text = qemu_check(tools.qemu_img, path, "vhdx")
        if rc != 0 or info.get("corruptions", 0):
            problems.append(f"{where}: qemu-img check of the file emu's replay wrote exited {rc}: {brief(text)}")


# -- driving many crash states ---------------------------------------------------------------------
@dataclass
class Summary:
    crash_states: int = 0         # cut points (prefix) or reordered states checked
    files: int = 0                # distinct files they produced
    full_files: int = 0           # files also read whole by qemu-io and compared through qemu
    problems: list[str] = field(default_factory=list)

    def add(self, result: FileResult) -> None:
        self.problems += result.problems

    def __str__(self) -> str:
        text = (f"{self.crash_states} crash states, {self.files} distinct files, "
                f"{self.full_files} also read by qemu-io and compared through qemu")
        return text


def workers() -> int:
    return max(2, os.cpu_count() or 2)


class _Pool:
    """A thread pool that keeps at most a few files in flight (they can be 10 MiB each)."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.pool = ThreadPoolExecutor(max_workers=workers())
        self.futures: list = []

    def submit(self, *args) -> None:
        self.futures.append(self.pool.submit(check_crashed_file, *args))
        if len(self.futures) >= 2 * workers():
            self.drain()

    def drain(self) -> None:
        for fut in self.futures:
            self.summary.add(fut.result())
        self.futures = []

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def landmarks(rec: Recording) -> set[int]:
    """Cut points that sampling always keeps. qcow2: those next to a header write (the refcount-table
    switch, the dirty bit). VHDX: the one right after each log entry is written (the update is
    pending in the log, none of it applied: recovery must replay it)."""
    n = len(rec.journal)
    if rec.fmt == "vhdx":
        host = HostFile(rec.path, writable=False)
        try:
            current, headers = read_headers(host)
        finally:
            host.close()
        lo, hi = headers[current].log_offset, headers[current].log_offset + headers[current].log_length
        return {i + 1 for i, (op, args) in enumerate(rec.journal) if op == "pwrite" and lo <= args[0] < hi}
    chosen: set[int] = set()
    for i, (op, args) in enumerate(rec.journal):
        if op == "pwrite" and args[0] < rec.cluster_size:
            chosen.update(j for j in range(i - 2, i + 3) if 0 <= j <= n)
    return chosen


def select_cuts(rec: Recording) -> list[int]:
    """Every cut point 0..len(journal), or a deterministic sample of `cut_budget` of them that keeps
    the end, the `landmarks` and every cut inside the first `keep_first` requests."""
    n = len(rec.journal)
    budget = rec.scenario.cut_budget
    if budget is None or n + 1 <= budget:
        return list(range(n + 1))
    chosen = {0, n} | landmarks(rec)
    if rec.scenario.keep_first:
        chosen.update(range(rec.ops[rec.scenario.keep_first - 1].end + 1))
    rng = random.Random(rec.scenario.seed ^ 0xC0FFEE)
    rest = [i for i in range(n + 1) if i not in chosen]
    chosen.update(rng.sample(rest, max(0, min(len(rest), budget - len(chosen)))))
    return sorted(chosen)


def check_prefix_cuts(rec: Recording, tools: Tools, cuts: Sequence[int]) -> Summary:
    """Power loss after each of `cuts` journal entries (prefix model). Cuts that differ only by
    syncs give the same file: it is checked once, against the strictest of their expectations."""
    summary = Summary(crash_states=len(cuts))
    groups: dict[int, list[int]] = {}
    for n in cuts:
        groups.setdefault(rec.canonical(n), []).append(n)
    buf = bytearray(rec.pre)
    applied = 0
    every = rec.scenario.full_every
    with _Pool(summary) as pool:
        for index, (canon, members) in enumerate(sorted(groups.items())):
            for entry in rec.journal[applied:canon]:
                apply_entry(buf, entry)
            applied = canon
            exps = [rec.expectation(f"cut after {m} of {len(rec.journal)} journal entries"
                                    + (f" (last: {describe_entry(rec.journal[m - 1])})" if m else ""),
                                    m, m, strict=True) for m in sorted(members, reverse=True)]
            full = index % every == 0 or canon == len(rec.journal)
            summary.full_files += full
            pool.submit(rec, tools, bytes(buf), exps, f"p{canon}", full)
    summary.files = len(groups)
    return summary


def epochs(rec: Recording) -> list[tuple[int, int]]:
    """(last sync before, next sync) around every run of two or more entries without a barrier."""
    bounds = [-1] + sync_positions(rec.journal) + [len(rec.journal)]
    return [(s, t) for s, t in zip(bounds, bounds[1:]) if t - s - 1 >= 2]


def reorder_cases(rec: Recording) -> list[tuple[int, int, list[int]]]:
    """(last sync, next sync, surviving entries in between). Exhaustive scenarios: every subset of
    every epoch of up to 6 entries that is not a plain prefix (the prefix test has those), and for
    longer epochs each single lost entry. Otherwise a seeded sample: per epoch, one case where an
    earlier entry is lost but later ones survive, and one random subset."""
    rng = random.Random(rec.scenario.seed ^ 0x5EED)
    cases = []
    first = rec.ops[rec.scenario.reorder_from].start
    for s, t in epochs(rec):
        if t <= first:
            continue
        entries = list(range(s + 1, t))
        m = len(entries)
        if rec.scenario.exhaustive:
            if m <= 6:
                for mask in range(1 << m):
                    keep = [e for k, e in enumerate(entries) if mask >> k & 1]
                    if keep != entries[:len(keep)]:
                        cases.append((s, t, keep))
            else:
                cases += [(s, t, entries[:k] + entries[k + 1:]) for k in range(m - 1)]
            continue
        drop = rng.randrange(m - 1)
        cases.append((s, t, entries[:drop] + entries[drop + 1:]))
        for _ in range(10):
            keep = [e for e in entries if rng.random() < 0.5]
            if keep != entries[:len(keep)]:
                cases.append((s, t, keep))
                break
    if not rec.scenario.exhaustive and len(cases) > rec.scenario.reorder_budget:
        cases = sorted(rng.sample(cases, rec.scenario.reorder_budget))
    return cases


def check_reordered(rec: Recording, tools: Tools) -> Summary:
    """Reorder model: entries up to a sync are on disk, plus a subset of those up to the next one."""
    cases = reorder_cases(rec)
    summary = Summary(crash_states=len(cases), files=len(cases))
    with _Pool(summary) as pool:
        for i, (s, t, keep) in enumerate(cases):
            buf = replay(rec.pre, rec.journal[:s + 1])
            barrier_size = len(buf)
            for j in keep:
                apply_entry(buf, rec.journal[j])
            lost = [describe_entry(rec.journal[j]) for j in range(s + 1, t) if j not in keep]
            label = (f"entries up to the sync at {s} on disk, of the {t - s - 1} up to the next sync "
                     f"at {t} lost: " + "; ".join(lost))
            exp = rec.expectation(label, s + 1, t, strict=rec.scenario.strict_reorder)
            full = i % rec.scenario.full_every == 0
            summary.full_files += full
            pool.submit(rec, tools, bytes(buf), [exp], f"r{i}", full, barrier_size)
    return summary


def make_backing(directory: str, fmt: str, size: int, options: dict, backed: list[tuple[int, int]], seed: int):
    """A backing file `base.<fmt>` with seeded random data in the `backed` ranges; returns a reader
    of its content (offset, length) -> bytes."""
    rng = random.Random(seed)
    content = bytearray(size)
    image_path = os.path.join(directory, f"base.{fmt}")
    images.create_image(image_path, fmt, size, options)
    image = images.open_image(image_path)
    for offset, length in backed:
        data = rng.randbytes(length)
        content[offset:offset + length] = data
        image.write(offset, data)
    image.close()
    frozen = bytes(content)
    return lambda offset, length: frozen[offset:offset + length]


def recorder(scenarios: dict, tmp_path_factory) -> Callable[[str], Recording]:
    """Record each scenario once per test module, on first use."""
    cache: dict[str, Recording] = {}

    def get(name: str) -> Recording:
        if name not in cache:
            cache[name] = record(scenarios[name], str(tmp_path_factory.mktemp(name)))
        return cache[name]
    return get
