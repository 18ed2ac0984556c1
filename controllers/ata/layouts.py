"""ATA, SATA FIS, AHCI and IDE bus-master layouts, defined once with construct, and their constants.

Sources (field names are the specs'):
- ATA/ACS command set and registers: QEMU 8.2.1 `include/hw/ide/internal.h`, `hw/ide/core.c`; Linux
  `include/linux/ata.h`.
- SATA FIS layouts: SATA 3.x section 10.5, as QEMU `hw/ide/ahci-internal.h` (NCQFrame, SDBFIS) and libqos
  `tests/qtest/libqos/ahci.h` (RegH2DFIS, RegD2HFIS, PIOSetupFIS) lay them out.
- AHCI 1.3 registers, command list, command table, PRDT: QEMU `hw/ide/ahci-internal.h`, libqos `ahci.h`.
- IDE ports and SFF-8038i bus-master DMA: QEMU `hw/ide/pci.c` `bmdma_prepare_buf`, Linux `ata.h`.

All integers are little-endian. Each record parses to one flat mapping: bit groups are lifted to the top level
and split fields (LBA 23:0 + 47:24, features 7:0 + 15:8) are joined, so the construct definitions and the fast
codecs in `codec.py` speak the same field names. FIS structs begin with a `Const` type byte: callers look at
byte 0 first (QEMU's `handle_cmd` checks `cmd_fis[0]` before anything else).
"""

from __future__ import annotations

from enum import IntEnum

