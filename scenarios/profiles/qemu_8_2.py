"""QEMU 8.2: the 7.2 facts where 8.2.1 behaves the same, and every difference with its source.

Read from the upstream tree at the release commit (8.2.1 = f48c205fb4); what is unchanged since 7.2.0 keeps
7.2.0's source (scenarios/profiles/qemu_7_2.py), and the notes say where the two trees were compared.
"""

from __future__ import annotations

from scenarios.profiles import qemu_7_2
from scenarios.profiles.facts import Fact, MachineTypes
from scenarios.profiles.families import AHCI, ATA, HYPERVISOR, SCSI, VIRTIO_BLK, VIRTIO_PCI, VIRTIO_SCSI
from scenarios.profiles.family import FamilyProfile, Profile
from scenarios.profiles.qemu_7_2 import AHCI_SERIES

Q82 = "QEMU 8.2.1 (f48c205fb4)"
AHCI82 = f"{Q82} hw/ide/ahci.c"
SD82 = f"{Q82} hw/scsi/scsi-disk.c"

# -- AHCI HBA: the reworked completion and error reporting ------------------------------------------------

AHCI_FACTS = {
    "pxci_rule": Fact("on-success", f"{AHCI82} ahci_clear_cmd_issue: only a completion without ERR, BSY and "
                                    "DRQ clears PxCI; no further slot after an error; a port reset clears it "
                                    f"({AHCI_SERIES}: e2a5d9b3d9, 1a16ce64fd, eabb921250)"),
    "ncq_issue_d2h": Fact(True, f"{AHCI82} process_ncq_command answers with a D2H FIS, I = 0 (2967dc8209)"),
    "stop_clears_ci": Fact(True, f"{AHCI82} ahci_port_write PORT_CMD: ST 1->0 clears PxCI and PxSACT "
                                 "(d73b84d0b6)"),
    "error_irq": Fact("tfes", f"{AHCI82} ahci_write_fis_d2h: TFES or DHRS, never both (b523a3d54f)"),
    "ncq_error": Fact("tfes", f"{AHCI82} ncq_err / ahci_write_fis_sdb: the SDB FIS raises TFES, PxSERR is "
                              "left alone (7e85cb0db4, 9f89423537)"),
    "abort_fis_before_err": Fact(False, f"{Q82} hw/ide/core.c ide_abort_command sets ERR before the FIS is "
                                        "written (c3461c6264)"),
}

# -- virtio-blk: zone reports ---------------------------------------------------------------------------------

VIRTIO_BLK_FACTS = {
    **qemu_7_2.VIRTIO_BLK_FACTS,
    "zone_report_buffer_check": Fact(True, f"{Q82} hw/block/virtio-blk.c virtio_blk_handle_zone_report: "
                                           "in_len < inhdr + zone report + one descriptor -> virtio_error, "
                                           "before check_zoned_request answers UNSUPP (4f7366506a, QEMU 8.1)"),
}

# -- SCSI disk: unit attentions, MODE SELECT, FORMAT UNIT -----------------------------------------------------

SCSI_FACTS = dict(qemu_7_2.SCSI_FACTS)   # scsi-disk.c, scsi-bus.c, emulation.c: no other guest-visible change
SCSI_FACTS.update({
    "unit_attention_clear": Fact("when-reported", f"{Q82} hw/scsi/scsi-bus.c scsi_fetch_unit_attention_sense: "
                                                  "the request that reports a unit attention takes it when made; "
                                                  "scsi_req_complete no longer clears one (9472083e64, ba947dab98, "
                                                  "2eb5599e8a, QEMU 8.1)"),
    "unit_attention_taken_when_made": Fact(True, f"{Q82} hw/scsi/scsi-bus.c scsi_req_alloc -> init_req "
                                                 "scsi_fetch_unit_attention_sense (9472083e64)"),
    "mode_select_block_lengths": Fact(0xFE00, f"{SD82} scsi_disk_emulate_mode_select: bs & ~0xfe00, lengths "
                                              "below 512 no longer accepted (7cfcc79b0a, CVE-2023-42467); emu "
                                              "refuses a change instead (block size changes are not modelled)"),
    "no_op_commands": Fact((0x04, 0x16, 0x17, 0x1B, 0x1E, 0x2B, 0x56, 0x57),
                           f"{SD82} scsi_disk_emulate_command: FORMAT UNIT (with parameter data too: "
                           "scsi_disk_emulate_write_data completes it GOOD, be2b619a17), RESERVE/RELEASE (6) and (10), "
                           "START STOP, ALLOW MEDIUM REMOVAL and SEEK(10) as in 7.2"),
})

