"""The replay script format: JSON Lines, one guest command per line, with optional expectations.

    {"ata": {"command": "0x25", "lba": 0, "count": 8}, "data_in_len": 4096,
     "expect": {"status": "0x50", "error": 0}}
    {"fis": "27 80 25 00 ...", "data_in_len": 512}
    {"virtio_blk": {"type": "DISCARD", "segments": [{"sector": 0, "num_sectors": 8}]}, "expect": {"status": "OK"}}
    {"header": "0b00000000000000 0000000000000000", "data_out": "...", "expect": {"status": "UNSUPP"}}
    {"cdb": "28 00 00000000 00 0001 00", "lun": 0, "data_in_len": 512, "expect": {"status": "GOOD"}}

Which command keys a line may hold depends on the controller's family: "ata"/"fis" (and "dma") for ide and ahci,
"virtio_blk"/"header" for virtio-blk, "cdb" (and "lun") or a raw "request" header for virtio-scsi. Numbers are
JSON ints or "0x.." strings; status names may be used where a protocol names its statuses. `data_out` is hex
(spaces allowed) or {"pattern": BYTE, "len": N}. Blank lines and lines starting with "#" are skipped. Every
mistake is reported as one line naming the script, the line number and the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from controllers.scsi.layouts import CHECK_CONDITION, GOOD
from controllers.scsi.sense import RESERVATION_CONFLICT, TASK_SET_FULL
from controllers.virtio import layouts as V
from controllers.virtio.layouts import (
    BLK_S_IOERR,
    BLK_S_OK,
    BLK_S_UNSUPP,
    BLK_T_DISCARD,
    BLK_T_FLUSH,
    BLK_T_GET_ID,
    BLK_T_GET_LIFETIME,
    BLK_T_IN,
    BLK_T_OUT,
    BLK_T_SCSI_CMD,
    BLK_T_SECURE_ERASE,
    BLK_T_WRITE_ZEROES,
    BLK_T_ZONE_REPORT,
    VIRTIO_BLK_OUTHDR,
    VIRTIO_BLK_SEGMENT,
)
from emu.errors import UsageError

ATA_KEYS = ("command", "features", "lba", "count", "device", "control")
COMMON_KEYS = {"data_out", "data_in_len", "expect", "comment"}
MAX_TRANSFER = 32 << 20   # a replay line moves at most 32 MiB (an LBA48 command moves at most 32 MiB)

BLK_TYPES = {"IN": BLK_T_IN, "OUT": BLK_T_OUT, "SCSI_CMD": BLK_T_SCSI_CMD, "FLUSH": BLK_T_FLUSH,
             "GET_ID": BLK_T_GET_ID, "GET_LIFETIME": BLK_T_GET_LIFETIME, "DISCARD": BLK_T_DISCARD,
             "WRITE_ZEROES": BLK_T_WRITE_ZEROES, "SECURE_ERASE": BLK_T_SECURE_ERASE, "ZONE_REPORT": BLK_T_ZONE_REPORT}
BLK_STATUS = {"OK": BLK_S_OK, "IOERR": BLK_S_IOERR, "UNSUPP": BLK_S_UNSUPP}
BLK_KEYS = ("type", "ioprio", "sector", "segments")
# virtio-scsi response codes (virtio 1.2 5.6.6.1) and SAM-5 status codes, by name
SCSI_RESPONSE = {name.removeprefix("SCSI_S_"): getattr(V, name) for name in (
    "SCSI_S_OK", "SCSI_S_OVERRUN", "SCSI_S_ABORTED", "SCSI_S_BAD_TARGET", "SCSI_S_RESET", "SCSI_S_BUSY",
    "SCSI_S_TRANSPORT_FAILURE", "SCSI_S_TARGET_FAILURE", "SCSI_S_NEXUS_FAILURE", "SCSI_S_FAILURE",
    "SCSI_S_FUNCTION_SUCCEEDED", "SCSI_S_FUNCTION_REJECTED", "SCSI_S_INCORRECT_LUN")}
SAM_STATUS = {"GOOD": GOOD, "CHECK_CONDITION": CHECK_CONDITION, "CONDITION_MET": 0x04, "BUSY": 0x08,
              "RESERVATION_CONFLICT": RESERVATION_CONFLICT, "TASK_SET_FULL": TASK_SET_FULL, "ACA_ACTIVE": 0x30,
              "TASK_ABORTED": 0x40}
SENSE_KEYS = ("key", "asc", "ascq")
MAX_LUN = 1 << 14                       # flat-space LUNs 0..16383 (QEMU max_lun)
SEGMENT_KEYS = ("sector", "num_sectors", "flags")


class ScriptError(UsageError):
    """A malformed replay script line."""


@dataclass
class Step:
    """One parsed script line: the command in its family's form, its data, and what to expect."""

    line: int
    ata: dict[str, int] | None = None      # ATA command-block registers
    fis: bytes | None = None               # or a raw H2D FIS
    header: bytes | None = None            # virtio-blk / virtio-scsi: the request header bytes (built or raw)
    cdb: bytes | None = None               # virtio-scsi: the CDB, sent to `lun` of target 0
    lun: int = 0
    data_out: bytes | None = None
    data_in_len: int = 0
    dma: bool | None = None                # IDE only: force PIO (false) or DMA (true); default: by opcode
    expect: dict = field(default_factory=dict)


