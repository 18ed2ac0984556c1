"""VHDX (Hyper-V) on-disk layout, defined once with construct. All integers little-endian.

Sources: Microsoft [MS-VHDX] v1.0 "Virtual Hard Disk v2 (VHDX) File Format" (sections 2.2 header
section, 2.3 log, 2.5 BAT, 2.6 metadata region) and qemu block/vhdx.h. GUIDs are stored in Microsoft
byte order (first three fields little-endian), i.e. Python's `uuid.UUID(bytes_le=...)`.

File map (qemu-img and Hyper-V alike): file identifier at 0, headers at 64 KiB and 128 KiB, region
tables at 192 KiB and 256 KiB, then (from 1 MiB) the log, the BAT and the metadata region, each
1 MiB aligned, then payload and sector-bitmap blocks at 1 MiB aligned offsets.
"""

from __future__ import annotations

import uuid

from construct import Bytes, Int16ul, Int32ul, Int64ul, Struct

KiB, MiB = 1 << 10, 1 << 20

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
LOG_SIGNATURE = b"loge"
DESC_SIGNATURE = b"desc"
ZERO_SIGNATURE = b"zero"
DATA_SIGNATURE = b"data"

HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_OFFSETS = (192 * KiB, 256 * KiB)
HEADER_AREA = 4 * KiB               # the header checksum covers the first 4 KiB of its 64 KiB slot
REGION_AREA = 64 * KiB              # the region table checksum covers all 64 KiB
HEADER_SECTION_END = 1 * MiB
CHECKSUM_OFFSET = 4                 # every checksummed structure has its CRC-32C at byte 4
MAX_REGION_ENTRIES = 2047
METADATA_TABLE_SIZE = 64 * KiB      # header + up to 2047 entries; items follow
MAX_METADATA_ENTRIES = 2047
LOG_SECTOR = 4 * KiB

BLOCK_SIZE_MIN, BLOCK_SIZE_MAX = 1 * MiB, 256 * MiB
MAX_DISK_SIZE = 64 << 40            # 64 TiB
SECTORS_PER_BITMAP = 1 << 23        # one sector bitmap block (1 MiB) covers 2^23 logical sectors
BITMAP_BLOCK = 1 * MiB

# BAT entry: state in bits 0-2, file offset in MiB in bits 20-63 ([MS-VHDX] 2.5.1)
STATE_MASK = 0x7
OFFSET_MASK = 0xFFFFFFFFFFF00000
PAYLOAD_NOT_PRESENT = 0
PAYLOAD_UNDEFINED = 1
PAYLOAD_ZERO = 2
PAYLOAD_UNMAPPED = 3
PAYLOAD_UNMAPPED_V095 = 5           # the 0.95 draft's value; qemu reads it as unmapped
PAYLOAD_FULLY_PRESENT = 6
PAYLOAD_PARTIALLY_PRESENT = 7
SB_NOT_PRESENT = 0
SB_PRESENT = 6
STATE_NAMES = {0: "not present", 1: "undefined", 2: "zero", 3: "unmapped", 5: "unmapped (v0.95)",
               6: "fully present", 7: "partially present"}

# File parameters flags ([MS-VHDX] 2.6.2.1)
PARAM_LEAVE_ALLOCATED = 0x1         # fixed: blocks are never deallocated
PARAM_HAS_PARENT = 0x2              # differencing

# Metadata entry flags ([MS-VHDX] 2.6.1.2)
META_IS_USER = 0x1
META_IS_VIRTUAL_DISK = 0x2
META_IS_REQUIRED = 0x4
REGION_REQUIRED = 0x1


def guid(text: str) -> bytes:
    """A GUID as stored on disk."""
    return uuid.UUID(text).bytes_le


BAT_GUID = guid("2dc27766-f623-4200-9d64-115e9bfd4a08")
METADATA_GUID = guid("8b7ca206-4790-4b9a-b8fe-575f050f886e")
FILE_PARAMS_GUID = guid("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VIRTUAL_SIZE_GUID = guid("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
PAGE83_GUID = guid("beca12ab-b2e6-4523-93ef-c309e000c746")
LOGICAL_SECTOR_GUID = guid("8141bf1d-a96f-4709-ba47-f233a8faab5f")
PHYSICAL_SECTOR_GUID = guid("cda348c7-445d-4471-9cc9-e9885251c556")
PARENT_LOCATOR_GUID = guid("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
PARENT_TYPE_VHDX = guid("b04aefb7-d19e-4a81-b789-25b8e9445913")   # locator type of a VHDX parent
ZERO_GUID = bytes(16)

HEADER = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "sequence_number" / Int64ul,
    "file_write_guid" / Bytes(16),
    "data_write_guid" / Bytes(16),
    "log_guid" / Bytes(16),
    "log_version" / Int16ul,
    "version" / Int16ul,
    "log_length" / Int32ul,
    "log_offset" / Int64ul,
)

REGION_HEADER = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "entry_count" / Int32ul,
    "reserved" / Int32ul,
)

REGION_ENTRY = Struct(
    "guid" / Bytes(16),
    "file_offset" / Int64ul,
    "length" / Int32ul,
    "required" / Int32ul,
)

METADATA_HEADER = Struct(
    "signature" / Bytes(8),
    "reserved" / Int16ul,
    "entry_count" / Int16ul,
    "reserved2" / Bytes(20),
)

METADATA_ENTRY = Struct(
    "item_id" / Bytes(16),
    "offset" / Int32ul,             # from the start of the metadata region
    "length" / Int32ul,
    "flags" / Int32ul,
    "reserved" / Int32ul,
)

FILE_PARAMETERS = Struct(
    "block_size" / Int32ul,
    "flags" / Int32ul,
)

PARENT_LOCATOR_HEADER = Struct(
    "locator_type" / Bytes(16),
    "reserved" / Int16ul,
    "key_value_count" / Int16ul,
)

PARENT_LOCATOR_ENTRY = Struct(
    "key_offset" / Int32ul,         # from the start of the parent locator item
    "value_offset" / Int32ul,
    "key_length" / Int16ul,         # bytes of UTF-16LE, no terminator
    "value_length" / Int16ul,
)

LOG_ENTRY_HEADER = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,           # CRC-32C of the whole entry (entry_length bytes)
    "entry_length" / Int32ul,       # multiple of 4 KiB
    "tail" / Int32ul,               # log offset of the first entry of this sequence
    "sequence_number" / Int64ul,
    "descriptor_count" / Int32ul,
    "reserved" / Int32ul,
    "log_guid" / Bytes(16),
    "flushed_file_offset" / Int64ul,
    "last_file_offset" / Int64ul,
)

LOG_DESCRIPTOR = Struct(           # a data descriptor ("desc") or a zero descriptor ("zero")
    "signature" / Bytes(4),
    "trailing_bytes" / Bytes(4),    # data: bytes 4092-4095 of the sector; zero: reserved
    "leading_bytes" / Bytes(8),     # data: bytes 0-7 of the sector; zero: the length to zero (u64)
    "file_offset" / Int64ul,
    "sequence_number" / Int64ul,
)

LOG_DATA_SECTOR = Struct(
    "signature" / Bytes(4),
    "sequence_high" / Int32ul,
    "data" / Bytes(4084),           # bytes 8-4091 of the sector
    "sequence_low" / Int32ul,
)

DESCRIPTORS_PER_SECTOR = LOG_SECTOR // LOG_DESCRIPTOR.sizeof()    # 128; the entry header takes two slots
