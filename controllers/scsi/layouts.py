"""SCSI block-device (SBC) and primary (SPC) command layouts, defined once with construct, and their constants.

Every CDB and parameter structure the SCSI disk decodes or builds is one `BitStruct` here: SCSI numbers bytes
from 0 and bits from 7 down to 0 and stores multi-byte fields big-endian, which is exactly a BitStruct read
from the first bit on, so a definition reads like the table in the standard and parses to one flat mapping.
Reserved and obsolete bits are `Padding` (QEMU's scsi-disk ignores them, and SPC lets a device do so).

Sources: SBC-3 (T10/BSR INCITS 514 r35) and SBC-4 r15 for the block commands, VPD pages B0h/B1h/B2h and the
caching page; SPC-4 r37 for INQUIRY, MODE SENSE/SELECT, REPORT LUNS, REPORT SUPPORTED OPERATION CODES, REQUEST
SENSE and sense data; cross-checked with QEMU 7.2 hw/scsi/scsi-disk.c, scsi/utils.c and libiscsi's
lib/scsi-lowlevel.c unmarshallers (scsi_inquiry_unmarshall_block_limits and its siblings).
Hot paths decode READ/WRITE CDBs with `codec.py` instead, checked against these definitions by the tests.
"""

from __future__ import annotations

from enum import IntEnum

from construct import BitsInteger, BitStruct, Bytes, Bytewise, Flag, Padding

from controllers.scsi.bitcodec import BitCodec, bit_codec

# ----------------------------------------------------------------------------------------------------------
# Operation codes (SPC-4 / SBC-4 tables; QEMU include/scsi/constants.h)
# ----------------------------------------------------------------------------------------------------------


class Op(IntEnum):
    """Operation codes the disk decodes; a guest may send any byte, so the disk keeps unknown ones as ints."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    FORMAT_UNIT = 0x04
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    SEEK_10 = 0x2B
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    SYNCHRONIZE_CACHE_10 = 0x35
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    READ_16 = 0x88
    WRITE_16 = 0x8A
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF


SAI_READ_CAPACITY_16 = 0x10         # SERVICE ACTION IN(16) service actions (SBC-4, 5.8)
SAI_GET_LBA_STATUS = 0x12
MI_REPORT_SUPPORTED_OPCODES = 0x0C  # MAINTENANCE IN service action (SPC-4)

# Status codes (SAM-5; QEMU include/scsi/constants.h)
GOOD = 0x00
CHECK_CONDITION = 0x02

# INQUIRY peripheral device type of a direct-access block device (SPC-4)
TYPE_DISK = 0x00

# VPD page codes
VPD_SUPPORTED_PAGES = 0x00
VPD_UNIT_SERIAL = 0x80
VPD_DEVICE_ID = 0x83
VPD_BLOCK_LIMITS = 0xB0
VPD_BLOCK_CHARACTERISTICS = 0xB1
VPD_LOGICAL_BLOCK_PROVISIONING = 0xB2

# Mode pages (SPC-4 / SBC-4; QEMU MODE_PAGE_*)
MODE_PAGE_R_W_ERROR = 0x01
MODE_PAGE_HD_GEOMETRY = 0x04
MODE_PAGE_FLEXIBLE_DISK_GEOMETRY = 0x05
MODE_PAGE_CACHING = 0x08
MODE_PAGE_CONTROL = 0x0A
MODE_PAGE_ALL = 0x3F

# MODE SENSE page control (byte 2 bits 7:6)
PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = 0, 1, 2, 3

# GET LBA STATUS provisioning status (SBC-4)
LBA_MAPPED = 0
LBA_DEALLOCATED = 1
LBA_ANCHORED = 2

# Sense data response codes (SPC-4)
SENSE_FIXED_CURRENT = 0x70
SENSE_DESCRIPTOR_CURRENT = 0x72


def parse(layout, data) -> dict:
    """The named fields of `data` as a plain dict (construct's `_io` bookkeeping removed); through the layout's
    generated codec (`bitcodec`) when it has one, construct otherwise."""
    codec = _codec(layout)
    fields = None if codec is None else codec.parse(data)
    if fields is not None:
        return fields
    return {k: v for k, v in layout.parse(bytes(data)).items() if not k.startswith("_")}


def build(layout, fields: dict) -> bytes:
    """`layout.build(fields)`, through the layout's generated codec when it has one."""
    codec = _codec(layout)
    data = None if codec is None else codec.build(fields)
    return layout.build(fields) if data is None else data


_CODECS: dict = {}      # layout -> its BitCodec or None; made on first use (a layout's definition never changes)


def _codec(layout) -> BitCodec | None:
    if layout not in _CODECS:
        _CODECS[layout] = bit_codec(layout)
    return _CODECS[layout]


# ----------------------------------------------------------------------------------------------------------
# READ / WRITE / WRITE AND VERIFY / VERIFY CDBs (SBC-4-5.16, 5.28-5.36)
# ----------------------------------------------------------------------------------------------------------

# READ(6) / WRITE(6): a 21-bit LBA; TRANSFER LENGTH 0 means 256 blocks (QEMU scsi_data_cdb_xfer).
RW_6 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3),
    "lba" / BitsInteger(21),
    "transfer_length" / BitsInteger(8),
    "control" / BitsInteger(8),
)


