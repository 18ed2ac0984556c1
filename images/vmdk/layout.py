"""VMDK hosted sparse extent layout (monolithicSparse), defined once with construct. Little-endian;
sizes and offsets in 512-byte sectors.

Sources: VMware Virtual Disk Format 5.0 (SparseExtentHeader, grain directory/tables, descriptor) and
qemu block/vmdk.c (VMDK4Header).
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

MAGIC = b"KDMV"
SECTOR = 512
DEFAULT_GRAIN = 128                 # sectors (64 KiB)
GTES_PER_GT = 512
DESCRIPTOR_OFFSET = 1               # sectors
DESCRIPTOR_SIZE = 20                # sectors
MAX_DESCRIPTOR = 1 << 20            # qemu reads at most 1 MiB of descriptor
MAX_GD_ENTRIES = 32 << 20
MAX_HOST_SECTORS = 1 << 32          # grain table entries are 32-bit sector numbers
GTE_ZEROED = 1                      # with FLAG_ZERO_GRAIN: the grain reads zeros
NO_PARENT_CID = 0xFFFFFFFF

FLAG_NL_DETECT = 1 << 0
FLAG_RGD = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESS = 1 << 16
FLAG_MARKER = 1 << 17

HEADER = Struct(
    "magic" / Bytes(4),
    "version" / Int32ul,
    "flags" / Int32ul,
    "capacity" / Int64ul,             # sectors
    "grain_size" / Int64ul,           # sectors
    "descriptor_offset" / Int64ul,
    "descriptor_size" / Int64ul,
    "num_gtes_per_gt" / Int32ul,
    "rgd_offset" / Int64ul,
    "gd_offset" / Int64ul,
    "overhead" / Int64ul,             # first grain sector
    "unclean_shutdown" / Int8ul,
    "newline_check" / Bytes(4),       # "\n \r\n": detects text-mode transfers
    "compress_algorithm" / Int16ul,
    "pad" / Bytes(433),
)
NEWLINE_CHECK = b"\n \r\n"
