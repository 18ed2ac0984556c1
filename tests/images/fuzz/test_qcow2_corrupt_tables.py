"""Corruption that only shows at run time: the header is valid, a table entry is not.

A read that meets a bad L1/L2 entry must fail with an `EmuError` (CorruptImage from the image, a
completion with EIO through the Drive), never with another exception, and must not touch the file.
qemu-io writes the data, so the tables are qemu's own before one entry is patched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import subprocess

import pytest
from qcow2_fuzz_support import Hang, patch_field, patch_u64, qemu_img_run, read_u64, time_limit, traced_memory

from emu.block import Drive, DriveOptions
from emu.errors import BlockError, CorruptImage, EmuError
from images import open_image
from images.qcow2 import layout as L

pytestmark = pytest.mark.qemu

MiB = 1 << 20
CLUSTER = 65536
PATTERN = b"\xab" * 4096
# qemu-img create 64M + qemu-io write 0 128k: L1 at 0x30000, L2 table at 0x40000, data at 0x50000/0x60000.
L1_OFFSET = 0x30000
L2_OFFSET = 0x40000
DATA_OFFSET = 0x50000
REFTABLE_OFFSET = 0x10000


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def written(make_qcow2, qemu_io):
    """64 MiB v3 image whose first two clusters qemu-io filled with 0xab."""
    path = make_qcow2("disk.qcow2", "64M")
    proc = subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0xab 0 128k", path],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert read_u64(path, L1_OFFSET) == L.OFLAG_COPIED | L2_OFFSET
    assert read_u64(path, L2_OFFSET) == L.OFLAG_COPIED | DATA_OFFSET
    assert read_u64(path, L2_OFFSET + 8) == L.OFLAG_COPIED | (DATA_OFFSET + CLUSTER)
    return path


def assert_read_fails_without_touching_the_file(path: str, field: str) -> None:
    """Cluster 0 must fail to read (image: CorruptImage naming file and field; Drive: EIO), both
    read-only and read-write, and the file must be byte-identical afterwards."""
    before = digest(path)
    for read_only in (True, False):
        image = open_image(path, read_only=read_only)
        try:
            with pytest.raises(EmuError) as info:
                image.read(0, 4096)
            exc = info.value
            assert type(exc) is CorruptImage, f"{type(exc).__name__}: {exc}"
            assert exc.field == field and path in str(exc), str(exc)
            with pytest.raises(CorruptImage):          # a read spanning the bad cluster fails as a whole
                image.read(CLUSTER - 512, 1024)
            completion = Drive(image).read(0, 4096)
            assert not completion.ok and completion.errno == errno.EIO
            assert isinstance(completion.error, BlockError) and path in str(completion.error)
        finally:
            image.close()
        assert digest(path) == before, f"{'read-only' if read_only else 'read-write'} open changed the file"


def test_unaligned_l2_entry_fails_the_read_with_corrupt_image_and_leaves_the_file_alone(written):
    """A data cluster at 0x50200 is not cluster aligned: qemu signals corruption, never reads it."""
    patch_u64(written, L2_OFFSET, L.OFLAG_COPIED | (DATA_OFFSET + 0x200))
    assert_read_fails_without_touching_the_file(written, "l2_table")


def test_unaligned_l2_entry_leaves_the_other_clusters_readable(written):
    """The corruption is local: the second cluster still reads its data."""
    patch_u64(written, L2_OFFSET, L.OFLAG_COPIED | (DATA_OFFSET + 0x200))
    image = open_image(written, read_only=True)
    try:
        assert image.read(CLUSTER, 4096) == PATTERN
        assert Drive(image).read(CLUSTER + 4096, 4096).data == PATTERN
    finally:
        image.close()


def test_l1_entry_past_the_end_of_the_file_fails_the_read_with_corrupt_image(written):
    """An L2 table at 4 GiB in a 448 KiB file cannot be loaded."""
    patch_u64(written, L1_OFFSET, L.OFLAG_COPIED | (1 << 32))
    assert_read_fails_without_touching_the_file(written, "l1_table")


def test_unaligned_l1_entry_fails_the_read_with_corrupt_image(written):
    """An L2 table at 0x40200 is not cluster aligned."""
    patch_u64(written, L1_OFFSET, L.OFLAG_COPIED | (L2_OFFSET + 0x200))
    assert_read_fails_without_touching_the_file(written, "l1_table")


@pytest.mark.parametrize("l1_entry", [L.OFLAG_COPIED | (1 << 32), L.OFLAG_COPIED | (L2_OFFSET + 0x200)])
def test_write_under_a_bad_l1_entry_fails_with_eio_and_leaves_the_file_alone(written, l1_entry):
    """Writes must not allocate around a table they cannot read."""
    patch_u64(written, L1_OFFSET, l1_entry)
    before = digest(written)
    image = open_image(written, read_only=False)
    drive = Drive(image, DriveOptions(discard="unmap"))
    try:
        for completion in (drive.write(0, PATTERN), drive.write(5 * CLUSTER, PATTERN),
                           drive.discard(0, CLUSTER), drive.write_zeroes(0, CLUSTER, may_unmap=True)):
            assert completion.errno == errno.EIO, completion.error
        assert drive.flush().ok
    finally:
        drive.close()
    assert digest(written) == before


def test_write_to_a_cluster_with_an_unaligned_l2_entry_fails_with_eio_and_leaves_the_file_alone(written):
    """Writing in place would land in the middle of another cluster."""
    patch_u64(written, L2_OFFSET, L.OFLAG_COPIED | (DATA_OFFSET + 0x200))
    before = digest(written)
    image = open_image(written, read_only=False)
    drive = Drive(image)
    try:
        completion = drive.write(0, PATTERN)
        assert completion.errno == errno.EIO and written in str(completion.error)
        assert drive.read(CLUSTER, 4096).data == PATTERN
    finally:
        drive.close()
    assert digest(written) == before


def test_unaligned_refcount_block_fails_allocating_writes_with_eio_and_leaves_the_file_alone(written):
    """Allocation needs the refcount block; a misaligned one must not be used."""
    patch_u64(written, REFTABLE_OFFSET, read_u64(written, REFTABLE_OFFSET) + 0x200)
    before = digest(written)
    image = open_image(written, read_only=False)
    drive = Drive(image)
    try:
        assert drive.read(0, 4096).data == PATTERN
        completion = drive.write(1 * MiB, PATTERN)
        assert completion.errno == errno.EIO, completion.error
    finally:
        drive.close()
    assert digest(written) == before


def test_garbage_in_a_compressed_cluster_fails_the_read_with_eio(written, qemu_img, tmp_path):
    """zlib errors are the image's problem, reported as EIO, not as zlib.error."""
    path = str(tmp_path / "compressed.qcow2")
    qemu_img_run(qemu_img, "convert", "-c", "-O", "qcow2", written, path)
    l2 = read_u64(path, read_u64(path, 40)) & L.L1E_OFFSET_MASK
    entry = read_u64(path, l2)
    assert entry & L.OFLAG_COMPRESSED
    coffset = entry & ((1 << 54) - 1)
    with open(path, "r+b") as f:
        f.seek(coffset)
        f.write(b"\xff" * 16)
    before = digest(path)
    image = open_image(path, read_only=True)
    try:
        with pytest.raises(EmuError) as info:
            image.read(0, 4096)
        assert isinstance(info.value, BlockError) and info.value.errno == errno.EIO
        assert path in str(info.value)
        assert Drive(image).read(0, 4096).errno == errno.EIO
        assert image.read(CLUSTER, 4096) == PATTERN      # the other compressed cluster is intact
    finally:
        image.close()
    assert digest(path) == before


