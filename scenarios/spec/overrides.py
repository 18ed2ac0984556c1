"""`--set KEY=VALUE`: a dotted path into the document (`disk.options.cluster_size`, `steps[3].size`) or one of the
short names of the axes people sweep, and a value read as TOML when it is one (`32`, `true`, `"1"`,
`{ a = 1 }`) and as a plain string otherwise (`32M`, `unmap`). Overrides change the parsed document before it is
checked, so an overridden value meets every check a written one does."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

from scenarios.spec.locate import Path
from scenarios.spec.reader import ScenarioError, render

SHORT_NAMES = {"profile": "machine.profile", "controller": "machine.controller", "format": "disk.format",
               "discard": "drive.discard", "detect_zeroes": "drive.detect_zeroes", "seed": "seed"}
_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\[\d+\])*(?:\.[A-Za-z0-9_-]+(?:\[\d+\])*)*")
_PART = re.compile(r"([A-Za-z0-9_-]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Override:
    key: str            # as written after --set
    path: Path
    value: Any


def value_of(text: str) -> Any:
    """`text` as a TOML value if it is one, else the string itself."""
    if "\n" in text or "\r" in text:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(file: str, text: str) -> Override:
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals:
        raise ScenarioError(f"{text!r} is not KEY=VALUE", file=file, key="--set")
    path = SHORT_NAMES.get(key, key)
    if not _PATH.fullmatch(path):
        raise ScenarioError("not a key path (keys joined by '.', array entries as [N]; short names: "
                            f"{', '.join(SHORT_NAMES)})", file=file, key=f"--set {key}")
    parts = tuple(int(index) if index else name for name, index in _PART.findall(path))
    return Override(key, parts, value_of(value.strip()))


def apply_overrides(file: str, document: dict[str, Any], overrides: list[Override]) -> dict[Path, tuple[str, Path]]:
    """Write each override into `document` (tables on the way are created, array entries must exist); which
    override owns each path it wrote or created, for the errors (Reader.owners)."""
    owners: dict[Path, tuple[str, Path]] = {}
    for override in overrides:
        node: Any = document
        for depth, part in enumerate(override.path):
            here, last = override.path[:depth + 1], depth == len(override.path) - 1
            where = render(here[:-1]) or "the top level"
            fail = f"{where} is not {'an array' if isinstance(part, int) else 'a table'}"
            if isinstance(part, int):
                if not isinstance(node, list):
                    raise ScenarioError(fail, file=file, key=f"--set {override.key}")
                if part >= len(node):
                    raise ScenarioError(f"{where} has {len(node)} entries", file=file, key=f"--set {override.key}")
            elif not isinstance(node, dict):
                raise ScenarioError(fail, file=file, key=f"--set {override.key}")
            elif part not in node and not last:
                if isinstance(override.path[depth + 1], int):
                    raise ScenarioError(f"{render(here)} has no entries", file=file, key=f"--set {override.key}")
                node[part] = {}
                owners[here] = (override.key, override.path)
            if last:
                node[part] = override.value
            else:
                node = node[part]
        owners[override.path] = (override.key, override.path)
    return owners
