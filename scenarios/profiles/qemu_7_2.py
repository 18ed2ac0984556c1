"""QEMU 7.2: every device family's facts, each with the source it was read from.

The profile models the QEMU 7.2 that people run: Debian 12's 7.2.22 (1:7.2+dfsg-7+deb12u18), which is the
upstream release 7.2.0 (b67b00e6b4) plus the stable series v7.2.1 .. v7.2.22 (debian/patches/v7.2.*.diff of that
source package). Facts were read from 7.2.0 (hw/ide, hw/block/virtio-blk.c, hw/virtio, hw/scsi,
hw/core/machine.c hw_compat_*, tests/qtest); where a stable patch changes one, the fact cites the patch
("QEMU 7.2.22 vX.Y.Z") and says what 7.2.0 did. Every fact is checked against that binary (tests/qtest).
The other QEMU profiles state what differs from these facts, each with its own source.
"""

from __future__ import annotations

from controllers.scsi.config import INT_MAX, GiB
from scenarios.profiles.facts import Departure, Fact, MachineTypes
from scenarios.profiles.families import AHCI, ATA, HYPERVISOR, SCSI, VIRTIO_BLK, VIRTIO_PCI, VIRTIO_SCSI
from scenarios.profiles.family import FamilyProfile, Profile
from scenarios.profiles.script_lines import buffer_bytes, data_out, scsi_cdb

Q72 = "QEMU 7.2.0 (b67b00e6b4)"
Q722 = "QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"
AHCI_SERIES = "QEMU 8.2 AHCI series (Niklas Cassel, merged 2023-09 as 13d9f6dca0)"
SD72 = f"{Q72} hw/scsi/scsi-disk.c"
VS72 = f"{Q72} hw/scsi/virtio-scsi.c"

# -- ATA device (ide-hd) and AHCI HBA --------------------------------------------------------------------

ATA_FACTS = {
    "model": Fact("QEMU HARDDISK", f"{Q72} hw/ide/core.c ide_init_drive: drive_model_str for IDE_HD"),
    "serial": Fact("QM00001", f"{Q72} hw/ide/core.c ide_init_drive: \"QM%05d\" of the drive counter "
                              "(first disk; later disks count up)"),
    "firmware": Fact("2.5+", f"{Q72} include/qemu/hw-version.h QEMU_HW_VERSION, copied by ide_init_drive from "
                             "qemu_hw_version() (machine types after 2.4 set no hw_version)"),
    "write_cache": Fact(True, f"{Q72} hw/ide/core.c ide_identify word 85 bit 5 = blk_enable_write_cache "
                              "(default cache=writeback)"),
    "trim": Fact(True, f"{Q72} hw/ide/qdev.c ide_dev_initfn: discard_granularity -1 -> 512; ide_identify "
                       "word 169 = 1 when it is non-zero"),
    "drat": Fact(True, f"{Q72} hw/ide/core.c ide_identify: word 69 = 1 << 14 when discard_granularity != 0"),
    "rzat": Fact(False, f"{Q72} hw/ide/core.c ide_identify: word 69 bit 5 never set"),
    "max_dsm_blocks": Fact(0, f"{Q72} hw/ide/core.c ide_identify: word 105 never written; "
                              "cmd_data_set_management enforces no COUNT limit"),
    "out_of_range_error": Fact("abrt", f"{Q72} hw/ide/core.c ide_sect_range_ok fails -> ide_rw_error / "
                                       "ide_dma_error: ERR + ABRT, never IDNF"),
    "rotation_rate": Fact(0, f"{Q72} hw/ide/qdev.c rotation_rate property default 0 -> word 217 = 0"),
    "physical_sector_exp": Fact(0, f"{Q72} hw/ide/core.c ide_identify: word 106 = 0x6000 | "
                                   "get_physical_block_exp (physical_block_size 512)"),
    "multiple_sectors": Fact(16, f"{Q72} hw/ide/internal.h MAX_MULT_SECTORS 16; ide_reset sets mult_sectors "
                                 "to it (words 47, 59)"),
    "integrity_word": Fact(False, f"{Q72} hw/ide/core.c ide_identify: word 255 never written"),
    "diagnostic_completes": Fact(False, f"{Q72} hw/ide/core.c cmd_exec_dev_diagnostic returns false and never "
                                        "calls ide_cmd_done, so hw/ide/ahci.c sends no D2H FIS and raises no "
                                        "interrupt (8.2 also leaves PxCI set: ahci_cmd_done never runs)"),
    "ncq_depth": {
        "ide": Fact(0, f"{Q72} hw/ide/core.c: ncq_queues stays 0 on PIIX (ide_cmd_table has no FPDMA opcodes), so "
                       "words 75/76 are 0"),
        "ahci": Fact(32, f"{Q72} hw/ide/ahci.c ahci_init: ncq_queues = AHCI_MAX_CMDS (32) -> word 75 = 31, "
                         "word 76 bit 8"),
    },
}

