"""qemu-1.4-pc: QEMU 7.2 (or any QEMU up to 8.1) running machine type pc-i440fx-1.4: no TRIM, no DISCARD offered.

What this profile states is what can be checked: Debian's QEMU 7.2.22 booted with `-machine pc-i440fx-1.4`
(tests/qtest/test_machine_types.py compares every guest-visible fact). The machine type's compat properties
(pc_compat_1_4, hw_compat_* up to 3.1) change what the guest is offered: no TRIM in IDENTIFY, no LBPME, no
DISCARD / WRITE_ZEROES, queues of 128, a page per queue doorbell, hw_version "1.4.0". The devices behind them are
QEMU 7.2's code: a command the guest sends although it was not offered runs as in 7.2. QEMU 1.4.0's own devices
(release commit 03e94e39ce) differed in what such commands did; the notes say how. emu models the virtio-pci modern
interface only: machine types up to 2.6 default virtio-pci to legacy-only (hw_compat_2_6: disable-modern=on), so
this profile describes such a machine with `disable-modern=off`, which changes nothing else here.
"""

from __future__ import annotations

from scenarios.profiles import qemu_7_2
from scenarios.profiles.facts import Fact, MachineTypes
from scenarios.profiles.families import AHCI, ATA, HYPERVISOR, SCSI, VIRTIO_BLK, VIRTIO_PCI, VIRTIO_SCSI
from scenarios.profiles.family import FamilyProfile, Profile
from scenarios.profiles.qemu_7_2 import Q72, SD72

Q14 = "QEMU 1.4.0 (03e94e39ce)"
SD14 = f"{Q14} hw/scsi-disk.c"
COMPAT_1_4 = "QEMU commit bf3caa3dc1 (pc: add compatibility machine types for 1.4), pc_compat_1_4"
COMPAT_3_1 = ("hw_compat_3_1 (hw/core/machine.c): virtio-blk-device discard=false, write-zeroes=false, added with "
              "the commands themselves (37b06f8d46 + 5c81161f80, QEMU 4.0)")


def no_trim_source(word: str) -> str:
    """Why IDENTIFY `word` (a TRIM bit) is clear on pc-1.4."""
    return (f"{COMPAT_1_4} sets ide-hd discard_granularity=0 on pc-i440fx-1.4 and older (still so in "
            f"{Q72} hw/i386/pc.c); QEMU 1.4.0 itself defaults it to 0 ({Q14} hw/block-common.h "
            f"DEFINE_BLOCK_PROPERTIES); ide_identify writes {word} only when it is non-zero")


# -- ATA device (ide-hd) and AHCI HBA --------------------------------------------------------------------

ATA_FACTS = dict(qemu_7_2.ATA_FACTS)   # every field is restated below with its 1.4.0 source
ATA_FACTS.update({
    "firmware": Fact("1.4.0", f"{Q72} hw/i386/pc_piix.c pc_i440fx_1_4_machine_options hw_version \"1.4.0\" "
                              f"-> qemu_hw_version(); {Q14} hw/ide/core.c ide_init_drive copies "
                              "qemu_get_version(), the release's own \"1.4.0\""),
    "trim": Fact(False, no_trim_source("word 169")),
    "drat": Fact(False, no_trim_source("word 69 bit 14")),
    "rzat": Fact(False, f"{Q14} hw/ide/core.c ide_identify: word 69 bit 5 never set"),
    "max_dsm_blocks": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 105 never written"),
    "out_of_range_error": Fact("abrt", f"{Q14} hw/ide/core.c: no range check of its own; the block layer's "
                                       "-EIO is reported by ide_rw_error / ide_dma_error as ERR + ABRT "
                                       f"(a newer QEMU on pc-1.4: {Q72} ide_sect_range_ok, also ABRT)"),
    "rotation_rate": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 217 not written (no rotation_rate "
                             "property yet)"),
    "physical_sector_exp": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 106 = 0x6000 | exp; "
                                   "hw/block-common.h physical_block_size default 512"),
    "multiple_sectors": Fact(16, f"{Q14} hw/ide/internal.h MAX_MULT_SECTORS 16"),
    "integrity_word": Fact(False, f"{Q14} hw/ide/core.c ide_identify: word 255 never written"),
    "diagnostic_completes": Fact(False, f"{Q72} on a pc-1.4 machine type: as qemu-7.2 (QEMU 1.4.0 itself wrote "
                                        f"the D2H FIS once READY_STAT was set, {Q14} hw/ide/ahci.c handle_cmd)"),
    "write_cache": Fact(True, f"{Q14} blockdev.c drive_init: BDRV_O_CACHE_WB by default; ide_identify word 85 "
                              "bit 5 = bdrv_enable_write_cache"),
    "model": Fact("QEMU HARDDISK", f"{Q14} hw/ide/core.c ide_init_drive: drive_model_str for IDE_HD"),
    "serial": Fact("QM00001", f"{Q14} hw/ide/core.c ide_init_drive: \"QM%05d\" of the drive counter"),
    "ncq_depth": {
        "ide": Fact(0, f"{Q14} hw/ide/core.c: ncq_queues 0 on PIIX, words 75/76 not written"),
        "ahci": Fact(32, f"{Q14} hw/ide/ahci.c: ncq_queues = AHCI_MAX_CMDS (32)"),
    },
})

