"""linux-6.1: the limits, retries and timeouts a Linux 6.1 guest's block layer and drivers work to.

The guest-driver models (controllers/drivers/) follow Linux 6.1's logic; these are the numbers that logic was
given there, each with the file and function or macro it is read from. A simulated second stands for a second
of the guest's clock (HZ ticks).
"""

from __future__ import annotations

from controllers.virtio import layouts as V
from scenarios.profiles.facts import Fact
from scenarios.profiles.families import BLOCK, GUEST, LIBATA, SD, VIRTIO_BLK_DRIVER, VIRTIO_SCSI_DRIVER
from scenarios.profiles.family import FamilyProfile, Profile

L61 = "Linux 6.1"

BLOCK_FACTS = {
    "max_sectors": Fact(2560, f"{L61} include/linux/blkdev.h BLK_DEF_MAX_SECTORS (1280 KiB per read or write "
                              "request); blk_queue_max_hw_sectors caps max_sectors at it, and virtblk_probe sets "
                              "max_hw_sectors to -1U, so it is virtio_blk's limit"),
    "max_segment_size": Fact(65536, f"{L61} include/linux/blkdev.h BLK_MAX_SEGMENT_SIZE, the segment size "
                                    "blk_set_default_limits gives and the SCSI midlayer keeps (sysfs "
                                    "max_segment_size 65536 on ata_piix, ahci and virtio-scsi)"),
    "request_timeout": Fact(30.0, f"{L61} block/blk-mq.c blk_mq_init_allocated_queue: rq_timeout 30 * HZ when "
                                  "the tag set gives none (blk-mq's default request timeout)"),
    "zero_pages_bytes": Fact(1 << 20, f"{L61} block/blk-lib.c __blkdev_issue_zero_pages: bios of at most "
                                      "BIO_MAX_VECS (256) pages of 4 KiB"),
}

LIBATA_FACTS = {
    "max_trim_rnum": Fact(64, f"{L61} include/linux/ata.h ATA_MAX_TRIM_RNUM: the entries of the one 512-byte "
                              "block drivers/ata/libata-scsi.c ata_format_dsm_trim_descr fills per TRIM"),
    "max_sectors": Fact(256, f"{L61} include/linux/ata.h ATA_MAX_SECTORS: lba_28_ok's limit, and the max_sectors "
                             "libata-core.c ata_dev_configure gives a disk without LBA48, or a PATA-looking disk on "
                             "a SATA port (ata_dev_knobble: QEMU's ide-hd behind AHCI, sysfs max_hw_sectors_kb 128)"),
    "max_sectors_lba48": Fact(65535, f"{L61} include/linux/ata.h ATA_MAX_SECTORS_LBA48, ata_dev_configure's limit "
                                     "for an LBA48 disk (sysfs max_hw_sectors_kb 32767 under ata_piix)"),
    "piix_max_segments": Fact(128, f"{L61} include/linux/libata.h LIBATA_MAX_PRD, ATA_BMDMA_SHT's sg_tablesize "
                                   "(sysfs max_segments 128 under ata_piix)"),
    "ahci_max_segments": Fact(168, f"{L61} drivers/ata/ahci.h AHCI_MAX_SG, AHCI_SHT's sg_tablesize (sysfs "
                                   "max_segments 168 under ahci)"),
}

