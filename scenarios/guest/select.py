"""Which guest model runs a scenario's steps, by the scenario's guest profile, and which guest profile configures
the drivers of its machine."""

from __future__ import annotations

import random

from emu.errors import UsageError
from scenarios.guest.linux.system import LinuxGuest

LINUX = "linux-"


def make_guest(name: str, machine, rng: random.Random) -> LinuxGuest:
    """The guest of profile `name` on `machine`, drawing its random bytes from `rng`."""
    if name.startswith(LINUX):
        return LinuxGuest(machine, rng)
    raise UsageError(f"guest '{name}': only Linux guests run scenarios yet")


def driver_profile(name: str) -> str:
    """The guest profile whose driver facts set up the machine's queue for guest `name`."""
    return name