PROFILE = Profile("qemu-8.2", HYPERVISOR, (
    FamilyProfile(ATA, "QEMU 8.2 ide-hd on PIIX IDE or ICH9 AHCI: the 7.2 device behind an HBA that completes and "
                       "reports errors as AHCI 1.3.1 says", qemu_7_2.ATA_FACTS, notes=(
        f"The device facts are 7.2.0's: hw/ide/core.c has no guest-visible change for ide-hd up to {Q82} "
        "(7d7512019f only matters with DMA in flight at a bus reset), and hw_compat_7_2 .. hw_compat_8_1 set "
        "nothing for ide or ahci.",
    )),
    FamilyProfile(AHCI, "QEMU 8.2 ICH9 AHCI HBA, reworked to AHCI 1.3.1: PxCI kept on error, TFES alone",
                  AHCI_FACTS, notes=(
        "The AHCI series was merged on 2023-09-07 (13d9f6dca0), after 8.1.0 was tagged: QEMU 8.1.0 behaves as "
        "7.2.0 here (pxci_rule after-handling, ncq_error serr-tag, no NCQ D2H FIS, ST 1->0 keeps PxCI). The 7.2 "
        "stable series took the series in v7.2.6 and v7.2.8, so qemu-7.2 differs from this profile in error_irq "
        "only.",
    )),
    FamilyProfile(VIRTIO_BLK, "QEMU 8.2 virtio-blk-pci (modern): as 7.2, and a ZONE_REPORT with a short buffer "
                              "breaks the device", VIRTIO_BLK_FACTS, notes=(
        f"Every other fact is 7.2.0's: hw/block/virtio-blk.c, hw/virtio/virtio.c and virtio-pci.c have no other "
        f"guest-visible change for a drive that is not zoned up to {Q82}, and hw_compat_7_2 .. hw_compat_8_1 set "
        "nothing for virtio-blk or virtio-pci.",
    )),
    FamilyProfile(VIRTIO_PCI, "QEMU 8.2 virtio-pci (modern): as 7.2", qemu_7_2.VIRTIO_PCI_FACTS),
    FamilyProfile(SCSI, "QEMU 8.2 scsi-hd: as 7.2, but a unit attention is cleared only by reporting it, FORMAT UNIT "
                        "with parameter data completes, MODE SELECT accepts only block lengths of 512 x k",
                  SCSI_FACTS),
    FamilyProfile(VIRTIO_SCSI, "QEMU 8.2 virtio-scsi-pci (modern): the transport as in 7.2",
                  qemu_7_2.VIRTIO_SCSI_FACTS, notes=(
        f"{Q82} hw/scsi/virtio-scsi.c has no other guest-visible change for these facts since "
        "7.2.0; LOGICAL UNIT RESET and I_T NEXUS RESET complete from a bottom half since 8.0 (be2c42b97c), with "
        "the same responses, which emu gives at once.",
        qemu_7_2.VIRTIO_SCSI_NOTE,
    )),
), machines=MachineTypes("8.2", {"pc": ("pc-i440fx-8.2",), "q35": ("pc-q35-8.2",)},
                         f"{Q82} hw/i386/pc_piix.c, pc_q35.c: the newest machine types of the release"))
