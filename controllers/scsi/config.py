"""The configuration of one emulated SCSI disk: every behaviour that differs between hypervisors, or between
QEMU's scsi-hd and SBC-3/SPC-4, is a field here; profiles (scenarios/profiles/scsi.py) are values of it.

Sizes that QEMU configures in bytes (qdev properties max_unmap_size, max_io_size, discard_granularity) stay in
bytes and are divided by the block size where a page reports them, as QEMU does. Facts: QEMU 7.2
hw/scsi/scsi-disk.c, hw/scsi/emulation.c (scsi_emulate_block_limits) and scsi/utils.c.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

INT_MAX = (1 << 31) - 1
GiB = 1 << 30

WriteSameMode = Literal["write", "discard-if-unmap"]
NdobMode = Literal["zero", "no-op", "ignored"]
UnmapLengthRules = Literal["reject", "truncate"]
VerifyBytchk = Literal["compare", "invalid-field", "no-compare"]
BlockDescriptor = Literal["short-lba", "general"]
AllocationRule = Literal["spc", "qemu"]
RequestSenseUa = Literal["parameter-data", "check-condition"]
ProtectCheck = Literal["all", "read-write"]
ModeDefaults = Literal["power-on", "current"]
UaClear = Literal["on-completion", "when-reported"]


@dataclass(frozen=True)
class ScsiDiskConfig:
    """What a SCSI disk reports and how it answers. Defaults are QEMU 7.2 scsi-hd's (scsi_hd_properties,
    scsi_realize); the profiles state every field with its source."""

    # Logical blocks and their size in bytes (READ CAPACITY; QEMU logical_block_size, 512 or 4096).
    capacity_blocks: int
    block_size: int = 512
    # Write protected: writes, UNMAP and WRITE SAME answer DATA PROTECT / WRITE PROTECTED, MODE SENSE sets WP.
    read_only: bool = False

    # -- identity (INQUIRY, VPD 80h/83h) --
    vendor: str = "QEMU"                 # 8 ASCII characters at most (QEMU "vendor" property)
    product: str = "QEMU HARDDISK"       # 16 at most (QEMU "product")
    revision: str = "2.5+"               # 4 at most (QEMU "ver", default qemu_hw_version())
    serial: str | None = None            # VPD 80h, listed in page 00h only when set (QEMU "serial", no default)
    device_id: str | None = "drive0"     # VPD 83h ASCII vendor-specific designator (QEMU: serial or drive name)
    wwn: int = 0                         # VPD 83h NAA designator; 0 = none (QEMU "wwn")
    scsi_version: int = 5                # INQUIRY VERSION; > 2 makes RDPROTECT/WRPROTECT checked (QEMU)
    command_queueing: bool = True        # INQUIRY CMDQUE (QEMU: the HBA's tcq, true for virtio-scsi)

    # -- caching and characteristics --
    write_cache: bool = True             # caching page WCE at power-on (QEMU: cache=writeback)
    dpofua: bool = False                 # MODE SENSE device-specific DPOFUA bit (QEMU "dpofua" property)
    rotation_rate: int = 0               # VPD B1h MEDIUM ROTATION RATE (QEMU "rotation_rate")
    physical_block_exp: int = 0          # READ CAPACITY(16) LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
    block_characteristics_vpd: bool = True   # VPD B1h exists (QEMU since 1.5)

    # -- logical block provisioning (READ CAPACITY(16), VPD B0h/B2h) --
    lbpme: bool = True                   # QEMU: discard_granularity != 0
    lbprz: bool = False                  # QEMU never sets it (scsi-disk.c READ CAPACITY(16))
    lbpu: bool = True                    # VPD B2h: UNMAP supported
    lbpws: bool = True                   # VPD B2h: WRITE SAME(16) with UNMAP supported
    lbpws10: bool = True                 # VPD B2h: WRITE SAME(10) with UNMAP supported
    provisioning_type: int = 2           # VPD B2h: 0 full, 1 resource, 2 thin
    discard_granularity: int = 4096      # bytes; VPD B0h OPTIMAL UNMAP GRANULARITY = this / block size
    unmap_granularity_alignment: int | None = None   # blocks; None = UGAVALID 0
    max_unmap_bytes: int = GiB           # VPD B0h MAXIMUM UNMAP LBA COUNT = this / block size
    max_unmap_descriptors: int = 255     # VPD B0h MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    max_io_bytes: int = INT_MAX          # VPD B0h MAXIMUM TRANSFER LENGTH = this / block size
    max_write_same_bytes: int = INT_MAX  # VPD B0h MAXIMUM WRITE SAME LENGTH = this / block size
    wsnz: bool = True                    # VPD B0h WSNZ: WRITE SAME with 0 blocks is refused (else "to the end")
    # Whether the advertised limits are enforced: UNMAP descriptor count and LBA count (INVALID FIELD IN
    # PARAMETER LIST), WRITE SAME length and transfer length (INVALID FIELD IN CDB). QEMU enforces none.
    enforce_limits: bool = False

    # -- which commands exist --
    # Opcodes QEMU's scsi-hd dispatches (MMC commands: GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, READ DISC
    # INFORMATION, READ DVD STRUCTURE, MECHANISM STATUS) and refuses for a disk with INVALID FIELD IN CDB; other
    # unknown opcodes are INVALID COMMAND OPERATION CODE.
    invalid_field_commands: tuple[int, ...] = (0x46, 0x4A, 0x51, 0xAD, 0xBD)
    read_toc: bool = True                # READ TOC (43h) answered with a one-track CD's TOC (QEMU); else INVALID OPCODE
    get_lba_status: bool = False         # SERVICE ACTION IN(16) 12h; QEMU: INVALID FIELD IN CDB
    synchronize_cache_16: bool = False   # 91h; QEMU: INVALID COMMAND OPERATION CODE
    report_supported_opcodes: bool = False   # MAINTENANCE IN 0Ch; QEMU: INVALID COMMAND OPERATION CODE

    # Commands that complete GOOD after only the checks QEMU makes (scsi_disk_emulate_command): START STOP UNIT
    # and PREVENT ALLOW MEDIUM REMOVAL on a fixed disk, SEEK(10) (LBA range), FORMAT UNIT (parameter data
    # ignored), RESERVE/RELEASE (6) and (10) (3rdPTY / LONGID bits refused). Others answer INVALID OPCODE.
    no_op_commands: tuple[int, ...] = (0x04, 0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57)

    # -- UNMAP --
    unmap_anchor_check: bool = True      # ANCHOR = 1 -> INVALID FIELD IN CDB (QEMU since 2.0)
    unmap_write_protect_check: bool = True   # read-only answered WRITE PROTECTED before any descriptor
    # "reject": QEMU's header checks, any inconsistency is PARAMETER LIST LENGTH ERROR; "truncate": SBC-3,
    # only a list of 1..7 bytes is, a descriptor length beyond the list or not a multiple of 16 is cut short.
    unmap_length_rules: UnmapLengthRules = "reject"
    # Every descriptor checked before the first discard (True), or QEMU's one at a time, earlier ones done.
    unmap_validate_first: bool = False

    # -- WRITE SAME --
    # "write": zero blocks go to write-zeroes (MAY_UNMAP with UNMAP), other data is written; "discard-if-unmap":
    # QEMU 1.4, only UNMAP = 1 is accepted and the range is discarded whatever the data.
    write_same: WriteSameMode = "write"
    # NDOB: "zero" (SBC-3 r35: no data-out, zeroes), "no-op" (QEMU 7.2 hw/scsi/scsi-bus.c scsi_req_xfer: transfer
    # length 0 completes the command GOOD before the handler runs; seen on 7.2.22), "ignored" (bit not decoded, one
    # block sent).
    write_same_ndob: NdobMode = "no-op"

    # -- VERIFY and SYNCHRONIZE CACHE --
    verify_range_check: bool = False     # QEMU 7.2: VERIFY is not range checked
    # BYTCHK != 0: "compare" (SBC: MISCOMPARE when different), "invalid-field" (QEMU 7.2), "no-compare" (the
    # data-out is taken and ignored).
    verify_bytchk: VerifyBytchk = "invalid-field"
    sync_cache_range_check: bool = False  # QEMU flushes everything and never looks at the range
    # Which commands check RDPROTECT/WRPROTECT/VRPROTECT: QEMU only READ/WRITE/WRITE AND VERIFY ("read-write"),
    # SBC every command with the field ("all": also VERIFY and WRITE SAME).
    protect_check: ProtectCheck = "read-write"

    # -- mode pages --
    mode_pages: tuple[int, ...] = (0x01, 0x04, 0x05, 0x08)   # QEMU mode_sense_page for TYPE_DISK
    mode_block_descriptor: BlockDescriptor = "general"       # QEMU: density code + 24-bit block count
    mode_subpage_check: bool = False     # a SUBPAGE CODE other than 0 -> INVALID FIELD IN CDB (QEMU ignores it)
    mode_default_values: ModeDefaults = "current"             # page control 2: QEMU answers current values
    # MODE SELECT block descriptor: QEMU switches to any non-zero BLOCK LENGTH with no bit outside this mask and
    # ignores every other length (0: every length is ignored); None (SBC): a length other than 0 or the current one
    # is INVALID FIELD IN PARAMETER LIST. Block size changes are not modelled: a length QEMU would switch to is
    # answered INVALID FIELD IN PARAMETER LIST as well (a departure, named in the profiles).
    mode_select_block_lengths: int | None = 0xFF00

    # -- sense and data-in lengths --
    power_on_unit_attention: bool = True     # first command after power on: UNIT ATTENTION 29h/00h
    # Commands a pending unit attention neither stops nor is cleared by: INQUIRY and REPORT LUNS (SPC-4), and in
    # QEMU also GET CONFIGURATION and GET EVENT STATUS NOTIFICATION (scsi_req_new). REQUEST SENSE has its own rule.
    unit_attention_exempt: tuple[int, ...] = (0x12, 0xA0, 0x46, 0x4A)
    request_sense_unit_attention: RequestSenseUa = "check-condition"
    # A pending unit attention and a command completed without reporting it (in emu: a CDB QEMU cannot parse, or
    # none at all): "on-completion" clears it anyway (QEMU up to 8.0, scsi_req_complete -> scsi_clear_unit_attention);
    # "when-reported" keeps it for the next command (QEMU 8.1+, SPC-4: only reporting clears it).
    unit_attention_clear: UaClear = "on-completion"
    # QEMU (9472083e64, 8.1, and Debian's 7.2.22): the request that will report a pending unit attention takes it
    # when it is made, so one the transport then refuses (virtio-scsi OVERRUN) loses it; SPC-4: a command that never
    # reaches the device server leaves it pending.
    unit_attention_taken_when_made: bool = True
    # "qemu": emulated commands return exactly ALLOCATION LENGTH bytes (zero padded), standard INQUIRY's
    # ADDITIONAL LENGTH follows it, REPORT LUNS is cut to a multiple of 8; "spc": min(allocation, available).
    allocation_rule: AllocationRule = "qemu"
    max_allocation_length: int | None = 65536   # larger -> INVALID FIELD IN CDB (QEMU); None = no limit

    def __post_init__(self) -> None:
        if self.block_size not in (512, 1024, 2048, 4096):
            raise ValueError(f"block_size {self.block_size} is not 512, 1024, 2048 or 4096")
        if not 0 <= self.capacity_blocks < 1 << 64:
            raise ValueError(f"capacity_blocks {self.capacity_blocks} does not fit 64 bits")
        for name, limit in (("vendor", 8), ("product", 16), ("revision", 4)):
            text = getattr(self, name)
            if len(text) > limit or not text.isascii():
                raise ValueError(f"{name} {text!r} must be at most {limit} ASCII characters")
        if self.serial is not None and (len(self.serial) > 36 or not self.serial.isascii()):
            raise ValueError(f"serial {self.serial!r} must be at most 36 ASCII characters")
        if self.device_id is not None and (len(self.device_id) > 247 or not self.device_id.isascii()):
            raise ValueError(f"device_id {self.device_id!r} must be at most 247 ASCII characters")
        if not 0 <= self.wwn < 1 << 64:
            raise ValueError(f"wwn {self.wwn:#x} does not fit 64 bits")
        if not 0 <= self.physical_block_exp <= 15 or not 0 <= self.rotation_rate <= 0xFFFF:
            raise ValueError("physical_block_exp must be 0..15 and rotation_rate 0..65535")
        if self.provisioning_type not in (0, 1, 2):
            raise ValueError(f"provisioning_type {self.provisioning_type} is not 0, 1 or 2")
        for name in ("discard_granularity", "max_unmap_bytes", "max_io_bytes", "max_write_same_bytes",
                     "max_unmap_descriptors"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_unmap_bytes // self.block_size >= 1 << 32 or self.max_io_bytes // self.block_size >= 1 << 32:
            raise ValueError("unmap and transfer limits must fit 32-bit block counts")
        if not set(self.mode_pages) <= {0x01, 0x04, 0x05, 0x08, 0x0A}:
            raise ValueError(f"mode_pages {self.mode_pages} names a page this disk cannot build")

    @property
    def max_unmap_blocks(self) -> int:
        return self.max_unmap_bytes // self.block_size

    @property
    def max_transfer_blocks(self) -> int:
        return self.max_io_bytes // self.block_size

    @property
    def max_write_same_blocks(self) -> int:
        return self.max_write_same_bytes // self.block_size

    @property
    def unmap_granularity_blocks(self) -> int:
        return self.discard_granularity // self.block_size
