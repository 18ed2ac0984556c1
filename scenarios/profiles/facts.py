"""What every profile is made of: values that each carry the source they were read from.

Each device family (ATA, virtio-blk, SCSI) keeps its own table of facts per profile name; a device
configuration is built from such a table by `config_from_facts`, which refuses a table that leaves a field to
the dataclass's own default (a value without a source) or names a field the configuration does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from emu.errors import UsageError

T = TypeVar("T")

# The value of a fact the profile takes from the drive when the device is created (what a discard really leaves
# behind: ATA RZAT, SCSI LBPRZ in the strict profiles); whoever creates the device passes the drive's answer.
FROM_DRIVE = "from-drive"


class UnknownProfile(UsageError):
    """A profile name no registry entry has (`--profile NAME`, a scenario file)."""


@dataclass(frozen=True)
class Fact:
    """One value and where it was read: a release + file + function, a commit, or a standard's clause."""

    value: object
    source: str

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError(f"fact {self.value!r} has no source")


def lookup(table: Mapping[str, T], name: str) -> T:
    """`table[name]`; an unknown name is a usage error naming the known ones (one line, for the CLI)."""
    try:
        return table[name]
    except KeyError:
        raise UnknownProfile(f"unknown profile '{name}': known profiles are {', '.join(table)}") from None


def profile_fields(config_type: type, *, given: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fields of the dataclass `config_type` a profile must state: all but those the creator `given`."""
    return tuple(f.name for f in dataclasses.fields(config_type) if f.name not in given)


def check_facts(label: str, config_type: type, facts: Mapping[str, Fact], *, given: tuple[str, ...] = ()) -> None:
    """Raise ValueError unless `facts` states exactly the profile fields of `config_type`."""
    wanted = set(profile_fields(config_type, given=given))
    missing, unknown = sorted(wanted - set(facts)), sorted(set(facts) - wanted)
    if missing or unknown:
        raise ValueError(f"{label}: missing fields {missing}, unknown fields {unknown}")


def config_from_facts(config_type: type[T], facts: Mapping[str, Fact], **given: Any) -> T:
    """An instance of `config_type` from the facts' values plus the values only the creator knows."""
    return config_type(**{name: fact.value for name, fact in facts.items()}, **given)