def _rw_byte1():
    """Byte 1 of READ/WRITE(10/12/16): RDPROTECT/WRPROTECT, DPO, FUA, RARC (reads), two obsolete bits."""
    return ("protect" / BitsInteger(3), "dpo" / Flag, "fua" / Flag, "rarc" / Flag, Padding(2))


RW_10 = BitStruct(
    "opcode" / BitsInteger(8),
    *_rw_byte1(),
    "lba" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "transfer_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

RW_12 = BitStruct(
    "opcode" / BitsInteger(8),
    *_rw_byte1(),
    "lba" / BitsInteger(32),
    "transfer_length" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)

RW_16 = BitStruct(
    "opcode" / BitsInteger(8),
    *_rw_byte1(),
    "lba" / BitsInteger(64),
    "transfer_length" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)


def _verify_byte1():
    """Byte 1 of VERIFY and WRITE AND VERIFY: VRPROTECT/WRPROTECT, DPO, reserved, BYTCHK (2 bits, SBC-4),
    obsolete."""
    return ("protect" / BitsInteger(3), "dpo" / Flag, Padding(1), "bytchk" / BitsInteger(2), Padding(1))


VERIFY_10 = BitStruct(
    "opcode" / BitsInteger(8),
    *_verify_byte1(),
    "lba" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "transfer_length" / BitsInteger(16),   # VERIFICATION LENGTH for VERIFY
    "control" / BitsInteger(8),
)

VERIFY_12 = BitStruct(
    "opcode" / BitsInteger(8),
    *_verify_byte1(),
    "lba" / BitsInteger(32),
    "transfer_length" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)

VERIFY_16 = BitStruct(
    "opcode" / BitsInteger(8),
    *_verify_byte1(),
    "lba" / BitsInteger(64),
    "transfer_length" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)

# ----------------------------------------------------------------------------------------------------------
# SYNCHRONIZE CACHE, UNMAP, WRITE SAME (SBC-4, 5.25, 5.32, 5.48, 5.49)
# ----------------------------------------------------------------------------------------------------------

SYNCHRONIZE_CACHE_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(5), "sync_nv" / Flag, "immed" / Flag, Padding(1),
    "lba" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "number_of_blocks" / BitsInteger(16),
    "control" / BitsInteger(8),
)

SYNCHRONIZE_CACHE_16 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(5), "sync_nv" / Flag, "immed" / Flag, Padding(1),
    "lba" / BitsInteger(64),
    "number_of_blocks" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)

UNMAP_CDB = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(7), "anchor" / Flag,
    Padding(32),
    Padding(3),
    "group" / BitsInteger(5),
    "parameter_list_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

# The UNMAP parameter list: an 8-byte header, then 16-byte block descriptors.
UNMAP_HEADER = BitStruct(
    "unmap_data_length" / BitsInteger(16),              # bytes after this field (total - 2)
    "block_descriptor_data_length" / BitsInteger(16),   # bytes of descriptors (total - 8)
    Padding(32),
)

