"""VMDK monolithicSparse and delta links against qemu-img, both directions; CIDs; malformed files."""

from __future__ import annotations

import json
import re

import pytest

from emu.block import Drive, DriveOptions
from emu.cli import main as emu_main
from emu.errors import InvalidImage, UnsupportedFeature
from images import create_image, open_image
from tests.conftest import run
from tests.support import emu_map, emu_read, patch_bytes

MiB = 1 << 20


def normalised(path: str, name: str) -> tuple[bytes, bytes, bytes]:
    """Header, descriptor text with its random CID and its own file name blanked, and the rest."""
    data = open(path, "rb").read()
    start, end = 512, 512 + 20 * 512
    text = data[start:end].split(b"\0", 1)[0]
    text = re.sub(rb"(?m)^CID=[0-9a-f]+$", b"CID=x", text).replace(f'"{name}"'.encode(), b'"X"')
    return data[:start], text, data[end:]


@pytest.mark.parametrize("size", ["64M", "1G", "3000000"])
@pytest.mark.parametrize("options", [[], ["-o", "zeroed_grain=on"], ["-o", "adapter_type=lsilogic"]], ids=str)
def test_created_images_equal_qemu_img_but_for_cid_and_name(qemu_img, tmp_path, size, options, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vmdk", *options, "q.vmdk", size)
    assert emu_main(["img", "create", "-q", "-f", "vmdk", *options, "e.vmdk", size]) == 0
    assert normalised("e.vmdk", "e.vmdk") == normalised("q.vmdk", "q.vmdk")
    assert run(qemu_img, "check", "e.vmdk").returncode == 0


def test_three_deep_chain_written_by_qemu_reads_and_maps_identically(qemu_img, qemu_io, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vmdk", "l0.vmdk", "16M")
    run(qemu_io, "-c", "write -P 1 0 8M", "l0.vmdk")
    run(qemu_img, "create", "-q", "-f", "vmdk", "-b", "l0.vmdk", "-F", "vmdk", "l1.vmdk")
    run(qemu_io, "-c", "write -P 2 1M 1M", "-c", "write -P 3 12M 100k", "l1.vmdk")
    run(qemu_img, "create", "-q", "-f", "vmdk", "-b", "l1.vmdk", "-F", "vmdk", "l2.vmdk")
    run(qemu_io, "-c", "write -P 4 1536k 1M", "-c", "write -P 5 100 1000", "l2.vmdk")
    run(qemu_img, "convert", "-O", "raw", "l2.vmdk", "ref.raw")
    assert emu_read("l2.vmdk") == open("ref.raw", "rb").read()
    assert emu_map("l2.vmdk") == json.loads(run(qemu_img, "map", "--output=json", "l2.vmdk").stdout)


def test_chain_written_by_emu_reads_identically_in_qemu(qemu_img, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    create_image("l0.vmdk", "vmdk", 16 * MiB, {})
    model = bytearray(16 * MiB)
    steps = [("l0.vmdk", [(0, 8 * MiB, 1)]), ("l1.vmdk", [(MiB, MiB, 2), (12 * MiB, 100000, 3)]),
             ("l2.vmdk", [(1536 * 1024, MiB, 4), (100, 1000, 5), (16 * MiB - 1, 1, 6)])]
    parent = None
    for name, writes in steps:
        if parent:
            assert emu_main(["img", "create", "-q", "-f", "vmdk", "-b", parent, "-F", "vmdk", name]) == 0
        drive = Drive(open_image(name), DriveOptions())
        for offset, length, byte in writes:
            assert drive.write(offset, bytes([byte]) * length).ok
            model[offset:offset + length] = bytes([byte]) * length
        drive.close()
        parent = name
    with open("ref.raw", "wb") as f:
        f.write(model)
    assert run(qemu_img, "compare", "-F", "raw", "l2.vmdk", "ref.raw").returncode == 0
    for name in ("l0.vmdk", "l1.vmdk", "l2.vmdk"):
        assert run(qemu_img, "check", name).returncode == 0
    assert emu_map("l2.vmdk") == json.loads(run(qemu_img, "map", "--output=json", "l2.vmdk").stdout)


def test_the_cid_changes_on_the_first_write_after_open(tmp_path):
    path = str(tmp_path / "d.vmdk")
    create_image(path, "vmdk", MiB, {})
    image = open_image(path)
    before = image.cid
    image.write(0, b"x" * 512)
    after = image.cid
    image.write(512, b"y" * 512)
    image.close()
    assert after != before and open_image(path, read_only=True).cid == after


def test_a_child_whose_parent_was_written_is_reported_not_read(qemu_img, qemu_io, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vmdk", "base.vmdk", "8M")
    run(qemu_io, "-c", "write -P 1 0 1M", "base.vmdk")
    create_image("child.vmdk", "vmdk", None, {}, backing="base.vmdk", backing_fmt="vmdk")
    drive = Drive(open_image("base.vmdk"), DriveOptions())
    drive.write(4 * MiB, b"\x09" * 4096)          # a new CID in the parent
    drive.close()
    child = Drive(open_image("child.vmdk", read_only=True), DriveOptions())
    done = child.read(0, 4096)
    assert not done.ok and "parentCID" in str(done.error) and done.errno == 22
    assert run(qemu_io, "-r", "-c", "read 0 4k", "child.vmdk", check=False).returncode != 0   # qemu agrees


def test_zeroed_grain_write_zeroes_sets_the_grain_entry(qemu_img, tmp_path):
    path = str(tmp_path / "z.vmdk")
    create_image(path, "vmdk", 4 * MiB, {"zeroed_grain": "on"})
    drive = Drive(open_image(path), DriveOptions())
    drive.write(0, b"\x01" * MiB)
    done = drive.write_zeroes(0, 65536 * 2)
    assert done.ok and done.trace.has("zeroed") and not done.trace.has("fallback")
    drive.close()
    assert emu_read(path)[:MiB] == bytes(131072) + b"\x01" * (MiB - 131072)
    assert emu_map(path) == json.loads(run(qemu_img, "map", "--output=json", path).stdout)


def test_discard_is_a_no_op(tmp_path):
    path = str(tmp_path / "d.vmdk")
    create_image(path, "vmdk", 4 * MiB, {})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    drive.write(0, b"\x01" * MiB)
    assert drive.discard(0, MiB).ok
    assert drive.read(0, MiB).data == b"\x01" * MiB


@pytest.mark.parametrize("offset,value,cls,field", [
    (4, (9).to_bytes(4, "little"), UnsupportedFeature, "version"),
    (44, (1000).to_bytes(4, "little"), InvalidImage, "num_gtes_per_gt"),
    (20, (3).to_bytes(8, "little"), InvalidImage, "grain_size"),
    (64, (1 << 40).to_bytes(8, "little"), InvalidImage, "overhead"),
    (56, (1 << 30).to_bytes(8, "little"), InvalidImage, "gd_offset"),
    (12, (1 << 50).to_bytes(8, "little"), InvalidImage, "capacity"),
])
def test_malformed_headers_are_refused_naming_the_field(tmp_path, offset, value, cls, field):
    path = str(tmp_path / "bad.vmdk")
    create_image(path, "vmdk", 64 * MiB, {})
    patch_bytes(path, offset, value)
    with pytest.raises(cls) as info:
        open_image(path, read_only=True)
    assert info.value.field == field and path in str(info.value)


def test_a_descriptor_without_cid_is_refused(tmp_path):
    path = str(tmp_path / "bad.vmdk")
    create_image(path, "vmdk", 8 * MiB, {})
    data = open(path, "rb").read()
    with open(path, "r+b") as f:
        f.write(data.replace(b"\nCID=", b"\nXID=", 1))
    with pytest.raises(InvalidImage) as info:
        open_image(path, read_only=True)
    assert info.value.field == "CID"
