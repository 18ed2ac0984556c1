"""Hypothesis fuzzing of qcow2 parsing and use: only the project's error family may escape.

Seeds are real qemu-img images (v3 and v2, with and without a backing file, with written, discarded
and zeroed data, compressed clusters, an internal snapshot, small clusters with lazy refcounts).
Hypothesis mutates bytes of the header cluster and of the L1/L2/refcount/snapshot tables and cuts
files short; each mutant is then opened read-only and read-write, read in full, checked, mapped,
written, discarded and closed. Any exception that is not an `EmuError` fails the example, and so do
a hang (a per-example wall-clock limit) and a large memory peak (tracemalloc).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from qcow2_fuzz_support import (
    FAR_PAST_EOF,
    Hang,
    Layout,
    address_space_cap,
    describe,
    qemu_img_run,
    time_limit,
    traced_memory,
)

from emu.block import Drive, DriveOptions
from emu.errors import BlockError, EmuError
from images import open_image
from images.inspect import map_extents
from images.qcow2 import layout as L

pytestmark = pytest.mark.qemu

MiB = 1 << 20
MEMORY_PEAK_LIMIT = 64 * MiB
EXAMPLE_TIME_LIMIT = 10          # seconds of wall time per example; a normal one takes well under 1 s
ADDRESS_SPACE_HEADROOM = 3 << 30  # a bigger allocation becomes MemoryError (a failure), not an OOM kill
READ_CHUNK = 1 * MiB
FULL_READ_LIMIT = 128 * MiB       # disks up to this are read in full; bigger ones at 32 spread chunks

FUZZ_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much], deadline=None)


# -- seeds -----------------------------------------------------------------------------------------

@dataclass(repr=False)
class Seed:
    name: str                       # file name of the image that is mutated
    data: bytes
    others: dict[str, bytes]        # backing files, copied next to it unmodified
    layout: Layout

    def __repr__(self) -> str:      # hypothesis prints the arguments of a failing example
        return f"<seed {self.name} of {len(self.data)} bytes>"


class Seeds(dict):
    def __repr__(self) -> str:
        return f"<{len(self)} seed images: {', '.join(self)}>"


def _build_seeds(root: str, qemu_img: str, qemu_io: str) -> dict[str, Seed]:
    """The seed images, made by qemu-img and qemu-io in `root`."""

    def img(*args: str, cwd: str) -> None:
        qemu_img_run(qemu_img, *args, cwd=cwd)

    def io(path: str, *commands: str) -> None:
        cmd = [qemu_io, "-f", "qcow2"]
        for c in commands:
            cmd += ["-c", c]
        proc = subprocess.run(cmd + [path], capture_output=True, text=True, cwd=os.path.dirname(path))
        assert proc.returncode == 0 and "error" not in proc.stdout.lower(), proc.stdout + proc.stderr

    activity = ("write -P 0xab 0 128k", "write -P 0xcd 1M 64k", "write -P 0x11 32M 4k",
                "discard 64k 64k", "write -z 2M 64k", "write -P 0x5a 63M 64k")
    seeds = Seeds()

    def seed(key: str, directory: str, name: str, others: tuple[str, ...] = ()) -> None:
        def read(n: str) -> bytes:
            with open(os.path.join(directory, n), "rb") as f:
                return f.read()
        data = read(name)
        seeds[key] = Seed(name, data, {o: read(o) for o in others}, describe(data))

    for key, opts in (("v3", "compat=1.1"), ("v2", "compat=0.10")):
        d = os.path.join(root, key)
        os.makedirs(d)
        img("create", "-q", "-f", "qcow2", "-o", opts, "disk.qcow2", "64M", cwd=d)
        io(os.path.join(d, "disk.qcow2"), *activity)
        seed(key, d, "disk.qcow2")

        b = os.path.join(root, key + "-backing")
        os.makedirs(b)
        shutil.copy(os.path.join(d, "disk.qcow2"), os.path.join(b, "base.qcow2"))
        img("create", "-q", "-f", "qcow2", "-o", opts, "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "64M",
            cwd=b)
        io(os.path.join(b, "top.qcow2"), "write -P 0x22 64k 64k", "discard 0 64k", "write -P 0x33 1M 4k",
           "write -z 32M 64k")
        seed(key + "-backing", b, "top.qcow2", ("base.qcow2",))

    c = os.path.join(root, "compressed")
    os.makedirs(c)
    img("convert", "-c", "-O", "qcow2", os.path.join(root, "v3", "disk.qcow2"), "disk.qcow2", cwd=c)
    io(os.path.join(c, "disk.qcow2"), "write -P 0x44 128k 4k")
    seed("compressed", c, "disk.qcow2")

    s = os.path.join(root, "snapshot")
    os.makedirs(s)
    shutil.copy(os.path.join(root, "v3", "disk.qcow2"), os.path.join(s, "disk.qcow2"))
    img("snapshot", "-c", "before", "disk.qcow2", cwd=s)
    io(os.path.join(s, "disk.qcow2"), "write -P 0x66 0 64k", "discard 1M 64k")
    seed("snapshot", s, "disk.qcow2")

    m = os.path.join(root, "small")
    os.makedirs(m)
    img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on,refcount_bits=8",
        "disk.qcow2", "16M", cwd=m)
    io(os.path.join(m, "disk.qcow2"), "write -P 0xab 0 20k", "write -P 0xcd 4M 8k", "discard 4k 4k",
       "write -z 8k 4k")
    seed("small", m, "disk.qcow2")
    return seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, qemu_img, qemu_io) -> dict[str, Seed]:
    return _build_seeds(str(tmp_path_factory.mktemp("seeds")), qemu_img, qemu_io)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("mutants"))


def test_every_seed_opens_reads_and_checks_clean(seeds, scratch):
    """The seeds themselves must be healthy, or the fuzz tests would start from broken images."""
    assert set(seeds) == {"v3", "v2", "v3-backing", "v2-backing", "compressed", "snapshot", "small"}
    assert any(r.name.startswith("snapshot") for r in seeds["snapshot"].layout.regions)
    for seed in seeds.values():
        directory = tempfile.mkdtemp(dir=scratch)
        try:
            path = _materialise(seed, seed.data, directory)
            image = open_image(path, read_only=True)
            try:
                result = image.check()
                assert (result.corruptions, result.leaks, result.check_errors) == (0, 0, 0), result.messages
                assert image.read(0, 4096) != bytes(4096) or seed.name == "top.qcow2"
            finally:
                image.close()
        finally:
            shutil.rmtree(directory)


# -- mutations -------------------------------------------------------------------------------------

HEADER_REGIONS = ("header", "extensions", "cluster 0")

_SMALL_VALUES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 20, 21, 22, 31, 32, 63, 64, 72, 100, 103, 104, 105,
                 111, 112, 113, 0xFF, 0x100, 0x1000, 0x10000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _interesting(layout: Layout) -> list[int]:
    cs, size = layout.cluster_size, layout.file_size
    values = list(_SMALL_VALUES) + [
        cs - 8, cs, cs + 0x200, 2 * cs, size - cs, size, size + cs, -(-size // cs) * cs, 1 << 30, 1 << 32,
        (1 << 32) - 1, 1 << 40, 1 << 55, (1 << 56) - cs, 1 << 62, 1 << 63, (1 << 64) - 1, (1 << 63) - 1,
        L.OFLAG_COPIED | L.OFLAG_ZERO, L.OFLAG_COMPRESSED | (1 << 61)]
    for offset in layout.offsets:
        values += [offset, offset | L.OFLAG_COPIED, offset | L.OFLAG_ZERO, offset | L.OFLAG_COMPRESSED,
                   offset + 0x200, offset | L.OFLAG_COPIED | L.OFLAG_ZERO]
    return values


@st.composite
def mutation(draw, layout: Layout, region_names: tuple[str, ...] | None):
    """(offset, new bytes) inside one metadata region of the seed."""
    regions = [r for r in layout.regions if r.end > r.start and
               (region_names is None or r.name in region_names)]
    region = draw(st.sampled_from(regions))
    pos = draw(st.integers(region.start, region.end - 1))
    kind = draw(st.sampled_from(("byte", "bit", "value", "value")))
    if kind == "byte":
        return pos, bytes([draw(st.integers(0, 255))])
    if kind == "bit":
        return pos, ("bit", draw(st.integers(0, 7)))
    width = draw(st.sampled_from((4, 8))) if region.unit == 4 else region.unit
    pos = region.start + (pos - region.start) // width * width
    value = draw(st.sampled_from(_interesting(layout)) | st.integers(0, (1 << 64) - 1))
    return pos, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


def apply(data: bytes, mutations: list, truncate_to: int | None) -> bytes:
    out = bytearray(data)
    for pos, change in mutations:
        if isinstance(change, tuple):
            out[pos] ^= 1 << change[1]
        else:
            out[pos:pos + len(change)] = change
    if truncate_to is not None:
        del out[truncate_to:]
    return bytes(out)


# -- exercising one mutant -------------------------------------------------------------------------

def _materialise(seed: Seed, data: bytes, directory: str) -> str:
    for name, content in seed.others.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(content)
    path = os.path.join(directory, seed.name)
    with open(path, "wb") as f:
        f.write(data)
    return path


class Outcomes:
    """Runs the steps of one example on the file at `path`: an EmuError is an accepted outcome of any
    step (noted for the report of a failing example); any other exception fails the example."""

    def __init__(self, path: str, original: bytes) -> None:
        self.path = path
        self.original_size = len(original)
        self.last_error = ""

    def checkable(self) -> bool:
        """Whether check() can run within the limits: not when the read-write session made the file
        huge (an L2 entry far past the end, in a mutant, is written in place, as qemu writes it, and
        checking a sparse 1 TiB file means counting its clusters, in qemu too)."""
        return os.path.getsize(self.path) <= self.original_size + FAR_PAST_EOF

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), or None if it raised an EmuError."""
        try:
            return fn(*args, **kwargs)
        except EmuError as exc:
            note(f"{getattr(fn, '__name__', fn)}{args}: {type(exc).__name__}: {exc}")
            self.last_error = f"{type(exc).__name__} ({getattr(exc, 'field', None)})"
            return None


