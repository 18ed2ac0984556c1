"""VHD (qemu-img's "vpc") on-disk layout, defined once with construct. All integers big-endian.

Sources: Microsoft Virtual Hard Disk Image Format Specification (footer, dynamic disk header, BAT,
parent locators) and qemu block/vpc.c (VHDFooter, VHDDynDiskHeader). Both structures carry a checksum:
the one's complement of the byte sum with the checksum field taken as zero (`checksum` below).
"""

from __future__ import annotations

from construct import Array, Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
FOOTER_SIZE = 512
DYNAMIC_HEADER_SIZE = 1024
TIMESTAMP_BASE = 946684800          # 2000-01-01 00:00:00 UTC
VERSION = 0x00010000
FEATURES_RESERVED = 0x2             # always set

TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFF = 2, 3, 4
BAT_UNUSED = 0xFFFFFFFF
DEFAULT_BLOCK_SIZE = 2 << 20

# Size limits and geometry (qemu block/vpc.c)
CHS_MAX_C, CHS_MAX_H, CHS_MAX_S = 65535, 16, 255
MAX_GEOMETRY = CHS_MAX_C * CHS_MAX_H * CHS_MAX_S
MAX_SECTORS = 0xFF000000            # 2040 GiB

# Creators whose images give their size in current_size rather than CHS (qemu's table)
SIZE_FROM_FOOTER = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")

# Parent locator platform codes
PLATFORM_W2RU = 0x57327275          # relative path, UTF-16LE
PLATFORM_W2KU = 0x5732_6B75         # absolute path, UTF-16LE
PLATFORM_MACX = 0x4D616358          # file URL, UTF-8

FOOTER = Struct(
    "cookie" / Bytes(8),
    "features" / Int32ub,
    "version" / Int32ub,
    "data_offset" / Int64ub,
    "timestamp" / Int32ub,
    "creator_app" / Bytes(4),
    "creator_major" / Int16ub,
    "creator_minor" / Int16ub,
    "creator_os" / Bytes(4),
    "original_size" / Int64ub,
    "current_size" / Int64ub,
    "cylinders" / Int16ub,
    "heads" / Int8ub,
    "sectors_per_track" / Int8ub,
    "disk_type" / Int32ub,
    "checksum" / Int32ub,
    "unique_id" / Bytes(16),
    "saved_state" / Int8ub,
    "reserved" / Bytes(427),
)

PARENT_LOCATOR = Struct(
    "platform_code" / Int32ub,
    "data_space" / Int32ub,       # sectors by the spec; some writers store bytes
    "data_length" / Int32ub,
    "reserved" / Int32ub,
    "data_offset" / Int64ub,
)

DYNAMIC_HEADER = Struct(
    "cookie" / Bytes(8),
    "data_offset" / Int64ub,
    "table_offset" / Int64ub,
    "header_version" / Int32ub,
    "max_table_entries" / Int32ub,
    "block_size" / Int32ub,
    "checksum" / Int32ub,
    "parent_unique_id" / Bytes(16),
    "parent_timestamp" / Int32ub,
    "reserved1" / Int32ub,
    "parent_unicode_name" / Bytes(512),   # UTF-16 big-endian
    "parent_locators" / Array(8, PARENT_LOCATOR),
    "reserved2" / Bytes(256),
)


def checksum(data: bytes, field_offset: int) -> int:
    """One's complement of the byte sum, the 4 checksum bytes counted as zero."""
    total = sum(data) - sum(data[field_offset:field_offset + 4])
    return ~total & 0xFFFFFFFF


FOOTER_CHECKSUM_OFFSET = 64
DYNAMIC_CHECKSUM_OFFSET = 36
