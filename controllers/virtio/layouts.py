"""virtio layouts, defined once with construct, their constants, and struct codecs for the per-request records.

Sources (field names are the spec's):
- virtio 1.2 (OASIS virtio-v1.2-cs01): 2.1 device status, 2.7 split virtqueues (descriptor table, available and
  used rings, event index), 4.1.4.3 the PCI common configuration structure, 5.2 the block device (config space,
  request header, discard / write-zeroes segment, types and statuses), 5.6 the SCSI host device (config space,
  command request / response, control queue TMF and AN, event queue), 6 reserved feature bits.
- QEMU 8.2.1 `include/standard-headers/linux/virtio_ring.h`, `virtio_blk.h`, `virtio_scsi.h`, `virtio_pci.h` (the
  same numbers, as QEMU and Linux compile them); `hw/virtio/virtio-pci.c` for the BAR layout QEMU gives a modern
  function; `hw/block/virtio-blk-common.c` for the exposed config size; `hw/scsi/virtio-scsi.c` for the virtio-scsi
  config limits.

All integers are little-endian (virtio 1.x is always LE). The fast codecs at the end are plain `struct.Struct`s
with the same field order as their construct definitions; tests/controllers/virtio/test_virtio_layouts.py checks
them byte for byte. The device decodes descriptors and request headers with them, after checking the bytes lie
in guest RAM.
"""

from __future__ import annotations

import struct

from construct import Array, Bytes, Default, Int8ul, Int16ub, Int16ul, Int32ul, Int64ul, Padding, Struct

# ----------------------------------------------------------------------------------------------------------
# Device ids (virtio 1.2 section 5) and device status (2.1)
# ----------------------------------------------------------------------------------------------------------

VIRTIO_ID_BLOCK = 2
VIRTIO_ID_SCSI = 8

STATUS_ACKNOWLEDGE = 0x01           # the guest found the device
STATUS_DRIVER = 0x02                # the guest knows how to drive it
STATUS_DRIVER_OK = 0x04             # the driver is set up and ready
STATUS_FEATURES_OK = 0x08           # feature negotiation is complete
STATUS_NEEDS_RESET = 0x40           # the device hit an error it cannot recover from (QEMU virtio_error)
STATUS_FAILED = 0x80                # the driver gave up on the device

# ----------------------------------------------------------------------------------------------------------
# Feature bits: transport (virtio 1.2 section 6) and block device (5.2.3)
# ----------------------------------------------------------------------------------------------------------

F_NOTIFY_ON_EMPTY = 24              # legacy only
F_ANY_LAYOUT = 27                   # legacy only: implied by VERSION_1
F_INDIRECT_DESC = 28                # VIRTIO_RING_F_INDIRECT_DESC
F_EVENT_IDX = 29                    # VIRTIO_RING_F_EVENT_IDX: used_event / avail_event
F_VERSION_1 = 32
F_ACCESS_PLATFORM = 33
F_RING_PACKED = 34
F_IN_ORDER = 35
F_ORDER_PLATFORM = 36
F_SR_IOV = 37
F_NOTIFICATION_DATA = 38
F_RING_RESET = 40

BLK_F_BARRIER = 0                   # legacy
BLK_F_SIZE_MAX = 1
BLK_F_SEG_MAX = 2
BLK_F_GEOMETRY = 4
BLK_F_RO = 5
BLK_F_BLK_SIZE = 6
BLK_F_SCSI = 7                      # legacy
BLK_F_FLUSH = 9                     # legacy name WCE
BLK_F_TOPOLOGY = 10
BLK_F_CONFIG_WCE = 11
BLK_F_MQ = 12
BLK_F_DISCARD = 13
BLK_F_WRITE_ZEROES = 14
BLK_F_LIFETIME = 15
BLK_F_SECURE_ERASE = 16
BLK_F_ZONED = 17


def bit(n: int) -> int:
    """The feature mask of bit `n`."""
    return 1 << n


