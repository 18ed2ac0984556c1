"""The line of every key in a TOML text, which tomllib does not report: errors found after parsing name a line.

A small scanner over text tomllib has already accepted (so it checks nothing): it follows table headers (`[x]`, and
`[[x]]` counted per array), `key = value` lines with dotted or quoted keys, inline tables and arrays (an entry's
line is where the entry starts), and skips comments and strings, multi-line ones included.
"""

from __future__ import annotations

import re
import tomllib

Path = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]*")      # numbers, booleans, dates: up to what ends a value


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}       # array-of-tables path -> entries so far

    def advance(self, n: int) -> None:
        self.line += self.text.count("\n", self.pos, self.pos + n)
        self.pos += n

    def at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def skip(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.advance(1)
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def string(self) -> str:
        """Skip one string of any of the four kinds; its source text."""
        start, text = self.pos, self.text
        quote = text[start]
        escapes = quote == '"'
        if text.startswith(quote * 3, start):
            end = start + 3
            while not text.startswith(quote * 3, end):
                end += 2 if escapes and text[end] == "\\" else 1
            run = 3             # up to two more quotes close the content itself: """a"""""
            while run < 5 and text.startswith(quote, end + run):
                run += 1
            end += run
        else:
            end = start + 1
            while text[end] != quote:
                end += 2 if escapes and text[end] == "\\" else 1
            end += 1
        self.advance(end - start)
        return text[start:end]

    def key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self.skip(False)
            if self.text[self.pos] in "\"'":
                parts.append(tomllib.loads(f"k = {self.string()}")["k"])
            else:
                bare = _BARE.match(self.text, self.pos).group()
                self.advance(len(bare))
                parts.append(bare)
            self.skip(False)
            if not self.at("."):
                return tuple(parts)
            self.advance(1)

    def record(self, path: Path, line: int) -> None:
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    def pair(self, table: Path) -> None:
        """`key = value`, the key relative to `table`."""
        line = self.line
        path = table + self.key()
        self.record(path, line)
        self.skip(False)
        self.advance(1)                         # '='
        self.skip(False)
        self.value(path)

    def value(self, path: Path) -> None:
        if self.at("{"):
            self.advance(1)
            self.skip(False)
            while not self.at("}"):
                self.pair(path)
                self.skip(False)
                if self.at(","):
                    self.advance(1)
                    self.skip(False)
            self.advance(1)
        elif self.at("["):
            self.advance(1)
            index = 0
            self.skip(True)
            while not self.at("]"):
                self.record(path + (index,), self.line)
                self.value(path + (index,))
                self.skip(True)
                if self.at(","):
                    self.advance(1)
                    self.skip(True)
                index += 1
            self.advance(1)
        elif self.text[self.pos] in "\"'":
            self.string()
        else:
            self.advance(len(_SCALAR.match(self.text, self.pos).group()))

    def header(self) -> Path:
        """`[a.b]` or `[[a.b]]`: the table it opens, an array of tables' newest entry for each array on the way."""
        line, double = self.line, self.at("[[")
        self.advance(2 if double else 1)
        keys = self.key()
        self.advance(2 if double else 1)
        path: Path = ()
        for n, part in enumerate(keys):
            path += (part,)
            if double and n == len(keys) - 1:
                self.arrays[path] = self.arrays.get(path, 0) + 1
            if path in self.arrays:
                path += (self.arrays[path] - 1,)
        self.record(path, line)
        return path

    def document(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self.skip(True)
            if self.pos >= len(self.text):
                return self.lines
            if self.at("["):
                table = self.header()
            else:
                self.pair(table)


def key_lines(text: str) -> dict[Path, int]:
    """The line (from 1) where each key path of `text` (valid TOML) is defined: tables at their header, array entries
    where they start, paths into arrays of tables with the entry's index (`("steps", 3, "size")`)."""
    return _Scanner(text).document()


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of `path`, else of its nearest ancestor defined in the text (a missing key: its table's header), else
    the first line."""
    for n in range(len(path), 0, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1
