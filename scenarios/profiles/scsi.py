"""Named SCSI disk profiles: every `ScsiDiskConfig` value a profile sets, with the source it was read from.

As for ATA (issue 5): behaviour that differs between QEMU releases, or between QEMU's scsi-hd and the standard,
is a field of the disk's configuration; a profile is those values plus their sources. QEMU facts were read from
the upstream tree at the release commits (7.2.0 = b67b00e6b4, 8.2.1 = f48c205fb4, 1.4.0 = 03e94e39ce:
hw/scsi/scsi-disk.c and hw/scsi/scsi-bus.c in 7.2 and 8.2, hw/scsi-disk.c and hw/scsi-bus.c in 1.4) and
../shared/research/controllers.md sections 5, 8.4, 8.5 and 9; standard facts name the SBC-3 (T10 BSR INCITS 514
r35) or SPC-4 (r37) command or page they rest on, and a value the standard leaves open says it is a choice.
"""

from __future__ import annotations

from controllers.scsi.config import GiB, INT_MAX, ScsiDiskConfig
from scenarios.profiles.facts import FROM_DRIVE, Fact, check_facts, config_from_facts, lookup

# Fields the creator of the disk gives: the image's size, the logical block size, the drive's read-only flag.
GIVEN = ("capacity_blocks", "block_size", "read_only")

Q72 = "QEMU 7.2.0 (b67b00e6b4)"
Q14 = "QEMU 1.4.0 (03e94e39ce)"
SD72 = f"{Q72} hw/scsi/scsi-disk.c"
SD14 = f"{Q14} hw/scsi-disk.c"
SBC3 = "SBC-3 r35"
SPC4 = "SPC-4 r37"

# -- qemu-7.2 --------------------------------------------------------------------------------------------

