"""What lets emu's guest-driver models run unchanged against a real QEMU: guest RAM, a BAR and an interrupt line
with the interfaces the drivers already use, each one turned into qtest commands.

The driver's allocator stays local (addresses only, no bytes); every byte goes to and from QEMU's RAM. QEMU runs
stopped and Debian's build has no qtest clock (clock_step answers FAIL), so QEMU's device work (ioeventfd, AIO
completion) happens in real time: a wait polls the socket for ``IRQ raise`` and advances the simulation by the real
seconds it waited, which keeps the driver's request timer meaningful.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Generator
from typing import Any

import simpy

from emu.errors import DmaError
from emu.memory import NULL_GUARD_BYTES, GuestMemory
from emu.qtest.protocol import QtestConnection, QtestError
from emu.sim.kernel import Simulation

_READS = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}
_WRITES = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}
_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")
_B64_CHUNK = 1 << 16           # bytes per b64read/b64write: QEMU reads a command line into one growing buffer


class QtestMemory:
    """GuestMemory's interface (read/write/fill/pack/unpack/scalars/alloc/free) over QEMU's RAM.

    Allocations come from [base, base + size), which must be ordinary RAM of the machine (on pc, above the 1 MiB
    of legacy holes and ROMs and below -m). Out-of-range accesses raise DmaError as GuestMemory does. `view()` is
    absent: there is no local mapping to lend.
    """

    def __init__(self, conn: QtestConnection, size: int, base: int = 1 << 20) -> None:
        if base < NULL_GUARD_BYTES:
            raise ValueError(f"base must leave the first page out, not {base:#x}")
        self.conn = conn
        self.base = base
        self.size = base + size
        self._alloc = GuestMemory(self.size)      # bookkeeping only: never holds the guest's bytes
        if base > NULL_GUARD_BYTES:
            self._alloc.alloc(base - NULL_GUARD_BYTES, 1)

    def close(self) -> None:
        self._alloc.close()

    def check(self, addr: int, length: int, op: str = "access") -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise DmaError(addr, length, self.size, op)

    # -- bytes ------------------------------------------------------------------------------------------------------
    def read(self, addr: int, length: int) -> bytes:
        self.check(addr, length, "read")
        out = []
        for pos in range(addr, addr + length, _B64_CHUNK):
            n = min(_B64_CHUNK, addr + length - pos)
            reply = self.conn.command("b64read", pos, n)
            try:
                data = base64.b64decode(reply.words[0] if reply.words else "", validate=True)
            except ValueError:
                raise QtestError(f"qtest: b64read: not base64: {' '.join(reply.words)[:80]!r}") from None
            if len(data) != n:
                raise QtestError(f"qtest: b64read of {n} bytes at {pos:#x} returned {len(data)}")
            out.append(data)
        return b"".join(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        self.check(addr, len(data), "write")
        for off in range(0, len(data), _B64_CHUNK):
            piece = data[off:off + _B64_CHUNK]
            self.conn.command("b64write", addr + off, len(piece), base64.b64encode(piece).decode("ascii"))

    def fill(self, addr: int, length: int, byte: int) -> None:
        if not 0 <= byte <= 255:
            raise ValueError(f"fill byte must be 0..255, not {byte}")
        self.check(addr, length, "fill")
        if length:
            self.conn.command("memset", addr, length, byte)

    def copy(self, dst: int, src: int, length: int) -> None:
        self.write(dst, self.read(src, length))

    # -- records and scalars --------------------------------------------------------------------------------------
    def unpack(self, layout: struct.Struct, addr: int) -> tuple:
        return layout.unpack(self.read(addr, layout.size))

    def pack(self, layout: struct.Struct, addr: int, *values: object) -> None:
        self.check(addr, layout.size, "write")
        try:
            data = layout.pack(*values)
        except struct.error as exc:
            raise ValueError(f"cannot pack {values!r} as {layout.format!r}: {exc}") from None
        self.write(addr, data)

    def _scalar_read(self, addr: int, size: int) -> int:
        self.check(addr, size, "read")
        return self.conn.value(_READS[size], addr)

    def _scalar_write(self, addr: int, size: int, value: int) -> None:
        self.check(addr, size, "write")
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"cannot pack {value!r} into {size} bytes")
        self.conn.command(_WRITES[size], addr, value)

    def read_u8(self, addr: int) -> int:
        return self._scalar_read(addr, 1)

    def read_u16(self, addr: int) -> int:
        return self._scalar_read(addr, 2)

    def read_u32(self, addr: int) -> int:
        return self._scalar_read(addr, 4)

    def read_u64(self, addr: int) -> int:
        return self._scalar_read(addr, 8)

    def write_u8(self, addr: int, value: int) -> None:
        self._scalar_write(addr, 1, value)

    def write_u16(self, addr: int, value: int) -> None:
        self._scalar_write(addr, 2, value)

    def write_u32(self, addr: int, value: int) -> None:
        self._scalar_write(addr, 4, value)

    def write_u64(self, addr: int, value: int) -> None:
        self._scalar_write(addr, 8, value)

    # -- allocator (local) ------------------------------------------------------------------------------------------
    def alloc(self, size: int, align: int = 16) -> int:
        return self._alloc.alloc(size, align)

    def free(self, addr: int) -> None:
        self._alloc.free(addr)

    def allocated(self) -> dict[int, int]:
        return {a: n for a, n in self._alloc.allocated().items() if a >= self.base}

    @property
    def free_bytes(self) -> int:
        return self._alloc.free_bytes


class MmioRegion:
    """A memory BAR as a device transport: `mmio_read/mmio_write(offset, ...)` become readX/writeX at base+offset."""

    def __init__(self, conn: QtestConnection, base: int, size: int) -> None:
        self.conn = conn
        self.base = base
        self.size = size

    def _check(self, offset: int, size: int) -> None:
        if size not in _READS or offset < 0 or offset + size > self.size:
            raise QtestError(f"MMIO access of {size} bytes at offset {offset:#x} is outside the "
                             f"{self.size:#x}-byte BAR at {self.base:#x}")

    def mmio_read(self, offset: int, size: int) -> int:
        self._check(offset, size)
        return self.conn.value(_READS[size], self.base + offset)

    def mmio_write(self, offset: int, value: int, size: int) -> None:
        self._check(offset, size)
        self.conn.command(_WRITES[size], self.base + offset, value & ((1 << (8 * size)) - 1))


class QtestInterruptLine:
    """InterruptLine's driver-facing interface (level, raises, wait, wait_until) for one input of the interrupt
    controller QEMU's IRQ lines were intercepted on (``irq_intercept_in ioapic``)."""

    def __init__(self, sim: Simulation, conn: QtestConnection, number: int, name: str = "", *,
                 slice_seconds: float = 0.05) -> None:
        self.sim = sim
        self.conn = conn
        self.number = number
        self.name = name or f"qtest-irq{number}"
        self.slice_seconds = slice_seconds

    @property
    def level(self) -> bool:
        self.conn.poll()
        state = self.conn.irqs.get(self.number)
        return bool(state and state.level)

    @property
    def raises(self) -> int:
        self.conn.poll()
        state = self.conn.irqs.get(self.number)
        return state.raises if state else 0

    def _wait_real(self, limit: float) -> float:
        """Poll QEMU until the line is up or `limit` real seconds pass; the seconds waited."""
        start = time.monotonic()
        while not self.level:
            left = limit - (time.monotonic() - start)
            if left <= 0:
                break
            self.conn.poll(min(left, self.slice_seconds))
        return time.monotonic() - start

    def wait(self) -> simpy.Event:
        """An event that fires when the line is up: polled now, in real time, for up to one slice at a time; the
        caller's simulation moves on by the real time waited."""
        event = self.sim.env.event()
        if self.level:
            event.succeed(self)
            return event

        def watcher() -> Generator[Any, Any, None]:
            while True:
                waited = self._wait_real(self.slice_seconds)
                yield self.sim.timeout(waited)
                if self.level:
                    event.succeed(self)
                    return

        self.sim.process(watcher())
        return event

    def wait_until(self, deadline: float) -> Generator[simpy.Event, Any, bool]:
        """As InterruptLine.wait_until: False at once past the deadline; else wait (really) until the line is up or
        the deadline, moving the simulation by the real seconds waited."""
        remaining = deadline - self.sim.now
        if remaining <= 0:
            return False
        waited = self._wait_real(min(remaining, 1.0))
        yield self.sim.timeout(min(waited, remaining))
        return True

    def __repr__(self) -> str:
        return f"QtestInterruptLine({self.name!r}, input {self.number})"


