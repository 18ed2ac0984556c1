"""emu's PiixDriver (libata over ata_piix), unchanged, against QEMU 7.2's PIIX3 IDE: IDENTIFY, then a write and a
read-back by PIO and by bus-master DMA, and the bytes are in the image."""

from __future__ import annotations

import pytest

from controllers.drivers.ata_piix import PiixDriver
from emu.qtest.machine import guest_memory, ide_channel
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import Simulation
from scenarios.profiles import guest_config
from tests.qtest.conftest import run

pytestmark = pytest.mark.qemu
SECTOR = 512


def test_emu_piix_driver_reads_and_writes_by_pio_and_dma_through_real_qemu(qemu_system, tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    data = bytes([0xA5]) * SECTOR + bytes(range(256)) * 2
    with Qemu("ide", str(path)) as qemu:
        sim = Simulation()
        channel = ide_channel(sim, qemu.conn, PciBus(qemu.conn))
        driver = PiixDriver(channel, guest_memory(qemu.conn, qemu.ram_mib), guest=guest_config("linux-6.1"))
        identify = run(sim, driver.identify())
        assert identify.ok and driver.info["model"] == "QEMU HARDDISK"
        for lba, dma in ((10, False), (20, True)):
            assert run(sim, driver.write(lba, data, dma=dma)).ok
            read = run(sim, driver.read(lba, 2, dma=dma))
            assert read.ok and read.data_in == data
        assert channel.irq.raises >= 1          # completions came on IRQ 14 (edges merge while the line stays up)
    raw = path.read_bytes()
    assert raw[10 * SECTOR:12 * SECTOR] == data and raw[20 * SECTOR:22 * SECTOR] == data
