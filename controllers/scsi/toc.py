"""READ TOC of a disk, as QEMU's scsi-hd answers it: the table of contents of a one-track CD spanning the disk.

QEMU dispatches READ TOC (43h) for every scsi-disk, hard disks included (QEMU 7.2 hw/scsi/scsi-disk.c
scsi_disk_emulate_read_toc, hw/block/cdrom.c cdrom_read_toc and cdrom_read_toc_raw); SPC has no such command for a
disk, so only the profiles whose `read_toc` fact says so answer it. Formats: 0 the TOC (track 1 at LBA 0, the lead-out
at the capacity), 1 the session information, 2 the raw TOC (points A0h, A1h, A2h and track 1); MSF gives addresses as
minute/second/frame, 150 frames after LBA 0. Any other format, or a start track past 1 other than the lead-out (AAh),
is refused."""

from __future__ import annotations

READ_TOC = 0x43
ADR_DATA_TRACK = 0x14           # ADR 1, control 4: a data track
ADR_LEAD_OUT = 0x16
LEAD_OUT = 0xAA
FRAMES_PER_SECOND, MSF_OFFSET = 75, 150


def _address(lba: int, msf: bool) -> bytes:
    """An LBA as 4 bytes: big endian, or a reserved byte, minute, second, frame."""
    if not msf:
        return lba.to_bytes(4, "big")
    frames = lba + MSF_OFFSET
    return bytes([0, frames // FRAMES_PER_SECOND // 60 & 0xFF, frames // FRAMES_PER_SECOND % 60,
                  frames % FRAMES_PER_SECOND])


def _with_length(body: bytes) -> bytes:
    """The TOC DATA LENGTH (the bytes after it) ahead of the body."""
    return len(body).to_bytes(2, "big") + body


def read_toc(cdb: bytes, blocks: int) -> bytes | None:
    """The READ TOC data of a disk of `blocks` logical blocks for `cdb`; None when QEMU refuses it (INVALID FIELD)."""
    msf, fmt, start = bool(cdb[1] & 0x02), cdb[2] & 0x0F, cdb[6]
    blocks &= 0xFFFFFFFF
    if fmt == 0:
        if start > 1 and start != LEAD_OUT:
            return None
        track = bytes([0, ADR_DATA_TRACK, 1, 0]) + _address(0, msf) if start <= 1 else b""
        return _with_length(bytes([1, 1]) + track + bytes([0, ADR_LEAD_OUT, LEAD_OUT, 0]) + _address(blocks, msf))
    if fmt == 1:
        return bytes([0, 0x0A, 1, 1]) + bytes(8)
    if fmt == 2:
        point = bytes([1, ADR_DATA_TRACK, 0])
        raw = (point + bytes([0xA0, 0, 0, 0, 0, 1, 0, 0]) + point + bytes([0xA1, 0, 0, 0, 0, 1, 0, 0])
               + point + bytes([0xA2, 0, 0, 0]) + _address(blocks, msf)
               + point + bytes([1, 0, 0, 0]) + _address(0, msf))
        return _with_length(bytes([1, 1]) + raw)
    return None