from construct import (
    Adapter,
    Array,
    BitsInteger,
    BitStruct,
    Bytes,
    BytesInteger,
    ByteSwapped,
    Const,
    Container,
    Default,
    Flag,
    Int8ul,
    Int16ul,
    Int24ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

SECTOR_SIZE = 512
LBA28_LIMIT = 1 << 28
LBA48_LIMIT = 1 << 48


# ----------------------------------------------------------------------------------------------------------
# ATA command opcodes QEMU's ide_cmd_table handles (ACS-2 numbering; internal.h WIN_*)
# ----------------------------------------------------------------------------------------------------------

class AtaCommand(IntEnum):
    """Opcodes QEMU 8.2.1 dispatches; a guest may send any byte, so the device keeps unknown ones as ints."""

    DATA_SET_MANAGEMENT = 0x06      # DSM; FEATURES bit 0 = TRIM (QEMU accepts only FEATURES == 0x01)
    DEVICE_RESET = 0x08             # ATAPI only
    RECALIBRATE = 0x10              # no-op, sets DSC
    READ_SECTORS = 0x20
    READ_SECTORS_NORETRY = 0x21     # obsolete since ATA-5; QEMU treats it as 0x20
    READ_SECTORS_EXT = 0x24
    READ_DMA_EXT = 0x25
    READ_NATIVE_MAX_ADDRESS_EXT = 0x27
    READ_MULTIPLE_EXT = 0x29
    WRITE_SECTORS = 0x30
    WRITE_SECTORS_NORETRY = 0x31
    WRITE_SECTORS_EXT = 0x34
    WRITE_DMA_EXT = 0x35
    WRITE_MULTIPLE_EXT = 0x39
    WRITE_VERIFY = 0x3C             # QEMU: a PIO write
    READ_VERIFY_SECTORS = 0x40      # QEMU: no range check, completes at once
    READ_VERIFY_SECTORS_NORETRY = 0x41
    READ_VERIFY_SECTORS_EXT = 0x42
    READ_FPDMA_QUEUED = 0x60        # NCQ, AHCI only
    WRITE_FPDMA_QUEUED = 0x61
    NCQ_NON_DATA = 0x63             # recognised by QEMU's AHCI, never executed (ahci.c process_ncq_command)
    SEND_FPDMA_QUEUED = 0x64
    RECEIVE_FPDMA_QUEUED = 0x65
    SEEK = 0x70
    EXECUTE_DEVICE_DIAGNOSTIC = 0x90
    INITIALIZE_DEVICE_PARAMETERS = 0x91
    STANDBY_IMMEDIATE_OLD = 0x94    # 0x94-0x99: retired power commands, QEMU no-ops
    IDLE_IMMEDIATE_OLD = 0x95
    STANDBY_OLD = 0x96
    IDLE_OLD = 0x97
    CHECK_POWER_MODE_OLD = 0x98
    SLEEP_OLD = 0x99
    PACKET = 0xA0                   # ATAPI only
    IDENTIFY_PACKET_DEVICE = 0xA1   # ATAPI only
    SMART = 0xB0                    # needs LBA mid/high 0x4F/0xC2
    READ_MULTIPLE = 0xC4
    WRITE_MULTIPLE = 0xC5
    SET_MULTIPLE_MODE = 0xC6
    READ_DMA = 0xC8
    READ_DMA_NORETRY = 0xC9
    WRITE_DMA = 0xCA
    WRITE_DMA_NORETRY = 0xCB
    STANDBY_IMMEDIATE = 0xE0
    IDLE_IMMEDIATE = 0xE1
    STANDBY = 0xE2
    IDLE = 0xE3
    CHECK_POWER_MODE = 0xE5         # QEMU answers COUNT = 0xFF
    SLEEP = 0xE6
    FLUSH_CACHE = 0xE7
    FLUSH_CACHE_EXT = 0xEA
    IDENTIFY_DEVICE = 0xEC
    SET_FEATURES = 0xEF
    SECURITY_FREEZE_LOCK = 0xF5     # QEMU's CFA_WEAR_LEVEL slot: a no-op on ide-hd (Windows 8 sends it)
    READ_NATIVE_MAX_ADDRESS = 0xF8


NCQ_COMMANDS = frozenset({0x60, 0x61, 0x63, 0x64, 0x65})   # take AHCI's NCQ path (ahci-internal.h)

DSM_TRIM = 0x01                     # DSM FEATURES bit 0 (internal.h DSM_TRIM)

# SET FEATURES subcommands (FEATURES register; Linux ata.h SETFEATURES_*, QEMU cmd_set_features)
SETFEATURES_WC_ON = 0x02
SETFEATURES_XFER = 0x03             # COUNT = transfer mode: 0x00-0x0F PIO, 0x10 SWDMA, 0x20 MWDMA, 0x40 UDMA
SETFEATURES_WC_OFF = 0x82           # QEMU also flushes


# ----------------------------------------------------------------------------------------------------------
# Status and error registers (internal.h *_STAT / *_ERR, Linux ata.h ATA_*)
# ----------------------------------------------------------------------------------------------------------

STATUS_ERR = 0x01                   # an error; details in the error register
STATUS_IDX = 0x02                   # index (obsolete)
STATUS_CORR = 0x04                  # corrected data (obsolete)
STATUS_DRQ = 0x08                   # data request: the data port moves data
STATUS_DSC = 0x10                   # seek complete / SERV; QEMU SEEK_STAT, set by commands flagged SET_DSC
STATUS_DF = 0x20                    # device fault; QEMU WRERR_STAT
STATUS_DRDY = 0x40                  # device ready
STATUS_BSY = 0x80                   # busy: other bits invalid

ERROR_AMNF = 0x01                   # address mark not found; also "diagnostic passed" after reset
ERROR_TK0NF = 0x02                  # track 0 not found
ERROR_ABRT = 0x04                   # command aborted (QEMU: also out-of-range read/write)
ERROR_MCR = 0x08                    # media change requested
ERROR_IDNF = 0x10                   # ID not found: address outside the user-accessible range (ACS)
ERROR_MC = 0x20                     # media changed
ERROR_UNC = 0x40                    # uncorrectable data
ERROR_ICRC = 0x80                   # interface CRC error (BBK in old standards)

# Device/head register (Linux ata.h ATA_LBA / ATA_DEV1; QEMU ORs 0xA0 into every write of it)
DEVICE_LBA = 0x40                   # LBA addressing (clear: CHS)
DEVICE_DEV1 = 0x10                  # selects device 1 (slave)
DEVICE_OBSOLETE = 0xA0              # bits 7 and 5, "must be one" in ATA-1..3
DEVICE_HEAD_MASK = 0x0F             # LBA 27:24 for LBA28 commands, head number for CHS
DEVICE_NCQ_FUA = 0x80               # NCQ: bit 7 = Force Unit Access (ahci-internal.h NCQ_FIS_FUA_MASK)

# Device control register (internal.h IDE_CTRL_*, Linux ata.h)
CONTROL_NIEN = 0x02                 # interrupts disabled
CONTROL_SRST = 0x04                 # software reset (0 -> 1 edge resets both devices)
CONTROL_HOB = 0x80                  # reads of registers 1-5 return the previous ("high order") byte


# ----------------------------------------------------------------------------------------------------------
# A construct adapter: one flat mapping per record
# ----------------------------------------------------------------------------------------------------------

def _innermost_struct(subcon):
    while not isinstance(subcon, Struct) and hasattr(subcon, "subcon"):
        subcon = subcon.subcon
    return subcon if isinstance(subcon, Struct) else None


class _Flat(Adapter):
    """Lifts named bit groups to the top level and joins split integers: `joins` holds
    (name, low field, high field, bits in the low field). Symmetrical: build(parse(b)) == b up to
    reserved bits, which the tests check with hypothesis."""

    def __init__(self, subcon, joins=()):
        super().__init__(subcon)
        self.joins = tuple(joins)
        self.groups = {}
        for sc in subcon.subcons:
            inner = _innermost_struct(sc) if sc.name else None
            if inner is not None:
                self.groups[sc.name] = tuple(s.name for s in inner.subcons if s.name)
        self._low = {low: (name, high, bits) for name, low, high, bits in self.joins}
        self._high = {high for _, _, high, _ in self.joins}

    def _decode(self, obj, context, path):
        out = Container()
        for key, value in obj.items():
            if key.startswith("_") or key in self._high:
                continue
            if key in self.groups:
                out.update((k, v) for k, v in value.items() if not k.startswith("_"))
            elif key in self._low:
                name, high, bits = self._low[key]
                out[name] = value | obj[high] << bits
            else:
                out[key] = value
        return out

    def _encode(self, obj, context, path):
        fields = dict(obj)
        for name, low, high, bits in self.joins:
            value = fields.pop(name, 0)
            fields[low] = value & ((1 << bits) - 1)
            fields[high] = value >> bits
        for group, names in self.groups.items():
            fields[group] = {n: fields.pop(n) for n in names if n in fields}
        return fields


_LBA_JOIN = ("lba", "lba_low", "lba_high", 24)
_FEATURES_JOIN = ("features", "features_low", "features_high", 8)


# ----------------------------------------------------------------------------------------------------------
# The ATA register block as emu describes one command (replay scripts' "ata" object)
# ----------------------------------------------------------------------------------------------------------

TASKFILE_FIELDS = ("command", "features", "lba", "count", "device", "control")

# Not a wire format: the command-block registers of one command, LBA48-wide (features and count with their
# HOB bytes). IDE writes them through ports, AHCI carries them in a Register H2D FIS.
ATA_TASKFILE = Struct(
    "command" / Int8ul,
    "features" / Default(Int16ul, 0),                       # 15:8 = HOB features
    "lba" / Default(BytesInteger(6, swapped=True), 0),      # 47:0, low byte = sector number register
    "count" / Default(Int16ul, 0),                          # 15:8 = HOB count
    "device" / Default(Int8ul, 0),
    "control" / Default(Int8ul, 0),
)


def decode_lba(taskfile, *, lba48: bool, heads: int = 16, sectors: int = 63) -> int:
    """The sector a command addresses, as QEMU's ide_get_sector (hw/ide/core.c) reads the registers.

    Device bit 6 set: LBA48 uses all 48 bits; LBA28 takes bits 27:24 from device bits 3:0. Bit 6 clear: CHS,
    cylinder = LBA mid/high, head = device bits 3:0, sector = LBA low (1-based), with the given geometry.
    """
    lba, device = taskfile["lba"], taskfile["device"]
    if device & DEVICE_LBA:
        if lba48:
            return lba
        return (device & DEVICE_HEAD_MASK) << 24 | (lba & 0xFFFFFF)
    cylinder = (lba >> 8) & 0xFFFF
    return (cylinder * heads + (device & DEVICE_HEAD_MASK)) * sectors + (lba & 0xFF) - 1


def decode_count(count: int, *, lba48: bool) -> int:
    """Sectors a read/write transfers: LBA28 uses the low byte, 0 meaning 256; LBA48 0 means 65536."""
    if lba48:
        return count & 0xFFFF or 0x10000
    return count & 0xFF or 0x100


# ----------------------------------------------------------------------------------------------------------
# SATA Frame Information Structures (SATA 3.x 10.5; QEMU ahci-internal.h, libqos ahci.h)
# ----------------------------------------------------------------------------------------------------------

FIS_TYPE_REG_H2D = 0x27
FIS_TYPE_REG_D2H = 0x34
FIS_TYPE_DMA_ACTIVATE = 0x39
FIS_TYPE_DMA_SETUP = 0x41
FIS_TYPE_DATA = 0x46
FIS_TYPE_BIST = 0x58
FIS_TYPE_PIO_SETUP = 0x5F
FIS_TYPE_SDB = 0xA1

FIS_H2D_C = 0x80                    # byte 1: 1 = command register update, 0 = device control update
FIS_H2D_RESERVED = 0x70             # byte 1 bits 6:4; QEMU ignores a FIS that sets them
FIS_PM_PORT_MASK = 0x0F             # byte 1 bits 3:0; QEMU ignores a FIS with a non-zero port
FIS_I = 0x40                        # byte 1 of device-to-host FISes: raise an interrupt
FIS_D = 0x20                        # PIO/DMA setup byte 1: direction, 1 = device to host
FIS_DMA_SETUP_A = 0x80              # DMA setup byte 1: auto-activate
FIS_SDB_N = 0x80                    # SDB byte 1: notification
SDB_STATUS_MASK = 0x77              # SDB byte 2 carries status bits 6:4 and 2:0 (QEMU: status & 0x77)

H2D_FIS_SIZE = 20
D2H_FIS_SIZE = 20
PIO_SETUP_FIS_SIZE = 20
DMA_SETUP_FIS_SIZE = 28
SDB_FIS_SIZE = 8

# Register Host to Device FIS, 5 dwords. For NCQ commands (0x60-0x65) the fields are re-purposed: see
# `ncq_fields`.
ATA_H2D_FIS = _Flat(Struct(
    "fis_type" / Const(FIS_TYPE_REG_H2D, Int8ul),
    "flags" / BitStruct(
        "c" / Default(Flag, True),
        "reserved" / Default(BitsInteger(3), 0),
        "pm_port" / Default(BitsInteger(4), 0),
    ),
    "command" / Int8ul,
    "features_low" / Int8ul,
    "lba_low" / Int24ul,            # bytes 4-6: LBA 23:0 (sector number, cylinder low, cylinder high)
    "device" / Int8ul,
    "lba_high" / Int24ul,           # bytes 8-10: LBA 47:24
    "features_high" / Int8ul,
    "count" / Int16ul,              # QEMU loads the whole 16 bits into nsector
    "icc" / Default(Int8ul, 0),
    "control" / Default(Int8ul, 0),  # bit 2 SRST when C = 0
    "auxiliary" / Default(Int32ul, 0),  # SEND FPDMA QUEUED: bit 0 = TRIM
), joins=(_FEATURES_JOIN, _LBA_JOIN))

# Register Device to Host FIS: the ending status of a command (QEMU writes it at PxFB + 0x40).
ATA_D2H_FIS = _Flat(Struct(
    "fis_type" / Const(FIS_TYPE_REG_D2H, Int8ul),
    "flags" / BitStruct(Padding(1), "i" / Default(Flag, False), Padding(2), "pm_port" / Default(BitsInteger(4), 0)),
    "status" / Int8ul,
    "error" / Default(Int8ul, 0),
    "lba_low" / Int24ul,
    "device" / Default(Int8ul, 0),
    "lba_high" / Int24ul,
    Padding(1),
    "count" / Default(Int16ul, 0),
    Padding(6),
), joins=(_LBA_JOIN,))

# PIO Setup FIS: sent before each PIO DRQ data block (QEMU writes it at PxFB + 0x20).
ATA_PIO_SETUP_FIS = _Flat(Struct(
    "fis_type" / Const(FIS_TYPE_PIO_SETUP, Int8ul),
    "flags" / BitStruct(
        Padding(1), "i" / Default(Flag, False), "d" / Default(Flag, False), Padding(1),
        "pm_port" / Default(BitsInteger(4), 0),
    ),
    "status" / Int8ul,              # status while DRQ is set
    "error" / Default(Int8ul, 0),
    "lba_low" / Int24ul,
    "device" / Default(Int8ul, 0),
    "lba_high" / Int24ul,
    Padding(1),
    "count" / Default(Int16ul, 0),
    Padding(1),
    "e_status" / Int8ul,            # status once the block is moved (QEMU: the DRQ-time status, 0x58)
    "transfer_count" / Int16ul,     # bytes in this DRQ block
    Padding(2),
), joins=(_LBA_JOIN,))

# DMA Setup FIS, 7 dwords (QEMU never sends one; the area is at PxFB + 0x00).
ATA_DMA_SETUP_FIS = _Flat(Struct(
    "fis_type" / Const(FIS_TYPE_DMA_SETUP, Int8ul),
    "flags" / BitStruct(
        "a" / Default(Flag, False), "i" / Default(Flag, False), "d" / Default(Flag, False), Padding(1),
        "pm_port" / Default(BitsInteger(4), 0),
    ),
    Padding(2),
    "dma_buffer_id" / Default(Int64ul, 0),
    Padding(4),
    "dma_buffer_offset" / Default(Int32ul, 0),
    "transfer_count" / Int32ul,
    Padding(4),
))

# Set Device Bits FIS: NCQ completion; SActive bit n = tag n finished (QEMU writes it at PxFB + 0x58).
ATA_SDB_FIS = _Flat(Struct(
    "fis_type" / Const(FIS_TYPE_SDB, Int8ul),
    "flags" / BitStruct(
        "n" / Default(Flag, False), "i" / Default(Flag, False), Padding(2), "pm_port" / Default(BitsInteger(4), 0),
    ),
    "status" / Int8ul,              # bits 6:4 and 2:0 only (SDB_STATUS_MASK)
    "error" / Default(Int8ul, 0),
    "sactive" / Int32ul,
))


def ncq_fields(fis) -> dict:
    """The re-purposed Register H2D FIS fields of an NCQ command (SATA FPDMA QUEUED; QEMU ahci-internal.h NCQFrame).

    FEATURES = sector count (0 -> 65536); COUNT 7:3 = tag, bit 0 = RARC, 15:14 = priority; COUNT 12:8 = the
    SEND/RECEIVE FPDMA subcommand; DEVICE bit 7 = FUA; AUXILIARY bit 0 = TRIM for SEND FPDMA QUEUED DSM.
    """
    count = fis["count"]
    return {
        "tag": (count >> 3) & 0x1F,
        "sector_count": fis["features"] or 0x10000,
        "rarc": bool(count & 0x01),
        "prio": count >> 14,
        "subcommand": (count >> 8) & 0x1F,
        "fua": bool(fis["device"] & DEVICE_NCQ_FUA),
        "trim": bool(fis["auxiliary"] & 0x01),
        "lba": fis["lba"],
    }


# ----------------------------------------------------------------------------------------------------------
# AHCI HBA memory (AHCI 1.3 section 3; QEMU ahci-internal.h, libqos ahci.h)
# ----------------------------------------------------------------------------------------------------------

AHCI_MEM_BAR_SIZE = 0x1000          # QEMU maps 4 KiB at BAR5 (ABAR)
AHCI_MAX_PORTS = 32
AHCI_MAX_CMDS = 32                  # command slots per port, and NCQ tags

# Generic host control, ABAR + offset
HBA_CAP = 0x00
HBA_GHC = 0x04
HBA_IS = 0x08
HBA_PI = 0x0C
HBA_VS = 0x10
HBA_CCC_CTL = 0x14
HBA_CCC_PORTS = 0x18
HBA_EM_LOC = 0x1C
HBA_EM_CTL = 0x20
HBA_CAP2 = 0x24
HBA_BOHC = 0x28
AHCI_PORT_BASE = 0x100              # port n registers at 0x100 + n * 0x80
AHCI_PORT_SIZE = 0x80

# CAP bits
CAP_NP_MASK = 0x1F                  # number of ports - 1
CAP_SXS = 1 << 5
CAP_EMS = 1 << 6
CAP_CCCS = 1 << 7
CAP_NCS_MASK = 0x1F00               # command slots - 1, bits 12:8
CAP_NCS_SHIFT = 8
CAP_PSC = 1 << 13
CAP_SSC = 1 << 14
CAP_PMD = 1 << 15
CAP_FBSS = 1 << 16
CAP_SPM = 1 << 17
CAP_SAM = 1 << 18                   # AHCI mode only
CAP_ISS_MASK = 0xF00000             # interface speed, bits 23:20 (1 = Gen1, QEMU)
CAP_ISS_SHIFT = 20
CAP_SCLO = 1 << 24
CAP_SAL = 1 << 25
CAP_SALP = 1 << 26
CAP_SSS = 1 << 27
CAP_SMPS = 1 << 28
CAP_SSNTF = 1 << 29
CAP_SNCQ = 1 << 30
CAP_S64A = 1 << 31

# GHC bits
GHC_HR = 1 << 0                     # HBA reset (self-clearing)
GHC_IE = 1 << 1                     # global interrupt enable
GHC_MRSM = 1 << 2
GHC_AE = 1 << 31                    # AHCI enable; QEMU: always reads 1

VS_AHCI_1_0 = 0x00010000            # QEMU reports AHCI 1.0

# Port registers, offset within the port block
PX_CLB = 0x00                       # command list base, 1 KiB aligned
PX_CLBU = 0x04
PX_FB = 0x08                        # received FIS base, 256-byte aligned
PX_FBU = 0x0C
PX_IS = 0x10                        # write 1 to clear
PX_IE = 0x14
PX_CMD = 0x18
PX_TFD = 0x20                       # error << 8 | status
PX_SIG = 0x24
PX_SSTS = 0x28
PX_SCTL = 0x2C
PX_SERR = 0x30                      # write 1 to clear
PX_SACT = 0x34                      # write 1 to set
PX_CI = 0x38                        # write 1 to set
PX_SNTF = 0x3C
PX_FBS = 0x40
PX_DEVSLP = 0x44


def port_register(port: int, register: int) -> int:
    """ABAR offset of a port register."""
    return AHCI_PORT_BASE + port * AHCI_PORT_SIZE + register


# PxIS (and PxIE, same positions) bits
PXIS_DHRS = 1 << 0                  # D2H Register FIS received
PXIS_PSS = 1 << 1                   # PIO Setup FIS received
PXIS_DSS = 1 << 2                   # DMA Setup FIS received
PXIS_SDBS = 1 << 3                  # Set Device Bits FIS received
PXIS_UFS = 1 << 4                   # unknown FIS
PXIS_DPS = 1 << 5                   # descriptor processed (QEMU never raises it)
PXIS_PCS = 1 << 6
PXIS_DMPS = 1 << 7
PXIS_PRCS = 1 << 22
PXIS_IPMS = 1 << 23
PXIS_OFS = 1 << 24                  # overflow: the PRDT is shorter than the transfer
PXIS_INFS = 1 << 26
PXIS_IFS = 1 << 27
PXIS_HBDS = 1 << 28
PXIS_HBFS = 1 << 29
PXIS_TFES = 1 << 30                 # task file error: ending status has ERR
PXIS_CPDS = 1 << 31
PXIE_WRITABLE = 0xFDC000FF          # QEMU's writable PxIE mask

# PxCMD bits
PXCMD_ST = 1 << 0
PXCMD_SUD = 1 << 1
PXCMD_POD = 1 << 2
PXCMD_CLO = 1 << 3
PXCMD_FRE = 1 << 4
PXCMD_CCS_MASK = 0x1F00
PXCMD_CCS_SHIFT = 8
PXCMD_MPSS = 1 << 13
PXCMD_FR = 1 << 14
PXCMD_CR = 1 << 15
PXCMD_CPS = 1 << 16
PXCMD_PMA = 1 << 17
PXCMD_HPCP = 1 << 18
PXCMD_MPSP = 1 << 19
PXCMD_CPD = 1 << 20
PXCMD_ESP = 1 << 21
PXCMD_FBSCP = 1 << 22
PXCMD_APSTE = 1 << 23
PXCMD_ATAPI = 1 << 24
PXCMD_DLAE = 1 << 25
PXCMD_ALPE = 1 << 26
PXCMD_ASP = 1 << 27
PXCMD_ICC_MASK = 0xF0000000
PXCMD_RO_MASK = 0x007DFFE0          # QEMU: bits the guest cannot write

# PxTFD, PxSIG, PxSSTS, PxSCTL
PXTFD_STS_MASK = 0x00FF
PXTFD_ERR_MASK = 0xFF00
PXTFD_ERR_SHIFT = 8
PXTFD_AFTER_RESET = 0x7F            # QEMU, until the first D2H FIS after a port reset
SIG_DISK = 0x00000101               # LBA high:mid:low:count of the reset signature
SIG_ATAPI = 0xEB140101
SSTS_DET_MASK = 0x00F
SSTS_DET_PRESENT = 0x003            # device present, phy communication established
SSTS_SPD_MASK = 0x0F0
SSTS_SPD_GEN1 = 0x010
SSTS_IPM_MASK = 0xF00
SSTS_IPM_ACTIVE = 0x100
SSTS_QEMU_ATTACHED = SSTS_IPM_ACTIVE | SSTS_SPD_GEN1 | SSTS_DET_PRESENT   # 0x113
SCTL_DET_MASK = 0x00F               # DET 1 -> 0 performs a COMRESET in QEMU

# PxSERR bits (Linux ata.h SERR_*)
SERR_DATA_RECOVERED = 1 << 0
SERR_COMM_RECOVERED = 1 << 1
SERR_DATA = 1 << 8
SERR_PERSISTENT = 1 << 9
SERR_PROTOCOL = 1 << 10
SERR_INTERNAL = 1 << 11
SERR_PHYRDY_CHG = 1 << 16
SERR_PHY_INT_ERR = 1 << 17
SERR_COMM_WAKE = 1 << 18
SERR_10B_8B_ERR = 1 << 19
SERR_DISPARITY = 1 << 20
SERR_CRC = 1 << 21
SERR_HANDSHAKE = 1 << 22
SERR_LINK_SEQ_ERR = 1 << 23
SERR_TRANS_ST_ERROR = 1 << 24
SERR_UNRECOG_FIS = 1 << 25
SERR_DEV_XCHG = 1 << 26


# ----------------------------------------------------------------------------------------------------------
# AHCI command list, command table, PRDT, received-FIS area (AHCI 1.3 section 4; QEMU ahci-internal.h AHCICmdHdr)
# ----------------------------------------------------------------------------------------------------------

AHCI_CMD_HEADER_SIZE = 32
AHCI_CMD_LIST_SIZE = AHCI_MAX_CMDS * AHCI_CMD_HEADER_SIZE   # 1 KiB at PxCLB
AHCI_CMD_TABLE_HEADER_SIZE = 0x80                           # CFIS + ACMD + reserved, then the PRDT
AHCI_CMD_TABLE_ACMD = 0x40
AHCI_PRDT_ENTRY_SIZE = 16
AHCI_PRDT_DBC_MASK = 0x3FFFFF       # byte count - 1, 22 bits: at most 4 MiB per entry
AHCI_PRDT_I = 1 << 31               # interrupt on completion (QEMU ignores it)
AHCI_RX_FIS_SIZE = 256

# Command header DW0 bits (libqos CMDH_*, ahci-internal.h AHCI_CMD_*)
CMDH_CFL_MASK = 0x001F              # command FIS length in dwords (2..16; 5 for a Register H2D FIS)
CMDH_A = 1 << 5                     # ATAPI
CMDH_W = 1 << 6                     # write: host to device
CMDH_P = 1 << 7                     # prefetchable
CMDH_R = 1 << 8                     # reset
CMDH_B = 1 << 9                     # BIST
CMDH_C = 1 << 10                    # clear busy upon R_OK
CMDH_PMP_MASK = 0xF000

# One slot of the command list at PxCLB + slot * 32.
AHCI_CMD_HEADER = _Flat(Struct(
    "dw0" / ByteSwapped(BitStruct(
        "pmp" / Default(BitsInteger(4), 0),
        Padding(1),
        "c" / Default(Flag, False),
        "b" / Default(Flag, False),
        "r" / Default(Flag, False),
        "p" / Default(Flag, False),
        "w" / Default(Flag, False),
        "a" / Default(Flag, False),
        "cfl" / BitsInteger(5),
    )),
    "prdtl" / Int16ul,              # PRDT entries
    "prdbc" / Default(Int32ul, 0),  # bytes transferred, written by the HBA
    "ctba" / Int64ul,               # CTBA (31:0, 128-byte aligned) and CTBAU (63:32)
    Padding(16),
))

# One Physical Region Descriptor of the command table's PRDT.
AHCI_PRDT_ENTRY = _Flat(Struct(
    "dba" / Int64ul,                # DBA (31:0, bit 0 zero) and DBAU (63:32)
    Padding(4),
    "dw3" / ByteSwapped(BitStruct(
        "i" / Default(Flag, False),
        Padding(9),
        "dbc" / BitsInteger(22),    # byte count - 1
    )),
))

AHCI_CMD_TABLE_HEADER = Struct(
    "cfis" / Bytes(64),             # the command FIS, CFL dwords of it meaningful
    "acmd" / Default(Bytes(16), bytes(16)),  # ATAPI command (QEMU copies 16 bytes)
    Padding(48),
)


def ahci_command_table(prdtl: int) -> Struct:
    """A command table (at CTBA) with `prdtl` PRDT entries, as the command header announces."""
    return Struct(
        "cfis" / Bytes(64),
        "acmd" / Default(Bytes(16), bytes(16)),
        Padding(48),
        "prdt" / Array(prdtl, AHCI_PRDT_ENTRY),
    )


def prdt_byte_count(dbc: int) -> int:
    """Bytes one AHCI PRDT entry describes: DBC is 0-based (QEMU: (flags_size & 0x3FFFFF) + 1)."""
    return (dbc & AHCI_PRDT_DBC_MASK) + 1


# Received FIS area at PxFB: offsets QEMU uses (ahci-internal.h RES_FIS_*)
RX_FIS_DSFIS = 0x00                 # DMA Setup FIS
RX_FIS_PSFIS = 0x20                 # PIO Setup FIS
RX_FIS_RFIS = 0x40                  # D2H Register FIS
RX_FIS_SDBFIS = 0x58                # Set Device Bits FIS
RX_FIS_UFIS = 0x60                  # unknown FIS, up to 64 bytes

# The regions are raw bytes: an area nothing has been written to yet is zeros, which no FIS struct accepts.
AHCI_RECEIVED_FIS = Struct(
    "dsfis" / Default(Bytes(DMA_SETUP_FIS_SIZE), bytes(DMA_SETUP_FIS_SIZE)),
    Padding(RX_FIS_PSFIS - DMA_SETUP_FIS_SIZE),
    "psfis" / Default(Bytes(PIO_SETUP_FIS_SIZE), bytes(PIO_SETUP_FIS_SIZE)),
    Padding(RX_FIS_RFIS - RX_FIS_PSFIS - PIO_SETUP_FIS_SIZE),
    "rfis" / Default(Bytes(D2H_FIS_SIZE), bytes(D2H_FIS_SIZE)),
    Padding(RX_FIS_SDBFIS - RX_FIS_RFIS - D2H_FIS_SIZE),
    "sdbfis" / Default(Bytes(SDB_FIS_SIZE), bytes(SDB_FIS_SIZE)),
    "ufis" / Default(Bytes(64), bytes(64)),
    Padding(AHCI_RX_FIS_SIZE - RX_FIS_UFIS - 64),
)


# ----------------------------------------------------------------------------------------------------------
# Legacy IDE (PIIX3/PIIX4): ports and SFF-8038i bus-master DMA (QEMU hw/ide/core.c, pci.c, piix.c)
# ----------------------------------------------------------------------------------------------------------

IDE_PRIMARY_CMD = 0x1F0             # command block, 8 ports
IDE_PRIMARY_CTL = 0x3F6             # control block: alternate status / device control
IDE_PRIMARY_IRQ = 14
IDE_SECONDARY_CMD = 0x170
IDE_SECONDARY_CTL = 0x376
IDE_SECONDARY_IRQ = 15

# Command block register offsets (read / write)
IDE_REG_DATA = 0                    # 16-bit data port (QEMU also accepts 32-bit)
IDE_REG_ERROR = 1                   # read: error
IDE_REG_FEATURES = 1                # write: features
IDE_REG_NSECT = 2                   # sector count
IDE_REG_LBAL = 3                    # LBA low / sector number
IDE_REG_LBAM = 4                    # LBA mid / cylinder low
IDE_REG_LBAH = 5                    # LBA high / cylinder high
IDE_REG_DEVICE = 6                  # device / head
IDE_REG_STATUS = 7                  # read: status (clears the pending interrupt)
IDE_REG_COMMAND = 7                 # write: command (lowers the interrupt, executes)

# Bus-master IDE registers: PIIX BAR4, 16 bytes; the secondary channel at +8
BM_CMD = 0x00                       # 8-bit command
BM_STATUS = 0x02                    # 8-bit status
BM_PRDT = 0x04                      # 32-bit PRD table address (QEMU forces the low 2 bits to 0)
BM_SECONDARY = 0x08
BM_CMD_START = 0x01                 # start/stop bus master
BM_CMD_TO_MEMORY = 0x08             # direction: 1 = device to memory (a disk read); Linux ATA_DMA_WR
BM_CMD_MASK = 0x09                  # QEMU keeps only these bits
BM_STATUS_ACTIVE = 0x01             # read-only
BM_STATUS_ERROR = 0x02              # write 1 to clear
BM_STATUS_INTR = 0x04               # write 1 to clear
BM_STATUS_DMA_CAP0 = 0x20           # drive 0 DMA capable (read/write)
BM_STATUS_DMA_CAP1 = 0x40
BM_STATUS_SIMPLEX = 0x80
BM_PRD_EOT = 1 << 31                # end of table: bit 31 of the PRD's second dword
BM_PRDT_LIMIT = 4096                # QEMU stops walking after one page of PRDs (512 entries)
BM_PRD_SIZE = 8

# One Physical Region Descriptor of the bus-master PRD table.
IDE_BM_PRD = _Flat(Struct(
    "address" / Int32ul,            # physical address (bit 0 zero)
    "byte_count" / Int16ul,         # 0 means 64 KiB; bit 0 zero
    "flags" / ByteSwapped(BitStruct("eot" / Default(Flag, False), Padding(15))),
))


def bm_prd_length(byte_count: int) -> int:
    """Bytes one bus-master PRD moves, as QEMU's bmdma_prepare_buf reads it: `byte_count & 0xFFFE`, where 0
    means 65536 (so does an odd count of 1)."""
    return byte_count & 0xFFFE or 0x10000


# ----------------------------------------------------------------------------------------------------------
# DATA SET MANAGEMENT range entries (ACS-2/3) and the IDENTIFY page (QEMU hw/ide/core.c ide_identify)
# ----------------------------------------------------------------------------------------------------------

DSM_RANGE_ENTRY_SIZE = 8
DSM_ENTRIES_PER_BLOCK = 64          # 512 / 8; Linux sends one block (ATA_MAX_TRIM_RNUM)
DSM_MAX_RANGE_SECTORS = 0xFFFF

# One LBA Range Entry: bits 47:0 starting LBA, 63:48 length in sectors; length 0 = unused entry.
DSM_RANGE_ENTRY = Struct(
    "lba" / BytesInteger(6, swapped=True),
    "count" / Int16ul,
)

IDENTIFY_WORDS = 256
IDENTIFY_SIZE = 512
IDENTIFY_PAGE = Array(IDENTIFY_WORDS, Int16ul)


# ----------------------------------------------------------------------------------------------------------
# SMART (command 0xB0): the 512-byte pages of READ DATA, READ ATTRIBUTE THRESHOLDS and READ LOG, as SFF-8035i /
# ATA-8 ACS lay them out and QEMU's cmd_smart fills them (hw/ide/core.c). Byte 511 is the page checksum.
# ----------------------------------------------------------------------------------------------------------

SMART_LBA_MID = 0x4F                # LBA 15:8 and 23:16 a SMART command must carry (cmd_smart: lcyl, hcyl)
SMART_LBA_HIGH = 0xC2
SMART_THRESHOLD_EXCEEDED = (0xF4, 0x2C)   # RETURN STATUS answer (mid, high) when a threshold is exceeded


class SmartFeature(IntEnum):
    """SMART subcommands (FEATURES register; QEMU internal.h SMART_*)."""

    READ_DATA = 0xD0
    READ_THRESH = 0xD1
    ATTR_AUTOSAVE = 0xD2
    SAVE_ATTR = 0xD3                # defined by ATA, not handled by QEMU (aborts)
    EXECUTE_OFFLINE = 0xD4
    READ_LOG = 0xD5
    WRITE_LOG = 0xD6                # defined by ATA, not handled by QEMU (aborts)
    ENABLE = 0xD8
    DISABLE = 0xD9
    STATUS = 0xDA


SMART_ATTRIBUTES = 30
SMART_SELFTEST_ENTRIES = 21
SMART_LOG_SUMMARY_ERROR = 0x01
SMART_LOG_SELFTEST = 0x06

SMART_ATTRIBUTE = Struct(
    "id" / Int8ul,
    "flags" / Int16ul,
    "value" / Int8ul,
    "worst" / Int8ul,
    "raw" / Bytes(6),
    "reserved" / Int8ul,
)

SMART_DATA_PAGE = Struct(
    "revision" / Int16ul,
    "attributes" / Array(SMART_ATTRIBUTES, SMART_ATTRIBUTE),
    "offline_status" / Int8ul,          # 362; bit 7 = attribute autosave enabled
    "selftest_status" / Int8ul,         # 363
    "offline_seconds" / Int16ul,        # 364-365: time to complete off-line data collection
    "vendor_366" / Int8ul,
    "offline_capability" / Int8ul,      # 367
    "smart_capability" / Int16ul,       # 368-369
    "error_logging" / Int8ul,           # 370 bit 0: error logging supported
    "vendor_371" / Int8ul,
    "short_test_minutes" / Int8ul,      # 372
    "extended_test_minutes" / Int8ul,   # 373
    "conveyance_test_minutes" / Int8ul,  # 374
    "extended_test_minutes_word" / Int16ul,   # 375-376
    "reserved" / Bytes(9),
    "vendor" / Bytes(125),
    "checksum" / Int8ul,
)

SMART_THRESHOLD = Struct("id" / Int8ul, "threshold" / Int8ul, "reserved" / Bytes(10))

SMART_THRESHOLD_PAGE = Struct(
    "revision" / Int16ul,
    "thresholds" / Array(SMART_ATTRIBUTES, SMART_THRESHOLD),
    "reserved" / Bytes(149),
    "checksum" / Int8ul,
)

SMART_SELFTEST_DESCRIPTOR = Struct(
    "test" / Int8ul,                    # LBA 7:0 of the EXECUTE OFF-LINE command that ran it
    "status" / Int8ul,
    "lifetime_hours" / Int16ul,
    "checkpoint" / Int8ul,
    "failing_lba" / Int32ul,
    "vendor" / Bytes(15),
)

SMART_SELFTEST_LOG = Struct(
    "revision" / Int16ul,
    "descriptors" / Array(SMART_SELFTEST_ENTRIES, SMART_SELFTEST_DESCRIPTOR),
    "vendor" / Bytes(2),
    "index" / Int8ul,                   # 508: the most recent descriptor, 1-based; 0 = empty log
    "reserved" / Bytes(2),
    "checksum" / Int8ul,
)

SMART_SUMMARY_ERROR_LOG = Struct(
    "revision" / Int8ul,
    "index" / Int8ul,                   # most recent error entry, 0 = none
    "entries" / Bytes(5 * 90),
    "error_count" / Int16ul,            # 452-453
    "reserved" / Bytes(57),
    "checksum" / Int8ul,
)