_QEMU_72 = {
    "vendor": Fact("QEMU", f"{SD72} scsi_realize: vendor defaults to \"QEMU\""),
    "product": Fact("QEMU HARDDISK", f"{SD72} scsi_hd_realize: product defaults to \"QEMU HARDDISK\""),
    "revision": Fact("2.5+", f"{SD72} scsi_realize: version = qemu_hw_version() (\"2.5+\" for machine types "
                             "after 2.4)"),
    "serial": Fact(None, f"{SD72} scsi_hd_properties: \"serial\" has no default, so VPD 80h is not listed"),
    "device_id": Fact("drive0", f"{SD72} scsi_realize: device_id = serial, else blk_name() (the -drive id; "
                                "\"drive0\" is emu's drive name)"),
    "wwn": Fact(0, f"{SD72} scsi_hd_properties: wwn default 0 -> no NAA designator in VPD 83h"),
    "scsi_version": Fact(5, f"{SD72} scsi_hd_properties: scsi_version default 5 (SPC-3)"),
    "command_queueing": Fact(True, f"{Q72} hw/scsi/virtio-scsi.c virtio_scsi_scsi_info.tcq = true -> INQUIRY "
                                   "byte 7 = 0x12"),
    "write_cache": Fact(True, f"{SD72} mode_sense_page: WCE = blk_enable_write_cache (cache=writeback default)"),
    "dpofua": Fact(False, f"{SD72} scsi_hd_properties: dpofua default false"),
    "rotation_rate": Fact(0, f"{SD72} scsi_hd_properties: rotation_rate default 0"),
    "physical_block_exp": Fact(0, f"{SD72} READ CAPACITY(16) byte 13 = get_physical_block_exp (512/512)"),
    "block_characteristics_vpd": Fact(True, f"{SD72} scsi_disk_emulate_vpd_page: B1h listed for TYPE_DISK"),
    "lbpme": Fact(True, f"{SD72} SAI_READ_CAPACITY_16: byte 14 = 0x80 when discard_granularity != 0 (scsi_realize "
                        "sets -1 to max(block, 4 KiB))"),
    "lbprz": Fact(False, f"{SD72}: LBPRZ is never set (controllers.md 5.2, 9.1)"),
    "lbpu": Fact(True, f"{SD72} VPD B2h byte 5 = 0xE0, even when discard is disabled (controllers.md 5.2)"),
    "lbpws": Fact(True, f"{SD72} VPD B2h byte 5 = 0xE0"),
    "lbpws10": Fact(True, f"{SD72} VPD B2h byte 5 = 0xE0"),
    "provisioning_type": Fact(2, f"{SD72} VPD B2h byte 6 = 2 (thin) when discard_granularity != 0"),
    "discard_granularity": Fact(4096, f"{SD72} scsi_realize: discard_granularity -1 -> MAX(logical block, "
                                      "DEFAULT_DISCARD_GRANULARITY 4 KiB); VPD B0h reports it / block size"),
    "unmap_granularity_alignment": Fact(None, f"{Q72} hw/scsi/emulation.c scsi_emulate_block_limits: "
                                              "\"alignment is zero\", UGAVALID 0"),
    "max_unmap_bytes": Fact(GiB, f"{SD72} DEFAULT_MAX_UNMAP_SIZE 1 GiB -> MAXIMUM UNMAP LBA COUNT 2097152 at "
                                 "512-byte blocks, above libiscsi's 1048576 bound (controllers.md 9.7)"),
    "max_unmap_descriptors": Fact(255, f"{SD72} scsi_disk_emulate_vpd_page: max_unmap_descr = 255"),
    "max_io_bytes": Fact(INT_MAX, f"{SD72} DEFAULT_MAX_IO_SIZE INT_MAX (with blk_get_max_transfer, also INT_MAX "
                                  "rounded to the request alignment) -> MAXIMUM TRANSFER LENGTH"),
    "max_write_same_bytes": Fact(INT_MAX, f"{Q72} hw/scsi/emulation.c: MAXIMUM WRITE SAME LENGTH = the maximum "
                                          "transfer length"),
    "wsnz": Fact(True, f"{SD72} bl.wsnz = 1; scsi_disk_emulate_write_same refuses 0 blocks"),
    "enforce_limits": Fact(False, f"{SD72} scsi_disk_emulate_unmap / _write_same / dma_command check neither "
                                  "descriptor count, LBA count, write same length nor transfer length "
                                  "(controllers.md 9.4)"),
    "get_lba_status": Fact(False, f"{SD72} SERVICE_ACTION_IN_16: only SAI_READ_CAPACITY_16, else INVALID FIELD"),
    "synchronize_cache_16": Fact(False, f"{SD72} scsi_disk_reqops_dispatch has no SYNCHRONIZE_CACHE_16: "
                                        "INVALID OPCODE (controllers.md 5.1, 9.8)"),
    "report_supported_opcodes": Fact(False, f"{SD72}: MAINTENANCE IN is not dispatched -> INVALID OPCODE"),
    "unmap_anchor_check": Fact(True, f"{SD72} scsi_disk_emulate_unmap: ANCHOR = 1 -> INVALID FIELD"),
    "unmap_write_protect_check": Fact(True, f"{SD72} scsi_disk_emulate_unmap: !blk_is_writable -> "
                                            "WRITE PROTECTED before any descriptor"),
    "unmap_length_rules": Fact("reject", f"{SD72} scsi_disk_emulate_unmap: len < 8, < data length + 2, < "
                                         "descriptor length + 8 or descriptor length % 16 -> INVALID_PARAM_LEN"),
    "unmap_validate_first": Fact(False, f"{SD72} scsi_unmap_complete_noio: one descriptor at a time, an "
                                        "out-of-range one stops after the earlier ones were discarded"),
    "write_same": Fact("write", f"{SD72} scsi_disk_emulate_write_same: zero block or NDOB -> "
                                "blk_aio_pwrite_zeroes (MAY_UNMAP iff UNMAP), else the block written repeatedly"),
    "write_same_ndob": Fact("no-op", f"{Q72} hw/scsi/scsi-bus.c scsi_req_xfer: NDOB -> xfer 0, and "
                                     "scsi_disk_emulate_command completes a 0-byte request GOOD before the "
                                     "handler runs; observed on 7.2.22 (controllers.md 9.13)"),
    "verify_range_check": Fact(False, f"{SD72} scsi_disk_emulate_command VERIFY: no LBA check (controllers.md "
                                      "5.1, 9.8)"),
    "verify_bytchk": Fact("invalid-field", f"{SD72} scsi_disk_emulate_command VERIFY: buf[1] & 6 -> "
                                           "INVALID FIELD"),
    "sync_cache_range_check": Fact(False, f"{SD72} SYNCHRONIZE_CACHE: blk_aio_flush, the range is not read"),
    "protect_check": Fact("read-write", f"{SD72} scsi_disk_dma_command checks RD/WRPROTECT when scsi_version > "
                                        "2; the emulated VERIFY and WRITE SAME do not"),
    "mode_pages": Fact((0x01, 0x04, 0x05, 0x08), f"{SD72} mode_sense_page: mode_sense_valid for TYPE_DISK "
                                                 "(00h only with an Apple quirk; no control page)"),
    "mode_block_descriptor": Fact("general", f"{SD72} scsi_disk_emulate_mode_sense: density code 0, 24-bit "
                                             "block count (0 above 0xFFFFFF), block length"),
    "mode_subpage_check": Fact(False, f"{SD72} scsi_disk_emulate_mode_sense never reads the SUBPAGE CODE"),
    "mode_default_values": Fact("current", f"{SD72} mode_sense_page distinguishes only page control 1 "
                                           "(changeable); default values are the current ones"),
    "power_on_unit_attention": Fact(True, f"{SD72} scsi_disk_reset -> scsi_device_purge_requests(RESET) -> "
                                          "UNIT ATTENTION 29h/00h (virtio-scsi qtest, controllers.md 8.4)"),
    "request_sense_unit_attention": Fact("check-condition", f"{Q72} hw/scsi/scsi-bus.c scsi_req_new: REQUEST "
                                                            "SENSE with an unreported unit attention gets "
                                                            "reqops_unit_attention"),
    "invalid_field_commands": Fact((0x46, 0x4A, 0x51, 0xAD, 0xBD),
                                   f"{SD72} scsi_disk_reqops_dispatch sends GET CONFIGURATION, GET EVENT STATUS "
                                   "NOTIFICATION, READ DISC INFORMATION, READ DVD STRUCTURE and MECHANISM STATUS to "
                                   "scsi_disk_emulate_command, whose helpers return -1 unless the type is ROM: "
                                   "illegal_request, INVALID FIELD. Departure: READ TOC (43h), which QEMU answers "
                                   "with a CD table of contents even for a disk, is INVALID OPCODE here"),
    "unit_attention_exempt": Fact((0x12, 0xA0, 0x46, 0x4A), f"{Q72} hw/scsi/scsi-bus.c scsi_req_new: INQUIRY, "
                                                           "REPORT LUNS, GET CONFIGURATION and GET EVENT STATUS "
                                                           "NOTIFICATION are not stopped by a unit attention"),
    "unit_attention_clear": Fact("on-completion", f"{Q72} hw/scsi/scsi-bus.c scsi_req_complete -> "
                                                  "scsi_clear_unit_attention: every request but INQUIRY, GET "
                                                  "CONFIGURATION and GET EVENT STATUS NOTIFICATION clears the pending "
                                                  "unit attention, reported or not (a CDB scsi_req_parse_cdb refuses "
                                                  "becomes reqops_invalid_opcode and still clears it)"),
    "mode_select_block_lengths": Fact(0xFF00, f"{SD72} scsi_disk_emulate_mode_select: a BLOCK LENGTH with bs && "
                                              "!(bs & ~0xff00) becomes qdev.blocksize, any other is ignored; emu "
                                              "refuses a change instead (block size changes are not modelled)"),
    "allocation_rule": Fact("qemu", f"{SD72} scsi_disk_emulate_command: iov_len = MIN(buflen, xfer) of a zeroed "
                                    "buffer; scsi_disk_emulate_inquiry additional length = len - 5; "
                                    "scsi-bus.c REPORT LUNS len = MIN(len, xfer & ~7)"),
    "max_allocation_length": Fact(65536, f"{SD72} scsi_disk_emulate_command: cmd.xfer > 65536 -> "
                                         "INVALID FIELD"),
    "no_op_commands": Fact((0x04, 0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57),
                           f"{SD72} scsi_disk_emulate_command: FORMAT UNIT, RESERVE/RELEASE (6) and (10) (refusing "
                           "bits 0 / 0-1 of byte 1), START STOP (scsi_disk_emulate_start_stop: nothing for a fixed "
                           "disk), ALLOW MEDIUM REMOVAL and SEEK(10) (LBA > max_lba -> LBA OUT OF RANGE) all "
                           "complete GOOD. Departure: a FORMAT UNIT with parameter data reaches "
                           "scsi_disk_emulate_write_data's default case, abort(), and kills QEMU 7.2 (fixed in 8.2 "
                           "by be2b619a17); emu answers GOOD"),
}

