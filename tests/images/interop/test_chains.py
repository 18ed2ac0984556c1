"""Chains on every format with a parent link: external snapshots (create, revert, delete), commit,
rebase, stream, compaction and VirtualBox immutable images, checked against qemu-img where it can
follow the chain (qcow2, vmdk) and against emu's own guest view everywhere."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from emu.block import Drive, DriveOptions
from emu.cli import main as emu_main
from emu.errors import BlockError, InvalidImage
from images import create_image, open_image
from images.inspect import map_extents
from tests.conftest import run
from tests.support import emu_read

MiB = 1 << 20
SIZE = 8 * MiB
# format -> (file extension, create options that keep the test small)
FORMATS = {"qcow2": ("qcow2", {}), "vdi": ("vdi", {}), "vpc": ("vhd", {"force_size": "on"}),
           "vhdx": ("vhdx", {"block_size": str(MiB)}), "vmdk": ("vmdk", {})}
QEMU_FOLLOWS_CHAINS = ("qcow2", "vmdk")   # qemu cannot open differencing VDI, VHD and VHDX images


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write(path: str, offset: int, data: bytes) -> None:
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    try:
        assert drive.write(offset, data).ok
        assert drive.flush().ok
    finally:
        drive.close()


def emu(*args: str) -> int:
    return emu_main(list(args))


@pytest.fixture(params=list(FORMATS))
def disk(request, tmp_path):
    """A disk of each format holding data at odd places; returns (path, fmt, guest view)."""
    fmt = request.param
    ext, options = FORMATS[fmt]
    path = str(tmp_path / f"disk.{ext}")
    create_image(path, fmt, SIZE, options)
    model = bytearray(SIZE)
    for offset, length, byte in ((0, 3 * MiB, 1), (5 * MiB + 4096, 70000, 2), (SIZE - 512, 512, 3)):
        write(path, offset, bytes([byte]) * length)
        model[offset:offset + length] = bytes([byte]) * length
    return path, fmt, model


def qemu_view(qemu_img, path: str, fmt: str, tmp_path) -> bytes:
    out = str(tmp_path / "view.raw")
    run(qemu_img, "convert", "-f", fmt, "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()


# -- snapshots -------------------------------------------------------------------------------------
def test_a_snapshot_copies_nothing_and_freezes_the_old_layer(disk, qemu_img, tmp_path):
    path, fmt, model = disk
    before = digest(path)
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    snapshot = path.replace("disk.", "disk@s1.")
    assert digest(snapshot) == before                    # the old active file, renamed, untouched
    assert os.stat(path).st_blocks * 512 < 3 * MiB       # the new active layer holds no data
    assert emu_read(path) == bytes(model)
    write(path, MiB, b"\x09" * 4096)                     # writes go to the active layer only
    model[MiB:MiB + 4096] = b"\x09" * 4096
    assert digest(snapshot) == before
    assert emu_read(path) == bytes(model)
    image = open_image(path, read_only=True)
    assert [os.path.basename(layer.path) for layer in image.chain()] == [os.path.basename(path),
                                                                         os.path.basename(snapshot)]
    image.close()
    if fmt in QEMU_FOLLOWS_CHAINS:
        assert qemu_view(qemu_img, path, fmt, tmp_path) == bytes(model)
        run(qemu_img, "check", "-f", fmt, path)


def test_revert_discards_the_active_layer_and_starts_an_empty_one(disk):
    path, fmt, model = disk
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    write(path, 0, b"\x07" * (2 * MiB))
    assert emu_read(path)[:2 * MiB] == b"\x07" * (2 * MiB)
    assert emu("img", "snapshot", "-a", "s1", path) == 0
    assert emu_read(path) == bytes(model)
    assert open_image(path, read_only=True).backing.path.endswith(os.path.basename(path).replace("disk.", "disk@s1."))


def test_delete_merges_the_one_child_into_the_snapshot(disk, qemu_img, tmp_path):
    path, fmt, model = disk
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    write(path, 2 * MiB, b"\x05" * MiB)
    model[2 * MiB:3 * MiB] = b"\x05" * MiB
    s2_view = bytes(model)
    assert emu("img", "snapshot", "-c", "s2", path) == 0
    write(path, 6 * MiB, b"\x06" * 4096)
    model[6 * MiB:6 * MiB + 4096] = b"\x06" * 4096
    s1, s2 = path.replace("disk.", "disk@s1."), path.replace("disk.", "disk@s2.")
    assert emu("img", "snapshot", "-d", "s1", path) == 0
    assert not os.path.exists(s1)
    assert emu_read(s2) == s2_view                            # s2 now holds s1's data and its own
    assert open_image(s2, read_only=True, open_backing=False).backing_name is None
    assert emu_read(path) == bytes(model)                     # the active layer, relinked, reads the same
    if fmt in QEMU_FOLLOWS_CHAINS:
        assert qemu_view(qemu_img, path, fmt, tmp_path) == bytes(model)
        run(qemu_img, "check", "-f", fmt, s2)
    assert emu("img", "snapshot", "-d", "s2", path) == 0   # merging the active layer into the last one
    assert not os.path.exists(s2) and emu_read(path) == bytes(model)


def test_snapshot_trees_branch_and_a_branch_point_cannot_be_deleted(disk, capsys):
    path, fmt, model = disk
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    assert emu("img", "snapshot", "-c", "s2", path) == 0
    assert emu("img", "snapshot", "-a", "s1", path) == 0   # s1 now has two children: s2 and the active
    capsys.readouterr()
    assert emu("img", "snapshot", "-d", "s1", path) == 1
    assert "2 children" in capsys.readouterr().err
    assert emu("img", "snapshot", "-l", "--output=json", path) == 0
    tree = json.loads(capsys.readouterr().out)["tree"]
    assert tree["snapshot"] == "s1"
    assert sorted((str(child["snapshot"]), child["active"]) for child in tree["children"]) == [
        ("None", True), ("s2", False)]
    assert emu("img", "snapshot", "-l", path) == 0
    listing = capsys.readouterr().out
    assert "(active)" in listing and "├── " in listing and "└── " in listing


def test_snapshot_names_and_missing_snapshots_are_clear_errors(disk, capsys):
    path, fmt, model = disk
    for args in (["-c", "a/b"], ["-a", "nope"], ["-d", "nope"], ["-c", ".hidden"]):
        assert emu("img", "snapshot", *args, path) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    assert emu("img", "snapshot", "-c", "s1", path) == 1
    assert "already exists" in capsys.readouterr().err


def test_a_raw_disk_gets_a_qcow2_active_layer(tmp_path, qemu_img):
    path = str(tmp_path / "disk.img")
    create_image(path, "raw", SIZE)
    write(path, 0, b"\x01" * MiB)
    assert emu("img", "snapshot", "-c", "s1", path) == 0
    info = json.loads(run(qemu_img, "info", "--output=json", path).stdout)
    assert (info["format"], info["backing-filename"], info["backing-filename-format"]) == ("qcow2", "disk@s1.img",
                                                                                           "raw")
    assert emu_read(path)[:MiB] == b"\x01" * MiB


# -- commit ----------------------------------------------------------------------------------------
def three_deep(tmp_path, fmt: str):
    """base <- mid <- top with data at every depth, each layer written before its child is made
    (a parent written later no longer matches a child linked by identity); returns paths and the
    top's guest view."""
    ext, options = FORMATS[fmt]
    paths = [str(tmp_path / f"{name}.{ext}") for name in ("base", "mid", "top")]
    model = bytearray(SIZE)
    writes = [[(0, 4 * MiB, 1)], [(MiB + 512, 3 * MiB, 2)], [(3 * MiB - 4096, 8192, 3), (7 * MiB, MiB, 4)]]
    for depth, path in enumerate(paths):
        parent = {"backing": os.path.basename(paths[depth - 1]), "backing_fmt": fmt} if depth else {}
        create_image(path, fmt, SIZE, options, **parent)
        for offset, length, byte in writes[depth]:
            write(path, offset, bytes([byte]) * length)
            model[offset:offset + length] = bytes([byte]) * length
    return paths, model


