"""Which guest model runs a scenario's steps, by the scenario's guest profile, and which guest profile configures
the drivers of its machine."""

from __future__ import annotations

import random

from emu.errors import UsageError
from scenarios.guest.linux.system import LinuxGuest
from scenarios.guest.windows.system import WindowsGuest

LINUX = "linux-"
WINDOWS = "windows-"
# The drivers a Windows guest's machine is built with. Only Linux drivers are modelled (controllers/drivers), so
# a Windows guest's commands go out in Linux 6.1's wire shapes (request sizes and splits, TRIM range lists, UNMAP
# parameter lists): an approximation of storport, msahci/storahci, viostor and vioscsi. Whether a Windows guest
# sends a discard at all is its own profile's (scenarios.profiles.windows), not the drivers'.
WINDOWS_DRIVERS = "linux-6.1"


def make_guest(name: str, machine, rng: random.Random) -> LinuxGuest | WindowsGuest:
    """The guest of profile `name` on `machine`, drawing its random bytes from `rng`."""
    if name.startswith(LINUX):
        return LinuxGuest(machine, rng)
    if name.startswith(WINDOWS):
        return WindowsGuest(name, machine, rng)
    raise UsageError(f"guest '{name}': only Linux and Windows guests run scenarios")


def driver_profile(name: str) -> str:
    """The guest profile whose driver facts set up the machine's queue for guest `name`."""
    return WINDOWS_DRIVERS if name.startswith(WINDOWS) else name