# -- qemu-1.4-pc -------------------------------------------------------------------------------------------

_QEMU_14 = dict(_QEMU_72)   # restated below where 1.4.0 differs; the rest is the same code in both
_QEMU_14.update({
    "no_op_commands": Fact((0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57),
                           f"{SD14} scsi_disk_emulate_command: RESERVE/RELEASE, START STOP, ALLOW MEDIUM REMOVAL and "
                           "SEEK(10) as in 7.2; no FORMAT UNIT case (INVALID OPCODE)"),
    "revision": Fact("1.4.", f"{SD14} scsi_initfn: version = qemu_get_version() \"1.4.0\"; "
                             "scsi_disk_emulate_inquiry copies MIN(4, strlen)"),
    "device_id": Fact("drive0", f"{SD14} VPD 83h: serial, else bdrv_get_device_name() (the -drive id)"),
    "block_characteristics_vpd": Fact(False, f"{SD14} scsi_disk_emulate_inquiry VPD 00h: 00h, (80h), 83h, B0h, "
                                             "B2h; no B1h"),
    "lbpme": Fact(False, f"{Q14} hw/block-common.h discard_granularity default 0 -> READ CAPACITY(16) byte 14 "
                         "= 0 (pc-*-1.4 keeps 0 in later QEMU: pc_compat_1_4)"),
    "provisioning_type": Fact(1, f"{SD14} VPD B2h byte 6 = discard_granularity ? 2 : 1"),
    "discard_granularity": Fact(0, f"{Q14} hw/block-common.h DEFINE_BLOCK_PROPERTIES: discard_granularity 0"),
    "max_unmap_bytes": Fact(0, f"{SD14} VPD B0h: only granularities are filled, MAXIMUM UNMAP LBA COUNT 0"),
    "max_unmap_descriptors": Fact(0, f"{SD14} VPD B0h: MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT 0"),
    "max_io_bytes": Fact(0, f"{SD14} VPD B0h: MAXIMUM TRANSFER LENGTH 0 (not reported)"),
    "max_write_same_bytes": Fact(0, f"{SD14} VPD B0h: MAXIMUM WRITE SAME LENGTH 0"),
    "wsnz": Fact(False, f"{SD14} VPD B0h byte 4 = 0; WRITE SAME of 0 blocks discards nothing and is GOOD"),
    "unmap_anchor_check": Fact(False, f"{SD14} scsi_disk_emulate_unmap: ANCHOR not looked at (added in 2.0)"),
    "unmap_write_protect_check": Fact(False, f"{SD14} scsi_disk_emulate_unmap: no write-protect check; a "
                                             "read-only drive fails in the block layer (bdrv_co_discard -EROFS)"),
    "write_same": Fact("discard-if-unmap", f"{SD14} scsi_disk_emulate_command WRITE_SAME_10/16: read-only, "
                                           "range, then \"only WRITE SAME with the unmap bit\" -> "
                                           "bdrv_aio_discard, the data-out block never fetched"),
    "write_same_ndob": Fact("ignored", f"{Q14} hw/scsi-bus.c scsi_req_xfer: WRITE SAME xfer = blocksize, NDOB "
                                       "not decoded (added in 2.12)"),
    "verify_range_check": Fact(True, f"{SD14} scsi_disk_dma_command VERIFY: check_lba_range -> LBA OUT OF "
                                     "RANGE"),
    "verify_bytchk": Fact("no-compare", f"{SD14} scsi_write_data: VERIFY completes without comparing"),
    "protect_check": Fact("all", f"{SD14} scsi_disk_dma_command: buf[1] & 0xe0 -> INVALID FIELD for READ, "
                                 "WRITE and VERIFY (WRITE SAME never looks)"),
    "invalid_field_commands": Fact((0x46, 0x4A, 0x51, 0xAD, 0xBD), f"{SD14} scsi_disk_reqops_dispatch and "
                                                                   "scsi_disk_emulate_command, as in 7.2"),
    "unit_attention_exempt": Fact((0x12, 0xA0, 0x46, 0x4A), f"{Q14} hw/scsi-bus.c scsi_req_new, as in 7.2"),
    "unit_attention_clear": Fact("on-completion", f"{Q14} hw/scsi-bus.c scsi_req_complete -> "
                                                  "scsi_clear_unit_attention, as in 7.2"),
    "mode_select_block_lengths": Fact(0, f"{SD14} scsi_disk_emulate_mode_select skips the block descriptor: "
                                         "every BLOCK LENGTH is ignored"),
})