@pytest.mark.parametrize("fmt", QEMU_FOLLOWS_CHAINS)
def test_commit_matches_qemu_img_commit(fmt, qemu_img, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    (paths, model), (qpaths, _) = three_deep(ours, fmt), three_deep(theirs, fmt)
    assert emu("img", "commit", "-q", paths[2]) == 0
    run(qemu_img, "commit", "-q", "-f", fmt, qpaths[2])
    assert emu_read(paths[2]) == bytes(model) == qemu_view(qemu_img, paths[2], fmt, tmp_path)
    run(qemu_img, "compare", "-f", fmt, "-F", fmt, paths[1], qpaths[1])
    ours_map = json.loads(run(qemu_img, "map", "--output=json", "-f", fmt, paths[2]).stdout)
    theirs_map = json.loads(run(qemu_img, "map", "--output=json", "-f", fmt, qpaths[2]).stdout)
    assert [(e["start"], e["length"], e["depth"], e["data"]) for e in ours_map] == \
        [(e["start"], e["length"], e["depth"], e["data"]) for e in theirs_map]
    run(qemu_img, "check", "-f", fmt, paths[1])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_commit_into_a_deeper_base_keeps_the_top(fmt, tmp_path):
    paths, model = three_deep(tmp_path, fmt)
    base_before = emu_read(paths[0])
    assert emu("img", "commit", "-q", "-b", paths[0], paths[2]) == 0
    assert emu_read(paths[2]) == bytes(model)              # -b implies -d: the top keeps its data
    base = open_image(paths[0], read_only=True)
    assert base.read(0, SIZE) == bytes(model)          # everything above the base is in it now
    base.close()
    assert base_before != bytes(model)


def test_commit_costs_what_the_child_holds(tmp_path, capsys):
    path = str(tmp_path / "base.qcow2")
    create_image(path, "qcow2", 64 * MiB)
    write(path, 0, b"\x01" * (32 * MiB))
    child = str(tmp_path / "child.qcow2")
    create_image(child, "qcow2", 64 * MiB, backing="base.qcow2", backing_fmt="qcow2")
    write(child, 4096, b"\x02" * 4096)
    capsys.readouterr()
    assert emu("img", "commit", child) == 0
    out = capsys.readouterr().out
    assert out.startswith("Image committed.\n") and "64 KiB of data" in out   # one cluster, not 32 MiB


# -- rebase and stream -----------------------------------------------------------------------------
def test_safe_rebase_matches_qemu_img_rebase(qemu_img, tmp_path):
    for d in ("ours", "theirs"):
        (tmp_path / d).mkdir()
    (paths, model), (qpaths, _) = three_deep(tmp_path / "ours", "qcow2"), three_deep(tmp_path / "theirs", "qcow2")
    for dest in (paths, qpaths):
        other = os.path.join(os.path.dirname(dest[0]), "other.qcow2")
        create_image(other, "qcow2", SIZE)
        write(other, 0, b"\x08" * MiB)
    assert emu("img", "rebase", "-b", "other.qcow2", "-F", "qcow2", paths[2]) == 0
    run(qemu_img, "rebase", "-f", "qcow2", "-b", "other.qcow2", "-F", "qcow2", qpaths[2])
    assert emu_read(paths[2]) == bytes(model) == qemu_view(qemu_img, qpaths[2], "qcow2", tmp_path)
    info = json.loads(run(qemu_img, "info", "--output=json", paths[2]).stdout)
    assert info["backing-filename"] == "other.qcow2"
    ours_map = json.loads(run(qemu_img, "map", "--output=json", paths[2]).stdout)
    theirs_map = json.loads(run(qemu_img, "map", "--output=json", qpaths[2]).stdout)
    assert [(e["start"], e["length"], e["depth"]) for e in ours_map] == \
        [(e["start"], e["length"], e["depth"]) for e in theirs_map]
    run(qemu_img, "check", paths[2])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_unsafe_rebase_only_rewrites_the_link(fmt, tmp_path):
    paths, model = three_deep(tmp_path, fmt)
    assert emu("img", "rebase", "-u", "-b", os.path.basename(paths[0]), "-F", fmt, paths[2]) == 0
    image = open_image(paths[2], read_only=True)
    assert image.backing.path.endswith(os.path.basename(paths[0]))
    expected = bytearray(emu_read(paths[0]))
    for extent in map_extents(image):
        if extent.depth == 0 and extent.present:
            expected[extent.start:extent.start + extent.length] = image.read(extent.start, extent.length)
    assert image.read(0, SIZE) == bytes(expected)        # the mid layer's data no longer shows
    image.close()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_stream_pulls_the_chain_into_the_image(fmt, qemu_img, tmp_path):
    paths, model = three_deep(tmp_path, fmt)
    assert emu("img", "stream", "-q", "-b", paths[0], paths[2]) == 0
    image = open_image(paths[2], read_only=True)
    assert [os.path.basename(layer.path) for layer in image.chain()] == [os.path.basename(p) for p in
                                                                         (paths[2], paths[0])]
    assert image.read(0, SIZE) == bytes(model)
    image.close()
    assert emu("img", "stream", "-q", paths[2]) == 0
    image = open_image(paths[2], read_only=True)
    assert image.backing is None and image.read(0, SIZE) == bytes(model)
    image.close()
    os.remove(paths[0])                                   # standalone now: the base is not needed
    assert emu_read(paths[2]) == bytes(model)
    if fmt != "vpc":   # qemu-img probes a dynamic VHD fine; keep one reader for all
        assert qemu_view(qemu_img, paths[2], fmt, tmp_path) == bytes(model)


# -- compaction ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_compaction_gives_back_zero_blocks_and_keeps_the_view(fmt, qemu_img, tmp_path, capsys):
    ext, options = FORMATS[fmt]
    path = str(tmp_path / f"disk.{ext}")
    create_image(path, fmt, 16 * MiB, options)
    write(path, 0, b"\x01" * (8 * MiB))
    write(path, 0, bytes(6 * MiB))                        # the guest zeroed most of what it wrote
    before = os.stat(path).st_blocks * 512
    expected = emu_read(path)
    capsys.readouterr()
    assert emu("img", "compact", "--output=json", path) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["actual-size-before"] == before
    assert report["actual-size-after"] == os.stat(path).st_blocks * 512
    assert report["actual-size-after"] <= before - 5 * MiB
    assert emu_read(path) == expected
    if fmt == "vdi":
        assert report["file-size-after"] < report["file-size-before"] and report["blocks-freed"] == 6
    if fmt != "vpc":   # qemu-img check has no vpc support
        run(qemu_img, "check", "-f", fmt, path)
    assert qemu_view(qemu_img, path, fmt, tmp_path) == expected


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_compacting_a_parent_keeps_its_children_linked(fmt, tmp_path):
    ext, options = FORMATS[fmt]
    base, mid, top = (str(tmp_path / f"{name}.{ext}") for name in ("base", "mid", "top"))
    create_image(base, fmt, SIZE, options)
    write(base, 0, b"\x01" * (4 * MiB))
    create_image(mid, fmt, SIZE, options, backing="base." + ext, backing_fmt=fmt)
    write(mid, 0, bytes(2 * MiB))                  # zeros over the base's data must stay zeros
    write(mid, 6 * MiB, bytes(MiB))                # zeros over zeros may go
    write(mid, 3 * MiB, b"\x02" * 4096)
    create_image(top, fmt, SIZE, options, backing="mid." + ext, backing_fmt=fmt)
    write(top, 5 * MiB, b"\x03" * 4096)
    mid_view, top_view = emu_read(mid), emu_read(top)
    assert emu("img", "compact", mid) == 0
    assert emu_read(mid) == mid_view
    assert emu_read(top) == top_view                   # the top still opens: its link was renewed


def test_fixed_images_have_nothing_to_compact(tmp_path, capsys):
    path = str(tmp_path / "f.vhd")
    create_image(path, "vpc", 4 * MiB, {"subformat": "fixed"})
    assert emu("img", "compact", path) == 1
    assert "fully allocated" in capsys.readouterr().err


# -- immutable images ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["vdi", "vmdk", "vpc"])
def test_immutable_base_child_is_reset_at_power_on_unless_auto_reset_is_off(fmt, tmp_path, capsys):
    ext, options = FORMATS[fmt]
    base = str(tmp_path / f"base.{ext}")
    child = str(tmp_path / f"vm1.{ext}")
    create_image(base, fmt, SIZE, options)
    write(base, 0, b"\x01" * MiB)
    frozen = digest(base)
    assert emu("img", "immutable", base, child) == 0
    assert "created" in capsys.readouterr().out
    write(child, 0, b"\x02" * 4096)
    assert emu("img", "immutable", "--no-auto-reset", base, child) == 0
    assert "kept" in capsys.readouterr().out
    assert emu_read(child)[:4096] == b"\x02" * 4096
    assert emu("img", "immutable", base, child) == 0
    assert "reset" in capsys.readouterr().out
    assert emu_read(child)[:MiB] == b"\x01" * MiB
    assert digest(base) == frozen
    assert not os.stat(base).st_mode & 0o222                 # write-protected, and emu honours it as root
    assert emu("io", "-c", "write 0 4k", base) == 1
    assert "write-protected" in capsys.readouterr().err
    other = str(tmp_path / f"other.{ext}")
    create_image(other, fmt, SIZE, options)
    assert emu("img", "immutable", base, other) == 1       # not a child of the base: never reset
    assert "not a differencing image" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_backing_loops_are_refused(fmt, tmp_path, capsys):
    ext, options = FORMATS[fmt]
    base, child = str(tmp_path / f"base.{ext}"), str(tmp_path / f"child.{ext}")
    create_image(base, fmt, SIZE, options)
    create_image(child, fmt, SIZE, options, backing=f"base.{ext}", backing_fmt=fmt)
    assert emu("img", "rebase", "-u", "-b", f"child.{ext}", "-F", fmt, base) == 1
    assert "loop" in capsys.readouterr().err
    image = open_image(base)                       # made behind emu's back: the link is written anyway
    parent = open_image(child, read_only=True, open_backing=False)
    image.set_backing(parent, f"child.{ext}", fmt)
    image.close()
    with pytest.raises(InvalidImage, match="loop"):
        open_image(child, read_only=True)
    assert emu("img", "info", "--backing-chain", child) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loop" in err


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_missing_parent_is_a_clear_error_naming_it(fmt, tmp_path, capsys):
    ext, options = FORMATS[fmt]
    base, child = str(tmp_path / f"base.{ext}"), str(tmp_path / f"child.{ext}")
    create_image(base, fmt, SIZE, options)
    create_image(child, fmt, SIZE, options, backing=f"base.{ext}", backing_fmt=fmt)
    os.remove(base)
    assert emu("img", "info", child) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"base.{ext}" in err and "not found" in err


@pytest.mark.parametrize("fmt,size,limit", [("vpc", "2041G", "2040 GiB"), ("vhdx", "65T", "64TB"),
                                            ("vdi", "5000T", "max supported"), ("vmdk", "2P", "too large"),
                                            ("qcow2", "70000T", "too large")])
def test_sizes_over_the_format_limit_are_clear_errors(fmt, size, limit, tmp_path, capsys):
    path = str(tmp_path / f"big.{fmt}")
    assert emu("img", "create", "-q", "-f", fmt, path, size) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and limit in err
    assert not os.path.exists(path)


def test_drive_mapped_agrees_with_qemu_img_map_through_a_chain(qemu_img, qemu_io, tmp_path):
    """Drive.mapped (what GET LBA STATUS reports) is qemu-img map's "data" column, run for run."""
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", base, "4M")
    run(qemu_io, "-f", "qcow2", "-c", "write 0 192k", "-c", "write 2M 64k", base)
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    run(qemu_io, "-f", "qcow2", "-c", "write 1M 128k", "-c", "write -z 0 64k", "-c", "discard 2M 64k", top)
    want = [(e["start"], e["length"], e["data"])
            for e in json.loads(run(qemu_img, "map", "--output=json", "-f", "qcow2", top).stdout)]
    drive = Drive(open_image(top, "qcow2", read_only=True))
    got, offset = [], 0
    while offset < drive.capacity:
        data, length = drive.mapped(offset, drive.capacity - offset)
        if got and got[-1][2] == data and got[-1][0] + got[-1][1] == offset:
            got[-1] = (got[-1][0], got[-1][1] + length, data)
        else:
            got.append((offset, length, data))
        offset += length
    merged = []
    for start, length, data in want:
        if merged and merged[-1][2] == data:
            merged[-1] = (merged[-1][0], merged[-1][1] + length, data)
        else:
            merged.append((start, length, data))
    assert got == merged and len(got) >= 4, got
    assert drive.mapped(0, 1 << 20) == (False, 64 << 10)            # zeroed in the top layer
    assert drive.mapped(64 << 10, 64 << 10) == (True, 64 << 10)      # the base's data, clipped to the ask
    with pytest.raises(BlockError):
        drive.mapped(4 << 20, 512)
    drive.close()
