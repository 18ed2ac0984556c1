"""One set of profile names over every device family's tables, and the listing `emu profiles` prints.

Each family module (ata, virtio_blk, scsi, virtio_scsi) keeps its facts per profile name in the shape its configuration
needs; a profile name means the same hypervisor or standard in all of them. This module checks that every
family knows every name and turns a name into sections of (label, Fact) for a reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from scenarios.profiles import ata, scsi, virtio_blk, virtio_scsi
from scenarios.profiles.ata import DEFAULT_PROFILE
from scenarios.profiles.facts import FROM_DRIVE, Fact, UnknownProfile

NAMES: tuple[str, ...] = tuple(ata.PROFILES)


@dataclass(frozen=True)
class Section:
    """One family's part of a profile: what it models, every fact, and notes."""

    family: str
    description: str
    facts: tuple[tuple[str, Fact], ...]
    notes: tuple[str, ...] = field(default=())


def _ata(name: str) -> Section:
    profile = ata.get_profile(name)
    return Section("ata", profile.description, tuple(profile.facts()), profile.notes)


def _virtio_blk(name: str) -> Section:
    profile = virtio_blk.get_profile(name)
    facts = [(f"blk.{label}", fact) for label, fact in profile.blk.items()]
    facts += [(f"pci.{label}", fact) for label, fact in profile.pci.items()]
    return Section("virtio-blk", profile.description, tuple(facts), profile.notes)


def _scsi(name: str) -> Section:
    return Section("scsi", scsi.DESCRIPTIONS[name], tuple(scsi.PROFILES[name].items()))


def _virtio_scsi(name: str) -> Section:
    profile = virtio_scsi.get_profile(name)
    return Section("virtio-scsi", profile.description, tuple(profile.scsi.items()), profile.notes)


FAMILIES: dict[str, Callable[[str], Section]] = {"ata": _ata, "virtio-blk": _virtio_blk, "scsi": _scsi,
                                                 "virtio-scsi": _virtio_scsi}
FAMILY_NAMES: dict[str, tuple[str, ...]] = {"ata": NAMES, "virtio-blk": tuple(virtio_blk.PROFILES),
                                             "scsi": tuple(scsi.PROFILES), "virtio-scsi": tuple(virtio_scsi.PROFILES)}


def check_name(name: str) -> str:
    """`name` if it is a profile, else a usage error naming the known ones."""
    if name not in NAMES:
        raise UnknownProfile(f"unknown profile '{name}': known profiles are {', '.join(NAMES)}")
    return name


def sections(name: str) -> Iterator[Section]:
    """Every family's section of profile `name`, in FAMILIES order."""
    check_name(name)
    for section_of in FAMILIES.values():
        yield section_of(name)


def _show(value: object) -> str:
    if value == FROM_DRIVE:
        return "from the drive"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def describe(name: str | None = None) -> str:
    """Each profile (or just `name`): per family, what it models, every value with its source, and notes."""
    lines: list[str] = []
    for profile in [check_name(name)] if name is not None else NAMES:
        if lines:
            lines.append("")
        default = " (default)" if profile == DEFAULT_PROFILE else ""
        lines.append(f"{profile}{default}")
        for section in sections(profile):
            lines.append(f"  [{section.family}] {section.description}")
            for label, fact in section.facts:
                lines.append(f"    {label:<28} {_show(fact.value):<16} {fact.source}")
            lines.extend(f"    note: {note}" for note in section.notes)
    return "\n".join(lines)
