"""Profiles: named sets of configuration values, each with its source.

A controller is created from a hypervisor profile's values (a QEMU release, the standards), a guest driver from a
guest profile's (a Linux release), never from a version check in their code. Every profile has the one shape of
`family`: one family profile per configuration dataclass (`families`), each fact sourced; one file of facts per
profile (`qemu_7_2`, `qemu_8_2`, `qemu_1_4_pc`, `strict`, `linux_6_1`), gathered by `registry`. The family
modules (`ata`, `virtio_blk`, `scsi`, `virtio_scsi`) give one device family's configuration under a profile name
with the values only its creator knows; what a discard really leaves behind (ATA RZAT, SCSI LBPRZ in the strict
profiles) is the Drive's answer (`Drive.zeroes_after_discard`), handed in by whoever creates the device.
"""

from __future__ import annotations

from scenarios.profiles.facts import FROM_DRIVE, Departure, Fact, ProfileError, UnknownProfile
from scenarios.profiles.family import Family, FamilyProfile, Profile
from scenarios.profiles.registry import (
    DEFAULT_GUEST,
    DEFAULT_PROFILE,
    GUEST_NAMES,
    NAMES,
    check_name,
    describe,
    get_profile,
    guest_config,
)

__all__ = [
    "DEFAULT_GUEST",
    "DEFAULT_PROFILE",
    "FROM_DRIVE",
    "Departure",
    "GUEST_NAMES",
    "NAMES",
    "Fact",
    "Family",
    "FamilyProfile",
    "Profile",
    "ProfileError",
    "UnknownProfile",
    "check_name",
    "describe",
    "get_profile",
    "guest_config",
]
