"""Controller front ends (IDE/AHCI, virtio-blk, virtio-scsi) and their guest-side driver models.

They decode guest commands from guest memory into `emu.block.Request`s; see ../shared/DESIGN.md.
Filled by the ATA and virtio issues.
"""
