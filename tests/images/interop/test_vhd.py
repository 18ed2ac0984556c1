"""VHD against qemu-img (fixed and dynamic) and libvhdi (differencing disks, which qemu opens as plain
dynamic disks and reads wrongly); sizes by CHS geometry; malformed files."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from emu.block import Drive, DriveOptions
from emu.cli import main as emu_main
from emu.errors import EmuError, InvalidImage
from images import create_image, detect_format, open_image
from images.inspect import map_extents
from images.vhd.image import chs_geometry, rounded_size
from tests.conftest import run
from tests.support import emu_read, libvhdi_read, patch_bytes

MiB = 1 << 20


def masked(path: str) -> bytes:
    """The file's metadata with the footers' time stamp, checksum and UUID zeroed (they differ per
    run). A fixed disk's data area is all zero in both files and left out (it can be gigabytes)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = bytearray(f.read(min(size, 4 * MiB) - 512))
        tail = bytearray(f.read() if size <= 4 * MiB else os.pread(f.fileno(), 512, size - 512))
    if head[:8] != b"conectix":  # fixed: the footer is the only metadata
        head = bytearray()
    for footer in (head, tail):
        footer[24:28] = bytes(4)
        footer[64:84] = bytes(20)
    return size.to_bytes(8, "big") + bytes(head + tail)


SIZES = ["1G", "64M", "3000000", "100G", "130G", "2040G", "1"]
CREATE_CASES = [(options, size) for options in ([], ["-o", "force_size=on"]) for size in SIZES] + [
    (["-o", "subformat=fixed"], size) for size in ("1G", "64M", "3000000", "1")]


@pytest.mark.parametrize("options,size", CREATE_CASES, ids=str)
def test_created_images_equal_qemu_img_but_for_stamps_and_uuids(qemu_img, tmp_path, size, options):
    ours, theirs = str(tmp_path / "e.vhd"), str(tmp_path / "q.vhd")
    run(qemu_img, "create", "-q", "-f", "vpc", *options, theirs, size)
    assert emu_main(["img", "create", "-q", "-f", "vpc", *options, ours, size]) == 0
    assert masked(ours) == masked(theirs)
    if "subformat=fixed" in options:
        data_bytes = min(4 * MiB, os.path.getsize(ours) - 512)
        assert open(ours, "rb").read(data_bytes).count(0) == data_bytes
    info = json.loads(run(qemu_img, "info", "-f", "vpc", "--output=json", ours).stdout)
    assert info["virtual-size"] == open_image(ours, read_only=True).virtual_size


