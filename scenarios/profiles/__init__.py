"""Hypervisor and standard profiles: named sets of device-configuration values, each with its source.

A controller is created from a profile's values, never from a version check in controller code. Each device
family keeps its own table per profile name: `ata` (ATA device and AHCI HBA), `virtio_blk` (virtio-blk and the
virtio-pci transport), `scsi` (the SCSI disk), `virtio_scsi` (the virtio-scsi HBA); `registry` holds the names
they share and the listing of every fact. What a discard really leaves behind (ATA RZAT, SCSI LBPRZ in the strict
profiles) is the Drive's answer (`Drive.zeroes_after_discard`), handed in by whoever creates the device.
"""

from __future__ import annotations

from scenarios.profiles.ata import DEFAULT_PROFILE, Profile, get_profile
from scenarios.profiles.facts import FROM_DRIVE, Fact, UnknownProfile
from scenarios.profiles.registry import NAMES, check_name, describe

__all__ = [
    "DEFAULT_PROFILE",
    "FROM_DRIVE",
    "NAMES",
    "Fact",
    "Profile",
    "UnknownProfile",
    "check_name",
    "describe",
    "get_profile",
]
