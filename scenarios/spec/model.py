"""What a scenario is once read: frozen dataclasses whose fields are the file's keys, and its settings (every key's
effective value, flat), which a run records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

_DESCRIPTION = {"setting": False}     # says what the scenario is about, changes nothing in the run
_INLINE = {"inline": True}            # its keys sit in the parent table (a step's arguments beside `do`)


@dataclass(frozen=True)
class MachineSpec:
    profile: str
    controller: str
    guest: str


@dataclass(frozen=True)
class Fill:
    """A range of a backing layer written before the run: `content` is random, pattern or zeros."""

    offset: int
    size: int
    content: str


@dataclass(frozen=True)
class LayerSpec:
    """One image of the chain under the disk."""

    format: str
    options: dict[str, str]
    fill: tuple[Fill, ...]


@dataclass(frozen=True)
class DiskSpec:
    size: int
    format: str
    options: dict[str, str]
    payload: str
    backing: tuple[LayerSpec, ...]      # base first


@dataclass(frozen=True)
class DriveSpec:
    discard: str
    detect_zeroes: str


@dataclass(frozen=True)
class FsSpec:
    type: str
    mkfs: str
    mount: str


@dataclass(frozen=True)
class Step:
    """One thing the guest does: `args` holds the keys of its kind (sizes in bytes); an optional key left out
    is absent, with the meaning its kind gives (steps.STEPS)."""

    do: str
    phase: str | None
    args: dict[str, Any] = field(metadata=_INLINE)


@dataclass(frozen=True)
class Scenario:
    name: str = field(metadata=_DESCRIPTION)
    title: str = field(metadata=_DESCRIPTION)
    story: str = field(metadata=_DESCRIPTION)
    seed: int
    source: str = field(metadata=_DESCRIPTION)    # the file as errors name it
    machine: MachineSpec
    disk: DiskSpec
    drive: DriveSpec
    fs: FsSpec | None
    steps: tuple[Step, ...]

    def settings(self) -> dict[str, Any]:
        """Every key that decides the run, with its effective value, by its `--set` path (`machine.profile`,
        `steps[3].size`); `--set` of all of them on the same file gives this scenario again."""
        return dict(_flatten("", self))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if is_dataclass(value):
        for f in fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("setting", True) and item is not None:
                yield from _flatten(prefix if f.metadata.get("inline") else _join(prefix, f.name), item)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _flatten(f"{prefix}[{i}]", item)
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _flatten(_join(prefix, name), item)
    else:
        yield prefix, value
