"""Malformed qcow2 files, one defect each, built from `qemu-img create` output with a few bytes patched.

Each must be refused at open, read-only and read-write alike, with one exception of the `ImageError`
family whose message names the file and whose `.field` names the offending field, before any large
allocation, and without the file being touched. A few tests check the converse: what must still open
(formats go by magic, never by file name; informational fields may hold anything).
"""

from __future__ import annotations

import shutil
import struct

import pytest
from qcow2_fuzz_support import HEADER_FIELDS, extensions, patch_bytes, patch_field, qemu_img_run, read_field

from emu.errors import ImageError, InvalidImage, UnsupportedFeature
from images import detect_format, open_image
from images.qcow2 import layout as L
from tests.support import assert_open_fails

pytestmark = pytest.mark.qemu

MiB = 1 << 20
CLUSTER = 65536
# qemu-img create -f qcow2 X 64M: header cluster, refcount table, refcount block, then an 8-byte L1.
REFTABLE_OFFSET = 0x10000
L1_OFFSET = 0x30000
FILE_SIZE = L1_OFFSET + 8


@pytest.fixture
def disk(make_qcow2):
    """A fresh v3 image of 64 MiB as qemu-img creates it."""
    path = make_qcow2("disk.qcow2", "64M")
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == FILE_SIZE and read_field(data, "l1_table_offset") == L1_OFFSET
    assert read_field(data, "refcount_table_offset") == REFTABLE_OFFSET
    return path


@pytest.fixture
def disk_v2(make_qcow2):
    """A fresh v2 (compat=0.10) image of 64 MiB as qemu-img creates it."""
    return make_qcow2("disk2.qcow2", "64M", "-o", "compat=0.10")


