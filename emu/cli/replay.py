"""`emu replay`: run a byte-level script of guest commands through the whole path.

    emu replay --controller ide|ahci --image FILE [-f FMT] [--profile NAME] [-d ignore|unmap]
               [--detect-zeroes off|on|unmap] [--check] SCRIPT.jsonl

Each script line is encoded into guest memory by the controller's guest-driver model, decoded by the
emulated controller, executed by the ATA device through the block layer on the image, and answered with
the protocol's status; one JSON line per command is printed. With --check the first outcome that differs
from its line's "expect" ends the run with exit status 1. The script format is in emu/cli/replay_script.py
and the README.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from controllers.ahci import AhciHba
from controllers.ata.device import AtaDevice, AtaRegisters
from controllers.drivers.ahci import AhciDriver
from controllers.drivers.ata_piix import PiixDriver
from controllers.ide import IdeChannel
from emu.block import Drive, DriveOptions
from emu.cli.common import Parser, open_for_cli
from emu.cli.replay_script import ScriptError, Step, mismatch, parse_script
from emu.errors import UsageError
from emu.memory import GuestMemory
from emu.sim import InterruptLine, Simulation
from scenarios.profiles import DEFAULT_PROFILE, PROFILES, get_profile, read_zeroes_after_trim

GUEST_RAM = 256 << 20     # command tables, PRDs and buffers of up to a 32 MiB transfer
CONTROLLERS = ("ide", "ahci", "virtio-blk", "virtio-scsi")


@dataclass
class Machine:
    """One simulated guest with one disk behind the chosen controller."""

    controller: str
    sim: Simulation
    mem: GuestMemory
    driver: PiixDriver | AhciDriver

    def run(self, step: Step) -> dict:
        regs = AtaRegisters(**step.ata) if step.ata is not None else None
        extra = {"dma": step.dma} if self.controller == "ide" else {}
        process = self.sim.process(self.driver.raw(regs, step.data_out, step.data_in_len, fis=step.fis, **extra))
        outcome = self.sim.run(until=process)
        result = {"line": step.line, "status": outcome.status, "error": outcome.error,
                  "data_in": outcome.data_in.hex()}
        if outcome.lba is not None:
            result["lba"] = outcome.lba
        return result


def _shown(outcome: dict) -> dict:
    """Registers as "0x.." strings, so an outcome line can be pasted into a script as its expectation."""
    return {key: f"{value:#04x}" if key in ("status", "error") else value for key, value in outcome.items()}


def build_machine(controller: str, drive: Drive, profile_name: str) -> Machine:
    if controller not in ("ide", "ahci"):
        raise UsageError(f"--controller {controller}: its replay lines arrive with the virtio issue "
                         "(ide and ahci work now)")
    backend = drive.backend
    rzat = read_zeroes_after_trim(drive.options.discard, backend.limits.discard_alignment,
                                  backend.supports_discard)
    profile = get_profile(profile_name)
    config = profile.ata_config(backend.virtual_size // 512, controller, read_zeroes_after_trim=rzat)
    device = AtaDevice(drive, config)
    sim = Simulation()
    mem = GuestMemory(GUEST_RAM)
    irq = InterruptLine(sim, controller)
    if controller == "ahci":
        hba = AhciHba(sim, mem, irq, [device], config=profile.ahci_config())
        driver = AhciDriver(sim, mem, hba, irq)
        if not sim.run(until=sim.process(driver.start(0))):
            raise UsageError("the AHCI port did not come up")
    else:
        driver = PiixDriver(IdeChannel(sim, mem, irq, (device, None)), mem)
    return Machine(controller, sim, mem, driver)


def main(argv: list[str]) -> int:
    p = Parser("emu replay", "Run a JSON Lines script of guest commands through a controller, the block "
               "layer and an image; print one JSON outcome per command.")
    p.add_argument("--controller", required=True, choices=CONTROLLERS)
    p.add_argument("--image", required=True, help="the disk image (opened read-write)")
    p.add_argument("-f", dest="fmt", help="image format (default: by magic)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"device profile: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    p.add_argument("-d", "--discard", default="ignore", choices=("ignore", "unmap"),
                   help="the drive's discard option (default ignore, as QEMU's -drive)")
    p.add_argument("--detect-zeroes", default="off", choices=("off", "on", "unmap"))
    p.add_argument("--check", action="store_true", help="compare each outcome with the line's \"expect\"")
    p.add_argument("script")
    a = p.parse_args(argv)
    get_profile(a.profile)
    try:
        with open(a.script, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read script {a.script}: {getattr(exc, 'strerror', None) or exc}") from None
    steps = parse_script(text, a.script)
    for step in steps:
        if step.dma is not None and a.controller != "ide":
            raise ScriptError(f"{a.script}:{step.line}: dma: chooses PIO or DMA on IDE only; {a.controller} "
                              "moves every command's data its own way")
    image = open_for_cli(a.image, a.fmt, read_only=False)
    drive = Drive(image, DriveOptions(discard=a.discard, detect_zeroes=a.detect_zeroes))
    machine = None
    try:
        machine = build_machine(a.controller, drive, a.profile)
        for step in steps:
            outcome = machine.run(step)
            print(json.dumps(_shown(outcome)), flush=True)
            if a.check:
                wrong = mismatch(step.expect, outcome)
                if wrong is not None:
                    print(f"emu replay: {a.script}:{step.line}: {wrong}", file=sys.stderr)
                    return 1
    finally:
        if machine is not None:
            machine.mem.close()
        drive.close()
    return 0
