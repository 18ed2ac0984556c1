"""An AHCI HBA as QEMU's ich9-ahci (hw/ide/ahci.c) behaves: HBA memory, command lists, FISes, NCQ.

How completions and errors are reported changed in QEMU 8.2 (and in the 7.2 stable series); `AhciConfig`
(controllers/ahci_config.py) holds those choices, defaulting to 8.2, which follows AHCI 1.3.1; profiles give theirs.

The HBA only moves registers, FISes and bytes; what a command means is `AtaDevice`'s business
(controllers/ata/device.py). QEMU function names are cited where a behaviour is theirs.

Timing: a command's effects (data moved, image changed) happen when it is issued; the port's `DeviceClock`
delivers its completion (FISes, PxTFD, PxIS, the interrupt, PxCI/PxSACT bits) once the cost of the block-layer
requests it caused has passed. Non-NCQ commands of a port run one after another (QEMU skips slots while BSY/DRQ
is set and rescans from a bottom half, check_cmd / ahci_cmd_done); NCQ commands overlap, one delivery per tag.
With `timing=None` everything completes inside the register write that issued it.

Deliberate differences from QEMU, so that a bad command gets the protocol's exact error and never crashes the
emulator (docs/architecture.md, "Exact semantics"; QEMU's own outcome noted):
- A PRDT that is shorter than the transfer ends a non-NCQ command with ERR/ABRT, PxIS.OFS and TFES. (QEMU: the
  DMA completes 0x50 with PRDBC 0 and no FIS or interrupt, ide_dma_cb "PRDs too short": the qemu-7.2 departure
  `ahci-short-prdt`.) An NCQ command raises OFS alone without a FIS, as QEMU's process_ncq_command.
- A PRDT entry or table outside guest RAM ends the command with ERR/ABRT, PxIS.HBFS and TFES. (QEMU reads or
  writes unassigned memory through dma_memory_rw, which silently drops or returns junk.)
- The whole data phase is checked before the device runs, so a failing command never touches the image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controllers.ahci_config import AhciConfig
from controllers.ata.codec import (
    h2d_fis_values,
    pack_d2h_fis,
    pack_pio_setup_fis,
    pack_sdb_fis,
    prdt_regions,
    unpack_cmd_header,
)
from controllers.ata.device import PAGE_COMMANDS, AtaDevice, AtaRegisters, AtaResult, Protocol, Transfer
from controllers.ata.layouts import (
    AHCI_CMD_HEADER_SIZE,
    AHCI_CMD_LIST_SIZE,
    AHCI_CMD_TABLE_HEADER_SIZE,
    AHCI_PORT_BASE,
    AHCI_PORT_SIZE,
    AHCI_PRDT_ENTRY_SIZE,
    AHCI_RX_FIS_SIZE,
    CAP_ISS_SHIFT,
    CAP_NCS_SHIFT,
    CAP_S64A,
    CAP_SAM,
    CAP_SNCQ,
    CONTROL_SRST,
    DEVICE_LBA,
    DEVICE_OBSOLETE,
    ERROR_ABRT,
    FIS_TYPE_REG_H2D,
    GHC_AE,
    GHC_HR,
    H2D_FIS_SIZE,
    HBA_CAP,
    HBA_GHC,
    HBA_IS,
    HBA_PI,
    HBA_VS,
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
    PX_SIG,
    PX_SSTS,
    PX_TFD,
    PXCMD_CR,
    PXCMD_FR,
    PXCMD_FRE,
    PXCMD_ICC_MASK,
    PXCMD_POD,
    PXCMD_RO_MASK,
    PXCMD_ST,
    PXCMD_SUD,
    PXIE_WRITABLE,
    PXIS_DHRS,
    PXIS_HBFS,
    PXIS_OFS,
    PXIS_PSS,
    PXIS_SDBS,
    PXIS_TFES,
    PXTFD_AFTER_RESET,
    RX_FIS_PSFIS,
    RX_FIS_RFIS,
    RX_FIS_SDBFIS,
    SCTL_DET_MASK,
    SDB_STATUS_MASK,
    SECTOR_SIZE,
    SIG_DISK,
    SSTS_QEMU_ATTACHED,
    STATUS_BSY,
    STATUS_DRDY,
    STATUS_DRQ,
    STATUS_DSC,
    STATUS_ERR,
    VS_AHCI_1_0,
    AtaCommand,
    decode_lba,
)
from emu.errors import DmaError
from emu.memory import scatter
from emu.sim import DeviceClock

if TYPE_CHECKING:
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, LatencyModel, Simulation

ICH9_PORTS = 6                       # ich9-ahci always has six ports (hw/ide/ich.c)
AHCI_SLOTS = 32
STATUS_DF = 0x20                     # QEMU WRERR_STAT
STATUS_DRQ_PHASE = STATUS_DRDY | STATUS_DSC | STATUS_DRQ   # 0x58: status while a PIO block is offered
STATUS_AFTER_RESET = STATUS_DSC | STATUS_DF                # 0x30: ahci_reset_port for a disk (no DRDY)
STATUS_NCQ_OK = STATUS_DRDY | STATUS_DSC                   # ncq_cb: READY_STAT | SEEK_STAT
STATUS_FAIL = STATUS_DRDY | STATUS_ERR                     # ide_abort_command / ncq_err

# Opcodes whose register outputs QEMU writes 48 bits wide (ide_cmd_lba48_transform(s, 1) callers, and
# cmd_read_native_max with WIN_READ_NATIVE_MAX_EXT).
_LBA48_OPCODES = frozenset({0x24, 0x25, 0x27, 0x29, 0x34, 0x35, 0x39})
_NCQ_EXECUTED = frozenset({AtaCommand.READ_FPDMA_QUEUED, AtaCommand.WRITE_FPDMA_QUEUED})
_MULTIPLE = frozenset({0xC4, 0xC5, 0x29, 0x39})
_READ_NATIVE_MAX = frozenset({0x27, 0xF8})
_CHECK_POWER = frozenset({0xE5, 0x98})
_U32 = 0xFFFFFFFF
# port registers backed by an attribute of AhciPort (PxSSTS is computed)
_PORT_REGISTERS = {PX_CLB: "clb", PX_CLBU: "clbu", PX_FB: "fb", PX_FBU: "fbu", PX_IS: "is_", PX_IE: "ie",
                   PX_CMD: "cmd", PX_TFD: "tfd", PX_SIG: "sig", PX_SCTL: "sctl", PX_SERR: "serr", PX_SACT: "sact",
                   PX_CI: "ci"}


@dataclass
class CommandRecord:
    """One command's passage through the HBA, for timelines and tests (simulated seconds)."""

    port: int
    slot: int
    command: int
    ncq: bool
    issue_time: float
    done_time: float | None = None
    status: int | None = None
    error: int | None = None
    nbytes: int = 0


