"""NTFS on a Windows guest: the layout against ntfs-3g's mkntfs, what a delete tells the disk per Windows version
and controller (through the Player, on real images), retrim, sdelete -z with detect-zeroes, files read back."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.errors import UsageError
from scenarios.guest.ntfs.fs import FormatOptions, NtfsLayout, ntfs_layout
from scenarios.play import Player
from scenarios.run import load_scenario
from scenarios.spec import Step

MiB = 1 << 20


def scenario(tmp_path, guest: str, controller: str = "ahci", *, size: str = "256M", fmt: str = "qcow2",
             discard: str = "unmap", detect_zeroes: str = "off", fs: str = "ntfs", mkfs: str = "/Q") -> Player:
    """A Player on a scenario of one step (the test drives its own steps)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\ntitle = "t"\n[machine]\nguest = "{guest}"\ncontroller = "{controller}"\n'
                    f'[disk]\nsize = "{size}"\nformat = "{fmt}"\n'
                    f'[drive]\ndiscard = "{discard}"\ndetect_zeroes = "{detect_zeroes}"\n'
                    f'[fs]\ntype = "{fs}"\nmkfs = "{mkfs}"\n[[steps]]\ndo = "mkfs"\n')
    return Player(load_scenario(str(path)), str(tmp_path / "run"))


def steps(player: Player, *todo: tuple) -> list[dict]:
    start = len(player.steps)
    return [player.step(start + i, Step(do, None, args)) for i, (do, args) in enumerate(todo)]


def write_delete(player: Player, size: int = 64 * MiB) -> list[dict]:
    """format, online, a file written and synced, deleted and synced: the four records after the format."""
    return steps(player, ("mkfs", {}), ("mount", {}),
                 ("write", {"file": "a", "size": size, "content": "random"}), ("sync", {}),
                 ("delete", {"file": "a"}), ("sync", {}))[2:]


# -- layout ---------------------------------------------------------------------------------------------------------

def _ntfsinfo(tools, image, *args) -> str:
    return subprocess.run([tools["ntfsinfo"], *args, str(image)], capture_output=True, text=True, check=True).stdout


def _runs(tools, image, inode: int) -> list[tuple[int, int]]:
    text = _ntfsinfo(tools, image, "-v", "-i", str(inode))
    return [(int(lcn, 16), int(n, 16)) for lcn, n in
            re.findall(r"^\t\t\t0x[0-9a-f]+\t\t(0x[0-9a-f]+)\t\t(0x[0-9a-f]+)", text, re.M)]


@pytest.mark.parametrize("size", [64 * MiB, 255 * MiB, 1 << 30, 3 << 30])
def test_layout_is_mkntfs_layout(tmp_path, size, ntfs3g):
    image = tmp_path / "n.img"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([ntfs3g["mkntfs"], "-F", "-Q", "-q", "-c", "4096", str(image)], check=True, capture_output=True)
    info = _ntfsinfo(ntfs3g, image, "-m")

    def field(name: str) -> int:
        return int(re.search(rf"{re.escape(name)}: (\d+)", info).group(1))

    layout = ntfs_layout(size)
    assert layout.clusters == field("Volume Size in Clusters")
    assert layout.mft_lcn == field("LCN of Data Attribute for FILE_MFT")
    assert layout.mirr_lcn == field("LCN of Data Attribute for File_MFTMirr")
    assert layout.zone_end == field("MFT Zone End")
    used = sum(n for _, n, _ in layout.system_runs())
    assert layout.clusters - used == field("Free Clusters")
    assert _runs(ntfs3g, image, 0)[0] == (layout.mft_lcn, layout.mft_clusters)
    assert _runs(ntfs3g, image, 2) == [(layout.log_lcn, layout.log_clusters)]
    assert _runs(ntfs3g, image, 6) == [(layout.bitmap_lcn, layout.bitmap_clusters)]
    assert _runs(ntfs3g, image, 9) == [(layout.secure_lcn, 65)]
    assert _runs(ntfs3g, image, 10) == [(layout.upcase_lcn, 32)]


def test_layout_limits_and_format_options():
    assert NtfsLayout(262143).zone_end == 4 + 262143 // 8          # the MFT zone: an eighth of the volume
    with pytest.raises(UsageError, match="4096"):
        ntfs_layout(1 << 30, 65536)
    with pytest.raises(UsageError, match="too small"):
        ntfs_layout(8 * MiB)
    assert FormatOptions.parse("/FS:NTFS /Q /A:4K /V:sys /Y") == FormatOptions("ntfs", True, 4096)
    with pytest.raises(UsageError, match="/P:2"):
        FormatOptions.parse("/Q /P:2")


# -- delete notifications, per Windows version and controller -------------------------------------------------------

@pytest.mark.parametrize(("guest", "controller", "notifies"), [
    ("windows-xp", "ahci", False), ("windows-xp", "ide", False),
    ("windows-7", "ahci", True), ("windows-7", "ide", True), ("windows-7", "virtio-scsi", False),
    ("windows-7", "virtio-blk", False),
    ("windows-10", "virtio-scsi", True), ("windows-10", "virtio-blk", True), ("windows-8", "ahci", True),
    ("windows-2012", "virtio-scsi", True),
])
def test_a_delete_reaches_the_disk_only_where_windows_notifies(tmp_path, guest, controller, notifies):
    player = scenario(tmp_path, guest, controller)
    try:
        _write, written, delete, synced = write_delete(player)
        host_written = written["layers"]["disk.qcow2"]
        host_deleted = synced["layers"]["disk.qcow2"]
        if notifies:
            assert delete["discards"]["issued_bytes"] == 64 * MiB == delete["discards"]["passed_bytes"]
            assert host_deleted < host_written - 60 * MiB
        else:
            assert delete["discards"] == {"issued_bytes": 0, "passed_bytes": 0, "dropped_bytes": 0}
            assert delete["requests"]["discard"] == 0
            assert host_deleted >= host_written            # the image never shrinks
        assert synced["guest_used_bytes"] < written["guest_used_bytes"] - 60 * MiB
    finally:
        player.close()