UNMAP_DESCRIPTOR = BitStruct(
    "lba" / BitsInteger(64),
    "count" / BitsInteger(32),
    Padding(32),
)


def _write_same_byte1():
    """Byte 1 of WRITE SAME: WRPROTECT, ANCHOR, UNMAP, obsolete (PBDATA in SBC-3), obsolete (LBDATA in SBC-3),
    NDOB (WRITE SAME(16) in SBC-3 r35 and later; QEMU also honours it in WRITE SAME(10))."""
    return ("protect" / BitsInteger(3), "anchor" / Flag, "unmap" / Flag, "pbdata" / Flag, "lbdata" / Flag,
            "ndob" / Flag)


WRITE_SAME_10 = BitStruct(
    "opcode" / BitsInteger(8),
    *_write_same_byte1(),
    "lba" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "number_of_blocks" / BitsInteger(16),
    "control" / BitsInteger(8),
)

WRITE_SAME_16 = BitStruct(
    "opcode" / BitsInteger(8),
    *_write_same_byte1(),
    "lba" / BitsInteger(64),
    "number_of_blocks" / BitsInteger(32),
    Padding(3),
    "group" / BitsInteger(5),
    "control" / BitsInteger(8),
)

# ----------------------------------------------------------------------------------------------------------
# READ CAPACITY and GET LBA STATUS (SBC-4, 5.21, 5.8)
# ----------------------------------------------------------------------------------------------------------

READ_CAPACITY_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(8),
    "lba" / BitsInteger(32),            # obsolete in SBC-3 r26+; must be 0 unless PMI
    Padding(16),
    Padding(7), "pmi" / Flag,
    "control" / BitsInteger(8),
)

READ_CAPACITY_10_DATA = BitStruct(
    "last_lba" / BitsInteger(32),       # 0xFFFFFFFF: use READ CAPACITY(16)
    "block_length" / BitsInteger(32),
)

READ_CAPACITY_16 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "service_action" / BitsInteger(5),
    "lba" / BitsInteger(64),
    "allocation_length" / BitsInteger(32),
    Padding(7), "pmi" / Flag,
    "control" / BitsInteger(8),
)

READ_CAPACITY_16_DATA = BitStruct(
    "last_lba" / BitsInteger(64),
    "block_length" / BitsInteger(32),
    Padding(3), "rc_basis" / BitsInteger(2), "p_type" / BitsInteger(2), "prot_en" / Flag,
    "p_i_exponent" / BitsInteger(4), "lbppbe" / BitsInteger(4),
    "lbpme" / Flag, "lbprz" / Flag, "lowest_aligned_lba" / BitsInteger(14),
    Padding(16 * 8),
)

GET_LBA_STATUS = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "service_action" / BitsInteger(5),
    "lba" / BitsInteger(64),
    "allocation_length" / BitsInteger(32),
    "report_type" / BitsInteger(8),     # SBC-4: 0 = all; older revisions: reserved
    "control" / BitsInteger(8),
)

GET_LBA_STATUS_HEADER = BitStruct(
    "parameter_data_length" / BitsInteger(32),   # bytes after this field
    Padding(32),
)

LBA_STATUS_DESCRIPTOR = BitStruct(
    "lba" / BitsInteger(64),
    "count" / BitsInteger(32),
    Padding(4), "provisioning_status" / BitsInteger(4),
    Padding(24),
)

# ----------------------------------------------------------------------------------------------------------
# INQUIRY and VPD pages (SPC-4, 7.8; SBC-4)
# ----------------------------------------------------------------------------------------------------------

INQUIRY = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(6), "cmddt" / Flag, "evpd" / Flag,   # CMDDT is obsolete (SPC-3); QEMU rejects any page with it
    "page_code" / BitsInteger(8),
    "allocation_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

INQUIRY_STANDARD_LEN = 36

