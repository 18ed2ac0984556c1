"""What a guest kernel chose for its drivers: the limits, retries and timeouts its code sets, as configuration.

The guest-driver models follow one kernel's logic, but the numbers that logic works to are a release's choices
(Linux 6.1's are the facts of the `linux-6.1` guest profile, scenarios/profiles/linux_6_1.py, each with its
source); a new kernel is a new set of values, never a version check here. Protocol constants (register bits,
opcodes, layout sizes) are not choices and stay in the layouts. No field has a default: every value comes from a
profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.virtio.layouts import bit


def feature_bits(features: tuple[int, ...]) -> int:
    """The feature word of a driver's feature bit numbers."""
    return sum(bit(f) for f in set(features))


@dataclass(frozen=True)
class BlockLayerConfig:
    """The block layer every disk driver gets its requests from."""

    max_sectors: int                    # a read or write request's default size limit, 512-byte sectors
    max_segment_size: int               # bytes of one scatter-gather entry unless the driver sets another
    request_timeout: float              # simulated seconds before a blk-mq request counts as lost
    zero_pages_bytes: int               # the most one zero-page write (write-zeroes fallback) carries


@dataclass(frozen=True)
class LibataConfig:
    """libata, under both ATA drivers (ata_piix, ahci)."""

    max_trim_rnum: int                  # range entries in the one 512-byte DSM block sent per TRIM
    max_sectors: int                    # the most sectors a command of a disk without LBA48 moves
    max_sectors_lba48: int              # ... of an LBA48 disk
    piix_max_segments: int              # scatter-gather entries per command under ata_piix (bus-master PRDs)
    ahci_max_segments: int              # ... under ahci (PRDT entries)


@dataclass(frozen=True)
class SdConfig:
    """The SCSI disk layer, over virtio-scsi and (as libata's SCSI translation) over the ATA drivers."""

    command_timeout: float              # simulated seconds before a command counts as lost
    spinup_tries: int                   # TEST UNIT READY attempts while the disk reports a unit attention
    max_xfer_blocks: int                # transfer limit when the Block Limits page gives none
    max_ws10_blocks: int                # WRITE SAME(10) blocks per discard command
    max_ws16_blocks: int                # WRITE SAME(16) and UNMAP blocks per discard command
    vpd_pages_len: int                  # allocation length of VPD page 00h (supported pages)
    block_limits_len: int               # of VPD page B0h (Block Limits)
    provisioning_len: int               # of VPD page B2h (Logical Block Provisioning)

    @property
    def vpd_len(self) -> dict[int, int]:
        """The allocation length per VPD page code."""
        return {0x00: self.vpd_pages_len, 0xB0: self.block_limits_len, 0xB2: self.provisioning_len}


@dataclass(frozen=True)
class VirtioBlkDriverConfig:
    """virtio_blk."""

    features: tuple[int, ...]           # feature bits the driver accepts (its features[] and the ring features)
    max_discard_segments: int           # cap on the device's max_discard_seg


@dataclass(frozen=True)
class VirtioScsiDriverConfig:
    """virtio_scsi."""

    features: tuple[int, ...]           # feature bits the driver accepts
    event_buffers: int                  # event-queue buffers posted after DRIVER_OK when HOTPLUG was negotiated


@dataclass(frozen=True)
class GuestConfig:
    """Every guest driver's configuration, as one guest profile gives it."""

    block: BlockLayerConfig
    libata: LibataConfig
    sd: SdConfig
    virtio_blk: VirtioBlkDriverConfig
    virtio_scsi: VirtioScsiDriverConfig
