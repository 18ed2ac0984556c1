"""PCI configuration space through ports 0xcf8/0xcfc, doing what firmware does before a guest driver loads.

QEMU runs stopped (no SeaBIOS), so nothing has assigned BARs, enabled decoding or routed INTx: `PciBus.assign()`
sizes each BAR (all ones written, the mask read back), places it (memory from 0xE0000000, the pc hole below the
IOAPIC; ports from 0xc000), enables I/O, memory and bus mastering, and routes INTx through the
chipset (PIIX3 PIRQs as SeaBIOS sets them; ICH9 by its reset values), so a pin names a known IOAPIC input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.qtest.protocol import QtestConnection, QtestError

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC

VENDOR_ID, DEVICE_ID, COMMAND, HEADER_TYPE = 0x00, 0x02, 0x04, 0x0E
BAR0, STATUS, CAPABILITIES, INTERRUPT_LINE, INTERRUPT_PIN = 0x10, 0x06, 0x34, 0x3C, 0x3D
STATUS_CAP_LIST = 0x10
COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER, COMMAND_INTX_DISABLE = 0x1, 0x2, 0x4, 0x400
BAR_IO, BAR_MEM_64 = 0x1, 0x4
CAP_ID_VENDOR = 0x09

MMIO_WINDOW = 0xE0000000          # pc/q35: PCI memory hole; below 0xFEC00000 (IOAPIC) and the BIOS ROM
IO_WINDOW = 0xC000

# pc: the PIIX3 PIRQ router (config 0x60..0x63 of 00:01.0) and the IRQs SeaBIOS gives PIRQ A..D; QEMU swizzles
# slot s, pin p (1 = INTA) to PIRQ (s + p - 2) & 3 (hw/isa/piix3.c pci_slot_get_pirq).
PIRQ_ROUTE = 0x60
PIRQ_IRQS = (10, 10, 11, 11)
ROUTERS = {"pc": (0, 1, 0)}
Q35_D31IR = 0x3210


@dataclass(frozen=True)
class Bar:
    index: int
    io: bool
    size: int
    address: int = 0


@dataclass(frozen=True)
class Capability:
    """One entry of the capability list; for virtio-pci's vendor capabilities (cap_vndr 9) the fields of struct
    virtio_pci_cap: cfg_type, bar, offset, length."""

    id: int
    pointer: int
    cfg_type: int | None = None
    bar: int | None = None
    offset: int | None = None
    length: int | None = None


@dataclass
class Function:
    bus: int
    slot: int
    func: int
    vendor: int
    device: int
    bars: dict[int, Bar] = field(default_factory=dict)
    irq: int | None = None          # the IOAPIC input its INTx reaches, once routed

    def __str__(self) -> str:
        return f"{self.bus:02x}:{self.slot:02x}.{self.func} [{self.vendor:04x}:{self.device:04x}]"


class PciBus:
    """Configuration mechanism #1 over qtest port I/O."""

    def __init__(self, conn: QtestConnection, machine: str = "pc") -> None:
        self.conn = conn
        self.machine = machine
        self._next_mmio = MMIO_WINDOW
        self._next_io = IO_WINDOW

    # -- configuration space ----------------------------------------------------------------------------------
    @staticmethod
    def _address(bus: int, slot: int, func: int, offset: int) -> int:
        return 0x80000000 | bus << 16 | slot << 11 | func << 8 | (offset & 0xFC)

    def read(self, fn: Function | tuple[int, int, int], offset: int, size: int) -> int:
        bus, slot, func = (fn.bus, fn.slot, fn.func) if isinstance(fn, Function) else fn
        self.conn.command("outl", CONFIG_ADDRESS, self._address(bus, slot, func, offset))
        port = CONFIG_DATA + (offset & 3)
        return self.conn.value({1: "inb", 2: "inw", 4: "inl"}[size], port)

    def write(self, fn: Function | tuple[int, int, int], offset: int, value: int, size: int) -> None:
        bus, slot, func = (fn.bus, fn.slot, fn.func) if isinstance(fn, Function) else fn
        self.conn.command("outl", CONFIG_ADDRESS, self._address(bus, slot, func, offset))
        self.conn.command({1: "outb", 2: "outw", 4: "outl"}[size], CONFIG_DATA + (offset & 3), value)

    # -- enumeration ----------------------------------------------------------------------------------------------
    def scan(self, bus: int = 0) -> list[Function]:
        """Every function on `bus` (function 0 of each slot, the others when the header says multi-function)."""
        found = []
        for slot in range(32):
            for func in range(8):
                ids = self.read((bus, slot, func), VENDOR_ID, 4)
                if ids & 0xFFFF == 0xFFFF:
                    if func == 0:
                        break
                    continue
                found.append(Function(bus, slot, func, ids & 0xFFFF, ids >> 16))
                if func == 0 and not self.read((bus, slot, 0), HEADER_TYPE, 1) & 0x80:
                    break
        return found

    def find(self, vendor: int, devices: tuple[int, ...] | int) -> Function:
        devices = (devices,) if isinstance(devices, int) else devices
        for fn in self.scan():
            if fn.vendor == vendor and fn.device in devices:
                return fn
        wanted = "/".join(f"{vendor:04x}:{d:04x}" for d in devices)
        raise QtestError(f"no PCI function {wanted} on bus 0 of the QEMU machine")

    def size_bars(self, fn: Function) -> dict[int, Bar]:
        """Each implemented BAR's kind and size (all ones written, the read-back mask; the original restored)."""
        bars, index = {}, 0
        while index < 6:
            offset = BAR0 + 4 * index
            original = self.read(fn, offset, 4)
            self.write(fn, offset, 0xFFFFFFFF, 4)
            mask = self.read(fn, offset, 4)
            self.write(fn, offset, original, 4)
            io = bool(original & BAR_IO)
            wide = not io and (original & 0x6) == BAR_MEM_64
            if wide:
                high_orig = self.read(fn, offset + 4, 4)
                self.write(fn, offset + 4, 0xFFFFFFFF, 4)
                high = self.read(fn, offset + 4, 4)
                self.write(fn, offset + 4, high_orig, 4)
                mask |= high << 32
                bits = 64
            else:
                bits = 32
            base_mask = mask & ~(0x3 if io else 0xF)
            if io:
                base_mask &= 0xFFFF
            if base_mask:
                size = (~base_mask + 1) & ((1 << bits) - 1) if not io else (~base_mask + 1) & 0xFFFF
                bars[index] = Bar(index, io, size)
            index += 2 if wide else 1
        return bars

    def assign(self, fn: Function) -> Function:
        """Size and place every BAR (each aligned to its size), enable decoding and bus mastering, route INTx."""
        placed = {}
        for index, bar in self.size_bars(fn).items():
            if bar.io:
                address = self._next_io = -(-self._next_io // bar.size) * bar.size
                self._next_io += bar.size
                self.write(fn, BAR0 + 4 * index, address, 4)
            else:
                address = self._next_mmio = -(-self._next_mmio // bar.size) * bar.size
                self._next_mmio += bar.size
                self.write(fn, BAR0 + 4 * index, address & 0xFFFFFFFF, 4)
                low = self.read(fn, BAR0 + 4 * index, 4)
                if (low & 0x6) == BAR_MEM_64:
                    self.write(fn, BAR0 + 4 * index + 4, address >> 32, 4)
            placed[index] = Bar(index, bar.io, bar.size, address)
        fn.bars = placed
        command = self.read(fn, COMMAND, 2)
        self.write(fn, COMMAND, (command | COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER) & ~COMMAND_INTX_DISABLE, 2)
        fn.irq = self.route_intx(fn)
        return fn

    def route_intx(self, fn: Function) -> int | None:
        """Program the PIRQ router as SeaBIOS does and write the function's interrupt line; the IRQ (= IOAPIC
        input) its INTx pin reaches, None for a function without a pin."""
        pin = self.read(fn, INTERRUPT_PIN, 1)
        if not pin:
            return None
        if self.machine == "q35":
            # ICH9 wires PIRQ A..H straight to IOAPIC inputs 16..23 (PIRQ routing off at reset). Device 31's pins
            # reach PIRQ A..D by the reset value of its D31IR routing register (0x3210: INTA -> PIRQA ...); a slot
            # below 25 by QEMU's fixed choice, INTA..D of slot s -> PIRQ E..H from (s + pin) % 4 (QEMU 7.2
            # hw/isa/lpc_ich9.c ich9_cc_init). Devices 25..30 (their DnnIR registers) are not needed yet.
            if fn.slot == 0x1F:
                pirq = (Q35_D31IR >> (4 * (pin - 1))) & 0x7
            elif fn.slot < 25:
                pirq = 4 + (fn.slot + pin - 1) % 4
            else:
                raise QtestError(f"{fn}: INTx routing on q35 is implemented for device 31 and slots below 25")
            self.write(fn, INTERRUPT_LINE, 16 + pirq, 1)
            return 16 + pirq
        if self.machine != "pc":
            raise QtestError(f"INTx routing on machine {self.machine!r} is not implemented")
        router = ROUTERS[self.machine]
        for i, irq in enumerate(PIRQ_IRQS):
            self.write(router, PIRQ_ROUTE + i, irq, 1)
        irq = PIRQ_IRQS[(fn.slot + pin - 2) & 3]
        self.write(fn, INTERRUPT_LINE, irq, 1)
        return irq

    def capabilities(self, fn: Function) -> list[Capability]:
        """The capability list, following next pointers (at most 48 entries: a loop is QEMU's bug, not a hang)."""
        if not self.read(fn, STATUS, 2) & STATUS_CAP_LIST:
            return []
        caps, pointer = [], self.read(fn, CAPABILITIES, 1) & 0xFC
        while pointer and len(caps) < 48:
            cap_id = self.read(fn, pointer, 1)
            nxt = self.read(fn, pointer + 1, 1) & 0xFC
            if cap_id == CAP_ID_VENDOR:
                caps.append(Capability(cap_id, pointer, cfg_type=self.read(fn, pointer + 3, 1),
                                       bar=self.read(fn, pointer + 4, 1), offset=self.read(fn, pointer + 8, 4),
                                       length=self.read(fn, pointer + 12, 4)))
            else:
                caps.append(Capability(cap_id, pointer))
            pointer = nxt
        return caps
