"""The kinds of value a scenario key holds, each with its check, and `Key`: one key of a table, its kind and its
default. Tables are tuples of keys, so one definition drives reading, the errors and the documentation."""

from __future__ import annotations

import copy
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emu.errors import UsageError
from emu.units import human_size, parse_size
from scenarios.spec.locate import Path
from scenarios.spec.reader import BARE, Reader, expected, quote


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED = _Marker("REQUIRED")    # a key's default: the key must be given
OPTIONAL = _Marker("OPTIONAL")    # a key's default: absent is a meaning of its own (Key.note says which)
MISSING = "required key missing"


class Kind(ABC):
    """How one key's value is checked and turned into what the scenario holds."""

    @abstractmethod
    def read(self, reader: Reader, path: Path, value: Any) -> Any:
        """The value as the scenario holds it, or the reader's error for `path`."""

    def describe(self) -> str:
        """The values allowed, for the documentation's tables ('' when the key's name says enough)."""
        return ""


@dataclass(frozen=True)
class Key:
    name: str
    kind: Kind
    default: Any = REQUIRED
    note: str = ""              # what an OPTIONAL key's absence means


def read_table(reader: Reader, path: Path, value: Any, keys: Sequence[Key]) -> dict[str, Any]:
    """Every key of `keys` read from the table `value`: given, else its default (absent OPTIONAL keys are left out);
    unknown keys are errors naming the known ones."""
    if not isinstance(value, dict):
        raise reader.fail(path, expected("a table", value))
    known = {key.name: key for key in keys}
    for name in value:
        if name not in known:
            raise reader.fail(path + (name,), f"unknown key (known: {', '.join(known)})")
    out = {}
    for key in keys:
        if key.name in value:
            out[key.name] = key.kind.read(reader, path + (key.name,), value[key.name])
        elif key.default is REQUIRED:
            raise reader.fail(path + (key.name,), MISSING)
        elif key.default is not OPTIONAL:
            out[key.name] = key.kind.read(reader, path + (key.name,), copy.copy(key.default))
    return out


@dataclass(frozen=True)
class Text(Kind):
    pattern: re.Pattern[str] | None = None
    rule: str = ""              # what `pattern` asks for, in words

    def read(self, reader: Reader, path: Path, value: Any) -> str:
        if not isinstance(value, str):
            raise reader.fail(path, expected("a string", value))
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise reader.fail(path, f"{quote(value)} is not {self.rule}")
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """One of a few names; a mapping's keys are the names accepted and its values what they stand for (aliases).
    A callable gives the names from the reader (the image formats, which the caller knows)."""

    values: Sequence[str] | Mapping[str, str] | Callable[[Reader], Sequence[str]]
    noun: str

    def read(self, reader: Reader, path: Path, value: Any) -> str:
        allowed = self.values(reader) if callable(self.values) else self.values
        if not isinstance(value, str):
            raise reader.fail(path, expected("a string", value))
        if value not in allowed:
            raise reader.fail(path, f"unknown {self.noun} {quote(value)} (known: {', '.join(allowed)})")
        return allowed[value] if isinstance(allowed, Mapping) else value

    def describe(self) -> str:
        return "" if callable(self.values) else ", ".join(self.values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer(Kind):
    def read(self, reader: Reader, path: Path, value: Any) -> int:
        if not _is_int(value):
            raise reader.fail(path, expected("an integer", value))
        if not 0 <= value < 1 << 64:
            raise reader.fail(path, f"{value} is not from 0 to 2**64 - 1")
        return value


@dataclass(frozen=True)
class Flag(Kind):
    def read(self, reader: Reader, path: Path, value: Any) -> bool:
        if not isinstance(value, bool):
            raise reader.fail(path, expected("true or false", value))
        return value

    def describe(self) -> str:
        return "true, false"


@dataclass(frozen=True)
class Size(Kind):
    """Bytes: an integer, or a string with a k/M/G/T suffix as qemu-img takes it."""

    def read(self, reader: Reader, path: Path, value: Any) -> int:
        if isinstance(value, str):
            try:
                return parse_size(value)
            except UsageError:
                raise reader.fail(path, f"{quote(value)} is not a size (k/M/G/T suffixes)") from None
        if not _is_int(value):
            raise reader.fail(path, expected('a size (bytes, or a string such as "64M")', value))
        if not 0 <= value < 1 << 63:
            raise reader.fail(path, f"{value} is not a size (from 0 to 2**63 - 1 bytes)")
        return value


@dataclass(frozen=True)
class Seconds(Kind):
    def read(self, reader: Reader, path: Path, value: Any) -> float:
        if not (_is_int(value) or isinstance(value, float)):
            raise reader.fail(path, expected("a number of seconds", value))
        if not (math.isfinite(value) and value >= 0):
            raise reader.fail(path, f"{value} is not a number of seconds (finite, 0 or more)")
        return float(value)


@dataclass(frozen=True)
class Options(Kind):
    """Create options as `emu img create -o` takes them: names to strings (integers and booleans as qemu-img
    writes them: `65536`, `on`)."""

    def read(self, reader: Reader, path: Path, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise reader.fail(path, expected("a table of options", value))
        out = {}
        for name, option in value.items():
            if not BARE.fullmatch(name):
                raise reader.fail(path + (name,), f"{quote(name)} is not an option name")
            if isinstance(option, bool):
                out[name] = "on" if option else "off"
            elif isinstance(option, (int, str)):
                out[name] = str(option)
            else:
                raise reader.fail(path + (name,), expected("a string, an integer or a boolean (quote it)", option))
        return out


@dataclass(frozen=True)
class Section(Kind):
    """A table of `keys`, built into `build` (a frozen dataclass whose fields are the keys, absent ones None);
    `check` then looks at the whole."""

    keys: tuple[Key, ...]
    build: Callable[..., Any]
    check: Callable[[Reader, Path, Any], None] | None = None

    def read(self, reader: Reader, path: Path, value: Any) -> Any:
        values = read_table(reader, path, value, self.keys)
        built = self.build(**{key.name: values.get(key.name) for key in self.keys})
        if self.check is not None:
            self.check(reader, path, built)
        return built


@dataclass(frozen=True)
class Entries(Kind):
    """An array of tables (`[[steps]]`, or inline tables in `[...]`), each read as `entry`."""

    entry: Kind
    at_least: int = 0

    def read(self, reader: Reader, path: Path, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise reader.fail(path, expected("an array of tables", value))
        if len(value) < self.at_least:
            raise reader.fail(path, f"at least {self.at_least} needed, {len(value)} given")
        return tuple(self.entry.read(reader, path + (i,), item) for i, item in enumerate(value))


def _bytes(value: int) -> str:
    return f"{value} bytes ({human_size(value)})"


def check_within(reader: Reader, path: Path, sizes: Mapping[str, int], disk_size: int) -> None:
    """Sizes of one table (a step, a fill) fit on the disk: each alone, and `offset` + `size` or `length`."""
    for name, value in sizes.items():
        if value > disk_size:
            raise reader.fail(path + (name,), f"{_bytes(value)} is beyond the {human_size(disk_size)} disk")
    offset = sizes.get("offset", 0)
    for name in ("size", "length"):
        if name in sizes and offset + sizes[name] > disk_size:
            raise reader.fail(path + (name,), f"offset + {name} = {_bytes(offset + sizes[name])} ends beyond the "
                                              f"{human_size(disk_size)} disk ({disk_size} bytes)")
