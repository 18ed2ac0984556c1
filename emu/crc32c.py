"""CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of VHDX and of iSCSI digests.

The standard library has only the IEEE CRC-32, so this is a table-driven implementation; VHDX
checksums cover at most 64 KiB at open and a few 4 KiB sectors per metadata update.
"""

from __future__ import annotations


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of data, continuing from a previous result `crc` (0 to start)."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
