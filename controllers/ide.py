"""One PIIX IDE channel: task-file ports, PIO data port with DRQ, bus-master DMA, interrupt line.

The channel only moves registers and bytes; what a command means is `AtaDevice`'s business (plan/execute).
Behaviour follows QEMU 8.2 hw/ide/core.c (ide_ioport_read/write, ide_bus_exec_cmd, ide_sector_read/write,
ide_dma_cb, ide_ctrl_write), hw/ide/pci.c (bmdma_cmd_writeb, bmdma_prepare_buf, bmdma_irq) and hw/ide/piix.c
(bmdma_read/write).

Port offsets are relative to the command block base (0x1F0 / 0x170): 0-7 the command block, `REG_CONTROL`
(0x206, i.e. 0x3F6 / 0x376) the control block. Bus-master offsets are relative to this channel's 8 bytes of
BAR4 (the secondary channel's block starts at BAR4 + 8).

Deliberate differences from QEMU, each so that a failing command never touches the image (docs/architecture.md):
- a PIO write is handed to the device once all its blocks are in (QEMU writes block by block); a range error
  still surfaces at the block where QEMU's per-block ide_sector_write check finds it, with nothing written;
- a PRD pointing outside guest RAM fails the command (ERR+ABRT, bus-master ERROR and INTERRUPT) before any
  byte moves; QEMU's pci_dma_* would read/write unassigned memory.
Commands to an absent device (master or slave) are ignored; QEMU ignores them for an absent slave only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.ata.codec import IDE_BM_PRD_FAST
from controllers.ata.device import PAGE_COMMANDS, AtaDevice, AtaRegisters, AtaResult, Protocol, Transfer
from controllers.ata.layouts import (
    BM_CMD_MASK,
    BM_CMD_START,
    BM_PRD_SIZE,
    BM_PRDT_LIMIT,
    BM_STATUS_ACTIVE,
    BM_STATUS_ERROR,
    BM_STATUS_INTR,
    CONTROL_HOB,
    CONTROL_NIEN,
    CONTROL_SRST,
    DEVICE_DEV1,
    DEVICE_HEAD_MASK,
    DEVICE_LBA,
    DEVICE_OBSOLETE,
    ERROR_ABRT,
    ERROR_AMNF,
    SECTOR_SIZE,
    STATUS_BSY,
    STATUS_DRDY,
    STATUS_DRQ,
    STATUS_DSC,
    STATUS_ERR,
    AtaCommand,
    bm_prd_length,
)
from emu.errors import DmaError
from emu.sim import DeviceClock

if TYPE_CHECKING:
    import simpy

    from emu.memory import GuestMemory
    from emu.sim import Delivery, InterruptLine, LatencyModel, Simulation

C = AtaCommand

REG_CONTROL = 0x206                 # alternate status (read) / device control (write): 0x3F6 - 0x1F0
STATUS_READY = STATUS_DRDY | STATUS_DSC                 # 0x50, QEMU READY_STAT | SEEK_STAT
STATUS_DATA = STATUS_READY | STATUS_DRQ                 # 0x58, a DRQ block (PIO) or an armed DMA
STATUS_FAIL = STATUS_DRDY | STATUS_ERR                  # 0x41, ide_abort_command

# Commands QEMU passes through ide_cmd_lba48_transform, and whether they are the 48-bit kind
_LBA48_CMDS = frozenset({C.READ_SECTORS_EXT, C.READ_DMA_EXT, C.READ_NATIVE_MAX_ADDRESS_EXT, C.READ_MULTIPLE_EXT,
                         C.WRITE_SECTORS_EXT, C.WRITE_DMA_EXT, C.WRITE_MULTIPLE_EXT, C.READ_VERIFY_SECTORS_EXT})
_LBA28_CMDS = frozenset({C.READ_SECTORS, C.READ_SECTORS_NORETRY, C.READ_MULTIPLE, C.READ_DMA, C.READ_DMA_NORETRY,
                         C.WRITE_SECTORS, C.WRITE_SECTORS_NORETRY, C.WRITE_MULTIPLE, C.WRITE_VERIFY, C.WRITE_DMA,
                         C.WRITE_DMA_NORETRY, C.READ_VERIFY_SECTORS, C.READ_VERIFY_SECTORS_NORETRY,
                         C.READ_NATIVE_MAX_ADDRESS})
_MULTIPLE = frozenset({C.READ_MULTIPLE, C.READ_MULTIPLE_EXT, C.WRITE_MULTIPLE, C.WRITE_MULTIPLE_EXT})
_PRD_EOT = 0x8000


@dataclass
class _Unit:
    """One device's task file (QEMU IDEState): both devices latch every command-block write."""

    present: bool
    feature: int = 0
    hob_feature: int = 0
    nsector: int = 0                # after ide_cmd_lba48_transform it holds the whole count (up to 65536)
    hob_nsector: int = 0
    sector: int = 0
    hob_sector: int = 0
    lcyl: int = 0
    hob_lcyl: int = 0
    hcyl: int = 0
    hob_hcyl: int = 0
    select: int = DEVICE_OBSOLETE
    status: int = 0
    error: int = 0
    lba48: bool = False

    def reset(self) -> None:
        """ide_reset then cmd_exec_dev_diagnostic: registers cleared, the disk signature, 0x50 / error 0x01."""
        self.feature = self.hob_feature = self.nsector = self.hob_nsector = 0
        self.sector = self.hob_sector = self.lcyl = self.hob_lcyl = self.hcyl = self.hob_hcyl = 0
        self.select = DEVICE_OBSOLETE
        self.lba48 = False
        self.signature()
        self.status = STATUS_READY if self.present else 0
        self.error = ERROR_AMNF     # "device 0 passed, device 1 passed or not present"

    def signature(self) -> None:
        """ide_set_signature: head bits cleared, count/LBA = 1/1/0/0 (0xFF/0xFF cylinders with no drive)."""
        self.select &= ~DEVICE_HEAD_MASK
        self.nsector = self.sector = 1
        self.lcyl = self.hcyl = 0 if self.present else 0xFF


