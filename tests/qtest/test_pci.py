"""PCI enumeration of a real QEMU pc over ports 0xcf8/0xcfc: the chipset and the virtio-blk function, its BARs
sized and placed, its virtio vendor capabilities where emu's driver model expects them."""

from __future__ import annotations

import pytest

from emu.qtest.machine import VIRTIO_BLK_IDS, virtio_function
from emu.qtest.pci import COMMAND, COMMAND_MASTER, COMMAND_MEMORY, MMIO_WINDOW, PciBus
from emu.qtest.protocol import QtestError
from emu.qtest.qemu import Qemu

pytestmark = pytest.mark.qemu


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 << 20))
    return str(path)


@pytest.mark.parametrize("legacy, device_id", [("off", 0x1001), ("on", 0x1042)])
def test_the_virtio_blk_function_its_bars_and_capabilities(qemu_system, image, legacy, device_id):
    with Qemu("virtio-blk", image, device_options={"disable-legacy": legacy}) as qemu:
        bus = PciBus(qemu.conn)
        ids = {(f.slot, f.func): (f.vendor, f.device) for f in bus.scan()}
        assert ids[(0, 0)] == (0x8086, 0x1237) and ids[(1, 0)] == (0x8086, 0x7000)     # i440FX, PIIX3
        assert ids[(2, 0)] == (0x1AF4, device_id)
        vf = virtio_function(qemu.conn, bus, VIRTIO_BLK_IDS)
        fn = vf.function
        # modern: one 16 KiB 64-bit memory BAR (4); the transitional function also has legacy I/O BAR 0
        assert fn.bars[4].size == 0x4000 and not fn.bars[4].io and fn.bars[4].address >= MMIO_WINDOW
        assert (0 in fn.bars and fn.bars[0].io) == (legacy == "off")
        vendor = {c.cfg_type: (c.bar, c.offset, c.length) for c in vf.capabilities if c.id == 0x09}
        assert vendor[1] == (4, 0x0000, 0x1000)        # common
        assert vendor[3] == (4, 0x1000, 0x1000)        # ISR
        assert vendor[4] == (4, 0x2000, 0x1000)        # device
        assert vendor[2] == (4, 0x3000, 0x1000)        # notify
        assert 5 in vendor                              # the PCI configuration access capability
        assert bus.read(fn, COMMAND, 2) & (COMMAND_MEMORY | COMMAND_MASTER) == COMMAND_MEMORY | COMMAND_MASTER
        assert fn.irq == 10                             # slot 2 INTA -> PIRQB -> IRQ 10, as SeaBIOS routes it
        # the placed BAR decodes: device_feature_select reads back what was written
        vf.region.mmio_write(0, 1, 4)
        assert vf.region.mmio_read(0, 4) == 1
        with pytest.raises(QtestError, match="no PCI function"):
            bus.find(0x1AF4, 0x1048)


@pytest.mark.parametrize("controller, machine, vendor, device", [
    ("virtio-scsi", "pc", 0x1AF4, 0x1004),
    ("ide", "pc", 0x8086, 0x7010),          # PIIX3 IDE, built into pc
    ("ahci", "q35", 0x8086, 0x2922),        # ICH9 AHCI, built into q35 at 00:1f.2
])
def test_every_controller_starts_with_its_function_on_bus_0(qemu_system, image, controller, machine, vendor,
                                                            device):
    with Qemu(controller, image, drive={"discard": "unmap", "detect-zeroes": "unmap"}) as qemu:
        assert qemu.machine == machine
        fn = PciBus(qemu.conn, machine).find(vendor, device)
        assert fn.bus == 0