class _Fault(Exception):
    """The PRDT cannot carry the data phase: `irq` is the PxIS error bit (OFS short, HBFS outside RAM)."""

    def __init__(self, irq: int) -> None:
        super().__init__(irq)
        self.irq = irq


class AhciPort:
    """One port: its registers (AHCIPortRegs) and the shadow task file of its device (QEMU's IDEState)."""

    def __init__(self, hba: AhciHba, index: int, device: AtaDevice | None) -> None:
        self.hba = hba
        self.index = index
        self.device = device
        self.clb = self.clbu = self.fb = self.fbu = 0
        self.is_ = self.ie = 0
        self.cmd = PXCMD_SUD | PXCMD_POD
        self.tfd = PXTFD_AFTER_RESET
        self.sig = _U32
        self.sctl = self.serr = self.sact = self.ci = 0
        self.lst: int | None = None              # mapped command list (PxCMD.CR)
        self.res_fis: int | None = None          # mapped received-FIS area (PxCMD.FR)
        self.busy_slot: int | None = None        # the non-NCQ command in flight
        self.ncq_used: set[int] = set()
        self.init_d2h_sent = False
        self.in_reset = False                    # STATE_RESET after a C=0 FIS with SRST
        self.clock = DeviceClock(hba.sim, hba.timing)    # reset with the port: pending completions are dropped
        # IDEState registers: status, error, LBA bytes (FIS bytes 4-6 and 8-10), device/select, count
        self.status = STATUS_AFTER_RESET
        self.error = 0x01
        self.lba = 0
        self.select = 0xA0
        self.nsector = 0

    @property
    def present(self) -> bool:
        return self.device is not None

    # -- registers ---------------------------------------------------------------------------------
    def read(self, reg: int) -> int:
        """ahci_port_read (a driver polls PxIS/PxTFD/PxCI several times per command: one lookup, no dict built)."""
        if reg == PX_SSTS:
            return SSTS_QEMU_ATTACHED if self.present else 0
        name = _PORT_REGISTERS.get(reg)
        return 0 if name is None else getattr(self, name)

    def write(self, reg: int, val: int) -> None:
        """ahci_port_write (the registers a driver writes per command, PxIS, PxCI and PxSACT, tested first)."""
        if reg == PX_IS:
            self.is_ &= ~val
            self.hba.check_irq()
        elif reg == PX_CI:
            self.ci |= val
            self.check_cmd()
        elif reg == PX_SACT:
            self.sact |= val                     # RW1
        elif reg == PX_CLB:
            self.clb = val
        elif reg == PX_CLBU:
            self.clbu = val
        elif reg == PX_FB:
            self.fb = val
        elif reg == PX_FBU:
            self.fbu = val
        elif reg == PX_IE:
            self.ie = val & PXIE_WRITABLE
            self.hba.check_irq()
        elif reg == PX_CMD:
            # read-only fields (CR, FR, CCS, ...) kept; ICC forced to 0 (QEMU supports no ICC changes)
            self.cmd = (self.cmd & PXCMD_RO_MASK) | (val & ~(PXCMD_RO_MASK | PXCMD_ICC_MASK) & _U32)
            self._cond_start_engines()
            if self.cmd & PXCMD_FR and not self.init_d2h_sent:
                self._init_d2h()
            self.check_cmd()
        elif reg == PX_SCTL:
            if self.sctl & SCTL_DET_MASK == 1 and val & SCTL_DET_MASK == 0:
                self.reset()                     # COMRESET on DET 1 -> 0
            self.sctl = val
        elif reg == PX_SERR:
            self.serr &= ~val
        # PxTFD, PxSIG, PxSSTS read-only; PxSNTF, PxFBS, PxDEVSLP unimplemented (QEMU logs them)

    def _cond_start_engines(self) -> None:
        """ahci_cond_start_engines: ST 0->1 maps the 1 KiB command list (CR), FRE 0->1 the 256-byte FIS area
        (FR); an address outside RAM refuses the start. ST 1->0 also clears PxSACT and PxCI (config.stop_clears_ci)."""
        mem = self.hba.mem
        if self.cmd & PXCMD_ST and not self.cmd & PXCMD_CR:
            addr = self.clbu << 32 | self.clb
            if _inside(mem, addr, AHCI_CMD_LIST_SIZE):
                self.lst = addr
                self.cmd |= PXCMD_CR
            else:
                self.cmd &= ~PXCMD_ST
        elif not self.cmd & PXCMD_ST and self.cmd & PXCMD_CR:
            self.lst = None
            self.cmd &= ~PXCMD_CR
            if self.hba.config.stop_clears_ci:
                self.sact = 0
                self.ci = 0
        if self.cmd & PXCMD_FRE and not self.cmd & PXCMD_FR:
            addr = self.fbu << 32 | self.fb
            if _inside(mem, addr, AHCI_RX_FIS_SIZE):
                self.res_fis = addr
                self.cmd |= PXCMD_FR
            else:
                self.cmd &= ~PXCMD_FRE
        elif not self.cmd & PXCMD_FRE and self.cmd & PXCMD_FR:
            self.res_fis = None
            self.cmd &= ~PXCMD_FR

    def reset(self) -> None:
        """ahci_reset_port: PxSERR/PxSACT 0, PxTFD 0x7F, PxSIG all ones, in-flight commands dropped; a disk
        then shows status 0x30, error 0x01 and the signature, sent as the initial D2H FIS once FRE is on."""
        self.clock.reset()
        self.serr = self.sact = 0
        if self.hba.config.pxci_rule == "on-success":
            self.ci = 0                          # ahci_reset_port, since eabb921250
        self.tfd = PXTFD_AFTER_RESET
        self.sig = _U32
        self.busy_slot = None
        self.init_d2h_sent = False
        self.in_reset = False
        self.ncq_used.clear()
        if not self.present:
            return
        self.status, self.error = STATUS_AFTER_RESET, 0x01
        self.lba = 0
        self._set_signature()
        self._init_d2h()

    def _set_signature(self) -> None:
        """Device register 0xA0 and ide_set_signature for a disk (SATA_SIGNATURE_DISK): hcyl:lcyl:sector:nsector
        = 00:00:01:01; the HOB bytes stay."""
        self.select = DEVICE_OBSOLETE
        self.lba = (self.lba & ~0xFFFFFF) | (SIG_DISK >> 8) & 0xFFFFFF
        self.nsector = SIG_DISK & 0xFF

    def _init_d2h(self) -> None:
        """ahci_init_d2h: the first D2H FIS (I = 1), and PxSIG from the task file, once FIS receive is on."""
        if self.init_d2h_sent or not self.present:
            return
        if self._write_fis_d2h(True):
            self.init_d2h_sent = True
            self.sig = ((self.lba >> 16 & 0xFF) << 24 | (self.lba >> 8 & 0xFF) << 16 | (self.lba & 0xFF) << 8
                        | self.nsector & 0xFF)

    # -- received FISes --------------------------------------------------------------------------------
    def _fis_on(self) -> bool:
        return self.res_fis is not None and bool(self.cmd & PXCMD_FRE)

    def _write_fis_d2h(self, interrupt: bool) -> bool:
        """ahci_write_fis_d2h: FB+0x40, PxTFD = error << 8 | status; TFES on ERR, DHRS if I (8.2: one of them,
        never both; config.error_irq). Nothing at all while FIS receive is off."""
        if not self._fis_on():
            return False
        # the task-file registers every device-to-host FIS carries (ahci_write_fis_d2h/_pio copy them)
        self.hba.mem.write(self.res_fis + RX_FIS_RFIS, pack_d2h_fis(
            status=self.status, error=self.error, lba=self.lba, device=self.select, count=self.nsector, i=interrupt))
        self.tfd = self.error << 8 | self.status
        error = bool(self.status & STATUS_ERR)
        if error:
            self.trigger(PXIS_TFES)
        if interrupt and (not error or self.hba.config.error_irq == "tfes+dhrs"):
            self.trigger(PXIS_DHRS)
        return True

    def _write_fis_pio(self, length: int, interrupt: bool) -> None:
        """ahci_write_fis_pio: FB+0x20 with the DRQ-time status (0x58) as status and E_Status, the block's
        byte count; PSS only when I is set (PIO data-in, and PIO data-out after the first DRQ block)."""
        if not self._fis_on():
            return
        fis = pack_pio_setup_fis(status=self.status, error=self.error, lba=self.lba, device=self.select,
                                 count=self.nsector, i=interrupt, e_status=self.status, transfer_count=length & 0xFFFF)
        self.hba.mem.write(self.res_fis + RX_FIS_PSFIS, fis)
        self.tfd = self.error << 8 | self.status
        if interrupt:
            self.trigger(PXIS_PSS)

    def _write_fis_sdb(self, finished: int) -> None:
        """ahci_write_fis_sdb: FB+0x58 with the finished tags; PxTFD keeps BSY/DRQ; PxSACT loses the finished
        tags; TFES on ERR, else SDBS (I is always 1; 7.2.0 raised SDBS even on ERR, config.ncq_error). Nothing at
        all while FIS receive is off."""
        if not self._fis_on():
            return
        status = self.status & SDB_STATUS_MASK
        self.hba.mem.write(self.res_fis + RX_FIS_SDBFIS,
                           pack_sdb_fis(i=True, status=status, error=self.error, sactive=finished))
        self.tfd = self.error << 8 | status | (self.tfd & (STATUS_BSY | STATUS_DRQ))
        self.sact &= ~finished
        tfes = status & STATUS_ERR and self.hba.config.ncq_error == "tfes"
        self.trigger(PXIS_TFES if tfes else PXIS_SDBS)

    def trigger(self, bit: int) -> None:
        """ahci_trigger_irq."""
        self.is_ |= bit
        self.hba.check_irq()

    # -- command issue ---------------------------------------------------------------------------------
    def _clear_ci(self, slot: int) -> None:
        """A command of `slot` ended: ahci_clear_cmd_issue (only without ERR, BSY and DRQ), or 7.2.0's
        check_cmd, which cleared every slot it handled (config.pxci_rule)."""
        if self.hba.config.pxci_rule == "after-handling" or not self.status & (STATUS_ERR | STATUS_BSY | STATUS_DRQ):
            self.ci &= ~(1 << slot)

    def _dropped(self, slot: int) -> None:
        """`slot` was handled without completing a command (an ignored FIS, a device control FIS, a partly mapped
        table, a queued tag in use, a diagnostic that never ends): under "on-success" its PxCI bit stays set;
        7.2.0's check_cmd cleared it all the same."""
        if self.hba.config.pxci_rule == "after-handling":
            self.ci &= ~(1 << slot)

    def check_cmd(self) -> None:
        """check_cmd: with ST set, handle every issued slot from 0 up, unless a non-NCQ command is running."""
        slot = 0
        while self.cmd & PXCMD_ST:
            pending = self.ci >> slot            # the issued slots from `slot` up, as PxCI stands now
            if not pending:
                return
            slot += (pending & -pending).bit_length() - 1
            if self.busy_slot is not None:
                return                           # handle_cmd: BSY/DRQ set, retried when the command ends
            if self._handle_cmd(slot) == "stop":
                return
            slot += 1

    def _handle_cmd(self, slot: int) -> str | None:
        """handle_cmd + handle_reg_h2d_fis: fetch the header and the 0x80-byte table head, decode the CFIS."""
        mem = self.hba.mem
        if self.lst is None or self.device is None:
            return None
        header = self.lst + slot * AHCI_CMD_HEADER_SIZE
        fields = unpack_cmd_header(mem.read(header, AHCI_CMD_HEADER_SIZE))
        prdtl, ctba = fields["prdtl"], fields["ctba"]
        if not _inside(mem, ctba, AHCI_CMD_TABLE_HEADER_SIZE):
            if _inside(mem, ctba, 1):
                self.trigger(PXIS_HBFS)          # handle_cmd: a partial map of the table -> HBFS
                self._dropped(slot)
            return None
        (fis_type, c, reserved, pm_port, command, features, lba, device, count, _icc, control,
         _auxiliary) = h2d_fis_values(mem.read(ctba, H2D_FIS_SIZE))
        if fis_type != FIS_TYPE_REG_H2D or pm_port or reserved:
            # an unhandled FIS type, or handle_reg_h2d_fis refusing a PM port or reserved bits: ignored
            self._dropped(slot)
            return None
        if not c:
            return self._device_control(slot, fields["c"], control)
        regs = AtaRegisters(command, features, lba, count, device, control)
        if regs.command in NCQ_COMMANDS:
            self._process_ncq(slot, ctba, prdtl, regs)
            return None
        return self._start(slot, header, ctba, prdtl, regs)

    def _device_control(self, slot: int, clear_busy: bool, control: int) -> None:
        """A C = 0 FIS: SRST set enters the reset state, and with the header's C bit ("clear busy upon R_OK",
        AHCI 1.3.1 10.4.1) ends the slot as a completion would; SRST cleared then resets the port
        (ahci_reset_port, which clears PxCI under pxci_rule "on-success")."""
        if not self.in_reset:
            self.in_reset = bool(control & CONTROL_SRST)
            if self.in_reset and clear_busy:
                self._clear_ci(slot)
        elif not control & CONTROL_SRST:
            self.reset()
        self._dropped(slot)
        return None

    def _sglist(self, ctba: int, prdtl: int, nbytes: int) -> list[tuple[int, int]]:
        """ahci_populate_sglist: PRDT regions clipped to the transfer; raises _Fault when it cannot carry it."""
        if not nbytes:
            return []
        mem = self.hba.mem
        table = ctba + AHCI_CMD_TABLE_HEADER_SIZE
        if not prdtl:
            raise _Fault(PXIS_OFS)
        if not _inside(mem, table, prdtl * AHCI_PRDT_ENTRY_SIZE):
            raise _Fault(PXIS_HBFS)
        regions, total = [], 0
        for dba, size in prdt_regions(mem.read(table, prdtl * AHCI_PRDT_ENTRY_SIZE), prdtl):
            n = min(size, nbytes - total)
            if not _inside(mem, dba, n):
                raise _Fault(PXIS_HBFS)
            regions.append((dba, n))
            total += n
            if total == nbytes:
                return regions
        raise _Fault(PXIS_OFS)

    def _run(self, regs: AtaRegisters, transfer: Transfer, ctba: int, prdtl: int) -> tuple[AtaResult, int, int]:
        """Move the data `transfer` (the device's plan of `regs`) asks for and execute: (result, bytes transferred,
        extra PxIS error bits)."""
        device = self.device
        good = self._good_pio_in_bytes(regs, transfer)
        if good is not None:
            # ide_sector_read checks the range per DRQ block: the blocks before the first bad one are read and
            # moved to the PRDT (ahci_pio_transfer, which moves nothing without one), then the command aborts
            try:
                regions = self._sglist(ctba, prdtl, good)
            except _Fault as fault:
                if fault.irq != PXIS_OFS:
                    return AtaResult(STATUS_FAIL, ERROR_ABRT), 0, fault.irq
                regions = []
            views = [self.hba.mem.view(a, n) for a, n in regions]
            try:
                head = device.execute(dataclasses.replace(regs, count=good // SECTOR_SIZE), into=views or None)
            finally:
                self.hba.mem.release(views)
            if not head.ok:
                return head, 0, 0
            return device.execute(regs, transfer=transfer), good, 0   # dma_buf_commit counts it all the same
        try:
            regions = self._sglist(ctba, prdtl, transfer.nbytes)
        except _Fault as fault:
            return AtaResult(STATUS_FAIL, ERROR_ABRT), 0, fault.irq
        mem = self.hba.mem
        views = [mem.view(a, n) for a, n in regions]   # lent to the device for this command only
        try:
            if transfer.protocol in (Protocol.PIO_OUT, Protocol.DMA_OUT, Protocol.FPDMA_OUT):
                result = device.execute(regs, views[0] if len(views) == 1 else b"".join(views), transfer=transfer)
            else:
                result = device.execute(regs, into=views or None, transfer=transfer)
                if result.ok and result.data_in:         # a page the device built (IDENTIFY, SMART)
                    scatter(result.data_in, views)
        finally:
            mem.release(views)
        return result, (transfer.nbytes if result.ok else 0), 0

    def _good_pio_in_bytes(self, regs: AtaRegisters, transfer: Transfer) -> int | None:
        """For a PIO read of sectors that starts inside the disk and runs past its end, the bytes of the whole DRQ
        blocks before the end (ide_sect_range_ok per block); None for any other command."""
        if transfer.protocol is not Protocol.PIO_IN or regs.command in PAGE_COMMANDS or not transfer.nbytes:
            return None
        start, total = self._start_lba(regs), self.device.config.capacity_sectors
        if not 0 <= start < total or start + transfer.nbytes // SECTOR_SIZE <= total:
            return None
        block = (self.device.multiple or 1) if regs.command in _MULTIPLE else 1
        good = (total - start) // block * block * SECTOR_SIZE
        return good or None

    def _start(self, slot: int, header: int, ctba: int, prdtl: int, regs: AtaRegisters) -> str | None:
        """A non-NCQ command: task file from the FIS, PRDBC reset, the device runs it at once; the completion
        (PIO Setup FIS, D2H FIS, PxCI) comes after the modelled time (ahci_cmd_done)."""
        self.lba, self.select, self.nsector = regs.lba, regs.device, regs.count
        self.error = 0
        self.hba.mem.write_u32(header + 4, 0)   # cmd->status = 0: PRDBC counts this command's bytes
        self.busy_slot = slot
        record = self.hba.record(self.index, slot, regs.command, ncq=False)
        transfer = self.device.plan(regs)
        result, nbytes, fault = self._run(regs, transfer, ctba, prdtl)
        record.nbytes = nbytes
        if not self.clock.timed:                 # check_cmd goes on with the next slot unless this one stops it
            return self._complete(slot, header, regs, transfer, result, nbytes, fault, record)
        self.clock.later(self.clock.cost(result.completions), self._complete, slot, header, regs, transfer, result,
                         nbytes, fault, record)
        return "stop"

    def _complete(self, slot: int, header: int, regs: AtaRegisters, transfer: Transfer, result: AtaResult,
                  nbytes: int, fault: int, record: CommandRecord) -> str | None:
        mem = self.hba.mem
        mem.write_u32(header + 4, nbytes)        # ahci_commit_buf: PRDBC
        pio = transfer.protocol in (Protocol.PIO_IN, Protocol.PIO_OUT) and not fault
        if pio and (result.ok or transfer.protocol is Protocol.PIO_OUT):
            self._pio_fis(regs, transfer.protocol, transfer.nbytes, result.ok)
        elif pio and nbytes:                     # a read that failed after its first blocks moved
            self._pio_fis(regs, transfer.protocol, nbytes, True)
            self.nsector = (regs.count - nbytes // SECTOR_SIZE) & (0xFFFF if regs.command in _LBA48_OPCODES else 0xFF)
        previous = self.status, self.error
        self.status, self.error = result.status, result.error
        if result.ok:
            self._outputs(regs, result, transfer.nbytes)
        if result.signature and not self.device.config.diagnostic_completes:
            # QEMU: cmd_exec_dev_diagnostic never reaches ahci_cmd_done. No FIS, no interrupt, PxCI stays set (8.2;
            # handle_cmd, which only waits out BSY/DRQ, runs the slot again at the next scan).
            self.busy_slot = None
            self._dropped(slot)
            return None
        self.busy_slot = None
        self._clear_ci(slot)
        if result.unknown and self.hba.config.abort_fis_before_err:
            self.status, self.error = previous    # the FIS went out before ide_abort_command set ERR
            self._write_fis_d2h(True)
            self.status, self.error = result.status, result.error
        else:
            self._write_fis_d2h(True)
        if fault:
            self.trigger(fault)
        record.done_time, record.status, record.error = self.hba.sim.now, self.status, self.error
        if self.status & STATUS_ERR and self.hba.config.pxci_rule == "on-success":
            return "stop"                        # 8.2: no rescan after an error; the guest must recover
        if self.clock.timed and self.ci:
            self.check_cmd()                     # ahci_check_cmd_bh
        return None

    def _pio_fis(self, regs: AtaRegisters, protocol: Protocol, nbytes: int, ok: bool) -> None:
        """The PIO Setup FIS of the last DRQ block, as QEMU leaves it (one FIS per block, each overwriting)."""
        cmd = regs.command
        block = SECTOR_SIZE * ((self.device.multiple or 1) if cmd in _MULTIPLE else 1)
        if cmd in PAGE_COMMANDS:
            block = nbytes
        nblocks = max(1, -(-nbytes // block))
        self.status = STATUS_DRQ_PHASE
        if protocol is Protocol.PIO_IN:
            if cmd not in PAGE_COMMANDS:          # ide_sector_read_cb advances the registers before DRQ
                start, count = self._start_lba(regs), nbytes // SECTOR_SIZE
                self._set_sector(start + count, cmd in _LBA48_OPCODES)
                self.nsector = 0
            self._write_fis_pio(nbytes - (nblocks - 1) * block, True)
            return
        if not ok:                                # cmd_write_pio offers the first block before the range check
            self._write_fis_pio(min(block, nbytes), False)
            return
        last = nbytes - (nblocks - 1) * block
        start, count = self._start_lba(regs), nbytes // SECTOR_SIZE
        self._set_sector(start + count - last // SECTOR_SIZE, cmd in _LBA48_OPCODES)
        self.nsector = last // SECTOR_SIZE
        self._write_fis_pio(last, nblocks > 1)

    def _start_lba(self, regs: AtaRegisters) -> int:
        heads, sectors = self.device.chs[1], self.device.chs[2]
        return decode_lba({"lba": regs.lba, "device": regs.device}, lba48=regs.command in _LBA48_OPCODES,
                          heads=heads, sectors=sectors)

    def _outputs(self, regs: AtaRegisters, result: AtaResult, nbytes: int) -> None:
        """Register outputs of a successful command, as QEMU's ide_set_sector / nsector leave them."""
        cmd = regs.command
        if result.lba is not None and cmd in _READ_NATIVE_MAX:
            self._set_sector(result.lba, cmd == 0x27)
        elif cmd in _CHECK_POWER and result.count is not None:
            self.nsector = result.count
        elif result.cylinders is not None:       # SMART RETURN STATUS: lcyl/hcyl
            self.lba = (self.lba & ~0xFFFF00) | result.cylinders << 8
        elif result.signature:                   # cmd_exec_dev_diagnostic
            self._set_signature()
        elif nbytes and cmd not in PAGE_COMMANDS and cmd != AtaCommand.DATA_SET_MANAGEMENT:
            self._set_sector(self._start_lba(regs) + nbytes // SECTOR_SIZE, cmd in _LBA48_OPCODES)
            self.nsector = 0

    def _set_sector(self, sector: int, lba48: bool) -> None:
        """ide_set_sector: LBA48 all six bytes, LBA28 three bytes and device bits 3:0, CHS when bit 6 is clear."""
        if self.select & DEVICE_LBA:
            if lba48:
                self.lba = sector & ((1 << 48) - 1)
            else:
                self.select = (self.select & 0xF0) | (sector >> 24 & 0x0F)
                self.lba = (self.lba & ~0xFFFFFF) | (sector & 0xFFFFFF)
            return
        _, heads, sectors = self.device.chs
        cyl, rest = divmod(sector, heads * sectors)
        head, sec = divmod(rest, sectors)
        self.select = (self.select & 0xF0) | (head & 0x0F)
        self.lba = (self.lba & ~0xFFFFFF) | (cyl & 0xFFFF) << 8 | (sec + 1) & 0xFF

    # -- native command queuing ------------------------------------------------------------------------
    def _process_ncq(self, slot: int, ctba: int, prdtl: int, regs: AtaRegisters) -> None:
        """process_ncq_command: tag = COUNT 7:3; a tag in use is ignored; PxCI cleared and a D2H FIS with I = 0
        at once; READ/WRITE FPDMA QUEUED run, completing with a Set Device Bits FIS per tag (ncq_cb)."""
        tag = (regs.count >> 3) & 0x1F
        if tag in self.ncq_used:
            self._dropped(slot)                   # "tag %d already used": no completion
            return
        self._clear_ci(slot)
        if self.hba.config.ncq_issue_d2h:
            self._write_fis_d2h(False)
        self.ncq_used.add(tag)
        record = self.hba.record(self.index, tag, regs.command, ncq=True)
        if regs.command not in _NCQ_EXECUTED:
            # execute_ncq_command's unsupported branch: ncq_err, then nothing (no SDB FIS, no interrupt)
            self._ncq_err(tag)
            self.ncq_used.discard(tag)
            record.status, record.error = self.status, self.error
            return
        result, nbytes, fault = self._run(regs, self.device.plan(regs), ctba, prdtl)
        record.nbytes = nbytes
        if self.clock.timed:
            self.clock.later(self.clock.cost(result.completions), self._ncq_complete, tag, result, fault, record)
        else:
            self._ncq_complete(tag, result, fault, record)

    def _ncq_complete(self, tag: int, result: AtaResult, fault: int, record: CommandRecord) -> None:
        """ncq_cb: the tag is free again; a Set Device Bits FIS reports it."""
        self.ncq_used.discard(tag)
        if fault == PXIS_OFS:
            # process_ncq_command: a PRDT shorter than the transfer -> ncq_err and OFS only, no Set Device Bits
            # FIS, so PxTFD and PxSACT stay (QEMU hw/ide/ahci.c, 7.2.0 to 8.2; observed on Debian's 7.2.22)
            self._ncq_err(tag)
            self.trigger(fault)
            record.done_time, record.status, record.error = self.hba.sim.now, self.status, self.error
            return
        if result.ok:
            self.status = STATUS_NCQ_OK           # the error register is left as it was
        else:
            self._ncq_err(tag)
        self._write_fis_sdb(self._ncq_finished(tag, result.ok))
        if fault:
            self.trigger(fault)
        record.done_time, record.status, record.error = self.hba.sim.now, self.status, self.error

    def _ncq_err(self, tag: int) -> None:
        """ncq_err: ERR + ABRT; QEMU 7.2.0 also wrote the tag's bit into PxSERR (config.ncq_error "serr-tag")."""
        self.status, self.error = STATUS_FAIL, ERROR_ABRT
        if self.hba.config.ncq_error == "serr-tag":
            self.serr |= 1 << tag

    def _ncq_finished(self, tag: int, ok: bool) -> int:
        """ncq_finish: the SDB FIS's finished bit for `tag`. 8.2 sets it for a command that did not fail; 7.2.0 set
        it unless PxSERR held the tag's bit, even one left over from an earlier failure."""
        if self.hba.config.ncq_error == "serr-tag":
            return 0 if self.serr & (1 << tag) else 1 << tag
        return 1 << tag if ok else 0


_HBA_REGISTERS = {HBA_CAP: "cap", HBA_GHC: "ghc", HBA_IS: "is_", HBA_PI: "pi", HBA_VS: "vs"}


class AhciHba:
    """QEMU's ich9-ahci: six ports, 32 slots, NCQ, 64-bit, Gen1, AHCI 1.0, ABAR of 4 KiB.

    `ports` lists the devices of ports 0.. (None: empty); missing ports up to six are empty. `config` holds the
    completion and error semantics that differ between QEMU releases (default: QEMU 8.2, the standard's).
    """

    def __init__(self, sim: Simulation, mem: GuestMemory, irq: InterruptLine, ports: list[AtaDevice | None],
                 timing: LatencyModel | None = None, config: AhciConfig | None = None) -> None:
        if len(ports) > ICH9_PORTS:
            raise ValueError(f"ich9-ahci has {ICH9_PORTS} ports, not {len(ports)}")
        self.sim = sim
        self.mem = mem
        self.irq = irq
        self.timing = timing                     # each port's clock times its completions with it
        self.config = config or AhciConfig()
        devices = list(ports) + [None] * (ICH9_PORTS - len(ports))
        self.ports = [AhciPort(self, n, dev) for n, dev in enumerate(devices)]
        # ahci_reg_init: NP = ports - 1, NCS = 31, ISS = Gen1, SNCQ, SAM, S64A -> 0xC0141F05
        self.cap = (ICH9_PORTS - 1) | (AHCI_SLOTS - 1) << CAP_NCS_SHIFT | 1 << CAP_ISS_SHIFT | CAP_SNCQ | \
            CAP_SAM | CAP_S64A
        self.pi = (1 << ICH9_PORTS) - 1
        self.vs = VS_AHCI_1_0
        self.ghc = GHC_AE
        self.is_ = 0
        self.records: list[CommandRecord] = []
        self.reset()

    def reset(self) -> None:
        """ahci_reset (GHC.HR, and power-on): IS 0, GHC = AE; per port IS/IE/SCTL 0, CMD = SUD|POD, port reset."""
        self.is_ = 0
        self.ghc = GHC_AE
        for port in self.ports:
            port.is_ = port.ie = port.sctl = 0
            port.cmd = PXCMD_SUD | PXCMD_POD
            port.lst = port.res_fis = None
            port.reset()
        self.check_irq()

    # -- ABAR ----------------------------------------------------------------------------------------
    def _read32(self, addr: int) -> int:
        """ahci_mem_read_32."""
        if addr < AHCI_PORT_BASE:
            name = _HBA_REGISTERS.get(addr)
            return 0 if name is None else getattr(self, name)
        index, reg = divmod(addr - AHCI_PORT_BASE, AHCI_PORT_SIZE)
        if index < len(self.ports):
            return self.ports[index].read(reg)
        return 0

    def mmio_read(self, offset: int, size: int = 4) -> int:
        """ahci_mem_read: 1/2/4/8-byte reads assembled from the 32-bit registers."""
        if size == 4 and not offset & 3:
            return self._read32(offset) & _U32
        if size not in (1, 2, 4, 8):
            raise ValueError(f"MMIO read size {size} is not 1, 2, 4 or 8")
        aligned = offset & ~3
        shift = (offset - aligned) * 8
        value = self._read32(aligned)
        if offset - aligned + size > 4:
            value |= self._read32(aligned + 4) << 32
        return (value >> shift) & ((1 << (size * 8)) - 1)

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        """ahci_mem_write: misaligned writes are dropped; host registers, then the port blocks."""
        if size not in (1, 2, 4, 8):
            raise ValueError(f"MMIO write size {size} is not 1, 2, 4 or 8")
        if offset & 3:
            return
        value &= (1 << (size * 8)) - 1
        if offset < AHCI_PORT_BASE:
            if offset == HBA_GHC:
                if value & GHC_HR:
                    self.reset()
                else:
                    self.ghc = (value & 3) | GHC_AE
                    self.check_irq()
            elif offset == HBA_IS:
                self.is_ &= ~value
                self.check_irq()
            return                                # CAP, PI, VS: read-only; the rest unimplemented
        index, reg = divmod(offset - AHCI_PORT_BASE, AHCI_PORT_SIZE)
        if index < len(self.ports):
            self.ports[index].write(reg, value & _U32)

    def check_irq(self) -> None:
        """ahci_check_irq: IS = ports with PxIS & PxIE; the line follows IS and GHC.IE."""
        is_ = 0
        for port in self.ports:
            if port.is_ & port.ie:
                is_ |= 1 << port.index
        self.is_ = is_
        if is_ and self.ghc & 2:
            self.irq.raise_()
        else:
            self.irq.lower()

    # -- records -------------------------------------------------------------------------------------
    def record(self, port: int, slot: int, command: int, *, ncq: bool) -> CommandRecord:
        rec = CommandRecord(port, slot, command, ncq, self.sim.now)
        self.records.append(rec)
        return rec


def _inside(mem: GuestMemory, addr: int, length: int) -> bool:
    try:
        mem.check(addr, length)
    except DmaError:
        return False
    return True