SD_FACTS = {
    "command_timeout": Fact(30.0, f"{L61} drivers/scsi/sd.h SD_TIMEOUT (30 * HZ), the queue timeout sd_probe "
                                  "sets: the timer of every command sd sends, libata's translated ones included"),
    "spinup_tries": Fact(3, f"{L61} drivers/scsi/sd.c sd_spinup_disk: TEST UNIT READY retried while the disk "
                            "reports a unit attention, 3 tries"),
    "max_xfer_blocks": Fact(0xFFFFFFFF, f"{L61} drivers/scsi/sd.h SD_MAX_XFER_BLOCKS: the transfer limit when the "
                                        "Block Limits page gives none (sd_revalidate_disk)"),
    "max_ws10_blocks": Fact(0xFFFF, f"{L61} drivers/scsi/sd.h SD_MAX_WS10_BLOCKS: sd_config_discard's cap in the "
                                    "writesame_10 and writesame_zero modes"),
    "max_ws16_blocks": Fact(0x7FFFFF, f"{L61} drivers/scsi/sd.h SD_MAX_WS16_BLOCKS: sd_config_discard's cap in the "
                                      "unmap and writesame_16 modes"),
    "vpd_pages_len": Fact(255, f"{L61} drivers/scsi/scsi.c scsi_get_vpd_buf: SCSI_VPD_PG_LEN, the buffer the "
                               "supported-pages list (00h) is read into"),
    "block_limits_len": Fact(64, f"{L61} drivers/scsi/sd.c sd_read_block_limits: the Block Limits page (B0h) "
                                 "read with a 64-byte buffer, the length of its UNMAP and WRITE SAME fields"),
    "provisioning_len": Fact(8, f"{L61} drivers/scsi/sd.c sd_read_block_provisioning: the Logical Block "
                                "Provisioning page (B2h) read with an 8-byte buffer (header, LBPU / LBPWS bits)"),
}

VIRTIO_BLK_FACTS = {
    "features": Fact((V.BLK_F_SIZE_MAX, V.BLK_F_SEG_MAX, V.BLK_F_GEOMETRY, V.BLK_F_RO, V.BLK_F_BLK_SIZE,
                      V.BLK_F_FLUSH, V.BLK_F_TOPOLOGY, V.BLK_F_CONFIG_WCE, V.BLK_F_MQ, V.BLK_F_DISCARD,
                      V.BLK_F_WRITE_ZEROES, V.BLK_F_SECURE_ERASE, V.F_INDIRECT_DESC, V.F_EVENT_IDX, V.F_VERSION_1),
                     f"{L61} drivers/block/virtio_blk.c features[]: SIZE_MAX, SEG_MAX, GEOMETRY, RO, BLK_SIZE, "
                     "FLUSH, TOPOLOGY, CONFIG_WCE, MQ, DISCARD, WRITE_ZEROES, SECURE_ERASE; drivers/virtio/"
                     "virtio_ring.c vring_transport_features keeps INDIRECT_DESC, EVENT_IDX and VERSION_1"),
    "max_discard_segments": Fact(256, f"{L61} drivers/block/virtio_blk.c MAX_DISCARD_SEGMENTS, virtblk_probe's cap "
                                      "on max_discard_seg"),
}

VIRTIO_SCSI_FACTS = {
    "features": Fact((V.SCSI_F_HOTPLUG, V.SCSI_F_CHANGE, V.F_INDIRECT_DESC, V.F_EVENT_IDX, V.F_VERSION_1),
                     f"{L61} drivers/scsi/virtio_scsi.c features[]: HOTPLUG, CHANGE (T10_PI only with "
                     "CONFIG_BLK_DEV_INTEGRITY, left out); vring_transport_features keeps INDIRECT_DESC, EVENT_IDX "
                     "and VERSION_1"),
    "event_buffers": Fact(8, f"{L61} drivers/scsi/virtio_scsi.c VIRTIO_SCSI_EVENT_LEN, the event buffers "
                             "virtscsi_kick_event_all posts"),
}

PROFILE = Profile("linux-6.1", GUEST, (
    FamilyProfile(BLOCK, "Linux 6.1 block layer (blk-mq): request size, request timer, zero-page writes",
                  BLOCK_FACTS),
    FamilyProfile(LIBATA, "Linux 6.1 libata under ata_piix and ahci: one block of TRIM ranges, LBA28 transfers",
                  LIBATA_FACTS),
    FamilyProfile(SD, "Linux 6.1 sd: command timer, spin-up, discard caps per provisioning mode, VPD buffers",
                  SD_FACTS, notes=(
        "ata_piix and ahci commands are SCSI commands translated by libata, so sd's timer is theirs too.",
    )),
    FamilyProfile(VIRTIO_BLK_DRIVER, "Linux 6.1 virtio_blk: the features it accepts, discard segments",
                  VIRTIO_BLK_FACTS),
    FamilyProfile(VIRTIO_SCSI_DRIVER, "Linux 6.1 virtio_scsi: the features it accepts, event buffers",
                  VIRTIO_SCSI_FACTS),
))
