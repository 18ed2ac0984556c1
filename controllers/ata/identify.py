"""The 512-byte IDENTIFY DEVICE page: built from an `AtaConfig`, read back the way Linux libata reads it.

`build_identify` writes the words QEMU's `ide_identify` (hw/ide/core.c, 7.2 to 8.2.1) fills for `ide-hd`,
taking every value that differs between devices from the config. `parse_identify`
decodes a page with the rules of Linux `include/linux/ata.h` (ata_id_has_trim, ata_id_major_version, ...),
which is what a guest driver believes about the disk.
"""

from __future__ import annotations

import struct

from controllers.ata.config import AtaConfig
from controllers.ata.layouts import IDENTIFY_SIZE, IDENTIFY_WORDS, LBA28_LIMIT

# Word numbers (ACS-3 7.12.7; names after Linux ata.h ATA_ID_*)
ID_CONFIG = 0
ID_CYLS = 1
ID_HEADS = 3
ID_SECTORS = 6
ID_SERNO = 10                       # 10 words
ID_FW_REV = 23                      # 4 words
ID_PROD = 27                        # 20 words
ID_MAX_MULTSECT = 47
ID_DWORD_IO = 48
ID_CAPABILITY = 49
ID_FIELD_VALID = 53
ID_CUR_CYLS = 54
ID_MULTSECT = 59
ID_LBA_CAPACITY = 60                # 2 words
ID_SWDMA_MODES = 62
ID_MWDMA_MODES = 63
ID_PIO_MODES = 64
ID_ADDITIONAL_SUPP = 69
ID_QUEUE_DEPTH = 75
ID_SATA_CAPABILITY = 76
ID_SATA_CAPABILITY_2 = 77
ID_MAJOR_VER = 80
ID_MINOR_VER = 81
ID_COMMAND_SET_1 = 82
ID_COMMAND_SET_2 = 83
ID_CFSSE = 84
ID_CFS_ENABLE_1 = 85
ID_CFS_ENABLE_2 = 86
ID_CSF_DEFAULT = 87
ID_UDMA_MODES = 88
ID_HW_CONFIG = 93
ID_LBA_CAPACITY_2 = 100             # 4 words
ID_DSM_MAX_BLOCKS = 105
ID_SECTOR_SIZE = 106
ID_DATA_SET_MGMT = 169
ID_ROT_SPEED = 217
ID_INTEGRITY = 255

INTEGRITY_SIGNATURE = 0xA5          # low byte of word 255; the high byte makes the page sum to 0 mod 256

# Word 69 bits (ACS-3): deterministic read after TRIM, read zeroes after TRIM
ID69_DRAT = 1 << 14
ID69_RZAT = 1 << 5

_WORDS = struct.Struct(f"<{IDENTIFY_WORDS}H")


def ata_string(text: str, length: int) -> bytes:
    """`text` as an IDENTIFY string field of `length` bytes: ASCII, space padded, the two bytes of each word
    swapped (QEMU padstr writes character i at byte i ^ 1), so word n holds characters 2n and 2n+1 as its
    high and low byte."""
    if length % 2 or len(text) > length or not text.isascii():
        raise ValueError(f"{text!r} does not fit an ATA string of {length} bytes")
    padded = text.encode("ascii").ljust(length, b" ")
    swapped = bytearray(length)
    swapped[0::2] = padded[1::2]
    swapped[1::2] = padded[0::2]
    return bytes(swapped)


def ata_string_decode(raw: bytes) -> str:
    """The inverse of `ata_string`: un-swap the words, then drop trailing spaces and NULs (Linux
    ata_id_c_string trims trailing spaces)."""
    raw = bytes(raw[:len(raw) - len(raw) % 2])
    data = bytearray(len(raw))
    data[0::2] = raw[1::2]
    data[1::2] = raw[0::2]
    return data.decode("ascii", errors="replace").rstrip(" \0")