INQUIRY_STANDARD = BitStruct(
    "peripheral_qualifier" / BitsInteger(3), "peripheral_device_type" / BitsInteger(5),
    "rmb" / Flag, "lu_cong" / Flag, Padding(6),
    "version" / BitsInteger(8),                  # 5 = SPC-3, 6 = SPC-4
    Padding(2), "normaca" / Flag, "hisup" / Flag, "response_data_format" / BitsInteger(4),
    "additional_length" / BitsInteger(8),
    "sccs" / Flag, "acc" / Flag, "tpgs" / BitsInteger(2), "threepc" / Flag, Padding(2), "protect" / Flag,
    Padding(1), "encserv" / Flag, "vs1" / Flag, "multip" / Flag, Padding(3), "addr16" / Flag,
    Padding(2), "wbus16" / Flag, "sync" / Flag, Padding(2), "cmdque" / Flag, "vs2" / Flag,
    "vendor" / Bytewise(Bytes(8)),        # ASCII, space padded
    "product" / Bytewise(Bytes(16)),
    "revision" / Bytewise(Bytes(4)),
)

VPD_HEADER = BitStruct(
    "peripheral_qualifier" / BitsInteger(3), "peripheral_device_type" / BitsInteger(5),
    "page_code" / BitsInteger(8),
    "page_length" / BitsInteger(16),             # bytes after the header
)

# One designation descriptor header of VPD page 83h, followed by `designator_length` bytes.
DESIGNATION_DESCRIPTOR = BitStruct(
    "protocol_identifier" / BitsInteger(4), "code_set" / BitsInteger(4),
    "piv" / Flag, Padding(1), "association" / BitsInteger(2), "designator_type" / BitsInteger(4),
    Padding(8),
    "designator_length" / BitsInteger(8),
)
CODE_SET_BINARY, CODE_SET_ASCII = 1, 2
DESIGNATOR_VENDOR_SPECIFIC, DESIGNATOR_T10, DESIGNATOR_NAA = 0, 1, 3

BLOCK_LIMITS_LEN = 0x40     # page length 3Ch (SBC-3: required with logical block provisioning)

# Block Limits VPD page after the 4-byte header (SBC-4); QEMU scsi_emulate_block_limits.
BLOCK_LIMITS = BitStruct(
    Padding(7), "wsnz" / Flag,
    "maximum_compare_and_write_length" / BitsInteger(8),
    "optimal_transfer_length_granularity" / BitsInteger(16),
    "maximum_transfer_length" / BitsInteger(32),
    "optimal_transfer_length" / BitsInteger(32),
    "maximum_prefetch_length" / BitsInteger(32),
    "maximum_unmap_lba_count" / BitsInteger(32),
    "maximum_unmap_block_descriptor_count" / BitsInteger(32),
    "optimal_unmap_granularity" / BitsInteger(32),
    "ugavalid" / Flag, "unmap_granularity_alignment" / BitsInteger(31),
    "maximum_write_same_length" / BitsInteger(64),
    Padding(20 * 8),
)

# Block Device Characteristics VPD page after the header (SBC-4); page length 3Ch.
BLOCK_CHARACTERISTICS = BitStruct(
    "medium_rotation_rate" / BitsInteger(16),   # 0 = not reported, 1 = non-rotating
    "product_type" / BitsInteger(8),
    "wabereq" / BitsInteger(2), "wacereq" / BitsInteger(2), "nominal_form_factor" / BitsInteger(4),
    Padding(7), "vbuls" / Flag,
    Padding(55 * 8),
)

# Logical Block Provisioning VPD page after the header (SBC-4); page length 4.
LOGICAL_BLOCK_PROVISIONING = BitStruct(
    "threshold_exponent" / BitsInteger(8),
    "lbpu" / Flag, "lbpws" / Flag, "lbpws10" / Flag, "lbprz" / BitsInteger(3), "anc_sup" / Flag, "dp" / Flag,
    Padding(5), "provisioning_type" / BitsInteger(3),    # 0 full, 1 resource, 2 thin
    Padding(8),
)

# ----------------------------------------------------------------------------------------------------------
# MODE SENSE / MODE SELECT (SPC-4-6.14, 7.5; SBC-4)
# ----------------------------------------------------------------------------------------------------------

MODE_SENSE_6 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(4), "dbd" / Flag, Padding(3),
    "pc" / BitsInteger(2), "page_code" / BitsInteger(6),
    "subpage_code" / BitsInteger(8),
    "allocation_length" / BitsInteger(8),
    "control" / BitsInteger(8),
)

