"""The configuration of one emulated ATA disk: every behaviour that differs between devices is a field here.

Profiles (QEMU releases, the strict ATA/ACS reading) are nothing but `AtaConfig` values, each with its own
source; no code anywhere compares hypervisor versions. Facts: QEMU 8.2.1 `hw/ide/core.c` `ide_identify`,
`hw/ide/qdev.c` (ide_identify is unchanged since 7.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutOfRangeError = Literal["abrt", "idnf"]

MAX_LBA48_SECTORS = 1 << 48


@dataclass(frozen=True)
class AtaConfig:
    """What an ATA disk tells the guest about itself, and how it answers.

    Defaults are QEMU's `ide-hd` as ide_identify fills it (a strict-ACS profile changes some, e.g. the
    integrity word and IDNF). Pass `ncq_depth=32` for a disk behind QEMU's AHCI.
    """

    # Capacity in 512-byte sectors (QEMU `nb_sectors` = image size / 512): IDENTIFY words 60-61 and 100-103.
    capacity_sectors: int
    # Model number, words 27-46, up to 40 ASCII characters (QEMU ide-hd default "QEMU HARDDISK").
    model: str = "QEMU HARDDISK"
    # Serial number, words 10-19, up to 20 characters (QEMU default "QM%05d" of the drive's number).
    serial: str = "QM00001"
    # Firmware revision, words 23-26, up to 8 characters (QEMU: qemu_hw_version(), "2.5+" since 2.5).
    firmware: str = "2.5+"
    # NCQ queue depth, words 75 (depth - 1) and 76 bit 8; 0 = no NCQ (QEMU: 32 behind AHCI, 0 on PIIX IDE).
    ncq_depth: int = 0
    # Volatile write cache enabled at power-on, word 85 bit 5 (QEMU: blk_enable_write_cache, cache=writeback).
    write_cache: bool = True
    # DATA SET MANAGEMENT with TRIM advertised, word 169 bit 0 (QEMU: discard_granularity != 0; machine
    # types pc-*-1.4 and older force it off, hw/i386/pc.c pc_compat_1_4 since bf3caa3dc1).
    trim: bool = True
    # Deterministic read after TRIM (DRAT), word 69 bit 14 (QEMU sets it exactly when TRIM is advertised).
    drat: bool = True
    # Read zeroes after TRIM (RZAT), word 69 bit 5 (QEMU's ide_identify never sets it).
    rzat: bool = False
    # Maximum 512-byte blocks of LBA range entries per DSM command, word 105 (QEMU reports 0 = not reported,
    # and does not enforce any limit; ACS aborts a DSM whose COUNT exceeds it).
    max_dsm_blocks: int = 0
    # Error register bit for a read/write past the capacity: "abrt" (QEMU ide_sect_range_ok -> ABRT) or
    # "idnf" (ACS: ID NOT FOUND). TRIM ranges past the capacity are ABRT in both (QEMU ide_issue_trim_cb ->
    # ide_dma_error; the ACS rule as QEMU commit 947858b0ba quotes it).
    out_of_range_error: OutOfRangeError = "abrt"
    # Nominal media rotation rate, word 217: 0 = not reported (QEMU default), 1 = non-rotating (SSD).
    rotation_rate: int = 0
    # log2(physical / logical sector size) in word 106 as 0x6000 | exp; None leaves word 106 zero. QEMU
    # writes it whenever a physical block size is set, which blkconf_blocksizes always does (512 -> 0).
    physical_sector_exp: int | None = 0
    # READ/WRITE MULTIPLE block size: word 47 (0x8000 | n, QEMU MAX_MULT_SECTORS = 16) and word 59.
    multiple_sectors: int = 16
    # Default CHS geometry (cylinders, heads, sectors per track), words 1/3/6 and 54-58. None = QEMU's
    # guess_chs_for_size (16 heads, 63 sectors); QEMU prefers a geometry read from an MBR partition table.
    chs: tuple[int, int, int] | None = None
    # Word 255 integrity word: signature 0xA5 and a checksum making the page sum to 0 mod 256 (ACS). QEMU's
    # ide_identify never writes it (word 255 stays 0, 7.2 through 8.2.1); the strict profile sets it.
    integrity_word: bool = False
    # Whether EXECUTE DEVICE DIAGNOSTIC behind AHCI ends with a D2H FIS, interrupt and PxCI cleared (ACS / AHCI).
    # QEMU's cmd_exec_dev_diagnostic returns without ide_cmd_done, so its AHCI port never completes the command
    # (PIIX raises the interrupt itself and is unaffected).
    diagnostic_completes: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.capacity_sectors < MAX_LBA48_SECTORS:
            raise ValueError(f"capacity_sectors {self.capacity_sectors} is outside 0..2**48-1")
        for name, limit in (("model", 40), ("serial", 20), ("firmware", 8)):
            text = getattr(self, name)
            if len(text) > limit or not text.isascii():
                raise ValueError(f"{name} {text!r} must be at most {limit} ASCII characters")
        if not 0 <= self.ncq_depth <= 32:
            raise ValueError(f"ncq_depth {self.ncq_depth} is outside 0..32")
        if not 0 <= self.max_dsm_blocks <= 0xFFFF:
            raise ValueError(f"max_dsm_blocks {self.max_dsm_blocks} does not fit IDENTIFY word 105")
        if self.out_of_range_error not in ("abrt", "idnf"):
            raise ValueError(f"out_of_range_error {self.out_of_range_error!r} is neither 'abrt' nor 'idnf'")
        if not 0 <= self.rotation_rate <= 0xFFFF:
            raise ValueError(f"rotation_rate {self.rotation_rate} does not fit IDENTIFY word 217")
        if self.physical_sector_exp is not None and not 0 <= self.physical_sector_exp <= 15:
            raise ValueError(f"physical_sector_exp {self.physical_sector_exp} is outside 0..15")
        if not 0 <= self.multiple_sectors <= 0xFF:
            raise ValueError(f"multiple_sectors {self.multiple_sectors} is outside 0..255")
        if self.chs is not None and not (0 < self.chs[0] <= 0xFFFF and 0 < self.chs[1] <= 16
                                         and 0 < self.chs[2] <= 255):
            raise ValueError(f"chs {self.chs} is not a valid (cylinders, heads, sectors) geometry")
