"""emu's VirtioScsiDriver, unchanged, against QEMU 7.2's virtio-scsi-pci with one scsi-hd: the power-on unit
attention, READ CAPACITY(10), and a WRITE(10) / READ(10) whose bytes land in the image."""

from __future__ import annotations

import struct

import pytest

from controllers.drivers.virtio_scsi import VirtioScsiDriver
from emu.qtest.machine import VIRTIO_SCSI_IDS, guest_memory, interrupt_line, virtio_function
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import Simulation
from scenarios.profiles import guest_config
from tests.qtest.conftest import run

pytestmark = pytest.mark.qemu
SECTOR = 512


def rw10(opcode: int, lba: int, count: int) -> bytes:
    return struct.pack(">BBIBHB", opcode, 0, lba, 0, count, 0)


def test_emu_virtio_scsi_driver_against_real_qemu(qemu_system, tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    data = bytes(range(256)) * 2
    with Qemu("virtio-scsi", str(path)) as qemu:
        sim = Simulation()
        vf = virtio_function(qemu.conn, PciBus(qemu.conn), VIRTIO_SCSI_IDS)
        driver = VirtioScsiDriver(sim, guest_memory(qemu.conn, qemu.ram_mib), vf.region,
                                  interrupt_line(sim, qemu.conn, vf.function), guest=guest_config("linux-6.1"))
        assert run(sim, driver.probe()) is True
        first = run(sim, driver.command(0, bytes(6)))              # TEST UNIT READY
        assert first.status == 2 and (first.sense_code.key, first.sense_code.asc) == (6, 0x29)   # power on, reset
        assert run(sim, driver.command(0, bytes(6))).ok
        capacity = run(sim, driver.command(0, bytes([0x25]) + bytes(9), data_in_len=8))
        assert capacity.ok and struct.unpack(">II", capacity.data_in) == ((16 << 20) // SECTOR - 1, SECTOR)
        assert run(sim, driver.command(0, rw10(0x2A, 30, 1), data_out=data)).ok
        read = run(sim, driver.command(0, rw10(0x28, 30, 1), data_in_len=SECTOR))
        assert read.ok and read.data_in == data
    assert path.read_bytes()[30 * SECTOR:31 * SECTOR] == data
