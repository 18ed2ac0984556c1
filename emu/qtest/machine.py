"""One QEMU controller made ready for a guest-driver model: PCI set up as firmware would, the interrupt router's
inputs intercepted, and the adapters (RAM, BAR, interrupt line) the driver is built over."""

from __future__ import annotations

from dataclasses import dataclass

from emu.qtest.adapters import IdePorts, MmioRegion, QtestInterruptLine, QtestMemory
from emu.qtest.pci import Capability, Function, PciBus
from emu.qtest.protocol import QtestConnection, QtestError
from emu.sim.kernel import Simulation

VIRTIO_VENDOR = 0x1AF4
VIRTIO_BLK_IDS = (0x1001, 0x1042)          # transitional, modern-only (disable-legacy=on)
VIRTIO_SCSI_IDS = (0x1004, 0x1048)
PIIX3_IDE = (0x8086, 0x7010)
ICH9_AHCI = (0x8086, 0x2922)
AHCI_ABAR = 5                              # the HBA's registers: BAR 5 (AHCI 1.3 section 2.1.11)
PRIMARY_IDE_IRQ = 14                       # legacy mode: the primary channel is ISA IRQ 14, IOAPIC input 14
# emu's virtio-pci driver model expects QEMU's modern layout in one BAR: cfg_type -> offset
# (common 1, notify 2, ISR 3, device 4; controllers/virtio/layouts.py PCI_*_OFFSET)
VIRTIO_LAYOUT = {1: 0x0000, 2: 0x3000, 3: 0x1000, 4: 0x2000}
NOTIFY_CFG, NOTIFY_MULTIPLIER = 2, 16      # the notify capability, and its notify_off_multiplier's offset in it


@dataclass
class VirtioFunction:
    """A virtio-pci function ready for VirtioPciDriver: its PCI function, vendor capabilities, the BAR region and
    the notify capability's notify_off_multiplier (struct virtio_pci_notify_cap, after the common fields)."""

    function: Function
    capabilities: list[Capability]
    region: MmioRegion
    notify_multiplier: int


def virtio_function(conn: QtestConnection, bus: PciBus, ids: tuple[int, ...]) -> VirtioFunction:
    """Find, place and enable the function; check its capabilities lay the modern structures out in one BAR where
    emu's driver model looks for them."""
    fn = bus.assign(bus.find(VIRTIO_VENDOR, ids))
    caps = bus.capabilities(fn)
    layout = {c.cfg_type: c for c in caps if c.cfg_type in VIRTIO_LAYOUT}
    bars = {c.bar for c in layout.values()}
    if sorted(layout) != sorted(VIRTIO_LAYOUT) or len(bars) != 1:
        raise QtestError(f"{fn}: virtio capabilities not in one BAR: {caps}")
    for cfg_type, offset in VIRTIO_LAYOUT.items():
        if layout[cfg_type].offset != offset:
            raise QtestError(f"{fn}: virtio structure {cfg_type} at {layout[cfg_type].offset:#x}, emu's driver "
                             f"expects {offset:#x}")
    bar = fn.bars[bars.pop()]
    multiplier = bus.read(fn, layout[NOTIFY_CFG].pointer + NOTIFY_MULTIPLIER, 4)
    return VirtioFunction(fn, caps, MmioRegion(conn, bar.address, bar.size), multiplier)


def interrupt_line(sim: Simulation, conn: QtestConnection, fn: Function, controller: str = "ioapic"
                   ) -> QtestInterruptLine:
    """Intercept the inputs of `controller` and watch the one the function's INTx was routed to."""
    if fn.irq is None:
        raise QtestError(f"{fn}: no interrupt pin")
    conn.command("irq_intercept_in", controller)
    return QtestInterruptLine(sim, conn, fn.irq, name=str(fn))


def guest_memory(conn: QtestConnection, ram_mib: int) -> QtestMemory:
    """The driver's RAM: everything between 1 MiB and the end of `ram_mib` (pc keeps its holes below 1 MiB)."""
    return QtestMemory(conn, (ram_mib << 20) - (1 << 20))


def ide_channel(sim: Simulation, conn: QtestConnection, bus: PciBus) -> IdePorts:
    """The PIIX3 IDE primary channel in legacy mode (ports 0x1f0/0x3f6, IRQ 14) with its bus-master registers
    placed (BAR 4) and bus mastering enabled: what PiixDriver drives."""
    fn = bus.assign(bus.find(*PIIX3_IDE))
    if 4 not in fn.bars:
        raise QtestError(f"{fn}: no bus-master BAR")
    conn.command("irq_intercept_in", "ioapic")
    irq = QtestInterruptLine(sim, conn, PRIMARY_IDE_IRQ, name="ide0")
    return IdePorts(sim, conn, irq, bus_master=fn.bars[4].address)


@dataclass
class AhciFunction:
    """q35's ICH9 AHCI function with its ABAR as the HBA's register window and its INTx line: what AhciDriver
    drives."""

    function: Function
    hba: MmioRegion
    irq: QtestInterruptLine


def ahci_function(sim: Simulation, conn: QtestConnection, bus: PciBus) -> AhciFunction:
    fn = bus.assign(bus.find(*ICH9_AHCI))
    if AHCI_ABAR not in fn.bars or fn.bars[AHCI_ABAR].io:
        raise QtestError(f"{fn}: no memory BAR {AHCI_ABAR} (ABAR)")
    abar = fn.bars[AHCI_ABAR]
    return AhciFunction(fn, MmioRegion(conn, abar.address, abar.size), interrupt_line(sim, conn, fn))
