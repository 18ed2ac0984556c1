"""`emu replay`: run a byte-level script of guest commands through the whole path.

    emu replay --controller ide|ahci|virtio-blk|virtio-scsi --image FILE [-f FMT] [--profile NAME] [-d ignore|unmap]
               [--detect-zeroes off|on|unmap] [--check] SCRIPT.jsonl

Each script line is encoded into guest memory by the controller's guest-driver model, decoded by the
emulated controller, executed by the device (ATA, virtio-blk, SCSI) through the block layer on the image, and
answered with the protocol's status; one JSON line per command is printed. With --check the first outcome
that differs from its line's "expect" ends the run with exit status 1. The script format is in emu/cli/replay_script.py
and the README.
"""

from __future__ import annotations

import json
import sys

from controllers.ata.device import AtaRegisters
from emu.block import Drive, DriveOptions
from emu.cli.common import Parser, open_for_cli
from emu.cli.replay_script import (
    FAMILY_OF,
    SAM_STATUS,
    SCSI_RESPONSE,
    ScriptError,
    Step,
    blk_status,
    mismatch,
    named,
    parse_script,
)
from emu.errors import UsageError
from scenarios.machine import CONTROLLERS, Machine, build
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name

def _run_ata(machine: Machine, step: Step) -> dict:
    regs = AtaRegisters(**step.ata) if step.ata is not None else None
    extra = {"dma": step.dma} if machine.controller == "ide" else {}
    outcome = machine.run(machine.driver.raw(regs, step.data_out, step.data_in_len, fis=step.fis, **extra))
    result = {"line": step.line, "status": outcome.status, "error": outcome.error, "data_in": outcome.data_in.hex()}
    if outcome.lba is not None:
        result["lba"] = outcome.lba
    return result


def _run_virtio_blk(machine: Machine, step: Step) -> dict:
    """A line that breaks the device (NEEDS_RESET) is reported with "broken": true; the driver then resets and
    probes the device again, as a guest's recovery would."""
    data_out = [step.data_out] if step.data_out else []
    outcome = machine.run(machine.driver.raw(step.header, data_out, step.data_in_len))
    if outcome.broken and not machine.run(machine.driver.probe()):
        raise UsageError("the virtio-blk device did not come back after a reset")
    return {"line": step.line, "status": blk_status(outcome.status), "used_len": outcome.used_len,
            "data_in": outcome.data_in.hex(), "broken": outcome.broken}


def _run_scsi(machine: Machine, step: Step) -> dict:
    """A CDB to a LUN of target 0 (or a raw request header) through virtio-scsi; a broken device is reported and
    then reset and probed again, as for virtio-blk. Data-in is shown for a GOOD command only: after a failure the
    guest's buffer holds nothing the device promised."""
    data_out = [step.data_out] if step.data_out else []
    driver = machine.driver
    if step.cdb is not None:
        outcome = machine.run(driver.command(step.lun, step.cdb, step.data_out or b"", step.data_in_len))
    else:
        outcome = machine.run(driver.raw(step.header, data_out, step.data_in_len))
    if outcome.broken and not machine.run(driver.probe()):
        raise UsageError("the virtio-scsi device did not come back after a reset")
    code = outcome.sense_code
    return {"line": step.line, "response": named(outcome.response, SCSI_RESPONSE),
            "status": named(outcome.status, SAM_STATUS), "data_in": outcome.data_in.hex() if outcome.ok else "",
            "residual": outcome.residual,
            "sense": None if code is None else {"key": code.key, "asc": code.asc, "ascq": code.ascq},
            "broken": outcome.broken}


RUNNERS = {"ata": _run_ata, "virtio-blk": _run_virtio_blk, "scsi": _run_scsi}


def _shown(outcome: dict) -> dict:
    """Registers as "0x.." strings, so an outcome line can be pasted into a script as its expectation."""
    return {key: f"{value:#04x}" if key in ("status", "error") and isinstance(value, int) else value
            for key, value in outcome.items()}


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
    steps = parse_script(text, a.script, FAMILY_OF[a.controller])
    for step in steps:
        if step.dma is not None and a.controller == "ahci":
            raise ScriptError(f"{a.script}:{step.line}: dma: chooses PIO or DMA on IDE only; {a.controller} "
                              "moves every command's data its own way")
    image = open_for_cli(a.image, a.fmt, read_only=False)
    drive = Drive(image, DriveOptions(discard=a.discard, detect_zeroes=a.detect_zeroes))
    machine = None
    try:
        machine = build(a.controller, drive, a.profile)
        run_step = RUNNERS[FAMILY_OF[a.controller]]
        for step in steps:
            try:
                outcome = run_step(machine, step)
            except ValueError as exc:       # the guest-driver model cannot send it (e.g. more PRDs than a table)
                raise ScriptError(f"{a.script}:{step.line}: {exc}") from None
            print(json.dumps(_shown(outcome)), flush=True)
            if a.check:
                wrong = mismatch(step.expect, outcome)
                if wrong is not None:
                    print(f"emu replay: {a.script}:{step.line}: {wrong}", file=sys.stderr)
                    return 1
    finally:
        if machine is not None:
            machine.close()
        drive.close()
    return 0
