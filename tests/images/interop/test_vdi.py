"""VDI against qemu-img (dynamic and fixed images) and against dissect.hypervisor's reader (differencing
images, which qemu cannot open); VirtualBox-style discards; malformed files."""

from __future__ import annotations

import json
import os

import pytest

from emu.block import Drive, DriveOptions
from emu.cli import main as emu_main
from emu.errors import InvalidImage, UnsupportedFeature
from images import create_image, open_image
from images.inspect import map_extents
from images.vdi import layout as L
from tests.conftest import oracle_module, run
from tests.support import emu_map, emu_read, patch_bytes

MiB = 1 << 20
UUIDS = slice(0x188, 0x1A8)   # uuid_image and uuid_last_snap are random


def masked(path: str) -> bytes:
    data = bytearray(open(path, "rb").read())
    data[UUIDS] = bytes(UUIDS.stop - UUIDS.start)
    return bytes(data)


@pytest.mark.parametrize("size,options", [("64M", []), ("1G", []), ("10M", ["-o", "static=on"]), ("3000000", [])])
def test_created_images_equal_qemu_img_but_for_the_uuids(qemu_img, tmp_path, size, options):
    ours, theirs = str(tmp_path / "e.vdi"), str(tmp_path / "q.vdi")
    run(qemu_img, "create", "-q", "-f", "vdi", *options, theirs, size)
    assert emu_main(["img", "create", "-q", "-f", "vdi", *options, ours, size]) == 0
    assert masked(ours) == masked(theirs)
    assert run(qemu_img, "check", ours).returncode == 0


def test_images_written_by_qemu_io_read_map_and_check_identically(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "q.vdi")
    run(qemu_img, "create", "-q", "-f", "vdi", path, "16M")
    run(qemu_io, "-c", "write -P 1 3M 100k", "-c", "write -P 2 0 4k", "-c", "write -P 3 15M 1M",
        "-c", "write -z 8M 1M", path)
    reference = str(tmp_path / "ref.raw")
    run(qemu_img, "convert", "-O", "raw", path, reference)
    assert emu_read(path) == open(reference, "rb").read()
    assert emu_map(path) == json.loads(run(qemu_img, "map", "--output=json", path).stdout)
    ours = json.loads(emu_main_capture(["img", "check", "--output=json", path]))
    assert ours == json.loads(run(qemu_img, "check", "--output=json", path).stdout)


def emu_main_capture(args: list[str]) -> str:
    import subprocess
    return subprocess.run(["emu", *args], capture_output=True, text=True, check=True).stdout


def test_images_written_by_emu_pass_qemu_check_and_compare(qemu_img, tmp_path):
    path, reference = str(tmp_path / "e.vdi"), str(tmp_path / "ref.raw")
    create_image(path, "vdi", 16 * MiB, {})
    model = bytearray(16 * MiB)
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    for i, (offset, length) in enumerate([(3 * MiB + 100, 70000), (0, 4096), (15 * MiB, MiB), (2 * MiB - 10, 20),
                                          (9 * MiB, 3 * MiB)]):
        data = bytes([i + 1]) * length
        assert drive.write(offset, data).ok
        model[offset:offset + length] = data
    assert drive.write_zeroes(9 * MiB, 100000).ok          # no efficient zeroing: zero buffers written
    model[9 * MiB:9 * MiB + 100000] = bytes(100000)
    assert drive.discard(10 * MiB, MiB).ok                 # qemu mode: a successful no-op
    drive.close()
    with open(reference, "wb") as f:
        f.write(model)
    assert run(qemu_img, "check", path).returncode == 0
    assert run(qemu_img, "compare", "-f", "vdi", "-F", "raw", path, reference).returncode == 0
    assert emu_map(path) == json.loads(run(qemu_img, "map", "--output=json", path).stdout)


def test_qemu_mode_discards_change_nothing(tmp_path):
    path = str(tmp_path / "d.vdi")
    create_image(path, "vdi", 8 * MiB, {})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    drive.write(0, b"\x07" * MiB)
    done = drive.discard(0, MiB)
    assert done.ok and "no discard operation" in done.trace.events[0].detail
    assert drive.read(0, MiB).data == b"\x07" * MiB


def test_virtualbox_mode_frees_whole_blocks_and_shrinks_the_file(qemu_img, tmp_path):
    path = str(tmp_path / "d.vdi")
    create_image(path, "vdi", 8 * MiB, {})
    drive = Drive(open_image(path, options={"discard": "virtualbox"}), DriveOptions(discard="unmap"))
    for block in range(4):
        drive.write(block * MiB, bytes([block + 1]) * MiB)
    drive.flush()
    size = os.path.getsize(path)
    assert drive.discard(MiB, MiB).ok                                  # block 1: the last block moves in
    assert os.path.getsize(path) == size - MiB
    assert drive.discard(2 * MiB, 512 * 1024).ok                       # half a block: remembered only
    assert os.path.getsize(path) == size - MiB
    assert drive.discard(2 * MiB + 512 * 1024, 512 * 1024).ok          # the other half: freed
    assert os.path.getsize(path) == size - 2 * MiB
    expected = b"\x01" * MiB + bytes(2 * MiB) + b"\x04" * MiB
    assert drive.read(0, 4 * MiB).data == expected
    drive.close()
    assert run(qemu_img, "check", path).returncode == 0
    image = open_image(path, read_only=True)
    assert image.header.blocks_allocated == 2
    assert image.bmap[1] == image.bmap[2] == L.BLOCK_ZERO
    assert image.read(0, 4 * MiB) == expected


