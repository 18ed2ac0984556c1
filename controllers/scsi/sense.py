"""SCSI sense data: the named conditions the disk reports, fixed and descriptor formats, and backend errors.

Conditions and their key/ASC/ASCQ are SPC-4's (annex D / table 28), with QEMU's names from scsi/utils.c. QEMU
builds fixed sense of 18 bytes (additional length 10) and descriptor sense of 8 bytes (no descriptors) in
scsi_build_sense_buf; the builders here produce the same bytes through the one layout definition of each format.
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from controllers.scsi.layouts import (
    CHECK_CONDITION,
    DESCRIPTOR_SENSE,
    FIXED_SENSE,
    SENSE_DESCRIPTOR_CURRENT,
    SENSE_FIXED_CURRENT,
)
from controllers.scsi.layouts import build as build_layout

# Sense keys (SPC-4 table 27)
NO_SENSE_KEY = 0x0
RECOVERED_ERROR = 0x1
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
HARDWARE_ERROR = 0x4
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
DATA_PROTECT = 0x7
ABORTED_COMMAND = 0xB
MISCOMPARE = 0xE

# Status codes besides GOOD / CHECK CONDITION that a backend error can map to (SAM-5)
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28


class Sense(NamedTuple):
    key: int
    asc: int
    ascq: int


NO_SENSE = Sense(NO_SENSE_KEY, 0x00, 0x00)
INVALID_OPCODE = Sense(ILLEGAL_REQUEST, 0x20, 0x00)          # INVALID COMMAND OPERATION CODE
LBA_OUT_OF_RANGE = Sense(ILLEGAL_REQUEST, 0x21, 0x00)        # LOGICAL BLOCK ADDRESS OUT OF RANGE
INVALID_FIELD = Sense(ILLEGAL_REQUEST, 0x24, 0x00)           # INVALID FIELD IN CDB
LUN_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x25, 0x00)       # LOGICAL UNIT NOT SUPPORTED
INVALID_PARAM = Sense(ILLEGAL_REQUEST, 0x26, 0x00)           # INVALID FIELD IN PARAMETER LIST
INVALID_PARAM_LEN = Sense(ILLEGAL_REQUEST, 0x1A, 0x00)       # PARAMETER LIST LENGTH ERROR
SAVING_PARAMS_NOT_SUPPORTED = Sense(ILLEGAL_REQUEST, 0x39, 0x00)
WRITE_PROTECTED = Sense(DATA_PROTECT, 0x27, 0x00)
SPACE_ALLOC_FAILED = Sense(DATA_PROTECT, 0x27, 0x07)         # SPACE ALLOCATION FAILED WRITE PROTECT
NO_MEDIUM = Sense(NOT_READY, 0x3A, 0x00)                     # MEDIUM NOT PRESENT
LUN_NOT_READY = Sense(NOT_READY, 0x04, 0x03)                 # ... MANUAL INTERVENTION REQUIRED
READ_ERROR = Sense(MEDIUM_ERROR, 0x11, 0x00)                 # UNRECOVERED READ ERROR
TARGET_FAILURE = Sense(HARDWARE_ERROR, 0x44, 0x00)           # INTERNAL TARGET FAILURE
IO_ERROR = Sense(ABORTED_COMMAND, 0x00, 0x06)                # I/O PROCESS TERMINATED
MISCOMPARE_DURING_VERIFY = Sense(MISCOMPARE, 0x1D, 0x00)
POWER_ON_RESET = Sense(UNIT_ATTENTION, 0x29, 0x00)           # POWER ON, RESET, OR BUS DEVICE RESET OCCURRED

FIXED_SENSE_LEN = 18
DESCRIPTOR_SENSE_LEN = 8

_FIXED_DEFAULTS = dict(valid=False, filemark=False, eom=False, ili=False, sdat_ovfl=False, information=0,
                       command_specific_information=0, field_replaceable_unit_code=0, sksv=False,
                       sense_key_specific=0, additional_sense_length=FIXED_SENSE_LEN - 8)


def fixed(sense: Sense) -> bytes:
    """18 bytes of fixed-format sense, response code 70h (current error), as QEMU's scsi_build_sense_buf."""
    return build_layout(FIXED_SENSE, dict(_FIXED_DEFAULTS, response_code=SENSE_FIXED_CURRENT,
                                          sense_key=sense.key, asc=sense.asc, ascq=sense.ascq))


def descriptor(sense: Sense) -> bytes:
    """8 bytes of descriptor-format sense, response code 72h, no sense data descriptors."""
    return build_layout(DESCRIPTOR_SENSE, dict(response_code=SENSE_DESCRIPTOR_CURRENT, sense_key=sense.key,
                                               asc=sense.asc, ascq=sense.ascq, sdat_ovfl=False,
                                               additional_sense_length=0))


def build(sense: Sense, *, descriptor_format: bool) -> bytes:
    return descriptor(sense) if descriptor_format else fixed(sense)


def decode(data: bytes) -> Sense:
    """The key/ASC/ASCQ of fixed (70h/71h) or descriptor (72h/73h) sense data; QEMU scsi_parse_sense_buf tells
    them apart by bit 1 of the response code."""
    if len(data) < 1:
        raise ValueError("empty sense data")
    if data[0] & 0x02:
        if len(data) < 4:
            raise ValueError(f"descriptor sense of {len(data)} bytes")
        return Sense(data[1] & 0x0F, data[2], data[3])
    if len(data) < 14:
        raise ValueError(f"fixed sense of {len(data)} bytes")
    return Sense(data[2] & 0x0F, data[12], data[13])


# QEMU scsi_sense_from_errno (scsi/utils.c, 7.2 and 8.2.1): status and sense for a
# backend errno under the default error policy (report). EBADE/ENODATA/EREMOTEIO are Linux-only in QEMU.
_ERRNO_STATUS = {errno.EDOM: TASK_SET_FULL, errno.EBADE: RESERVATION_CONFLICT}
_ERRNO_SENSE = {
    errno.ENODATA: READ_ERROR,
    errno.EREMOTEIO: TARGET_FAILURE,
    errno.ENOMEDIUM: NO_MEDIUM,
    errno.ENOMEM: TARGET_FAILURE,
    errno.EINVAL: INVALID_FIELD,
    errno.ENOSPC: SPACE_ALLOC_FAILED,
}


def from_errno(err: int) -> tuple[int, Sense | None]:
    """(status, sense) for a failed block-layer request's errno; anything unnamed is I/O PROCESS TERMINATED."""
    if err in _ERRNO_STATUS:
        return _ERRNO_STATUS[err], None
    return CHECK_CONDITION, _ERRNO_SENSE.get(err, IO_ERROR)
