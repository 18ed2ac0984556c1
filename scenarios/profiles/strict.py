"""strict: the standards, where QEMU departs from them: ATA/ACS-3 and AHCI 1.3.1, virtio 1.2, SBC-3 and SPC-4.

Facts name the clause they rest on (ACS-3 = T13/2161-D, AHCI 1.3.1, SATA 3.5a, virtio 1.2 = OASIS
virtio-v1.2-cs01, SBC-3 = T10 BSR INCITS 514 r35, SPC-4 r37, SAM-5); a value the standard leaves open says it is
a choice, and what a discard really leaves behind (ATA RZAT, SCSI LBPRZ) is taken from the drive.
"""

from __future__ import annotations

from scenarios.profiles import qemu_7_2
from scenarios.profiles.facts import FROM_DRIVE, Fact
from scenarios.profiles.families import AHCI, ATA, HYPERVISOR, SCSI, VIRTIO_BLK, VIRTIO_PCI, VIRTIO_SCSI
from scenarios.profiles.family import FamilyProfile, Profile

ACS3 = "ACS-3 (T13/2161-D)"
VS = "virtio 1.2"
SBC3 = "SBC-3 r35"
SPC4 = "SPC-4 r37"

# -- ATA device and AHCI HBA -------------------------------------------------------------------------------

ATA_FACTS = dict(qemu_7_2.ATA_FACTS)   # every field is restated below
ATA_FACTS.update({
    "model": Fact("QEMU HARDDISK", "choice: ACS leaves the model string to the vendor; kept as QEMU's so only "
                                   "behaviour differs from qemu-7.2"),
    "serial": Fact("QM00001", "choice: vendor-assigned in ACS; kept as QEMU's"),
    "firmware": Fact("2.5+", "choice: vendor-assigned in ACS; kept as QEMU 7.2's"),
    "write_cache": Fact(True, f"choice: {ACS3} makes a volatile write cache optional and its power-on state "
                              "vendor-specific; kept on as QEMU"),
    "trim": Fact(True, f"choice: DATA SET MANAGEMENT / TRIM is optional in {ACS3} (IDENTIFY word 169 bit 0); "
                       "this device implements it"),
    "drat": Fact(True, f"{ACS3} IDENTIFY word 69 bit 14 (Deterministic read after TRIM): every emu backend "
                       "answers a read of a trimmed LBA the same way until it is written (a discard zeroes whole "
                       "granules at once or changes nothing)"),
    "rzat": Fact(FROM_DRIVE, f"{ACS3} IDENTIFY word 69 bit 5 (read zeroes after TRIM), set exactly when every "
                             "trimmed sector reads zeros on this drive: read_zeroes_after_trim from whoever creates "
                             "the controller; None (unknown) -> off"),
    "max_dsm_blocks": Fact(1, f"{ACS3} IDENTIFY word 105 (max 512-byte blocks of LBA range entries per DSM; "
                              "a larger COUNT is aborted); the value 1 is a choice: one block of 64 entries is what "
                              "Linux libata sends (ATA_MAX_TRIM_RNUM)"),
    "out_of_range_error": Fact("idnf", f"{ACS3} error outputs of the READ/WRITE commands: ID NOT FOUND when the "
                                       "address is outside the accessible capacity; "
                                       "DSM ranges past capacity stay ABRT"),
    "rotation_rate": Fact(0, f"{ACS3} IDENTIFY word 217: 0000h = rate not reported (choice: not claimed)"),
    "physical_sector_exp": Fact(None, f"{ACS3} IDENTIFY word 106 bit 13 means several logical sectors per "
                                      "physical sector; QEMU's 0x6000 sets it with a ratio of 2^0. Word 106 = 0 "
                                      "(not valid: 512-byte physical sectors) says the same without the "
                                      "contradiction (Linux ata_id_log2_per_physical_sector reads both as 0)"),
    "multiple_sectors": Fact(16, "choice: READ/WRITE MULTIPLE block size is device-specific in ACS; kept as "
                                 "QEMU's 16"),
    "integrity_word": Fact(True, f"{ACS3} IDENTIFY word 255 (integrity word: signature A5h, checksum making the "
                                 "page sum to 0 mod 256); optional in ACS, written here as real drives do"),
    "diagnostic_completes": Fact(True, f"{ACS3} EXECUTE DEVICE DIAGNOSTIC normal outputs; AHCI 1.3.1 5.3: a "
                                       "D2H Register FIS (I = 1) ends every non-queued command and clears its "
                                       "PxCI bit"),
    "ncq_depth": {
        "ide": Fact(0, "Serial ATA NCQ (READ/WRITE FPDMA QUEUED) needs a SATA host; PIIX is parallel ATA, so no "
                       f"NCQ ({ACS3} IDENTIFY words 75/76 left 0)"),
        "ahci": Fact(32, "AHCI 1.3.1 3.1.1 CAP.SNCQ / CAP.NCS (up to 32 command slots); "
                         f"{ACS3} IDENTIFY word 75 queue depth 32 maximum (depth 32 is the choice)"),
    },
})