@dataclass
class _Pio:
    """A PIO data phase in progress (QEMU data_ptr/data_end/end_transfer_func)."""

    unit: int
    direction: str                  # "in": device -> host (data port reads), "out": host -> device
    regs: AtaRegisters
    buf: bytearray
    block: int                      # bytes per DRQ block (512, or mult_sectors * 512)
    pos: int = 0
    end: int = 0                    # end of the current DRQ block
    bad_block: int | None = None    # first block QEMU's per-block range check refuses
    final: AtaResult | None = None  # data-in: what the command ends with after the last block


@dataclass
class _Dma:
    """A DMA command armed by its command-register write, waiting for the bus master (QEMU bm->dma_cb)."""

    unit: int
    regs: AtaRegisters
    transfer: Transfer


class IdeChannel:
    """A PIIX IDE channel with up to two ATA disks, its bus-master DMA engine and its interrupt line.

    `timing` decides when a completion is delivered: the command's effect on the image happens when it
    starts; status and interrupt follow the cost of the block-layer requests it caused (`clock`), one at a
    time: a newer completion replaces the pending one. A command that costs nothing (every command, with no
    timing) completes at the current simulated time, inside the port access that started it.
    """

    def __init__(self, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
                 devices: tuple[AtaDevice | None, AtaDevice | None] = (None, None),
                 timing: LatencyModel | None = None) -> None:
        if len(devices) != 2:
            raise ValueError(f"an IDE channel has a master and a slave, not {len(devices)} devices")
        self.sim = sim
        self.mem = mem
        self.irq = irq
        self.devices = tuple(devices)
        self.clock = DeviceClock(sim, timing)
        self.units = [_Unit(present=d is not None) for d in self.devices]
        for unit in self.units:
            unit.reset()
        self.unit_sel = 0           # bus->unit: DEV bit of the last device register write
        self.control = 0            # bus->cmd: the last device control value
        self.bm_cmd = 0
        self.bm_status = 0
        self.bm_addr = 0
        self._pio: _Pio | None = None
        self._dma: _Dma | None = None
        self._pending: Delivery | None = None      # the completion waiting out its modelled time
        self._pending_dma = False                   # ... of a DMA command: BM START=0 drains it

    # -- port I/O ------------------------------------------------------------------------------------------
    def io_read(self, port_offset: int, size: int = 1) -> int:
        """Read a command-block (0-7) or control-block (`REG_CONTROL`) register; unmapped ports read all ones."""
        if size == 1 and 0 <= port_offset < 8:      # a task-file byte: what a driver reads most
            return self._reg_read(port_offset)
        _check_size(size)
        if port_offset == 0 and size > 1:
            return self._data_read(size)
        if port_offset == REG_CONTROL:
            return self._alt_status()
        if not 0 <= port_offset < 8:
            return (1 << (8 * size)) - 1
        value = 0                   # wider accesses to byte registers: one byte per register, little-endian
        for i in range(size):
            value |= self._reg_read(port_offset + i) << (8 * i) if port_offset + i < 8 else 0xFF << (8 * i)
        return value

    def io_write(self, port_offset: int, value: int, size: int = 1) -> None:
        """Write a command-block (0-7) or control-block (`REG_CONTROL`) register; unmapped ports ignore it."""
        if size == 1 and 0 <= port_offset < 8:      # a task-file byte: what a driver writes most
            self._reg_write(port_offset, value & 0xFF)
            return
        _check_size(size)
        value &= (1 << (8 * size)) - 1
        if port_offset == 0 and size > 1:
            self._data_write(value, size)
        elif port_offset == REG_CONTROL:
            self._control_write(value & 0xFF)
        elif 0 <= port_offset < 8:
            for i in range(size):
                if port_offset + i < 8:
                    self._reg_write(port_offset + i, (value >> (8 * i)) & 0xFF)

    def bm_read(self, offset: int, size: int = 1) -> int:
        """Read this channel's bus-master registers: command (0), status (2), PRD table address (4-7)."""
        _check_size(size)
        if 4 <= offset < 8:         # bmdma_addr_read: any width, shifted by the offset inside the dword
            return (self.bm_addr >> ((offset - 4) * 8)) & ((1 << (8 * size)) - 1)
        if size != 1 or not 0 <= offset < 4:
            return (1 << (8 * size)) - 1    # piix bmdma_read: only byte accesses are decoded
        if offset == 0:
            return self.bm_cmd
        return self.bm_status if offset == 2 else 0xFF

    def bm_write(self, offset: int, value: int, size: int = 1) -> None:
        """Write the bus-master registers (QEMU piix bmdma_write, bmdma_cmd_writeb, bmdma_addr_write)."""
        _check_size(size)
        value &= (1 << (8 * size)) - 1
        if 4 <= offset < 8:
            shift = (offset - 4) * 8
            mask = ((1 << (8 * size)) - 1) << shift
            self.bm_addr = ((self.bm_addr & ~mask) | ((value << shift) & mask & ~3)) & 0xFFFFFFFF
        elif size == 1 and offset == 0:
            self._bm_cmd_write(value)
        elif size == 1 and offset == 2:
            # drive-capable bits written, ACTIVE kept, ERROR/INTERRUPT cleared by writing 1
            self.bm_status = (value & 0x60) | (self.bm_status & BM_STATUS_ACTIVE) | (self.bm_status & ~value & 0x06)

    # -- registers -------------------------------------------------------------------------------------------
    @property
    def _active(self) -> _Unit:
        return self.units[self.unit_sel]

    def _absent(self) -> bool:
        return self.devices[self.unit_sel] is None

    def _no_devices(self) -> bool:
        return self.devices[0] is None and self.devices[1] is None

    def _alt_status(self) -> int:
        """ide_status_read: the status without acknowledging the interrupt."""
        i = self.unit_sel
        return 0 if self.devices[i] is None else self.units[i].status

    def _reg_read(self, reg: int) -> int:
        """ide_ioport_read; HOB in the device control register selects the previous ("high order") bytes."""
        if reg == 7:
            self.irq.lower()        # reading status acknowledges the interrupt
            return self._alt_status()
        if reg == 0:
            return 0xFF
        u, hob = self._active, bool(self.control & CONTROL_HOB)
        if reg == 1:
            return 0 if self._absent() else (u.hob_feature if hob else u.error)
        if self._no_devices():
            return 0
        if reg == 6:
            return u.select
        low = {2: u.nsector, 3: u.sector, 4: u.lcyl, 5: u.hcyl}[reg] & 0xFF
        high = {2: u.hob_nsector, 3: u.hob_sector, 4: u.hob_lcyl, 5: u.hob_hcyl}[reg]
        return high if hob else low

    def _reg_write(self, reg: int, value: int) -> None:
        """ide_ioport_write: both devices latch the value, the old one moves to the HOB byte."""
        if reg == 0:
            return
        units = self.units
        if reg != 7 and units[self.unit_sel].status & (STATUS_BSY | STATUS_DRQ):
            return                  # command-block writes are ignored while busy with a command
        self.control &= ~CONTROL_HOB    # ide_clear_hob: any write clears HOB
        if reg == 7:
            self.irq.lower()
            self._exec(value)
        elif reg == 1:
            for u in units:
                u.hob_feature, u.feature = u.feature, value
        elif reg == 2:
            for u in units:
                u.hob_nsector, u.nsector = u.nsector & 0xFF, value
        elif reg == 3:
            for u in units:
                u.hob_sector, u.sector = u.sector, value
        elif reg == 4:
            for u in units:
                u.hob_lcyl, u.lcyl = u.lcyl, value
        elif reg == 5:
            for u in units:
                u.hob_hcyl, u.hcyl = u.hcyl, value
        else:
            for u in units:
                u.select = value | DEVICE_OBSOLETE
            self.unit_sel = 1 if value & DEVICE_DEV1 else 0

    def _control_write(self, value: int) -> None:
        """ide_ctrl_write: a 0 -> 1 SRST edge sets BSY and resets both devices in a bottom half."""
        if not self.control & CONTROL_SRST and value & CONTROL_SRST:
            for u in self.units:
                u.status |= STATUS_BSY
            self.sim.process(self._srst())
        self.control = value

    def _srst(self) -> Generator[simpy.Event, Any, None]:
        """ide_bus_perform_srst: cancel whatever runs, reset and diagnose both devices, drop SRST."""
        yield self.sim.timeout(0)
        self.clock.reset()
        self._pio = None
        self._dma = None
        for u in self.units:
            u.reset()
        self.control &= ~CONTROL_SRST
        if not self._no_devices():
            self._set_irq()         # cmd_exec_dev_diagnostic raises the interrupt for a disk

    def _set_irq(self) -> None:
        """ide_bus_set_irq through PIIX's bmdma_irq: INTERRUPT in BM status, then the line; nothing if nIEN."""
        if not self.control & CONTROL_NIEN:
            self.bm_status |= BM_STATUS_INTR
            self.irq.raise_()

    # -- sector registers (QEMU ide_get_sector / ide_set_sector) ------------------------------------------------
    def _get_sector(self, i: int) -> int:
        u = self.units[i]
        if u.select & DEVICE_LBA:
            if u.lba48:
                return (u.hob_hcyl << 40 | u.hob_lcyl << 32 | u.hob_sector << 24 | u.hcyl << 16 | u.lcyl << 8
                        | u.sector)
            return (u.select & DEVICE_HEAD_MASK) << 24 | u.hcyl << 16 | u.lcyl << 8 | u.sector
        _, heads, sectors = self.devices[i].chs
        return ((u.hcyl << 8 | u.lcyl) * heads + (u.select & DEVICE_HEAD_MASK)) * sectors + u.sector - 1

    def _set_sector(self, i: int, lba: int) -> None:
        u = self.units[i]
        if u.select & DEVICE_LBA:
            if u.lba48:
                u.hob_hcyl, u.hob_lcyl, u.hob_sector = (lba >> 40) & 0xFF, (lba >> 32) & 0xFF, (lba >> 24) & 0xFF
            else:
                u.select = (u.select & ~DEVICE_HEAD_MASK) | ((lba >> 24) & DEVICE_HEAD_MASK)
            u.hcyl, u.lcyl, u.sector = (lba >> 16) & 0xFF, (lba >> 8) & 0xFF, lba & 0xFF
            return
        _, heads, sectors = self.devices[i].chs
        cyl, rest = divmod(max(lba, 0), heads * sectors)
        u.hcyl, u.lcyl = (cyl >> 8) & 0xFF, cyl & 0xFF
        u.select = (u.select & ~DEVICE_HEAD_MASK) | ((rest // sectors) & DEVICE_HEAD_MASK)
        u.sector = (rest % sectors + 1) & 0xFF

    def _advance(self, i: int, sectors: int) -> None:
        """What QEMU does to the task file as sectors move: the LBA registers advance, the count drops."""
        self._set_sector(i, self._get_sector(i) + sectors)
        self.units[i].nsector = max(self.units[i].nsector - sectors, 0)

    # -- commands --------------------------------------------------------------------------------------------
    def _registers(self, u: _Unit, command: int) -> AtaRegisters:
        """The task file as one command's registers; ide_cmd_lba48_transform: only 48-bit commands take the HOB
        bytes (LBA 47:24, count 15:8), so DSM over PIIX sees the 8-bit count alone."""
        lba48 = command in _LBA48_CMDS
        if lba48 or command in _LBA28_CMDS:
            u.lba48 = lba48
        lba = u.hcyl << 16 | u.lcyl << 8 | u.sector
        # a command without the transform takes nsector as it stands (QEMU cmd_data_set_management)
        count, features = u.nsector & (0xFF if lba48 or command in _LBA28_CMDS else 0xFFFF), u.feature
        if lba48:
            lba |= u.hob_hcyl << 40 | u.hob_lcyl << 32 | u.hob_sector << 24
            count |= u.hob_nsector << 8
            features |= u.hob_feature << 8
            u.nsector = count or 0x10000
        elif command in _LBA28_CMDS:
            u.nsector = count or 0x100
        return AtaRegisters(command=command, features=features, lba=lba, count=count, device=u.select,
                            control=self.control)

    def _exec(self, command: int) -> None:
        """ide_bus_exec_cmd: ignored for an absent device or while BSY/DRQ; otherwise plan, then run."""
        i = self.unit_sel
        device, u = self.devices[i], self.units[i]
        if device is None or u.status & (STATUS_BSY | STATUS_DRQ):
            return
        u.status, u.error = STATUS_DRDY | STATUS_BSY, 0
        if command == C.EXECUTE_DEVICE_DIAGNOSTIC:
            self._diagnostic()
            return
        regs = self._registers(u, command)
        transfer = device.plan(regs)
        protocol = transfer.protocol
        if protocol is Protocol.PIO_IN:
            self._start_pio_in(i, device, regs, transfer)
        elif protocol is Protocol.PIO_OUT:
            self._start_pio_out(i, device, regs, transfer)
        elif protocol in (Protocol.DMA_IN, Protocol.DMA_OUT):
            # ide_sector_start_dma: DRQ while waiting for the bus master; start it now if it already runs
            u.status = STATUS_DATA
            self._dma = _Dma(i, regs, transfer)
            if self.bm_status & BM_STATUS_ACTIVE:
                self._run_dma()
        elif protocol is Protocol.NONE:
            result = device.execute(regs, transfer=transfer)
            self._later(result, lambda: self._finish(i, result))
        else:                       # NCQ has no entry in PIIX's ide_cmd_table
            self._finish(i, AtaResult(STATUS_FAIL, ERROR_ABRT))

    def _diagnostic(self) -> None:
        """cmd_exec_dev_diagnostic (0x90): signatures, error 0x01, device 0 selected, interrupt."""
        for u in self.units:
            u.signature()
            u.select &= ~DEVICE_DEV1
            u.status, u.error = (STATUS_READY if u.present else 0), ERROR_AMNF
        self.unit_sel = 0
        self._set_irq()

    def _finish(self, i: int, result: AtaResult) -> None:
        """The ending status of a command without data phase (or an aborted one), with its interrupt."""
        u = self.units[i]
        u.status, u.error = result.status, result.error
        if result.lba is not None:  # READ NATIVE MAX ADDRESS: ide_set_sector
            self._set_sector(i, result.lba)
        if result.cylinders is not None:    # SMART RETURN STATUS sets lcyl/hcyl directly
            u.lcyl, u.hcyl = result.cylinders & 0xFF, result.cylinders >> 8
        if result.count is not None:    # CHECK POWER MODE
            u.nsector = result.count
        self._set_irq()

    def _later(self, result: AtaResult, finish: Callable[[], None], *, dma: bool = False) -> None:
        """Deliver `finish` once the cost of `result`'s requests has passed: at once if it costs nothing (always,
        untimed). A newer completion replaces the one pending."""
        if self.clock.timed:
            cost = self.clock.cost(result.completions)
            if cost > 0:
                if self._pending is not None:
                    self._pending.cancel()
                self._pending, self._pending_dma = self.clock.later(cost, finish), dma
                return
        finish()

    # -- PIO ---------------------------------------------------------------------------------------------------
    def _block_size(self, device: AtaDevice, command: int) -> int:
        """Sectors per DRQ block: READ/WRITE MULTIPLE use mult_sectors (QEMU req_nb_sectors), others one."""
        return (device.multiple if command in _MULTIPLE else 1) * SECTOR_SIZE

    def _bad_block(self, i: int, device: AtaDevice, regs: AtaRegisters, nbytes: int, block: int) -> int | None:
        """The first DRQ block QEMU's per-block ide_sect_range_ok refuses, or None if the range is valid."""
        if regs.command in PAGE_COMMANDS:
            return None
        lba, nsect, total = self._get_sector(i), nbytes // SECTOR_SIZE, device.config.capacity_sectors
        if 0 <= lba and lba + nsect <= total:
            return None
        return max(total - lba, 0) // (block // SECTOR_SIZE) if 0 <= lba <= total else 0

    def _start_pio_in(self, i: int, device: AtaDevice, regs: AtaRegisters, transfer: Transfer) -> None:
        """cmd_read_pio / cmd_identify: read at once, then DRQ blocks, each announced by an interrupt."""
        block = self._block_size(device, regs.command)
        bad = self._bad_block(i, device, regs, transfer.nbytes, block)
        if bad is None:
            result = device.execute(regs)
            final, data = result, result.data_in if result.ok else b""
        elif bad == 0:
            result = final = device.execute(regs)
            data = b""
        else:                       # the blocks before the bad one are read and delivered, then the abort
            result = device.execute(dataclasses.replace(regs, count=bad * block // SECTOR_SIZE))
            data = result.data_in if result.ok else b""
            final = device.execute(regs) if result.ok else result
        self.units[i].status = STATUS_READY | STATUS_BSY
        if not data:
            self._later(result, lambda: self._finish(i, final))
            return
        pio = _Pio(i, "in", regs, bytearray(data), block, final=final)
        self._later(result, lambda: self._next_in_block(pio))

    def _next_in_block(self, pio: _Pio) -> None:
        """ide_sector_read_cb: the next block is ready: registers advance, DRQ, interrupt."""
        self._pio = pio
        pio.end = min(pio.pos + pio.block, len(pio.buf))
        if pio.regs.command not in PAGE_COMMANDS:
            self._advance(pio.unit, (pio.end - pio.pos) // SECTOR_SIZE)
        u = self.units[pio.unit]
        u.status, u.error = STATUS_DATA, 0
        self._set_irq()

    def _start_pio_out(self, i: int, device: AtaDevice, regs: AtaRegisters, transfer: Transfer) -> None:
        """cmd_write_pio / cmd_write_multiple: DRQ for the first block at once, no interrupt yet."""
        block = self._block_size(device, regs.command)
        pio = _Pio(i, "out", regs, bytearray(transfer.nbytes), block,
                   bad_block=self._bad_block(i, device, regs, transfer.nbytes, block))
        pio.end = min(block, transfer.nbytes)
        self._pio = pio
        self.units[i].status = STATUS_DATA

    def _data_read(self, size: int) -> int:
        """ide_data_readw/readl: only while DRQ is set in a data-in phase, never past the block's end."""
        pio = self._pio
        if (pio is None or pio.unit != self.unit_sel or pio.direction != "in"
                or not self._active.status & STATUS_DRQ or pio.pos + size > pio.end):
            return 0
        value = int.from_bytes(pio.buf[pio.pos:pio.pos + size], "little")
        pio.pos += size
        if pio.pos >= pio.end:
            self._active.status &= ~STATUS_DRQ
            self._in_block_done(pio)
        return value

    def _in_block_done(self, pio: _Pio) -> None:
        if pio.pos < len(pio.buf):
            self._next_in_block(pio)
            return
        self._pio = None
        if pio.final is not None and not pio.final.ok:
            self._finish(pio.unit, pio.final)      # ide_rw_error on the block after the delivered ones
        else:
            self.units[pio.unit].status = STATUS_READY     # ide_transfer_stop: no interrupt after the last block

    def _data_write(self, value: int, size: int) -> None:
        """ide_data_writew/writel: only while DRQ is set in a data-out phase, never past the block's end."""
        pio = self._pio
        if (pio is None or pio.unit != self.unit_sel or pio.direction != "out"
                or not self._active.status & STATUS_DRQ or pio.pos + size > pio.end):
            return
        pio.buf[pio.pos:pio.pos + size] = value.to_bytes(size, "little")
        pio.pos += size
        if pio.pos >= pio.end:
            self._active.status &= ~STATUS_DRQ
            self._out_block_done(pio)

    def _out_block_done(self, pio: _Pio) -> None:
        """ide_sector_write: the block's range is checked; the last block hands the whole write to the device."""
        i, device = pio.unit, self.devices[pio.unit]
        index = (pio.pos - 1) // pio.block
        u = self.units[i]
        if index == pio.bad_block:
            self._pio = None
            u.status = STATUS_READY | STATUS_BSY
            self._finish(i, device.execute(pio.regs, pio.buf))     # range refused: nothing is written
            return
        sectors = (pio.end - index * pio.block) // SECTOR_SIZE
        if pio.pos >= len(pio.buf):
            self._pio = None
            u.status = STATUS_READY | STATUS_BSY
            result = device.execute(pio.regs, bytes(pio.buf))

            def finish() -> None:
                if result.ok:
                    self._advance(i, sectors)
                self._finish(i, result)
            self._later(result, finish)
            return
        self._advance(i, sectors)   # ide_sector_write_cb: next block, DRQ and an interrupt per block
        pio.end = min(pio.pos + pio.block, len(pio.buf))
        u.status = STATUS_DATA
        self._set_irq()

    # -- bus-master DMA --------------------------------------------------------------------------------------
    def _bm_cmd_write(self, value: int) -> None:
        """bmdma_cmd_writeb: a START edge starts an armed command; clearing it drains one in flight."""
        if (value & BM_CMD_START) != (self.bm_cmd & BM_CMD_START):
            if not value & BM_CMD_START:
                if self._pending is not None and self._pending_dma:    # ide_cancel_dma_sync: it completes now
                    self._pending.deliver()
                self.bm_status &= ~BM_STATUS_ACTIVE
            elif not self.bm_status & BM_STATUS_ACTIVE:
                self.bm_status |= BM_STATUS_ACTIVE
                self.bm_cmd = value & BM_CMD_MASK
                if self._dma is not None:
                    self._run_dma()
        self.bm_cmd = value & BM_CMD_MASK

    def _walk_prdt(self, need: int) -> tuple[list[tuple[int, int]], int]:
        """bmdma_prepare_buf: PRDs up to EOT or one page of table; the scatter list stops at `need` bytes
        (later PRDs are consumed but ignored). Returns the regions and the bytes all PRDs describe."""
        regions: list[tuple[int, int]] = []
        taken = described = 0
        for k in range(BM_PRDT_LIMIT // BM_PRD_SIZE):
            addr, count, flags = self.mem.unpack(IDE_BM_PRD_FAST, self.bm_addr + k * BM_PRD_SIZE)
            length = bm_prd_length(count)
            use = min(length, need - taken)
            if use:
                regions.append((addr, use))
                taken += use
            described += length
            if flags & _PRD_EOT:
                break
        return regions, described

    def _run_dma(self) -> None:
        """ide_dma_cb: walk the PRDs, move the data, let the device execute, complete with an interrupt."""
        dma, self._dma = self._dma, None
        i, device, u = dma.unit, self.devices[dma.unit], self.units[dma.unit]
        out = dma.transfer.protocol is Protocol.DMA_OUT
        nbytes = dma.transfer.nbytes
        if nbytes == 0:             # DSM COUNT 0: nsector == 0, the end of the transfer at once
            result = device.execute(dma.regs, b"" if out else None, transfer=dma.transfer)
            self._later(result, lambda: self._dma_done(i, result, 0, False), dma=True)
            return
        try:
            regions, described = self._walk_prdt(nbytes)
            if described < nbytes:
                # PRDs shorter than the transfer: nothing moves, ACTIVE drops, no interrupt (QEMU >= 4.2)
                u.status = STATUS_READY
                self.bm_status &= ~BM_STATUS_ACTIVE
                return
            for addr, length in regions:
                self.mem.check(addr, length, "bus-master DMA")
        except DmaError:
            self._dma_fail(i)
            return
        views = [self.mem.view(addr, length) for addr, length in regions]   # lent for this command only
        try:
            if out:
                result = device.execute(dma.regs, views[0] if len(views) == 1 else b"".join(views),
                                        transfer=dma.transfer)
            else:
                result = device.execute(dma.regs, into=views, transfer=dma.transfer)
        finally:
            self.mem.release(views)
        self._later(result, lambda: self._dma_done(i, result, nbytes // SECTOR_SIZE, described > nbytes), dma=True)

    def _dma_done(self, i: int, result: AtaResult, sectors: int, stay_active: bool) -> None:
        """End of ide_dma_cb: status, interrupt, then ide_set_inactive (ACTIVE stays if PRDs were longer)."""
        u = self.units[i]
        if result.ok:
            self._advance(i, sectors)
        else:
            stay_active = False     # ide_dma_error -> ide_set_inactive(s, false)
        u.status, u.error = result.status, result.error
        self._set_irq()
        if stay_active:
            self.bm_status |= BM_STATUS_ACTIVE
        else:
            self.bm_status &= ~BM_STATUS_ACTIVE

    def _dma_fail(self, i: int) -> None:
        """A PRD table or data region outside guest RAM: the command aborts with the bus-master ERROR bit."""
        u = self.units[i]
        u.status, u.error = STATUS_FAIL, ERROR_ABRT
        self.bm_status = (self.bm_status | BM_STATUS_ERROR) & ~BM_STATUS_ACTIVE
        self._set_irq()


def _check_size(size: int) -> None:
    if size not in (1, 2, 4):
        raise ValueError(f"port access size must be 1, 2 or 4 bytes, not {size}")
