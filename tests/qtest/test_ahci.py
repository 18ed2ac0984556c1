"""emu's AhciDriver, unchanged, against QEMU 7.2's ICH9 AHCI on q35: port start, IDENTIFY, and a write and a
read-back by DMA and by NCQ, interrupts on IOAPIC input 16 (PIRQA), the bytes in the image."""

from __future__ import annotations

import pytest

from controllers.drivers.ahci import AhciDriver
from emu.qtest.machine import ahci_function, guest_memory
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import Simulation
from scenarios.profiles import guest_config
from tests.qtest.conftest import run

pytestmark = pytest.mark.qemu
SECTOR = 512


def test_emu_ahci_driver_against_real_qemu_dma_and_ncq(qemu_system, tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    data = bytes([0x3C]) * SECTOR + bytes(range(256)) * 2
    with Qemu("ahci", str(path)) as qemu:
        sim = Simulation()
        ahci = ahci_function(sim, qemu.conn, PciBus(qemu.conn, qemu.machine))
        assert ahci.function.irq == 16
        driver = AhciDriver(sim, guest_memory(qemu.conn, qemu.ram_mib), ahci.hba, ahci.irq,
                            guest=guest_config("linux-6.1"))
        assert run(sim, driver.start(0)) is True
        assert run(sim, driver.identify()).ok
        for lba, ncq in ((40, False), (50, True)):
            assert run(sim, driver.write(lba, data, ncq=ncq)).ok
            read = run(sim, driver.read(lba, 2, ncq=ncq))
            assert read.ok and read.data_in == data
        assert ahci.irq.raises >= 1     # completions came as interrupts (edges merge while the line stays up)
    raw = path.read_bytes()
    assert raw[40 * SECTOR:42 * SECTOR] == data and raw[50 * SECTOR:52 * SECTOR] == data