AHCI_FACTS = {name: Fact(fact.value, f"as qemu-7.2 (a QEMU 7.2 running the pc-1.4 machine type): {fact.source}")
              for name, fact in qemu_7_2.AHCI_FACTS.items()}

# -- virtio-blk and the virtio-pci transport ---------------------------------------------------------

VIRTIO_BLK_FACTS = dict(qemu_7_2.VIRTIO_BLK_FACTS)
VIRTIO_BLK_FACTS.update({
    "discard": Fact(False, COMPAT_3_1),
    "write_zeroes": Fact(False, COMPAT_3_1),
    "queue_size": Fact(128, f"{Q72} hw_compat_4_2: virtio-blk-device queue-size=128"),
    "seg_max": Fact(126, f"{Q72} hw_compat_4_2: seg-max-adjust=off, so seg_max = 128 - 2"),
    "num_queues": Fact(1, f"{Q72} hw_compat_5_1: virtio-blk-pci num-queues=1"),
    "discard_sector_alignment": Fact(1, f"{Q72} hw_compat_5_2: report-discard-granularity=off -> blk_size >> 9 "
                                        "(and DISCARD is not offered at all)"),
    "commands_need_feature": Fact(False, f"{Q72} virtio_blk_handle_request executes DISCARD / WRITE_ZEROES even "
                                         "on a machine type that does not offer them"),
})

VIRTIO_PCI_FACTS = dict(qemu_7_2.VIRTIO_PCI_FACTS)
VIRTIO_PCI_FACTS["notify_off_multiplier"] = Fact(
    0x1000, f"{Q72} hw_compat_2_7: virtio-pci page-per-vq=on -> virtio_pci_queue_mem_mult "
            "QEMU_VIRTIO_PCI_QUEUE_MEM_MULT (0x1000); observed on Debian's QEMU 7.2.22 (machine type pc-i440fx-1.4): "
            "notify capability multiplier 0x1000, a 4 MiB notification area in an 8 MiB BAR")
VIRTIO_PCI_FACTS["ring_reset"] = Fact(False, f"{Q72} hw_compat_7_1: virtio-device queue_reset=false")

# -- SCSI disk (scsi-hd) and virtio-scsi HBA -------------------------------------------------------

SCSI_FACTS = dict(qemu_7_2.SCSI_FACTS)   # QEMU 7.2's scsi-hd; pc_compat_1_4 changes only these
SCSI_FACTS.update({
    "revision": Fact("1.4.", f"{Q72} hw/i386/pc_piix.c pc_i440fx_1_4_machine_options hw_version \"1.4.0\" -> "
                             "scsi_realize: version = qemu_hw_version(); scsi_disk_emulate_inquiry copies 4 bytes"),
    "lbpme": Fact(False, f"{COMPAT_1_4} sets scsi-hd discard_granularity=0 -> READ CAPACITY(16) byte 14 = 0; "
                         "observed on Debian's QEMU 7.2.22 (machine type pc-i440fx-1.4)"),
    "provisioning_type": Fact(1, f"{SD72} VPD B2h byte 6 = discard_granularity ? 2 : 1 (0 here); observed on "
                                 "Debian's QEMU 7.2.22 (machine type pc-i440fx-1.4)"),
    "discard_granularity": Fact(0, f"{COMPAT_1_4}: scsi-hd discard_granularity=0 (VPD B0h OPTIMAL UNMAP "
                                   "GRANULARITY 0)"),
})
SCSI_NOTE = (f"QEMU 1.4.0's own scsi-hd ({SD14}) differed from QEMU 7.2's on pc-1.4 as this profile has it: VPD 00h "
             "listed no B1h page; B0h had zero WSNZ, MAXIMUM TRANSFER LENGTH, UNMAP and WRITE SAME limits; WRITE "
             "SAME ran only with UNMAP (a discard, the data block never fetched) and ignored NDOB; UNMAP checked "
             "neither ANCHOR nor write protection; VERIFY checked its range and never compared; FORMAT UNIT was "
             "INVALID OPCODE; every BLOCK LENGTH of MODE SELECT was ignored. Those cannot be checked against a "
             "QEMU that still runs the machine type, so they are not modelled.")