MODE_SENSE_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "llbaa" / Flag, "dbd" / Flag, Padding(3),
    "pc" / BitsInteger(2), "page_code" / BitsInteger(6),
    "subpage_code" / BitsInteger(8),
    Padding(24),
    "allocation_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

MODE_SELECT_6 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "pf" / Flag, Padding(3), "sp" / Flag,
    Padding(16),
    "parameter_list_length" / BitsInteger(8),
    "control" / BitsInteger(8),
)

MODE_SELECT_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "pf" / Flag, Padding(3), "sp" / Flag,
    Padding(40),
    "parameter_list_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

# Device-specific parameter byte of a direct-access device: WP (bit 7), DPOFUA (bit 4).
MODE_PARAMETER_HEADER_6 = BitStruct(
    "mode_data_length" / BitsInteger(8),
    "medium_type" / BitsInteger(8),
    "wp" / Flag, Padding(2), "dpofua" / Flag, Padding(4),
    "block_descriptor_length" / BitsInteger(8),
)

MODE_PARAMETER_HEADER_10 = BitStruct(
    "mode_data_length" / BitsInteger(16),
    "medium_type" / BitsInteger(8),
    "wp" / Flag, Padding(2), "dpofua" / Flag, Padding(4),
    Padding(7), "longlba" / Flag,
    Padding(8),
    "block_descriptor_length" / BitsInteger(16),
)

# SBC-4: a direct-access device's short LBA mode parameter block descriptor (a 32-bit block count).
SHORT_LBA_BLOCK_DESCRIPTOR = BitStruct(
    "number_of_blocks" / BitsInteger(32),
    Padding(8),
    "block_length" / BitsInteger(24),
)

# SPC-4 general mode parameter block descriptor (density code + 24-bit count): what QEMU builds.
GENERAL_BLOCK_DESCRIPTOR = BitStruct(
    "density_code" / BitsInteger(8),
    "number_of_blocks" / BitsInteger(24),
    Padding(8),
    "block_length" / BitsInteger(24),
)

BLOCK_DESCRIPTOR_LEN = 8

# The page_0 format page header (SPF = 0); a set SPF bit means a 4-byte sub-page header.
MODE_PAGE_HEADER = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
)


def parse_mode_page(layout, page_code: int, body: bytes) -> dict:
    """The fields of a MODE SELECT page whose page_0 header has been read: `body` is what follows it."""
    header = build(MODE_PAGE_HEADER, dict(ps=False, spf=False, page_code=page_code, page_length=len(body)))
    return parse(layout, header + body)


# The sub_page format page header (SPF = 1).
MODE_SUBPAGE_HEADER = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "subpage_code" / BitsInteger(8),
    "page_length" / BitsInteger(16),
)

# Read-Write Error Recovery mode page 01h (SBC-4), 12 bytes.
R_W_ERROR_RECOVERY_PAGE = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
    "awre" / Flag, "arre" / Flag, "tb" / Flag, "rc" / Flag, "eer" / Flag, "per" / Flag, "dte" / Flag, "dcr" / Flag,
    "read_retry_count" / BitsInteger(8),
    Padding(24),
    "lbpere" / Flag, "mwr" / BitsInteger(2), Padding(5),
    "write_retry_count" / BitsInteger(8),
    Padding(8),
    "recovery_time_limit" / BitsInteger(16),
)

# Rigid Disk Drive Geometry mode page 04h (SBC-2, obsolete in SBC-3), 24 bytes, as QEMU fills it.
RIGID_DISK_GEOMETRY_PAGE = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
    "cylinders" / BitsInteger(24),
    "heads" / BitsInteger(8),
    "write_precomp_cylinder" / BitsInteger(24),
    "reduced_write_current_cylinder" / BitsInteger(24),
    "step_rate" / BitsInteger(16),
    "landing_zone_cylinder" / BitsInteger(24),
    Padding(6), "rpl" / BitsInteger(2),
    "rotational_offset" / BitsInteger(8),
    Padding(8),
    "rotation_rate" / BitsInteger(16),
    Padding(16),
)

