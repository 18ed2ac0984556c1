"""The SCSI disk's configuration under a hypervisor profile."""

from __future__ import annotations

from controllers.scsi.config import ScsiDiskConfig
from scenarios.profiles.families import SCSI
from scenarios.profiles.registry import get_profile


def scsi_disk_config(profile_name: str, capacity_blocks: int, block_size: int = 512, read_only: bool = False,
                     read_zeroes_after_unmap: bool | None = None) -> ScsiDiskConfig:
    """The disk configuration of `profile_name` for an image of `capacity_blocks` blocks.

    `read_zeroes_after_unmap` is what the drive really does (Drive.zeroes_after_discard with sector_size=block_size
    computes it); only FROM_DRIVE facts use it, and None (unknown) never promises zeros. The QEMU profiles ignore
    it: QEMU never reports LBPRZ.
    """
    return get_profile(profile_name)[SCSI].config(from_drive=read_zeroes_after_unmap, capacity_blocks=capacity_blocks,
                                                  block_size=block_size, read_only=read_only)