def truncate(path: str, length: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(length)


# -- sanity: the unpatched files open --------------------------------------------------------------

def test_unpatched_qemu_img_images_open_so_every_failure_below_is_the_patch(disk, disk_v2):
    """Without this the tests below could pass for the wrong reason."""
    for path in (disk, disk_v2):
        for read_only in (True, False):
            image = open_image(path, read_only=read_only)
            assert image.format_name == "qcow2" and image.virtual_size == 64 * MiB
            image.close()


def test_header_field_offsets_match_the_qcow2_specification():
    """The patching helpers take offsets from layout.HEADER; pin them to qcow2.txt so a typo cannot hide."""
    spec = {"magic": 0, "version": 4, "backing_file_offset": 8, "backing_file_size": 16, "cluster_bits": 20,
            "size": 24, "crypt_method": 32, "l1_size": 36, "l1_table_offset": 40, "refcount_table_offset": 48,
            "refcount_table_clusters": 56, "nb_snapshots": 60, "snapshots_offset": 64,
            "incompatible_features": 72, "compatible_features": 80, "autoclear_features": 88,
            "refcount_order": 96, "header_length": 100, "compression_type": 104}
    assert {name: offset for name, (offset, _size) in HEADER_FIELDS.items()} == spec


# -- truncated files -------------------------------------------------------------------------------

def test_file_cut_to_50_bytes_is_refused_as_a_short_header(disk):
    """50 bytes cannot hold even the 72-byte v2 header."""
    truncate(disk, 50)
    assert_open_fails(disk, InvalidImage, "header")


def test_v3_file_cut_to_100_bytes_is_refused_as_a_short_v3_header(disk):
    """A v3 header needs 104 bytes; 100 is enough for v2 but not for v3."""
    truncate(disk, 100)
    assert_open_fails(disk, InvalidImage, "header")


def test_v3_file_cut_inside_the_compression_type_byte_is_refused(disk):
    """header_length 112 promises the compression type field; a 108-byte file breaks the promise."""
    truncate(disk, 108)
    assert_open_fails(disk, InvalidImage, "header")


def test_file_cut_inside_the_l1_table_is_refused_naming_the_l1_table(disk):
    """The L1 table is compared with the file size before it is read."""
    truncate(disk, L1_OFFSET + 4)
    assert_open_fails(disk, InvalidImage, "l1_table_offset")


def test_file_cut_inside_the_refcount_table_is_refused_naming_the_refcount_table(disk):
    """Move the refcount table to the end of the file, then cut the file in the middle of it."""
    with open(disk, "rb") as f:
        f.seek(REFTABLE_OFFSET)
        table = f.read(CLUSTER)
    patch_bytes(disk, 0x40000, table)
    patch_field(disk, "refcount_table_offset", 0x40000)
    open_image(disk, read_only=True).close()          # still a valid image before the cut
    truncate(disk, 0x40000 + 100)
    assert_open_fails(disk, InvalidImage, "refcount_table_offset")


# -- magic and version -----------------------------------------------------------------------------

def test_bad_magic_is_refused_when_qcow2_is_asked_for(disk):
    """Without the magic a file is not qcow2, whatever the caller says."""
    patch_field(disk, "magic", b"QFI\xfa")
    assert_open_fails(disk, InvalidImage, "magic", fmt="qcow2")


def test_bad_magic_without_a_format_opens_as_raw_because_formats_go_by_magic(disk):
    """Probing finds no magic, so the file is raw data (as qemu-img probes it)."""
    patch_field(disk, "magic", b"QFI\xfa")
    image = open_image(disk, read_only=True)
    try:
        assert image.format_name == "raw" and image.virtual_size == FILE_SIZE
    finally:
        image.close()


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_versions_other_than_2_and_3_are_refused(disk, version):
    """Version 1 is the old qcow format; 4 does not exist yet."""
    patch_field(disk, "version", version)
    exc = assert_open_fails(disk, InvalidImage, "version")
    assert str(version) in str(exc)


# -- cluster size and header length ----------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 8, 22, 63, 0xFFFFFFFF])
def test_cluster_bits_outside_9_to_21_are_refused(disk, bits):
    """qemu accepts 512-byte to 2 MiB clusters only; a huge shift must not become a huge read."""
    patch_field(disk, "cluster_bits", bits)
    assert_open_fails(disk, InvalidImage, "cluster_bits")


def test_header_length_below_104_is_refused(disk):
    """104 is the fixed part of a v3 header."""
    patch_field(disk, "header_length", 100)
    assert_open_fails(disk, InvalidImage, "header_length")


def test_header_length_beyond_the_cluster_is_refused(disk):
    """The header, with its extensions, must fit in cluster 0."""
    patch_field(disk, "header_length", CLUSTER + 8)
    assert_open_fails(disk, InvalidImage, "header_length")


def test_refcount_order_7_is_refused(disk):
    """Refcounts are at most 64 bits wide (order 6)."""
    patch_field(disk, "refcount_order", 7)
    assert_open_fails(disk, InvalidImage, "refcount_order")


# -- the L1 table ----------------------------------------------------------------------------------

def test_l1_table_smaller_than_the_virtual_size_needs_is_refused(disk):
    """64 MiB with 64 KiB clusters needs one L1 entry; zero cannot map the disk."""
    patch_field(disk, "l1_size", 0)
    assert_open_fails(disk, InvalidImage, "l1_size")


def test_virtual_size_larger_than_the_l1_table_maps_is_refused(disk):
    """The same defect seen from the other field: one L1 entry maps 512 MiB, not 1 GiB."""
    patch_field(disk, "size", 1 << 30)
    assert_open_fails(disk, InvalidImage, "l1_size")


def test_huge_l1_size_is_refused_before_the_table_is_allocated(disk):
    """0x10000000 entries would be a 2 GiB table; the limit (32 MiB) is checked before any read."""
    patch_field(disk, "l1_size", 0x10000000)
    assert_open_fails(disk, InvalidImage, "l1_size")


def test_absurd_virtual_size_is_refused(disk):
    """A size of 2**63 or more cannot be mapped by any legal L1 table."""
    patch_field(disk, "size", 1 << 63)
    assert_open_fails(disk, InvalidImage, "size")


def test_l1_table_offset_beyond_the_end_of_the_file_is_refused(disk):
    """A table that is not in the file cannot be read."""
    patch_field(disk, "l1_table_offset", 0x100000)
    assert_open_fails(disk, InvalidImage, "l1_table_offset")


def test_unaligned_l1_table_offset_is_refused(disk):
    """Tables start on a cluster boundary."""
    patch_field(disk, "l1_table_offset", L1_OFFSET - 8)
    assert_open_fails(disk, InvalidImage, "l1_table_offset")


def test_l1_table_overlapping_the_header_is_refused(disk):
    """An L1 table at offset 0 would make guest writes rewrite the header."""
    patch_field(disk, "l1_table_offset", 0)
    exc = assert_open_fails(disk, InvalidImage, "l1_table_offset")
    assert "overlaps header" in str(exc)


def test_l1_table_overlapping_the_refcount_table_is_refused_naming_both(disk):
    """Two tables in one cluster would corrupt each other."""
    patch_field(disk, "l1_table_offset", REFTABLE_OFFSET)
    exc = assert_open_fails(disk, InvalidImage, "refcount_table_offset")
    assert "l1_table" in str(exc)


# -- the refcount table ----------------------------------------------------------------------------

def test_zero_refcount_table_clusters_is_refused(disk):
    """An image without a refcount table cannot allocate anything."""
    patch_field(disk, "refcount_table_clusters", 0)
    assert_open_fails(disk, InvalidImage, "refcount_table_clusters")


def test_huge_refcount_table_clusters_is_refused_before_the_table_is_allocated(disk):
    """0x10000000 clusters of 64 KiB is 16 TiB; the limit (8 MiB) is checked before any read."""
    patch_field(disk, "refcount_table_clusters", 0x10000000)
    assert_open_fails(disk, InvalidImage, "refcount_table_clusters")


def test_unaligned_refcount_table_offset_is_refused(disk):
    """Tables start on a cluster boundary."""
    patch_field(disk, "refcount_table_offset", REFTABLE_OFFSET + 0x200)
    assert_open_fails(disk, InvalidImage, "refcount_table_offset")


def test_refcount_table_offset_beyond_the_end_of_the_file_is_refused(disk):
    """A table that is not in the file cannot be read."""
    patch_field(disk, "refcount_table_offset", 0x100000)
    assert_open_fails(disk, InvalidImage, "refcount_table_offset")


def test_refcount_table_overlapping_the_header_is_refused(disk):
    """A refcount table at offset 0 would be overwritten by header updates."""
    patch_field(disk, "refcount_table_offset", 0)
    assert_open_fails(disk, InvalidImage, "refcount_table_offset")


# -- features --------------------------------------------------------------------------------------

def test_unknown_incompatible_feature_bit_is_refused_and_listed(disk):
    """Bit 5 means nothing to qemu 7.2 either; the message lists it as qemu does ("...: 20")."""
    patch_field(disk, "incompatible_features", 1 << 5)
    exc = assert_open_fails(disk, UnsupportedFeature, "incompatible_features")
    assert "Unknown incompatible feature: 20" in str(exc)


def test_unknown_incompatible_feature_is_listed_by_the_name_the_file_gives_it(disk):
    """Like qemu, a name from the file's feature-name table is used when the file has one."""
    with open(disk, "rb") as f:
        head = f.read(CLUSTER)
    (offset, ext_type, length), = [e for e in extensions(head) if e[1] == L.EXT_FEATURE_TABLE]
    entry = offset + 8 + 4 * 48          # (0, 4, "extended L2 entries") in qemu's table
    assert head[entry:entry + 2] == b"\x00\x04"
    patch_bytes(disk, entry, b"\x00\x05" + b"time travel".ljust(46, b"\x00"))
    patch_field(disk, "incompatible_features", 1 << 5)
    exc = assert_open_fails(disk, UnsupportedFeature, "incompatible_features")
    assert "time travel" in str(exc)


def test_non_ascii_feature_name_does_not_break_the_open(disk):
    """Names in the feature-name table are informational (once a construct StringError escaped)."""
    with open(disk, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_FEATURE_TABLE]
    patch_bytes(disk, offset + 8 + 2, b"\x80")          # "dirty bit" -> "\x80irty bit"
    for read_only in (True, False):
        open_image(disk, read_only=read_only).close()


def test_non_ascii_name_of_an_unknown_feature_is_still_listed(disk):
    """The refusal must not fail on the name it wants to show."""
    with open(disk, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_FEATURE_TABLE]
    entry = offset + 8 + 4 * 48
    patch_bytes(disk, entry, b"\x00\x05" + b"caf\xe9".ljust(46, b"\x00"))
    patch_field(disk, "incompatible_features", 1 << 5)
    exc = assert_open_fails(disk, UnsupportedFeature, "incompatible_features")
    assert "caf" in str(exc)


def test_several_unknown_incompatible_bits_are_all_listed(disk):
    """Each unknown bit is named, so the user knows what the file needs."""
    patch_field(disk, "incompatible_features", (1 << 5) | (1 << 63))
    exc = assert_open_fails(disk, UnsupportedFeature, "incompatible_features")
    assert "Unknown incompatible feature: 20" in str(exc)
    assert "Unknown incompatible feature: 8000000000000000" in str(exc)


def test_external_data_file_bit_is_refused_as_unsupported(disk):
    """emu does not implement external data files; guest data would be read from the wrong file."""
    patch_field(disk, "incompatible_features", L.INCOMPAT_DATA_FILE)
    assert_open_fails(disk, UnsupportedFeature, "incompatible_features")


def test_extended_l2_bit_is_refused_as_unsupported(disk):
    """Subclusters change the L2 entry size; reading them as plain entries would return wrong data."""
    patch_field(disk, "incompatible_features", L.INCOMPAT_EXTL2)
    assert_open_fails(disk, UnsupportedFeature, "incompatible_features")


def test_crypt_method_1_is_refused_as_unsupported(disk):
    """AES-encrypted clusters would read as ciphertext."""
    patch_field(disk, "crypt_method", 1)
    assert_open_fails(disk, UnsupportedFeature, "crypt_method")


def test_crypt_method_1_is_refused_in_a_v2_image_too(disk_v2):
    """v2 images carry the same field."""
    patch_field(disk_v2, "crypt_method", 1)
    assert_open_fails(disk_v2, UnsupportedFeature, "crypt_method")


def test_compression_type_without_its_incompatible_bit_is_refused(disk):
    """qemu requires the compression-type bit whenever compression_type is not zlib."""
    patch_field(disk, "compression_type", 1)
    assert_open_fails(disk, InvalidImage, "compression_type")


# -- backing file name and header extensions -------------------------------------------------------

def test_backing_file_offset_past_the_first_cluster_is_refused(disk):
    """The backing file name lives in cluster 0."""
    patch_field(disk, "backing_file_offset", CLUSTER + 8)
    patch_field(disk, "backing_file_size", 4)
    assert_open_fails(disk, InvalidImage, "backing_file_offset")


def test_backing_file_name_running_out_of_the_first_cluster_is_refused(disk):
    """Offset inside the cluster, but offset + size beyond it."""
    patch_field(disk, "backing_file_offset", CLUSTER - 16)
    patch_field(disk, "backing_file_size", 32)
    assert_open_fails(disk, InvalidImage, "backing_file_offset")


def test_backing_file_name_longer_than_1023_bytes_is_refused(disk):
    """qemu's limit is 1023 bytes; the name would not fit its buffer."""
    patch_field(disk, "backing_file_offset", 0x1000)
    patch_field(disk, "backing_file_size", 2000)
    assert_open_fails(disk, InvalidImage, "backing_file_size")


def test_header_extension_longer_than_the_extension_area_is_refused(disk):
    """The feature-name table claiming 64 KiB would run past cluster 0."""
    with open(disk, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_FEATURE_TABLE]
    patch_bytes(disk, offset + 4, struct.pack(">I", CLUSTER))
    exc = assert_open_fails(disk, InvalidImage, "header_extension")
    assert f"{offset:#x}" in str(exc)


def test_header_extension_running_into_the_backing_file_name_is_refused(make_qcow2):
    """With a backing file the extension area ends where the name begins."""
    make_qcow2("base.qcow2", "64M")
    path = make_qcow2("top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    name_offset = read_field(head, "backing_file_offset")
    (offset, _type, length), = [e for e in extensions(head) if e[1] == L.EXT_BACKING_FORMAT]
    patch_bytes(path, offset + 4, struct.pack(">I", name_offset - offset))   # ends 8 bytes too late
    assert_open_fails(path, InvalidImage, "header_extension")


def test_backing_format_extension_longer_than_15_bytes_is_refused(make_qcow2):
    """qemu reads the backing format into a 16-byte buffer."""
    make_qcow2("base.qcow2", "64M")
    path = make_qcow2("top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, length), = [e for e in extensions(head) if e[1] == L.EXT_BACKING_FORMAT]
    assert length == 5
    patch_bytes(path, offset + 4, struct.pack(">I", 16))
    assert_open_fails(path, InvalidImage, "backing_format")


def test_external_data_file_extension_is_refused_as_unsupported(disk):
    """The data-file extension names a file emu would have to read guest data from."""
    with open(disk, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_FEATURE_TABLE]
    patch_bytes(disk, offset, struct.pack(">II", L.EXT_DATA_FILE, 8) + b"data.raw")
    assert_open_fails(disk, UnsupportedFeature, "data_file")


# -- backing chains --------------------------------------------------------------------------------

def test_two_images_backing_each_other_are_refused_as_a_loop(make_qcow2):
    """A -> B -> A would recurse forever."""
    a = make_qcow2("a.qcow2", "64M", "-b", "b.qcow2", "-F", "qcow2", "-u")
    b = make_qcow2("b.qcow2", "64M", "-b", "a.qcow2", "-F", "qcow2", "-u")
    exc = assert_open_fails(a, InvalidImage, "backing_file")
    assert "loop" in str(exc)
    assert_open_fails(b, InvalidImage, "backing_file")


def test_image_backed_by_itself_is_refused_as_a_loop(make_qcow2):
    """qemu-img will not create it, so the name is patched in afterwards."""
    path = make_qcow2("self.qcow2", "64M", "-b", "sel_.qcow2", "-F", "qcow2", "-u")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    offset, size = read_field(head, "backing_file_offset"), read_field(head, "backing_file_size")
    assert head[offset:offset + size] == b"sel_.qcow2"
    patch_bytes(path, offset, b"self.qcow2")
    exc = assert_open_fails(path, InvalidImage, "backing_file")
    assert "loop" in str(exc)


def test_longer_loop_through_a_chain_is_refused(make_qcow2):
    """a -> b -> c -> a: the loop is found wherever it closes."""
    a = make_qcow2("a.qcow2", "64M", "-b", "b.qcow2", "-F", "qcow2", "-u")
    make_qcow2("b.qcow2", "64M", "-b", "c.qcow2", "-F", "qcow2", "-u")
    make_qcow2("c.qcow2", "64M", "-b", "a.qcow2", "-F", "qcow2", "-u")
    assert_open_fails(a, InvalidImage, "backing_file")


def test_missing_backing_file_is_refused_naming_the_overlay_and_the_field(make_qcow2):
    """The overlay is what the user opened, so it is the file named."""
    path = make_qcow2("top.qcow2", "64M", "-b", "gone.qcow2", "-F", "qcow2", "-u")
    exc = assert_open_fails(path, ImageError, "backing_file")
    assert "gone.qcow2" in str(exc)


def test_backing_file_with_a_corrupt_header_is_refused_naming_the_backing_file(make_qcow2):
    """The error comes from the backing file, so that is the file named."""
    base = make_qcow2("base.qcow2", "64M")
    top = make_qcow2("top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    patch_field(base, "cluster_bits", 30)
    assert_open_fails(top, InvalidImage, "cluster_bits", names_path=base)


# -- snapshots -------------------------------------------------------------------------------------

def test_huge_nb_snapshots_is_refused(disk):
    """0x10000000 snapshots is far beyond qemu's 65536."""
    patch_field(disk, "nb_snapshots", 0x10000000)
    patch_field(disk, "snapshots_offset", 0x40000)
    assert_open_fails(disk, InvalidImage, "nb_snapshots")


def test_snapshot_table_beyond_the_end_of_the_file_is_refused(disk):
    """The snapshot table must be in the file."""
    patch_field(disk, "nb_snapshots", 1)
    patch_field(disk, "snapshots_offset", 0x100000)
    assert_open_fails(disk, InvalidImage, "snapshots_offset")


def test_snapshot_table_overlapping_the_refcount_table_is_refused(disk):
    """Snapshots stored over the refcount table would be corrupted by allocations."""
    patch_field(disk, "nb_snapshots", 1)
    patch_field(disk, "snapshots_offset", REFTABLE_OFFSET)
    assert_open_fails(disk, InvalidImage, "snapshots_offset")


def test_snapshot_whose_l1_table_is_beyond_the_end_of_the_file_is_refused(make_qcow2, qemu_img):
    """A snapshot's L1 table is validated as the active one is."""
    path = make_qcow2("snap.qcow2", "64M")
    qemu_img_run(qemu_img, "snapshot", "-c", "s1", path)
    with open(path, "rb") as f:
        data = f.read()
    table = read_field(data, "snapshots_offset")
    patch_bytes(path, table, struct.pack(">Q", 0x10000000))
    assert_open_fails(path, InvalidImage, "l1_size")


def test_snapshot_with_oversized_extra_data_is_refused(make_qcow2, qemu_img):
    """The extra data size is bounded (1 KiB) before it is read."""
    path = make_qcow2("snap.qcow2", "64M")
    qemu_img_run(qemu_img, "snapshot", "-c", "s1", path)
    with open(path, "rb") as f:
        data = f.read()
    table = read_field(data, "snapshots_offset")
    patch_bytes(path, table + 36, struct.pack(">I", 0xFFFFFFFF))
    assert_open_fails(path, InvalidImage, "extra_data_size")


# -- formats by magic, never by name ---------------------------------------------------------------

def test_raw_data_in_a_file_named_qcow2_opens_as_raw(tmp_path):
    """The .qcow2 suffix means nothing; the content has no magic."""
    path = str(tmp_path / "looks-like.qcow2")
    with open(path, "wb") as f:
        f.write(b"\xabguest data" * 1000)
    assert detect_format(path) == "raw"
    image = open_image(path, read_only=True)
    try:
        assert image.format_name == "raw"
        assert image.read(0, 11) == b"\xabguest data"
    finally:
        image.close()


def test_qcow2_header_in_a_file_named_raw_opens_as_qcow2(disk, tmp_path):
    """The .raw suffix means nothing; the magic says qcow2."""
    path = str(tmp_path / "x.raw")
    shutil.copyfile(disk, path)
    assert detect_format(path) == "qcow2"
    image = open_image(path, read_only=True)
    try:
        assert image.format_name == "qcow2" and image.virtual_size == 64 * MiB
    finally:
        image.close()


def test_backing_file_without_a_recorded_format_or_magic_is_not_guessed_as_raw(make_qcow2, tmp_path):
    """Guessing raw would let a guest make the host read a file of its choosing (CVE-2008-2004)."""
    with open(tmp_path / "base.img", "wb") as f:
        f.write(bytes(1 << 20))
    path = make_qcow2("top.qcow2", "1M", "-b", "base.img", "-F", "raw")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_BACKING_FORMAT]
    patch_bytes(path, offset, struct.pack(">I", 0x12345678))   # now an unknown, ignored extension
    assert_open_fails(path, InvalidImage, "backing_format")


def test_backing_format_emu_does_not_know_is_refused_naming_the_file_and_the_field(make_qcow2):
    """A recorded format like qed is a property of the file, not a command-line mistake (once a
    UsageError naming neither)."""
    make_qcow2("base.qcow2", "64M")
    path = make_qcow2("top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_BACKING_FORMAT]
    patch_bytes(path, offset + 8, b"qed\x00\x00")
    patch_bytes(path, offset + 4, struct.pack(">I", 3))
    exc = assert_open_fails(path, UnsupportedFeature, "backing_format")
    assert "qed" in str(exc)


def test_backing_format_that_does_not_match_the_backing_file_is_refused_naming_the_backing_file(make_qcow2):
    """A known format recorded for a file of another format: the backing file's magic is named."""
    make_qcow2("base.qcow2", "64M")
    path = make_qcow2("top.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    with open(path, "rb") as f:
        head = f.read(CLUSTER)
    (offset, _type, _length), = [e for e in extensions(head) if e[1] == L.EXT_BACKING_FORMAT]
    patch_bytes(path, offset + 8, b"vmdk\x00")
    patch_bytes(path, offset + 4, struct.pack(">I", 4))
    base = path.replace("top.qcow2", "base.qcow2")
    exc = assert_open_fails(path, InvalidImage, "magic", names_path=base)
    assert "vmdk" in str(exc)


def test_every_header_field_is_checked_in_a_v2_image_too(disk_v2):
    """v2 headers are 72 bytes and share the checks above; one representative defect."""
    patch_field(disk_v2, "l1_table_offset", 0x100000)
    assert_open_fails(disk_v2, InvalidImage, "l1_table_offset")


def test_v2_file_cut_to_60_bytes_is_refused(disk_v2):
    """Shorter than the 72-byte v2 header."""
    truncate(disk_v2, 60)
    assert_open_fails(disk_v2, InvalidImage, "header")
