"""The virtio-scsi HBA's configuration under a hypervisor profile (its transport: virtio_blk.virtio_pci_config,
its logical units: scsi.scsi_disk_config)."""

from __future__ import annotations

from controllers.virtio.scsi import VirtioScsiConfig
from scenarios.profiles.families import VIRTIO_SCSI
from scenarios.profiles.family import FamilyProfile
from scenarios.profiles.registry import HYPERVISORS, get_profile

# The virtio-scsi facts of every hypervisor profile, by profile name.
PROFILES: dict[str, FamilyProfile[VirtioScsiConfig]] = {name: p[VIRTIO_SCSI] for name, p in HYPERVISORS.items()}


def virtio_scsi_config(profile_name: str) -> VirtioScsiConfig:
    """The virtio-scsi HBA configuration of `profile_name`."""
    return get_profile(profile_name)[VIRTIO_SCSI].config()
