"""The `emu replay` script format: JSON Lines, one guest command per line, with optional expectations.

    {"ata": {"command": "0x25", "lba": 0, "count": 8}, "data_in_len": 4096,
     "expect": {"status": "0x50", "error": 0}}
    {"ata": {"command": "0xca", "count": 1}, "data_out": {"pattern": 165, "len": 512}}
    {"fis": "27 80 25 00 ...", "data_in_len": 512}

Numbers are JSON ints or "0x.." strings. `data_out` is hex (spaces allowed) or {"pattern": BYTE, "len": N}.
Blank lines and lines starting with "#" are skipped. Every mistake is reported as one line naming the
script, the line number and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from emu.errors import UsageError

ATA_KEYS = ("command", "features", "lba", "count", "device", "control")
LINE_KEYS = {"ata", "fis", "data_out", "data_in_len", "expect", "dma", "comment"}
EXPECT_KEYS = {"status", "error", "data_in", "lba", "count"}
MAX_TRANSFER = 32 << 20   # a replay line moves at most 32 MiB (an LBA48 command moves at most 32 MiB)


class ScriptError(UsageError):
    """A malformed replay script line."""


@dataclass
class Step:
    """One parsed script line."""

    line: int
    ata: dict[str, int] | None = None      # command-block registers
    fis: bytes | None = None               # or a raw H2D FIS
    data_out: bytes | None = None
    data_in_len: int = 0
    dma: bool | None = None                # IDE only: force PIO (false) or DMA (true); default: by opcode
    expect: dict = field(default_factory=dict)


def _number(value, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ScriptError(f"{where}: expected an integer or a \"0x..\" string, not {json.dumps(value)}")
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ScriptError(f"{where}: {value!r} is not a number") from None
    if not 0 <= value < limit:
        raise ScriptError(f"{where}: {value} is out of range (0 to {limit - 1})")
    return value


def _hex(value, where: str) -> bytes:
    if not isinstance(value, str):
        raise ScriptError(f"{where}: expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ScriptError(f"{where}: not a hex string") from None


def _data(value, where: str) -> bytes:
    if isinstance(value, dict):
        unknown = set(value) - {"pattern", "len"}
        if unknown or "pattern" not in value or "len" not in value:
            raise ScriptError(f"{where}: a pattern is {{\"pattern\": BYTE, \"len\": N}}")
        return bytes([_number(value["pattern"], f"{where}.pattern", 256)]) * \
            _number(value["len"], f"{where}.len", MAX_TRANSFER + 1)
    data = _hex(value, where)
    if len(data) > MAX_TRANSFER:
        raise ScriptError(f"{where}: {len(data)} bytes is more than a command moves ({MAX_TRANSFER})")
    return data


def parse_line(text: str, where: str, line: int) -> Step | None:
    """One line of a script (None for a blank or comment line)."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    here = f"{where}:{line}"
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ScriptError(f"{here}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ScriptError(f"{here}: a line is a JSON object")
    unknown = set(obj) - LINE_KEYS
    if unknown:
        raise ScriptError(f"{here}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(LINE_KEYS))})")
    if ("ata" in obj) == ("fis" in obj):
        raise ScriptError(f"{here}: a line holds exactly one of \"ata\" and \"fis\"")
    step = Step(line)
    if "ata" in obj:
        regs = obj["ata"]
        if not isinstance(regs, dict):
            raise ScriptError(f"{here}: \"ata\" is an object of registers")
        unknown = set(regs) - set(ATA_KEYS)
        if unknown:
            raise ScriptError(f"{here}: ata: unknown register {sorted(unknown)[0]!r} (known: {', '.join(ATA_KEYS)})")
        if "command" not in regs:
            raise ScriptError(f"{here}: ata: \"command\" is required")
        limits = {"command": 0x100, "features": 0x10000, "lba": 1 << 48, "count": 0x10000, "device": 0x100,
                  "control": 0x100}
        step.ata = {key: _number(value, f"{here}: ata.{key}", limits[key]) for key, value in regs.items()}
    else:
        step.fis = _hex(obj["fis"], f"{here}: fis")
        if len(step.fis) != 20:
            raise ScriptError(f"{here}: fis: a Register H2D FIS is 20 bytes, not {len(step.fis)}")
    if "data_out" in obj:
        step.data_out = _data(obj["data_out"], f"{here}: data_out")
    if "data_in_len" in obj:
        step.data_in_len = _number(obj["data_in_len"], f"{here}: data_in_len", MAX_TRANSFER + 1)
    if "dma" in obj:
        if not isinstance(obj["dma"], bool):
            raise ScriptError(f"{here}: dma: expected true or false")
        step.dma = obj["dma"]
    if "expect" in obj:
        expect = obj["expect"]
        if not isinstance(expect, dict):
            raise ScriptError(f"{here}: expect: expected an object")
        unknown = set(expect) - EXPECT_KEYS
        if unknown:
            raise ScriptError(f"{here}: expect: unknown key {sorted(unknown)[0]!r} "
                              f"(known: {', '.join(sorted(EXPECT_KEYS))})")
        for key, value in expect.items():
            if key == "data_in":
                step.expect[key] = _hex(value, f"{here}: expect.data_in").hex()
            else:
                step.expect[key] = _number(value, f"{here}: expect.{key}", 1 << 48)
    return step


def parse_script(text: str, where: str) -> list[Step]:
    steps = [parse_line(line, where, number) for number, line in enumerate(text.splitlines(), 1)]
    return [step for step in steps if step is not None]


def mismatch(expect: dict, outcome: dict) -> str | None:
    """The first expected key whose value differs from the outcome, as one line; None if all match."""
    for key, want in expect.items():
        got = outcome.get(key)
        if got != want:
            show = (lambda v: v) if key == "data_in" else (lambda v: "null" if v is None else f"{v:#x}")
            return f"{key}: expected {show(want)}, got {show(got)}"
    return None
