"""A guest AHCI driver modelled on Linux's ahci + libata (drivers/ata/ahci.c, libahci.c, libata-core.c).

It only touches what a guest touches: ABAR registers (through `hba.mmio_read/mmio_write`, as the guest's MMIO
would) and guest RAM, where it builds command lists, command tables and PRDTs byte for byte and reads the
received-FIS area. Every method that waits is a SimPy generator: run it with ``sim.process(...)``.

`raw()` is the byte-level entry point `emu replay --controller ahci` uses: one command in, one `AhciOutcome`
out, including the port's PxIS/PxTFD/PxSERR and the D2H FIS as they stood at completion. After an error it
recovers as libata's error handler (and QEMU's ahci-test, libqos ahci_port_check_error) does: clear PxCMD.ST
(which clears PxCI/PxSACT), clear PxIS and PxSERR, set ST again; after a timeout it also does a COMRESET.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.ata.codec import pack_cmd_header, pack_h2d_fis, pack_prdt_entry, unpack_d2h_fis
from controllers.ata.device import AtaRegisters
from controllers.ata.identify import parse_identify
from controllers.ata.layouts import (
    AHCI_CMD_HEADER_SIZE,
    AHCI_CMD_LIST_SIZE,
    AHCI_CMD_TABLE_HEADER_SIZE,
    AHCI_PRDT_DBC_MASK,
    AHCI_PRDT_ENTRY_SIZE,
    AHCI_RX_FIS_SIZE,
    DEVICE_LBA,
    FIS_TYPE_REG_D2H,
    FIS_TYPE_REG_H2D,
    GHC_AE,
    GHC_IE,
    HBA_GHC,
    HBA_IS,
    NCQ_COMMANDS,
    PX_CI,
    PX_CLB,
    PX_CLBU,
    PX_CMD,
    PX_FB,
    PX_FBU,
    PX_IE,
    PX_IS,
    PX_SACT,
    PX_SCTL,
    PX_SERR,
    PX_SSTS,
    PX_TFD,
    PXCMD_CR,
    PXCMD_FR,
    PXCMD_FRE,
    PXCMD_ST,
    PXIS_DHRS,
    PXIS_HBFS,
    PXIS_OFS,
    PXIS_PSS,
    PXIS_SDBS,
    PXIS_TFES,
    RX_FIS_PSFIS,
    RX_FIS_RFIS,
    RX_FIS_SDBFIS,
    SECTOR_SIZE,
    SSTS_DET_MASK,
    SSTS_DET_PRESENT,
    STATUS_BSY,
    STATUS_DRQ,
    STATUS_ERR,
    AtaCommand,
    port_register,
)
from controllers.drivers.config import GuestConfig, LibataConfig
from controllers.drivers.libata import discard_dsms, lba_28_ok
from emu.errors import DriverError, DriverLayoutError

if TYPE_CHECKING:
    from controllers.ahci import AhciHba
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, Simulation

C = AtaCommand
PRD_MAX_BYTES = AHCI_PRDT_DBC_MASK + 1      # 4 MiB per PRDT entry
# libahci DEF_PORT_IRQ: PORT_IRQ_ERROR (TFES, HBFS, HBDS, IFS, PRCS, IPMS/BAD_PMP, PCS, UFS) | SDB | DMA setup |
# PIO setup | D2H; OFS is added here so that an overflow always interrupts the model.
DEF_PORT_IRQ = (PXIS_TFES | PXIS_HBFS | 1 << 28 | 1 << 27 | PXIS_OFS | 1 << 23 | 1 << 22 | 1 << 6 | 1 << 4
                | PXIS_SDBS | 1 << 2 | PXIS_PSS | PXIS_DHRS)
_REPORTS_LBA = (C.READ_NATIVE_MAX_ADDRESS, C.READ_NATIVE_MAX_ADDRESS_EXT)   # answer with an LBA in the D2H FIS


class AhciDriverError(DriverError):
    """The port cannot be brought up (no device, engines that will not start)."""


@dataclass
class AhciOutcome:
    """What one command ended with, as the guest sees it.

    status/error: PxTFD at completion (libata's ahci_qc_fill_rtf reads the D2H FIS, which QEMU mirrors into
    PxTFD). data_in: the data-in buffer when the command succeeded, else b"". lba: the LBA of the D2H FIS when
    the command reports one (READ NATIVE MAX ADDRESS) or failed, else None. port_is: every PxIS bit seen
    while waiting (the driver clears them as it goes). ci/sact: PxCI/PxSACT at completion, before recovery.
    """

    status: int
    error: int
    data_in: bytes
    lba: int | None
    port_is: int
    tfd: int
    serr: int
    ci: int
    sact: int
    d2h_fis: bytes
    pio_fis: bytes
    sdb_fis: bytes
    prdbc: int | None
    timed_out: bool
    time: float
    completed: bool = True

    @property
    def ok(self) -> bool:
        """The command finished cleanly: its PxCI bit (non-NCQ) or PxSACT bit (NCQ) cleared without ERR."""
        return self.completed and not self.timed_out


@dataclass
class _Cmd:
    slot: int
    fis: bytes
    ncq: bool
    data_out: bytes | None
    data_in_len: int
    prdt: Sequence[tuple[int, int]] | None = None
    buffer: int | None = None
    buffer_len: int = 0
    table: int | None = None


class AhciDriver:
    """Linux ahci/libata on one HBA, as `guest` configures libata (and sd, whose command timer ends a command
    that never completes, before EH): `start(port)` brings a port up, the rest issue commands to that port.

    `prd_bytes` caps each PRDT entry (Linux: 4 MiB; tests use 32 bytes to fragment, like ahci-test).
    """

    def __init__(self, sim: Simulation, mem: GuestMemory, hba: AhciHba, irq: InterruptLine, *, guest: GuestConfig,
                 prd_bytes: int = PRD_MAX_BYTES) -> None:
        if not 2 <= prd_bytes <= PRD_MAX_BYTES or prd_bytes & 1:
            raise DriverLayoutError(f"prd_bytes {prd_bytes} must be even and in 2..{PRD_MAX_BYTES}")
        self.sim = sim
        self.mem = mem
        self.hba = hba
        self.irq = irq
        self.prd_bytes = prd_bytes
        self.libata = guest.libata
        self.timeout = guest.sd.command_timeout
        self.port: int | None = None
        self.port_mmio: int | None = None        # ahci_port_base: ABAR offset of the port's registers
        self.clb: int | None = None
        self.fb: int | None = None
        self.identity: dict | None = None

    # -- registers -------------------------------------------------------------------------------------
    def rd(self, reg: int) -> int:
        return self.hba.mmio_read(self.port_mmio + reg, 4)

    def wr(self, reg: int, value: int) -> None:
        self.hba.mmio_write(self.port_mmio + reg, value & 0xFFFFFFFF, 4)

    # -- bring-up ------------------------------------------------------------------------------------------
    def start(self, port: int = 0) -> Generator[Any, Any, bool]:
        """ahci_init_controller + ahci_port_start + ahci_start_fis_rx + ahci_start_engine: AE, CLB/FB, clear
        SERR/IS, PxIE, FRE (FR must follow), wait for DET = 3, ST (CR must follow), GHC.IE."""
        self.port = port
        self.port_mmio = port_register(port, 0)
        self.hba.mmio_write(HBA_GHC, GHC_AE, 4)
        if self.clb is None:
            self.clb = self.mem.alloc(AHCI_CMD_LIST_SIZE, align=1024)
            self.fb = self.mem.alloc(AHCI_RX_FIS_SIZE, align=256)
        self.mem.fill(self.clb, AHCI_CMD_LIST_SIZE, 0)
        self.mem.fill(self.fb, AHCI_RX_FIS_SIZE, 0)
        self.wr(PX_CMD, self.rd(PX_CMD) & ~(PXCMD_ST | PXCMD_FRE))
        self.wr(PX_CLB, self.clb)
        self.wr(PX_CLBU, self.clb >> 32)
        self.wr(PX_FB, self.fb)
        self.wr(PX_FBU, self.fb >> 32)
        self.wr(PX_SERR, 0xFFFFFFFF)
        self.wr(PX_IS, 0xFFFFFFFF)
        self.wr(PX_CMD, self.rd(PX_CMD) | PXCMD_FRE)
        if not self.rd(PX_CMD) & PXCMD_FR:
            raise AhciDriverError(f"port {port}: FIS receive did not start (PxFB {self.fb:#x})")
        waited = 0.0
        while self.rd(PX_SSTS) & SSTS_DET_MASK != SSTS_DET_PRESENT:   # ata_wait_ready-like link polling
            if waited >= 1.0:
                return False
            yield self.sim.timeout(0.01)
            waited += 0.01
        self.wr(PX_SERR, 0xFFFFFFFF)
        self.wr(PX_IS, 0xFFFFFFFF)                # the initial D2H FIS (signature) raised DHRS
        self.wr(PX_CMD, self.rd(PX_CMD) | PXCMD_ST)
        if not self.rd(PX_CMD) & PXCMD_CR:
            raise AhciDriverError(f"port {port}: command list engine did not start (PxCLB {self.clb:#x})")
        self.wr(PX_IE, DEF_PORT_IRQ)
        self.hba.mmio_write(HBA_GHC, GHC_AE | GHC_IE, 4)
        yield self.sim.timeout(0)
        return True

    # -- ATA commands ----------------------------------------------------------------------------------------
    def identify(self) -> Generator[Any, Any, AhciOutcome]:
        """IDENTIFY DEVICE by PIO (ata_dev_read_id); the parsed page is kept in `identity`."""
        out = yield from self.raw(AtaRegisters(C.IDENTIFY_DEVICE), None, SECTOR_SIZE)
        if out.ok:
            self.identity = parse_identify(out.data_in)
        return out

    def read(self, lba: int, count: int, ncq: bool = False, *, pio: bool = False,
             lba48: bool = False) -> Generator[Any, Any, AhciOutcome]:
        """READ FPDMA QUEUED, READ DMA (EXT) or READ SECTORS (EXT), as ata_build_rw_tf chooses (`lba48` forces
        the EXT form even where LBA28 would do)."""
        regs = _rw_registers(lba, count, self.libata, write=False, ncq=ncq, pio=pio, lba48=lba48)
        return (yield from self.raw(regs, None, count * SECTOR_SIZE))

    def write(self, lba: int, data: bytes, ncq: bool = False, *, pio: bool = False,
              lba48: bool = False) -> Generator[Any, Any, AhciOutcome]:
        """WRITE FPDMA QUEUED, WRITE DMA (EXT) or WRITE SECTORS (EXT); `data` is whole sectors."""
        if not data or len(data) % SECTOR_SIZE:
            raise DriverLayoutError(f"write of {len(data)} bytes is not whole 512-byte sectors")
        regs = _rw_registers(lba, len(data) // SECTOR_SIZE, self.libata, write=True, ncq=ncq, pio=pio, lba48=lba48)
        return (yield from self.raw(regs, data, 0))

    def flush(self) -> Generator[Any, Any, AhciOutcome]:
        """FLUSH CACHE EXT (ata_flush_cache on an LBA48 disk)."""
        return (yield from self.raw(AtaRegisters(C.FLUSH_CACHE_EXT, device=DEVICE_LBA), None, 0))

    def trim(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list[AhciOutcome]]:
        """Discard (lba, count) ranges as Linux does over libata: the block layer's requests, each a WRITE
        SAME(16) that libata translates into one DSM TRIM with one 512-byte block of entries
        (ata_scsi_write_same_xlat), sent by DMA; stops at the first failing command. Nothing is sent when IDENTIFY
        does not advertise TRIM (sd leaves provisioning off)."""
        if self.identity is None:
            yield from self.identify()
        outcomes: list[AhciOutcome] = []
        if not self.identity or not self.identity["trim"]:
            return outcomes
        for cmd in discard_dsms(ranges, self.libata):
            out = yield from self.raw(cmd.registers, cmd.payload, 0)
            outcomes.append(out)
            if not out.ok:
                break
        return outcomes

    def ncq_batch(self, commands: Sequence[tuple]) -> Generator[Any, Any, list[AhciOutcome]]:
        """Several FPDMA commands at once, tags 0..n-1: ("read", lba, count) or ("write", lba, data). PxSACT is
        set for all tags, then PxCI (ahci_qc_issue); each outcome's ok says whether its tag finished."""
        if not 1 <= len(commands) <= 32:
            raise DriverLayoutError(f"an NCQ batch holds 1..32 commands, not {len(commands)}")
        cmds = []
        for tag, command in enumerate(commands):
            kind, lba, arg = command
            if kind == "read":
                regs = _rw_registers(lba, arg, self.libata, write=False, ncq=True, tag=tag)
                data_out, data_in = None, arg * SECTOR_SIZE
            elif kind == "write":
                regs = _rw_registers(lba, len(arg) // SECTOR_SIZE, self.libata, write=True, ncq=True, tag=tag)
                data_out, data_in = arg, 0
            else:
                raise DriverLayoutError(f"unknown NCQ batch command {kind!r}")
            cmds.append(_Cmd(tag, _fis_of(regs), True, data_out, data_in))
        return (yield from self._issue(cmds))

    def raw(self, regs: AtaRegisters | None, data_out: bytes | None, data_in_len: int, fis: bytes | None = None,
            *, prdt: Sequence[tuple[int, int]] | None = None) -> Generator[Any, Any, AhciOutcome]:
        """One command from registers (or a raw 20-byte H2D FIS, sent as is): an NCQ opcode takes the queued
        path (tag from COUNT 7:3, PxSACT then PxCI), anything else slot 0. `prdt` replaces the driver's PRDT
        with (address, byte count) entries, for fuzzing; a count is stored as DBC = count - 1."""
        if fis is None:
            if regs is None:
                raise DriverLayoutError("raw() needs registers or a FIS")
            fis = _fis_of(regs)
        fis = bytes(fis[:64])
        ncq = len(fis) > 2 and fis[0] == FIS_TYPE_REG_H2D and fis[2] in NCQ_COMMANDS
        slot = (fis[12] >> 3) & 0x1F if ncq and len(fis) > 12 else 0
        outcomes = yield from self._issue([_Cmd(slot, fis, ncq, data_out, data_in_len, prdt)])
        return outcomes[0]

    # -- the command engine ------------------------------------------------------------------------------
    def _build(self, cmd: _Cmd) -> None:
        """The command table (CFIS + PRDT) and the command header of one slot (ahci_qc_prep, ahci_fill_sg)."""
        mem = self.mem
        data, length = cmd.data_out, len(cmd.data_out) if cmd.data_out is not None else cmd.data_in_len
        if length:
            cmd.buffer = mem.alloc(length, align=2)
            cmd.buffer_len = length
            if data is not None:
                mem.write(cmd.buffer, data)
            else:
                mem.fill(cmd.buffer, length, 0)
        if cmd.prdt is not None:
            entries = [(addr, max(1, min(n, PRD_MAX_BYTES)) - 1) for addr, n in cmd.prdt]
        else:
            entries = [(cmd.buffer + off, min(self.prd_bytes, length - off) - 1)
                       for off in range(0, length, self.prd_bytes)]
        cmd.table = mem.alloc(AHCI_CMD_TABLE_HEADER_SIZE + len(entries) * AHCI_PRDT_ENTRY_SIZE, align=128)
        # the CFIS in a zeroed 0x80-byte table header, the PRDT after it: one write
        mem.write(cmd.table, cmd.fis.ljust(AHCI_CMD_TABLE_HEADER_SIZE, b"\0") + b"".join(
            pack_prdt_entry(dba=addr & (2**64 - 1), dbc=dbc & AHCI_PRDT_DBC_MASK) for addr, dbc in entries))
        mem.write(self.clb + cmd.slot * AHCI_CMD_HEADER_SIZE,      # CFL = 5 dwords, W for data-out
                  pack_cmd_header(cfl=5, w=cmd.data_out is not None, prdtl=len(entries) & 0xFFFF, ctba=cmd.table))

    def _issue(self, cmds: list[_Cmd]) -> Generator[Any, Any, list[AhciOutcome]]:
        """Build, issue (PxSACT for NCQ tags, then PxCI), wait for the interrupts, collect and clean up."""
        if self.port is None or self.clb is None:
            raise AhciDriverError("start() the port first")
        sact = ci = 0
        for cmd in cmds:
            self._build(cmd)
            ci += 1 << cmd.slot
            if cmd.ncq:
                sact += 1 << cmd.slot
        seen = 0
        timed_out = False
        try:
            if sact:
                self.wr(PX_SACT, sact)
            self.wr(PX_CI, ci)
            deadline = self.sim.now + self.timeout
            while True:
                seen |= self._ack()
                state = self._done(ci, sact, seen)
                if state is not None:
                    break
                if not (yield from self.irq.wait_until(deadline)):
                    timed_out = True
                    break
            # PxTFD, PxCI and PxSACT as _done read them (nothing ran since), after a timeout read now; and PxSERR
            tfd, port_ci, port_sact = state or (self.rd(PX_TFD), self.rd(PX_CI), self.rd(PX_SACT))
            regs = (tfd, self.rd(PX_SERR), port_ci, port_sact)
            outcomes = [self._outcome(c, seen, timed_out, regs) for c in cmds]
        finally:
            for c in cmds:
                if c.buffer is not None:
                    self.mem.free(c.buffer)
                if c.table is not None:
                    self.mem.free(c.table)
        if timed_out or any(not o.ok for o in outcomes):
            yield from self._recover(comreset=timed_out)
        return outcomes

    def _ack(self) -> int:
        """ahci_port_intr: read PxIS, write it back to clear, then clear the port's GHC.IS bit."""
        pis = self.rd(PX_IS)
        if pis:
            self.wr(PX_IS, pis)
        self.hba.mmio_write(HBA_IS, 1 << self.port, 4)
        return pis

    def _done(self, ci: int, sact: int, seen: int) -> tuple[int, int, int] | None:
        """(PxTFD, PxCI, PxSACT) once the issued commands ended (an error interrupt, or neither BSY nor DRQ with
        their slots and tags clear), None while they run."""
        state = tfd, port_ci, port_sact = self.rd(PX_TFD), self.rd(PX_CI), self.rd(PX_SACT)
        if seen & (PXIS_TFES | PXIS_OFS | PXIS_HBFS):
            return state
        if tfd & (STATUS_BSY | STATUS_DRQ) or port_ci & (ci & ~sact) or port_sact & sact:
            return None
        return state

    def _outcome(self, cmd: _Cmd, seen: int, timed_out: bool, regs: tuple[int, int, int, int]) -> AhciOutcome:
        """One command's outcome from `regs`, PxTFD, PxSERR, PxCI and PxSACT at completion."""
        mem = self.mem
        tfd, serr, ci, sact = regs
        status, error = tfd & 0xFF, tfd >> 8 & 0xFF
        d2h = mem.read(self.fb + RX_FIS_RFIS, 20)
        pio = mem.read(self.fb + RX_FIS_PSFIS, 20)
        sdb = mem.read(self.fb + RX_FIS_SDBFIS, 8)
        if cmd.ncq:
            failed = timed_out or bool(sact & (1 << cmd.slot))
            prdbc = None
        else:
            failed = timed_out or bool(ci & (1 << cmd.slot)) or bool(status & STATUS_ERR) or \
                bool(seen & (PXIS_TFES | PXIS_OFS | PXIS_HBFS))
            prdbc = mem.read_u32(self.clb + cmd.slot * AHCI_CMD_HEADER_SIZE + 4)
        data_in = b""
        if not failed and cmd.data_out is None and cmd.buffer is not None:
            data_in = mem.read(cmd.buffer, cmd.data_in_len)
        reports_lba = len(cmd.fis) > 2 and cmd.fis[0] == FIS_TYPE_REG_H2D and cmd.fis[2] in _REPORTS_LBA
        lba = None
        if not cmd.ncq and (failed or reports_lba) and d2h[0] == FIS_TYPE_REG_D2H:
            fields = unpack_d2h_fis(d2h)
            lba = fields["lba"]
            if reports_lba and cmd.fis[2] == C.READ_NATIVE_MAX_ADDRESS:      # LBA28: bits 27:24 in the device
                lba = (lba & 0xFFFFFF) | (fields["device"] & 0x0F) << 24
        return AhciOutcome(status=status, error=error,
                           data_in=data_in, lba=lba, port_is=seen, tfd=tfd, serr=serr, ci=ci, sact=sact,
                           d2h_fis=d2h, pio_fis=pio, sdb_fis=sdb, prdbc=prdbc, timed_out=timed_out,
                           time=self.sim.now, completed=not failed)

    def _recover(self, *, comreset: bool) -> Generator[Any, Any, None]:
        """libata EH as libqos ahci_port_check_error does it: stop the engine (clears PxCI/PxSACT), COMRESET
        after a timeout (ahci_hardreset), clear PxSERR/PxIS, start again."""
        self.wr(PX_CMD, self.rd(PX_CMD) & ~PXCMD_ST)
        if comreset:
            self.wr(PX_SCTL, (self.rd(PX_SCTL) & ~0xF) | 1)
            yield self.sim.timeout(0.001)
            self.wr(PX_SCTL, self.rd(PX_SCTL) & ~0xF)
        self.wr(PX_SERR, 0xFFFFFFFF)
        self._ack()
        self.wr(PX_CMD, self.rd(PX_CMD) | PXCMD_ST)
        self._ack()
        yield self.sim.timeout(0)


def _fis_of(regs: AtaRegisters) -> bytes:
    """A Register H2D FIS with C = 1 for `regs` (ahci_tf_to_fis / ata_tf_to_fis)."""
    return pack_h2d_fis(command=regs.command, features=regs.features, lba=regs.lba, count=regs.count,
                        device=regs.device, control=regs.control)


def _rw_registers(lba: int, count: int, libata: LibataConfig, *, write: bool, ncq: bool, pio: bool = False,
                  tag: int = 0, lba48: bool = False) -> AtaRegisters:
    """ata_build_rw_tf: NCQ (FEATURES = count, COUNT = tag << 3), else LBA28 when lba_28_ok (the command ends below
    0FFFFFFFh, at most ATA_MAX_SECTORS), else LBA48."""
    if not 1 <= count <= 0x10000:
        raise DriverLayoutError(f"sector count {count} is outside 1..65536")
    if ncq:
        command = C.WRITE_FPDMA_QUEUED if write else C.READ_FPDMA_QUEUED
        return AtaRegisters(command, features=count & 0xFFFF, lba=lba, count=tag << 3, device=DEVICE_LBA)
    if not lba48 and lba_28_ok(lba, count, libata):
        if pio:
            command = C.WRITE_SECTORS if write else C.READ_SECTORS
        else:
            command = C.WRITE_DMA if write else C.READ_DMA
        return AtaRegisters(command, lba=lba & 0xFFFFFF, count=count & 0xFF,
                            device=DEVICE_LBA | (lba >> 24 & 0xF))
    if pio:
        command = C.WRITE_SECTORS_EXT if write else C.READ_SECTORS_EXT
    else:
        command = C.WRITE_DMA_EXT if write else C.READ_DMA_EXT
    return AtaRegisters(command, lba=lba, count=count & 0xFFFF, device=DEVICE_LBA)