def _file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _file_equals(path: str, data: bytes) -> bool:
    return os.path.getsize(path) == len(data) and _file_bytes(path) == data


def _dirty(data: bytes) -> bool:
    return len(data) >= 80 and data[4:8] == b"\0\0\0\3" and bool(data[79] & L.INCOMPAT_DIRTY)


def _read_spots(size: int) -> list[tuple[int, int]]:
    if size <= FULL_READ_LIMIT:
        return [(o, min(READ_CHUNK, size - o)) for o in range(0, size, READ_CHUNK)]
    step = size // 32
    spots = [(i * step - (i * step) % 512, READ_CHUNK) for i in range(32)]
    return spots + [(size - READ_CHUNK, READ_CHUNK)]


def _force_close(image) -> None:
    """Release every file descriptor of the chain even if close() failed half way."""
    node = image
    while node is not None:
        node.host.close()
        node = node.backing


def _inspect(steps: Outcomes, image) -> None:
    """Read everything, check (when it can run within the limits, see Outcomes.checkable), map."""
    for offset, length in _read_spots(image.virtual_size):
        data = steps.run(image.read, offset, length)
        assert data is None or len(data) == length
    if not image.read_only:
        steps.run(image.flush)
    if steps.checkable():
        steps.run(image.check)
    steps.run(map_extents, image)