def test_windows_7_quick_format_trims_the_volume_and_xp_does_not(tmp_path):
    seven = scenario(tmp_path / "7", "windows-7")
    xp = scenario(tmp_path / "xp", "windows-xp")
    try:
        assert steps(seven, ("mkfs", {}))[0]["discards"]["issued_bytes"] == 256 * MiB
        assert steps(xp, ("mkfs", {}))[0]["discards"]["issued_bytes"] == 0
    finally:
        seven.close()
        xp.close()


def test_retrim_needs_windows_8_and_trims_all_free_space(tmp_path):
    seven = scenario(tmp_path / "7", "windows-7")
    ten = scenario(tmp_path / "10", "windows-10", "virtio-scsi", discard="ignore")
    try:
        steps(seven, ("mkfs", {}), ("mount", {}))
        with pytest.raises(UsageError, match="retrim needs Windows 8 or later"):
            steps(seven, ("fstrim", {}))
        steps(ten, ("mkfs", {}), ("mount", {}), ("write", {"file": "a", "size": 8 * MiB, "content": "random"}),
              ("sync", {}))
        done = steps(ten, ("fstrim", {}))[0]
        fs = ten.guest.fs
        assert done["output"]["trimmed_bytes"] == fs.free_blocks * fs.bs
        assert done["discards"]["dropped_bytes"] == done["output"]["trimmed_bytes"]      # discard=ignore drops them
    finally:
        seven.close()
        ten.close()


def test_sdelete_z_gives_space_back_through_detect_zeroes(tmp_path):
    """virtio-blk on Windows 7 gets no delete notification; sdelete's zeros become unmaps with detect-zeroes."""
    player = scenario(tmp_path, "windows-7", "virtio-blk", detect_zeroes="unmap")
    try:
        _write, _written, delete, synced = write_delete(player)
        assert delete["discards"]["issued_bytes"] == 0
        kept = synced["layers"]["disk.qcow2"]
        assert kept > 64 * MiB
        player.machine.run(player.guest.zero_fill("zero.fill", None))
        player.monitor.sample()
        after = player.disk.host_bytes()["disk.qcow2"]
        assert after < kept - 60 * MiB
        assert "zero.fill" not in player.guest.fs.files
        assert any(r.op == "write" for r in player.guest.dev.issued)
    finally:
        player.close()


def test_a_delete_with_notifications_survives_a_power_cut_and_unsynced_writes_do_not(tmp_path):
    player = scenario(tmp_path, "windows-10")
    try:
        steps(player, ("mkfs", {}), ("mount", {}), ("write", {"file": "a", "size": MiB, "content": "random"}),
              ("write", {"file": "b", "size": MiB, "content": "random"}), ("sync", {}),
              ("delete", {"file": "a"}), ("write", {"file": "c", "size": MiB, "content": "random"}),
              ("power-cycle", {}), ("mount", {}))
        assert sorted(player.guest.fs.files) == ["b"]
        assert player.read_file("b") == bytes(player.expected["b"])
    finally:
        player.close()


# -- files read back ------------------------------------------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from("abc"), st.integers(1, 3 * MiB), st.sampled_from(["random", "zeros"]),
              st.one_of(st.none(), st.integers(0, 2 * MiB))),
    st.tuples(st.just("truncate"), st.sampled_from("abc"), st.integers(0, 2 * MiB)),
    st.tuples(st.just("delete"), st.sampled_from("abc")),
    st.tuples(st.just("sync")),
)


def run_ops(player: Player, ops) -> None:
    for op in ops:
        name = op[0]
        if name in ("truncate", "delete") and op[1] not in player.guest.fs.files:
            continue
        if name == "write":
            args = {"file": op[1], "size": op[2], "content": op[3], **({} if op[4] is None else {"offset": op[4]})}
        elif name == "truncate":
            args = {"file": op[1], "size": op[2]}
        else:
            args = {"file": op[1]} if name == "delete" else {}
        steps(player, (name, args))


def check_files(player: Player) -> None:
    fs = player.guest.fs
    owners: dict[int, str] = {}
    for name, f in fs.files.items():
        assert player.read_file(name) == bytes(player.expected[name]), name
        for _logical, phys, n in f.extents:
            for b in range(phys, phys + n):
                assert fs.used[b] and owners.setdefault(b, name) == name, (name, b)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=8), guest=st.sampled_from(["windows-xp", "windows-10"]))
def test_files_read_back_as_written(tmp_path_factory, ops, guest):
    directory = tmp_path_factory.mktemp("ntfs")
    player = scenario(directory, guest, size="64M")
    try:
        steps(player, ("mkfs", {}), ("mount", {}))
        run_ops(player, ops)
        check_files(player)                      # from the cache
        steps(player, ("umount", {}), ("mount", {}))
        check_files(player)                      # from the image
    finally:
        player.close()
