"""VHDX against qemu-img (dynamic and fixed disks, both directions; qemu-img check replays a dirty log)
and libvhdi (differencing disks, which qemu 7.2 cannot open); whole-block discards; the metadata log.
Malformed files are in tests/images/fuzz/test_vhdx_malformed.py."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest

from emu.block import Drive, DriveOptions
from emu.cli import main as emu_main
from emu.errors import EmuError, InvalidImage, UsageError
from images import create_image, detect_format, open_image
from images.inspect import map_extents
from images.vhdx import layout as L
from tests.conftest import oracle_module, run
from tests.support import emu_map, emu_read, libvhdi_read, qemu_part, without_reclaim

MiB = 1 << 20


# -- reading the layout back with plain struct (independent of images.vhdx) -------------------------
def metadata_end(path: str) -> int:
    """Where the last region (BAT or metadata) ends: the data area starts at or after it."""
    with open(path, "rb") as f:
        table = os.pread(f.fileno(), 64 * 1024, L.REGION_OFFSETS[0])
    count = struct.unpack_from("<I", table, 8)[0]
    return max(offset + length for offset, length in
               (struct.unpack_from("<16xQI", table, 16 + 32 * i) for i in range(count)))


def layout(path: str) -> dict:
    """The values two creators must agree on: region table, metadata items, log, BAT, file size."""
    with open(path, "rb") as f:
        data = f.read(metadata_end(path))
    regions = {}
    for i in range(struct.unpack_from("<I", data, L.REGION_OFFSETS[0] + 8)[0]):
        guid, offset, length, required = struct.unpack_from("<16sQII", data, L.REGION_OFFSETS[0] + 16 + 32 * i)
        regions[guid] = (offset, length, required)
    meta_offset = regions[L.METADATA_GUID][0]
    items = {}
    for i in range(struct.unpack_from("<H", data, meta_offset + 10)[0]):
        guid, offset, length, flags = struct.unpack_from("<16sIII", data, meta_offset + 32 + 32 * i)
        items[guid] = (data[meta_offset + offset:meta_offset + offset + length], flags)
    bat_offset, bat_length, _ = regions[L.BAT_GUID]
    return {
        "file_size": os.path.getsize(path),
        "regions": regions,
        "block_size, flags": struct.unpack("<II", items[L.FILE_PARAMS_GUID][0]),
        "virtual_size": struct.unpack("<Q", items[L.VIRTUAL_SIZE_GUID][0])[0],
        "sector_sizes": (struct.unpack("<I", items[L.LOGICAL_SECTOR_GUID][0])[0],
                         struct.unpack("<I", items[L.PHYSICAL_SECTOR_GUID][0])[0]),
        "item_flags": sorted((guid, flags) for guid, (_, flags) in items.items()),
        "log": struct.unpack_from("<IQ", data, L.HEADER_OFFSETS[0] + 68),      # log_length, log_offset
        "bat": data[bat_offset:bat_offset + bat_length],
    }


def masked(path: str) -> bytes:
    """Everything up to the end of the metadata region but the creator string, the headers' sequence
    numbers, checksums and GUIDs and the page 83 GUID (random, or the writer's name), then the file
    size. The data area beyond must hold no data at all (checked: it can be gigabytes of holes)."""
    end = metadata_end(path)
    with open(path, "rb") as f:
        data = bytearray(f.read(end))
        with pytest.raises(OSError):            # ENXIO: no data after `end`
            os.lseek(f.fileno(), end, os.SEEK_DATA)
    data[8:64 * 1024] = bytes(64 * 1024 - 8)
    for header in L.HEADER_OFFSETS:
        data[header + 4:header + 48] = bytes(44)
    meta = layout(path)["regions"][L.METADATA_GUID][0]
    page83 = struct.unpack_from("<I", data, meta + 32 + 2 * 32 + 16)[0]
    data[meta + page83:meta + page83 + 16] = bytes(16)
    return bytes(data) + os.path.getsize(path).to_bytes(8, "little")


CREATE_CASES = [([], "64M"), ([], "3000001"), ([], "1"), ([], "1G"), ([], "200G"),
                (["-o", "subformat=fixed"], "64M"), (["-o", "subformat=fixed,block_state_zero=off"], "64M"),
                (["-o", "subformat=fixed,block_state_zero=off,block_size=1M"], "3000001"),
                (["-o", "block_state_zero=off"], "64M"), (["-o", "block_size=1M"], "64M"),
                (["-o", "block_size=32M"], "64M"), (["-o", "block_size=1500k"], "64M"),
                (["-o", "block_size=512M"], "64M"), (["-o", "log_size=2M"], "64M"),
                (["-o", "log_size=1500k,block_size=1M"], "10M")]


@pytest.mark.parametrize("options,size", CREATE_CASES, ids=str)
def test_created_images_equal_qemu_img_but_for_guids_and_creator(qemu_img, tmp_path, monkeypatch, capsys, options,
                                                                  size):
    monkeypatch.chdir(tmp_path)
    theirs = run(qemu_img, "create", "-f", "vhdx", *options, "disk.vhdx", size).stdout
    os.rename("disk.vhdx", "q.vhdx")
    capsys.readouterr()
    assert emu_main(["img", "create", "-f", "vhdx", *options, "disk.vhdx", size]) == 0
    assert capsys.readouterr().out == theirs
    q, e = layout("q.vhdx"), layout("disk.vhdx")
    assert e == q
    assert masked("disk.vhdx") == masked("q.vhdx")
    info = json.loads(run(qemu_img, "info", "--output=json", "disk.vhdx").stdout)
    image = open_image("disk.vhdx", read_only=True)
    assert (info["format"], info["virtual-size"], info["cluster-size"]) == ("vhdx", image.virtual_size,
                                                                            image.block_size)
    assert image.virtual_size == e["virtual_size"] and image.block_size == e["block_size, flags"][0]
    image.close()
    assert run(qemu_img, "check", "disk.vhdx").returncode == 0


def test_default_layout_matches_the_specification_and_qemu(qemu_img, tmp_path):
    """Pinned numbers, so the comparison above cannot pass with both writers wrong the same way."""
    path = str(tmp_path / "e.vhdx")
    create_image(path, "vhdx", 64 * MiB, {})
    got = layout(path)
    assert got["log"] == (MiB, MiB)
    assert got["regions"][L.BAT_GUID] == (2 * MiB, MiB, 0)
    assert got["regions"][L.METADATA_GUID] == (3 * MiB, MiB, 0)
    assert got["block_size, flags"] == (8 * MiB, 0) and got["sector_sizes"] == (512, 512)
    assert got["file_size"] == 8 * MiB                       # data area 5 MiB after the BAT
    assert struct.unpack("<8Q", got["bat"][:64]) == (L.PAYLOAD_ZERO,) * 8
    assert detect_format(path) == "vhdx"


@pytest.mark.parametrize("options,message", [
    ({"block_size": "3M"}, "power of two"), ({"subformat": "sparse"}, "subformat"),
    ({"log_size": "0"}, "log size"), ({"block_state_zero": "maybe"}, "block_state_zero"),
    ({"cluster_size": "64k"}, "cluster_size")])
def test_bad_create_options_are_usage_errors(tmp_path, options, message):
    with pytest.raises(UsageError, match=message):
        create_image(str(tmp_path / "x.vhdx"), "vhdx", 64 * MiB, options)
    assert not os.path.exists(tmp_path / "x.vhdx")


def test_size_over_64_tib_is_refused_as_qemu_img_refuses_it(qemu_img, tmp_path):
    with pytest.raises(UsageError, match="64TB"):
        create_image(str(tmp_path / "y.vhdx"), "vhdx", (64 << 40) + 512, {})
    assert run(qemu_img, "create", "-f", "vhdx", str(tmp_path / "q.vhdx"), str((64 << 40) + 512),
               check=False).returncode == 1


# -- data written by one side, read by the other ------------------------------------------------------
SIZE = 24 * MiB        # three 8 MiB blocks by default, 24 with block_size=1M
WRITES = [(3 * MiB + 100, 70000, 1), (0, 4096, 2), (MiB - 10, 3 * MiB, 3), (8 * MiB - 3000, 6000, 4),
          (13 * MiB + 7, 1, 7), (SIZE - 512, 512, 5), (17 * MiB, MiB, 6)]


def emu_cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`emu ARGS` in this process (a Python start per call would double the file's run time)."""
    capsys.readouterr()
    code = emu_main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["emu", *args], code, out.out, out.err)