def _drive_session(image) -> None:
    """A little guest activity: writes, discards, write-zeroes, flush; errors must be BlockErrors."""
    size = image.virtual_size
    drive = Drive(image, DriveOptions(discard="unmap"))
    cs = getattr(image, "cluster_size", 65536)
    requests = [("write", 0, b"\x5a" * 4096), ("write", cs - 2048, b"\xa5" * (cs + 4096)),
                ("write", size // 2 - (size // 2) % 4096, b"\x77" * 8192), ("discard", cs, 2 * cs),
                ("zeroes", 2 * cs, 2 * cs), ("write", 3 * cs + 512, b"\x01" * 1024), ("discard", 0, size),
                ("write", max(0, size - 4096), b"\x02" * 4096), ("flush", 0, 0)]
    for op, offset, arg in requests:
        if op == "write":
            if offset + len(arg) > size:
                continue
            completion = drive.write(offset, arg)
        elif op == "discard":
            if offset + arg > size:
                continue
            completion = drive.discard(offset, arg)
        elif op == "zeroes":
            if offset + arg > size:
                continue
            completion = drive.write_zeroes(offset, arg, may_unmap=True)
        else:
            completion = drive.flush()
        assert completion.ok or isinstance(completion.error, BlockError), completion
        if not completion.ok:
            note(f"{op} {offset:#x}: {completion.error}")


def _session(steps: Outcomes, *, read_only: bool, full: bool = True) -> None:
    image = steps.run(open_image, steps.path, read_only=read_only)
    if full:   # shown by --hypothesis-show-statistics: how far the mutants get
        event(f"{'read-only' if read_only else 'read-write'} open: " +
              ("opened" if image is not None else steps.last_error))
    if image is None:
        return
    try:
        if full:
            _inspect(steps, image)
        else:
            steps.run(image.read, 0, min(image.virtual_size, READ_CHUNK))
            if steps.checkable():
                steps.run(image.check)
        if not read_only and image.virtual_size:
            steps.run(_drive_session, image)
        steps.run(image.close)
    finally:
        _force_close(image)
    if not read_only and image.format_name == "qcow2":
        # Whatever the damage, no guest data or table lands on the header (qemu's metadata overlap
        # check). It may be punched out, though: a guest discard of a cluster whose corrupt L2 entry
        # claims host cluster 0 frees it and passes the discard down, as qemu 7.2 does too.
        with open(steps.path, "rb") as f:
            assert f.read(4) in (L.MAGIC, bytes(4)), "a read-write session wrote over the qcow2 header"


def exercise(seed: Seed, data: bytes, scratch: str) -> None:
    """Open the mutant read-only, then read-write, do everything to it, reopen it; only EmuErrors may
    escape, within the time and memory limits."""
    directory = tempfile.mkdtemp(dir=scratch)
    try:
        path = _materialise(seed, data, directory)
        steps = Outcomes(path, data)
        try:
            with address_space_cap(ADDRESS_SPACE_HEADROOM), traced_memory() as memory, \
                    time_limit(EXAMPLE_TIME_LIMIT):
                _session(steps, read_only=True)
                assert _file_equals(path, data), "a read-only session modified the image"
                # read-write on the same bytes (they are our copy); a dirty image is repaired on open
                _session(steps, read_only=False)
                _session(steps, read_only=True, full=False)   # whatever the session left behind
        except Hang as exc:
            # an ordinary failure, so that hypothesis shrinks and reports the example
            raise AssertionError(f"hang: {exc}").with_traceback(exc.__traceback__) from None
        for name, content in seed.others.items():
            assert _file_equals(os.path.join(directory, name), content), f"backing file {name} was modified"
        assert memory["peak"] < MEMORY_PEAK_LIMIT, f"peak of {memory['peak']} bytes"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


SEED_NAMES = ("v3", "v2", "v3-backing", "v2-backing", "compressed", "snapshot", "small")


# -- the fuzz tests --------------------------------------------------------------------------------

@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_header_cluster_raises_only_emu_errors(seeds, scratch, data):
    """Header fields, extensions and the backing name are the first thing an attacker controls."""
    seed = seeds[data.draw(st.sampled_from(SEED_NAMES), label="seed")]
    mutations = data.draw(st.lists(mutation(seed.layout, HEADER_REGIONS), min_size=1, max_size=4),
                          label="mutations")
    mutant = apply(seed.data, mutations, None)
    assume(mutant != seed.data)
    exercise(seed, mutant, scratch)


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_metadata_tables_raise_only_emu_errors(seeds, scratch, data):
    """L1, L2, refcount and snapshot tables are read lazily, while the guest runs."""
    seed = seeds[data.draw(st.sampled_from(SEED_NAMES), label="seed")]
    tables = tuple(r.name for r in seed.layout.regions if r.name not in HEADER_REGIONS)
    mutations = data.draw(st.lists(mutation(seed.layout, tables), min_size=1, max_size=4), label="mutations")
    mutant = apply(seed.data, mutations, None)
    assume(mutant != seed.data)
    exercise(seed, mutant, scratch)


@FUZZ_SETTINGS
@given(data=st.data())
def test_truncated_and_mutated_files_raise_only_emu_errors(seeds, scratch, data):
    """Files cut anywhere (mostly at metadata edges), with or without other damage."""
    seed = seeds[data.draw(st.sampled_from(SEED_NAMES), label="seed")]
    length = data.draw(st.sampled_from(seed.layout.boundaries()) | st.integers(0, len(seed.data) - 1),
                       label="truncate_to")
    mutations = data.draw(st.lists(mutation(seed.layout, None), max_size=2), label="mutations")
    exercise(seed, apply(seed.data, mutations, length), scratch)


def test_apply_changes_exactly_the_chosen_bytes():
    """The mutation helper itself: a value, a bit flip and a cut."""
    data = bytes(16)
    out = apply(data, [(2, b"\x01\x02"), (8, ("bit", 7))], 12)
    assert out == b"\0\0\x01\x02" + bytes(4) + b"\x80" + bytes(3)
    assert struct.unpack(">I", out[:4])[0] == 0x0102