# ----------------------------------------------------------------------------------------------------------
# Split virtqueue (virtio 1.2 section 2.7; virtio_ring.h)
# ----------------------------------------------------------------------------------------------------------

VIRTQ_DESC_F_NEXT = 1               # the buffer continues at `next`
VIRTQ_DESC_F_WRITE = 2              # device-writable (else device-readable)
VIRTQ_DESC_F_INDIRECT = 4           # `addr`/`len` is a table of descriptors
VIRTQ_AVAIL_F_NO_INTERRUPT = 1      # driver: do not interrupt me (ignored with EVENT_IDX)
VIRTQ_USED_F_NO_NOTIFY = 1          # device: do not kick me (ignored with EVENT_IDX)

VIRTQUEUE_MAX_SIZE = 1024           # QEMU's VIRTQUEUE_MAX_SIZE: largest queue and most buffers per element
VIRTQ_SPEC_MAX_SIZE = 32768         # virtio 1.2 2.7: a split queue holds at most 32768 entries
DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN = 16, 2, 4   # 2.7: alignment of the three parts

VIRTQ_DESC = Struct(
    "addr" / Int64ul,               # guest-physical address of the buffer
    "len" / Int32ul,
    "flags" / Default(Int16ul, 0),
    "next" / Default(Int16ul, 0),   # the next descriptor's index when NEXT is set
)
VIRTQ_DESC_SIZE = 16

VIRTQ_USED_ELEM = Struct(
    "id" / Int32ul,                 # head index of the chain
    "len" / Int32ul,                # bytes the device wrote into its writable buffers
)
VIRTQ_USED_ELEM_SIZE = 8


def virtq_avail(size: int) -> Struct:
    """The driver area (available ring) of a queue of `size` entries; used_event is meaningful with EVENT_IDX."""
    return Struct(
        "flags" / Default(Int16ul, 0),
        "idx" / Int16ul,            # free-running: where the driver puts the next entry (mod size)
        "ring" / Array(size, Int16ul),
        "used_event" / Default(Int16ul, 0),
    )


def virtq_used(size: int) -> Struct:
    """The device area (used ring) of a queue of `size` entries; avail_event is meaningful with EVENT_IDX."""
    return Struct(
        "flags" / Default(Int16ul, 0),
        "idx" / Int16ul,
        "ring" / Array(size, VIRTQ_USED_ELEM),
        "avail_event" / Default(Int16ul, 0),
    )


def avail_ring_size(size: int) -> int:
    """Bytes of the driver area with the used_event word: 6 + 2 * size."""
    return 6 + 2 * size


def used_ring_size(size: int) -> int:
    """Bytes of the device area with the avail_event word: 6 + 8 * size."""
    return 6 + 8 * size


AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING = 0, 2, 4
USED_FLAGS, USED_IDX, USED_RING = 0, 2, 4


def used_event_offset(size: int) -> int:
    return AVAIL_RING + 2 * size


def avail_event_offset(size: int) -> int:
    return USED_RING + VIRTQ_USED_ELEM_SIZE * size


