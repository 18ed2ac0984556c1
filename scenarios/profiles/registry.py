"""Every profile by name, the guest configuration a guest profile gives, and the listing `emu profiles` prints.

Hypervisor profiles (a QEMU release, the standards) name the emulated devices' behaviour and are what `--profile`
chooses; guest profiles name a kernel's drivers. A profile is one file of facts (qemu_7_2.py, linux_6_1.py...);
this module only gathers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from controllers.drivers.config import GuestConfig
from scenarios.profiles import linux_6_1, qemu_1_4_pc, qemu_7_2, qemu_8_2, strict, windows
from scenarios.profiles.facts import FROM_DRIVE, Departure, Fact, ProfileError, lookup
from scenarios.profiles.families import BLOCK, GUEST, LIBATA, SD, VIRTIO_BLK_DRIVER, VIRTIO_SCSI_DRIVER
from scenarios.profiles.family import Profile

HYPERVISORS: dict[str, Profile] = {p.name: p for p in (qemu_7_2.PROFILE, qemu_8_2.PROFILE, qemu_1_4_pc.PROFILE,
                                                       strict.PROFILE)}
# Linux guests state their drivers' limits (the GUEST shape); Windows guests their delete notifications
# (windows.WINDOWS_GUEST), and run on the Linux drivers' wire shapes (scenarios.guest.select.driver_profile).
GUESTS: dict[str, Profile] = {p.name: p for p in (linux_6_1.PROFILE, *windows.PROFILES.values())}
NAMES: tuple[str, ...] = tuple(HYPERVISORS)
GUEST_NAMES: tuple[str, ...] = tuple(GUESTS)
DEFAULT_PROFILE = "qemu-7.2"
DEFAULT_GUEST = "linux-6.1"


def get_profile(name: str) -> Profile:
    """The hypervisor profile called `name`; an unknown name is a usage error naming the known ones."""
    return lookup(HYPERVISORS, name)


def check_name(name: str) -> str:
    """`name` if it is a hypervisor profile, else a usage error naming the known ones."""
    return get_profile(name).name


def guest_config(name: str = DEFAULT_GUEST) -> GuestConfig:
    """The configuration of every guest driver under guest profile `name`."""
    profile = lookup(GUESTS, name)
    if profile.shape is not GUEST:
        raise ProfileError(f"guest profile '{name}' configures no Linux drivers (its machine runs linux-6.1's)")
    return GuestConfig(block=profile[BLOCK].config(), libata=profile[LIBATA].config(), sd=profile[SD].config(),
                       virtio_blk=profile[VIRTIO_BLK_DRIVER].config(),
                       virtio_scsi=profile[VIRTIO_SCSI_DRIVER].config())


@dataclass(frozen=True)
class Listing:
    """One section of a profile as the listing shows it: title, description, every (label, Fact), notes,
    departures."""

    title: str
    description: str
    facts: tuple[tuple[str, Fact], ...]
    notes: tuple[str, ...]
    departures: tuple[Departure, ...] = ()


def listings(profile: Profile) -> Iterator[Listing]:
    """The sections of `profile`, in its shape's order: each family's facts under its prefix, then its notes."""
    for section in profile.shape.sections:
        parts = [(profile[family], prefix) for family, prefix in section.parts]
        facts = tuple((prefix + label, fact) for part, prefix in parts for label, fact in part.items())
        yield Listing(section.title, parts[0][0].description, facts, tuple(n for part, _ in parts for n in part.notes),
                      tuple(d for part, _ in parts for d in part.departures))


def _show(value: object) -> str:
    if value == FROM_DRIVE:
        return "from the drive"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _describe(profile: Profile) -> list[str]:
    default = " (default)" if profile.name in (DEFAULT_PROFILE, DEFAULT_GUEST) else ""
    lines = [f"{profile.name}{default}"]
    if profile.machines is not None:
        types = "; ".join(f"{board}: {', '.join(names)}" for board, names in profile.machines.boards.items())
        lines.append(f"  machine types (QEMU {profile.machines.qemu}): {types} ({profile.machines.source})")
    for listing in listings(profile):
        lines.append(f"  [{listing.title}] {listing.description}")
        lines.extend(f"    {label:<28} {_show(fact.value):<16} {fact.source}" for label, fact in listing.facts)
        lines.extend(f"    note: {note}" for note in listing.notes)
        lines.extend(f"    departure {d.name} ({d.controller}): {d.reason} (QEMU: {d.source}; example: {d.example})"
                     for d in listing.departures)
    return lines


def describe(name: str | None = None) -> str:
    """One profile (hypervisor or guest), or every hypervisor profile and the names of the guest profiles: per
    section, what it models, every value with its source, and notes."""
    if name is not None:
        return "\n".join(_describe(lookup({**HYPERVISORS, **GUESTS}, name)))
    blocks = ["\n".join(_describe(profile)) for profile in HYPERVISORS.values()]
    guests = ", ".join(f"{n} (default)" if n == DEFAULT_GUEST else n for n in GUEST_NAMES)
    blocks.append(f"guest profiles (Linux drivers' limits, Windows delete notifications; `emu profiles NAME` lists "
                  f"one): {guests}")
    return "\n\n".join(blocks)
