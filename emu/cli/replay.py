"""`emu replay`: run a byte-level script of guest commands through the whole path.

    emu replay --controller ide|ahci|virtio-blk|virtio-scsi --image FILE [-f FMT] [--profile NAME] [-d ignore|unmap]
               [--detect-zeroes off|on|unmap] [--check] SCRIPT.jsonl

Each script line is encoded into guest memory by the controller's guest-driver model, decoded by the
emulated controller, executed by the device (ATA, virtio-blk, SCSI) through the block layer on the image, and
answered with the protocol's status; one JSON line per command is printed. With --check the first outcome
that differs from its line's "expect" ends the run with exit status 1. The script format is
`scenarios.replay.script` (and the README); sending it is `scenarios.replay.runner`.
"""

from __future__ import annotations

import sys

from emu.block import DriveOptions
from emu.cli.common import Parser
from emu.errors import UsageError
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name
from scenarios.replay.runner import replay
from scenarios.replay.script import CONTROLLERS, mismatch, outcome_line, parse_script
from scenarios.run import guest_run


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
    with guest_run(a.image, a.controller, a.profile, a.fmt, options=options) as run:
        for step, outcome in replay(run.machine, steps, a.script):
            print(outcome_line(outcome), flush=True)
            if a.check:
                wrong = mismatch(step.expect, outcome)
                if wrong is not None:
                    print(f"emu replay: {a.script}:{step.line}: {wrong}", file=sys.stderr)
                    return 1
    return 0