AHCI_FACTS = {
    "pxci_rule": Fact("on-success", "AHCI 1.3.1 5.3.8 RegFIS:ClearCI (PxCI clears only when a D2H FIS ends a "
                                    "command without ERR) and 10.4.1 (software reset, C bit)"),
    "ncq_issue_d2h": Fact(True, "SATA 3.5a 11.15 FPDMA QUEUED DFPDMAQ2: a D2H FIS with BSY clear and I = 0"),
    "stop_clears_ci": Fact(True, "AHCI 1.3.1 3.3.13 PxSACT and 3.3.14 PxCI: cleared when ST goes 1 -> 0"),
    "error_irq": Fact("tfes", "AHCI 1.3.1 5.3.8.1 RegFIS:Entry: ERR -> ERR:FatalTaskfile, which raises TFES "
                              "instead of DHRS"),
    "ncq_error": Fact("tfes", "AHCI 1.3.1 5.3.13.1 SDB:Entry: ERR -> ERR:FatalTaskfile (TFES); PxSERR holds "
                              "only the 3.3.12 error bits"),
    "abort_fis_before_err": Fact(False, f"{ACS3}: an unsupported command ends with ERR and ABRT in the status "
                                        "it reports"),
}

# -- virtio-blk and the virtio-pci transport ---------------------------------------------------------