# -- qemu-8.2 ----------------------------------------------------------------------------------------------

Q82 = "QEMU 8.2.1 (f48c205fb4)"
SD82 = f"{Q82} hw/scsi/scsi-disk.c"

_QEMU_82 = dict(_QEMU_72)   # hw/scsi/scsi-disk.c, scsi-bus.c, emulation.c: no other guest-visible change since 7.2.0
_QEMU_82.update({
    "unit_attention_clear": Fact("when-reported", f"{Q82} hw/scsi/scsi-bus.c scsi_fetch_unit_attention_sense: "
                                                  "the request that reports a unit attention takes it when made; "
                                                  "scsi_req_complete no longer clears one (9472083e64, ba947dab98, "
                                                  "2eb5599e8a, QEMU 8.1)"),
    "mode_select_block_lengths": Fact(0xFE00, f"{SD82} scsi_disk_emulate_mode_select: bs & ~0xfe00, lengths "
                                              "below 512 no longer accepted (7cfcc79b0a, CVE-2023-42467); emu "
                                              "refuses a change instead (block size changes are not modelled)"),
    "no_op_commands": Fact((0x04, 0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57),
                           f"{SD82} scsi_disk_emulate_command: FORMAT UNIT (with parameter data too: "
                           "scsi_disk_emulate_write_data completes it GOOD, be2b619a17), RESERVE/RELEASE (6) and (10), "
                           "START STOP, ALLOW MEDIUM REMOVAL and SEEK(10) as in 7.2"),
})