def default_chs(capacity_sectors: int) -> tuple[int, int, int]:
    """QEMU's guess_chs_for_size (hw/block/hd-geometry.c): 16 heads, 63 sectors, cylinders clamped to 2..16383."""
    return min(max(capacity_sectors // (16 * 63), 2), 16383), 16, 63


def transfer_mode_words(mode: int) -> tuple[int, int, int] | None:
    """Words 62, 63 and 88 after SET FEATURES 0x03 with COUNT = `mode`, as QEMU's cmd_set_features rewrites
    them; None for a mode QEMU aborts (anything but PIO 0x00-0x0F, SWDMA 0x10-0x17, MWDMA 0x20-0x27,
    UDMA 0x40-0x47)."""
    bit = 1 << ((mode & 0x07) + 8)
    kind = mode >> 3
    if kind in (0x00, 0x01):
        return 0x07, 0x07, 0x3F
    if kind == 0x02:
        return 0x07 | bit, 0x07, 0x3F
    if kind == 0x04:
        return 0x07, 0x07 | bit, 0x3F
    if kind == 0x08:
        return 0x07, 0x07, 0x3F | bit
    return None


def identify_checksum(page: bytes) -> int:
    """The byte that, placed in byte 511, makes all 512 bytes sum to 0 mod 256 (ACS word 255 bits 15:8)."""
    return -sum(page[:511]) & 0xFF


def build_identify(config: AtaConfig, *, transfer_mode: int | None = None, multiple: int | None = None) -> bytes:
    """The IDENTIFY DEVICE page for `config`, word for word as QEMU's ide_identify writes it for ide-hd.

    `transfer_mode` is the COUNT of the last SET FEATURES 0x03 (None: QEMU's power-on words 62/63/88, which
    select UDMA5). `multiple` is the current READ/WRITE MULTIPLE setting of word 59 (None: the power-on
    value, `config.multiple_sectors`, which word 47 reports as the maximum). Word 255 is written only with
    `config.integrity_word`.
    """
    multiple = config.multiple_sectors if multiple is None else multiple
    w = [0] * IDENTIFY_WORDS
    cylinders, heads, sectors = config.chs or default_chs(config.capacity_sectors)
    capacity = config.capacity_sectors

    w[ID_CONFIG] = 0x0040                               # fixed device
    w[ID_CYLS] = cylinders
    w[ID_HEADS] = heads
    w[4] = (512 * sectors) & 0xFFFF                     # retired: unformatted bytes per track
    w[5] = 512                                          # retired: bytes per sector (ahci-test checks it)
    w[ID_SECTORS] = sectors
    w[20] = 3                                           # retired: buffer type
    w[21] = 512                                         # retired: buffer size
    w[22] = 4                                           # obsolete: ECC bytes
    if config.multiple_sectors > 1:                     # QEMU: #if MAX_MULT_SECTORS > 1
        w[ID_MAX_MULTSECT] = 0x8000 | config.multiple_sectors
    w[ID_DWORD_IO] = 1
    w[ID_CAPABILITY] = 1 << 11 | 1 << 9 | 1 << 8        # IORDY, LBA, DMA
    w[51] = 0x200                                       # PIO transfer cycle
    w[52] = 0x200                                       # DMA transfer cycle
    w[ID_FIELD_VALID] = 0x0007                          # words 54-58, 64-70 and 88 valid
    w[ID_CUR_CYLS] = cylinders
    w[55] = heads
    w[56] = sectors
    chs_sectors = cylinders * heads * sectors
    w[57] = chs_sectors & 0xFFFF
    w[58] = (chs_sectors >> 16) & 0xFFFF
    if multiple:
        w[ID_MULTSECT] = 0x0100 | multiple
    lba28 = min(capacity, LBA28_LIMIT - 1)              # ide_identify_size clamps at 2^28 - 1
    w[ID_LBA_CAPACITY] = lba28 & 0xFFFF
    w[ID_LBA_CAPACITY + 1] = lba28 >> 16
    modes = transfer_mode_words(transfer_mode) if transfer_mode is not None else (0x07, 0x07, 0x3F | 1 << 13)
    if modes is None:
        raise ValueError(f"transfer mode {transfer_mode:#x} is not one SET FEATURES accepts")
    w[ID_SWDMA_MODES], w[ID_MWDMA_MODES], w[ID_UDMA_MODES] = modes
    w[ID_PIO_MODES] = 0x03                              # PIO 3-4
    w[65] = w[66] = w[67] = w[68] = 120                 # cycle times, ns
    w[ID_ADDITIONAL_SUPP] = (ID69_DRAT if config.drat else 0) | (ID69_RZAT if config.rzat else 0)
    if config.ncq_depth:
        w[ID_QUEUE_DEPTH] = config.ncq_depth - 1
        w[ID_SATA_CAPABILITY] = 1 << 8                  # NCQ supported (QEMU sets nothing else in 76/77)
    w[ID_MAJOR_VER] = 0x00F0                            # ATA-4..7: Linux computes major version 7
    w[ID_MINOR_VER] = 0x0016
    w[ID_COMMAND_SET_1] = 1 << 14 | 1 << 5 | 1          # NOP, write cache, SMART supported
    w[ID_COMMAND_SET_2] = 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10   # FLUSH CACHE EXT, FLUSH CACHE, LBA48
    w[ID_CFSSE] = 1 << 14                               # no FUA (bit 6): QEMU has no WRITE DMA FUA EXT
    w[ID_CFS_ENABLE_1] = 1 << 14 | (1 << 5 if config.write_cache else 0) | 1
    w[ID_CFS_ENABLE_2] = 1 << 13 | 1 << 12 | 1 << 10
    w[ID_CSF_DEFAULT] = 1 << 14
    w[ID_HW_CONFIG] = 1 | 1 << 14 | 0x2000
    for i in range(4):
        w[ID_LBA_CAPACITY_2 + i] = (capacity >> (16 * i)) & 0xFFFF
    w[ID_DSM_MAX_BLOCKS] = config.max_dsm_blocks
    if config.physical_sector_exp is not None:
        w[ID_SECTOR_SIZE] = 0x6000 | config.physical_sector_exp
    w[ID_DATA_SET_MGMT] = 1 if config.trim else 0
    w[ID_ROT_SPEED] = config.rotation_rate

    page = bytearray(_WORDS.pack(*w))
    page[2 * ID_SERNO:2 * ID_SERNO + 20] = ata_string(config.serial, 20)
    page[2 * ID_FW_REV:2 * ID_FW_REV + 8] = ata_string(config.firmware, 8)
    page[2 * ID_PROD:2 * ID_PROD + 40] = ata_string(config.model, 40)
    page = bytes(page)
    if config.integrity_word:
        page = page[:510] + bytes([INTEGRITY_SIGNATURE])
        page += bytes([identify_checksum(page)])
    return page


def _major_version(w80: int) -> int:
    """Linux ata_id_major_version: the highest set bit of word 80 in 1..14; 0xFFFF reads as 0."""
    if w80 == 0xFFFF:
        return 0
    for version in range(14, 0, -1):
        if w80 & (1 << version):
            return version
    return 0


def parse_identify(page: bytes) -> dict:
    """Decode an IDENTIFY DEVICE page into the facts a guest driver uses, with Linux libata's rules.

    Raises ValueError if `page` is not 512 bytes (the caller's mistake, not the device's).
    """
    if len(page) != IDENTIFY_SIZE:
        raise ValueError(f"an IDENTIFY page is {IDENTIFY_SIZE} bytes, not {len(page)}")
    w = _WORDS.unpack(page)
    valid_83 = (w[ID_COMMAND_SET_2] & 0xC000) == 0x4000   # words 82-84 are meaningful
    valid_87 = (w[ID_CSF_DEFAULT] & 0xC000) == 0x4000     # words 85-87 are meaningful
    major = _major_version(w[ID_MAJOR_VER])
    has_lba = bool(w[ID_CAPABILITY] & (1 << 9))
    lba48 = valid_83 and bool(w[ID_COMMAND_SET_2] & (1 << 10))
    lba28_capacity = w[ID_LBA_CAPACITY] | w[ID_LBA_CAPACITY + 1] << 16
    lba48_capacity = sum(w[ID_LBA_CAPACITY_2 + i] << (16 * i) for i in range(4))
    if has_lba:                                           # ata_id_n_sectors
        capacity = lba48_capacity if lba48 else lba28_capacity
    else:
        capacity = w[ID_CYLS] * w[ID_HEADS] * w[ID_SECTORS]
    trim = major >= 7 and bool(w[ID_DATA_SET_MGMT] & 1)   # ata_id_has_trim
    w106 = w[ID_SECTOR_SIZE]
    signature = page[510] == INTEGRITY_SIGNATURE
    return {
        "serial": ata_string_decode(page[2 * ID_SERNO:2 * ID_SERNO + 20]),
        "firmware": ata_string_decode(page[2 * ID_FW_REV:2 * ID_FW_REV + 8]),
        "model": ata_string_decode(page[2 * ID_PROD:2 * ID_PROD + 40]),
        "is_ata": not w[ID_CONFIG] & (1 << 15),
        "cylinders": w[ID_CYLS],
        "heads": w[ID_HEADS],
        "sectors_per_track": w[ID_SECTORS],
        "max_multiple": w[ID_MAX_MULTSECT] & 0xFF,
        "multiple_setting": w[ID_MULTSECT] & 0xFF if w[ID_MULTSECT] & 0x100 else 0,
        "lba": has_lba,
        "dma": bool(w[ID_CAPABILITY] & (1 << 8)),
        "iordy": bool(w[ID_CAPABILITY] & (1 << 11)),
        "lba48": lba48,
        "capacity_lba28": lba28_capacity,
        "capacity_lba48": lba48_capacity,
        "capacity_sectors": capacity,
        "pio_modes": w[ID_PIO_MODES] & 0x03,
        "mwdma_modes": w[ID_MWDMA_MODES] & 0x07,
        "udma_modes": w[ID_UDMA_MODES] & 0xFF,
        "udma_selected": w[ID_UDMA_MODES] >> 8,
        "ncq": bool(w[ID_SATA_CAPABILITY] & (1 << 8)),    # ata_id_has_ncq
        "queue_depth": (w[ID_QUEUE_DEPTH] & 0x1F) + 1,    # ata_id_queue_depth
        "ncq_send_recv": bool(w[ID_SATA_CAPABILITY_2] & (1 << 6)),
        "major_version": major,
        # ata_id_is_sata: word 93 zero and word 80 (as a signed short) at least ATA-5's bit; QEMU's page reads as
        # PATA, which libata limits on a SATA port (ata_dev_knobble)
        "sata": w[ID_HW_CONFIG] == 0 and 0x0020 <= w[ID_MAJOR_VER] < 0x8000,
        "write_cache_supported": valid_83 and bool(w[ID_COMMAND_SET_1] & (1 << 5)),
        "write_cache_enabled": valid_87 and bool(w[ID_CFS_ENABLE_1] & (1 << 5)),
        "flush": valid_83 and bool(w[ID_COMMAND_SET_2] & (1 << 12)),
        "flush_ext": valid_83 and bool(w[ID_COMMAND_SET_2] & (1 << 13)),
        "fua": (w[ID_CFSSE] & 0xC000) == 0x4000 and bool(w[ID_CFSSE] & (1 << 6)),
        "trim": trim,
        "drat": bool(w[ID_ADDITIONAL_SUPP] & ID69_DRAT),
        "rzat": bool(w[ID_ADDITIONAL_SUPP] & ID69_RZAT),
        "zero_after_trim": trim and (w[ID_ADDITIONAL_SUPP] & (ID69_DRAT | ID69_RZAT)) == (ID69_DRAT | ID69_RZAT),
        "max_dsm_blocks": w[ID_DSM_MAX_BLOCKS],
        "physical_sector_exp": w106 & 0xF if (w106 & 0xC000) == 0x4000 and w106 & (1 << 13) else 0,
        "rotation_rate": w[ID_ROT_SPEED],
        "integrity_signature": signature,
        "integrity_valid": signature and sum(page) % 256 == 0,
    }