VIRTIO_BLK_FACTS = {
    "serial": Fact("", f"choice: {VS} 5.2.6 leaves the GET_ID string to the device; empty as QEMU's default"),
    "num_queues": Fact(1, f"choice: {VS} 5.2.3 VIRTIO_BLK_F_MQ is optional; one queue"),
    "queue_size": Fact(256, f"choice: {VS} 2.7 allows up to 32768; 256 as QEMU"),
    "seg_max": Fact(254, f"choice: {VS} 5.2.4 seg_max; queue size - 2 leaves room for header and status"),
    "blk_size": Fact(512, f"choice: {VS} 5.2.4 blk_size; 512-byte logical blocks"),
    "physical_block_exp": Fact(0, f"choice: {VS} 5.2.4 topology; 512-byte physical blocks"),
    "min_io_size": Fact(0, f"choice: {VS} 5.2.4 topology; no minimum reported"),
    "opt_io_size": Fact(0, f"choice: {VS} 5.2.4 topology; no optimum reported"),
    "geometry": Fact(None, f"choice: {VS} 5.2.4 geometry is advisory; the same guess as QEMU"),
    "write_cache": Fact(True, f"choice: {VS} 5.2.5 writeback; a volatile write cache, flushed by FLUSH"),
    "config_wce": Fact(True, f"choice: {VS} 5.2.3 VIRTIO_BLK_F_CONFIG_WCE offered"),
    "indirect_desc": Fact(True, f"choice: {VS} 2.7.5.3 indirect descriptors offered"),
    "event_idx": Fact(True, f"choice: {VS} 2.7.7-2.7.10 event index offered"),
    "discard": Fact(True, f"choice: {VS} 5.2.3 VIRTIO_BLK_F_DISCARD offered"),
    "write_zeroes": Fact(True, f"choice: {VS} 5.2.3 VIRTIO_BLK_F_WRITE_ZEROES offered"),
    "max_discard_sectors": Fact(4194303, f"choice: {VS} 5.2.4 max_discard_sectors; the largest request QEMU's "
                                         "block layer takes"),
    "max_discard_seg": Fact(16, f"choice: {VS} 5.2.4 max_discard_seg; several segments honoured per request "
                                "(Linux merges up to min(max_discard_seg, 256) bios into one request)"),
    "discard_sector_alignment": Fact(1, f"choice: {VS} 5.2.4 discard_sector_alignment is a hint for splitting; "
                                        "every sector may be named"),
    "max_write_zeroes_sectors": Fact(4194303, f"choice: {VS} 5.2.4 max_write_zeroes_sectors"),
    "max_write_zeroes_seg": Fact(16, f"choice: {VS} 5.2.4 max_write_zeroes_seg; several segments honoured"),
    "write_zeroes_may_unmap": Fact(True, f"{VS} 5.2.6.2: with UNMAP the device may deallocate; emu's Drive "
                                         "passes MAY_UNMAP down"),
    "commands_need_feature": Fact(True, f"{VS} 5.2.6.1: the driver sends DISCARD / WRITE_ZEROES only when "
                                        "negotiated; the device answers UNSUPP otherwise"),
    "max_rw_sectors": Fact(None, f"{VS} 5.2.6: no size limit beyond the capacity (and seg_max / size_max)"),
    "type_decoding": Fact("exact", f"{VS} 5.2.6: the type values are 0, 1, 4, 8, 11, 13 ...; the legacy "
                                   "BARRIER flag is not part of 1.x; anything else is UNSUPP"),
    "used_len": Fact("written", f"{VS} 2.7.8: len is the number of bytes written into the buffer"),
    "zone_report_buffer_check": Fact(False, f"{VS} 5.2.6: zone requests need VIRTIO_BLK_F_ZONED, which is not "
                                            "offered; the type is unknown here, so UNSUPP"),
}

VIRTIO_PCI_FACTS = {
    "features_check": Fact("spec", f"{VS} 3.1.1: the device fails FEATURES_OK when it cannot accept the "
                                   "features; 6.1: it may fail a driver that did not accept VERSION_1"),
    "config_isr": Fact(0x2, f"{VS} 4.1.4.5: ISR bit 1 = device configuration change"),
    "notify_off_multiplier": Fact(4, f"{VS} 4.1.4.4: any even power of 2 (or 0); 4, a doorbell per 4 bytes"),
    "ring_reset": Fact(False, f"choice: VIRTIO_F_RING_RESET is optional ({VS} 6)"),
}

# -- SCSI disk and virtio-scsi HBA -----------------------------------------------------------------------

SCSI_FACTS = dict(qemu_7_2.SCSI_FACTS)
SCSI_FACTS.update({
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
                                       "within the 1048576 bound libiscsi's test_inquiry_block_limits asserts"),
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
                                           "an incomplete last descriptor is ignored (Linux target_core_sbc.c "
                                           "sbc_execute_unmap truncates likewise; tcmu-runner ignores it too, "
                                           "from a reading of its UNMAP code)"),
    "unmap_validate_first": Fact(True, "choice: every descriptor is checked before the first discard, so a "
                                       "failing UNMAP changes nothing (emu's exact semantics, docs/architecture.md)"),
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
    "read_toc": Fact(False, f"{SPC4}: READ TOC is an MMC command, not a disk's: INVALID COMMAND OPERATION CODE"),
    "unit_attention_exempt": Fact((0x12, 0xA0), f"{SPC4} (recalled): INQUIRY and REPORT LUNS are processed with a "
                                                "unit attention pending; REQUEST SENSE has its own rule"),
    "unit_attention_clear": Fact("when-reported", "SAM-5 5.14 / SPC-4 (recalled): a unit attention condition is "
                                                  "cleared when it is reported; a command rejected for another reason "
                                                  "leaves it pending"),
    "unit_attention_taken_when_made": Fact(False, "SAM-5 5.14 (recalled): a command the transport rejects never "
                                                  "reaches the device server, which keeps the unit attention"),
    "mode_select_block_lengths": Fact(None, f"{SBC3} block descriptor: a BLOCK LENGTH the disk does not support is "
                                            "INVALID FIELD IN PARAMETER LIST; this disk supports only its own"),
    "allocation_rule": Fact("spc", f"{SPC4}: the data up to the ALLOCATION LENGTH, no padding"),
    "max_allocation_length": Fact(None, f"{SPC4}: any allocation length is valid"),
})