def test_compressed_cluster_pointing_past_the_end_of_the_file_fails_the_read_with_eio(written, qemu_img,
                                                                                       tmp_path):
    """Zeros past the end of the file are not a deflate stream of a whole cluster."""
    path = str(tmp_path / "compressed.qcow2")
    qemu_img_run(qemu_img, "convert", "-c", "-O", "qcow2", written, path)
    l2 = read_u64(path, read_u64(path, 40)) & L.L1E_OFFSET_MASK
    patch_u64(path, l2, L.OFLAG_COMPRESSED | (1 << 40))
    image = open_image(path, read_only=True)
    try:
        with pytest.raises(BlockError):
            image.read(0, 4096)
    finally:
        image.close()


def test_check_reports_an_unaligned_l2_entry_as_a_corruption(written):
    """qemu-img check: "Data cluster is not properly aligned; L2 entry corrupted"."""
    patch_u64(written, L2_OFFSET, L.OFLAG_COPIED | (DATA_OFFSET + 0x200))
    image = open_image(written, read_only=True)
    try:
        result = image.check()
    finally:
        image.close()
    assert result.corruptions >= 1
    assert any("not properly aligned" in m for m in result.messages)


def test_check_reports_an_l1_entry_past_the_end_of_the_file(written):
    """qemu-img check counts it as a check error rather than reading the table."""
    patch_u64(written, L1_OFFSET, L.OFLAG_COPIED | (1 << 32))
    image = open_image(written, read_only=True)
    try:
        result = image.check()
    finally:
        image.close()
    assert result.check_errors + result.corruptions >= 1


