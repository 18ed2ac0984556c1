"""End to end through the SCSI disk: UNMAP and WRITE SAME(UNMAP) give host space back on raw and qcow2 with
discard=unmap and not with discard=ignore; GET LBA STATUS agrees with `qemu-img map` (the oracle)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from controllers.scsi.disk import ScsiDisk
from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.profiles.scsi import scsi_disk_config
from tests.conftest import run

MiB = 1 << 20
SIZE = 16 * MiB
BLOCKS = SIZE // 512
DATA_BLOCKS = 8 * MiB // 512


def attach(path, fmt, discard, profile="qemu-7.2"):
    disk = ScsiDisk(Drive(open_image(path, fmt), DriveOptions(discard=discard)), scsi_disk_config(profile, BLOCKS))
    disk.unit_attention = None
    return disk


def write_data(disk):
    chunk = 4096 // 512 * 256                   # 1 MiB per WRITE(16)
    for lba in range(0, DATA_BLOCKS, chunk):
        res = disk.execute(struct.pack(">BBQIBB", 0x8A, 0, lba, chunk, 0, 0), b"\xa5" * chunk * 512)
        assert res.ok
    assert disk.drive.flush().ok


def unmap(disk):
    descs = [(lba, 2048) for lba in range(0, DATA_BLOCKS, 2048)]
    body = struct.pack(">HH4x", 6 + 16 * len(descs), 16 * len(descs)) + b"".join(
        struct.pack(">QI4x", lba, n) for lba, n in descs)
    return disk.execute(bytes([0x42, 0, 0, 0, 0, 0, 0]) + len(body).to_bytes(2, "big") + b"\0", body)


def write_same_unmap(disk):
    return disk.execute(struct.pack(">BBQIBB", 0x93, 0x08, 0, DATA_BLOCKS, 0, 0), bytes(512))


def host_bytes(path):
    return os.stat(path).st_blocks * 512


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("command", [unmap, write_same_unmap])
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_reclaim_host_space(tmp_path, qemu_img, fmt, command, discard):
    path = str(tmp_path / f"disk.{fmt}")
    create_image(path, fmt, SIZE)
    disk = attach(path, fmt, discard)
    write_data(disk)
    full = host_bytes(path)
    assert full >= 8 * MiB
    assert command(disk).ok
    zeroed = disk.drive.read(0, 8 * MiB).data == bytes(8 * MiB)
    assert zeroed == (command is write_same_unmap or discard == "unmap")   # ignored UNMAP keeps the data
    disk.drive.close()
    after = host_bytes(path)
    if discard == "unmap":
        assert after <= full - 8 * MiB + 64 * 1024, (full, after)
    else:
        assert after >= full, (full, after)     # succeeds, and no host space comes back
    run(qemu_img, "check", "-f", fmt, path, check=fmt == "qcow2")


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_get_lba_status_agrees_with_qemu_img_map(tmp_path, qemu_img, fmt):
    path = str(tmp_path / f"disk.{fmt}")
    create_image(path, fmt, SIZE)
    disk = attach(path, fmt, "unmap", "strict")
    for lba, n in ((256, 512), (4096, 128), (9000, 1000), (BLOCKS - 64, 64)):
        assert disk.execute(struct.pack(">BBQIBB", 0x8A, 0, lba, n, 0, 0), b"\x5a" * n * 512).ok
    body = struct.pack(">HH4xQI4x", 22, 16, 4096, 128)
    assert disk.execute(bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]), body).ok
    extents, lba = [], 0
    while lba < BLOCKS:
        res = disk.execute(struct.pack(">BBQIBB", 0x9E, 0x12, lba, 8 + 16 * 64, 0, 0))
        assert res.ok
        data = res.data_in
        for off in range(8, 4 + int.from_bytes(data[:4], "big"), 16):
            start, count, status = struct.unpack(">QIB", data[off:off + 13])
            assert start == lba
            extents.append((start * 512, count * 512, status == 0))
            lba += count
    disk.drive.close()
    oracle = json.loads(run(qemu_img, "map", "-f", fmt, "--output=json", path).stdout)
    merged = []
    for e in oracle:
        if merged and merged[-1][2] == e["data"] and merged[-1][0] + merged[-1][1] == e["start"]:
            merged[-1] = (merged[-1][0], merged[-1][1] + e["length"], e["data"])
        else:
            merged.append((e["start"], e["length"], e["data"]))
    assert extents == merged