def named(value: int | None, names: dict[str, int]) -> str | int | None:
    """A status byte as a script shows it: its name in `names` when it has one."""
    if value is None:
        return None
    return next((name for name, number in names.items() if number == value), value)


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


def _named(value, where: str, names: dict[str, int], limit: int) -> int:
    """A name from `names` or a number below `limit`."""
    if isinstance(value, str) and value.upper() in names:
        return names[value.upper()]
    if isinstance(value, str) and not value.strip().lower().startswith(("0x", "-")) and not value.strip().isdigit():
        raise ScriptError(f"{where}: unknown name {value!r} (known: {', '.join(names)})")
    return _number(value, where, limit)


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


def _object(value, where: str, known: tuple[str, ...], what: str) -> dict:
    if not isinstance(value, dict):
        raise ScriptError(f"{where}: expected an object of {what}")
    unknown = set(value) - set(known)
    if unknown:
        raise ScriptError(f"{where}: unknown {what[:-1]} {sorted(unknown)[0]!r} (known: {', '.join(known)})")
    return value


def _ata(step: Step, obj: dict, here: str) -> None:
    if "ata" in obj:
        regs = _object(obj["ata"], f"{here}: ata", ATA_KEYS, "registers")
        if "command" not in regs:
            raise ScriptError(f"{here}: ata: \"command\" is required")
        limits = {"command": 0x100, "features": 0x10000, "lba": 1 << 48, "count": 0x10000, "device": 0x100,
                  "control": 0x100}
        step.ata = {key: _number(value, f"{here}: ata.{key}", limits[key]) for key, value in regs.items()}
    else:
        step.fis = _hex(obj["fis"], f"{here}: fis")
        if len(step.fis) != 20:
            raise ScriptError(f"{here}: fis: a Register H2D FIS is 20 bytes, not {len(step.fis)}")
    if "dma" in obj:
        if not isinstance(obj["dma"], bool):
            raise ScriptError(f"{here}: dma: expected true or false")
        step.dma = obj["dma"]


def _virtio_blk(step: Step, obj: dict, here: str) -> None:
    """A request header from its fields (type by name or number; segments become the data-out payload), or raw."""
    if "header" in obj:
        step.header = _hex(obj["header"], f"{here}: header")
        if len(step.header) > MAX_TRANSFER:
            raise ScriptError(f"{here}: header: {len(step.header)} bytes is too long")
        return
    req = _object(obj["virtio_blk"], f"{here}: virtio_blk", BLK_KEYS, "fields")
    if "type" not in req:
        raise ScriptError(f"{here}: virtio_blk: \"type\" is required")
    fields = {"type": _named(req["type"], f"{here}: virtio_blk.type", BLK_TYPES, 1 << 32),
              "ioprio": _number(req.get("ioprio", 0), f"{here}: virtio_blk.ioprio", 1 << 32),
              "sector": _number(req.get("sector", 0), f"{here}: virtio_blk.sector", 1 << 64)}
    step.header = VIRTIO_BLK_OUTHDR.build(fields)
    if "segments" in req:
        if "data_out" in obj:
            raise ScriptError(f"{here}: virtio_blk.segments and data_out both give the payload; use one")
        segments = req["segments"]
        if not isinstance(segments, list) or len(segments) * 16 > MAX_TRANSFER:
            raise ScriptError(f"{here}: virtio_blk.segments: expected a list of segment objects")
        payload = []
        for i, seg in enumerate(segments):
            where = f"{here}: virtio_blk.segments[{i}]"
            seg = _object(seg, where, SEGMENT_KEYS, "fields")
            if "num_sectors" not in seg:
                raise ScriptError(f"{where}: \"num_sectors\" is required")
            payload.append(VIRTIO_BLK_SEGMENT.build({
                "sector": _number(seg.get("sector", 0), f"{where}.sector", 1 << 64),
                "num_sectors": _number(seg["num_sectors"], f"{where}.num_sectors", 1 << 32),
                "flags": _number(seg.get("flags", 0), f"{where}.flags", 1 << 32)}))
        step.data_out = b"".join(payload)