AHCI_FACTS = {
    "pxci_rule": Fact("on-success", f"{Q722} v7.2.6 (backports e2a5d9b3d9 of the {AHCI_SERIES}): "
                                    "ahci_clear_cmd_issue clears PxCI only after a completion without ERR, BSY and "
                                    "DRQ, and no further slot is handled after an error; v7.2.8 (eabb921250): a "
                                    "port reset clears PxCI. 7.2.0's check_cmd cleared every handled slot "
                                    "(\"after-handling\")"),
    "ncq_issue_d2h": Fact(True, f"{Q722} v7.2.6 (2967dc8209): process_ncq_command writes a D2H FIS with I = 0 "
                                "(none in 7.2.0)"),
    "stop_clears_ci": Fact(True, f"{Q722} v7.2.6 (d73b84d0b6): ahci_port_write PORT_CMD, ST 1->0 clears PxCI and "
                                 "PxSACT (not in 7.2.0)"),
    "error_irq": Fact("tfes+dhrs", f"{Q722} hw/ide/ahci.c ahci_write_fis_d2h: TFES when ERR_STAT, then DHRS "
                                   "whenever I is set (b523a3d54f, which makes them exclusive in 8.2, is not in "
                                   "the 7.2 series)"),
    "ncq_error": Fact("tfes", f"{Q722} v7.2.6 (7e85cb0db4, 9f89423537): ncq_err no longer sets PxSERR; "
                              "ahci_write_fis_sdb raises TFES on ERR, else SDBS (7.2.0: the tag's PxSERR bit and "
                              "SDBS, \"serr-tag\")"),
    "abort_fis_before_err": Fact(False, f"{Q722} v7.2.6 (c3461c6264): ide_abort_command sets ERR before "
                                        "ide_transfer_stop writes the D2H FIS (7.2.0 wrote the FIS first: True)"),
}

# -- virtio-blk and the virtio-pci transport ---------------------------------------------------------

