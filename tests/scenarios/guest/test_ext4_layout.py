"""The ext4 model lays a file system out exactly where the real mke2fs 1.47 does (checked with dumpe2fs and
debugfs on images the real mkfs.ext4 made, over sizes that cross every size class and flex-group boundary)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from scenarios.guest.ext4.layout import Layout
from tests.conftest import run

MiB = 1 << 20
SIZES = ["8M", "32M", "64M", "200M", "300M", "511M", "512M", "1G", "2G", "3000M", "5000M", "16G", "64G", "130G"]


def real_layout(e2fsprogs, tmp_path, size: str) -> dict:
    """mkfs.ext4 with the defaults on a sparse file (no mke2fs.conf, as in the calibration guest), then what
    dumpe2fs and debugfs say about it."""
    path = str(tmp_path / f"fs-{size}.raw")
    with open(path, "wb") as f:
        f.truncate(parse(size))
    env = dict(os.environ, MKE2FS_CONFIG=str(tmp_path / "none"))
    subprocess.run([e2fsprogs["mke2fs"], "-q", "-F", "-t", "ext4", path], check=True, env=env, capture_output=True)
    dump = run(e2fsprogs["dumpe2fs"], path).stdout
    header = dict(re.findall(r"^([A-Za-z ]+):\s+(.*)$", dump.split("\n\n")[0], re.M))
    groups = []
    for block in re.findall(r"^Group \d+:.*?(?=^Group |\Z)", dump, re.M | re.S):
        groups.append({
            "super": "superblock at" in block,
            "block_bitmap": int(re.search(r"Block bitmap at (\d+)", block).group(1)),
            "inode_bitmap": int(re.search(r"Inode bitmap at (\d+)", block).group(1)),
            "inode_table": int(re.search(r"Inode table at (\d+)", block).group(1)),
            "block_uninit": "BLOCK_UNINIT" in block.splitlines()[0],
        })

    def extents(ino: int) -> list[tuple[int, int]]:
        out = run(e2fsprogs["debugfs"], "-R", f"ex <{ino}>", path).stdout
        found = []
        for line in out.splitlines()[1:]:
            m = re.search(r"(\d+)\s*-\s*(\d+)\s+(\d+)\s*-\s*(\d+)\s+(\d+)\s*$", line)
            if m:
                found.append((int(m.group(3)), int(m.group(5))))
        return found

    def dind(ino: int) -> int:
        out = run(e2fsprogs["debugfs"], "-R", f"stat <{ino}>", path).stdout
        return int(re.search(r"\(DIND\):(\d+)", out).group(1))

    return {"header": header, "groups": groups, "root": extents(2), "lpf": extents(11), "journal": extents(8),
            "resize": dind(7)}


def parse(size: str) -> int:
    return int(size[:-1]) * {"M": MiB, "G": 1 << 30}[size[-1]]


@pytest.mark.parametrize("size", SIZES)
def test_the_layout_is_the_real_mke2fs_layout(e2fsprogs, tmp_path, size):
    real = real_layout(e2fsprogs, tmp_path, size)
    model = Layout(parse(size))
    h = real["header"]
    assert (model.block_size, model.blocks, model.groups_count) == (
        int(h["Block size"]), int(h["Block count"]), len(real["groups"]))
    assert (model.inodes_per_group, model.inode_table_blocks, model.reserved_gdt) == (
        int(h["Inodes per group"]), int(h["Inode blocks per group"]), int(h.get("Reserved GDT blocks", 0)))
    assert model.first_data_block == int(h["First block"])
    assert [(g.super, g.block_bitmap, g.inode_bitmap, g.inode_table) for g in model.groups] == [
        (g["super"], g["block_bitmap"], g["inode_bitmap"], g["inode_table"]) for g in real["groups"]]
    assert sorted(model.block_uninit) == [i for i, g in enumerate(real["groups"]) if g["block_uninit"]]
    assert [(model.root_dir, 1)] == real["root"]
    assert model.lost_found == [b for start, n in real["lpf"] for b in range(start, start + n)]
    assert model.resize_dind == real["resize"]
    assert model.journal == real["journal"]
    assert model.free_blocks == int(h["Free blocks"])
