"""The guest-visible facts of a machine's disk, read the same way from emu's machine and from a real QEMU's
(`scenarios.run.qemu_run`): what a machine type changes and a profile states, so the two can be compared whole.

ATA (IDE, AHCI): IDENTIFY DEVICE. virtio (blk, scsi): the 64 feature bits the device offers, the device
configuration space byte by byte (past the structure's end too: both read all ones there), each queue's size and the
notify capability's multiplier. The SCSI disk behind virtio-scsi: the power-on unit attention, standard INQUIRY,
the VPD pages, READ CAPACITY(10) and (16) and every mode page (current, changeable, default values). The commands
go as replay-script lines through the replay runner, so both sides get the same bytes from the same driver model.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from scenarios.replay.runner import replay
from scenarios.replay.script import parse_script

if TYPE_CHECKING:
    from scenarios.machine import Machine

ATA_LINES = {"identify": {"ata": {"command": "0xec"}, "data_in_len": 512}}

# CDBs as Linux's sd and scsi_scan send them (allocation lengths as large as a page needs); the first command meets
# the power-on unit attention
SCSI_LINES = {
    "test unit ready": {"cdb": "000000000000"},
    "inquiry": {"cdb": "12000000ff00", "data_in_len": 255},
    **{f"vpd {page:02x}h": {"cdb": f"1201{page:02x}00ff00", "data_in_len": 255}
       for page in (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2)},
    "read capacity(10)": {"cdb": "25000000000000000000", "data_in_len": 8},
    "read capacity(16)": {"cdb": "9e10 0000000000000000 00000020 0000", "data_in_len": 32},
    "mode sense(6)": {"cdb": "1a003f00ff00", "data_in_len": 255},
    **{f"mode sense(10) {control}": {"cdb": f"5a00 {control_bits | 0x3F:02x} 00 000000 0400 00", "data_in_len": 1024}
       for control, control_bits in (("current", 0x00), ("changeable", 0x40), ("default", 0x80))},
}

# the device configuration read: struct virtio_blk_config (72 bytes in virtio 1.2) / virtio_scsi_config (36), and
# a few bytes past it
CONFIG_BYTES = {"virtio-blk": 80, "virtio-scsi": 40}


def _commands(machine: Machine, lines: dict[str, dict]) -> dict[str, dict]:
    """Each named line's outcome, its line number left out."""
    steps = parse_script("".join(json.dumps(line) + "\n" for line in lines.values()), "<facts>", machine.controller)
    outcomes = [{k: v for k, v in outcome.items() if k != "line"} for _, outcome in replay(machine, steps, "<facts>")]
    return dict(zip(lines, outcomes))


def _virtio(machine: Machine) -> dict[str, object]:
    pci = machine.driver.pci
    config = bytes(pci.config_read(offset, 1) for offset in range(CONFIG_BYTES[machine.controller]))
    return {"features": f"{pci.offered:#018x}", "config": config.hex(),
            "queue sizes": [queue.size for queue in pci.queues], "notify_off_multiplier": pci.notify_multiplier}


def read_facts(machine: Machine) -> dict[str, object]:
    """Every guest-visible fact of `machine`'s disk, by name (an outcome dict per command, a value otherwise)."""
    if machine.controller in ("ide", "ahci"):
        return _commands(machine, ATA_LINES)
    facts = _virtio(machine)
    if machine.controller == "virtio-scsi":
        facts.update(_commands(machine, SCSI_LINES))
    return facts


def _spots(ours: str, theirs: str, unit: int) -> str:
    """Where two hex strings differ: each differing unit (1: byte, 2: 16-bit little-endian word) by its index."""
    a, b = bytes.fromhex(ours), bytes.fromhex(theirs)

    def value(data: bytes) -> str:
        return f"{int.from_bytes(data, 'little'):#x}" if len(data) == unit else "-"
    shown = []
    for index in range(0, max(len(a), len(b)), unit):
        mine, other = a[index:index + unit], b[index:index + unit]
        if mine != other:
            shown.append(f"{'word' if unit == 2 else 'byte'} {index // unit}: {value(mine)} / {value(other)}")
    lengths = "" if len(a) == len(b) else f" (lengths {len(a)} / {len(b)})"
    return f"{len(shown)} differ{lengths}: " + "; ".join(shown[:24]) + (" ..." if len(shown) > 24 else "")


def report(ours: dict[str, object], theirs: dict[str, object], sides: tuple[str, str] = ("emu", "qemu")
           ) -> list[str]:
    """One line per fact (and per key of a command's outcome) the two sides disagree on; hex data by the bytes (or,
    for IDENTIFY, the words) that differ, as `ours / theirs`."""
    lines = []
    for name in dict.fromkeys([*ours, *theirs]):
        mine, other = ours.get(name), theirs.get(name)
        if mine == other:
            continue
        if name == "config":
            lines.append(f"config ({sides[0]} / {sides[1]}): {_spots(mine, other, 1)}")
            continue
        if not (isinstance(mine, dict) and isinstance(other, dict)):
            lines.append(f"{name}: {sides[0]} {mine}, {sides[1]} {other}")
            continue
        for key in dict.fromkeys([*mine, *other]):
            a, b = mine.get(key), other.get(key)
            if a == b:
                continue
            if isinstance(a, str) and isinstance(b, str) and key == "data_in":
                unit = 2 if name == "identify" else 1
                lines.append(f"{name}: data_in ({sides[0]} / {sides[1]}) {_spots(a, b, unit)}")
            else:
                lines.append(f"{name}: {key}: {sides[0]} {a}, {sides[1]} {b}")
    return lines
