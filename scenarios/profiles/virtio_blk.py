"""The virtio-blk device's and the virtio-pci transport's configuration under a hypervisor profile.

emu models the virtio-pci *modern* interface only; the transport's facts serve virtio-scsi too (the same hw/virtio
code runs both devices).
"""

from __future__ import annotations

from controllers.virtio.blk import VirtioBlkConfig
from controllers.virtio.pci import VirtioPciConfig
from scenarios.profiles.families import VIRTIO_BLK, VIRTIO_PCI
from scenarios.profiles.registry import get_profile


def virtio_blk_config(profile_name: str, capacity_sectors: int, *, read_only: bool = False) -> VirtioBlkConfig:
    """The virtio-blk device configuration of a disk of `capacity_sectors` under `profile_name`."""
    return get_profile(profile_name)[VIRTIO_BLK].config(capacity_sectors=capacity_sectors, read_only=read_only)


def virtio_pci_config(profile_name: str) -> VirtioPciConfig:
    """The transport behaviours of `profile_name`."""
    return get_profile(profile_name)[VIRTIO_PCI].config()
