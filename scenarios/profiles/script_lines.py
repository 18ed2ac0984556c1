"""What a departure's `covers` predicate reads of a replay-script line (its parsed JSON, as scenarios.replay.script
documents it): the CDB and the data a virtio-scsi line sends. Kept to the JSON, so profiles need no replay code."""

from __future__ import annotations

SCSI_CDB_AT = 19          # a raw virtio-scsi request: LUN, tag, task attribute, prio, crn, then the CDB


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def scsi_cdb(line: dict) -> bytes:
    """The CDB of a virtio-scsi line, given or inside a raw request; empty when it has none."""
    if isinstance(line.get("cdb"), str):
        return _hex(line["cdb"])
    if isinstance(line.get("request"), str):
        return _hex(line["request"])[SCSI_CDB_AT:]
    return b""


def data_out(line: dict) -> bytes:
    """The line's data-out bytes: hex, or a pattern of `len` bytes."""
    value = line.get("data_out")
    if isinstance(value, dict):
        return bytes([int(str(value.get("pattern", 0)), 0) & 0xFF]) * int(str(value.get("len", 0)), 0)
    return _hex(value) if isinstance(value, str) else b""


def buffer_bytes(line: dict) -> int:
    """The data bytes of both directions the line offers the device."""
    return len(data_out(line)) + int(str(line.get("data_in_len", 0)), 0)