def _scsi(step: Step, obj: dict, here: str) -> None:
    """A CDB (6 to 32 bytes) to LUN `lun` of target 0, or a raw request header."""
    if "request" in obj:
        if "lun" in obj:
            raise ScriptError(f"{here}: lun: a raw request carries its own LUN field")
        step.header = _hex(obj["request"], f"{here}: request")
        return
    step.cdb = _hex(obj["cdb"], f"{here}: cdb")
    if not 1 <= len(step.cdb) <= V.SCSI_CDB_DEFAULT_SIZE:
        raise ScriptError(f"{here}: cdb: {len(step.cdb)} bytes; a CDB is 1 to {V.SCSI_CDB_DEFAULT_SIZE} bytes")
    step.lun = _number(obj.get("lun", 0), f"{here}: lun", MAX_LUN)


@dataclass(frozen=True)
class Family:
    """The line kind of the controllers that speak one protocol: what its lines hold and what they expect."""

    name: str
    controllers: tuple[str, ...]
    commands: tuple[str, str]                   # a line holds exactly one of these
    extras: frozenset[str]                      # further keys its lines may hold
    parse: Callable[[Step, dict, str], None]    # the command keys into the Step
    expect: frozenset[str]                      # what an expectation may name
    names: dict[str, dict[str, int]] = field(default_factory=dict)     # values the protocol names, by key
    nullable: frozenset[str] = frozenset()      # expected null: the request never completed, or no sense

    def with_names(self, outcome: dict) -> dict:
        """An outcome with the values this protocol names given by their names."""
        return {key: named(value, self.names[key]) if key in self.names else value for key, value in outcome.items()}


FAMILIES = (
    Family("ata", ("ide", "ahci"), ("ata", "fis"), frozenset({"dma"}), _ata,
           frozenset({"status", "error", "data_in", "lba"})),
    Family("virtio-blk", ("virtio-blk",), ("virtio_blk", "header"), frozenset(), _virtio_blk,
           frozenset({"status", "data_in", "used_len", "broken"}), {"status": BLK_STATUS},
           frozenset({"status", "used_len"})),
    Family("scsi", ("virtio-scsi",), ("cdb", "request"), frozenset({"lun"}), _scsi,
           frozenset({"response", "status", "sense", "data_in", "residual", "broken"}),
           {"status": SAM_STATUS, "response": SCSI_RESPONSE}, frozenset({"response", "status", "sense"})),
)
FAMILY_OF = {controller: family for family in FAMILIES for controller in family.controllers}
CONTROLLERS = tuple(FAMILY_OF)


def _sense(value, where: str) -> dict:
    sense = _object(value, where, SENSE_KEYS, "fields")
    if set(sense) != set(SENSE_KEYS):
        raise ScriptError(f"{where}: give all of key, asc and ascq")
    return {key: _number(number, f"{where}.{key}", 16 if key == "key" else 256) for key, number in sense.items()}


def _expect(value, here: str, family: Family) -> dict:
    expect = _object(value, f"{here}: expect", tuple(sorted(family.expect)), "keys")
    out: dict = {}
    for key, want in expect.items():
        where = f"{here}: expect.{key}"
        if key == "data_in":
            out[key] = _hex(want, where).hex()
        elif key == "broken":
            if not isinstance(want, bool):
                raise ScriptError(f"{where}: expected true or false")
            out[key] = want
        elif want is None and key in family.nullable:
            out[key] = None
        elif key in family.names:
            out[key] = named(_named(want, where, family.names[key], 256), family.names[key])
        elif key == "sense":
            out[key] = _sense(want, where)
        else:
            out[key] = _number(want, where, 1 << 48)
    return out


