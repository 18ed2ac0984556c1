"""FAT32: the layout against dosfstools' mkfs.fat, Windows' cluster sizes, deletes that discard only on Linux with
-o discard, FITRIM on vfat, files read back."""

from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.errors import UsageError
from scenarios.guest.fat.fs import FatOptions, fat32_layout, sectors_per_cluster
from tests.scenarios.guest.test_ntfs import OPS, check_files, run_ops, scenario, steps

MiB = 1 << 20
GiB = 1 << 30


@pytest.mark.parametrize("size", [64 * MiB, 256 * MiB, 300 * MiB, GiB, 9 * GiB, 17 * GiB, 40 * GiB])
def test_layout_is_mkfs_fat_layout(tmp_path, size, mkfs_fat):
    """mkfs.fat rounds an image file's sectors to its guessed geometry's track: the layout is compared for the
    sectors it used."""
    image = tmp_path / "f.img"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([mkfs_fat, "-F", "32", str(image)], check=True, capture_output=True)
    with open(image, "rb") as f:
        boot = f.read(512)
    _bps, spc, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    (sectors,), (fat_sectors,), (root,) = (struct.unpack_from("<I", boot, at) for at in (32, 36, 44))
    layout = fat32_layout(sectors)
    assert (layout.spc, layout.reserved, layout.fat_sectors, fats, root) == (spc, reserved, fat_sectors, 2, 2)
    assert layout.clusters == (sectors - reserved - 2 * fat_sectors) // spc
    assert layout.data_start % spc == 0


def test_windows_cluster_sizes_follow_kb_140365():
    assert [sectors_per_cluster(size // 512, "windows") * 512 for size in
            (48 * MiB, 100 * MiB, 200 * MiB, GiB, 12 * GiB, 20 * GiB)] == [512, 1024, 2048, 4096, 8192, 16384]
    with pytest.raises(UsageError, match="32 GB"):
        sectors_per_cluster(40 * GiB // 512, "windows")
    with pytest.raises(UsageError, match="too few"):
        fat32_layout(60000)
    assert FatOptions.parse_mkfs("-F 32 -s 8 -n DATA").spc == 8
    with pytest.raises(UsageError, match="FAT32"):
        FatOptions.parse_mkfs("-F 16")


def deleted(player, mount: str = "") -> dict:
    return steps(player, ("mkfs", {}), ("mount", {"options": mount} if mount else {}),
                 ("write", {"file": "a", "size": 32 * MiB, "content": "random"}), ("sync", {}),
                 ("delete", {"file": "a"}), ("sync", {}))[4]


@pytest.mark.parametrize(("guest", "mount", "discards"), [
    ("linux-6.1", "discard", True), ("linux-6.1", "", False), ("windows-10", "", False), ("windows-7", "", False),
])
def test_deletes_discard_only_on_linux_with_discard(tmp_path, guest, mount, discards):
    player = scenario(tmp_path, guest, "ahci", fs="fat32", mkfs="/Q" if guest.startswith("windows") else "-F 32")
    try:
        record = deleted(player, mount)
        assert (record["discards"]["issued_bytes"] == 32 * MiB) is discards
        assert discards or record["requests"]["discard"] == 0
    finally:
        player.close()


def test_fitrim_on_vfat_trims_the_free_clusters(tmp_path):
    player = scenario(tmp_path, "linux-6.1", "virtio-blk", fs="fat32", mkfs="-F 32")
    try:
        deleted(player)
        done = steps(player, ("fstrim", {}))[0]
        fs = player.guest.fs
        assert done["output"]["trimmed_bytes"] == fs.free_blocks * fs.bs > 32 * MiB
    finally:
        player.close()


def test_windows_fat32_needs_a_quick_format_and_has_no_retrim(tmp_path):
    player = scenario(tmp_path, "windows-10", "ahci", fs="fat32", mkfs="")
    try:
        with pytest.raises(UsageError, match="/Q"):
            steps(player, ("mkfs", {}))
    finally:
        player.close()
    player = scenario(tmp_path / "q", "windows-10", "ahci", fs="fat32", mkfs="/Q")
    try:
        steps(player, ("mkfs", {}), ("mount", {}))
        assert player.guest.fs.bs == 2048                     # KB 140365: 128-256 MB volumes, 2 KB clusters
        with pytest.raises(UsageError, match="NTFS only"):
            steps(player, ("fstrim", {}))
    finally:
        player.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=8), guest=st.sampled_from(["linux-6.1", "windows-7"]))
def test_files_read_back_as_written(tmp_path_factory, ops, guest):
    directory = tmp_path_factory.mktemp("fat")
    player = scenario(directory, guest, size="64M", fs="fat32", mkfs="/Q" if guest.startswith("windows") else "")
    try:
        steps(player, ("mkfs", {}), ("mount", {}))
        run_ops(player, ops)
        check_files(player)
        steps(player, ("umount", {}), ("mount", {}))
        check_files(player)
    finally:
        player.close()
