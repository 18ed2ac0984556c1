"""One replay script on emu's device and on a real QEMU's, compared line by line and image against image.

This is how emu's profiles are held to QEMU (`emu replay --diff`, and the differential property tests): each side
runs the script on its own copy of the image, through the same guest-driver model, and then the two outcomes of
every line are compared key by key and the two copies with `qemu-img compare`. A QEMU that exits or stops
answering part-way (an assertion failure, a hang) is an outcome of the line it happened on, not an error of the
run; the lines after it are not compared.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from emu.block import DriveOptions
from emu.errors import EmuError, UsageError
from scenarios.profiles import DEFAULT_PROFILE
from scenarios.replay.runner import replay
from scenarios.replay.script import Step, differences
from scenarios.run import DEFAULT_OPTIONS, guest_run, image_format, qemu_run, two_copies


@dataclass(frozen=True)
class LineDifference:
    """One script line whose outcomes differ: per key, (emu's value, QEMU's value) as the script shows them."""

    line: int
    keys: dict[str, tuple[str, str]]


@dataclass
class Comparison:
    """What a differential run found: the outcomes of both sides, the lines that differ, how QEMU failed (if it
    did), and `qemu-img compare`'s verdict on the images (None when they are identical)."""

    emu: list[dict] = field(default_factory=list)
    qemu: list[dict] = field(default_factory=list)
    differences: list[LineDifference] = field(default_factory=list)
    qemu_failure: str | None = None
    images: str | None = None

    @property
    def agree(self) -> bool:
        return not self.differences and self.qemu_failure is None and self.images is None

    def report(self) -> Iterator[str]:
        """The findings as lines for a person: each differing key, QEMU's failure, the images, a verdict."""
        for diff in self.differences:
            for key, (ours, theirs) in diff.keys.items():
                yield f"line {diff.line}: {key}: emu {ours}, qemu {theirs}"
        if self.qemu_failure is not None:
            yield self.qemu_failure
        yield f"images: {self.images or 'identical'}"
        if self.agree:
            yield f"emu and QEMU agree on all {len(self.emu)} lines"
        else:
            yield f"emu and QEMU differ: {len(self.differences)} of {len(self.emu)} lines"


def compare_images(first: str, second: str, fmt: str) -> str | None:
    """`qemu-img compare` of two images of format `fmt`: None if their guest-visible contents are identical, else
    its one-line verdict (the first offset that differs)."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise UsageError("qemu-img is not installed (Debian package qemu-utils): it compares the two images")
    done = subprocess.run([qemu_img, "compare", "-f", fmt, "-F", fmt, first, second], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else f"qemu-img compare exited with status {done.returncode}"


def _qemu_side(copy: str, steps: Sequence[Step], where: str, controller: str, fmt: str, options: DriveOptions,
               binary: str | None, machine_type: str | None, comparison: Comparison) -> None:
    with qemu_run(copy, controller, fmt, options=options, binary=binary, machine_type=machine_type) as machine:
        pending = iter(steps)
        try:
            for _step, outcome in replay(machine, pending, where):
                comparison.qemu.append(outcome)
        except EmuError as exc:     # the qtest connection failed, or the device did not come back after a reset
            line = steps[len(comparison.qemu)].line
            gone = machine.qemu.exited()
            what = f"exited: {gone}" if gone is not None else f"broke: {exc}"
            comparison.qemu_failure = f"line {line}: QEMU {what}"


def differential(image: str, controller: str, steps: Sequence[Step], where: str, fmt: str | None = None, *,
                 options: DriveOptions = DEFAULT_OPTIONS, profile: str = DEFAULT_PROFILE, binary: str | None = None,
                 machine_type: str | None = None) -> Comparison:
    """Script `steps` (read from `where`) on emu's `controller` as `profile` describes it and on QEMU's, each on its
    own copy of `image` with the drive `options`; `image` itself is left as it was."""
    fmt = fmt or image_format(image)
    comparison = Comparison()
    with two_copies(image, ("emu", "qemu")) as (ours, theirs):
        with guest_run(ours, controller, profile, fmt, options=options) as run:
            comparison.emu = [outcome for _step, outcome in replay(run.machine, steps, where)]
        _qemu_side(theirs, steps, where, controller, fmt, options, binary, machine_type, comparison)
        for mine, qemus in zip(comparison.emu, comparison.qemu):
            keys = differences(mine, qemus)
            if keys:
                comparison.differences.append(LineDifference(mine["line"], keys))
        comparison.images = compare_images(ours, theirs, fmt)
    return comparison
