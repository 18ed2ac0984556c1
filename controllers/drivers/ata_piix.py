"""A guest driver for one disk on a PIIX IDE channel, as Linux ata_piix + libata drives it.

Every method is a SimPy generator (``proc = sim.process(driver.read(0, 8))``; the process's value is the
outcome). Commands are encoded the way libata-sff does it: ata_dev_select, ata_sff_tf_load (HOB bytes first,
then the low bytes, then the device register), ata_bmdma_setup / ata_bmdma_start for DMA (PRD table from
ata_bmdma_fill_sg: 64 KiB boundaries, a 64 KiB entry written as 0, EOT on the last), ata_sff_hsm_move for the
PIO data phases (one DRQ block per interrupt, 16-bit data port), ata_bmdma_port_intr on the interrupt (BM
status, BM stop, status read which acknowledges, BM status written back) and ata_sff_tf_read on an error.

A command whose interrupt never comes (a PRD table shorter than the transfer) ends after `timeout` simulated seconds
(sd's command timer, which libata's commands run under), with `timed_out` set. The timer leaves its timeout event in
the simulation's queue: run the simulation until the driver's process, not to exhaustion, when the clock matters.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.ata.codec import IDE_BM_PRD_FAST, unpack_h2d_fis
from controllers.ata.device import AtaRegisters
from controllers.ata.identify import parse_identify
from controllers.ata.layouts import (
    BM_CMD,
    BM_CMD_START,
    BM_CMD_TO_MEMORY,
    BM_PRD_EOT,
    BM_PRDT,
    BM_STATUS,
    BM_STATUS_INTR,
    CONTROL_HOB,
    DEVICE_DEV1,
    DEVICE_LBA,
    DEVICE_OBSOLETE,
    H2D_FIS_SIZE,
    IDENTIFY_SIZE,
    SECTOR_SIZE,
    STATUS_BSY,
    STATUS_DRQ,
    STATUS_ERR,
    AtaCommand,
)
from controllers.drivers.config import GuestConfig
from controllers.drivers.libata import discard_dsms, lba_28_ok
from controllers.ide import REG_CONTROL
from emu.errors import DriverLayoutError

if TYPE_CHECKING:
    import simpy

    from controllers.ide import IdeChannel
    from emu.memory import GuestMemory

C = AtaCommand

ATA_DEVCTL_OBS = 0x08               # libata's ap->ctl: the obsolete bit 3, nIEN clear (interrupts on)
PRD_BOUNDARY = 0x10000              # a PRD must not cross 64 KiB (ata_bmdma_fill_sg)
PRD_MAX_ENTRIES = 512               # one 4 KiB PRD table (LIBATA_MAX_PRD is 256 sg entries, each split once)
QEMU_MULT_SECTORS = 16              # READ/WRITE MULTIPLE block before IDENTIFY told us (QEMU MAX_MULT_SECTORS)

# libata's ATA_TFLAG_LBA48 commands: the HOB bytes are meaningful and read back on an error
_LBA48 = frozenset({C.READ_SECTORS_EXT, C.READ_DMA_EXT, C.READ_NATIVE_MAX_ADDRESS_EXT, C.READ_MULTIPLE_EXT,
                    C.WRITE_SECTORS_EXT, C.WRITE_DMA_EXT, C.WRITE_MULTIPLE_EXT, C.READ_VERIFY_SECTORS_EXT,
                    C.FLUSH_CACHE_EXT, C.DATA_SET_MANAGEMENT})
# Commands whose protocol is bus-master DMA (libata ATA_PROT_DMA), and those that answer with an LBA
_DMA = frozenset({C.READ_DMA, C.READ_DMA_NORETRY, C.READ_DMA_EXT, C.WRITE_DMA, C.WRITE_DMA_NORETRY, C.WRITE_DMA_EXT,
                  C.DATA_SET_MANAGEMENT})
_REPORTS_LBA = frozenset({C.READ_NATIVE_MAX_ADDRESS, C.READ_NATIVE_MAX_ADDRESS_EXT})
_MULTIPLE = frozenset({C.READ_MULTIPLE, C.READ_MULTIPLE_EXT, C.WRITE_MULTIPLE, C.WRITE_MULTIPLE_EXT})


@dataclass
class AtaOutcome:
    """What the guest saw: ending status and error registers, the data read, the LBA registers when the
    command failed, the bus-master status at the interrupt (DMA only), and whether the interrupt never came."""

    status: int
    error: int
    data_in: bytes = b""
    lba: int | None = None
    bm_status: int | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and not self.status & (STATUS_ERR | STATUS_BSY | STATUS_DRQ)


class PiixDriver:
    """libata on one device (0 = master, 1 = slave) of an `IdeChannel`, as `guest` configures libata, sd and the
    block layer; buffers come from `mem.alloc`."""

    def __init__(self, channel: IdeChannel, mem: GuestMemory, *, guest: GuestConfig, device: int = 0,
                 poll_interval: float = 1e-6) -> None:
        if device not in (0, 1):
            raise DriverLayoutError(f"an IDE device is 0 (master) or 1 (slave), not {device}")
        self.channel = channel
        self.mem = mem
        self.sim = channel.sim
        self.irq = channel.irq
        self.device = device
        self.libata = guest.libata
        self.block_max_sectors = guest.block.max_sectors
        self.timeout = guest.sd.command_timeout
        self.poll_interval = poll_interval
        self.info: dict | None = None       # parse_identify of the last IDENTIFY
        self.multi_set: int | None = None   # the block of the last SET MULTIPLE MODE that succeeded through raw()
        self._last_ctl: int | None = None

    # -- what libata knows after IDENTIFY ---------------------------------------------------------------------
    @property
    def multi_count(self) -> int:
        """READ/WRITE MULTIPLE block (ata_dev_configure: word 59 bit 8 -> its low byte, or the count of the SET
        MULTIPLE MODE it sent, dev->multi_count); 0 = not used."""
        if self.multi_set is not None:
            return self.multi_set
        return self.info["multiple_setting"] if self.info else 0

    @property
    def lba48(self) -> bool:
        return bool(self.info and self.info["lba48"])

    @property
    def max_sectors(self) -> int:
        """The queue's max_sectors: the block layer's default for an LBA48 disk, else libata's ATA_MAX_SECTORS."""
        return self.block_max_sectors if self.lba48 else self.libata.max_sectors

    # -- high-level commands ----------------------------------------------------------------------------------
    def identify(self) -> Generator[simpy.Event, Any, AtaOutcome]:
        """IDENTIFY DEVICE by PIO (ata_dev_read_id); on success `info` holds the parsed page."""
        outcome = yield from self.raw(AtaRegisters(C.IDENTIFY_DEVICE, device=DEVICE_OBSOLETE), None, IDENTIFY_SIZE,
                                      dma=False)
        if outcome.ok and len(outcome.data_in) == IDENTIFY_SIZE:
            self.info = parse_identify(outcome.data_in)
        return outcome

    def read(self, lba: int, count: int, dma: bool = True) -> Generator[simpy.Event, Any, AtaOutcome]:
        """Read `count` sectors in commands of at most `max_sectors` (the first failure ends the read)."""
        yield from self._ensure_identified()
        pieces = []
        outcome = AtaOutcome(0, 0)
        for start, n in self._chunks(lba, count):
            outcome = yield from self.raw(self._rw_regs(start, n, write=False, dma=dma), None, n * SECTOR_SIZE,
                                          dma=dma)
            if not outcome.ok:
                return outcome
            pieces.append(outcome.data_in)
        outcome.data_in = b"".join(pieces)        # one command's data as it came, no copy
        return outcome

    def write(self, lba: int, data: bytes, dma: bool = True) -> Generator[simpy.Event, Any, AtaOutcome]:
        """Write whole sectors in commands of at most `max_sectors` (the first failure ends the write)."""
        if len(data) % SECTOR_SIZE:
            raise DriverLayoutError(f"a write is whole {SECTOR_SIZE}-byte sectors, not {len(data)} bytes")
        yield from self._ensure_identified()
        outcome = AtaOutcome(0, 0)
        for start, n in self._chunks(lba, len(data) // SECTOR_SIZE):
            offset = (start - lba) * SECTOR_SIZE
            outcome = yield from self.raw(self._rw_regs(start, n, write=True, dma=dma),
                                          data[offset:offset + n * SECTOR_SIZE], 0, dma=dma)
            if not outcome.ok:
                return outcome
        return outcome

    def flush(self) -> Generator[simpy.Event, Any, AtaOutcome]:
        """ata_scsi_flush_xlat: FLUSH CACHE EXT on an LBA48 disk that has it, else FLUSH CACHE."""
        yield from self._ensure_identified()
        ext = self.lba48 and self.info["flush_ext"]
        command = C.FLUSH_CACHE_EXT if ext else C.FLUSH_CACHE
        return (yield from self.raw(AtaRegisters(command, device=DEVICE_OBSOLETE), None, 0, dma=False))

    def trim(self, ranges) -> Generator[simpy.Event, Any, list[AtaOutcome]]:
        """Discard (lba, count) ranges as Linux does over libata: the block layer's requests, each a WRITE
        SAME(16) that libata translates into one DSM TRIM with one 512-byte block of entries, sent by DMA.
        Nothing is sent when IDENTIFY does not advertise TRIM (sd leaves provisioning off). One outcome per DSM;
        stops at the first failing command."""
        yield from self._ensure_identified()
        outcomes: list[AtaOutcome] = []
        if not self.info or not self.info["trim"]:
            return outcomes
        for cmd in discard_dsms(ranges, self.libata):
            out = yield from self.raw(cmd.registers, cmd.payload, 0, dma=True)
            outcomes.append(out)
            if not out.ok:
                break
        return outcomes

    # -- one command, byte-exact -----------------------------------------------------------------------------
    def raw(self, regs: AtaRegisters | None, data_out: bytes | None, data_in_len: int, dma: bool | None = None,
            *, fis: bytes | None = None) -> Generator[simpy.Event, Any, AtaOutcome]:
        """Issue `regs` as libata would: select, load the task file (HOB bytes always, so the full 16/48-bit
        values reach the device), then a DMA, PIO-out, PIO-in or no-data protocol. `dma` None takes the
        opcode's own protocol (bus-master DMA for READ/WRITE DMA (EXT) and DSM, else PIO). `fis` (a 20-byte
        Register H2D FIS) may replace `regs`: its task-file fields are what a PIIX channel can carry. The DEV
        bit of this driver's device is ORed into the device register."""
        if fis is not None:
            fields = unpack_h2d_fis(bytes(fis).ljust(H2D_FIS_SIZE, b"\0"))
            regs = AtaRegisters.from_fields(fields)
        if regs is None:
            raise DriverLayoutError("raw() needs registers or a FIS")
        if data_out is not None and data_in_len:
            raise DriverLayoutError("a command moves data in one direction: data_out or data_in_len, not both")
        if dma is None:
            dma = regs.command in _DMA
        yield from self._select()
        self._tf_load(regs)
        if dma:
            outcome = yield from self._dma(regs, data_out, data_in_len)
        elif data_out:
            outcome = yield from self._pio_out(regs, data_out)
        elif data_in_len:
            outcome = yield from self._pio_in(regs, data_in_len)
        else:
            outcome = yield from self._no_data(regs)
        if outcome.status & STATUS_ERR or regs.command in _REPORTS_LBA:
            outcome.lba = self._tf_read_lba(regs.command in _LBA48)
        elif regs.command == C.SET_MULTIPLE_MODE and not outcome.timed_out:
            self.multi_set = regs.count & 0xFF      # PIO blocks of READ/WRITE MULTIPLE follow the device's
        return outcome

    # -- protocols -----------------------------------------------------------------------------------------
    def _no_data(self, regs: AtaRegisters) -> Generator[simpy.Event, Any, AtaOutcome]:
        self._exec_command(regs.command)
        if not (yield from self._wait_irq()):
            return self._timed_out()
        status = self._in(7)
        return AtaOutcome(status, self._in(1))

    def _pio_in(self, regs: AtaRegisters, nbytes: int) -> Generator[simpy.Event, Any, AtaOutcome]:
        """ata_sff_hsm_move for PIO data-in: each interrupt announces one DRQ block; after the last block
        ata_wait_idle reads the ending status."""
        self._exec_command(regs.command)
        block = self._pio_block(regs.command)
        data = bytearray()
        while True:
            if not (yield from self._wait_irq()):
                outcome = self._timed_out()
                outcome.data_in = bytes(data)
                return outcome
            status = self._in(7)
            if status & STATUS_ERR or not status & STATUS_DRQ:
                break
            n = min(block, nbytes - len(data))
            data += b"".join(self.channel.io_read(0, 2).to_bytes(2, "little") for _ in range(n // 2))
            if len(data) >= nbytes:
                status = yield from self._wait_idle()
                break
        return AtaOutcome(status, self._in(1), bytes(data))

    def _pio_out(self, regs: AtaRegisters, data: bytes) -> Generator[simpy.Event, Any, AtaOutcome]:
        """ata_sff_hsm_move for PIO data-out: wait for DRQ, send the first block, then one block per interrupt."""
        self._exec_command(regs.command)
        block = self._pio_block(regs.command)
        status = yield from self._wait_not_busy()
        pos = 0
        while status & STATUS_DRQ and not status & STATUS_ERR and pos < len(data):
            chunk = data[pos:pos + block]
            for i in range(0, len(chunk) - 1, 2):
                self.channel.io_write(0, chunk[i] | chunk[i + 1] << 8, 2)
            pos += len(chunk)
            if not (yield from self._wait_irq()):
                return self._timed_out()
            status = self._in(7)
        return AtaOutcome(status, self._in(1))

    def _dma(self, regs: AtaRegisters, data_out: bytes | None,
             data_in_len: int) -> Generator[simpy.Event, Any, AtaOutcome]:
        """ata_bmdma_setup + ata_bmdma_start, then ata_bmdma_port_intr on the interrupt."""
        write = data_out is not None
        nbytes = len(data_out) if write else data_in_len
        size = max(nbytes, SECTOR_SIZE)     # an empty transfer still gets a buffer and one PRD
        if size > (PRD_MAX_ENTRIES - 1) * PRD_BOUNDARY:
            raise DriverLayoutError(f"{nbytes} bytes need more PRDs than one {PRD_MAX_ENTRIES}-entry PRD table holds")
        buf = self.mem.alloc(size, align=4096)
        table = None
        try:
            prd_entries = _prd_entries(buf, size)
            table = self.mem.alloc(len(prd_entries) * IDE_BM_PRD_FAST.size, align=8)
            if write:
                self.mem.write(buf, bytes(data_out).ljust(size, b"\0"))
            else:
                self.mem.fill(buf, size, 0)
            for k, (offset, length) in enumerate(prd_entries):
                last = k == len(prd_entries) - 1
                self.mem.pack(IDE_BM_PRD_FAST, table + k * IDE_BM_PRD_FAST.size, buf + offset, length & 0xFFFF,
                              (BM_PRD_EOT >> 16) if last else 0)
            # ata_bmdma_setup: PRD table address, direction with START clear, then the command
            self.channel.bm_write(BM_PRDT, table, 4)
            dmactl = self.channel.bm_read(BM_CMD) & ~(BM_CMD_TO_MEMORY | BM_CMD_START)
            if not write:
                dmactl |= BM_CMD_TO_MEMORY
            self.channel.bm_write(BM_CMD, dmactl)
            self._exec_command(regs.command)
            # ata_bmdma_start
            self.channel.bm_write(BM_CMD, self.channel.bm_read(BM_CMD) | BM_CMD_START)
            got_irq = yield from self._wait_irq()
            bm_status = self.channel.bm_read(BM_STATUS)
            if got_irq and not bm_status & BM_STATUS_INTR:
                got_irq = False     # not ours: libata's ata_sff_idle_irq; treated as a timeout here
            # ata_bmdma_stop, ata_sff_dma_pause, the status read, ata_bmdma_irq_clear
            self.channel.bm_write(BM_CMD, self.channel.bm_read(BM_CMD) & ~BM_CMD_START)
            self.channel.io_read(REG_CONTROL)
            status = self._in(7)
            self.channel.bm_write(BM_STATUS, self.channel.bm_read(BM_STATUS))
            data_in = b""
            if not write and got_irq and not status & STATUS_ERR:
                data_in = self.mem.read(buf, data_in_len)
            return AtaOutcome(status, self._in(1), data_in, bm_status=bm_status, timed_out=not got_irq)
        finally:
            if table is not None:
                self.mem.free(table)
            self.mem.free(buf)

    # -- libata-sff helpers ---------------------------------------------------------------------------------------
    def _in(self, reg: int) -> int:
        return self.channel.io_read(reg)

    def _out(self, reg: int, value: int) -> None:
        self.channel.io_write(reg, value & 0xFF)

    def _select(self) -> Generator[simpy.Event, Any, None]:
        """ata_dev_select with wait: idle, the device register, idle again."""
        yield from self._wait_idle()
        self._out(6, DEVICE_OBSOLETE | (DEVICE_DEV1 if self.device else 0))
        yield from self._wait_idle()

    def _tf_load(self, regs: AtaRegisters) -> None:
        """ata_sff_tf_load: device control if it changed, HOB bytes, low bytes, the device register."""
        if self._last_ctl != ATA_DEVCTL_OBS:
            self.channel.io_write(REG_CONTROL, ATA_DEVCTL_OBS)
            self._last_ctl = ATA_DEVCTL_OBS
        self._out(1, regs.features >> 8)
        self._out(2, regs.count >> 8)
        self._out(3, regs.lba >> 24)
        self._out(4, regs.lba >> 32)
        self._out(5, regs.lba >> 40)
        self._out(1, regs.features)
        self._out(2, regs.count)
        self._out(3, regs.lba)
        self._out(4, regs.lba >> 8)
        self._out(5, regs.lba >> 16)
        self._out(6, regs.device | (DEVICE_DEV1 if self.device else 0))

    def _exec_command(self, command: int) -> None:
        """ata_sff_exec_command: the command register, then ata_sff_pause (an alternate status read)."""
        self._out(7, command)
        self.channel.io_read(REG_CONTROL)

    def _tf_read_lba(self, lba48: bool) -> int:
        """ata_sff_tf_read: the LBA registers (with HOB for an LBA48 command), as the error reports them."""
        low = self._in(3) | self._in(4) << 8 | self._in(5) << 16
        device = self._in(6)
        if lba48:
            self.channel.io_write(REG_CONTROL, ATA_DEVCTL_OBS | CONTROL_HOB)
            high = self._in(3) | self._in(4) << 8 | self._in(5) << 16
            self.channel.io_write(REG_CONTROL, ATA_DEVCTL_OBS)
            return high << 24 | low
        return (device & 0x0F) << 24 | low if device & DEVICE_LBA else low

    def _pio_block(self, command: int) -> int:
        multi = self.multi_count if self.info or self.multi_set is not None else QEMU_MULT_SECTORS
        return (multi if command in _MULTIPLE and multi else 1) * SECTOR_SIZE

    def _wait_irq(self) -> Generator[simpy.Event, Any, bool]:
        """Wait for the channel's interrupt, or `timeout` seconds (libata's command timer)."""
        event = self.irq.wait()
        if event.triggered:
            yield event
            return True
        yield event | self.sim.timeout(self.timeout)
        return event.triggered

    def _wait_idle(self) -> Generator[simpy.Event, Any, int]:
        """ata_wait_idle: poll the status register until BSY and DRQ are clear (or the timeout)."""
        return self._poll(STATUS_BSY | STATUS_DRQ)

    def _wait_not_busy(self) -> Generator[simpy.Event, Any, int]:
        return self._poll(STATUS_BSY)

    def _poll(self, bits: int) -> Generator[simpy.Event, Any, int]:
        status = self._in(7)
        waited = 0.0
        while status & bits and status != 0xFF and waited < self.timeout:
            yield self.sim.timeout(self.poll_interval)
            waited += self.poll_interval
            status = self._in(7)
        return status

    def _timed_out(self) -> AtaOutcome:
        """libata EH after a timeout: whatever the registers hold now, flagged."""
        status = self._in(7)
        return AtaOutcome(status, self._in(1), timed_out=True)

    def _ensure_identified(self) -> Generator[simpy.Event, Any, None]:
        if self.info is None:
            yield from self.identify()

    def _chunks(self, lba: int, count: int) -> list[tuple[int, int]]:
        step = self.max_sectors
        return [(lba + k, min(step, count - k)) for k in range(0, count, step)]

    def _rw_regs(self, lba: int, n: int, *, write: bool, dma: bool) -> AtaRegisters:
        """ata_build_rw_tf + ata_rwcmd_protocol: LBA28 when lba_28_ok (the command ends below 0FFFFFFFh, at most
        ATA_MAX_SECTORS), else LBA48; DMA, or PIO with READ/WRITE MULTIPLE when IDENTIFY word 59 gave a multiple
        count."""
        lba48 = not lba_28_ok(lba, n, self.libata)
        if lba48 and not self.lba48:
            raise DriverLayoutError(f"sectors {lba}+{n} need LBA48, which the disk does not advertise")
        if dma:
            command = (C.WRITE_DMA_EXT if lba48 else C.WRITE_DMA) if write else (
                C.READ_DMA_EXT if lba48 else C.READ_DMA)
        elif self.multi_count:
            command = (C.WRITE_MULTIPLE_EXT if lba48 else C.WRITE_MULTIPLE) if write else (
                C.READ_MULTIPLE_EXT if lba48 else C.READ_MULTIPLE)
        else:
            command = (C.WRITE_SECTORS_EXT if lba48 else C.WRITE_SECTORS) if write else (
                C.READ_SECTORS_EXT if lba48 else C.READ_SECTORS)
        device = DEVICE_OBSOLETE | DEVICE_LBA
        if lba48:
            return AtaRegisters(command, lba=lba, count=n & 0xFFFF, device=device)
        return AtaRegisters(command, lba=lba & 0xFFFFFF, count=n & 0xFF, device=device | (lba >> 24) & 0x0F)


def _prd_entries(addr: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of the buffer at `addr`, cut at 64 KiB boundaries (ata_bmdma_fill_sg)."""
    entries = []
    offset = 0
    while offset < size:
        length = min(PRD_BOUNDARY - (addr + offset) % PRD_BOUNDARY, size - offset)
        entries.append((offset, length))
        offset += length
    return entries

