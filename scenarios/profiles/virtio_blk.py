"""Named virtio-blk device profiles: `VirtioBlkConfig` and `VirtioPciConfig` values, each with its source.

The same three names as the ATA profiles (scenarios/profiles/ata.py). QEMU facts were read from the upstream
tree (hw/block/virtio-blk.c, hw/virtio/virtio.c, hw/virtio/virtio-pci.c, hw/core/machine.c hw_compat_*) and
../shared/research/controllers.md sections 4 and 9; spec facts name the virtio 1.2 (OASIS virtio-v1.2-cs01)
section they rest on, and a value the spec leaves open says it is a choice.

emu models the virtio-pci *modern* interface only. Machine types up to 2.6 default virtio-pci to legacy-only
(hw_compat_2_6: disable-modern=on); the qemu-1.4-pc profile therefore describes such a machine with the modern
interface switched on (`-device virtio-blk-pci,disable-modern=off`), which changes nothing below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controllers.virtio.blk import VirtioBlkConfig
from controllers.virtio.pci import VirtioPciConfig
from scenarios.profiles.facts import Fact, check_facts, config_from_facts, lookup

GIVEN = ("capacity_sectors", "read_only")      # known only when the disk is attached

Q72 = "QEMU 7.2.0 (b67b00e6b4)"
VS = "virtio 1.2"
COMPAT_3_1 = ("hw_compat_3_1 (hw/core/machine.c): virtio-blk-device discard=false, write-zeroes=false, added with "
              "the commands themselves (37b06f8d46 + 5c81161f80, QEMU 4.0)")


@dataclass(frozen=True)
class VirtioBlkProfile:
    """A named set of virtio-blk device facts (`blk`, every VirtioBlkConfig field but GIVEN) and transport facts
    (`pci`, every VirtioPciConfig field)."""

    name: str
    description: str
    blk: Mapping[str, Fact]
    pci: Mapping[str, Fact]
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_facts(f"virtio-blk profile {self.name}", VirtioBlkConfig, self.blk, given=GIVEN)
        check_facts(f"virtio-pci profile {self.name}", VirtioPciConfig, self.pci)


_QEMU_72_BLK = {
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
    "discard": Fact(True, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_BIT64(\"discard\", ..., true) "
                          "(controllers.md 4.1)"),
    "write_zeroes": Fact(True, f"{Q72} hw/block/virtio-blk.c: DEFINE_PROP_BIT64(\"write-zeroes\", ..., true)"),
    "max_discard_sectors": Fact(4194303, f"{Q72} property max-discard-sectors default BDRV_REQUEST_MAX_SECTORS; "
                                         "virtio_blk_handle_discard_write_zeroes answers IOERR above it"),
    "max_discard_seg": Fact(1, f"{Q72} virtio_blk_update_config: max_discard_seg = 1 (hard-coded); a payload "
                               "over 16 bytes is UNSUPP (controllers.md 4.4)"),
    "discard_sector_alignment": Fact(1, f"{Q72} virtio_blk_update_config: discard_granularity >> 9, default "
                                        "granularity = logical block size (report-discard-granularity on)"),
    "max_write_zeroes_sectors": Fact(4194303, f"{Q72} property max-write-zeroes-sectors default "
                                              "BDRV_REQUEST_MAX_SECTORS"),
    "max_write_zeroes_seg": Fact(1, f"{Q72} virtio_blk_update_config: max_write_zeroes_seg = 1"),
    "write_zeroes_may_unmap": Fact(True, f"{Q72} virtio_blk_update_config: write_zeroes_may_unmap = 1 always, "
                                         "even with discard=ignore (controllers.md 9.1)"),
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

_QEMU_72_PCI = {
    "features_check": Fact("qemu", f"{Q72} hw/virtio/virtio.c virtio_set_features_nocheck masks the accepted "
                                   "bits with host_features; virtio_set_status only calls validate_features"),
    "config_isr": Fact(0x3, f"{Q72} hw/virtio/virtio.c virtio_notify_config: virtio_set_isr(vdev, 0x3)"),
}

QEMU_7_2 = VirtioBlkProfile(
    name="qemu-7.2",
    description="QEMU 7.2 virtio-blk-pci (modern), machine types 5.2 and newer, one vCPU",
    blk=_QEMU_72_BLK,
    pci=_QEMU_72_PCI,
    notes=(
        f"{Q72} also offers VIRTIO_F_RING_RESET (queue_reset, hw_compat_7_1 turns it off); emu does not implement "
        "queue reset, so it is not offered.",
        "QEMU merges adjacent reads/writes (request-merging) before the block layer; the result is the same bytes.",
    ),
)

Q82 = "QEMU 8.2.1 (f48c205fb4)"

QEMU_8_2 = VirtioBlkProfile(
    name="qemu-8.2",
    description="QEMU 8.2 virtio-blk-pci (modern): as 7.2, and a ZONE_REPORT with a short buffer breaks the device",
    blk={**_QEMU_72_BLK,
         "zone_report_buffer_check": Fact(True, f"{Q82} hw/block/virtio-blk.c virtio_blk_handle_zone_report: "
                                                "in_len < inhdr + zone report + one descriptor -> virtio_error, "
                                                "before check_zoned_request answers UNSUPP (4f7366506a, QEMU 8.1)")},
    pci=_QEMU_72_PCI,
    notes=(
        f"Every other fact is 7.2.0's: hw/block/virtio-blk.c, hw/virtio/virtio.c and virtio-pci.c have no other "
        f"guest-visible change for a drive that is not zoned up to {Q82}, and hw_compat_7_2 .. hw_compat_8_1 set "
        "nothing for virtio-blk or virtio-pci.",
    ),
)

_QEMU_14_BLK = dict(_QEMU_72_BLK)
_QEMU_14_BLK.update({
    "discard": Fact(False, COMPAT_3_1),
    "write_zeroes": Fact(False, COMPAT_3_1),
    "queue_size": Fact(128, f"{Q72} hw_compat_4_2: virtio-blk-device queue-size=128"),
    "seg_max": Fact(126, f"{Q72} hw_compat_4_2: seg-max-adjust=off, so seg_max = 128 - 2"),
    "num_queues": Fact(1, f"{Q72} hw_compat_5_1: virtio-blk-pci num-queues=1"),
    "discard_sector_alignment": Fact(1, f"{Q72} hw_compat_5_2: report-discard-granularity=off -> blk_size >> 9 "
                                        "(and DISCARD is not offered at all)"),
    "commands_need_feature": Fact(False, f"{Q72} virtio_blk_handle_request executes DISCARD / WRITE_ZEROES even "
                                         "on a machine type that does not offer them (controllers.md 4.6)"),
})

QEMU_1_4_PC = VirtioBlkProfile(
    name="qemu-1.4-pc",
    description="QEMU 7.2 with machine type pc-i440fx-1.4 (any machine type up to 3.1): no DISCARD, no WRITE_ZEROES",
    blk=_QEMU_14_BLK,
    pci=_QEMU_72_PCI,
    notes=(
        "QEMU 1.4.0 itself has no DISCARD / WRITE_ZEROES at all (added in 4.0 by 37b06f8d46): it answers both "
        "types UNSUPP, which commands_need_feature=True would model.",
        "Machine types up to 2.6 make virtio-pci legacy-only by default (hw_compat_2_6 disable-modern=on); emu "
        "models the modern interface, as with disable-modern=off.",
    ),
)

_STRICT_BLK = {
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

_STRICT_PCI = {
    "features_check": Fact("spec", f"{VS} 3.1.1: the device fails FEATURES_OK when it cannot accept the "
                                   "features; 6.1: it may fail a driver that did not accept VERSION_1"),
    "config_isr": Fact(0x2, f"{VS} 4.1.4.5: ISR bit 1 = device configuration change"),
}

STRICT = VirtioBlkProfile(
    name="strict",
    description="the virtio 1.2 specification: exact request types, used length = bytes written, several "
                "discard / write-zeroes segments per request, features checked at FEATURES_OK",
    blk=_STRICT_BLK,
    pci=_STRICT_PCI,
)

PROFILES: dict[str, VirtioBlkProfile] = {p.name: p for p in (QEMU_7_2, QEMU_8_2, QEMU_1_4_PC, STRICT)}


def get_profile(name: str) -> VirtioBlkProfile:
    """The virtio-blk profile called `name`; an unknown name is a usage error naming the known ones."""
    return lookup(PROFILES, name)


def virtio_blk_config(profile_name: str, capacity_sectors: int, *, read_only: bool = False) -> VirtioBlkConfig:
    """The virtio-blk device configuration of a disk of `capacity_sectors` under `profile_name`."""
    return config_from_facts(VirtioBlkConfig, get_profile(profile_name).blk, capacity_sectors=capacity_sectors,
                             read_only=read_only)


def virtio_pci_config(profile_name: str) -> VirtioPciConfig:
    """The transport behaviours of `profile_name`."""
    return config_from_facts(VirtioPciConfig, get_profile(profile_name).pci)