def vring_need_event(event: int, new: int, old: int) -> bool:
    """virtio 1.2 2.7.10 / virtio_ring.h vring_need_event: did `event` fall in the half-open window (old, new]?
    All three are free-running 16-bit indices."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


# ----------------------------------------------------------------------------------------------------------
# virtio-pci modern (virtio 1.2 section 4.1.4), as QEMU lays out the BAR (hw/virtio/virtio-pci.c
# virtio_pci_realize: common/isr/device/notify regions of 0x1000 each, in that order)
# ----------------------------------------------------------------------------------------------------------

PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1AF4
PCI_DEVICE_ID_MODERN_BASE = 0x1040          # 4.1.2.1: device id = 0x1040 + virtio device id

PCI_COMMON_CFG_OFFSET = 0x0000
PCI_ISR_OFFSET = 0x1000
PCI_DEVICE_CFG_OFFSET = 0x2000
PCI_NOTIFY_OFFSET = 0x3000
PCI_REGION_SIZE = 0x1000
PCI_BAR_SIZE = 0x4000
PCI_NOTIFY_OFF_MULTIPLIER = 4               # QEMU virtio_pci_queue_mem_mult without page-per-vq
PCI_ISR_QUEUE = 0x1                         # ISR bit 0: a used buffer notification
PCI_ISR_CONFIG = 0x2                        # ISR bit 1: a configuration change
VIRTIO_MSI_NO_VECTOR = 0xFFFF

# 4.1.4.3 struct virtio_pci_common_cfg, through queue_reset (queue_notify_data reads 0: NOTIFICATION_DATA is not
# offered).
VIRTIO_PCI_COMMON_CFG = Struct(
    "device_feature_select" / Int32ul,
    "device_feature" / Int32ul,
    "driver_feature_select" / Int32ul,
    "driver_feature" / Int32ul,
    "config_msix_vector" / Int16ul,
    "num_queues" / Int16ul,
    "device_status" / Int8ul,
    "config_generation" / Int8ul,
    "queue_select" / Int16ul,
    "queue_size" / Int16ul,
    "queue_msix_vector" / Int16ul,
    "queue_enable" / Int16ul,
    "queue_notify_off" / Int16ul,
    "queue_desc" / Int64ul,
    "queue_driver" / Int64ul,
    "queue_device" / Int64ul,
    "queue_notify_data" / Int16ul,
    "queue_reset" / Int16ul,
)


def _field_offsets(layout: Struct) -> dict[str, tuple[int, int]]:
    """{name: (offset, size)} of a fixed-size construct Struct, read from the one definition."""
    out, offset = {}, 0
    for sub in layout.subcons:
        size = sub.sizeof()
        if sub.name:
            out[sub.name] = (offset, size)
        offset += size
    return out


COMMON_CFG_FIELDS = _field_offsets(VIRTIO_PCI_COMMON_CFG)   # {name: (offset, size)}
COMMON_CFG_SIZE = VIRTIO_PCI_COMMON_CFG.sizeof()            # 0x3C


def common_cfg_offset(name: str) -> int:
    """BAR offset of a common configuration field (the common structure sits at offset 0)."""
    return PCI_COMMON_CFG_OFFSET + COMMON_CFG_FIELDS[name][0]


# ----------------------------------------------------------------------------------------------------------
# virtio-blk (virtio 1.2 section 5.2; virtio_blk.h)
# ----------------------------------------------------------------------------------------------------------

SECTOR_SIZE = 512                   # virtio-blk sectors are 512 bytes whatever blk_size says

BLK_T_IN = 0
BLK_T_OUT = 1
BLK_T_SCSI_CMD = 2                  # legacy
BLK_T_FLUSH = 4
BLK_T_GET_ID = 8
BLK_T_GET_LIFETIME = 10
BLK_T_DISCARD = 11
BLK_T_WRITE_ZEROES = 13
BLK_T_SECURE_ERASE = 14
BLK_T_ZONE_REPORT = 16              # zoned devices only (VIRTIO_BLK_F_ZONED, never offered here)
BLK_ZONE_REPORT_MIN_IN = 1 + 64 + 64    # status byte + struct virtio_blk_zone_report + one zone descriptor
BLK_T_BARRIER = 0x80000000          # legacy flag bit of `type`

BLK_S_OK = 0
BLK_S_IOERR = 1
BLK_S_UNSUPP = 2

BLK_WRITE_ZEROES_FLAG_UNMAP = 1     # segment flags bit 0; bits 31:1 reserved
BLK_ID_BYTES = 20                   # GET_ID: a NUL-padded string, no NUL when exactly 20 bytes

# 5.2.4 struct virtio_blk_config: 96 bytes (zoned fields included). QEMU exposes a prefix whose length depends
# on the offered features (virtio-blk-common.c virtio_blk_cfg_size_params).
VIRTIO_BLK_CONFIG = Struct(
    "capacity" / Int64ul,                       # in 512-byte sectors
    "size_max" / Default(Int32ul, 0),
    "seg_max" / Default(Int32ul, 0),
    "cylinders" / Default(Int16ul, 0),          # geometry
    "heads" / Default(Int8ul, 0),
    "sectors" / Default(Int8ul, 0),
    "blk_size" / Default(Int32ul, 512),
    "physical_block_exp" / Default(Int8ul, 0),  # topology
    "alignment_offset" / Default(Int8ul, 0),
    "min_io_size" / Default(Int16ul, 0),
    "opt_io_size" / Default(Int32ul, 0),
    "writeback" / Default(Int8ul, 0),
    Padding(1),
    "num_queues" / Default(Int16ul, 1),
    "max_discard_sectors" / Default(Int32ul, 0),
    "max_discard_seg" / Default(Int32ul, 0),
    "discard_sector_alignment" / Default(Int32ul, 0),
    "max_write_zeroes_sectors" / Default(Int32ul, 0),
    "max_write_zeroes_seg" / Default(Int32ul, 0),
    "write_zeroes_may_unmap" / Default(Int8ul, 0),
    Padding(3),
    "max_secure_erase_sectors" / Default(Int32ul, 0),
    "max_secure_erase_seg" / Default(Int32ul, 0),
    "secure_erase_sector_alignment" / Default(Int32ul, 0),
    "zone_sectors" / Default(Int32ul, 0),       # zoned characteristics
    "max_open_zones" / Default(Int32ul, 0),
    "max_active_zones" / Default(Int32ul, 0),
    "max_append_sectors" / Default(Int32ul, 0),
    "write_granularity" / Default(Int32ul, 0),
    "zoned_model" / Default(Int8ul, 0),
    Padding(3),
)
BLK_CONFIG_FIELDS = _field_offsets(VIRTIO_BLK_CONFIG)
BLK_CONFIG_SIZE = VIRTIO_BLK_CONFIG.sizeof()    # 96

# Exposed config length by feature, QEMU virtio-blk-common.c: the base reaches num_queues; each feature extends
# the window to the end of its last field.
BLK_CONFIG_SIZE_BASE = BLK_CONFIG_FIELDS["max_discard_sectors"][0]                       # 36
BLK_CONFIG_SIZE_DISCARD = BLK_CONFIG_FIELDS["max_write_zeroes_sectors"][0]               # 48
BLK_CONFIG_SIZE_WRITE_ZEROES = sum(BLK_CONFIG_FIELDS["write_zeroes_may_unmap"])          # 57

# 5.2.6 request header: type, reserved (Linux: ioprio), sector.
VIRTIO_BLK_OUTHDR = Struct(
    "type" / Int32ul,
    "ioprio" / Default(Int32ul, 0),
    "sector" / Default(Int64ul, 0),
)
BLK_OUTHDR_SIZE = 16

# 5.2.6 struct virtio_blk_discard_write_zeroes: one segment of a DISCARD / WRITE_ZEROES payload.
VIRTIO_BLK_SEGMENT = Struct(
    "sector" / Int64ul,
    "num_sectors" / Int32ul,
    "flags" / Default(Int32ul, 0),
)
BLK_SEGMENT_SIZE = 16

GET_ID_PAGE = Bytes(BLK_ID_BYTES)

# ----------------------------------------------------------------------------------------------------------
# virtio-scsi (virtio 1.2 section 5.6; virtio_scsi.h)
# ----------------------------------------------------------------------------------------------------------

SCSI_F_INOUT = 0                    # one request may carry data-out and data-in
SCSI_F_HOTPLUG = 1
SCSI_F_CHANGE = 2                   # PARAM_CHANGE events
SCSI_F_T10_PI = 3

SCSI_CONTROLQ, SCSI_EVENTQ, SCSI_REQUESTQ = 0, 1, 2     # queue 2 and up are request queues
SCSI_CDB_DEFAULT_SIZE = 32          # config cdb_size after reset (5.6.4)
SCSI_SENSE_DEFAULT_SIZE = 96        # config sense_size after reset
SCSI_CDB_SIZE_LIMIT = 256           # QEMU virtio_scsi_set_config: cdb_size >= 256 is virtio_error
SCSI_SENSE_SIZE_LIMIT = 65536       # ... and sense_size >= 65536

# Response codes (5.6.6.1 request queues; 5.6.6.2 control queue)
SCSI_S_OK = 0                       # also FUNCTION COMPLETE for a TMF
SCSI_S_OVERRUN = 1
SCSI_S_ABORTED = 2
SCSI_S_BAD_TARGET = 3
SCSI_S_RESET = 4
SCSI_S_BUSY = 5
SCSI_S_TRANSPORT_FAILURE = 6
SCSI_S_TARGET_FAILURE = 7
SCSI_S_NEXUS_FAILURE = 8
SCSI_S_FAILURE = 9
SCSI_S_FUNCTION_SUCCEEDED = 10
SCSI_S_FUNCTION_REJECTED = 11
SCSI_S_INCORRECT_LUN = 12

SCSI_S_SIMPLE, SCSI_S_ORDERED, SCSI_S_HEAD, SCSI_S_ACA = 0, 1, 2, 3   # task_attr

# Control queue request types and TMF subtypes (5.6.6.2)
SCSI_T_TMF = 0
SCSI_T_AN_QUERY = 1
SCSI_T_AN_SUBSCRIBE = 2
SCSI_T_TMF_ABORT_TASK = 0
SCSI_T_TMF_ABORT_TASK_SET = 1
SCSI_T_TMF_CLEAR_ACA = 2
SCSI_T_TMF_CLEAR_TASK_SET = 3
SCSI_T_TMF_I_T_NEXUS_RESET = 4
SCSI_T_TMF_LOGICAL_UNIT_RESET = 5
SCSI_T_TMF_QUERY_TASK = 6
SCSI_T_TMF_QUERY_TASK_SET = 7

# Events (5.6.6.3)
SCSI_T_NO_EVENT = 0
SCSI_T_TRANSPORT_RESET = 1
SCSI_T_ASYNC_NOTIFY = 2
SCSI_T_PARAM_CHANGE = 3
SCSI_T_EVENTS_MISSED = 0x80000000
SCSI_EVT_RESET_HARD, SCSI_EVT_RESET_RESCAN, SCSI_EVT_RESET_REMOVED = 0, 1, 2

# 5.6.4 struct virtio_scsi_config: 36 bytes, every field always present.
VIRTIO_SCSI_CONFIG = Struct(
    "num_queues" / Int32ul,                     # request queues
    "seg_max" / Int32ul,
    "max_sectors" / Int32ul,
    "cmd_per_lun" / Int32ul,
    "event_info_size" / Int32ul,
    "sense_size" / Int32ul,                     # driver-writable
    "cdb_size" / Int32ul,                       # driver-writable
    "max_channel" / Int16ul,
    "max_target" / Int16ul,
    "max_lun" / Int32ul,
)
SCSI_CONFIG_FIELDS = _field_offsets(VIRTIO_SCSI_CONFIG)
SCSI_CONFIG_SIZE = VIRTIO_SCSI_CONFIG.sizeof()  # 36

# 5.6.6.1 the 8-byte LUN field of every request: 1, the target, a single-level LUN (SAM-5 4.7.x: its top two bits
# are the address method, 00b peripheral or 01b flat, the low fourteen the LUN), four zero bytes.
VIRTIO_SCSI_LUN = Struct(
    "first" / Int8ul,
    "target" / Int8ul,
    "single_level" / Int16ub,
    "rest" / Bytes(4),
)
LUN_METHOD_SHIFT = 14
LUN_PERIPHERAL, LUN_FLAT = 0, 1
LUN_MAX = (1 << LUN_METHOD_SHIFT) - 1

# 5.6.6.1 struct virtio_scsi_req_cmd without T10_PI: this header, then cdb[cdb_size] (device-readable) ...
VIRTIO_SCSI_CMD_REQ = Struct(
    "lun" / Bytes(8),                           # 1, target, single-level LUN (2 bytes), 4 zero bytes
    "id" / Int64ul,                             # the tag
    "task_attr" / Default(Int8ul, SCSI_S_SIMPLE),
    "prio" / Default(Int8ul, 0),
    "crn" / Default(Int8ul, 0),
)
SCSI_CMD_REQ_SIZE = 19

# ... and this response header, then sense[sense_size] (device-writable).
VIRTIO_SCSI_CMD_RESP = Struct(
    "sense_len" / Int32ul,
    "resid" / Int32ul,
    "status_qualifier" / Default(Int16ul, 0),
    "status" / Int8ul,                          # SAM status, meaningful with response OK
    "response" / Int8ul,
)
SCSI_CMD_RESP_SIZE = 12

# 5.6.6.2 struct virtio_scsi_ctrl_tmf: readable part, then a 1-byte response.
VIRTIO_SCSI_CTRL_TMF_REQ = Struct(
    "type" / Int32ul,
    "subtype" / Int32ul,
    "lun" / Bytes(8),
    "id" / Int64ul,
)
SCSI_TMF_REQ_SIZE, SCSI_TMF_RESP_SIZE = 24, 1

# 5.6.6.2 struct virtio_scsi_ctrl_an (query and subscribe).
VIRTIO_SCSI_CTRL_AN_REQ = Struct(
    "type" / Int32ul,
    "lun" / Bytes(8),
    "event_requested" / Int32ul,
)
VIRTIO_SCSI_CTRL_AN_RESP = Struct(
    "event_actual" / Int32ul,
    "response" / Int8ul,
)
SCSI_AN_REQ_SIZE, SCSI_AN_RESP_SIZE = 16, 5

# 5.6.6.3 struct virtio_scsi_event: 16 device-writable bytes.
VIRTIO_SCSI_EVENT = Struct(
    "event" / Int32ul,
    "lun" / Bytes(8),
    "reason" / Int32ul,                         # PARAM_CHANGE: ASC | ASCQ << 8
)
SCSI_EVENT_SIZE = 16

# ----------------------------------------------------------------------------------------------------------
# Fast codecs: same field order as the construct definitions above
# ----------------------------------------------------------------------------------------------------------

DESC_FAST = struct.Struct("<QIHH")            # addr, len, flags, next
USED_ELEM_FAST = struct.Struct("<II")         # id, len
BLK_OUTHDR_FAST = struct.Struct("<IIQ")       # type, ioprio, sector
BLK_SEGMENT_FAST = struct.Struct("<QII")      # sector, num_sectors, flags
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
SCSI_LUN_FAST = struct.Struct(">BBH4s")         # first, target, single-level LUN, rest
SCSI_CMD_REQ_FAST = struct.Struct("<8sQBBB")  # lun, id, task_attr, prio, crn (the CDB follows)
SCSI_CMD_RESP_FAST = struct.Struct("<IIHBB")  # sense_len, resid, status_qualifier, status, response (sense follows)
SCSI_TMF_REQ_FAST = struct.Struct("<II8sQ")   # type, subtype, lun, id
SCSI_AN_REQ_FAST = struct.Struct("<I8sI")     # type, lun, event_requested
SCSI_AN_RESP_FAST = struct.Struct("<IB")      # event_actual, response
SCSI_EVENT_FAST = struct.Struct("<I8sI")      # event, lun, reason
SCSI_CONFIG_FAST = struct.Struct("<7I2HI")    # VIRTIO_SCSI_CONFIG: read whole on every config access
# VIRTIO_BLK_CONFIG, also read whole on every config access: its fields in BLK_CONFIG_FIELDS order, each one not
# given taking the definition's Default (blk_size 512, num_queues 1, the rest 0)
BLK_CONFIG_FAST = struct.Struct("<QIIHBBIBBHIBxHIIIIIBxxxIIIIIIIIBxxx")
BLK_CONFIG_DEFAULTS = {sub.name: sub.subcon.value if isinstance(sub.subcon, Default) else 0
                       for sub in VIRTIO_BLK_CONFIG.subcons if sub.name}