VIRTIO_SCSI_FACTS = {
    "num_queues": Fact(1, f"choice: {VS} 5.6.4 num_queues; one request queue"),
    "queue_size": Fact(256, f"choice: {VS} 2.7 allows up to 32768; 256 as QEMU"),
    "seg_max": Fact(254, f"choice: {VS} 5.6.4 seg_max; queue size - 2 leaves room for the two headers"),
    "max_sectors": Fact(0xFFFF, f"choice: {VS} 5.6.4 max_sectors is a hint; 0xFFFF as QEMU"),
    "cmd_per_lun": Fact(128, f"choice: {VS} 5.6.4 cmd_per_lun; 128 as QEMU"),
    "max_target": Fact(255, f"{VS} 5.6.4: max_target SHOULD be at most 255"),
    "max_lun": Fact(16383, f"{VS} 5.6.4: max_lun SHOULD be at most 16383"),
    "hotplug": Fact(True, f"choice: {VS} 5.6.3 VIRTIO_SCSI_F_HOTPLUG offered"),
    "param_change": Fact(True, f"choice: {VS} 5.6.3 VIRTIO_SCSI_F_CHANGE offered (PARAM_CHANGE events)"),
    "indirect_desc": Fact(True, f"choice: {VS} 2.7.5.3 indirect descriptors offered"),
    "event_idx": Fact(True, f"choice: {VS} 2.7.7-2.7.10 event index offered"),
    "any_layout": Fact(False, f"{VS} 6: VIRTIO_F_ANY_LAYOUT is a legacy bit, implied by VERSION_1, not offered"),
    "framing": Fact("spec", f"{VS} 2.6.4: message framing does not depend on buffer boundaries"),
    "used_len": Fact("written", f"{VS} 2.7.8: len is the number of bytes written into the device-writable "
                                "buffers"),
    "residual": Fact("spec", f"{VS} 5.6.6.1: residual = data_length - number_of_transferred_bytes"),
    "addressing": Fact("spec", f"{VS} 5.6.6.1: byte 0 = 1, target, a single-level LUN, four zero bytes; SPC-4 "
                               "answers for a logical unit that is not supported (no other LU's state involved)"),
}

PROFILE = Profile("strict", HYPERVISOR, (
    FamilyProfile(ATA, "the ATA/ACS-3 and AHCI 1.3.1 standards: IDNF for out-of-range LBAs, integrity word, "
                       "RZAT from the drive's real read-after-discard", ATA_FACTS),
    FamilyProfile(AHCI, "AHCI 1.3.1: PxCI kept on error, TFES alone, a D2H FIS for each queued command", AHCI_FACTS),
    FamilyProfile(VIRTIO_BLK, "the virtio 1.2 specification: exact request types, used length = bytes written, "
                              "several discard / write-zeroes segments per request, features checked at FEATURES_OK",
                  VIRTIO_BLK_FACTS),
    FamilyProfile(VIRTIO_PCI, "virtio 1.2: features checked at FEATURES_OK, ISR bit 1 for a configuration change",
                  VIRTIO_PCI_FACTS),
    FamilyProfile(SCSI, "SBC-3 / SPC-4: limits enforced, GET LBA STATUS from the image, LBPRZ from the drive's real "
                        "read-after-unmap, descriptor sense on D_SENSE", SCSI_FACTS),
    FamilyProfile(VIRTIO_SCSI, "the virtio 1.2 specification: framing by header sizes, used length = bytes written, "
                               "residual always reported, exact LUN field", VIRTIO_SCSI_FACTS),
))
