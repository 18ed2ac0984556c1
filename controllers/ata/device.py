"""The ATA command set of a hard disk, independent of the transport that carries it.

PIIX IDE (task-file ports + bus-master DMA) and AHCI (H2D FIS + PRDT) both reduce a command to the same
command-block registers; this module decides what those registers mean. A transport asks `plan(regs)` for the
data phase, moves the bytes (guest memory <-> buffer), and calls `execute(regs, data_out)` for the status,
error and read data. Behaviour follows QEMU 7.2 `hw/ide/core.c` (ide_cmd_table, ide_sector_read/write,
ide_dma_cb, ide_issue_trim_cb, cmd_set_features) and `hw/ide/ahci.c` (process_ncq_command); every difference
between hypervisors or the standard is a field of `AtaConfig`, never a version check here.

One deliberate difference from QEMU: QEMU checks the LBA range per PIO block / DMA scatter-gather chunk, so an
out-of-range PIO/DMA transfer can write its first chunks before failing. Here the whole range is checked before
the image is touched, so a failing command never changes the image (docs/architecture.md, "Exact semantics").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from controllers.ata.config import AtaConfig
from controllers.ata.dsm import decode_entries
from controllers.ata.identify import build_identify, default_chs, transfer_mode_words
from controllers.ata.layouts import (
    DSM_TRIM,
    ERROR_ABRT,
    ERROR_AMNF,
    ERROR_IDNF,
    LBA28_LIMIT,
    LBA48_LIMIT,
    SECTOR_SIZE,
    SETFEATURES_WC_OFF,
    SETFEATURES_WC_ON,
    SETFEATURES_XFER,
    STATUS_DRDY,
    STATUS_DSC,
    STATUS_ERR,
    AtaCommand,
    decode_count,
    decode_lba,
    ncq_fields,
)
from controllers.ata.smart import PAGE_FEATURES, SmartState
from emu.block import Completion, Drive

C = AtaCommand

STATUS_OK = STATUS_DRDY | STATUS_DSC        # QEMU completion paths: READY_STAT | SEEK_STAT
STATUS_FAIL = STATUS_DRDY | STATUS_ERR      # QEMU ide_abort_command: READY_STAT | ERR_STAT

# SET FEATURES subcommands QEMU's cmd_set_features accepts and ignores (hw/ide/core.c, unchanged 7.2..8.2):
# revert to power-on defaults on/off, read look-ahead on/off, APM set/off, four NOPs, AAM on/off.
SETFEATURES_NOOPS = frozenset({0xCC, 0x66, 0xAA, 0x55, 0x05, 0x85, 0x69, 0x67, 0x96, 0x9A, 0x42, 0xC2})


class Protocol(StrEnum):
    """The data phase a command needs; the transport maps it onto PIO/DRQ, bus-master DMA or a PRDT."""

    NONE = "none"
    PIO_IN = "pio-in"
    PIO_OUT = "pio-out"
    DMA_IN = "dma-in"
    DMA_OUT = "dma-out"
    FPDMA_IN = "fpdma-in"
    FPDMA_OUT = "fpdma-out"


class Transfer(NamedTuple):
    protocol: Protocol
    nbytes: int


_REGISTER_LIMITS = (("command", 0x100), ("features", 0x10000), ("lba", LBA48_LIMIT), ("count", 0x10000),
                    ("device", 0x100), ("control", 0x100))


@dataclass(frozen=True, slots=True)
class AtaRegisters:
    """The command-block registers of one command, LBA48-wide, as a Register H2D FIS carries them (the fields of
    `layouts.ATA_TASKFILE`): features and count include their HOB bytes."""

    command: int
    features: int = 0
    lba: int = 0
    count: int = 0
    device: int = 0
    control: int = 0

    def __post_init__(self) -> None:
        # one chained test per command (every transport builds one); the loop only names the register that failed
        if (0 <= self.command < 0x100 and 0 <= self.features < 0x10000 and 0 <= self.lba < LBA48_LIMIT
                and 0 <= self.count < 0x10000 and 0 <= self.device < 0x100 and 0 <= self.control < 0x100):
            return
        for name, limit in _REGISTER_LIMITS:
            value = getattr(self, name)
            if not 0 <= value < limit:
                raise ValueError(f"register {name}={value:#x} does not fit (limit {limit:#x})")

    @classmethod
    def from_fields(cls, fields) -> AtaRegisters:
        """From a mapping with the `layouts.TASKFILE_FIELDS` keys (a parsed ATA_TASKFILE or H2D FIS)."""
        get = fields.get
        return cls(get("command", 0), get("features", 0), get("lba", 0), get("count", 0), get("device", 0),
                   get("control", 0))


@dataclass
class AtaResult:
    """What the device answers: status and error registers, read data, and register outputs (COUNT of CHECK
    POWER MODE, LBA of READ NATIVE MAX ADDRESS, LBA 23:8 of SMART RETURN STATUS, the signature after EXECUTE
    DEVICE DIAGNOSTIC) plus every block-layer completion it caused, in order."""

    status: int
    error: int
    data_in: bytes = b""
    count: int | None = None
    lba: int | None = None
    cylinders: int | None = None    # LBA 23:8 as QEMU sets lcyl/hcyl directly (SMART RETURN STATUS)
    signature: bool = False         # the task file shows the device signature (EXECUTE DEVICE DIAGNOSTIC)
    unknown: bool = False           # aborted as an opcode QEMU's ide_cmd_table lacks (ide_cmd_permitted false)
    completions: list[Completion] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.status & STATUS_ERR


# opcode -> (direction, data protocol, lba48)
_RW = {
    C.READ_SECTORS: ("in", Protocol.PIO_IN, False),
    C.READ_SECTORS_NORETRY: ("in", Protocol.PIO_IN, False),
    C.READ_SECTORS_EXT: ("in", Protocol.PIO_IN, True),
    C.READ_MULTIPLE: ("in", Protocol.PIO_IN, False),
    C.READ_MULTIPLE_EXT: ("in", Protocol.PIO_IN, True),
    C.READ_DMA: ("in", Protocol.DMA_IN, False),
    C.READ_DMA_NORETRY: ("in", Protocol.DMA_IN, False),
    C.READ_DMA_EXT: ("in", Protocol.DMA_IN, True),
    C.WRITE_SECTORS: ("out", Protocol.PIO_OUT, False),
    C.WRITE_SECTORS_NORETRY: ("out", Protocol.PIO_OUT, False),
    C.WRITE_SECTORS_EXT: ("out", Protocol.PIO_OUT, True),
    C.WRITE_MULTIPLE: ("out", Protocol.PIO_OUT, False),
    C.WRITE_MULTIPLE_EXT: ("out", Protocol.PIO_OUT, True),
    C.WRITE_VERIFY: ("out", Protocol.PIO_OUT, False),       # QEMU: cmd_write_pio
    C.WRITE_DMA: ("out", Protocol.DMA_OUT, False),
    C.WRITE_DMA_NORETRY: ("out", Protocol.DMA_OUT, False),
    C.WRITE_DMA_EXT: ("out", Protocol.DMA_OUT, True),
}
_MULTIPLE = frozenset({C.READ_MULTIPLE, C.READ_MULTIPLE_EXT, C.WRITE_MULTIPLE, C.WRITE_MULTIPLE_EXT})
_NCQ = {C.READ_FPDMA_QUEUED: ("in", Protocol.FPDMA_IN), C.WRITE_FPDMA_QUEUED: ("out", Protocol.FPDMA_OUT)}
_NO_DATA = frozenset({
    C.READ_VERIFY_SECTORS, C.READ_VERIFY_SECTORS_NORETRY, C.READ_VERIFY_SECTORS_EXT, C.SEEK, C.FLUSH_CACHE,
    C.FLUSH_CACHE_EXT, C.SET_FEATURES, C.READ_NATIVE_MAX_ADDRESS, C.READ_NATIVE_MAX_ADDRESS_EXT,
    C.CHECK_POWER_MODE, C.CHECK_POWER_MODE_OLD, *(
        C.STANDBY_IMMEDIATE, C.IDLE_IMMEDIATE, C.STANDBY, C.IDLE, C.SLEEP, C.STANDBY_IMMEDIATE_OLD,
        C.IDLE_IMMEDIATE_OLD, C.STANDBY_OLD, C.IDLE_OLD, C.SLEEP_OLD, C.RECALIBRATE,
        C.INITIALIZE_DEVICE_PARAMETERS, C.SECURITY_FREEZE_LOCK, C.SET_MULTIPLE_MODE),
})
# QEMU 7.2 ide_cmd_table entries whose handler does nothing for a hard disk. ide_exec_cmd adds DSC only for
# entries flagged SET_DSC, so the power commands (cmd_nop without SET_DSC) end with DRDY alone (0x40), while
# RECALIBRATE, INITIALIZE DEVICE PARAMETERS (cmd_nop) and SECURITY FREEZE LOCK (cmd_cfa_erase_sectors in the
# CFA_WEAR_LEVEL slot, which also clears COUNT) are SET_DSC (0x50).
_NOP_STATUS = {
    **dict.fromkeys((C.STANDBY_IMMEDIATE, C.IDLE_IMMEDIATE, C.STANDBY, C.IDLE, C.SLEEP, C.STANDBY_IMMEDIATE_OLD,
                     C.IDLE_IMMEDIATE_OLD, C.STANDBY_OLD, C.IDLE_OLD, C.SLEEP_OLD), STATUS_DRDY),
    **dict.fromkeys((C.RECALIBRATE, C.INITIALIZE_DEVICE_PARAMETERS, C.SECURITY_FREEZE_LOCK), STATUS_OK),
}
_NONE = Transfer(Protocol.NONE, 0)
# PIO-in commands whose data is a page the device builds, not sectors: no range check, and the task file does not
# advance (QEMU ide_transfer_start(..., ide_transfer_stop) in cmd_identify and cmd_smart).
PAGE_COMMANDS = frozenset({C.IDENTIFY_DEVICE, C.SMART})


class AtaDevice:
    """An ATA hard disk (QEMU `ide-hd`) on one Drive: IDENTIFY, PIO/DMA/NCQ reads and writes, DSM TRIM, flush,
    SET FEATURES. State that commands change (write cache, transfer mode) lives here, the rest in `config`."""

    def __init__(self, drive: Drive, config: AtaConfig) -> None:
        if config.capacity_sectors * SECTOR_SIZE > drive.capacity:
            raise ValueError(f"config capacity {config.capacity_sectors} sectors exceeds the {drive.capacity}-byte "
                             "drive")
        self.drive = drive
        self.config = config
        self.write_cache = config.write_cache      # word 85 bit 5; SET FEATURES 0x02 / 0x82
        self.transfer_mode: int | None = None      # COUNT of the last accepted SET FEATURES 0x03
        self.multiple = config.multiple_sectors    # READ/WRITE MULTIPLE block (QEMU mult_sectors); 0xC6 sets it
        self.identified_multiple: int | None = None   # word 59 as the first IDENTIFY built it
        self.chs = config.chs or default_chs(config.capacity_sectors)
        self.smart = SmartState()                  # QEMU ide_init_drive; survives device resets

    # -- the data phase --------------------------------------------------------------------------------
    def identify(self) -> bytes:
        """The IDENTIFY page as it stands now. QEMU builds it once (ide_identify: identify_set) and then rewrites
        only words 62/63/85/88 in place on SET FEATURES, so word 59 keeps the READ/WRITE MULTIPLE setting of the
        first IDENTIFY whatever SET MULTIPLE MODE did since (observed on Debian's QEMU 7.2.22, replay --diff)."""
        if self.identified_multiple is None:
            self.identified_multiple = self.multiple
        config = dataclasses.replace(self.config, write_cache=self.write_cache)
        return build_identify(config, transfer_mode=self.transfer_mode, multiple=self.identified_multiple)

    def plan(self, regs: AtaRegisters) -> Transfer:
        """The data phase `regs` asks for. Commands QEMU aborts before any data moves (unknown opcodes, DSM
        refused on its registers) plan none; range errors are found by `execute`, with no data moved."""
        cmd = regs.command
        if cmd == C.IDENTIFY_DEVICE:
            return Transfer(Protocol.PIO_IN, SECTOR_SIZE)
        rw = _RW.get(cmd)
        if rw is not None:
            if cmd in _MULTIPLE and not self.multiple:
                return _NONE                        # QEMU cmd_read/write_multiple: mult_sectors 0 -> abort
            return Transfer(rw[1], decode_count(regs.count, lba48=rw[2]) * SECTOR_SIZE)
        ncq = _NCQ.get(cmd)
        if ncq is not None:
            if not self.config.ncq_depth:
                return _NONE                        # no NCQ (PIIX): ide_cmd_table has no 0x60/0x61 entry
            return Transfer(ncq[1], self._ncq(regs)["sector_count"] * SECTOR_SIZE)
        if cmd == C.DATA_SET_MANAGEMENT:
            if self._dsm_refusal(regs) is not None:
                return _NONE
            # QEMU cmd_data_set_management: no ide_cmd_lba48_transform, COUNT is taken as is
            return Transfer(Protocol.DMA_OUT, regs.count * SECTOR_SIZE)
        if cmd == C.SMART and regs.features & 0xFF in PAGE_FEATURES and not self.smart.refusal(regs.features,
                                                                                              regs.lba):
            return Transfer(Protocol.PIO_IN, SECTOR_SIZE)
        return _NONE

    # -- execution ---------------------------------------------------------------------------------------
    def execute(self, regs: AtaRegisters, data_out: bytes | bytearray | memoryview | None = None,
                into: list[memoryview] | None = None, *, transfer: Transfer | None = None) -> AtaResult:
        """Run one command. `data_out` is the data phase of a write (exactly `plan(regs).nbytes` bytes, else
        ValueError: a transport bug); it may be a view of guest RAM, used only until this returns. `into`, when
        given, holds the transport's views of guest RAM where the sectors of a read land (no copy in between;
        `data_in` then stays empty; pages such as IDENTIFY still come back in `data_in`). `transfer` is what
        `plan(regs)` answered the transport just before (nothing ran in between), so it is not decoded twice.
        Guest errors never raise; they answer 0x41 with the error register."""
        if transfer is None:
            transfer = self.plan(regs)
        n = 0 if data_out is None else len(data_out)
        if transfer.protocol in (Protocol.PIO_OUT, Protocol.DMA_OUT, Protocol.FPDMA_OUT):
            if data_out is None or n != transfer.nbytes:
                raise ValueError(f"command {regs.command:#04x} needs {transfer.nbytes} bytes of data out, got {n}")
        elif n:
            raise ValueError(f"command {regs.command:#04x} has no data-out phase, got {n} bytes")

        cmd = regs.command
        if cmd == C.IDENTIFY_DEVICE:
            return AtaResult(STATUS_OK, 0, data_in=self.identify())
        rw = _RW.get(cmd)
        if rw is not None:
            if transfer.protocol is Protocol.NONE:
                return _abort()
            lba = decode_lba({"lba": regs.lba, "device": regs.device}, lba48=rw[2], heads=self.chs[1],
                             sectors=self.chs[2])
            return self._rw(rw[0], lba, transfer.nbytes // SECTOR_SIZE, data_out, into, fua=False)
        ncq = _NCQ.get(cmd)
        if ncq is not None:
            if transfer.protocol is Protocol.NONE:      # no NCQ here (PIIX): not in its ide_cmd_table
                return AtaResult(STATUS_FAIL, ERROR_ABRT, unknown=True)
            f = self._ncq(regs)
            return self._rw(ncq[0], f["lba"], f["sector_count"], data_out, into, fua=f["fua"])
        if cmd == C.DATA_SET_MANAGEMENT:
            return self._dsm(regs, data_out)
        if cmd in _NO_DATA:
            return self._no_data(regs)
        if cmd == C.SMART:
            if self.smart.refusal(regs.features, regs.lba):
                return _abort()
            page, cylinders = self.smart.run(regs.features, regs.lba)
            return AtaResult(STATUS_OK, 0, data_in=page, cylinders=cylinders)
        if cmd == C.EXECUTE_DEVICE_DIAGNOSTIC:
            # cmd_exec_dev_diagnostic: "device 0 passed, device 1 passed or not present" in the error register,
            # without ERR; the task file takes the signature (PIIX answers for both devices itself)
            return AtaResult(STATUS_OK, ERROR_AMNF, signature=True)
        return AtaResult(STATUS_FAIL, ERROR_ABRT, unknown=True)   # ide_exec_cmd: not in ide_cmd_table

    # -- reads and writes ------------------------------------------------------------------------------
    def _range_ok(self, lba: int, count: int) -> bool:
        """QEMU ide_sect_range_ok: sector > total or count > total - sector fails (a negative CHS LBA, from
        sector number 0, is huge as QEMU's uint64_t)."""
        total = self.config.capacity_sectors
        return 0 <= lba <= total and count <= total - lba

    def _rw(self, direction: str, lba: int, count: int, data_out, into, *, fua: bool) -> AtaResult:
        if not self._range_ok(lba, count):
            # QEMU ide_rw_error / ide_dma_error / ahci ncq_err answer ABRT; ACS says IDNF (config choice)
            return _abort(ERROR_IDNF if self.config.out_of_range_error == "idnf" else ERROR_ABRT)
        if direction == "in":
            if into is None:
                done = self.drive.read(lba * SECTOR_SIZE, count * SECTOR_SIZE)
            else:
                done = self.drive.read_into(lba * SECTOR_SIZE, into)
            if not done.ok:
                return _abort(completions=[done])   # ide_handle_rw_error, rerror=report -> ABRT
            return AtaResult(STATUS_OK, 0, data_in=b"" if into is not None else bytes(done.data), completions=[done])
        # With the write cache off QEMU's block backend makes every write FUA (blk_co_pwritev_part).
        done = self.drive.write(lba * SECTOR_SIZE, data_out, fua=fua or not self.write_cache)
        if not done.ok:
            # ide_handle_rw_error with werror=enospc/report -> ide_dma_error / ide_rw_error: ABRT. (QEMU would
            # stop the VM on ENOSPC under the default werror=enospc; the VM-stop policy is not modelled.)
            return _abort(completions=[done])
        return AtaResult(STATUS_OK, 0, completions=[done])

    def _ncq(self, regs: AtaRegisters) -> dict:
        """NCQ fields (ahci process_ncq_command): LBA 47:0, sector count in FEATURES, FUA in DEVICE bit 7."""
        return ncq_fields({"count": regs.count, "features": regs.features, "device": regs.device,
                           "lba": regs.lba, "auxiliary": 0})

    # -- DATA SET MANAGEMENT -----------------------------------------------------------------------------
    def _dsm_refusal(self, regs: AtaRegisters) -> int | None:
        """The error register of a DSM refused on its registers alone, or None if it may run. Whether TRIM is
        advertised (word 169) is not looked at: QEMU checks the FEATURE only (7.2 cmd_data_set_management, 1.4.0
        ide_exec_cmd WIN_DSM), so a pc-1.4 machine, which does not advertise it, still trims."""
        if regs.features & 0xFF != DSM_TRIM:        # cmd_data_set_management: uint8_t s->feature == DSM_TRIM
            return ERROR_ABRT
        if self.config.max_dsm_blocks and regs.count > self.config.max_dsm_blocks:
            return ERROR_ABRT                       # ACS: COUNT above IDENTIFY word 105 -> abort (QEMU: word 0)
        return None

    def _dsm(self, regs: AtaRegisters, data_out) -> AtaResult:
        """QEMU ide_issue_trim_cb: entries in order, zero-length skipped, one discard each, strictly serial; an
        entry past the capacity stops with -EINVAL -> ide_dma_error (ABRT), earlier entries stay discarded."""
        refusal = self._dsm_refusal(regs)
        if refusal is not None:
            return _abort(refusal)
        completions: list[Completion] = []
        total = self.config.capacity_sectors
        for sector, count in decode_entries(data_out or b""):   # COUNT 0: nothing transferred, success
            if not count:
                continue
            if sector > total or count > total - sector:
                return _abort(completions=completions)
            done = self.drive.discard(sector * SECTOR_SIZE, count * SECTOR_SIZE)
            completions.append(done)
            if not done.ok:
                return _abort(completions=completions)   # IDE_RETRY_TRIM, werror=report -> ide_dma_error
        return AtaResult(STATUS_OK, 0, completions=completions)

    # -- commands without data ---------------------------------------------------------------------------
    def _no_data(self, regs: AtaRegisters) -> AtaResult:
        cmd = regs.command
        if cmd == C.SET_MULTIPLE_MODE:
            # s->nsector as the transport left it: 8 bits over PIIX, the FIS's 16 over AHCI (handle_reg_h2d_fis)
            return self._set_multiple(regs.count)
        if cmd in _NOP_STATUS:
            return AtaResult(_NOP_STATUS[cmd], 0, count=0 if cmd == C.SECURITY_FREEZE_LOCK else None)
        if cmd in (C.READ_VERIFY_SECTORS, C.READ_VERIFY_SECTORS_NORETRY, C.READ_VERIFY_SECTORS_EXT, C.SEEK):
            return AtaResult(STATUS_OK, 0)          # cmd_verify / cmd_seek: no range check, complete at once
        if cmd in (C.FLUSH_CACHE, C.FLUSH_CACHE_EXT):
            return self._flush()                    # cmd_flush_cache -> ide_flush_cache -> blk_aio_flush
        if cmd == C.READ_NATIVE_MAX_ADDRESS_EXT:
            return AtaResult(STATUS_OK, 0, lba=self.config.capacity_sectors - 1)   # cmd_read_native_max
        if cmd == C.READ_NATIVE_MAX_ADDRESS:
            # ide_set_sector without LBA48 keeps 28 bits (LBA 27:24 in the device register)
            return AtaResult(STATUS_OK, 0, lba=(self.config.capacity_sectors - 1) & (LBA28_LIMIT - 1))
        if cmd in (C.CHECK_POWER_MODE, C.CHECK_POWER_MODE_OLD):
            return AtaResult(STATUS_OK, 0, count=0xFF)   # cmd_check_power_mode: active or idle
        return self._set_features(regs)

    def _set_multiple(self, count: int) -> AtaResult:
        """cmd_set_multiple_mode (SET_DSC): 0 turns READ/WRITE MULTIPLE off; otherwise a power of two up to
        the maximum (MAX_MULT_SECTORS, word 47), else ABRT."""
        if count and (count > self.config.multiple_sectors or count & (count - 1)):
            return AtaResult(STATUS_FAIL, ERROR_ABRT)
        self.multiple = count & 0xFF
        return AtaResult(STATUS_OK, 0)

    def _flush(self) -> AtaResult:
        done = self.drive.flush()
        if not done.ok:
            return _abort(completions=[done])       # ide_flush_cb -> ide_handle_rw_error(IDE_RETRY_FLUSH)
        return AtaResult(STATUS_OK, 0, completions=[done])

    def _set_features(self, regs: AtaRegisters) -> AtaResult:
        """QEMU cmd_set_features: FEATURES low byte selects the subcommand; unknown ones abort."""
        sub = regs.features & 0xFF
        if sub == SETFEATURES_WC_ON:
            self.write_cache = True
            return AtaResult(STATUS_OK, 0)
        if sub == SETFEATURES_WC_OFF:
            self.write_cache = False                # and ide_flush_cache: completes when the flush does
            return self._flush()
        if sub == SETFEATURES_XFER:
            mode = regs.count & 0xFF                # s->nsector
            if transfer_mode_words(mode) is None:
                return _abort()
            self.transfer_mode = mode
            return AtaResult(STATUS_OK, 0)
        if sub in SETFEATURES_NOOPS:
            return AtaResult(STATUS_OK, 0)
        return _abort()


def _abort(error: int = ERROR_ABRT, completions: list[Completion] | None = None) -> AtaResult:
    """QEMU ide_abort_command: status READY_STAT | ERR_STAT with the error register (ABRT unless told)."""
    return AtaResult(STATUS_FAIL, error, completions=completions or [])
