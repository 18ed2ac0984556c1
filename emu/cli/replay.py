"""`emu replay`: run a byte-level script of guest commands through the whole path.

    emu replay --controller ide|ahci|virtio-blk|virtio-scsi --image FILE [-f FMT] [--profile NAME] [-d ignore|unmap]
               [--detect-zeroes off|on|unmap] [--check | --diff] [--target emu|qemu] [--qemu PATH]
               [--machine TYPE] SCRIPT.jsonl

Each script line is encoded into guest memory by the controller's guest-driver model, decoded by the
emulated controller, executed by the device (ATA, virtio-blk, SCSI) through the block layer on the image, and
answered with the protocol's status; one JSON line per command is printed. With --check the first outcome
that differs from its line's "expect" ends the run with exit status 1. With --target qemu the same driver models
send the same lines to a real QEMU's device over its qtest protocol (emu.qtest), and QEMU answers. With --diff the
script runs on both, each on its own copy of the image, and every key on which their outcomes differ is printed,
then `qemu-img compare` of the two copies (scenarios.differential); any difference is exit status 1. The script
format is `scenarios.replay.script` (and the README); sending it is `scenarios.replay.runner`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from emu.block import DriveOptions
from emu.cli.common import Parser
from emu.errors import UsageError
from scenarios.differential import differential
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name
from scenarios.replay.runner import replay
from scenarios.replay.script import CONTROLLERS, mismatch, outcome_line, parse_script
from scenarios.run import guest_run, qemu_run


@contextmanager
def _target(a, options: DriveOptions) -> Iterator:
    """The machine whose device answers the script: emu's, or QEMU's with emu's driver in front of it."""
    if a.target == "qemu":
        with qemu_run(a.image, a.controller, a.fmt, options=options, binary=a.qemu,
                      machine_type=a.machine) as machine:
            yield machine
    else:
        with guest_run(a.image, a.controller, a.profile, a.fmt, options=options) as run:
            yield run.machine


def main(argv: list[str]) -> int:
    p = Parser("emu replay", "Run a JSON Lines script of guest commands through a controller, the block "
               "layer and an image; print one JSON outcome per command.")
    p.add_argument("--controller", required=True, choices=CONTROLLERS)
    p.add_argument("--image", required=True, help="the disk image (opened read-write)")
    p.add_argument("-f", dest="fmt", help="image format (default: by magic)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"device profile: {', '.join(NAMES)} (default {DEFAULT_PROFILE})")
    p.add_argument("-d", "--discard", default="ignore", choices=("ignore", "unmap"),
                   help="the drive's discard option (default ignore, as QEMU's -drive)")
    p.add_argument("--detect-zeroes", default="off", choices=("off", "on", "unmap"))
    p.add_argument("--check", action="store_true", help="compare each outcome with the line's \"expect\"")
    p.add_argument("--target", default="emu", choices=("emu", "qemu"),
                   help="whose device answers: emu's (default, as --profile describes it) or a real QEMU's, over "
                        "its qtest protocol (qemu-system-x86_64 -qtest)")
    p.add_argument("--diff", action="store_true",
                   help="run the script on emu (as --profile describes it) and on QEMU, each on a copy of the image; "
                        "print every outcome that differs, key by key, and qemu-img compare's verdict on the copies")
    p.add_argument("--qemu", help="the QEMU binary for --target qemu and --diff (default: qemu-system-x86_64 on PATH)")
    p.add_argument("--machine", help="QEMU's machine type for --target qemu and --diff (default: pc, or q35 for "
                                     "ahci; `qemu-system-x86_64 -machine help` lists them)")
    p.add_argument("script")
    a = p.parse_args(argv)
    check_name(a.profile)
    try:
        with open(a.script, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read script {a.script}: {getattr(exc, 'strerror', None) or exc}") from None
    steps = parse_script(text, a.script, a.controller)
    options = DriveOptions(discard=a.discard, detect_zeroes=a.detect_zeroes)
    if a.diff and (a.check or a.target != "emu"):
        raise UsageError("--diff runs the script on both emu and QEMU: it takes neither --check nor --target")
    for flag, value in (("--qemu", a.qemu), ("--machine", a.machine)):
        if value and a.target != "qemu" and not a.diff:
            raise UsageError(f"{flag} is QEMU's: it goes with --target qemu or --diff")
    if a.diff:
        found = differential(a.image, a.controller, steps, a.script, a.fmt, options=options, profile=a.profile,
                             binary=a.qemu, machine_type=a.machine)
        for line in found.report():
            print(line)
        return 0 if found.agree else 1
    with _target(a, options) as machine:
        for step, outcome in replay(machine, steps, a.script):
            print(outcome_line(outcome), flush=True)
            if a.check:
                wrong = mismatch(step.expect, outcome)
                if wrong is not None:
                    print(f"emu replay: {a.script}:{step.line}: {wrong}", file=sys.stderr)
                    return 1
    return 0