# -- damage that once escaped as other exceptions or destroyed the image (regressions) -----------

def test_refcount_block_at_2_63_or_more_fails_with_emu_errors(make_qcow2):
    """A refcount block offset no file can have must be refused as corruption (once an OverflowError
    from os.pread, escaping even the Drive)."""
    path = make_qcow2("bad-reftable.qcow2", "64M")
    patch_u64(path, REFTABLE_OFFSET, 0x8000000000020000)
    image = open_image(path, read_only=True)
    try:
        result = image.check()       # reports the damage; may not raise anything but an EmuError
        assert result.corruptions + result.check_errors >= 1, result.messages
    finally:
        image.close()
    image = open_image(path, read_only=False)
    try:
        completion = Drive(image).write(0, PATTERN)
        assert completion.errno == errno.EIO
        try:
            image.close()
        except EmuError:
            pass
    finally:
        image.host.close()


def test_refcount_block_far_past_the_end_of_the_file_is_never_written(make_qcow2):
    """A block at 1 PiB read as zeros and written back at close made close() raise OSError(EFBIG)
    on ext4; it must be refused as corruption instead, on any file system."""
    path = make_qcow2("far-reftable.qcow2", "64M")
    patch_u64(path, REFTABLE_OFFSET, 1 << 50)
    size = os.path.getsize(path)
    image = open_image(path, read_only=False)
    try:
        assert Drive(image).write(0, PATTERN).errno == errno.EIO
        try:
            image.close()
        except EmuError:
            pass
    finally:
        image.host.close()
    assert os.path.getsize(path) == size


def test_allocating_write_with_lost_refcounts_never_overwrites_the_header(make_qcow2):
    """Corrupt refcounts may cost leaks, EIO or the corrupt bit, never the header or the refcount table
    (qemu's overlap check; emu once put a new L2 table on cluster 0)."""
    path = make_qcow2("zeroed-refcounts.qcow2", "64M")
    with open(path, "r+b") as f:
        f.seek(0x20000)                      # the only refcount block
        f.write(bytes(CLUSTER))
    with open(path, "rb") as f:
        before = f.read(2 * CLUSTER)
    image = open_image(path, read_only=False)
    try:
        completion = Drive(image).write(0, PATTERN)
        assert completion.ok or completion.errno == errno.EIO
        try:
            image.close()
        except EmuError:
            pass
    finally:
        image.host.close()
    with open(path, "rb") as f:
        after = f.read(2 * CLUSTER)
    def without_features(cluster0: bytes) -> bytes:   # the corrupt bit may be set, as qemu sets it
        return cluster0[:72] + cluster0[80:]

    assert without_features(after) == without_features(before), "header or refcount table overwritten"
    image = open_image(path, read_only=True)
    try:
        assert image.format_name == "qcow2" and image.read(CLUSTER, 4096) == bytes(4096)
    finally:
        image.close()


# -- library bugs found by these tests (kept failing until fixed) ---------------------------------

def test_check_of_a_reference_far_past_the_end_of_the_file_stays_small(written):
    """One bad L2 entry (data at 16 GiB) must cost a corruption report, not memory in proportion."""
    patch_u64(written, L2_OFFSET, L.OFLAG_COPIED | (1 << 34))
    image = open_image(written, read_only=True)
    try:
        with traced_memory() as memory, time_limit(20):
            result = image.check()
    finally:
        image.close()
    assert result.corruptions >= 1
    assert memory["peak"] < 1 * MiB, f"check allocated {memory['peak']} bytes for a 448 KiB file"


def test_repair_of_a_refcount_too_large_for_its_width_raises_only_emu_errors(make_qcow2, qemu_io):
    """300 L2 entries sharing one cluster need refcount 300, which 8-bit refcounts cannot hold."""
    path = make_qcow2("r8.qcow2", "64M", "-o", "refcount_bits=8,lazy_refcounts=on")
    proc = subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0xab 0 64k", path],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    l2 = read_u64(path, L1_OFFSET) & L.L1E_OFFSET_MASK
    entry = read_u64(path, l2)
    with open(path, "r+b") as f:
        f.seek(l2)
        f.write(struct.pack(">Q", entry) * 300)
    patch_field(path, "incompatible_features", L.INCOMPAT_DIRTY)   # as after a crash: repair on open
    try:
        open_image(path, read_only=False).close()
    except EmuError:
        pass


