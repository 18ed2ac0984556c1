"""A fast decoder for the READ/WRITE CDBs, the one hot path of the SCSI disk.

It gives exactly the fields of `layouts.RW_6/RW_10/RW_12/RW_16` (checked byte for byte against construct by
tests/controllers/scsi/test_scsi_layouts.py); construct's BitStruct is far too slow to run once per 4 KiB read.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_RW_10 = struct.Struct(">xBIxH")       # byte 1 flags, LBA, group, TRANSFER LENGTH
_RW_12 = struct.Struct(">xBII")
_RW_16 = struct.Struct(">xBQI")


class RwFields(NamedTuple):
    protect: int            # RDPROTECT / WRPROTECT
    dpo: bool
    fua: bool
    lba: int
    transfer_length: int    # as coded: READ(6)/WRITE(6) 0 still 0 here (the disk reads it as 256)


def decode_rw(cdb: bytes | bytearray | memoryview) -> RwFields:
    """The fields of a READ/WRITE(6/10/12/16) CDB, chosen by its operation code's group (SPC-4 4.2.5.1); the
    caller has checked the opcode and that `cdb` is long enough."""
    group = cdb[0] >> 5
    if group == 0:
        return RwFields(0, False, False, (cdb[1] & 0x1F) << 16 | cdb[2] << 8 | cdb[3], cdb[4])
    if group == 1:
        flags, lba, length = _RW_10.unpack_from(cdb)
    elif group == 5:
        flags, lba, length = _RW_12.unpack_from(cdb)
    else:
        flags, lba, length = _RW_16.unpack_from(cdb)
    return RwFields(flags >> 5, bool(flags & 0x10), bool(flags & 0x08), lba, length)
