"""The milestone of issue 14: emu's own VirtioBlkDriver, unchanged, drives QEMU 7.2's virtio-blk-pci through the
qtest adapters (PCI set up as firmware would, rings and buffers in QEMU's RAM, completions as IOAPIC interrupts),
and what it wrote is in the image file."""

from __future__ import annotations

import pytest

from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.virtio.layouts import BLK_F_DISCARD, BLK_F_WRITE_ZEROES
from emu.qtest.machine import VIRTIO_BLK_IDS, guest_memory, interrupt_line, virtio_function
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import Simulation
from scenarios.profiles import guest_config
from tests.qtest.conftest import run

pytestmark = pytest.mark.qemu

SECTOR = 512


def test_emu_virtio_blk_driver_writes_a_sector_through_real_qemu_into_the_image(qemu_system, tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    data = bytes((i * 7 + 3) & 0xFF for i in range(SECTOR))
    with Qemu("virtio-blk", str(path), drive={"discard": "unmap"}) as qemu:
        sim = Simulation()
        vf = virtio_function(qemu.conn, PciBus(qemu.conn), VIRTIO_BLK_IDS)
        irq = interrupt_line(sim, qemu.conn, vf.function)
        mem = guest_memory(qemu.conn, qemu.ram_mib)
        driver = VirtioBlkDriver(sim, mem, vf.region, irq, guest=guest_config("linux-6.1"))
        assert run(sim, driver.probe()) is True
        assert driver.limits.capacity == (16 << 20) // SECTOR
        assert driver.has(BLK_F_DISCARD) and driver.has(BLK_F_WRITE_ZEROES)     # QEMU 7.2 with discard=unmap
        written = run(sim, driver.write(5, data))
        assert written.ok and not written.timed_out
        read = run(sim, driver.read(5, 1))
        assert read.ok and read.data_in == data
        assert irq.raises >= 1                  # completions came as interrupts on IOAPIC input 10
        assert len(mem.allocated()) == 3        # only the queue's rings: every request's block was freed
    raw = path.read_bytes()
    assert raw[5 * SECTOR:6 * SECTOR] == data
    assert raw[:5 * SECTOR] == bytes(5 * SECTOR) and raw[6 * SECTOR:7 * SECTOR] == bytes(SECTOR)


@pytest.mark.parametrize("machine_type", ["q35", "pc-q35-5.2"])
def test_virtio_blk_on_q35_interrupts_through_the_ich9_pirq_its_slot_is_wired_to(qemu_system, tmp_path, machine_type):
    """A slot below 25 on q35: INTA -> PIRQ E..H by (slot + pin) % 4 (QEMU's ich9_cc_init), IOAPIC input 16 + PIRQ;
    without that routing no completion would arrive and the driver would time out."""
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    data = bytes((i * 5 + 1) & 0xFF for i in range(SECTOR))
    with Qemu("virtio-blk", str(path), machine_type=machine_type) as qemu:
        assert qemu.machine == "q35"
        sim = Simulation()
        vf = virtio_function(qemu.conn, PciBus(qemu.conn, qemu.machine), VIRTIO_BLK_IDS)
        assert vf.function.irq == 16 + 4 + vf.function.slot % 4
        irq = interrupt_line(sim, qemu.conn, vf.function)
        driver = VirtioBlkDriver(sim, guest_memory(qemu.conn, qemu.ram_mib), vf.region, irq,
                                 guest=guest_config("linux-6.1"), notify_multiplier=vf.notify_multiplier)
        assert run(sim, driver.probe()) is True
        written = run(sim, driver.write(3, data))
        assert written.ok and not written.timed_out and irq.raises >= 1
    assert path.read_bytes()[3 * SECTOR:4 * SECTOR] == data
