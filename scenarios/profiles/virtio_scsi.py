"""Named virtio-scsi HBA profiles: every `VirtioScsiConfig` value, with its source.

The same three names as the ATA, SCSI disk and virtio-blk profiles. The transport (virtio-pci) facts of a name are
those of scenarios/profiles/virtio_blk.py (`virtio_pci_config`: the same hw/virtio code serves both devices); the
logical units' `ScsiDiskConfig` comes from scenarios/profiles/scsi.py under the same name. QEMU facts were read
from the upstream tree at 7.2.0 (b67b00e6b4: hw/scsi/virtio-scsi.c, hw/virtio/virtio-scsi-pci.c, hw/core/machine.c
hw_compat_*) and 1.4.0 (03e94e39ce: hw/virtio-scsi.c, hw/virtio-scsi.h) and ../shared/research/controllers.md
section 6; spec facts name the virtio 1.2 (OASIS virtio-v1.2-cs01) section they rest on, and a value the spec
leaves open says it is a choice.

qemu-1.4-pc is QEMU 7.2 with machine type pc-i440fx-1.4, as in virtio_blk.py: emu models the virtio-pci modern
interface, which QEMU 1.4 did not have (its virtio-scsi was legacy-only). What QEMU 1.4.0's own virtio-scsi did
differently is in the profile's notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controllers.virtio.scsi import VirtioScsiConfig
from scenarios.profiles.facts import Fact, check_facts, config_from_facts, lookup

Q72 = "QEMU 7.2.0 (b67b00e6b4)"
VS72 = f"{Q72} hw/scsi/virtio-scsi.c"
Q14 = "QEMU 1.4.0 (03e94e39ce)"
VS = "virtio 1.2"

@dataclass(frozen=True)
class VirtioScsiProfile:
    """A named set of virtio-scsi device facts (`scsi`, every VirtioScsiConfig field)."""

    name: str
    description: str
    scsi: Mapping[str, Fact]
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_facts(f"virtio-scsi profile {self.name}", VirtioScsiConfig, self.scsi)


_QEMU_72 = {
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
    "any_layout": Fact(True, f"{Q72} DEFINE_VIRTIO_COMMON_FEATURES any_layout on (hw_compat_2_1 turns it off)"),
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

QEMU_7_2 = VirtioScsiProfile(
    name="qemu-7.2",
    description="QEMU 7.2 virtio-scsi-pci (modern), machine types 5.2 and newer, one vCPU",
    scsi=_QEMU_72,
    notes=(
        f"{VS72} virtio_scsi_handle_cmd_req_prepare / scsi_do_read: a READ or WRITE whose data buffer is larger "
        "than its transfer length moves the whole buffer (dma_blk_io over the full QEMUSGList); emu moves the "
        "transfer length only.",
    ),
)

QEMU_8_2 = VirtioScsiProfile(
    name="qemu-8.2",
    description="QEMU 8.2 virtio-scsi-pci (modern): the transport as in 7.2",
    scsi=_QEMU_72,
    notes=(
        "QEMU 8.2.1 (f48c205fb4) hw/scsi/virtio-scsi.c has no other guest-visible change for these facts since "
        "7.2.0; LOGICAL UNIT RESET and I_T NEXUS RESET complete from a bottom half since 8.0 (be2c42b97c), with "
        "the same responses, which emu gives at once.",
        QEMU_7_2.notes[0],
    ),
)

_QEMU_14 = dict(_QEMU_72)
_QEMU_14.update({
    "queue_size": Fact(128, f"{Q72} hw_compat_4_2: virtio-scsi-device virtqueue_size=128"),
    "seg_max": Fact(126, f"{Q72} hw_compat_4_2: virtio-scsi-device seg_max_adjust=off -> seg_max = 128 - 2"),
    "num_queues": Fact(1, f"{Q72} hw_compat_5_1: virtio-scsi-device num_queues=1"),
    "any_layout": Fact(False, f"{Q72} hw_compat_2_1: virtio-scsi-pci any_layout=off"),
})

QEMU_1_4_PC = VirtioScsiProfile(
    name="qemu-1.4-pc",
    description="QEMU 7.2 with machine type pc-i440fx-1.4: queues of 128, seg_max 126, no ANY_LAYOUT",
    scsi=_QEMU_14,
    notes=(
        f"{Q14} hw/virtio-scsi.c itself: VIRTIO_SCSI_VQ_SIZE 128, seg_max 126, max_sectors 0xFFFF, cmd_per_lun 128, "
        "HOTPLUG and CHANGE offered (hw/virtio-scsi.h) - the values above. virtio_scsi_parse_req took the first "
        "out / in buffer as the headers always and, with data in both directions, used the data-out and ignored "
        "the data-in (no FAILURE response).",
        f"{Q14} virtio_scsi_bad_req and virtio_scsi_set_config call exit(1) (the whole VM stops) where 7.2 calls "
        "virtio_error; emu models 7.2's broken device.",
        "Machine types up to 2.6 make virtio-pci legacy-only (hw_compat_2_6 disable-modern=on); emu models the "
        "modern interface, as with disable-modern=off.",
    ),
)

_STRICT = {
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

STRICT = VirtioScsiProfile(
    name="strict",
    description="the virtio 1.2 specification: framing by header sizes, used length = bytes written, residual "
                "always reported, exact LUN field",
    scsi=_STRICT,
)

PROFILES: dict[str, VirtioScsiProfile] = {p.name: p for p in (QEMU_7_2, QEMU_8_2, QEMU_1_4_PC, STRICT)}


def get_profile(name: str) -> VirtioScsiProfile:
    """The virtio-scsi profile called `name`; an unknown name is a usage error naming the known ones."""
    return lookup(PROFILES, name)


def virtio_scsi_config(profile_name: str) -> VirtioScsiConfig:
    """The virtio-scsi HBA configuration of `profile_name`."""
    return config_from_facts(VirtioScsiConfig, get_profile(profile_name).scsi)
