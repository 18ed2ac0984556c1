"""VDI (VirtualBox) on-disk layout, defined once with construct. All integers little-endian.

Sources: VirtualBox src/VBox/Storage/VDICore.h (VDIPREHEADER, VDIHEADER1/1PLUS) and qemu block/vdi.c.
UUIDs are stored in Microsoft GUID byte order (the first three fields little-endian), i.e. Python's
`uuid.UUID(bytes_le=...)`.
"""

from __future__ import annotations

from construct import Bytes, If, Int32ul, Int64ul, Struct, this

SIGNATURE = 0xBEDA107F
VERSION_1_1 = 0x00010001
TEXT_QEMU = b"<<< QEMU VM Virtual Disk Image >>>\n"
HEADER_SIZE_QEMU = 0x180            # qemu writes the v1.1 header without the LCHS geometry
HEADER_SIZE_VBOX = 0x190            # VirtualBox adds 16 bytes of LCHS geometry
HEADER_BYTES = 0x200                # the header sector
SECTOR_SIZE = 512
BLOCK_SIZE = 1 << 20                # the only block size qemu accepts (and VirtualBox's default)

TYPE_NORMAL, TYPE_FIXED, TYPE_UNDO, TYPE_DIFF = 1, 2, 3, 4

BLOCK_FREE = 0xFFFFFFFF             # never allocated: zeros, or the parent's data in a diff image
BLOCK_ZERO = 0xFFFFFFFE             # explicitly zero: never falls through to the parent
# qemu VDI_BLOCKS_IN_IMAGE_MAX: the block map, rounded up to a sector, must fit in INT_MAX bytes
MAX_BLOCKS = (0x80000000 - SECTOR_SIZE) // 4
MAX_DISK_SIZE = MAX_BLOCKS * BLOCK_SIZE

HEADER = Struct(
    "text" / Bytes(64),
    "signature" / Int32ul,
    "version" / Int32ul,
    "header_size" / Int32ul,          # cbHeader
    "image_type" / Int32ul,
    "image_flags" / Int32ul,
    "comment" / Bytes(256),
    "offset_bmap" / Int32ul,          # offBlocks
    "offset_data" / Int32ul,          # offData
    "cylinders" / Int32ul,            # legacy geometry
    "heads" / Int32ul,
    "sectors" / Int32ul,
    "sector_size" / Int32ul,
    "unused1" / Int32ul,
    "disk_size" / Int64ul,
    "block_size" / Int32ul,
    "block_extra" / Int32ul,
    "blocks_in_image" / Int32ul,
    "blocks_allocated" / Int32ul,
    "uuid_image" / Bytes(16),         # uuidCreate
    "uuid_last_snap" / Bytes(16),     # uuidModify
    "uuid_link" / Bytes(16),          # uuidLinkage: the parent's uuid_image (diff images)
    "uuid_parent" / Bytes(16),        # uuidParentModify: the parent's uuid_last_snap
    "lchs" / If(this.header_size >= HEADER_SIZE_VBOX, Bytes(16)),
)