def parse_line(text: str, where: str, line: int, family: Family) -> Step | None:
    """One line of a script for a controller of `family` (None for a blank or comment line)."""
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
    first, second = family.commands
    known = COMMON_KEYS | {first, second} | family.extras
    unknown = set(obj) - known
    if unknown:
        key = sorted(unknown)[0]
        owner = next((f for f in FAMILIES if key in f.commands or key in f.extras), None)
        if owner is not None:
            raise ScriptError(f"{here}: {key!r} lines are for --controller {' or '.join(owner.controllers)}")
        raise ScriptError(f"{here}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    if (first in obj) == (second in obj):
        raise ScriptError(f"{here}: a line holds exactly one of \"{first}\" and \"{second}\"")
    step = Step(line)
    family.parse(step, obj, here)
    if "data_out" in obj:
        step.data_out = _data(obj["data_out"], f"{here}: data_out")
    if "data_in_len" in obj:
        step.data_in_len = _number(obj["data_in_len"], f"{here}: data_in_len", MAX_TRANSFER + 1)
    if family.name == "ata" and "data_out" in obj and step.data_in_len:
        raise ScriptError(f"{here}: an ATA command moves data one way: data_out or data_in_len, not both")
    if "expect" in obj:
        step.expect = _expect(obj["expect"], here, family)
    return step


def parse_script(text: str, where: str, controller: str) -> list[Step]:
    """Every command line of a script for `controller`; the whole script is read before anything runs, so a bad
    line anywhere stops it with nothing sent. A controller of the ATA family other than IDE moves each command's
    data its own way, so only IDE lines may choose PIO or DMA."""
    steps = [parse_line(text_line, where, number, FAMILY_OF[controller])
             for number, text_line in enumerate(text.splitlines(), 1)]
    steps = [step for step in steps if step is not None]
    for step in steps:
        if step.dma is not None and controller != "ide":
            raise ScriptError(f"{where}:{step.line}: dma: chooses PIO or DMA on IDE only; {controller} "
                              "moves every command's data its own way")
    return steps


def outcome_line(outcome: dict) -> str:
    """An outcome as its JSON line, registers as "0x.." strings, so it can be pasted into a script as its
    expectation."""
    return json.dumps({key: f"{value:#04x}" if key in ("status", "error") and isinstance(value, int) else value
                       for key, value in outcome.items()})


def _show(key: str, value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, dict)):
        return json.dumps(value)
    if isinstance(value, str) or key in ("data_in", "used_len", "residual"):
        return str(value)
    return f"{value:#x}"


def mismatch(expect: dict, outcome: dict) -> str | None:
    """The first expected key whose value differs from the outcome, as one line; None if all match."""
    for key, want in expect.items():
        got = outcome.get(key)
        if got != want:
            return f"{key}: expected {_show(key, want)}, got {_show(key, got)}"
    return None


def _data_difference(ours: str, theirs: str) -> tuple[str, str]:
    """Two data_in hex strings that differ, shown by their lengths and their first differing byte."""
    a, b = bytes.fromhex(ours), bytes.fromhex(theirs)
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def side(data: bytes) -> str:
        count = f"{len(data)} byte" + ("" if len(data) == 1 else "s")
        return count + (f", byte {at} = {data[at]:#04x}" if at < len(data) else "")
    return side(a), side(b)


def differences(ours: dict, theirs: dict) -> dict[str, tuple[str, str]]:
    """The keys whose values two outcomes of one line disagree on, each value shown as `mismatch` shows it (data by
    its first differing byte)."""
    found = {}
    for key in dict.fromkeys([*ours, *theirs]):
        mine, other = ours.get(key), theirs.get(key)
        if mine == other:
            continue
        if key == "data_in" and isinstance(mine, str) and isinstance(other, str):
            found[key] = _data_difference(mine, other)
        else:
            found[key] = (_show(key, mine), _show(key, other))
    return found
