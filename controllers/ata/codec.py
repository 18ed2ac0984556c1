"""Fast codecs for the per-command AHCI records: the Register H2D FIS, the command header, the PRDT, and the
device-to-host FISes the HBA writes on every completion (Register D2H, PIO Setup, Set Device Bits), and the IDE
bus-master PRD (IDE_BM_PRD_FAST, equal to IDE_BM_PRD).

Each one gives the same fields as its construct definition in `layouts.py` (ATA_H2D_FIS, AHCI_CMD_HEADER,
AHCI_PRDT_ENTRY, ATA_D2H_FIS, ATA_PIO_SETUP_FIS, ATA_SDB_FIS), checked byte for byte by
tests/controllers/ata/test_ata_layouts.py. Like every compiled codec here
they skip construct's checks: the caller has bounds-checked the buffer, and for a FIS looked at the type
byte (QEMU's handle_cmd refuses a CFIS whose byte 0 is not 0x27 before decoding anything).
"""

from __future__ import annotations

import struct

from controllers.ata.layouts import (
    AHCI_PRDT_DBC_MASK,
    FIS_TYPE_PIO_SETUP,
    FIS_TYPE_REG_D2H,
    FIS_TYPE_REG_H2D,
    FIS_TYPE_SDB,
    LBA48_LIMIT,
)

# type, flags, command, features 7:0, (LBA 23:0 | device << 24), (LBA 47:24 | features 15:8 << 24),
# count, icc, control, auxiliary
_H2D = struct.Struct("<BBBBIIHBBI")
# DW0 flags, PRDTL, PRDBC, CTBA/CTBAU, 16 reserved bytes
_CMD_HEADER = struct.Struct("<HHIQ16x")
# DBA/DBAU, reserved dword, DW3 (I << 31 | DBC)
_PRDT = struct.Struct("<Q4xI")

# type, flags, status, error, (LBA 23:0 | device << 24), LBA 47:24, count, 6 reserved bytes
_D2H = struct.Struct("<BBBBIIH6x")
# type, flags, status, error, (LBA 23:0 | device << 24), LBA 47:24, count, reserved, E_Status, transfer count
_PIO_SETUP = struct.Struct("<BBBBIIHxBH2x")
# type, flags, status, error, SActive
_SDB = struct.Struct("<BBBBI")
# IDE bus-master PRD: address, byte count (0 = 64 KiB), flags (bit 15 = EOT)
IDE_BM_PRD_FAST = struct.Struct("<IHH")

ATA_H2D_FIS_FAST = _H2D
AHCI_CMD_HEADER_FAST = _CMD_HEADER
AHCI_PRDT_ENTRY_FAST = _PRDT


H2D_FIS_FIELDS = ("fis_type", "c", "reserved", "pm_port", "command", "features", "lba", "device", "count", "icc",
                  "control", "auxiliary")


def h2d_fis_values(buf, offset: int = 0) -> tuple:
    """The fields of a 20-byte Register H2D FIS at `buf[offset:]`, in `H2D_FIS_FIELDS` order (the HBA decodes one
    per command: no dict)."""
    fis_type, flags, command, features_low, dw1, dw2, count, icc, control, auxiliary = _H2D.unpack_from(buf, offset)
    return (fis_type, bool(flags & 0x80), (flags >> 4) & 0x7, flags & 0xF, command, features_low | (dw2 >> 24) << 8,
            (dw1 & 0xFFFFFF) | (dw2 & 0xFFFFFF) << 24, dw1 >> 24, count, icc, control, auxiliary)


def unpack_h2d_fis(buf, offset: int = 0) -> dict:
    """The fields of a 20-byte Register H2D FIS at `buf[offset:]`."""
    return dict(zip(H2D_FIS_FIELDS, h2d_fis_values(buf, offset)))


def pack_h2d_fis(*, command: int, features: int = 0, lba: int = 0, count: int = 0, device: int = 0,
                 control: int = 0, icc: int = 0, auxiliary: int = 0, c: bool = True, pm_port: int = 0,
                 reserved: int = 0, fis_type: int = FIS_TYPE_REG_H2D) -> bytes:
    """A 20-byte Register H2D FIS; defaults are a command FIS (C = 1) to port 0."""
    if not 0 <= lba < LBA48_LIMIT or not 0 <= features <= 0xFFFF or not 0 <= pm_port <= 0xF or not 0 <= reserved <= 7:
        raise ValueError(f"H2D FIS field out of range: lba={lba:#x} features={features:#x} pm_port={pm_port}")
    if fis_type != FIS_TYPE_REG_H2D:
        raise ValueError(f"fis_type {fis_type:#x} is not a Register H2D FIS")
    flags = (0x80 if c else 0) | reserved << 4 | pm_port
    return _H2D.pack(FIS_TYPE_REG_H2D, flags, command, features & 0xFF, (lba & 0xFFFFFF) | device << 24,
                     lba >> 24 | (features >> 8) << 24, count, icc, control, auxiliary)


