"""The families profiles are made of, and the two shapes of profile.

A hypervisor (or standard) profile states the emulated devices: the ATA device and the AHCI HBA it may sit
behind, virtio-blk and the virtio-pci transport, the SCSI disk and the virtio-scsi HBA. A guest profile states
what one kernel's drivers chose: its block layer, libata, sd, virtio_blk and virtio_scsi. The listing keeps the
device families grouped as README's profile tables are (the HBA under its ATA device, the transport under
virtio-blk), each of those families' facts prefixed with its part.
"""

from __future__ import annotations

from controllers.ahci_config import AhciConfig
from controllers.ata.config import AtaConfig
from controllers.drivers.config import (
    BlockLayerConfig,
    LibataConfig,
    SdConfig,
    VirtioBlkDriverConfig,
    VirtioScsiDriverConfig,
)
from controllers.scsi.config import ScsiDiskConfig
from controllers.virtio.blk import VirtioBlkConfig
from controllers.virtio.pci import VirtioPciConfig
from controllers.virtio.scsi import VirtioScsiConfig
from scenarios.profiles.family import Family, Section, Shape

# The image's capacity; the CHS geometry (None: QEMU's guess from the capacity) depends on the disk's content,
# an MBR, which only the creator knows; the NCQ depth differs by the controller the device sits behind.
ATA = Family("ata", AtaConfig, given=("capacity_sectors", "chs"), variants=("ide", "ahci"), variant_of="controller")
AHCI = Family("ahci", AhciConfig)
VIRTIO_BLK = Family("virtio-blk", VirtioBlkConfig, given=("capacity_sectors", "read_only"))
VIRTIO_PCI = Family("virtio-pci", VirtioPciConfig)
SCSI = Family("scsi", ScsiDiskConfig, given=("capacity_blocks", "block_size", "read_only"))
VIRTIO_SCSI = Family("virtio-scsi", VirtioScsiConfig)

HYPERVISOR = Shape("hypervisor", (
    Section("ata", ((ATA, ""), (AHCI, "ahci."))),
    Section("virtio-blk", ((VIRTIO_BLK, "blk."), (VIRTIO_PCI, "pci."))),
    Section("scsi", ((SCSI, ""),)),
    Section("virtio-scsi", ((VIRTIO_SCSI, ""),)),
))

BLOCK = Family("block", BlockLayerConfig)
LIBATA = Family("libata", LibataConfig)
SD = Family("sd", SdConfig)
VIRTIO_BLK_DRIVER = Family("virtio_blk", VirtioBlkDriverConfig)
VIRTIO_SCSI_DRIVER = Family("virtio_scsi", VirtioScsiDriverConfig)

GUEST = Shape("guest", tuple(Section(family.name, ((family, ""),))
                             for family in (BLOCK, LIBATA, SD, VIRTIO_BLK_DRIVER, VIRTIO_SCSI_DRIVER)))