# Flexible Disk mode page 05h (SBC-2, obsolete), 32 bytes, as QEMU fills it.
FLEXIBLE_DISK_PAGE = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
    "transfer_rate" / BitsInteger(16),
    "heads" / BitsInteger(8),
    "sectors_per_track" / BitsInteger(8),
    "bytes_per_sector" / BitsInteger(16),
    "cylinders" / BitsInteger(16),
    "write_precomp_cylinder" / BitsInteger(16),
    "reduced_write_current_cylinder" / BitsInteger(16),
    "step_rate" / BitsInteger(16),
    "step_pulse_width" / BitsInteger(8),
    "head_settle_delay" / BitsInteger(16),
    "motor_on_delay" / BitsInteger(8),
    "motor_off_delay" / BitsInteger(8),
    Padding(7 * 8),
    "rotation_rate" / BitsInteger(16),
    Padding(16),
)

# Caching mode page 08h (SBC-4), 20 bytes: WCE = volatile write cache enabled, RCD = read cache disabled.
CACHING_PAGE = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
    "ic" / Flag, "abpf" / Flag, "cap" / Flag, "disc" / Flag, "size" / Flag, "wce" / Flag, "mf" / Flag,
    "rcd" / Flag,
    "demand_read_retention_priority" / BitsInteger(4), "write_retention_priority" / BitsInteger(4),
    "disable_prefetch_transfer_length" / BitsInteger(16),
    "minimum_prefetch" / BitsInteger(16),
    "maximum_prefetch" / BitsInteger(16),
    "maximum_prefetch_ceiling" / BitsInteger(16),
    "fsw" / Flag, "lbcss" / Flag, "dra" / Flag, Padding(4), "nv_dis" / Flag,
    "number_of_cache_segments" / BitsInteger(8),
    "cache_segment_size" / BitsInteger(16),
    Padding(32),
)

# Control mode page 0Ah (SPC-4), 12 bytes: D_SENSE selects descriptor-format sense data.
CONTROL_PAGE = BitStruct(
    "ps" / Flag, "spf" / Flag, "page_code" / BitsInteger(6),
    "page_length" / BitsInteger(8),
    "tst" / BitsInteger(3), "tmf_only" / Flag, "dpicz" / Flag, "d_sense" / Flag, "gltsd" / Flag, "rlec" / Flag,
    "queue_algorithm_modifier" / BitsInteger(4), "nuar" / Flag, "qerr" / BitsInteger(2), Padding(1),
    "vs" / Flag, "rac" / Flag, "ua_intlck_ctrl" / BitsInteger(2), "swp" / Flag, Padding(3),
    "ato" / Flag, "tas" / Flag, "atmpe" / Flag, "rwwp" / Flag, Padding(4),
    Padding(16),
    "busy_timeout_period" / BitsInteger(16),
    "extended_self_test_completion_time" / BitsInteger(16),
)

# ----------------------------------------------------------------------------------------------------------
# REPORT LUNS, REPORT SUPPORTED OPERATION CODES, REQUEST SENSE, TEST UNIT READY (SPC-4, 6.35, 6.39, 6.47)
# ----------------------------------------------------------------------------------------------------------

REPORT_LUNS = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(8),
    "select_report" / BitsInteger(8),
    Padding(24),
    "allocation_length" / BitsInteger(32),
    Padding(8),
    "control" / BitsInteger(8),
)

REPORT_LUNS_HEADER = BitStruct(
    "lun_list_length" / BitsInteger(32),
    Padding(32),
)

REPORT_SUPPORTED_OPCODES = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(3), "service_action" / BitsInteger(5),
    "rctd" / Flag, Padding(4), "reporting_options" / BitsInteger(3),
    "requested_opcode" / BitsInteger(8),
    "requested_service_action" / BitsInteger(16),
    "allocation_length" / BitsInteger(32),
    Padding(8),
    "control" / BitsInteger(8),
)

# One command descriptor of the "all commands" format (8 bytes, then a 12-byte timeouts descriptor if CTDP).
COMMAND_DESCRIPTOR = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(8),
    "service_action" / BitsInteger(16),
    Padding(8),
    Padding(6), "ctdp" / Flag, "servactv" / Flag,
    "cdb_length" / BitsInteger(16),
)

