"""The one shape of every profile: a family profile states one configuration dataclass, a profile is one family
profile per family.

A family is one configuration dataclass (an ATA device's `AtaConfig`, a guest's `SdConfig`...) together with the
fields only whoever creates the device or driver knows (the image's capacity, the drive's read-only flag) and the
variants a fact may differ by (the controller an ATA device sits behind). A `FamilyProfile` states every other
field as a `Fact`, and nothing else: a field left out would silently take the dataclass's own default, a value
without a source. A `Profile` (a hypervisor release, a standard, a guest kernel) is one family profile for each
family of its `Shape`, which also says how a listing groups them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from emu.errors import UsageError
from scenarios.profiles.facts import FROM_DRIVE, Departure, Fact, MachineTypes, ProfileError

C = TypeVar("C")


@dataclass(frozen=True)
class Family(Generic[C]):
    """One configuration dataclass as profiles state it: `given` are the fields its creator passes, `variants` the
    keys a fact may be stated per (chosen by `variant_of`, e.g. the controller)."""

    name: str
    config_type: type[C]
    given: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    variant_of: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields a family profile must state, in the dataclass's order."""
        return tuple(f.name for f in dataclasses.fields(self.config_type) if f.name not in self.given)


@dataclass(frozen=True)
class FamilyProfile(Generic[C]):
    """Every field of `family` but the given ones, each a Fact (or, for a field that differs by variant, a mapping
    of every variant to its Fact), in the order a listing shows them; what the values model, notes, and where emu
    departs from the hypervisor on purpose."""

    family: Family[C]
    description: str
    facts: Mapping[str, Fact | Mapping[str, Fact]]
    notes: tuple[str, ...] = ()
    departures: tuple[Departure, ...] = ()

    def __post_init__(self) -> None:
        label = f"{self.family.name} profile"
        if not self.description.strip():
            raise ProfileError(f"{label}: no description")
        wanted = set(self.family.fields)
        missing, unknown = sorted(wanted - set(self.facts)), sorted(set(self.facts) - wanted)
        if missing or unknown:
            raise ProfileError(f"{label} '{self.description}': missing fields {missing}, unknown fields {unknown}")
        for name, fact in self.facts.items():
            if isinstance(fact, Mapping) and tuple(fact) != self.family.variants:
                raise ProfileError(f"{label}: {name} must give exactly {', '.join(self.family.variants)}")

    def items(self) -> Iterator[tuple[str, Fact]]:
        """(label, Fact) of every fact; a field stated per variant is one `name[variant]` per variant."""
        for name, fact in self.facts.items():
            if isinstance(fact, Mapping):
                yield from ((f"{name}[{variant}]", fact[variant]) for variant in self.family.variants)
            else:
                yield name, fact

    def config(self, variant: str | None = None, *, from_drive: bool | None = None, **given: Any) -> C:
        """The configuration: the facts' values (those of `variant` where a field differs by it), FROM_DRIVE facts
        as `from_drive` (what the drive really does; None, not known, never promises zeros), and exactly the
        family's given fields."""
        if set(given) != set(self.family.given):
            raise ProfileError(f"{self.family.name} configuration: given {sorted(given)}, needs "
                               f"{sorted(self.family.given)}")
        if self.family.variants and variant not in self.family.variants:
            raise UsageError(f"{self.family.variant_of} '{variant}': the {self.family.name} profile knows "
                             f"{', '.join(self.family.variants)}")
        values = {}
        for name, fact in self.facts.items():
            value = (fact[variant] if isinstance(fact, Mapping) else fact).value
            values[name] = bool(from_drive) if value == FROM_DRIVE else value
        return self.family.config_type(**values, **given)


@dataclass(frozen=True)
class Section:
    """One block of a listing: the families it shows, each with the prefix of its labels; the first family's
    description heads it and every family's notes follow it."""

    title: str
    parts: tuple[tuple[Family, str], ...]


@dataclass(frozen=True)
class Shape:
    """What one kind of profile (hypervisor, guest) is made of: its families, in the sections a listing shows."""

    kind: str
    sections: tuple[Section, ...]

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(family for section in self.sections for family, _ in section.parts)


@dataclass(frozen=True)
class Profile:
    """A named profile: one family profile for every family of `shape`; a hypervisor's also names the machine types
    its facts describe (None: a standard or a guest, no machine)."""

    name: str
    shape: Shape
    families: tuple[FamilyProfile, ...]
    machines: MachineTypes | None = None

    def __post_init__(self) -> None:
        got = [p.family.name for p in self.families]
        wanted = [f.name for f in self.shape.families]
        if sorted(got) != sorted(wanted) or any(p.family not in self.shape.families for p in self.families):
            raise ProfileError(f"{self.shape.kind} profile {self.name}: families {got}, needs {wanted}")

    @property
    def departures(self) -> tuple[Departure, ...]:
        """Every family's departures from the hypervisor, in the shape's order."""
        return tuple(d for family in self.shape.families for d in self[family].departures)

    def __getitem__(self, family: Family[C]) -> FamilyProfile[C]:
        for profile in self.families:
            if profile.family is family:
                return profile
        raise KeyError(family.name)
