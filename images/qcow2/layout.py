"""qcow2 on-disk layouts, defined once with construct, and the constants of the format.

Source: QEMU docs/interop/qcow2.txt and block/qcow2.h (7.2); field names are the spec's. All integers
are big-endian. The per-I/O tables (L1, L2, refcount table, refcount blocks) use `array` codecs in
`tables.py`, checked byte for byte against the definitions here by the tests.
"""

from __future__ import annotations

from construct import Array, Bytes, BytesInteger, If, Int8ub, Int16ub, Int32ub, Int64ub, Padding, Struct, this

FORMAT_NAME = "qcow2"          # qemu-img's name for it, also the layer name in traces
MAGIC = b"QFI\xfb"
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
DEFAULT_CLUSTER_SIZE = 65536
V2_HEADER_LENGTH = 72
V3_MIN_HEADER_LENGTH = 104
V3_HEADER_LENGTH = 112        # what qemu 7.2 writes: 104 + compression_type + 7 bytes padding
MAX_REFCOUNT_ORDER = 6
MAX_BACKING_NAME = 1023
MAX_BACKING_FORMAT = 15       # qemu reads it into a 16-byte buffer
MAX_L1_BYTES = 32 << 20       # QCOW_MAX_L1_SIZE
MAX_REFTABLE_BYTES = 8 << 20  # QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536
MAX_SNAPSHOT_TABLE = 64 << 20
MAX_SNAPSHOT_EXTRA = 1024
COMPRESSED_SECTOR = 512

# Feature bits (block/qcow2.h)
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = 0x1F
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1
AUTOCLEAR_KNOWN = 0x3

# Header extension types
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

# The feature-name table qemu 7.2 writes, in its order: (type, bit, name); type 0 incompat, 1 compat,
# 2 autoclear.
FEATURE_NAMES = (
    (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"),
    (0, 3, "compression type"), (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
)

# Table entries
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L1E_RESERVED_MASK = 0x7F000000000001FF
L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
L2E_STD_RESERVED_MASK = 0x3F000000000001FE
REFT_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
REFT_RESERVED_MASK = 0x1FF
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1 << 0
MAX_HOST_OFFSET = 1 << 56


def _has_compression_type(ctx) -> bool:
    return ctx.version >= 3 and ctx.header_length > V3_MIN_HEADER_LENGTH


HEADER = Struct(
    "magic" / Bytes(4),
    "version" / Int32ub,
    "backing_file_offset" / Int64ub,
    "backing_file_size" / Int32ub,
    "cluster_bits" / Int32ub,
    "size" / Int64ub,
    "crypt_method" / Int32ub,
    "l1_size" / Int32ub,
    "l1_table_offset" / Int64ub,
    "refcount_table_offset" / Int64ub,
    "refcount_table_clusters" / Int32ub,
    "nb_snapshots" / Int32ub,
    "snapshots_offset" / Int64ub,
    # version 3 only
    "incompatible_features" / If(this.version >= 3, Int64ub),
    "compatible_features" / If(this.version >= 3, Int64ub),
    "autoclear_features" / If(this.version >= 3, Int64ub),
    "refcount_order" / If(this.version >= 3, Int32ub),
    "header_length" / If(this.version >= 3, Int32ub),
    "compression_type" / If(_has_compression_type, Int8ub),
    If(_has_compression_type, Padding(7)),
)



def _field_offsets(struct: Struct, last: str, **context) -> dict[str, int]:
    """Byte offsets of a struct's fields up to `last`, sized in `context`."""
    offsets, pos = {}, 0
    for sub in struct.subcons:
        offsets[sub.name] = pos
        if sub.name == last:
            return offsets
        pos += sub.sizeof(**context)
    raise KeyError(last)


# Where the header fields rewritten in place lie (a version 2 header ends after snapshots_offset).
HEADER_OFFSETS = _field_offsets(HEADER, "autoclear_features", version=3)

EXTENSION_HEADER = Struct("type" / Int32ub, "length" / Int32ub)

FEATURE_NAME = Struct("type" / Int8ub, "bit" / Int8ub, "name" / Bytes(46))  # NUL-padded; only shown in messages

SNAPSHOT_HEADER = Struct(
    "l1_table_offset" / Int64ub,
    "l1_size" / Int32ub,
    "id_str_size" / Int16ub,
    "name_size" / Int16ub,
    "date_sec" / Int32ub,
    "date_nsec" / Int32ub,
    "vm_clock_nsec" / Int64ub,
    "vm_state_size" / Int32ub,
    "extra_data_size" / Int32ub,
)

SNAPSHOT_EXTRA = Struct(
    "vm_state_size_large" / Int64ub,
    "disk_size" / Int64ub,
    "icount" / If(lambda ctx: ctx._.extra_data_size >= 24, Int64ub),
)


def u64_table(entries: int) -> Array:
    """An L1 table, L2 table or refcount table of `entries` big-endian u64."""
    return Array(entries, Int64ub)


def refcount_block(entries: int, refcount_bits: int):
    """A refcount block for widths of 8..64 bits (sub-byte widths: see tables.RefcountCodec)."""
    return Array(entries, BytesInteger(refcount_bits // 8))
