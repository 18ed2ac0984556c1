"""The ATA device's and the AHCI HBA's configuration under a hypervisor profile."""

from __future__ import annotations

from controllers.ahci_config import AhciConfig
from controllers.ata.config import AtaConfig
from scenarios.profiles.families import AHCI, ATA
from scenarios.profiles.registry import get_profile


def ata_config(profile_name: str, capacity_sectors: int, controller: str,
               read_zeroes_after_trim: bool | None = None) -> AtaConfig:
    """The device configuration for a disk of `capacity_sectors` behind `controller` ("ide" or "ahci").

    `read_zeroes_after_trim` is what the drive really does (Drive.zeroes_after_discard computes it); only facts
    whose value is FROM_DRIVE use it, and None there means "not known", which must not promise zeros. The CHS
    geometry is QEMU's guess from the capacity (None): a new disk has no MBR to read one from.
    """
    return get_profile(profile_name)[ATA].config(controller, from_drive=read_zeroes_after_trim,
                                                 capacity_sectors=capacity_sectors, chs=None)


def ahci_config(profile_name: str) -> AhciConfig:
    """The AHCI HBA's completion and error semantics."""
    return get_profile(profile_name)[AHCI].config()