# -- strict ------------------------------------------------------------------------------------------------

_STRICT = dict(_QEMU_72)
_STRICT.update({
    "no_op_commands": Fact((0x04, 0x1B, 0x1E), f"{SBC3}: FORMAT UNIT, START STOP UNIT and PREVENT ALLOW MEDIUM "
                                               "REMOVAL are SBC commands (the last two change nothing on a fixed "
                                               "disk); SEEK(10) and RESERVE/RELEASE are obsolete (SBC-2, SPC-3; "
                                               "recalled, not checked against the text): INVALID OPCODE"),
    "vendor": Fact("QEMU", f"choice: {SPC4} T10 VENDOR IDENTIFICATION; kept as QEMU's"),
    "product": Fact("QEMU HARDDISK", "choice: vendor-assigned; kept as QEMU's"),
    "revision": Fact("2.5+", "choice: vendor-assigned; kept as QEMU 7.2's"),
    "serial": Fact("EMU00001", f"choice: {SPC4} Unit Serial Number page, listed in page 00h"),
    "device_id": Fact("drive0", "choice: kept as QEMU's vendor-specific designator"),
    "wwn": Fact(0x3000000000000001, f"{SPC4}: a logical unit reports a name designator (NAA); NAA 3h "
                                     "(locally assigned) is the choice"),
    "scsi_version": Fact(6, f"{SPC4}: VERSION 06h claims SPC-4"),
    "command_queueing": Fact(True, f"{SPC4}: CMDQUE 1 (full task management model)"),
    "write_cache": Fact(True, f"choice: {SBC3} caching page WCE at power-on is vendor-specific; on as QEMU"),
    "dpofua": Fact(True, f"{SBC3}: DPOFUA 1, the disk honours FUA (and ignores DPO, allowed)"),
    "rotation_rate": Fact(1, f"{SBC3}: 0001h non-rotating medium (an image file has no rotation)"),
    "block_characteristics_vpd": Fact(True, f"{SBC3} Block Device Characteristics page"),
    "lbpme": Fact(True, f"{SBC3}: LBPME 1, the disk implements logical block provisioning"),
    "lbprz": Fact(FROM_DRIVE, f"{SBC3}: LBPRZ 1 only when every unmapped block reads zeros on this drive "
                              "(read_zeroes_after_unmap from whoever creates the disk; None -> 0)"),
    "lbpu": Fact(True, f"{SBC3} VPD B2h: UNMAP implemented"),
    "lbpws": Fact(True, f"{SBC3}: WRITE SAME(16) with UNMAP implemented"),
    "lbpws10": Fact(True, f"{SBC3}: WRITE SAME(10) with UNMAP implemented"),
    "provisioning_type": Fact(2, f"{SBC3} (r35 PROVISIONING TYPE): thin provisioned, as a sparse image is"),
    "discard_granularity": Fact(4096, "choice: OPTIMAL UNMAP GRANULARITY 4 KiB, as QEMU"),
    "unmap_granularity_alignment": Fact(0, f"{SBC3}: UGAVALID 1 with alignment 0 (granules start at LBA 0)"),
    "max_unmap_bytes": Fact(512 << 20, "choice: 512 MiB, MAXIMUM UNMAP LBA COUNT 1048576 at 512-byte blocks, "
                                       "within libiscsi test_inquiry_block_limits' bound (controllers.md 8.5)"),
    "max_unmap_descriptors": Fact(255, "choice: 255 descriptors fill a 4 KiB parameter list, as QEMU"),
    "max_io_bytes": Fact(32 << 20, f"choice: {SBC3} MAXIMUM TRANSFER LENGTH of 32 MiB, enforced"),
    "max_write_same_bytes": Fact(512 << 20, "choice: MAXIMUM WRITE SAME LENGTH = the unmap limit, enforced"),
    "wsnz": Fact(False, f"{SBC3}: NUMBER OF LOGICAL BLOCKS 0 means to the last LBA (WSNZ 0 is the choice)"),
    "enforce_limits": Fact(True, f"{SBC3} UNMAP: over MAXIMUM UNMAP LBA COUNT or DESCRIPTOR COUNT -> "
                                 "INVALID FIELD IN PARAMETER LIST; 5.42 / 6.5.3: WRITE SAME and transfer lengths "
                                 "over the limits -> INVALID FIELD IN CDB"),
    "get_lba_status": Fact(True, f"{SBC3} GET LBA STATUS (mandatory with LBPME), from Drive.mapped"),
    "synchronize_cache_16": Fact(True, f"{SBC3} SYNCHRONIZE CACHE(16)"),
    "report_supported_opcodes": Fact(True, f"{SPC4} REPORT SUPPORTED OPERATION CODES"),
    "unmap_anchor_check": Fact(True, f"{SBC3}: ANCHOR 1 with ANC_SUP 0 -> INVALID FIELD IN CDB"),
    "unmap_write_protect_check": Fact(True, f"{SBC3} write protection: DATA PROTECT / WRITE PROTECTED"),
    "unmap_length_rules": Fact("truncate", f"{SBC3}: a list of 1-7 bytes is PARAMETER LIST LENGTH ERROR; "
                                           "an incomplete last descriptor is ignored (LIO and tcmu-runner "
                                           "truncate likewise, controllers.md 5.3)"),
    "unmap_validate_first": Fact(True, "choice: every descriptor is checked before the first discard, so a "
                                       "failing UNMAP changes nothing (DESIGN.md exact semantics)"),
    "write_same": Fact("write", f"{SBC3}: the block is written to every LBA; zeros with UNMAP may unmap"),
    "write_same_ndob": Fact("zero", f"{SBC3} WRITE SAME(16) NDOB: no data-out, the blocks become zero "
                                    "(unmapped with UNMAP)"),
    "verify_range_check": Fact(True, f"{SBC3}: LBA + VERIFICATION LENGTH past the capacity -> LBA OUT OF "
                                     "RANGE"),
    "verify_bytchk": Fact("compare", f"{SBC3}: BYTCHK 01b/11b compare, MISCOMPARE 1Dh/00h when different"),
    "sync_cache_range_check": Fact(True, f"{SBC3}: a range past the capacity -> LBA OUT OF RANGE"),
    "protect_check": Fact("all", f"{SBC3}: no protection information, so any RD/WR/VRPROTECT != 0 is "
                                 "INVALID FIELD IN CDB"),
    "mode_pages": Fact((0x01, 0x08, 0x0A), f"{SBC3}: read-write error recovery and caching pages; {SPC4} "
                                           "control page (04h/05h are obsolete since SBC-2)"),
    "mode_block_descriptor": Fact("short-lba", f"{SBC3}: short LBA block descriptor, a 32-bit count"),
    "mode_subpage_check": Fact(True, f"{SPC4}: an unsupported SUBPAGE CODE -> INVALID FIELD IN CDB"),
    "mode_default_values": Fact("power-on", f"{SPC4} page control 10b: the default (power-on) values"),
    "power_on_unit_attention": Fact(True, "SAM-5: power on establishes UNIT ATTENTION 29h/00h"),
    "request_sense_unit_attention": Fact("parameter-data", f"{SPC4}: REQUEST SENSE returns a pending "
                                                           "unit attention as its data, GOOD, and clears it"),
    "invalid_field_commands": Fact((), f"{SPC4}: an operation code the device does not support is INVALID "
                                       "COMMAND OPERATION CODE (MMC commands are not a disk's)"),
    "unit_attention_exempt": Fact((0x12, 0xA0), f"{SPC4} (recalled): INQUIRY and REPORT LUNS are processed with a "
                                                "unit attention pending; REQUEST SENSE has its own rule"),
    "unit_attention_clear": Fact("when-reported", "SAM-5 5.14 / SPC-4 (recalled): a unit attention condition is "
                                                  "cleared when it is reported; a command rejected for another reason "
                                                  "leaves it pending"),
    "mode_select_block_lengths": Fact(None, f"{SBC3} block descriptor: a BLOCK LENGTH the disk does not support is "
                                            "INVALID FIELD IN PARAMETER LIST; this disk supports only its own"),
    "allocation_rule": Fact("spc", f"{SPC4}: the data up to the ALLOCATION LENGTH, no padding"),
    "max_allocation_length": Fact(None, f"{SPC4}: any allocation length is valid"),
})