def model_discard(model: bytearray, offset: int, length: int, block_size: int, fixed: bool) -> None:
    """What a guest reads after a discard under discard=unmap: the whole blocks inside the range read zeros
    (unmapped), parts of blocks keep their data; a fixed disk passes the whole range to the host file."""
    start = offset if fixed else -(-offset // block_size) * block_size
    end = offset + length if fixed else (offset + length) // block_size * block_size
    if offset + length == len(model) and not fixed:
        end = len(model)          # the last block of a disk whose size is not block aligned is whole too
    if end > start:
        model[start:end] = bytes(end - start)


@pytest.mark.parametrize("options", ["subformat=dynamic", "subformat=fixed", "subformat=fixed,block_state_zero=off",
                                     "block_state_zero=off,block_size=1M"])
def test_images_written_by_qemu_io_read_identically(qemu_img, qemu_io, tmp_path, options):
    path, reference = str(tmp_path / "q.vhdx"), str(tmp_path / "ref.raw")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", options, path, str(SIZE))
    run(qemu_io, "-f", "vhdx", *[c for off, n, b in WRITES for c in ("-c", f"write -P {b} {off} {n}")], path)
    run(qemu_img, "convert", "-f", "vhdx", "-O", "raw", path, reference)
    assert emu_read(path) == open(reference, "rb").read()
    assert emu_read(path)[MiB - 10:MiB - 9] == b"\x03"


@pytest.mark.parametrize("options", [{}, {"subformat": "fixed"}, {"subformat": "fixed", "block_state_zero": "off"},
                                     {"block_size": "1M", "block_state_zero": "off"}], ids=str)
def test_images_written_by_emu_read_identically_in_qemu(qemu_img, qemu_io, tmp_path, options):
    path, reference = str(tmp_path / "e.vhdx"), str(tmp_path / "ref.raw")
    create_image(path, "vhdx", SIZE, options)
    model = bytearray(SIZE)
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    for offset, length, byte in WRITES:
        assert drive.write(offset, bytes([byte]) * length).ok
        model[offset:offset + length] = bytes([byte]) * length
    assert drive.write_zeroes(3 * MiB + 1000, 5000).ok                  # partial: zero buffers
    model[3 * MiB + 1000:3 * MiB + 6000] = bytes(5000)
    assert drive.write_zeroes(16 * MiB, 8 * MiB, may_unmap=True).ok      # whole blocks and pieces
    model[16 * MiB:24 * MiB] = bytes(8 * MiB)
    assert drive.discard(MiB - 10, 2 * MiB).ok
    model_discard(model, MiB - 10, 2 * MiB, drive.backend.block_size, options.get("subformat") == "fixed")
    drive.close()
    with open(reference, "wb") as f:
        f.write(model)
    assert run(qemu_img, "check", path).returncode == 0
    assert run(qemu_img, "compare", "-f", "vhdx", "-F", "raw", path, reference).returncode == 0
    checks = [(0, 4096), (2 * MiB, 100), (3 * MiB + 1000, 5000), (8 * MiB - 3000, 2000), (13 * MiB + 7, 1),
              (16 * MiB, 8 * MiB), (MiB - 10, 10)]
    assert all(len(set(model[o:o + n])) == 1 for o, n in checks)
    run(qemu_io, "-r", "-f", "vhdx", *[c for o, n in checks for c in ("-c", f"read -P {model[o]} {o} {n}")], path)
    assert emu_read(path) == bytes(model)


# -- discard and write-zeroes -------------------------------------------------------------------------
def states(path: str) -> list[int]:
    """The payload block states, read with struct (sector-bitmap entries left out)."""
    got = layout(path)
    block_size = got["block_size, flags"][0]
    ratio = (1 << 23) * 512 // block_size
    blocks = -(-got["virtual_size"] // block_size)
    bat = got["bat"]
    return [struct.unpack_from("<Q", bat, 8 * (b + b // ratio))[0] & 7 for b in range(blocks)]


def test_whole_block_discard_unmaps_and_punches_partial_discard_keeps(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 64 * MiB, {"block_size": "1M"})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    assert drive.write(0, b"\x05" * 8 * MiB).ok
    drive.flush()
    before = os.stat(path).st_blocks
    done = drive.discard(MiB + 512, 3 * MiB)             # blocks 2 and 3 whole, parts of 1 and 4
    assert done.ok and done.trace.has("unmapped") and done.trace.has("punched") and done.trace.has("ignored")
    assert (before - os.stat(path).st_blocks) * 512 == 2 * MiB
    assert drive.read(0, 8 * MiB).data == b"\x05" * 2 * MiB + bytes(2 * MiB) + b"\x05" * 4 * MiB
    assert drive.discard(6 * MiB, 512).ok and drive.read(6 * MiB, 512).data == b"\x05" * 512
    drive.close()
    assert states(path)[:9] == [6, 6, 3, 3, 6, 6, 6, 6, 2]
    assert run(qemu_img, "check", path).returncode == 0
    run(qemu_io, "-r", "-f", "vhdx", "-c", "read -P 5 0 2M", "-c", "read -P 0 2M 2M", "-c", "read -P 5 4M 4M", path)
    assert emu_map(path)[:3] == [
        {"start": 0, "length": 2 * MiB, "depth": 0, "present": True, "zero": False, "data": True, "offset": 8 * MiB},
        {"start": 2 * MiB, "length": 2 * MiB, "depth": 0, "present": True, "zero": True, "data": False},
        {"start": 4 * MiB, "length": 4 * MiB, "depth": 0, "present": True, "zero": False, "data": True,
         "offset": 12 * MiB}]


def bat_entries(path: str, count: int) -> list[int]:
    got = layout(path)
    return list(struct.unpack_from(f"<{count}Q", got["bat"]))


@pytest.mark.parametrize("options", ["block_size=1M", "subformat=fixed,block_size=1M"])
def test_blocks_are_allocated_where_qemu_allocates_them(qemu_img, qemu_io, tmp_path, options):
    """At the end of the file, never in the 4 MiB qemu keeps after the metadata, nor in the data area a
    fixed disk made with block_state_zero=on reserves but does not use."""
    ours, theirs = str(tmp_path / "e.vhdx"), str(tmp_path / "q.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", options, theirs, "16M")
    shutil.copyfile(theirs, ours)
    writes = [(5 * MiB + 100, 5000), (0, 512), (3 * MiB - 512, MiB)]
    run(qemu_io, "-f", "vhdx", *[c for o, n in writes for c in ("-c", f"write -P 9 {o} {n}")], theirs)
    drive = Drive(open_image(ours), DriveOptions())
    for offset, length in writes:
        assert drive.write(offset, b"\x09" * length).ok
    drive.close()
    assert bat_entries(ours, 16) == bat_entries(theirs, 16)
    assert os.path.getsize(ours) == os.path.getsize(theirs)


def test_discarding_an_unwritten_block_of_a_qemu_fixed_disk_keeps_the_file_intact(qemu_img, qemu_io, tmp_path):
    """qemu's default fixed disk has ZERO blocks without a file offset: there is nothing to punch (a
    discard once punched file offset 0 + the guest offset, the file identifier and headers)."""
    path = str(tmp_path / "f.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "subformat=fixed,block_size=1M", path, "16M")
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    assert drive.write(4 * MiB, b"\x04" * MiB).ok
    size = os.path.getsize(path)
    done = drive.discard(0, 16 * MiB)
    assert done.ok and drive.read(0, 16 * MiB).data == bytes(16 * MiB)
    drive.close()
    assert os.path.getsize(path) == size and states(path) == [2] * 4 + [6] + [2] * 11   # blocks stay allocated
    assert run(qemu_img, "check", path).returncode == 0
    run(qemu_io, "-r", "-f", "vhdx", "-c", "read -P 0 0 16M", path)


def test_freed_slots_are_reused_before_the_file_grows(qemu_img, tmp_path):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 64 * MiB, {"block_size": "1M"})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    drive.write(0, b"\x01" * 4 * MiB)
    size = os.path.getsize(path)
    drive.discard(MiB, MiB)
    drive.write(40 * MiB, b"\x02" * 4096)                # into the freed slot, which reads zeros around it
    assert os.path.getsize(path) == size
    assert drive.read(40 * MiB, MiB).data == b"\x02" * 4096 + bytes(MiB - 4096)
    drive.close()
    assert run(qemu_img, "check", path).returncode == 0
    assert emu_read(path)[:5 * MiB] == b"\x01" * MiB + bytes(MiB) + b"\x01" * 2 * MiB + bytes(MiB)


def test_discard_ignore_changes_nothing(tmp_path):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M"})
    drive = Drive(open_image(path), DriveOptions(discard="ignore"))
    drive.write(0, b"\x01" * 2 * MiB)
    done = drive.discard(0, 2 * MiB)
    assert done.ok and done.trace.has("dropped") and drive.read(0, 2 * MiB).data == b"\x01" * 2 * MiB
    drive.close()
    assert states(path)[:3] == [6, 6, 2]


@pytest.mark.parametrize("may_unmap", [False, True])
def test_write_zeroes_of_whole_blocks(qemu_img, qemu_io, tmp_path, may_unmap):
    path = str(tmp_path / "z.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M", "block_state_zero": "off"})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    drive.write(0, b"\x07" * 4 * MiB)
    drive.flush()
    before = os.stat(path).st_blocks
    done = drive.write_zeroes(MiB - 4096, 2 * MiB + 8192, may_unmap=may_unmap)
    assert done.ok and not done.trace.has("fallback")       # no zero buffers: the block states say it
    assert drive.read(0, 4 * MiB).data == b"\x07" * (MiB - 4096) + bytes(2 * MiB + 8192) + b"\x07" * (MiB - 4096)
    assert drive.write_zeroes(8 * MiB, 2 * MiB, may_unmap=may_unmap).ok   # never written: reads zeros already
    drive.close()
    assert states(path)[:10] == [6, 2, 2, 6, 0, 0, 0, 0, 0, 0] if may_unmap else [6, 6, 6, 6, 0, 0, 0, 0, 0, 0]
    assert (os.stat(path).st_blocks < before) == may_unmap
    assert run(qemu_img, "check", path).returncode == 0
    run(qemu_io, "-r", "-f", "vhdx", "-c", "read -P 7 0 1020k", "-c", "read -P 0 1020k 2056k", "-c",
        "read -P 7 3076k 1020k", path)


def test_write_zeroes_over_part_of_an_unwritten_block_needs_no_data(tmp_path):
    path = str(tmp_path / "z.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M"})
    drive = Drive(open_image(path), DriveOptions())
    done = drive.write_zeroes(100 * 512, 7 * 512)
    assert done.ok and not done.trace.has("fallback") and not done.trace.has("allocated")
    drive.write(MiB, b"\x01" * MiB)
    done = drive.write_zeroes(MiB + 512, 512)             # a present block: zeroed in place
    assert done.ok and drive.read(MiB, 1024).data == b"\x01" * 512 + bytes(512)
    drive.close()
    assert states(path)[:3] == [2, 6, 2]


# -- differencing disks, checked with libvhdi ----------------------------------------------------------
def make_chain(tmp_path, qemu_img, qemu_io) -> tuple[str, str, bytearray]:
    """A 16 MiB base written by qemu-io (1 MiB blocks), an emu child with writes that cut sectors and
    blocks, and a whole-block discard over parent data."""
    base, child = str(tmp_path / "base.vhdx"), str(tmp_path / "child.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", base, "16M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 0 5M", "-c", "write -P 2 11M 1M", "-c", "write -P 9 15M 4k", base)
    assert emu_main(["img", "create", "-q", "-f", "vhdx", "-b", "base.vhdx", "-F", "vhdx", child]) == 0
    model = bytearray(b"\x01" * 5 * MiB + bytes(6 * MiB) + b"\x02" * MiB + bytes(4 * MiB))
    model[15 * MiB:15 * MiB + 4096] = b"\x09" * 4096
    drive = Drive(open_image(child), DriveOptions(discard="unmap"))
    for offset, length, byte in ((4096 + 100, 1000, 3), (3 * MiB - 700, MiB + 1400, 4), (16 * MiB - 700, 700, 5),
                                 (1, 1, 6), (11 * MiB + 512, 512, 7), (15 * MiB + 4095, 2, 8)):
        assert drive.write(offset, bytes([byte]) * length).ok
        model[offset:offset + length] = bytes([byte]) * length
    done = drive.discard(MiB, MiB)                   # over parent data: must read zeros, not the parent
    assert done.ok and done.trace.has("zeroed")
    model[MiB:2 * MiB] = bytes(MiB)
    done = drive.write_zeroes(5 * MiB - 512, 1024)   # part of two blocks: zeros written over the parent's
    assert done.ok and done.trace.has("fallback")
    model[5 * MiB - 512:5 * MiB + 512] = bytes(1024)
    drive.close()
    return base, child, model


def test_differencing_vhdx_reads_through_its_parent(tmp_path, qemu_img, qemu_io):
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    image = open_image(child, read_only=True)
    assert image.backing is not None and image.backing.path.endswith("base.vhdx")
    assert image.read(0, image.virtual_size) == bytes(model)
    assert image.read(15 * MiB + 4000, 200) == bytes(model[15 * MiB + 4000:15 * MiB + 4200])
    extents = map_extents(image)
    assert {e.depth for e in extents} == {0, 1}
    assert [e.to_json() for e in extents if e.start == MiB] == [
        {"start": MiB, "length": MiB, "depth": 0, "present": True, "zero": True, "data": False}]
    image.close()
    assert states(child)[:5] == [7, 2, 7, 6, 7]   # partial, zero (discarded), partial, whole, partial
    assert run(qemu_img, "info", "--output=json", child, check=False).returncode != 0   # qemu 7.2 cannot open it


def test_differencing_vhdx_matches_libvhdi(tmp_path, qemu_img, qemu_io):
    """libvhdi reads every block state below FULLY_PRESENT of a differencing disk from the parent, ZERO
    included; [MS-VHDX] 2.5.1.1 defines a ZERO block's content as zeros, as emu reads it. So the
    discarded block is left out of the comparison."""
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    name, got = libvhdi_read(child, base)
    assert name.endswith("base.vhdx") and len(got) == len(model)
    assert got[:MiB] == bytes(model[:MiB]) and got[2 * MiB:] == bytes(model[2 * MiB:])


def test_three_deep_chain(tmp_path, qemu_img, qemu_io, monkeypatch):
    pyvhdi = oracle_module("pyvhdi", "libvhdi-python")
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", "l0.vhdx", "8M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 0 8M", "l0.vhdx")
    model = bytearray(b"\x01" * 8 * MiB)
    layers = (("l1.vhdx", "l0.vhdx", [(MiB + 512, 4096, 2), (4 * MiB, 2 * MiB, 3)]),
              ("l2.vhdx", "l1.vhdx", [(MiB, 1024, 4), (5 * MiB - 1, 2, 5), (8 * MiB - 512, 512, 6)]))
    for name, parent, writes in layers:
        assert emu_main(["img", "create", "-q", "-f", "vhdx", "-b", parent, "-F", "vhdx", name]) == 0
        drive = Drive(open_image(name), DriveOptions())
        for offset, length, byte in writes:
            assert drive.write(offset, bytes([byte]) * length).ok
            model[offset:offset + length] = bytes([byte]) * length
        drive.close()
    image = open_image("l2.vhdx", read_only=True)
    assert [layer.path for layer in image.chain()] == ["l2.vhdx", "l1.vhdx", "l0.vhdx"]
    assert image.read(0, 8 * MiB) == bytes(model)
    assert {e.depth for e in map_extents(image)} == {0, 1, 2}
    image.close()
    files = []
    for name in ("l0.vhdx", "l1.vhdx", "l2.vhdx"):
        files.append(pyvhdi.file())
        files[-1].open(name)
        if len(files) > 1:
            files[-1].set_parent(files[-2])
    files[-1].seek(0)
    assert files[-1].read(8 * MiB) == bytes(model)


def test_a_child_whose_parent_was_written_is_refused_naming_both(tmp_path, qemu_img, qemu_io, capsys):
    base, child, _ = make_chain(tmp_path, qemu_img, qemu_io)
    run(qemu_io, "-f", "vhdx", "-c", "write -P 9 0 512", base)      # a new data write GUID in the parent
    with pytest.raises(InvalidImage) as info:
        open_image(child, read_only=True)
    assert info.value.field == "parent_linkage" and child in str(info.value) and "base.vhdx" in str(info.value)
    proc = emu_cli(capsys, "img", "info", child)
    assert proc.returncode == 1 and "parent linkage mismatch" in proc.stderr and "Traceback" not in proc.stderr


def test_opening_a_parent_read_write_without_writing_keeps_its_children(tmp_path, qemu_img, qemu_io):
    base, child, model = make_chain(tmp_path, qemu_img, qemu_io)
    image = open_image(base)
    image.read(0, MiB)
    image.close()
    assert emu_read(child) == bytes(model)


def test_differencing_disk_of_an_odd_size(tmp_path, qemu_img, qemu_io):
    """The parent's size and block size; the last block, and its last 4 KiB page, are partial."""
    base, child = str(tmp_path / "base.vhdx"), str(tmp_path / "child.vhdx")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=2M", base, "3000001")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 0 3000320", base)
    create_image(child, "vhdx", None, {}, backing="base.vhdx", backing_fmt="vhdx")
    image = open_image(child)
    assert (image.virtual_size, image.block_size) == (3000320, 2 * MiB)
    assert image.backing_name == "base.vhdx" and image.backing_format == "vhdx"
    model = bytearray(b"\x01" * 3000320)
    for offset, length, byte in ((3000320 - 512, 512, 2), (3000320 - 1536, 100, 3), (2 * MiB, 1000, 4)):
        image.write(offset, bytes([byte]) * length)
        model[offset:offset + length] = bytes([byte]) * length
    assert image.read(0, 3000320) == bytes(model)
    image.close()
    assert libvhdi_read(child, base)[1] == bytes(model)


def test_differencing_create_refuses_another_size_or_format(tmp_path, qemu_img):
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=2M", str(tmp_path / "base.vhdx"), "3000001")
    with pytest.raises(EmuError, match="parent's size"):
        create_image(str(tmp_path / "c2.vhdx"), "vhdx", 4 * MiB, {}, backing="base.vhdx", backing_fmt="vhdx")
    with pytest.raises(EmuError, match="must be a VHDX"):
        create_image(str(tmp_path / "c3.vhdx"), "vhdx", None, {}, backing="base.vhdx", backing_fmt="qcow2")


# -- the metadata log ----------------------------------------------------------------------------------
class Crash(Exception):
    """The writer stops here (a power cut between two steps of a metadata update)."""


def crash_after_logging(monkeypatch, path: str, offset: int, data: bytes, *, before_entry: bool = False) -> None:
    """Write through emu but stop once the log entry is on disk (or just before), before the BAT is
    updated in place: what a crashed writer leaves behind."""
    from images.vhdx import log as vhdx_log

    original = vhdx_log.Log.write_entry

    def write_then_crash(self, entry: bytes) -> None:
        if not before_entry:
            original(self, entry)
            self.host.sync()
        raise Crash()

    image = open_image(path)
    monkeypatch.setattr(vhdx_log.Log, "write_entry", write_then_crash)
    with pytest.raises(Crash):
        image.write(offset, data)
    monkeypatch.setattr(vhdx_log.Log, "write_entry", original)
    image.host.close()


def header_log_guid(path: str) -> bytes:
    """The current header's log GUID (the header with the higher sequence number)."""
    with open(path, "rb") as f:
        headers = [struct.unpack("<8xQ32x16s", os.pread(f.fileno(), 64, offset)) for offset in L.HEADER_OFFSETS]
    return max(headers)[1]


def digest(path: str) -> bytes:
    return open(path, "rb").read()


def test_an_emu_dirty_log_is_refused_read_only_and_replayed_read_write(qemu_img, qemu_io, tmp_path, monkeypatch,
                                                                        capsys):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M"})
    drive = Drive(open_image(path), DriveOptions())
    drive.write(0, b"\x01" * 4096)
    drive.close()
    crash_after_logging(monkeypatch, path, 5 * MiB + 512, b"\x05" * 4096)
    assert header_log_guid(path) != bytes(16) and states(path)[5] == L.PAYLOAD_ZERO
    before = digest(path)
    with pytest.raises(InvalidImage) as info:
        open_image(path, read_only=True)
    assert info.value.field == "log_guid" and path in str(info.value) and "replay" in str(info.value)
    proc = emu_cli(capsys, "img", "info", path)
    assert proc.returncode == 1 and "log" in proc.stderr and "Traceback" not in proc.stderr
    assert digest(path) == before
    assert run(qemu_img, "check", path, check=False).returncode == 1        # qemu refuses it the same way
    image = open_image(path)
    assert image.replayed and image.read(5 * MiB, 8192) == bytes(512) + b"\x05" * 4096 + bytes(3584)
    assert image.read(0, 4096) == b"\x01" * 4096
    image.close()
    assert header_log_guid(path) == bytes(16) and states(path)[5] == L.PAYLOAD_FULLY_PRESENT
    assert run(qemu_img, "check", path).returncode == 0
    run(qemu_io, "-r", "-f", "vhdx", "-c", "read -P 5 5243392 4096", "-c", "read -P 1 0 4096", path)


def test_qemu_img_check_replays_a_log_emu_wrote(qemu_img, qemu_io, tmp_path, monkeypatch):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M"})
    crash_after_logging(monkeypatch, path, 3 * MiB - 512, b"\x06" * MiB)     # two blocks: one log entry
    out = json.loads(run(qemu_img, "check", "-r", "all", "--output=json", path).stdout)
    assert out["corruptions-fixed"] == 1 and header_log_guid(path) == bytes(16)
    assert states(path)[2:4] == [L.PAYLOAD_FULLY_PRESENT] * 2
    run(qemu_io, "-r", "-f", "vhdx", "-c", "read -P 0 2M 1048064", "-c", "read -P 6 3145216 1M",
        "-c", "read -P 0 4193792 512", path)
    assert emu_read(path)[3 * MiB - 512:4 * MiB - 512] == b"\x06" * MiB


def test_a_crash_before_the_log_entry_leaves_the_old_data(qemu_img, tmp_path, monkeypatch):
    path = str(tmp_path / "d.vhdx")
    create_image(path, "vhdx", 16 * MiB, {"block_size": "1M"})
    crash_after_logging(monkeypatch, path, 0, b"\x05" * 4096, before_entry=True)
    assert header_log_guid(path) != bytes(16)      # the GUID is set, but no entry carries it
    image = open_image(path, read_only=True)
    assert not image.replayed and image.read(0, 4096) == bytes(4096)
    image.close()
    assert run(qemu_img, "check", path).returncode == 0


# the first write of this sector fails; iotype=write, as qemu reads the BAT sector to build its log entry
BLKDEBUG_FAIL_BAT_WRITE = """[inject-error]
event = "pwritev"
iotype = "write"
sector = "{sector}"
once = "on"
"""


def test_emu_replays_a_log_qemu_left_dirty(qemu_img, qemu_io, tmp_path, monkeypatch, capsys):
    """qemu-io through blkdebug: the write of the BAT sector fails after qemu logged it, so qemu stops
    with the log GUID set and the entry on disk, and neither qemu nor emu will open it read-only.
    `emu img check -r all` then replays it as `qemu-img check -r all` does, to the same file."""
    (tmp_path / "q").mkdir()
    (tmp_path / "e").mkdir()
    path, config = str(tmp_path / "q" / "disk.vhdx"), str(tmp_path / "blkdebug.conf")
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", path, "16M")
    with open(config, "w") as f:
        f.write(BLKDEBUG_FAIL_BAT_WRITE.format(sector=2 * MiB // 512))       # the BAT is at 2 MiB
    proc = run(qemu_io, "-f", "vhdx", "-c", "write -P 5 4k 8k", f"blkdebug:{config}:{path}", check=False)
    assert proc.returncode != 0 and "Input/output error" in proc.stdout + proc.stderr
    assert header_log_guid(path) != bytes(16) and states(path)[0] == L.PAYLOAD_ZERO
    with pytest.raises(InvalidImage, match="replay"):
        open_image(path, read_only=True)
    shutil.copyfile(path, str(tmp_path / "e" / "disk.vhdx"))
    monkeypatch.chdir(tmp_path / "e")
    ours = emu_cli(capsys, "img", "check", "-r", "all", "--output=json", "disk.vhdx")
    monkeypatch.chdir(tmp_path / "q")
    theirs = run(qemu_img, "check", "-r", "all", "--output=json", "disk.vhdx")
    assert ours.returncode == 0 and json.loads(ours.stdout) == json.loads(theirs.stdout)
    assert json.loads(ours.stdout)["corruptions-fixed"] == 1
    for replayed in ("../e/disk.vhdx", "disk.vhdx"):
        assert header_log_guid(replayed) == bytes(16) and states(replayed)[0] == L.PAYLOAD_FULLY_PRESENT
        assert emu_read(replayed)[:16384] == bytes(4096) + b"\x05" * 8192 + bytes(4096)
    assert layout("../e/disk.vhdx")["bat"] == layout("disk.vhdx")["bat"]
    assert run(qemu_img, "check", "../e/disk.vhdx").returncode == 0


# -- the command line ----------------------------------------------------------------------------------
def test_info_and_check_print_what_qemu_img_prints(qemu_img, qemu_io, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", "q.vhdx", "16M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 1M 2M", "-c", "write -P 2 15M 512", "q.vhdx")
    for command in (["info"], ["check"]):
        ours = emu_cli(capsys, "img", *command, "--output=json", "q.vhdx")
        assert ours.returncode == 0
        ours = json.loads(ours.stdout)
        assert (without_reclaim(ours) if command == ["info"] else ours) == json.loads(
            run(qemu_img, *command, "--output=json", "q.vhdx").stdout)
    assert qemu_part(emu_cli(capsys, "img", "info", "q.vhdx").stdout) == run(qemu_img, "info", "q.vhdx").stdout


def test_map_reports_the_blocks_where_qemu_img_cannot(qemu_img, qemu_io, tmp_path, monkeypatch, capsys):
    """qemu 7.2's vhdx driver has no block-status function: `qemu-img map --output=json` calls the whole
    disk data without an offset and the human format refuses. emu maps the blocks."""
    monkeypatch.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "vhdx", "-o", "block_size=1M", "q.vhdx", "16M")
    run(qemu_io, "-f", "vhdx", "-c", "write -P 1 1M 2M", "q.vhdx")
    theirs = run(qemu_img, "map", "q.vhdx", check=False)
    assert theirs.returncode == 1 and "File contains external, encrypted or compressed clusters" in theirs.stderr
    assert json.loads(run(qemu_img, "map", "--output=json", "q.vhdx").stdout) == [
        {"start": 0, "length": 16 * MiB, "depth": 0, "present": True, "zero": False, "data": True}]
    ours = emu_cli(capsys, "img", "map", "--output=json", "q.vhdx")
    assert ours.returncode == 0 and json.loads(ours.stdout) == [
        {"start": 0, "length": MiB, "depth": 0, "present": True, "zero": True, "data": False},
        {"start": MiB, "length": 2 * MiB, "depth": 0, "present": True, "zero": False, "data": True, "offset": 8 * MiB},
        {"start": 3 * MiB, "length": 13 * MiB, "depth": 0, "present": True, "zero": True, "data": False}]
    human = emu_cli(capsys, "img", "map", "q.vhdx")
    assert human.returncode == 0 and human.stdout.splitlines()[1].split() == ["0x100000", "0x200000", "0x800000",
                                                                              "q.vhdx"]


def test_info_of_a_differencing_disk_names_its_parent(tmp_path, qemu_img, qemu_io, capsys):
    base, child, _ = make_chain(tmp_path, qemu_img, qemu_io)
    out = emu_cli(capsys, "img", "info", "--output=json", "--backing-chain", child)
    assert out.returncode == 0
    child_info, base_info = json.loads(out.stdout)
    assert child_info["backing-filename"] == "base.vhdx" and child_info["backing-filename-format"] == "vhdx"
    assert child_info["full-backing-filename"] == base and base_info["filename"] == base
    assert child_info["cluster-size"] == base_info["cluster-size"] == MiB
    check = emu_cli(capsys, "img", "check", "--output=json", child)
    assert check.returncode == 0 and json.loads(check.stdout)["check-errors"] == 0
