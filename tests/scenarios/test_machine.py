"""scenarios.machine: the same guest block operations through every controller, onto a real image."""

from __future__ import annotations

import os

import pytest

from emu.block import Drive, DriveOptions
from emu.errors import UsageError
from images import create_image, open_image
from scenarios.machine import CONTROLLERS, build

MiB = 1 << 20


def drive_for(tmp_path, fmt="raw", discard="unmap"):
    path = str(tmp_path / f"disk.{fmt}")
    create_image(path, fmt, 64 * MiB)
    return Drive(open_image(path, fmt), DriveOptions(discard=discard)), path


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_every_controller_writes_reads_flushes_and_discards(tmp_path, controller):
    drive, path = drive_for(tmp_path)
    machine = build(controller, drive, "qemu-7.2")
    try:
        data = bytes(range(256)) * (4 * MiB // 256)
        assert machine.run(machine.disk.write(2048, data))
        assert machine.run(machine.disk.flush())
        assert machine.run(machine.disk.read(2048, 8)) == data[:4096]
        written = os.stat(path).st_blocks
        sent, ok = machine.run(machine.disk.discard([(2048, 8192)]))
        assert sent >= 1 and ok
        assert os.stat(path).st_blocks < written
        assert machine.run(machine.disk.read(2048, 8)) == bytes(4096)
    finally:
        machine.close()
        drive.close()


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_an_old_machine_type_gives_the_guest_no_discard(tmp_path, controller):
    """qemu-1.4-pc: no TRIM in IDENTIFY, no DISCARD feature, no LBPME: the guest driver sends nothing."""
    drive, _ = drive_for(tmp_path)
    machine = build(controller, drive, "qemu-1.4-pc")
    try:
        assert machine.run(machine.disk.write(0, bytes([7]) * 4096))
        assert machine.run(machine.disk.discard([(0, 8)])) == (0, True)
        assert machine.run(machine.disk.read(0, 8)) == bytes([7]) * 4096
    finally:
        machine.close()
        drive.close()


def test_unknown_controller_or_profile_is_a_usage_error(tmp_path):
    drive, _ = drive_for(tmp_path)
    with pytest.raises(UsageError, match="known controllers"):
        build("scsi", drive, "qemu-7.2")
    with pytest.raises(UsageError, match="known profiles"):
        build("ide", drive, "qemu-0.1")
    drive.close()


def test_the_table_builds_every_controller_with_its_driver_and_disk(tmp_path):
    assert CONTROLLERS == ("ide", "ahci", "virtio-blk", "virtio-scsi")
    kinds = {"ide": ("PiixDriver", "GuestDisk"), "ahci": ("AhciDriver", "AhciDisk"),
             "virtio-blk": ("VirtioBlkDriver", "VirtioBlkDisk"), "virtio-scsi": ("VirtioScsiDriver", "SdGuestDisk")}
    for controller in CONTROLLERS:
        (tmp_path / controller).mkdir()
        drive, _ = drive_for(tmp_path / controller)
        machine = build(controller, drive, "qemu-7.2", guest="linux-6.1")
        try:
            assert (machine.controller, machine.profile) == (controller, "qemu-7.2")
            assert (type(machine.driver).__name__, type(machine.disk).__name__) == kinds[controller]
        finally:
            machine.close()
            drive.close()


def test_an_unknown_guest_profile_is_a_usage_error(tmp_path):
    drive, _ = drive_for(tmp_path)
    with pytest.raises(UsageError, match="linux-6.1"):
        build("ide", drive, "qemu-7.2", guest="linux-2.4")
    drive.close()


@pytest.mark.parametrize("controller", ["ide", "virtio-blk", "virtio-scsi"])
def test_a_long_read_goes_in_requests_of_the_block_layers_max_sectors(tmp_path, controller):
    """Linux 6.1's BLK_DEF_MAX_SECTORS, a fact of the linux-6.1 guest profile: 3000 sectors are read as requests of
    2560 and 440 sectors (ata_piix on an LBA48 disk, virtio_blk, sd over virtio_scsi alike)."""
    drive, _ = drive_for(tmp_path)
    machine = build(controller, drive, "qemu-7.2")
    try:
        assert machine.run(machine.disk.read(0, 1)) is not None          # IDENTIFY / sd's probe happen first
        driver, sizes = machine.driver, []
        name = "command" if controller == "virtio-scsi" else "raw"
        send = getattr(driver, name)

        def recording(*args, **kwargs):
            sizes.append(args[3] if name == "command" else args[2])       # the data-in length
            return send(*args, **kwargs)

        setattr(driver, name, recording)
        assert len(machine.run(machine.disk.read(4096, 3000))) == 3000 * 512
        assert sizes == [2560 * 512, 440 * 512]
    finally:
        machine.close()
        drive.close()