def unpack_cmd_header(buf, offset: int = 0) -> dict:
    """The fields of a 32-byte AHCI command header at `buf[offset:]`."""
    dw0, prdtl, prdbc, ctba = _CMD_HEADER.unpack_from(buf, offset)
    return {
        "pmp": dw0 >> 12,
        "c": bool(dw0 & 0x400),
        "b": bool(dw0 & 0x200),
        "r": bool(dw0 & 0x100),
        "p": bool(dw0 & 0x80),
        "w": bool(dw0 & 0x40),
        "a": bool(dw0 & 0x20),
        "cfl": dw0 & 0x1F,
        "prdtl": prdtl,
        "prdbc": prdbc,
        "ctba": ctba,
    }


def pack_cmd_header(*, cfl: int, prdtl: int, ctba: int, prdbc: int = 0, a: bool = False, w: bool = False,
                    p: bool = False, r: bool = False, b: bool = False, c: bool = False, pmp: int = 0) -> bytes:
    """A 32-byte AHCI command header."""
    if not 0 <= cfl <= 0x1F or not 0 <= pmp <= 0xF:
        raise ValueError(f"command header field out of range: cfl={cfl} pmp={pmp}")
    dw0 = cfl | a << 5 | w << 6 | p << 7 | r << 8 | b << 9 | c << 10 | pmp << 12
    return _CMD_HEADER.pack(dw0, prdtl, prdbc, ctba)


def unpack_prdt_entry(buf, offset: int = 0) -> dict:
    """The fields of a 16-byte PRDT entry at `buf[offset:]`; `dbc` is the 0-based byte count."""
    dba, dw3 = _PRDT.unpack_from(buf, offset)
    return {"dba": dba, "i": bool(dw3 >> 31), "dbc": dw3 & AHCI_PRDT_DBC_MASK}


def pack_prdt_entry(*, dba: int, dbc: int, i: bool = False) -> bytes:
    """A 16-byte PRDT entry; `dbc` is the byte count minus one."""
    if not 0 <= dbc <= AHCI_PRDT_DBC_MASK:
        raise ValueError(f"dbc {dbc:#x} does not fit 22 bits (an entry holds 1 byte to 4 MiB)")
    return _PRDT.pack(dba, dbc | i << 31)


def prdt_regions(buf, count: int, offset: int = 0) -> list[tuple[int, int]]:
    """(address, byte count) of `count` PRDT entries starting at `buf[offset:]`: the scatter list QEMU's
    ahci_populate_sglist builds before it clips it to the transfer size."""
    end = offset + count * _PRDT.size
    return [(dba, (dw3 & AHCI_PRDT_DBC_MASK) + 1) for dba, dw3 in _PRDT.iter_unpack(memoryview(buf)[offset:end])]


def pack_d2h_fis(*, status: int, error: int = 0, lba: int = 0, device: int = 0, count: int = 0, i: bool = False,
                 pm_port: int = 0) -> bytes:
    """A 20-byte Register D2H FIS (what ahci_write_fis_d2h writes at PxFB + 0x40)."""
    return _D2H.pack(FIS_TYPE_REG_D2H, i << 6 | pm_port, status, error, (lba & 0xFFFFFF) | device << 24,
                     lba >> 24 & 0xFFFFFF, count)


def unpack_d2h_fis(buf, offset: int = 0) -> dict:
    """The fields of a 20-byte Register D2H FIS at `buf[offset:]` (the driver reads one after a failed command)."""
    fis_type, flags, status, error, dw1, dw2, count = _D2H.unpack_from(buf, offset)
    return {"fis_type": fis_type, "i": bool(flags & 0x40), "pm_port": flags & 0xF, "status": status, "error": error,
            "lba": (dw1 & 0xFFFFFF) | (dw2 & 0xFFFFFF) << 24, "device": dw1 >> 24, "count": count}


def pack_pio_setup_fis(*, status: int, e_status: int, transfer_count: int, error: int = 0, lba: int = 0,
                       device: int = 0, count: int = 0, i: bool = False, d: bool = False, pm_port: int = 0) -> bytes:
    """A 20-byte PIO Setup FIS (ahci_write_fis_pio, PxFB + 0x20)."""
    return _PIO_SETUP.pack(FIS_TYPE_PIO_SETUP, i << 6 | d << 5 | pm_port, status, error,
                           (lba & 0xFFFFFF) | device << 24, lba >> 24 & 0xFFFFFF, count, e_status, transfer_count)


def pack_sdb_fis(*, status: int, sactive: int, error: int = 0, i: bool = False, n: bool = False,
                 pm_port: int = 0) -> bytes:
    """An 8-byte Set Device Bits FIS (ahci_write_fis_sdb, PxFB + 0x58)."""
    return _SDB.pack(FIS_TYPE_SDB, n << 7 | i << 6 | pm_port, status, error, sactive)
