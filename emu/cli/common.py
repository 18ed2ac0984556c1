"""Pieces shared by the emu commands: an argument parser that fails in one line, -o parsing, opening."""

from __future__ import annotations

import argparse

from emu.errors import UsageError
from images import open_image
from images.backend import ImageBackend


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is an EmuError (one line on stderr), not a usage dump."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def parse_options(values: list[str]) -> dict[str, str]:
    """-o k=v,k2=v2 (repeatable; ',,' is a literal comma, as in qemu's option syntax)."""
    options: dict[str, str] = {}
    for value in values:
        for item in value.replace(",,", "\0").split(","):
            item = item.replace("\0", ",")
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep:
                raise UsageError(f"-o: '{item}' is not of the form key=value")
            options[key.strip()] = val.strip()
    return options


def open_for_cli(path: str, fmt: str | None, *, read_only: bool, open_backing: bool = True,
                 cache: str = "writeback", check_mode: bool = False,
                 options: dict[str, str] | None = None) -> ImageBackend:
    return open_image(path, fmt, read_only=read_only, open_backing=open_backing, cache=cache,
                      check_mode=check_mode, options=options)