# The "one command" format header; CDB USAGE DATA (cdb_size bytes) follows.
ONE_COMMAND_HEADER = BitStruct(
    Padding(8),
    "ctdp" / Flag, Padding(4), "support" / BitsInteger(3),   # 1 not supported, 3 supported as the standard says
    "cdb_size" / BitsInteger(16),
)

COMMAND_TIMEOUTS_DESCRIPTOR = BitStruct(
    "descriptor_length" / BitsInteger(16),       # 0Ah
    Padding(8),
    "command_specific" / BitsInteger(8),
    "nominal_command_processing_timeout" / BitsInteger(32),
    "recommended_command_timeout" / BitsInteger(32),
)

REQUEST_SENSE = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(7), "desc" / Flag,
    Padding(16),
    "allocation_length" / BitsInteger(8),
    "control" / BitsInteger(8),
)

TEST_UNIT_READY = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(32),
    "control" / BitsInteger(8),
)

# Commands a disk completes without data (QEMU scsi_req_xfer sets xfer 0 for all but FORMAT UNIT), decoded for the
# fields QEMU looks at. RESERVE/RELEASE (6) are obsolete (SPC-2): byte 1 bit 0 was the 3rdPTY bit; the (10) forms
# also carry LONGID in bit 1.
START_STOP_UNIT = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(7), "immed" / Flag,
    Padding(8),
    Padding(4), "power_condition_modifier" / BitsInteger(4),
    "power_condition" / BitsInteger(4), Padding(1), "no_flush" / Flag, "loej" / Flag, "start" / Flag,
    "control" / BitsInteger(8),
)

PREVENT_ALLOW_MEDIUM_REMOVAL = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(24),
    Padding(6), "prevent" / BitsInteger(2),
    "control" / BitsInteger(8),
)

SEEK_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(8),
    "lba" / BitsInteger(32),
    Padding(24),
    "control" / BitsInteger(8),
)

FORMAT_UNIT = BitStruct(
    "opcode" / BitsInteger(8),
    "fmtpinfo" / BitsInteger(2), "longlist" / Flag, "fmtdata" / Flag, "cmplst" / Flag,
    "defect_list_format" / BitsInteger(3),
    Padding(8),
    Padding(16),
    "control" / BitsInteger(8),
)

RESERVE_RELEASE_6 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(7), "third_party" / Flag,
    Padding(24),
    "control" / BitsInteger(8),
)

RESERVE_RELEASE_10 = BitStruct(
    "opcode" / BitsInteger(8),
    Padding(6), "longid" / Flag, "third_party" / Flag,
    Padding(40),
    "parameter_list_length" / BitsInteger(16),
    "control" / BitsInteger(8),
)

# Where each CDB group keeps its transfer, parameter list or allocation length (SPC-4 4.2.5): what QEMU's
# scsi_cdb_xfer reads for a command it has no rule of its own for. Keyed by CDB length.
GENERIC_TRANSFER_LENGTH = {
    6: BitStruct(Padding(32), "length" / BitsInteger(8)),       # byte 4
    10: BitStruct(Padding(56), "length" / BitsInteger(16)),     # bytes 7-8
    12: BitStruct(Padding(48), "length" / BitsInteger(32)),     # bytes 6-9
    16: BitStruct(Padding(80), "length" / BitsInteger(32)),     # bytes 10-13
}

# Fixed-format sense data (SPC-4), 18 bytes as QEMU builds them (additional sense length 10).
FIXED_SENSE = BitStruct(
    "valid" / Flag, "response_code" / BitsInteger(7),
    Padding(8),
    "filemark" / Flag, "eom" / Flag, "ili" / Flag, "sdat_ovfl" / Flag, "sense_key" / BitsInteger(4),
    "information" / BitsInteger(32),
    "additional_sense_length" / BitsInteger(8),
    "command_specific_information" / BitsInteger(32),
    "asc" / BitsInteger(8),
    "ascq" / BitsInteger(8),
    "field_replaceable_unit_code" / BitsInteger(8),
    "sksv" / Flag, "sense_key_specific" / BitsInteger(23),
)

