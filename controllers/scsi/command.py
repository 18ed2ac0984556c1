"""One SCSI command as a logical unit runs it, whatever the command set: its data phase, what a handler gives
back, how it fails, and the result the transport receives.

The SPC commands (spc.py) and the SBC commands (sbc.py) are handlers of one shape: `(cdb, data_out, planned
length) -> data-in`, with the block-layer completions the command caused when there are any, or a raised
`CheckCondition`; the logical unit (spc.LogicalUnit) turns either into a `ScsiResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from controllers.scsi import sense as S
from controllers.scsi.config import AllocationRule
from controllers.scsi.layouts import CHECK_CONDITION, GENERIC_TRANSFER_LENGTH, GOOD, parse
from emu.block import Completion
from emu.errors import EmuError


class Direction(StrEnum):
    NONE = "none"
    IN = "in"           # data-in: device to initiator
    OUT = "out"         # data-out: initiator to device


class Transfer(NamedTuple):
    direction: Direction
    length: int


NO_TRANSFER = Transfer(Direction.NONE, 0)


def transfer_in(length: int) -> Transfer:
    return Transfer(Direction.IN, length) if length else NO_TRANSFER


def transfer_out(length: int) -> Transfer:
    return Transfer(Direction.OUT, length) if length else NO_TRANSFER


def generic_transfer(cdb: bytes | bytearray | memoryview, size: int, direction: Direction = Direction.IN) -> Transfer:
    """The data phase of a command with no rule of its own: the length field of its CDB group (QEMU
    scsi_cdb_xfer), from the device unless the command set says otherwise (scsi_cmd_xfer_mode)."""
    length = parse(GENERIC_TRANSFER_LENGTH[size], cdb[:size])["length"]
    return Transfer(direction, length) if length else NO_TRANSFER


class NotTransferred(bytes):
    """The empty result of a data-out command that succeeds without taking its data (QEMU 1.4 WRITE SAME)."""


# What a handler returns: its data-in, alone or with the block-layer completions the command caused, in order.
Data = bytes | tuple[bytes, list[Completion]]
# A command's handler: (CDB, data-out, planned transfer length) -> Data, or raises CheckCondition.
Handler = Callable[[bytes, bytes, int], Data]


class CheckCondition(EmuError):
    """A command ends with `status` (CHECK CONDITION unless a backend errno says otherwise) and `sense`.
    `transferred`: the data-out phase already happened (QEMU parses parameter lists after moving them)."""

    def __init__(self, sense: S.Sense | None, *, transferred: bool = False, status: int = CHECK_CONDITION,
                 completions: list[Completion] | None = None) -> None:
        super().__init__(sense)
        self.sense = sense
        self.transferred = transferred
        self.status = status
        self.completions = completions or []


def backend_failure(done: Completion, completions: list[Completion], *, transferred: bool = True) -> CheckCondition:
    """QEMU scsi_handle_rw_error under rerror/werror=report: scsi_sense_from_errno of the backend's errno."""
    status, sense = S.from_errno(done.errno)
    return CheckCondition(sense, status=status, transferred=transferred, completions=completions)


def fit_allocation(data: bytes, alloc: int, rule: AllocationRule) -> bytes:
    """Data-in of an emulated command: QEMU returns exactly the allocation length, zero padded
    (iov_len = MIN(buflen, xfer) with a zeroed buffer); SPC the data up to the allocation length."""
    if rule == "qemu":
        return data[:alloc].ljust(alloc, b"\0")
    return data[:alloc]


@dataclass
class ScsiResult:
    """What the logical unit answers: SCSI status, sense data (autosense, with CHECK CONDITION), the data-in
    bytes, the residual (bytes of the initiator's buffer not transferred) and every block-layer completion the
    command caused, in order."""

    status: int
    sense: bytes = b""
    data_in: bytes = b""
    residual: int = 0
    completions: list[Completion] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == GOOD

    @property
    def sense_code(self) -> S.Sense | None:
        return S.decode(self.sense) if self.sense else None