def test_a_write_forgets_partial_discards_of_its_block(tmp_path):
    path = str(tmp_path / "d.vdi")
    create_image(path, "vdi", 4 * MiB, {})
    drive = Drive(open_image(path, options={"discard": "virtualbox"}), DriveOptions(discard="unmap"))
    drive.write(0, b"\x01" * MiB)
    drive.discard(0, 512 * 1024)
    drive.write(0, b"\x02" * 512)
    drive.discard(512 * 1024, 512 * 1024)       # not the whole block any more: the write came between
    assert drive.read(0, 512).data == b"\x02" * 512


# -- differencing images --------------------------------------------------------------------------------
def make_chain(tmp_path, qemu_img, qemu_io) -> tuple[str, str, bytearray]:
    base, child = str(tmp_path / "base.vdi"), str(tmp_path / "child.vdi")
    run(qemu_img, "create", "-q", "-f", "vdi", base, "8M")
    run(qemu_io, "-c", "write -P 1 0 3M", "-c", "write -P 2 5M 1M", base)
    assert emu_main(["img", "create", "-q", "-f", "vdi", "-b", "base.vdi", "-F", "vdi", child]) == 0
    model = bytearray(b"\x01" * 3 * MiB + bytes(2 * MiB) + b"\x02" * MiB + bytes(2 * MiB))
    drive = Drive(open_image(child, options={"discard": "virtualbox"}), DriveOptions(discard="unmap"))
    for offset, length, byte in ((100, 5000, 3), (4 * MiB, MiB, 4), (7 * MiB + 7, 9, 5)):
        drive.write(offset, bytes([byte]) * length)
        model[offset:offset + length] = bytes([byte]) * length
    drive.discard(2 * MiB, MiB)                  # over parent data: must read zeros, not the parent
    model[2 * MiB:3 * MiB] = bytes(MiB)
    drive.close()
    return base, child, model


def test_differencing_vdi_reads_through_its_parent(tmp_path, qemu_img, qemu_io):
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    image = open_image(child, read_only=True)
    assert image.backing is not None and image.backing.path.endswith("base.vdi")
    assert image.read(0, 8 * MiB) == bytes(model)
    assert [e.depth for e in map_extents(image) if e.data] == [0, 1, 0, 1, 0]


def test_differencing_vdi_matches_dissect_hypervisor(tmp_path, qemu_img, qemu_io):
    """qemu refuses differencing VDIs; dissect.hypervisor's reader is the independent oracle."""
    vdi = oracle_module("dissect.hypervisor.disk.vdi", "dissect.hypervisor")
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    with open(base, "rb") as fb, open(child, "rb") as fc:
        parent = vdi.VDI(fb).open()
        stream = vdi.VDI(fc, parent=parent).open()
        got = b""
        for block in range(8):      # one block per read (dissect's multi-block reads are unreliable)
            stream.seek(block * MiB)
            got += stream.read(MiB)
    assert got == bytes(model)


def test_parent_uuid_mismatch_is_reported(tmp_path, qemu_img, qemu_io):
    base, child, _ = make_chain(tmp_path, qemu_img, qemu_io)
    run(qemu_img, "create", "-q", "-f", "vdi", base, "8M")       # a different image under the same name
    with pytest.raises(InvalidImage) as info:
        open_image(child, read_only=True)
    assert info.value.field == "uuid_link" and "mismatch" in str(info.value)



# -- malformed files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("offset,value,cls,field", [
    (0x44, (0x00010000).to_bytes(4, "little"), InvalidImage, "version"),
    (0x178, (65536).to_bytes(4, "little"), UnsupportedFeature, "block_size"),
    (0x180, (0x7FFFFFFF).to_bytes(4, "little"), InvalidImage, "disk_size"),
    (0x170, (1 << 60).to_bytes(8, "little"), InvalidImage, "disk_size"),
    (0x154, (0x201).to_bytes(4, "little"), InvalidImage, "offset_bmap"),
    (0x184, (1000).to_bytes(4, "little"), InvalidImage, "blocks_allocated"),
    (0x4C, (9).to_bytes(4, "little"), InvalidImage, "image_type"),
])
def test_malformed_headers_are_refused_naming_the_field(tmp_path, offset, value, cls, field):
    path = str(tmp_path / "bad.vdi")
    create_image(path, "vdi", 64 * MiB, {})
    patch_bytes(path, offset, value)
    with pytest.raises(cls) as info:
        open_image(path, "vdi", read_only=True)
    assert info.value.field == field and path in str(info.value)


def test_truncated_block_map_is_refused(tmp_path):
    path = str(tmp_path / "bad.vdi")
    create_image(path, "vdi", 1 << 30, {})
    with open(path, "r+b") as f:
        f.truncate(0x200 + 100)
    with pytest.raises(InvalidImage) as info:
        open_image(path, read_only=True)
    assert info.value.field == "offset_bmap"


def test_size_over_the_vdi_limit_is_a_usage_error(tmp_path):
    assert emu_main(["img", "create", "-q", "-f", "vdi", str(tmp_path / "x.vdi"), "600T"]) == 1
