"""Hypervisor and standard profiles: named sets of device-configuration values, each with its source.

A controller is created from a profile's values (`get_profile(name).ata_config(...)`), never from a version
check in controller code (issue 5). `ata` holds the ATA device profiles (qemu-7.2, qemu-1.4-pc, strict);
`discard` turns a drive's facts into "does a trimmed sector read zeros", which the strict profile needs and
which only the creator of the controller knows. Scenarios may import controllers, never images or emu.block.
"""

from __future__ import annotations

from scenarios.profiles.ata import (
    DEFAULT_PROFILE,
    FROM_DRIVE,
    PROFILES,
    Profile,
    describe,
    get_profile,
)
from scenarios.profiles.discard import read_zeroes_after_trim
from scenarios.profiles.facts import Fact, UnknownProfile

__all__ = [
    "DEFAULT_PROFILE",
    "FROM_DRIVE",
    "PROFILES",
    "Fact",
    "Profile",
    "UnknownProfile",
    "describe",
    "get_profile",
    "read_zeroes_after_trim",
]