VIRTIO_BLK_FACTS = {
    "serial": Fact("", f"{Q72} hw/block/virtio-blk.c: property `serial` has no default; GET_ID copies \"\" "
                       "(one NUL byte)"),
    "num_queues": Fact(1, f"{Q72} hw/virtio/virtio-blk-pci.c: num-queues auto = virtio_pci_optimal_num_queues, "
                          "the vCPU count; this profile assumes a one-vCPU guest"),
    "queue_size": Fact(256, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_UINT16(\"queue-size\", ..., 256)"),
    "seg_max": Fact(254, f"{Q72} virtio_blk_update_config: seg_max = queue_size - 2 (seg-max-adjust on)"),
    "blk_size": Fact(512, f"{Q72} hw/block/block.c blkconf_blocksizes: logical_block_size 512 by default"),
    "physical_block_exp": Fact(0, f"{Q72} virtio_blk_update_config: get_physical_block_exp, physical 512"),
    "min_io_size": Fact(0, f"{Q72} DEFINE_BLOCK_PROPERTIES min_io_size default 0"),
    "opt_io_size": Fact(0, f"{Q72} DEFINE_BLOCK_PROPERTIES opt_io_size default 0"),
    "geometry": Fact(None, f"{Q72} blkconf_geometry -> hd_geometry_guess: no MBR on a fresh disk, so "
                           "guess_chs_for_size (16 heads, 63 sectors)"),
    "write_cache": Fact(True, f"{Q72} blockdev: cache=writeback by default, so blk_enable_write_cache is true"),
    "config_wce": Fact(True, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_BIT(\"config-wce\", ..., true)"),
    "indirect_desc": Fact(True, f"{Q72} include/hw/virtio/virtio.h DEFINE_VIRTIO_COMMON_FEATURES "
                                "indirect_desc default on"),
    "event_idx": Fact(True, f"{Q72} DEFINE_VIRTIO_COMMON_FEATURES event_idx default on"),
    "discard": Fact(True, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_BIT64(\"discard\", ..., true)"),
    "write_zeroes": Fact(True, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_BIT64(\"write-zeroes\", ..., true)"),
    "max_discard_sectors": Fact(4194303, f"{Q72} property max-discard-sectors default BDRV_REQUEST_MAX_SECTORS; "
                                         "virtio_blk_handle_discard_write_zeroes answers IOERR above it"),
    "max_discard_seg": Fact(1, f"{Q72} virtio_blk_update_config: max_discard_seg = 1 (hard-coded); "
                               "virtio_blk_handle_discard_write_zeroes answers UNSUPP to a payload over 16 bytes"),
    "discard_sector_alignment": Fact(1, f"{Q72} virtio_blk_update_config: discard_granularity >> 9, default "
                                        "granularity = logical block size (report-discard-granularity on)"),
    "max_write_zeroes_sectors": Fact(4194303, f"{Q72} property max-write-zeroes-sectors default "
                                              "BDRV_REQUEST_MAX_SECTORS"),
    "max_write_zeroes_seg": Fact(1, f"{Q72} virtio_blk_update_config: max_write_zeroes_seg = 1"),
    "write_zeroes_may_unmap": Fact(True, f"{Q72} virtio_blk_update_config: write_zeroes_may_unmap = 1 always, "
                                         "even with discard=ignore"),
    "commands_need_feature": Fact(False, f"{Q72} virtio_blk_handle_request dispatches DISCARD / WRITE_ZEROES "
                                         "whatever was negotiated"),
    "max_rw_sectors": Fact(4194303, f"{Q72} virtio_blk_sect_range_ok: nb_sectors > BDRV_REQUEST_MAX_SECTORS "
                                    "-> IOERR"),
    "type_decoding": Fact("qemu", f"{Q72} virtio_blk_handle_request: switch on type & ~(VIRTIO_BLK_T_OUT | "
                                  "VIRTIO_BLK_T_BARRIER)"),
    "used_len": Fact("in_len", f"{Q72} virtio_blk_req_complete: virtqueue_push(vq, elem, req->in_len), the "
                               "whole writable side"),
    "zone_report_buffer_check": Fact(False, f"{Q72} virtio_blk_handle_request has no zone request types: "
                                            "ZONE_REPORT falls to the default case, UNSUPP"),
}

VIRTIO_PCI_FACTS = {
    "features_check": Fact("qemu", f"{Q72} hw/virtio/virtio.c virtio_set_features_nocheck masks the accepted "
                                   "bits with host_features; virtio_set_status only calls validate_features"),
    "config_isr": Fact(0x3, f"{Q72} hw/virtio/virtio.c virtio_notify_config: virtio_set_isr(vdev, 0x3)"),
    "notify_off_multiplier": Fact(4, f"{Q72} hw/virtio/virtio-pci.c virtio_pci_queue_mem_mult: 4 without "
                                     "page-per-vq (off by default since 2.8)"),
    "ring_reset": Fact(True, f"{Q72} include/hw/virtio/virtio.h DEFINE_VIRTIO_COMMON_FEATURES queue_reset on "
                             "(hw_compat_7_1 turns it off: machine types 7.1 and older); observed on Debian's QEMU "
                             "7.2.22 (machine types pc-i440fx-7.2, pc-q35-7.2: bit 40 offered; a queue_reset write "
                             "disables the queue and restores its size, whatever was negotiated)"),
}

# -- SCSI disk (scsi-hd) and virtio-scsi HBA -------------------------------------------------------

SCSI_FACTS = {
    "vendor": Fact("QEMU", f"{SD72} scsi_realize: vendor defaults to \"QEMU\""),
    "product": Fact("QEMU HARDDISK", f"{SD72} scsi_hd_realize: product defaults to \"QEMU HARDDISK\""),
    "revision": Fact("2.5+", f"{SD72} scsi_realize: version = qemu_hw_version() (\"2.5+\" for machine types "
                             "after 2.4)"),
    "serial": Fact(None, f"{SD72} scsi_hd_properties: \"serial\" has no default, so VPD 80h is not listed"),
    "device_id": Fact("drive0", f"{SD72} scsi_realize: device_id = serial, else blk_name() (the -drive id; "
                                "\"drive0\" is emu's drive name, and emu.qtest's -drive id)"),
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
    "lbprz": Fact(False, f"{SD72}: LBPRZ is never set, neither in READ CAPACITY(16) nor in VPD B2h"),
    "lbpu": Fact(True, f"{SD72} scsi_disk_emulate_vpd_page: B2h byte 5 = 0xE0, even when discard is disabled"),
    "lbpws": Fact(True, f"{SD72} VPD B2h byte 5 = 0xE0"),
    "lbpws10": Fact(True, f"{SD72} VPD B2h byte 5 = 0xE0"),
    "provisioning_type": Fact(2, f"{SD72} VPD B2h byte 6 = 2 (thin) when discard_granularity != 0"),
    "discard_granularity": Fact(4096, f"{SD72} scsi_realize: discard_granularity -1 -> MAX(logical block, "
                                      "DEFAULT_DISCARD_GRANULARITY 4 KiB); VPD B0h reports it / block size"),
    "unmap_granularity_alignment": Fact(None, f"{Q72} hw/scsi/emulation.c scsi_emulate_block_limits: "
                                              "\"alignment is zero\", UGAVALID 0"),
    "max_unmap_bytes": Fact(GiB, f"{SD72} DEFAULT_MAX_UNMAP_SIZE 1 GiB -> MAXIMUM UNMAP LBA COUNT 2097152 at "
                                 "512-byte blocks, above the 1048576 bound libiscsi's test_inquiry_block_limits "
                                 "asserts"),
    "max_unmap_descriptors": Fact(255, f"{SD72} scsi_disk_emulate_vpd_page: max_unmap_descr = 255"),
    "max_io_bytes": Fact(INT_MAX, f"{SD72} DEFAULT_MAX_IO_SIZE INT_MAX (with blk_get_max_transfer, also INT_MAX "
                                  "rounded to the request alignment) -> MAXIMUM TRANSFER LENGTH"),
    "max_write_same_bytes": Fact(INT_MAX, f"{Q72} hw/scsi/emulation.c: MAXIMUM WRITE SAME LENGTH = the maximum "
                                          "transfer length"),
    "wsnz": Fact(True, f"{SD72} bl.wsnz = 1; scsi_disk_emulate_write_same refuses 0 blocks"),
    "enforce_limits": Fact(False, f"{SD72} scsi_disk_emulate_unmap / _write_same / dma_command check neither "
                                  "descriptor count, LBA count, write same length nor transfer length"),
    "get_lba_status": Fact(False, f"{SD72} SERVICE_ACTION_IN_16: only SAI_READ_CAPACITY_16, else INVALID FIELD"),
    "synchronize_cache_16": Fact(False, f"{SD72} scsi_disk_reqops_dispatch has no SYNCHRONIZE_CACHE_16: "
                                        "INVALID OPCODE"),
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
                                     "handler runs; observed on 7.2.22"),
    "verify_range_check": Fact(False, f"{SD72} scsi_disk_emulate_command VERIFY: no LBA check"),
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
                                          "UNIT ATTENTION 29h/00h (tests/qtest/virtio-scsi-test.c relies on it)"),
    "request_sense_unit_attention": Fact("check-condition", f"{Q72} hw/scsi/scsi-bus.c scsi_req_new: REQUEST "
                                                            "SENSE with an unreported unit attention gets "
                                                            "reqops_unit_attention"),
    "invalid_field_commands": Fact((0x46, 0x4A, 0x51, 0xAD, 0xBD),
                                   f"{SD72} scsi_disk_reqops_dispatch sends GET CONFIGURATION, GET EVENT STATUS "
                                   "NOTIFICATION, READ DISC INFORMATION, READ DVD STRUCTURE and MECHANISM STATUS to "
                                   "scsi_disk_emulate_command, whose helpers return -1 unless the type is ROM: "
                                   "illegal_request, INVALID FIELD"),
    "read_toc": Fact(True, f"{SD72} scsi_disk_reqops_dispatch sends READ TOC to scsi_disk_emulate_command for a "
                           "disk too: scsi_disk_emulate_read_toc answers hw/block/cdrom.c's one-track TOC (observed "
                           "on Debian's QEMU 7.2.22 with emu replay --diff)"),
    "unit_attention_exempt": Fact((0x12, 0xA0, 0x46, 0x4A), f"{Q72} hw/scsi/scsi-bus.c scsi_req_new: INQUIRY, "
                                                           "REPORT LUNS, GET CONFIGURATION and GET EVENT STATUS "
                                                           "NOTIFICATION are not stopped by a unit attention"),
    "unit_attention_clear": Fact("on-completion", f"{Q72} hw/scsi/scsi-bus.c scsi_req_complete -> "
                                                  "scsi_clear_unit_attention: every request but INQUIRY, GET "
                                                  "CONFIGURATION and GET EVENT STATUS NOTIFICATION clears the pending "
                                                  "unit attention, reported or not (a CDB scsi_req_parse_cdb refuses "
                                                  "becomes reqops_invalid_opcode and still clears it)"),
    "unit_attention_taken_when_made": Fact(True, f"{Q722} v7.2.15 (9472083e64): scsi_req_alloc -> init_req "
                                                 "scsi_fetch_unit_attention_sense takes the unit attention when the "
                                                 "request reporting it is made; observed (emu replay --diff): a READ "
                                                 "answered OVERRUN as the first command leaves no unit attention "
                                                 "for the next. Not in 7.2.0"),
    "mode_select_block_lengths": Fact(0xFE00, f"{Q722} v7.2.7 (7cfcc79b0a, CVE-2023-42467): "
                                              "scsi_disk_emulate_mode_select takes a BLOCK LENGTH with bs && "
                                              "!(bs & ~0xfe00) as qdev.blocksize (7.2.0: 0xff00, 256 too); emu "
                                              "refuses a change instead (the departure "
                                              "mode-select-switches-the-block-size)"),
    "allocation_rule": Fact("qemu", f"{SD72} scsi_disk_emulate_command: iov_len = MIN(buflen, xfer) of a zeroed "
                                    "buffer; scsi_disk_emulate_inquiry additional length = len - 5; "
                                    "scsi-bus.c REPORT LUNS len = MIN(len, xfer & ~7)"),
    "max_allocation_length": Fact(65536, f"{SD72} scsi_disk_emulate_command: cmd.xfer > 65536 -> "
                                         "INVALID FIELD"),
    "no_op_commands": Fact((0x04, 0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57),
                           f"{SD72} scsi_disk_emulate_command: FORMAT UNIT, RESERVE/RELEASE (6) and (10) (refusing "
                           "bits 0 / 0-1 of byte 1), START STOP (scsi_disk_emulate_start_stop: nothing for a fixed "
                           "disk), ALLOW MEDIUM REMOVAL and SEEK(10) (LBA > max_lba -> LBA OUT OF RANGE) all "
                           "complete GOOD. A FORMAT UNIT with parameter data reached scsi_disk_emulate_write_data's "
                           f"default case, abort(), in 7.2.0; {Q722} v7.2.7 (be2b619a17) completes it GOOD "
                           "(observed with emu replay --diff)"),
}

VIRTIO_SCSI_FACTS = {
    "num_queues": Fact(1, f"{Q72} hw/virtio/virtio-scsi-pci.c: num_queues auto = virtio_pci_optimal_num_queues, "
                          "the vCPU count; this profile assumes a one-vCPU guest"),
    "queue_size": Fact(256, f"{VS72} virtio_scsi_properties: virtqueue_size default 256 (control, event and "
                            "request queues alike, virtio_scsi_common_realize)"),
    "seg_max": Fact(254, f"{VS72} virtio_scsi_get_config: seg_max = virtqueue_size - 2 with seg_max_adjust "
                         "(default on)"),
    "max_sectors": Fact(0xFFFF, f"{VS72} virtio_scsi_properties: max_sectors default 0xFFFF"),
    "cmd_per_lun": Fact(128, f"{VS72} virtio_scsi_properties: cmd_per_lun default 128"),
    "max_target": Fact(255, f"{Q72} include/hw/virtio/virtio-scsi.h VIRTIO_SCSI_MAX_TARGET 255"),
    "max_lun": Fact(16383, f"{Q72} include/hw/virtio/virtio-scsi.h VIRTIO_SCSI_MAX_LUN 16383"),
    "hotplug": Fact(True, f"{VS72} DEFINE_PROP_BIT(\"hotplug\", ..., VIRTIO_SCSI_F_HOTPLUG, true)"),
    "param_change": Fact(True, f"{VS72} DEFINE_PROP_BIT(\"param_change\", ..., VIRTIO_SCSI_F_CHANGE, true)"),
    "indirect_desc": Fact(True, f"{Q72} include/hw/virtio/virtio.h DEFINE_VIRTIO_COMMON_FEATURES indirect_desc on"),
    "event_idx": Fact(True, f"{Q72} DEFINE_VIRTIO_COMMON_FEATURES event_idx on"),
    "any_layout": Fact(False, f"{Q72} hw/virtio/virtio-pci.c virtio_pci_common_read: device_feature hides "
                              "vdc->legacy_features, which hw/virtio/virtio.c virtio_device_class_init sets to "
                              "VIRTIO_LEGACY_FEATURES (ANY_LAYOUT among them), so the modern interface never offers "
                              "it; observed on Debian's QEMU 7.2.22 (machine types pc-i440fx-7.2, pc-i440fx-5.2)"),
    "framing": Fact("qemu", f"{VS72} virtio_scsi_parse_req: without VIRTIO_F_ANY_LAYOUT negotiated the first "
                            "out / in buffer is the header whatever its length; Linux's virtio_scsi never "
                            "accepts ANY_LAYOUT (not in its features[])"),
    "used_len": Fact("qemu", f"{VS72} virtio_scsi_complete_req: virtqueue_push(vq, elem, req->qsgl.size + "
                             "req->resp_iov.size), data of both sides plus the whole response with sense field"),
    "residual": Fact("qemu", f"{VS72} virtio_scsi_command_complete: resid only with status GOOD, else 0; "
                             "hw/scsi/scsi-bus.c scsi_req_new: residual starts at cmd.xfer (0 without a data "
                             "phase), dma_buf_read/_write leave buffer size - transferred"),
    "addressing": Fact("qemu", f"{VS72} virtio_scsi_device_get: lun[0] == 1, lun[2] 0 or 0x40..0x7F, bytes 4-7 "
                               f"not looked at; {Q72} hw/scsi/scsi-bus.c do_scsi_device_find returns the target's "
                               "first child (the newest) for a missing LUN, scsi_req_new applies its unit attention "
                               "and scsi_target_send_command answers"),
}

VIRTIO_SCSI_NOTE = (f"{VS72} virtio_scsi_handle_cmd_req_prepare / scsi_do_read: a READ or WRITE whose data buffer "
                    "is larger than its transfer length moves the whole buffer (dma_blk_io over the full "
                    "QEMUSGList); emu moves the transfer length only.")

# -- departures: where emu does not copy QEMU 7.2 (tests/qtest/test_departures.py runs each example on both) ------

_DMA_OPS = (0x08, 0x0A, 0x28, 0x2A, 0x2E, 0xA8, 0xAA, 0xAE, 0x88, 0x8A, 0x8E)   # READ, WRITE, WRITE AND VERIFY


def _transfer_blocks(cdb: bytes) -> int:
    """The TRANSFER LENGTH of a READ / WRITE / WRITE AND VERIFY CDB (zero padded to 16 bytes, as Linux sends it)."""
    if cdb[0] in (0x08, 0x0A):
        return cdb[4] or 256
    at, width = {1: (7, 2), 5: (6, 4), 4: (10, 4)}[cdb[0] >> 5]
    return int.from_bytes(cdb[at:at + width], "big")


def _buffer_beyond_transfer(line: dict) -> bool:
    cdb = scsi_cdb(line).ljust(16, b"\0")
    return cdb[0] in _DMA_OPS and 0 < _transfer_blocks(cdb) * 512 < buffer_bytes(line)


def _block_size_switch(line: dict) -> bool:
    """A MODE SELECT whose block descriptor names a BLOCK LENGTH QEMU 7.2 switches the disk to."""
    op, data = scsi_cdb(line)[:1], data_out(line)
    if op not in (b"\x15", b"\x55"):
        return False
    header = 4 if op == b"\x15" else 8
    descriptors = data[3] if op == b"\x15" and len(data) > 3 else int.from_bytes(data[6:8], "big")
    block_length = int.from_bytes(data[header + 5:header + 8], "big")
    return descriptors == 8 and block_length not in (0, 512) and not block_length & ~0xFE00


WHOLE_BUFFER = Departure(
    "dma-moves-the-whole-buffer", "virtio-scsi",
    "a READ or WRITE whose buffer is larger than its transfer length moves the whole buffer: a WRITE writes past the "
    "blocks its CDB names, a READ past the capacity fails ABORTED COMMAND, and the residual goes negative; emu moves "
    "the transfer length and reports the rest of the buffer as the residual",
    f"{VS72} virtio_scsi_handle_cmd_req_prepare checks only that the buffer holds cmd.xfer; {SD72} scsi_do_read / "
    "scsi_write_data hand the whole QEMUSGList to dma_blk_io; observed on Debian's QEMU 7.2.22 (residual "
    "4294966784 for one block in a 1024-byte buffer)",
    '{"cdb": "28000000000000000100", "data_in_len": 1024}', ("residual",), _buffer_beyond_transfer)

BLOCK_SIZE_SWITCH = Departure(
    "mode-select-switches-the-block-size", "virtio-scsi",
    "a MODE SELECT block descriptor switches the disk's logical block size (any BLOCK LENGTH within 0xFE00), before "
    "the pages are checked, so even a MODE SELECT that fails keeps it; emu does not model block size changes and "
    "answers INVALID FIELD IN PARAMETER LIST",
    f"{SD72} scsi_disk_emulate_mode_select sets qdev.blocksize from the block descriptor before mode_select_pages; "
    "observed on Debian's QEMU 7.2.22 (READ CAPACITY(10) then reports 4096-byte blocks)",
    '{"cdb": "151000000c00", "data_out": "000000080000000000001000"}', ("status", "sense"), _block_size_switch)

PROFILE = Profile("qemu-7.2", HYPERVISOR, (
    FamilyProfile(ATA, "QEMU 7.2 ide-hd on PIIX IDE or ICH9 AHCI, machine types 2.5 and newer", ATA_FACTS, notes=(
        f"Machine types pc-i440fx-1.5..2.4 and pc-q35-2.4 differ only in the firmware string: their hw_version "
        f"(\"1.5.0\"..\"2.4.0\", {Q72} hw/i386/pc_piix.c, pc_q35.c) replaces \"2.5+\".",
    )),
    FamilyProfile(AHCI, "QEMU 7.2.22 ICH9 AHCI HBA: the 8.2 rework backported (PxCI kept on error, NCQ errors as "
                        "TFES), except that an error raises TFES and DHRS together", AHCI_FACTS),
    FamilyProfile(VIRTIO_BLK, "QEMU 7.2 virtio-blk-pci (modern), machine type 7.2, one vCPU",
                  VIRTIO_BLK_FACTS, notes=(
        "Machine types 5.2 to 7.1 differ from these facts only in not offering VIRTIO_F_RING_RESET (hw_compat_7_1; "
        "observed on Debian's QEMU 7.2.22, machine type pc-i440fx-5.2).",
        "QEMU merges adjacent reads/writes (request-merging) before the block layer; the result is the same bytes.",
    )),
    FamilyProfile(VIRTIO_PCI, "QEMU 7.2 virtio-pci (modern): features masked, not checked", VIRTIO_PCI_FACTS),
    FamilyProfile(SCSI, "QEMU 7.2 scsi-hd behind virtio-scsi: never LBPRZ, UNMAP limits advertised but not enforced, "
                        "no GET LBA STATUS or SYNCHRONIZE CACHE(16), WRITE SAME NDOB a no-op", SCSI_FACTS,
                  departures=(BLOCK_SIZE_SWITCH,)),
    FamilyProfile(VIRTIO_SCSI, "QEMU 7.2 virtio-scsi-pci (modern), machine type 7.2, one vCPU",
                  VIRTIO_SCSI_FACTS, departures=(WHOLE_BUFFER,)),
), machines=MachineTypes("7.2", {"pc": ("pc-i440fx-7.2",), "q35": ("pc-q35-7.2",)},
                         f"{Q72} hw/i386/pc_piix.c, pc_q35.c: the newest machine types, which `pc` and `q35` "
                         "alias; older ones change what the descriptions and notes say (hw_compat_*, "
                         "hw/core/machine.c)"))
