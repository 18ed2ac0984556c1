"""Rules of Linux's libata that both ATA guest drivers (ata_piix, ahci) follow.

When a read or write may use 28-bit addressing (`lba_28_ok`), and how a Linux guest reaches ATA TRIM: through
its SCSI layer, as libata's SCSI-ATA translation does it.

sd sees a libata disk that reports logical block provisioning with WRITE SAME(16) (provisioning mode writesame_16,
granularity one 512-byte block: ata_scsiop_inq_b0). The block layer makes requests of a discard (blk_layer) of at
most the "maximum write same length" libata reports in its Block Limits VPD page, 65535 x ATA_MAX_TRIM_RNUM blocks
(`LibataConfig.max_trim_rnum`, a guest profile's fact); sd sends each as one WRITE SAME(16) with the UNMAP bit, and
libata translates it into one DATA SET MANAGEMENT TRIM carrying one 512-byte block of range entries
(drivers/ata/libata-scsi.c ata_scsi_write_same_xlat and ata_format_dsm_trim_descr). Those limits, not the disk's,
decide what a real Linux guest sends; the guest driver models use this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controllers.ata.device import AtaRegisters
from controllers.ata.dsm import encode_entries
from controllers.ata.layouts import (
    DEVICE_OBSOLETE,
    DSM_MAX_RANGE_SECTORS,
    DSM_TRIM,
    LBA28_LIMIT,
    SECTOR_SIZE,
    AtaCommand,
)
from controllers.drivers.blk_layer import DiscardLimits, QueueLimits, discard_requests
from controllers.drivers.config import BlockLayerConfig, LibataConfig


def max_write_same_blocks(libata: LibataConfig) -> int:
    """The VPD B0h maximum write same length libata reports: whole DSM ranges in one block of range entries."""
    return DSM_MAX_RANGE_SECTORS * libata.max_trim_rnum


def lba_28_ok(block: int, n_block: int, libata: LibataConfig) -> bool:
    """include/linux/ata.h lba_28_ok (Linux 6.1): the command ends below sector 0FFFFFFFh and moves at most
    ATA_MAX_SECTORS; otherwise libata uses the 48-bit (EXT) command."""
    return block + n_block < LBA28_LIMIT - 1 and n_block <= libata.max_sectors


# SCSI sense libata sets when it refuses the translation (ata_scsi_set_invalid_field / ata_scsi_set_sense)
ILLEGAL_REQUEST = 0x05
ASC_INVALID_OPCODE = 0x20                      # WRITE SAME without DMA: "invalid command operation code"
ASC_INVALID_FIELD_IN_CDB = 0x24                # no UNMAP bit, no TRIM, or too many blocks


@dataclass(frozen=True)
class Translated:
    """The ATA command libata issues for one WRITE SAME(16), and its data-out payload."""

    registers: AtaRegisters
    payload: bytes


@dataclass(frozen=True)
class Refused:
    """The CHECK CONDITION libata completes the SCSI command with instead (no ATA command is sent)."""

    sense_key: int
    asc: int
    ascq: int = 0


def discard_write_sames(ranges: Sequence[tuple[int, int]], libata: LibataConfig) -> list[tuple[int, int]]:
    """The (lba, blocks) of every WRITE SAME(16) sd sends for discarding `ranges`: one per block-layer request
    (sd_config_discard(writesame_16) over libata's B0 page: the maximum write same length, one-block granularity,
    one range per request)."""
    return [request[0] for request in discard_requests(ranges, DiscardLimits(max_write_same_blocks(libata)))]


def discard_dsms(ranges: Sequence[tuple[int, int]], libata: LibataConfig) -> list[Translated]:
    """The DSM TRIM commands, with their payloads, that a Linux guest sends for discarding `ranges`: libata's
    translation of each WRITE SAME(16) (`discard_write_sames`, always within libata's own limit)."""
    commands = [write_same_to_dsm(lba, n, libata) for lba, n in discard_write_sames(ranges, libata)]
    assert all(isinstance(cmd, Translated) for cmd in commands)
    return commands


def trim_entries(lba: int, n_block: int, libata: LibataConfig) -> list[tuple[int, int]]:
    """ata_format_dsm_trim_descr: consecutive entries of at most 65535 sectors, at most ATA_MAX_TRIM_RNUM of them;
    a zero-length WRITE SAME still gives one (zero-length) entry."""
    entries = []
    while len(entries) < libata.max_trim_rnum:
        entries.append((lba, min(n_block, DSM_MAX_RANGE_SECTORS)))
        if n_block <= DSM_MAX_RANGE_SECTORS:
            break
        n_block -= DSM_MAX_RANGE_SECTORS
        lba += DSM_MAX_RANGE_SECTORS
    return entries


def write_same_to_dsm(lba: int, n_block: int, libata: LibataConfig, *, unmap: bool = True, has_trim: bool = True,
                      dma: bool = True) -> Translated | Refused:
    """ata_scsi_write_same_xlat for a 512-byte-sector disk without queued TRIM (QEMU never advertises
    SEND FPDMA QUEUED DSM): DSM with FEATURE = TRIM and COUNT = 1 block of range entries; the device register
    keeps ata_tf_init's ATA_DEVICE_OBS (A0h), as the translation never sets it."""
    if not dma:
        return Refused(ILLEGAL_REQUEST, ASC_INVALID_OPCODE)
    if not unmap or not has_trim or n_block > max_write_same_blocks(libata):
        return Refused(ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB)
    payload = encode_entries(trim_entries(lba, n_block, libata))    # one 512-byte block, zero-padded
    registers = AtaRegisters(command=AtaCommand.DATA_SET_MANAGEMENT, features=DSM_TRIM,
                             count=len(payload) // SECTOR_SIZE, device=DEVICE_OBSOLETE)
    return Translated(registers, payload)


def queue_limits(identity: dict, libata: LibataConfig, block: BlockLayerConfig, *, sata_port: bool,
                 max_segments: int) -> QueueLimits:
    """The queue libata and sd set up for an ATA disk after IDENTIFY (Linux 6.1 ata_dev_configure,
    ata_scsi_dev_config, sd_revalidate_disk): LBA48 disks take ATA_MAX_SECTORS_LBA48 per command, others
    ATA_MAX_SECTORS, and so does a disk that reads as PATA on a SATA port (ata_dev_knobble); discards go as WRITE
    SAME(16) of at most the B0 page's length; no WRITE ZEROES (ata_scsi_dev_config sets no_write_same)."""
    hw = libata.max_sectors_lba48 if identity["lba48"] else libata.max_sectors
    if sata_port and not identity["sata"]:
        hw = libata.max_sectors
    discard = DiscardLimits(max_write_same_blocks(libata)) if identity["trim"] else None
    return QueueLimits(max_sectors=min(hw, block.max_sectors), max_hw_sectors=hw, max_segments=max_segments,
                       max_segment_size=block.max_segment_size, max_write_zeroes=0, discard=discard)
