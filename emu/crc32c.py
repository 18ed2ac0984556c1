"""CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of VHDX and of iSCSI digests.

The standard library has only the IEEE CRC-32, so this is a table-driven implementation; VHDX
checksums cover at most 64 KiB at open and a few 4 KiB sectors per metadata update.
"""

from __future__ import annotations

import re


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def _times(matrix: list[int], vector: int) -> int:
    """A 32x32 matrix over GF(2) (one int per column) times a 32-bit vector."""
    result, column = 0, 0
    while vector:
        if vector & 1:
            result ^= matrix[column]
        vector >>= 1
        column += 1
    return result


def _zero_operators() -> list[list[int]]:
    """_ZEROS[k]: what 2**k zero bytes do to the CRC register (it is linear in the register), as zlib's
    crc32_combine uses; squaring the one-byte operator gives the next power."""
    one = [_TABLE[(1 << n) & 0xFF] ^ ((1 << n) >> 8) for n in range(32)]
    operators = [one]
    for _ in range(47):
        last = operators[-1]
        operators.append([_times(last, column) for column in last])
    return operators


_ZEROS = _zero_operators()


_ZERO_RUN = re.compile(b"\0{64,}")


def _skip_zeros(crc: int, count: int) -> int:
    power = 0
    while count:
        if count & 1:
            crc = _times(_ZEROS[power], crc)
        count >>= 1
        power += 1
    return crc


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of data, continuing from a previous result `crc` (0 to start). Runs of zero bytes (most of
    a VHDX region table, header sector or BAT page) cost a few matrix products instead of a loop per byte."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    data = bytes(data)
    pos = 0
    for run in _ZERO_RUN.finditer(data):
        for byte in data[pos:run.start()]:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        crc = _skip_zeros(crc, run.end() - run.start())
        pos = run.end()
    for byte in data[pos:]:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