def test_one_gib_becomes_the_chs_size_qemu_img_gives():
    assert rounded_size(1 << 30, False)[0] == 1_073_995_776
    assert chs_geometry(1_073_995_776 // 512) == (2081, 16, 63)
    assert rounded_size(1 << 30, True)[0] == 1 << 30


def test_fixed_vhd_is_recognised_by_its_footer_where_qemu_img_sees_raw(qemu_img, tmp_path):
    path = str(tmp_path / "f.vhd")
    run(qemu_img, "create", "-q", "-f", "vpc", "-o", "subformat=fixed", path, "8M")
    assert detect_format(path) == "vpc"
    assert json.loads(run(qemu_img, "info", "--output=json", path).stdout)["format"] == "raw"
    vpc_size = json.loads(run(qemu_img, "info", "-f", "vpc", "--output=json", path).stdout)["virtual-size"]
    assert open_image(path, read_only=True).virtual_size == vpc_size


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_images_written_by_qemu_io_read_and_map_identically(qemu_img, qemu_io, tmp_path, subformat):
    path = str(tmp_path / "q.vhd")
    run(qemu_img, "create", "-q", "-f", "vpc", "-o", f"subformat={subformat}", path, "16M")
    run(qemu_io, "-f", "vpc", "-c", "write -P 1 3M 100k", "-c", "write -P 2 0 4k", "-c", "write -P 3 9M 2M", path)
    reference = str(tmp_path / "ref.raw")
    run(qemu_img, "convert", "-f", "vpc", "-O", "raw", path, reference)
    assert emu_read(path) == open(reference, "rb").read()
    ours = [e.to_json() for e in map_extents(open_image(path, read_only=True))]
    assert ours == json.loads(run(qemu_img, "map", "-f", "vpc", "--output=json", path).stdout)


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_images_written_by_emu_compare_equal_under_qemu_img(qemu_img, tmp_path, subformat):
    path, reference = str(tmp_path / "e.vhd"), str(tmp_path / "ref.raw")
    create_image(path, "vpc", 16 * MiB, {"subformat": subformat})
    size = open_image(path, read_only=True).virtual_size
    model = bytearray(size)
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    for i, (offset, length) in enumerate([(3 * MiB + 100, 70000), (0, 4096), (9 * MiB - 10, 3 * MiB),
                                          (size - 512, 512)]):
        data = bytes([i + 1]) * length
        assert drive.write(offset, data).ok
        model[offset:offset + length] = data
    done = drive.discard(0, MiB)                   # VHD has no discard: nothing changes
    assert done.ok and not done.trace.has("punched")
    drive.close()
    with open(reference, "wb") as f:
        f.write(model)
    assert run(qemu_img, "compare", "-f", "vpc", "-F", "raw", path, reference).returncode == 0


def test_check_is_not_supported_as_with_qemu_img(tmp_path):
    path = str(tmp_path / "e.vhd")
    create_image(path, "vpc", MiB, {})
    proc = subprocess.run(["emu", "img", "check", path], capture_output=True, text=True)
    assert proc.returncode == 63 and "does not support checks" in proc.stderr


# -- differencing disks, checked with libvhdi -------------------------------------------------------
def make_chain(tmp_path, qemu_img, qemu_io) -> tuple[str, str, bytearray]:
    base, child = str(tmp_path / "base.vhd"), str(tmp_path / "child.vhd")
    run(qemu_img, "create", "-q", "-f", "vpc", base, "16M")
    run(qemu_io, "-f", "vpc", "-c", "write -P 1 0 5M", "-c", "write -P 2 11M 1M", base)
    size = open_image(base, read_only=True).virtual_size
    assert emu_main(["img", "create", "-q", "-f", "vpc", "-b", "base.vhd", "-F", "vpc", child]) == 0
    model = bytearray(b"\x01" * 5 * MiB + bytes(6 * MiB) + b"\x02" * MiB + bytes(size - 12 * MiB))
    drive = Drive(open_image(child), DriveOptions(discard="unmap"))
    for offset, length, byte in ((4096 + 100, 1000, 3), (4 * MiB, 3 * MiB, 4), (size - 700, 700, 5), (1, 1, 6)):
        assert drive.write(offset, bytes([byte]) * length).ok
        model[offset:offset + length] = bytes([byte]) * length
    drive.close()
    return base, child, model


def test_differencing_vhd_reads_through_its_parent(tmp_path, qemu_img, qemu_io):
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    image = open_image(child, read_only=True)
    assert image.backing is not None and image.backing.path.endswith("base.vhd")
    assert image.read(0, image.virtual_size) == bytes(model)
    assert {e.depth for e in map_extents(image)} == {0, 1}


def test_differencing_vhd_matches_libvhdi(tmp_path, qemu_img, qemu_io):
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    name, data = libvhdi_read(child, base)
    assert name.endswith("base.vhd") and data == bytes(model)


def test_parent_uuid_mismatch_is_reported(tmp_path, qemu_img, qemu_io):
    base, child, _ = make_chain(tmp_path, qemu_img, qemu_io)
    run(qemu_img, "create", "-q", "-f", "vpc", base, "16M")
    with pytest.raises(InvalidImage) as info:
        open_image(child, read_only=True)
    assert info.value.field == "parent_unique_id" and "mismatch" in str(info.value)



# -- malformed files --------------------------------------------------------------------------------
def test_bad_footer_checksum_is_refused_as_qemu_does(tmp_path):
    path = str(tmp_path / "e.vhd")
    create_image(path, "vpc", 8 * MiB, {})
    patch_bytes(path, 60, b"\x00\x00\x00\x04")   # the disk type changed, the checksum not
    with pytest.raises(InvalidImage) as info:
        open_image(path, read_only=True)
    assert info.value.field == "checksum" and path in str(info.value)


def test_truncated_bat_is_refused(tmp_path):
    path = str(tmp_path / "e.vhd")
    create_image(path, "vpc", 1 << 30, {})
    with open(path, "r+b") as f:
        f.truncate(1536 + 100)
    with pytest.raises(InvalidImage) as info:
        open_image(path, "vpc", read_only=True)
    assert info.value.field in ("table_offset", "footer", "bat")


def test_truncated_data_block_is_refused(qemu_io, tmp_path):
    path = str(tmp_path / "e.vhd")
    create_image(path, "vpc", 8 * MiB, {})
    run(qemu_io, "-f", "vpc", "-c", "write 0 4k", path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - MiB)
    with pytest.raises(InvalidImage, match="truncated"):
        open_image(path, "vpc", read_only=True)


def test_size_over_2040_gib_is_refused():
    with pytest.raises(EmuError, match="2040 GiB"):
        rounded_size(2041 << 30, True)