class IdePorts:
    """An IdeChannel's driver-facing interface over QEMU's port I/O: the command block at `command` (0x1f0 for the
    primary channel), the control block at command + 0x206 (0x3f6), the bus-master registers at `bus_master` (BAR 4
    of the PIIX IDE function, + 8 for the secondary channel), and the channel's interrupt line."""

    def __init__(self, sim: Simulation, conn: QtestConnection, irq: QtestInterruptLine, *, command: int = 0x1F0,
                 bus_master: int) -> None:
        self.sim = sim
        self.conn = conn
        self.irq = irq
        self.command = command
        self.bus_master = bus_master

    def _in(self, port: int, size: int) -> int:
        return self.conn.value({1: "inb", 2: "inw", 4: "inl"}[size], port)

    def _out(self, port: int, value: int, size: int) -> None:
        self.conn.command({1: "outb", 2: "outw", 4: "outl"}[size], port, value & ((1 << (8 * size)) - 1))

    def io_read(self, port_offset: int, size: int = 1) -> int:
        return self._in(self.command + port_offset, size)

    def io_write(self, port_offset: int, value: int, size: int = 1) -> None:
        self._out(self.command + port_offset, value, size)

    def bm_read(self, offset: int, size: int = 1) -> int:
        return self._in(self.bus_master + offset, size)

    def bm_write(self, offset: int, value: int, size: int = 1) -> None:
        self._out(self.bus_master + offset, value, size)