# Descriptor-format sense data header (SPC-4), 8 bytes; descriptors follow (none here, as QEMU).
DESCRIPTOR_SENSE = BitStruct(
    Padding(1), "response_code" / BitsInteger(7),
    Padding(4), "sense_key" / BitsInteger(4),
    "asc" / BitsInteger(8),
    "ascq" / BitsInteger(8),
    "sdat_ovfl" / Flag, Padding(7),
    Padding(16),
    "additional_sense_length" / BitsInteger(8),
)

# The CDB layout of each operation code the disk decodes (REPORT SUPPORTED OPERATION CODES derives its CDB
# usage data from these).
CDB_LAYOUTS = {
    Op.TEST_UNIT_READY: TEST_UNIT_READY,
    Op.FORMAT_UNIT: FORMAT_UNIT,
    Op.RESERVE_6: RESERVE_RELEASE_6,
    Op.RELEASE_6: RESERVE_RELEASE_6,
    Op.START_STOP_UNIT: START_STOP_UNIT,
    Op.PREVENT_ALLOW_MEDIUM_REMOVAL: PREVENT_ALLOW_MEDIUM_REMOVAL,
    Op.SEEK_10: SEEK_10,
    Op.RESERVE_10: RESERVE_RELEASE_10,
    Op.RELEASE_10: RESERVE_RELEASE_10,
    Op.REQUEST_SENSE: REQUEST_SENSE,
    Op.READ_6: RW_6,
    Op.WRITE_6: RW_6,
    Op.INQUIRY: INQUIRY,
    Op.MODE_SELECT_6: MODE_SELECT_6,
    Op.MODE_SENSE_6: MODE_SENSE_6,
    Op.READ_CAPACITY_10: READ_CAPACITY_10,
    Op.READ_10: RW_10,
    Op.WRITE_10: RW_10,
    Op.WRITE_AND_VERIFY_10: VERIFY_10,
    Op.VERIFY_10: VERIFY_10,
    Op.SYNCHRONIZE_CACHE_10: SYNCHRONIZE_CACHE_10,
    Op.WRITE_SAME_10: WRITE_SAME_10,
    Op.UNMAP: UNMAP_CDB,
    Op.MODE_SELECT_10: MODE_SELECT_10,
    Op.MODE_SENSE_10: MODE_SENSE_10,
    Op.READ_16: RW_16,
    Op.WRITE_16: RW_16,
    Op.WRITE_AND_VERIFY_16: VERIFY_16,
    Op.VERIFY_16: VERIFY_16,
    Op.SYNCHRONIZE_CACHE_16: SYNCHRONIZE_CACHE_16,
    Op.WRITE_SAME_16: WRITE_SAME_16,
    Op.REPORT_LUNS: REPORT_LUNS,
    Op.MAINTENANCE_IN: REPORT_SUPPORTED_OPCODES,
    Op.READ_12: RW_12,
    Op.WRITE_12: RW_12,
    Op.WRITE_AND_VERIFY_12: VERIFY_12,
    Op.VERIFY_12: VERIFY_12,
}


def cdb_length(opcode: int) -> int | None:
    """The CDB length of an operation code's group (SPC-4; QEMU scsi_cdb_length): groups 0, 1/2, 4, 5
    are 6, 10, 16 and 12 bytes; groups 3 (variable length), 6 and 7 (vendor) are not decoded (None)."""
    return _CDB_LENGTHS.get(opcode >> 5)


_CDB_LENGTHS = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}


def cdb_usage(layout, opcode: int, service_action: int | None = None) -> bytes:
    """CDB USAGE DATA of REPORT SUPPORTED OPERATION CODES (SPC-4): the opcode (and service action), then
    every bit the device interprets set; reserved bits clear. Built from the layout itself, so it cannot
    disagree with what is decoded."""
    ones = {}
    for sub in layout.subcon.subcons:
        if sub.name is None or sub.name == "opcode":
            continue
        ones[sub.name] = (1 << sub.sizeof()) - 1      # a Flag is one bit: builds from 1 as from True
    ones["opcode"] = opcode
    if service_action is not None:
        ones["service_action"] = service_action
    return build(layout, ones)

