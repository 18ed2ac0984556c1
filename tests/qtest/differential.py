"""What the differential tests share: a script (lines as dicts) run by `scenarios.differential` on emu's profile
and on the real QEMU, each on its own copy of a fresh image, with the lines a profile's departures cover left out;
and the assertion that both sides agree, which names every difference when they do not."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

import images
from emu.block import DriveOptions
from scenarios.differential import Comparison, differential
from scenarios.profiles import DEFAULT_PROFILE, get_profile
from scenarios.replay.script import parse_script

IMAGE_SIZE = 64 << 20


def departed(lines: Sequence[dict], controller: str, profile: str = DEFAULT_PROFILE) -> list[dict]:
    """The lines no departure of `profile` on `controller` covers."""
    departures = [d for d in get_profile(profile).departures if d.controller == controller]
    return [line for line in lines if not any(d.covers(line) for d in departures)]


def run(lines: Sequence[dict], controller: str, *, fmt: str = "raw", options: DriveOptions | None = None,
        profile: str = DEFAULT_PROFILE, machine_type: str | None = None, qemu: str | None = None) -> Comparison:
    """`lines` as a script on both sides, over a fresh `fmt` image of IMAGE_SIZE in a directory of its own."""
    text = "".join(json.dumps(line) + "\n" for line in lines)
    with tempfile.TemporaryDirectory(prefix="emu-differential-") as directory:
        image = os.path.join(directory, f"disk.{fmt}")
        images.create_image(image, fmt, IMAGE_SIZE, {})
        steps = parse_script(text, "<differential>", controller)
        return differential(image, controller, steps, "<differential>", fmt, options=options or DriveOptions(),
                            profile=profile, binary=qemu, machine_type=machine_type)


def assert_agree(comparison: Comparison, lines: Sequence[dict]) -> None:
    """Both sides gave the same outcome on every line and left the same image; else every finding, with the
    script, in the failure."""
    if not comparison.agree:
        script = "\n".join(json.dumps(line) for line in lines)
        raise AssertionError("\n".join([*comparison.report(), "script:", script]))
