"""Malformed VHDX files, one defect each, built from `qemu-img create` output with a few bytes patched
(checksums recomputed where the defect is not the checksum), then hypothesis mutations of the header,
region table, metadata, BAT and log.

Each defect must be refused at open, read-only and read-write alike, with one exception of the
`ImageError` family naming the file and the field, before any large allocation, without touching the
file (tests.support.assert_open_fails). Where qemu-img 7.2 decides otherwise, the test says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions
from emu.crc32c import crc32c
from emu.errors import BlockError, EmuError, InvalidImage, UnsupportedFeature
from images import create_image, detect_format, open_image
from images.inspect import map_extents
from tests.conftest import run
from tests.support import Hang, assert_open_fails, digest, patch_bytes, time_limit, traced_memory

pytestmark = pytest.mark.qemu

MiB = 1 << 20
# qemu-img create -f vhdx -o block_size=1M X 64M: headers at 64 and 128 KiB, region tables at 192 and
# 256 KiB, log at 1 MiB, BAT (64 entries) at 2 MiB, metadata region at 3 MiB, file of 8 MiB
HEADERS = (0x10000, 0x20000)
REGIONS = (0x30000, 0x40000)
LOG, BAT, META = 1 * MiB, 2 * MiB, 3 * MiB
ITEMS = META + 0x10000      # file parameters, virtual size, page 83, logical and physical sector size
FILE_SIZE = 8 * MiB
BAT_GUID = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08").bytes_le


# -- patching with plain struct --------------------------------------------------------------------
def read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def crc(raw: bytes) -> bytes:
    """CRC-32C of a structure with its checksum field (bytes 4-7) counted as zero, as stored."""
    return struct.pack("<I", crc32c(raw[:4] + bytes(4) + raw[8:]))


def fix_checksums(path: str) -> None:
    for offset, size in [(h, 4096) for h in HEADERS] + [(r, 65536) for r in REGIONS]:
        patch_bytes(path, offset + 4, crc(read(path, offset, size)))


def patch_headers(path: str, field_offset: int, raw: bytes) -> None:
    """The same field in both headers, checksums recomputed."""
    for header in HEADERS:
        patch_bytes(path, header + field_offset, raw)
    fix_checksums(path)


def patch_regions(path: str, field_offset: int, raw: bytes) -> None:
    """The same bytes in both region tables, checksums recomputed."""
    for table in REGIONS:
        patch_bytes(path, table + field_offset, raw)
    fix_checksums(path)


# qemu-io through blkdebug: the first write to the BAT sector fails, after qemu logged it (iotype=write:
# qemu reads that sector to build its log entry, and that read must succeed)
BLKDEBUG_FAIL_BAT_WRITE = f"""[inject-error]
event = "pwritev"
iotype = "write"
sector = "{BAT // 512}"
once = "on"
"""


def qemu_opens(qemu_img: str, path: str) -> bool:
    return run(qemu_img, "info", "-f", "vhdx", path, check=False).returncode == 0


@pytest.fixture
def disk(tmp_path, qemu_img) -> str:
    path = str(tmp_path / "disk.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "64M")
    return path


def test_the_unpatched_file_has_the_layout_the_patches_assume(disk):
    """Without this the tests below could pass for the wrong reason."""
    assert os.path.getsize(disk) == FILE_SIZE
    assert read(disk, 0, 8) == b"vhdxfile" and read(disk, HEADERS[0], 4) == b"head"
    assert read(disk, REGIONS[0], 4) == b"regi" and read(disk, REGIONS[0] + 16, 16) == BAT_GUID
    assert struct.unpack("<QI", read(disk, REGIONS[0] + 32, 12)) == (BAT, MiB)
    assert struct.unpack("<QI", read(disk, REGIONS[0] + 64, 12)) == (META, MiB)
    assert read(disk, META, 8) == b"metadata"
    assert struct.unpack("<IIQ", read(disk, ITEMS, 16)) == (MiB, 0, 64 * MiB)
    assert struct.unpack("<II", read(disk, ITEMS + 32, 8)) == (512, 512)
    assert struct.unpack("<IQ", read(disk, HEADERS[0] + 68, 12)) == (MiB, LOG)
    before = digest(disk)
    fix_checksums(disk)                       # the helper reproduces qemu's checksums exactly
    assert digest(disk) == before
    for read_only in (True, False):
        image = open_image(disk, read_only=read_only)
        assert (image.virtual_size, image.block_size) == (64 * MiB, MiB)
        image.close()


# -- one defect each --------------------------------------------------------------------------------
def headers(offset: int, fmt: str, value):
    return lambda path: patch_headers(path, offset, struct.pack(fmt, value))


def regions(offset: int, raw: bytes):
    return lambda path: patch_regions(path, offset, raw)


def raw(offset: int, data: bytes):
    return lambda path: patch_bytes(path, offset, data)


def both(*patchers):
    def apply_all(path: str) -> None:
        for patcher in patchers:
            patcher(path)
    return apply_all


def extra_region(required: int):
    """A third region table entry of an unknown GUID."""
    return both(regions(8, struct.pack("<I", 3)),
                regions(16 + 2 * 32, uuid.uuid4().bytes_le + struct.pack("<QII", 5 * MiB, MiB, required)))


def extra_item(flags: int):
    """A sixth metadata entry of an unknown GUID (8 bytes after the five items qemu writes)."""
    return both(raw(META + 10, struct.pack("<H", 6)),
                raw(META + 32 + 5 * 32, uuid.uuid4().bytes_le + struct.pack("<IIII", 0x10100, 8, flags, 0)))


CASES = {
    # name: (defect, exception, field, does qemu-img 7.2 open the file all the same?)
    "both headers' checksums": (both(raw(HEADERS[0] + 200, b"\1"), raw(HEADERS[1] + 200, b"\1")),
                                InvalidImage, "header", False),
    "header version 2": (headers(66, "<H", 2), InvalidImage, "header", False),
    "log version 1": (headers(64, "<H", 1), UnsupportedFeature, "log_version", False),
    "log past the end of the file": (headers(72, "<Q", 1 << 30), InvalidImage, "log_offset", True),
    "log inside the header section": (headers(72, "<Q", 0), InvalidImage, "log_offset", False),
    "log length 1.5 MiB": (headers(68, "<I", 3 * MiB // 2), InvalidImage, "log_length", False),
    "both region tables' checksums": (both(raw(REGIONS[0] + 200, b"\1"), raw(REGIONS[1] + 200, b"\1")),
                                      InvalidImage, "region_table", False),
    "3000 region entries": (regions(8, struct.pack("<I", 3000)), InvalidImage, "region_table", False),
    "BAT region over the metadata": (regions(32, struct.pack("<Q", META)), InvalidImage, "region_table", False),
    "BAT region in the header section": (regions(32, struct.pack("<Q", 0)), InvalidImage, "region_table", False),
    "no BAT region": (regions(16, uuid.uuid4().bytes_le), InvalidImage, "region_table", False),
    "unknown required region": (extra_region(1), UnsupportedFeature, "region_table", False),
    "metadata signature": (raw(META, b"metadatX"), InvalidImage, "metadata", False),
    "3000 metadata entries": (raw(META + 10, struct.pack("<H", 3000)), InvalidImage, "metadata", False),
    "physical sector size item missing": (raw(META + 10, struct.pack("<H", 4)), InvalidImage, "metadata", False),
    "file parameters twice": (lambda path: patch_bytes(path, META + 64, read(path, META + 32, 32)), InvalidImage,
                              "metadata", False),
    "item outside the metadata region": (raw(META + 48, struct.pack("<I", MiB)), InvalidImage, "metadata", False),
    "file parameters item of 4 bytes": (raw(META + 52, struct.pack("<I", 4)), InvalidImage, "metadata", True),
    "unknown required metadata item": (extra_item(4), UnsupportedFeature, "metadata", False),
    "block size 3 MiB": (raw(ITEMS, struct.pack("<I", 3 * MiB)), InvalidImage, "block_size", False),
    "block size 512 KiB": (raw(ITEMS, struct.pack("<I", MiB // 2)), InvalidImage, "block_size", False),
    "block size 512 MiB": (raw(ITEMS, struct.pack("<I", 512 * MiB)), InvalidImage, "block_size", False),
    "has a parent but no locator": (raw(ITEMS + 4, struct.pack("<I", 2)), InvalidImage, "parent_locator", False),
    "virtual size 64 TiB + 512": (raw(ITEMS + 8, struct.pack("<Q", (64 << 40) + 512)), InvalidImage,
                                  "virtual_disk_size", False),
    "virtual size 0": (raw(ITEMS + 8, struct.pack("<Q", 0)), InvalidImage, "virtual_disk_size", False),
    "virtual size 1000": (raw(ITEMS + 8, struct.pack("<Q", 1000)), InvalidImage, "virtual_disk_size", True),
    "virtual size needing a bigger BAT": (raw(ITEMS + 8, struct.pack("<Q", 1 << 40)), InvalidImage, "bat", False),
    "4096-byte logical sectors": (raw(ITEMS + 32, struct.pack("<I", 4096)), UnsupportedFeature,
                                  "logical_sector_size", False),
    "1024-byte logical sectors": (raw(ITEMS + 32, struct.pack("<I", 1024)), InvalidImage,
                                  "logical_sector_size", False),
    "1024-byte physical sectors": (raw(ITEMS + 36, struct.pack("<I", 1024)), InvalidImage,
                                   "physical_sector_size", True),
    "BAT entry past the end of the file": (raw(BAT, struct.pack("<Q", 100 * MiB | 6)), InvalidImage, "bat", False),
    "BAT entry over the metadata region": (raw(BAT, struct.pack("<Q", META | 6)), InvalidImage, "bat", False),
    "partially present block without a parent": (raw(BAT, struct.pack("<Q", 4 * MiB | 7)), InvalidImage, "bat",
                                                 True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_defect_is_refused_naming_the_file_and_the_field(disk, qemu_img, name):
    defect, cls, field, qemu_accepts = CASES[name]
    defect(disk)
    assert_open_fails(disk, cls, field)
    assert qemu_opens(qemu_img, disk) == qemu_accepts


def test_sector_bitmap_block_in_a_disk_without_parent_is_refused(tmp_path, qemu_img):
    """A 64 GiB disk with 8 MiB blocks: the chunk of 512 blocks ends with its sector-bitmap entry."""
    path = str(tmp_path / "big.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=8M", path, "64G")
    bat = struct.unpack("<Q", read(path, REGIONS[0] + 32, 8))[0]
    patch_bytes(path, bat + 8 * 512, struct.pack("<Q", 4 * MiB | 6))
    assert_open_fails(path, InvalidImage, "bat")


def test_bad_file_signature_is_not_a_vhdx(disk):
    patch_bytes(disk, 0, b"vhdxfilX")
    assert detect_format(disk) == "raw"                 # as qemu-img probes it
    assert_open_fails(disk, InvalidImage, "magic", fmt="vhdx")


@pytest.mark.parametrize("bad", [0, 1])
def test_one_bad_header_falls_back_to_the_other_as_qemu_does(disk, qemu_img, bad):
    patch_bytes(disk, HEADERS[bad] + 200, b"\x01")
    image = open_image(disk, read_only=True)
    assert image.headers.current == 1 - bad and image.virtual_size == 64 * MiB
    image.close()
    assert qemu_opens(qemu_img, disk)
    image = open_image(disk)        # a write session rewrites both headers (over the old reserved bytes, as qemu)
    image.write(0, b"\x01" * 512)
    image.close()
    assert all(crc(read(disk, header, 4096)) == read(disk, header + 4, 4) for header in HEADERS)
    assert qemu_opens(qemu_img, disk)


def test_headers_with_equal_sequence_numbers_must_be_identical(disk):
    patch_bytes(disk, HEADERS[1] + 8, read(disk, HEADERS[0] + 8, 8))
    fix_checksums(disk)
    open_image(disk, read_only=True).close()            # Disk2VHD writes two identical headers
    patch_bytes(disk, HEADERS[1] + 16, uuid.uuid4().bytes_le)  # another file write GUID: which one is current?
    fix_checksums(disk)
    assert_open_fails(disk, InvalidImage, "header")


@pytest.mark.parametrize("bad", [0, 1])
def test_one_bad_region_table_falls_back_to_the_other(disk, qemu_img, bad):
    """[MS-VHDX] keeps two copies for this; qemu 7.2 reads only the first and refuses when it is bad."""
    patch_bytes(disk, REGIONS[bad] + 200, b"\x01")
    image = open_image(disk, read_only=True)
    assert image.bat.offset == BAT
    image.close()
    assert qemu_opens(qemu_img, disk) == (bad == 1)


def test_unknown_optional_region_and_metadata_item_are_ignored(disk, qemu_img):
    extra_region(0)(disk)
    extra_item(0)(disk)
    image = open_image(disk)
    image.write(0, b"\x02" * 4096)
    image.close()
    assert qemu_opens(qemu_img, disk)


def test_a_log_guid_without_entries_is_cleared_only_on_a_valid_file(disk, qemu_img):
    """A writer that crashed after setting the log GUID but before writing its entry: nothing to replay.
    A read-write open clears the GUID, but only once the file proved valid."""
    patch_headers(disk, 48, uuid.uuid4().bytes_le)
    for region in REGIONS:
        patch_bytes(disk, region + 200, b"\1")
    assert_open_fails(disk, InvalidImage, "region_table")     # the read-write open wrote nothing either
    fix_checksums(disk)
    open_image(disk, read_only=True).close()
    assert read(disk, HEADERS[0] + 48, 16) != bytes(16)
    open_image(disk).close()
    current = max(HEADERS, key=lambda h: struct.unpack("<Q", read(disk, h + 8, 8))[0])
    assert read(disk, current + 48, 16) == bytes(16) and qemu_opens(qemu_img, disk)


@pytest.mark.parametrize("length,field", [(300000, "header"), (MiB + 4096, "log_offset"), (META + 100, "metadata"),
                                          (ITEMS + 10, "metadata")])
def test_truncated_files_are_refused(disk, length, field):
    os.truncate(disk, length)
    assert_open_fails(disk, InvalidImage, field)


def test_truncated_bat_is_refused(tmp_path, qemu_img):
    """A BAT after the metadata (Hyper-V may place it anywhere), cut short with the file."""
    path = str(tmp_path / "d.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "1G")   # 1024 entries, 8 KiB
    patch_bytes(path, 4 * MiB, read(path, BAT, 8192))
    patch_regions(path, 32, struct.pack("<Q", 4 * MiB))
    open_image(path, read_only=True).close()
    os.truncate(path, 4 * MiB + 4096)
    assert_open_fails(path, InvalidImage, "bat")


def test_a_log_claiming_a_longer_file_is_not_replayed(tmp_path, qemu_img, qemu_io):
    """A dirty log (made by qemu-io, the BAT write failed through blkdebug), then the file cut short:
    replaying would write past the end, so a read-write open refuses, and a read-only one too."""
    path, config = str(tmp_path / "q.vhdx"), str(tmp_path / "blkdebug.conf")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "64M")
    with open(config, "w") as f:
        f.write(BLKDEBUG_FAIL_BAT_WRITE)
    assert run(qemu_io, "-f", "vhdx", "-c", "write 0 4k", f"blkdebug:{config}:{path}", check=False).returncode
    os.truncate(path, FILE_SIZE)              # the block qemu appended at 8 MiB is gone
    before = digest(path)
    with pytest.raises(InvalidImage) as info:
        open_image(path, read_only=True)
    assert info.value.field == "log_guid" and path in str(info.value)
    with pytest.raises(InvalidImage) as info:
        open_image(path)
    assert info.value.field == "log" and "truncated" in str(info.value) and path in str(info.value)
    assert digest(path) == before


# -- hypothesis: mutations raise only emu errors ------------------------------------------------------
FUZZ_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much], deadline=None)
MEMORY_PEAK_LIMIT = 64 * MiB
EXAMPLE_TIME_LIMIT = 10


class Seed:
    """A file as sparse extents (it is mostly holes), and where its metadata lies."""

    def __init__(self, path: str, areas: dict[str, tuple[int, int]], others: tuple[str, ...] = ()) -> None:
        with open(path, "rb") as f:
            self.data = f.read()
        self.name = os.path.basename(path)
        self.areas = areas
        self.others = {o: open(os.path.join(os.path.dirname(path), o), "rb").read() for o in others}

    def __repr__(self) -> str:
        return f"<seed {self.name}>"


def _areas(path: str) -> dict[str, tuple[int, int]]:
    bat, bat_len = struct.unpack("<QI", read(path, REGIONS[0] + 32, 12))
    meta = struct.unpack("<Q", read(path, REGIONS[0] + 64, 8))[0]
    log_len, log = struct.unpack("<IQ", read(path, HEADERS[0] + 68, 12))
    return {"file identifier": (0, 16), "header 1": (HEADERS[0], HEADERS[0] + 80),
            "header 2": (HEADERS[1], HEADERS[1] + 80), "region table 1": (REGIONS[0], REGIONS[0] + 112),
            "region table 2": (REGIONS[1], REGIONS[1] + 112), "metadata table": (meta, meta + 32 + 6 * 32),
            "metadata items": (meta + 0x10000, meta + 0x10000 + 600), "BAT": (bat, bat + min(bat_len, 8192)),
            "log": (log, log + 8192)}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, qemu_img, qemu_io) -> dict[str, Seed]:
    root = str(tmp_path_factory.mktemp("vhdx-seeds"))
    found = {}
    dyn = os.path.join(root, "dynamic.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", dyn, "16M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 0 1M", "-c", "write -P 2 5M 4k", dyn)
    found["dynamic"] = Seed(dyn, _areas(dyn))
    fixed = os.path.join(root, "fixed.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "subformat=fixed,block_state_zero=off,block_size=1M", fixed,
        "4M")
    found["fixed"] = Seed(fixed, _areas(fixed))
    dirty = os.path.join(root, "dirty.vhdx")
    shutil.copy(dyn, dirty)
    with open(os.path.join(root, "bd.conf"), "w") as f:
        f.write(BLKDEBUG_FAIL_BAT_WRITE)
    run(qemu_io, "-f", "vhdx", "-c", "write -P 3 9M 4k", f"blkdebug:{root}/bd.conf:{dirty}", check=False)
    found["dirty log"] = Seed(dirty, _areas(dirty))
    child_dir = os.path.join(root, "chain")
    os.makedirs(child_dir)
    shutil.copy(dyn, os.path.join(child_dir, "base.vhdx"))
    child = os.path.join(child_dir, "child.vhdx")
    create_image(child, "vhdx", None, {}, backing="base.vhdx", backing_fmt="vhdx")
    drive = Drive(open_image(child), DriveOptions())
    drive.write(100, b"\x04" * 1000)
    drive.write(3 * MiB, b"\x05" * MiB)
    drive.close()
    found["differencing"] = Seed(child, _areas(child), ("base.vhdx",))
    return found


def test_the_seeds_open_and_check_clean(seeds, tmp_path):
    for key, seed in seeds.items():
        path = _materialise(seed, seed.data, str(tmp_path / key.replace(" ", "-")))
        image = open_image(path, read_only=key != "dirty log")
        assert image.replayed == (key == "dirty log")
        result = image.check()
        assert (result.corruptions, result.check_errors) == (0, 0), result.messages
        image.close()


@st.composite
def mutation(draw, seed: Seed):
    area = draw(st.sampled_from(sorted(seed.areas)))
    start, end = seed.areas[area]
    pos = draw(st.integers(start, end - 1))
    kind = draw(st.sampled_from(("byte", "bit", "u32", "u64")))
    if kind == "byte":
        return area, pos, bytes([draw(st.integers(0, 255))])
    if kind == "bit":
        return area, pos, ("bit", draw(st.integers(0, 7)))
    width = 4 if kind == "u32" else 8
    pos = start + (pos - start) // width * width
    value = draw(st.sampled_from((0, 1, 2, 3, 6, 7, 512, 4096, MiB, MiB | 6, 3 * MiB | 6, 1 << 30, 1 << 32,
                                  (1 << 32) - 1, 64 << 40, 1 << 63, (1 << 64) - 1)) | st.integers(0, (1 << 64) - 1))
    return area, pos, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def apply(data: bytes, mutations: list, fix: bool) -> bytes:
    out = bytearray(data)
    for _, pos, change in mutations:
        if isinstance(change, tuple):
            out[pos] ^= 1 << change[1]
        else:
            out[pos:pos + len(change)] = change
    if fix:       # past the checksums, into the fields they protect
        for offset, size in [(h, 4096) for h in HEADERS] + [(r, 65536) for r in REGIONS]:
            out[offset + 4:offset + 8] = crc(bytes(out[offset:offset + size]))
        log_entry = out[LOG:LOG + 4096]
        if log_entry[:4] == b"loge":
            length = struct.unpack_from("<I", log_entry, 8)[0]
            if 0 < length <= MiB and length % 4096 == 0:
                out[LOG + 4:LOG + 8] = crc(bytes(out[LOG:LOG + length]))
    return bytes(out)


def _materialise(seed: Seed, data: bytes, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    for name, content in seed.others.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(content)
    path = os.path.join(directory, seed.name)
    with open(path, "wb") as f:             # sparse: only the 64 KiB pieces that hold something
        for offset in range(0, len(data), 65536):
            piece = data[offset:offset + 65536]
            if piece.count(0) != len(piece):
                os.pwrite(f.fileno(), piece, offset)
        f.truncate(len(data))
    return path


def _attempt(fn, *args):
    """fn(*args), or None when it raised an emu error (an accepted outcome of any step)."""
    try:
        return fn(*args)
    except EmuError as exc:
        note(f"{getattr(fn, '__name__', fn)}: {type(exc).__name__}: {exc}")
        return None


def _session(path: str, read_only: bool) -> None:
    image = _attempt(lambda: open_image(path, read_only=read_only))
    event(f"{'read-only' if read_only else 'read-write'}: {'opened' if image else 'refused'}")
    if image is None:
        return
    try:
        size = image.virtual_size
        spots = [(o - o % 512, min(MiB, size - (o - o % 512))) for o in (0, size // 3, size // 2, size - 1)]
        for offset, length in spots:
            data = _attempt(image.read, offset, length)
            assert data is None or len(data) == length
        _attempt(image.check)
        _attempt(map_extents, image, 0, min(size, 256 * MiB))
        if not read_only:
            drive = Drive(image, DriveOptions(discard="unmap"))
            half = size // 2 - (size // 2) % 4096
            for done in (drive.write(0, b"\x5a" * 4096), drive.write(half, b"\xa5" * min(8192, size - half)),
                         drive.discard(0, min(size, 4 * MiB)), drive.write_zeroes(0, min(size, 2 * MiB),
                                                                                   may_unmap=True),
                         drive.write(max(0, size - 512), b"\x01" * min(512, size)), drive.flush()):
                assert done.ok or isinstance(done.error, BlockError), done
        _attempt(image.close)
    finally:
        node = image
        while node is not None:
            node.host.close()
            node = node.backing


def exercise(seed: Seed, mutant: bytes, scratch: str) -> None:
    directory = tempfile.mkdtemp(dir=scratch)
    try:
        path = _materialise(seed, mutant, directory)
        try:
            with traced_memory() as memory, time_limit(EXAMPLE_TIME_LIMIT):
                _session(path, read_only=True)
                assert digest(path) == digest_bytes(mutant), "a read-only session modified the file"
                _session(path, read_only=False)
                _session(path, read_only=True)
        except Hang as exc:
            raise AssertionError(f"hang: {exc}") from None
        assert memory["peak"] < MEMORY_PEAK_LIMIT, f"peak of {memory['peak']} bytes"
        for name, content in seed.others.items():
            with open(os.path.join(directory, name), "rb") as f:
                assert f.read() == content, f"the parent {name} was modified"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vhdx-mutants"))


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_metadata_raises_only_emu_errors(seeds, scratch, data):
    """Bytes of the headers, region tables, metadata, BAT and log changed (checksums recomputed or
    not); the mutant is opened read-only and read-write, read, checked, mapped, written, discarded."""
    seed = seeds[data.draw(st.sampled_from(sorted(seeds)), label="seed")]
    mutations = data.draw(st.lists(mutation(seed), min_size=1, max_size=4), label="mutations")
    fix = data.draw(st.booleans(), label="recompute checksums")
    mutant = apply(seed.data, mutations, fix)
    assume(mutant != seed.data)
    event(f"areas: {', '.join(sorted({m[0] for m in mutations}))}")
    exercise(seed, mutant, scratch)