PROFILES: dict[str, dict[str, Fact]] = {"qemu-7.2": _QEMU_72, "qemu-8.2": _QEMU_82, "qemu-1.4-pc": _QEMU_14,
                                        "strict": _STRICT}
DESCRIPTIONS = {
    "qemu-7.2": "QEMU 7.2 scsi-hd behind virtio-scsi: never LBPRZ, UNMAP limits advertised but not enforced, no "
                "GET LBA STATUS or SYNCHRONIZE CACHE(16), WRITE SAME NDOB a no-op",
    "qemu-8.2": "QEMU 8.2 scsi-hd: as 7.2, but a unit attention is cleared only by reporting it, FORMAT UNIT "
                "with parameter data completes, MODE SELECT accepts only block lengths of 512 x k",
    "qemu-1.4-pc": "QEMU 1.4 scsi-hd: no LBPME, zero UNMAP limits, no B1h page, WRITE SAME only with UNMAP "
                   "(a discard), UNMAP without ANCHOR or write-protect checks",
    "strict": "SBC-3 / SPC-4: limits enforced, GET LBA STATUS from the image, LBPRZ from the drive's real "
              "read-after-unmap, descriptor sense on D_SENSE",
}
for _name, _facts in PROFILES.items():
    check_facts(f"scsi profile {_name}", ScsiDiskConfig, _facts, given=GIVEN)


def scsi_disk_config(profile_name: str, capacity_blocks: int, block_size: int = 512, read_only: bool = False,
                     read_zeroes_after_unmap: bool | None = None) -> ScsiDiskConfig:
    """The disk configuration of `profile_name` for an image of `capacity_blocks` blocks.

    `read_zeroes_after_unmap` is what the drive really does (Drive.zeroes_after_discard
    with sector_size=block_size computes it); only FROM_DRIVE facts use it, and None (unknown) never promises
    zeros. The QEMU profiles ignore it: QEMU never reports LBPRZ.
    """
    facts = lookup(PROFILES, profile_name)
    resolved = {name: Fact(bool(read_zeroes_after_unmap), fact.source) if fact.value == FROM_DRIVE else fact
                for name, fact in facts.items()}
    return config_from_facts(ScsiDiskConfig, resolved, capacity_blocks=capacity_blocks, block_size=block_size,
                             read_only=read_only)
