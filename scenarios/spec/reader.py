"""One load's context, the file, its text, the image formats known and what `--set` changed, and the one way an
error is made: a `ScenarioError` whose single line names the file, the line (or the override) and the key."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field

from emu.errors import UsageError
from scenarios.spec.locate import Path, key_lines, line_of

BARE = re.compile(r"[A-Za-z0-9_-]+")      # a key that needs no quotes, in TOML and in a --set path


class ScenarioError(UsageError):
    """A scenario file or a `--set` is wrong: `FILE:LINE: KEY: what` or `FILE: --set KEY: what`, one line."""

    def __init__(self, what: str, *, file: str, line: int | None = None, key: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.file = file
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return ": ".join([where] + ([self.key] if self.key else []) + [self.what])


def render(path: Path) -> str:
    """A key path as the file and `--set` write it: `steps[3].size`, `disk.options.cluster_size`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if BARE.fullmatch(part) else json.dumps(part)
            text += f".{name}" if text else name
    return text


def quote(value: object) -> str:
    """A value as an error shows it: on one line, and short."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


_TYPE_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (dict, "a table"),
               (list, "an array"), (datetime.datetime, "a date-time"), (datetime.date, "a date"),
               (datetime.time, "a time"))


def expected(what: str, value: object) -> str:
    """`expected a string, got an integer (7)`."""
    got = next(name for kind, name in _TYPE_NAMES if isinstance(value, kind))
    return f"expected {what}, got {got} ({quote(value)})"


@dataclass
class Reader:
    """What a value's check needs to know beyond the value: the formats, and where a path is for its error.
    `owners` maps each path a `--set` wrote or created to that override's (KEY as written, path)."""

    file: str
    text: str
    formats: tuple[str, ...] = ()
    owners: dict[Path, tuple[str, Path]] = field(default_factory=dict)
    lines: dict[Path, int] | None = None

    def fail(self, path: Path, what: str) -> ScenarioError:
        for n in range(len(path), 0, -1):
            if path[:n] in self.owners:
                key, written = self.owners[path[:n]]
                where = f"--set {key}" if written == path else f"--set {key}: {render(path)}"
                return ScenarioError(what, file=self.file, key=where)
        if self.lines is None:
            self.lines = key_lines(self.text)
        return ScenarioError(what, file=self.file, line=line_of(self.lines, path), key=render(path) or None)