def test_allocating_write_with_an_aliased_full_refcount_table_does_not_hang(make_qcow2):
    """A crafted 200 KiB file must not stall a 4 KiB guest write for minutes."""
    path = make_qcow2("alias.qcow2", "64M")
    with open(path, "r+b") as f:
        f.seek(REFTABLE_OFFSET)
        f.write(struct.pack(">Q", 0x20000) * (CLUSTER // 8))
        f.seek(0x20000)
        f.write(struct.pack(">H", 1) * (CLUSTER // 2))
    image = open_image(path, read_only=False)
    try:
        with time_limit(3):
            completion = Drive(image).write(0, PATTERN)
    except Hang:
        pytest.fail("an allocating 4 KiB write was still scanning refcounts after 3 s")
    finally:
        image.host.close()
    assert completion.ok or completion.errno in (errno.EIO, errno.EFBIG)   # past the host's file size limit


@pytest.mark.parametrize("entry", [0x8000000000020000, 0x20200])
def test_corruption_found_in_the_refcount_table_names_the_file(make_qcow2, entry):
    """Every ImageError names the file, including those raised while allocating."""
    path = make_qcow2("bad-reftable.qcow2", "64M")
    patch_u64(path, REFTABLE_OFFSET, entry)
    image = open_image(path, read_only=False)
    try:
        completion = Drive(image).write(0, PATTERN)
        assert completion.errno == errno.EIO
        assert path in str(completion.error), str(completion.error)
    finally:
        image.host.close()


def test_write_to_a_copied_entry_without_an_offset_never_lands_on_the_header(make_qcow2, qemu_io):
    """An unallocated entry with a stray COPIED bit must be allocated like any unallocated entry."""
    path = make_qcow2("copied-zero.qcow2", "64M")
    proc = subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x22 64k 64k", path],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert read_u64(path, L1_OFFSET) == L.OFLAG_COPIED | L2_OFFSET and read_u64(path, L2_OFFSET) == 0
    patch_u64(path, L2_OFFSET, L.OFLAG_COPIED)
    image = open_image(path, read_only=False)
    try:
        completion = Drive(image).write(0, b"Z" * 4096)
        assert completion.ok or completion.errno == errno.EIO
        try:
            image.close()
        except EmuError:
            pass
    finally:
        image.host.close()
    with open(path, "rb") as f:
        assert f.read(4) == L.MAGIC, "guest data written over the header"


@pytest.mark.parametrize("target", [REFTABLE_OFFSET, 0x20000, L1_OFFSET, L2_OFFSET],
                         ids=["refcount-table", "refcount-block", "l1-table", "l2-table"])
def test_write_through_an_entry_pointing_at_metadata_never_overwrites_it(make_qcow2, qemu_io, target):
    """A corrupt L2 entry may cost EIO and the corrupt bit, never the image's tables."""
    path = make_qcow2("aliased.qcow2", "64M")
    proc = subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x22 64k 64k", path],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    patch_u64(path, L2_OFFSET, L.OFLAG_COPIED | target)
    with open(path, "rb") as f:
        f.seek(target)
        before = f.read(64)
    image = open_image(path, read_only=False)
    try:
        completion = Drive(image).write(0, b"Z" * 4096)
        assert completion.ok or completion.errno == errno.EIO
        try:
            image.close()
        except EmuError:
            pass
    finally:
        image.host.close()
    with open(path, "rb") as f:
        f.seek(target)
        after = f.read(64)
    assert after == before or target == L2_OFFSET and after[8:] == before[8:], "guest data over a table"


def test_a_header_freed_through_a_corrupt_entry_is_never_allocated_again(make_qcow2, qemu_io):
    """Found by fuzzing: an L2 entry pointing into cluster 0 makes an unmapping zero write drop the
    header's refcount to 0; later allocations must still refuse cluster 0 (it stays metadata)."""
    path = make_qcow2("hdr.qcow2", "64M", "-o", "cluster_size=4096")
    subprocess.run([qemu_io, "-c", "write -P 1 0 8k", path], check=True, capture_output=True)
    image = open_image(path, read_only=True)
    l2_offset = image.meta.l1[0] & L.L1E_OFFSET_MASK
    image.close()
    patch_u64(path, l2_offset, 0x200)                 # guest cluster 0 -> host offset 0x200 (cluster 0)
    image = open_image(path, read_only=False)
    try:
        drive = Drive(image, DriveOptions(discard="ignore"))   # frees without punching the header out
        assert drive.write(4096, PATTERN).ok             # an in-place write: the overlap check is armed
        assert drive.write_zeroes(0, 4096, may_unmap=True).ok
        done = drive.write(1 << 20, PATTERN)             # allocates: the cursor is back at cluster 0
        assert done.ok or done.errno == errno.EIO
    finally:
        image.host.close()
    with open(path, "rb") as f:
        assert f.read(4) == L.MAGIC
