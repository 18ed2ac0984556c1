"""What every profile is made of: values that each carry the source they were read from.

A value nobody can check is a guess; so every value a profile gives a configuration is a `Fact` with its source
(a release + file + function, a commit, or a standard's clause), and a fact without one is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from emu.errors import EmuError, UsageError

T = TypeVar("T")

# The value of a fact the profile takes from the drive when the device is created (what a discard really leaves
# behind: ATA RZAT, SCSI LBPRZ in the strict profiles); whoever creates the device passes the drive's answer.
FROM_DRIVE = "from-drive"


class ProfileError(EmuError):
    """A profile that does not state what its configuration needs (a fact without source, a missing or unknown
    field), or a configuration asked of it without the values only its creator knows."""


class UnknownProfile(UsageError):
    """A profile name no registry entry has (`--profile NAME`, a scenario file)."""


@dataclass(frozen=True)
class Fact:
    """One value and where it was read: a release + file + function, a commit, or a standard's clause."""

    value: object
    source: str

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ProfileError(f"fact {self.value!r} has no source")


@dataclass(frozen=True)
class Departure:
    """Where emu's model knowingly answers otherwise than the hypervisor it models, because what the real one does
    is a bug emu must not copy (an assertion failure, a hang, a buffer it overruns). `example` is one replay-script
    line (JSON, on `controller`) whose outcomes differ in exactly `keys` ("qemu" when QEMU dies or stops
    answering); `covers` says which script lines (their parsed JSON) the departure concerns, so that a differential
    run leaves them out."""

    name: str
    controller: str
    reason: str
    source: str
    example: str
    keys: tuple[str, ...]
    covers: Callable[[dict], bool]

    def __post_init__(self) -> None:
        if not (self.reason.strip() and self.source.strip() and self.keys):
            raise ProfileError(f"departure {self.name!r}: give its reason, its source and the keys it changes")


@dataclass(frozen=True)
class MachineTypes:
    """The machine types a hypervisor profile describes, per board ("pc": i440FX + PIIX, "q35": Q35 + ICH9), of the
    QEMU release `qemu` (the binary's version, as `qemu-system-x86_64 --version` prints it): what the machine-type
    check boots to compare the guest-visible facts with the profile's."""

    qemu: str
    boards: Mapping[str, tuple[str, ...]]
    source: str

    def __post_init__(self) -> None:
        if not (self.source.strip() and self.boards and all(self.boards.values())):
            raise ProfileError(f"machine types of QEMU {self.qemu}: give at least one per board, and a source")


def lookup(table: Mapping[str, T], name: str) -> T:
    """`table[name]`; an unknown name is a usage error naming the known ones (one line, for the CLI)."""
    try:
        return table[name]
    except KeyError:
        raise UnknownProfile(f"unknown profile '{name}': known profiles are {', '.join(table)}") from None