VIRTIO_SCSI_FACTS = dict(qemu_7_2.VIRTIO_SCSI_FACTS)
VIRTIO_SCSI_FACTS.update({
    "queue_size": Fact(128, f"{Q72} hw_compat_4_2: virtio-scsi-device virtqueue_size=128"),
    "seg_max": Fact(126, f"{Q72} hw_compat_4_2: virtio-scsi-device seg_max_adjust=off -> seg_max = 128 - 2"),
    "num_queues": Fact(1, f"{Q72} hw_compat_5_1: virtio-scsi-device num_queues=1"),
    "any_layout": Fact(False, f"{Q72} hw_compat_2_1: virtio-scsi-pci any_layout=off"),
})

PROFILE = Profile("qemu-1.4-pc", HYPERVISOR, (
    FamilyProfile(ATA, "QEMU 7.2 (up to 8.1) with machine type pc-i440fx-1.4 or older: no TRIM advertised, a DSM "
                       "TRIM still executed", ATA_FACTS, notes=(
        f"A DSM TRIM the guest sends anyway is executed, as in QEMU 1.4.0 itself ({Q14} hw/ide/core.c "
        f"ide_exec_cmd WIN_DSM; {Q72} cmd_data_set_management): both check the FEATURE only, never word 169; "
        "observed on Debian's QEMU 7.2.22 (machine type pc-i440fx-1.4, emu replay --diff).",
        "QEMU 1.4.0 wrote words 60-61 as the 32-bit capacity without the 2^28-1 clamp newer QEMU applies "
        f"({Q14} ide_identify); AtaConfig has no field for it, so disks of 2^28 sectors (128 GiB) or more show "
        "the clamped value here.",
        "pc-i440fx-1.4..1.7 were removed in QEMU 8.2 (ea985d235b).",
    )),
    FamilyProfile(AHCI, "QEMU 7.2's ICH9 AHCI HBA on the pc-1.4 machine type", AHCI_FACTS, notes=(
        "The AHCI HBA facts are QEMU 7.2's. QEMU 1.4.0's own HBA differs again (handle_cmd wrote the D2H FIS "
        "itself once READY_STAT was set) and is not modelled.",
    )),
    FamilyProfile(VIRTIO_BLK, "QEMU 7.2 with machine type pc-i440fx-1.4 (any machine type up to 3.1): no DISCARD, "
                              "no WRITE_ZEROES", VIRTIO_BLK_FACTS, notes=(
        "QEMU 1.4.0 itself has no DISCARD / WRITE_ZEROES at all (added in 4.0 by 37b06f8d46): it answers both "
        "types UNSUPP, which commands_need_feature=True would model.",
        "Machine types up to 2.6 make virtio-pci legacy-only by default (hw_compat_2_6 disable-modern=on); emu "
        "models the modern interface, as with disable-modern=off.",
    )),
    FamilyProfile(VIRTIO_PCI, "QEMU 7.2 virtio-pci (modern) on the pc-1.4 machine type: a page per queue doorbell",
                  VIRTIO_PCI_FACTS),
    FamilyProfile(SCSI, "QEMU 7.2 scsi-hd with machine type pc-i440fx-1.4: no LBPME, not thin-provisioned, "
                        "revision 1.4.", SCSI_FACTS, notes=(SCSI_NOTE,)),
    FamilyProfile(VIRTIO_SCSI, "QEMU 7.2 with machine type pc-i440fx-1.4: queues of 128, seg_max 126, no ANY_LAYOUT",
                  VIRTIO_SCSI_FACTS, notes=(
        f"{Q14} hw/virtio-scsi.c itself: VIRTIO_SCSI_VQ_SIZE 128, seg_max 126, max_sectors 0xFFFF, cmd_per_lun 128, "
        "HOTPLUG and CHANGE offered (hw/virtio-scsi.h) - the values above. virtio_scsi_parse_req took the first "
        "out / in buffer as the headers always and, with data in both directions, used the data-out and ignored "
        "the data-in (no FAILURE response).",
        f"{Q14} virtio_scsi_bad_req and virtio_scsi_set_config call exit(1) (the whole VM stops) where 7.2 calls "
        "virtio_error; emu models 7.2's broken device.",
        "Machine types up to 2.6 make virtio-pci legacy-only (hw_compat_2_6 disable-modern=on); emu models the "
        "modern interface, as with disable-modern=off.",
    )),
), machines=MachineTypes("7.2", {"pc": ("pc-i440fx-1.4",)},
                         f"{COMPAT_1_4}; {Q72} hw/i386/pc_piix.c pc_i440fx_1_4_machine_options (pc-q35 starts at 2.4 "
                         "in 7.2, so behind AHCI this profile cannot be booted)"))
