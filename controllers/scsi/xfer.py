"""The data phase QEMU's SCSI bus plans for a CDB the disk has no rule of its own for, known to the bus or not.

The transport compares it with the guest's buffers before the command runs (virtio-scsi answers OVERRUN when they
go the other way or are too small), so an opcode the disk refuses still has a direction and a length. Facts: QEMU
7.2 hw/scsi/scsi-bus.c scsi_req_xfer (a TYPE_DISK device) and scsi_cmd_xfer_mode; include/scsi/constants.h for the
opcode numbers.
"""

from __future__ import annotations

from controllers.scsi.command import NO_TRANSFER, Direction, Transfer, generic_transfer

# scsi_req_xfer: no data phase whatever the CDB's length field says
_NONE = frozenset({
    0x00, 0x01, 0x0B, 0x10, 0x11, 0x16, 0x17, 0x19, 0x1B, 0x1E, 0x2B, 0x33, 0x34, 0x35, 0x36, 0x3D, 0x3F,
    0x53, 0x80, 0x82, 0x90, 0x91, 0x92, 0xA7, 0xBB,
})
# scsi_req_xfer: (first byte, bytes) of the big-endian length field where it is not the group's
_FIELDS = {
    0x1C: (3, 2), 0x1D: (3, 2),                             # RECEIVE / SEND DIAGNOSTIC, as INQUIRY
    0x3B: (6, 3), 0x3C: (6, 3), 0x5D: (6, 3), 0xBE: (6, 3),  # WRITE / READ BUFFER, SEND CUE SHEET, READ CD
    0x5F: (5, 4),                                           # PERSISTENT RESERVE OUT
    0xB6: (8, 2),                                           # SEND VOLUME TAG (not a CD: GET STREAMING's field)
}
_READ_BLOCK_LIMITS = 0x05                                   # 6 bytes
_ATA_PASS_THROUGH_12, _ATA_PASS_THROUGH_16 = 0xA1, 0x85
# scsi_cmd_xfer_mode: to the device; everything else with data comes from it
TO_DEVICE = frozenset({
    0x04, 0x07, 0x0A, 0x15, 0x18, 0x1B, 0x1D, 0x24, 0x2A, 0x2E, 0x2F, 0x30, 0x31, 0x32, 0x38, 0x39, 0x3A, 0x3B,
    0x3D, 0x3F, 0x40, 0x41, 0x42, 0x4C, 0x55, 0x5D, 0x5F, 0x8A, 0x8E, 0x8F, 0x93, 0xA4, 0xAA, 0xAE, 0xAF, 0xB0,
    0xB1, 0xB2, 0xB6, 0xBF,
})


def _ata_length(cdb: bytes, sixteen: bool) -> int:
    """ATA PASS-THROUGH: T_LENGTH picks the FEATURES (1) or SECTOR COUNT (2) field, counted in bytes or, with
    BYTE_BLOCK, in 512-byte blocks (T_TYPE: logical blocks, 512 here)."""
    t_length, blocks = cdb[2] & 3, cdb[2] >> 2 & 1
    if t_length not in (1, 2):
        return 0
    if sixteen:
        low = 4 if t_length == 1 else 6
        count = cdb[low] | (cdb[low - 1] << 8 if cdb[1] & 1 else 0)
    else:
        count = cdb[2 + t_length]
    return count * (512 if blocks else 1)


def bus_transfer(cdb: bytes | bytearray | memoryview, size: int) -> Transfer:
    """The data phase QEMU's bus gives `cdb` (of its group's `size`) when the disk has no rule for it."""
    cdb = bytes(cdb[:size])
    op = cdb[0]
    if op in _NONE:
        return NO_TRANSFER
    direction = Direction.OUT if op in TO_DEVICE else Direction.IN
    if op in _FIELDS:
        at, width = _FIELDS[op]
        length = int.from_bytes(cdb[at:at + width], "big")
    elif op == _READ_BLOCK_LIMITS:
        length = 6
    elif op in (_ATA_PASS_THROUGH_12, _ATA_PASS_THROUGH_16):
        length = _ata_length(cdb, op == _ATA_PASS_THROUGH_16)
        direction = Direction.IN if cdb[2] & 0x08 else Direction.OUT
    else:
        return generic_transfer(cdb, size, direction)
    return Transfer(direction, length) if length else NO_TRANSFER
