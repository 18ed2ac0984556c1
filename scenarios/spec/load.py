"""Reading a scenario: the file (a path, or a name of the catalog), TOML, the `--set` overrides, then every table's
keys as `TOP` defines them, and the walk over the steps. Every error is one ScenarioError line."""

from __future__ import annotations

import functools
import os
import pathlib
import re
import tomllib
from collections.abc import Collection, Iterable
from typing import Any

from emu.block.options import DETECT_ZEROES_VALUES, DISCARD_VALUES, DriveOptions
from emu.errors import UsageError
from scenarios.machine import CONTROLLERS
from scenarios.profiles import DEFAULT_GUEST, DEFAULT_PROFILE, GUEST_NAMES, NAMES
from scenarios.spec.locate import Path
from scenarios.spec.model import DiskSpec, DriveSpec, Fill, FsSpec, LayerSpec, MachineSpec, Scenario
from scenarios.spec.overrides import apply_overrides, parse_override
from scenarios.spec.reader import Reader, ScenarioError
from scenarios.spec.steps import CONTENT, StepEntry, walk
from scenarios.spec.values import (
    MISSING,
    OPTIONAL,
    Choice,
    Entries,
    Integer,
    Key,
    Options,
    Section,
    Size,
    Text,
    check_within,
)

CATALOG = pathlib.Path(__file__).resolve().parents[1] / "catalog"
DEFAULT_CONTROLLER = "virtio-blk"
DEFAULT_FORMAT = "qcow2"
FS_TYPES = ("ext4", "ntfs", "fat32")
PAYLOADS = ("real", "synthetic")
NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SECTOR = 512


def _check_disk(reader: Reader, path: Path, disk: DiskSpec) -> None:
    if disk.size == 0 or disk.size % SECTOR:
        raise reader.fail(path + ("size",), f"{disk.size} bytes is not a whole number of {SECTOR}-byte sectors, "
                                            "at least one")
    for i, layer in enumerate(disk.backing):
        for j, fill in enumerate(layer.fill):
            check_within(reader, path + ("backing", i, "fill", j), {"offset": fill.offset, "size": fill.size},
                         disk.size)


def _check_drive(reader: Reader, path: Path, drive: DriveSpec) -> None:
    try:
        DriveOptions(discard=drive.discard, detect_zeroes=drive.detect_zeroes)
    except UsageError as err:
        raise reader.fail(path + ("detect_zeroes",), str(err)) from None


_FORMAT = Key("format", Choice(lambda reader: reader.formats, "format"), DEFAULT_FORMAT)
_OPTIONS = Key("options", Options(), {})
_FILL = Section((Key("offset", Size(), 0), Key("size", Size()), Key("content", CONTENT)), Fill)
_LAYER = Section((_FORMAT, _OPTIONS, Key("fill", Entries(_FILL), [])), LayerSpec)
TITLE = Key("title", Text(re.compile(r"[^\r\n]+"), "one line, not empty"))
TOP = (
    Key("name", Text(NAME, "lower-case words joined by '-'")),
    TITLE,
    Key("story", Text(), ""),
    Key("seed", Integer(), 1),
    Key("machine", Section((Key("profile", Choice(NAMES, "profile"), DEFAULT_PROFILE),
                            Key("controller", Choice(CONTROLLERS, "controller"), DEFAULT_CONTROLLER),
                            Key("guest", Choice(GUEST_NAMES, "guest profile"), DEFAULT_GUEST)), MachineSpec), {}),
    Key("disk", Section((Key("size", Size()), _FORMAT, _OPTIONS, Key("payload", Choice(PAYLOADS, "payload"), "real"),
                         Key("backing", Entries(_LAYER), [])), DiskSpec, _check_disk)),
    Key("drive", Section((Key("discard", Choice(DISCARD_VALUES, "discard mode"), "ignore"),
                          Key("detect_zeroes", Choice(DETECT_ZEROES_VALUES, "detect_zeroes mode"), "off")),
                         DriveSpec, _check_drive), {}),
    Key("fs", Section((Key("type", Choice(FS_TYPES, "file system")), Key("mkfs", Text(), ""),
                       Key("mount", Text(), "")), FsSpec), OPTIONAL),
    Key("steps", Entries(StepEntry(), at_least=1)),
)


def _catalog_file(path: pathlib.Path) -> str:
    """A catalog file as errors and results name it, wherever the package is: `scenarios/catalog/NAME.toml`."""
    return path.relative_to(CATALOG.parents[1]).as_posix()


def _resolve(source: str | os.PathLike[str]) -> tuple[str, pathlib.Path]:
    """(the file as errors name it, its path): a path when it looks like one, else a name of the catalog."""
    text = os.fspath(source)
    if text.endswith(".toml") or "/" in text or os.sep in text:
        return text, pathlib.Path(text)
    path = CATALOG / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(sorted(entry.stem for entry in CATALOG.glob("*.toml")))
        raise ScenarioError(f"not a .toml file nor a scenario of the catalog (known: {known})", file=text)
    return _catalog_file(path), path


def _text(file: str, path: pathlib.Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScenarioError(f"cannot read: {err.strerror}", file=file) from None
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise ScenarioError("not UTF-8 text", file=file, line=data.count(b"\n", 0, err.start) + 1) from None


_AT = re.compile(r"(.*) \(at (?:line (\d+), column (\d+)|end of document)\)")


def _document(file: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = _AT.fullmatch(str(err))
        if match is None:
            raise ScenarioError(str(err), file=file, key="syntax") from None
        what, line, column = match.groups()
        if line is None:
            line, what = text.count("\n") + 1, f"{what} (at the end)"
        else:
            what = f"{what} (column {column})"
        raise ScenarioError(what, file=file, line=int(line), key="syntax") from None


def load(source: str | os.PathLike[str], overrides: Iterable[str] = (), *, formats: Collection[str]) -> Scenario:
    """The scenario of a .toml file or a catalog name, with `--set KEY=VALUE` overrides applied; `formats` are the
    image format names the disk may use. ScenarioError (one line: file, line or override, key) when it is wrong."""
    file, path = _resolve(source)
    text = _text(file, path)
    document = _document(file, text)
    owners = apply_overrides(file, document, [parse_override(file, setting) for setting in overrides])
    reader = Reader(file, text, tuple(formats), owners)
    top = Section(TOP, functools.partial(Scenario, source=file), walk)
    return top.read(reader, (), document)


def catalog() -> list[tuple[str, str]]:
    """(name, title) of every scenario of the catalog, by name."""
    entries = []
    for path in CATALOG.glob("*.toml"):
        file = _catalog_file(path)
        text = _text(file, path)
        document, reader = _document(file, text), Reader(file, text)
        if TITLE.name not in document:
            raise reader.fail((TITLE.name,), MISSING)
        entries.append((path.stem, TITLE.kind.read(reader, (TITLE.name,), document[TITLE.name])))
    return sorted(entries)
