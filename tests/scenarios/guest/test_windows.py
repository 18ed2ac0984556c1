"""Windows guests: the profiles' facts (each sourced, listed by `emu profiles`), the guest chosen by the profile,
the tools Windows has and has not, and the two catalog stories."""

from __future__ import annotations

import pytest

from emu.errors import UsageError
from scenarios.guest.select import driver_profile, make_guest
from scenarios.guest.windows.system import WindowsGuest
from scenarios.play import Player, play
from scenarios.profiles import GUEST_NAMES, ProfileError, describe, guest_config
from scenarios.profiles.registry import GUESTS
from scenarios.profiles.windows import CONTROLLERS, PROFILES, windows_config
from scenarios.run import load_scenario
from tests.scenarios.guest.test_ntfs import scenario, steps

WINDOWS = ("windows-xp", "windows-7", "windows-8", "windows-2012", "windows-10")


def test_windows_profiles_are_registered_and_listed():
    assert set(WINDOWS) <= set(GUEST_NAMES) and all(GUESTS[name] is PROFILES[name] for name in WINDOWS)
    assert all(name in describe() for name in WINDOWS)
    listing = describe("windows-7")
    assert "notifies[virtio-scsi]" in listing and "DisableDeleteNotify" in listing
    for part in PROFILES["windows-7"].families:
        for label, fact in part.items():
            assert any(line.split()[0] == label and fact.source in line for line in listing.splitlines()), label
    assert guest_config("linux-6.1") == guest_config()
    with pytest.raises(ProfileError, match="windows-7"):
        guest_config("windows-7")


@pytest.mark.parametrize(("name", "notifies", "retrim"), [
    ("windows-xp", {"ide": False, "ahci": False, "virtio-blk": False, "virtio-scsi": False}, False),
    ("windows-7", {"ide": True, "ahci": True, "virtio-blk": False, "virtio-scsi": False}, False),
    ("windows-8", dict.fromkeys(CONTROLLERS, True), True),
    ("windows-2012", dict.fromkeys(CONTROLLERS, True), True),
    ("windows-10", dict.fromkeys(CONTROLLERS, True), True),
])
def test_delete_notifications_by_version_and_controller(name, notifies, retrim):
    for controller, expected in notifies.items():
        config = windows_config(name, controller)
        assert config.notifies is expected and config.ntfs_discards is expected
        assert config.fs.disable_delete_notify == 0 and config.fs.retrim is retrim
        assert config.fs.fat_notifies is False


def test_a_windows_profile_runs_a_windows_guest_on_linux_drivers(tmp_path):
    assert driver_profile("windows-10") == "linux-6.1" and driver_profile("linux-6.1") == "linux-6.1"
    player = scenario(tmp_path, "windows-10", "virtio-scsi")
    try:
        assert isinstance(player.guest, WindowsGuest)
        assert player.guest.dev.limits.discard is not None
    finally:
        player.close()
    with pytest.raises(UsageError, match="freebsd"):
        make_guest("freebsd-14", None, None)


def test_windows_has_no_blkdiscard_and_formats_only_ntfs_or_fat32(tmp_path):
    player = scenario(tmp_path, "windows-10")
    try:
        with pytest.raises(UsageError, match="no such tool on Windows"):
            steps(player, ("blkdiscard", {}))
        with pytest.raises(UsageError, match="ntfs or fat32"):
            player.machine.run(player.guest.mkfs("ext4", ""))
        with pytest.raises(UsageError, match="FAT32"):
            player.machine.run(player.guest.mkfs("ntfs", "/FS:FAT32 /Q"))
        with pytest.raises(UsageError, match="run mkfs"):
            steps(player, ("mount", {}))
    finally:
        player.close()


def test_xp_install_never_shrinks(tmp_path):
    result = play(load_scenario("xp-install-never-shrinks"), str(tmp_path / "run")).result
    phases = {p["name"]: p for p in result["phases"]}
    hosts = [p["host_bytes"] for p in result["phases"]]
    assert hosts == sorted(hosts)                                     # never goes down
    assert phases["installed"]["host_bytes"] > 300 << 20
    assert phases["deleted"]["guest_used_bytes"] < phases["installed"]["guest_used_bytes"] - (140 << 20)
    assert sum(s["discards"]["issued_bytes"] for s in result["steps"]) == 0
    seven = play(load_scenario("xp-install-never-shrinks", ["machine.guest=windows-7"]), str(tmp_path / "7")).result
    shrunk = {p["name"]: p["host_bytes"] for p in seven["phases"]}
    assert shrunk["deleted"] < shrunk["installed"] - (140 << 20)


def test_sdelete_and_compact_gives_the_vdi_back(tmp_path):
    """Played step by step; the zero-fill step with tool=sdelete is handed to the guest's sdelete here (the
    Player's dispatch of tool=sdelete is play.py's)."""
    player = Player(load_scenario("sdelete-and-compact"), str(tmp_path / "run"))
    try:
        for index, step in enumerate(player.scenario.steps):
            if step.do == "zero-fill":
                assert step.args.get("tool") == "sdelete"
                player.machine.run(player.guest.sdelete("zero.fill", step.args.get("size")))
                continue
            player.step(index, step)
        hosts = {p["name"]: p["host_bytes"] for p in player.phases}
        assert hosts["deleted"] >= hosts["written"] > 96 << 20           # TRIM sent, but VDI in QEMU cannot free
        assert hosts["compacted"] < hosts["deleted"] - (90 << 20)
    finally:
        player.close()
