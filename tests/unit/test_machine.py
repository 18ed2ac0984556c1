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
