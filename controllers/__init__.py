"""Controller front ends (IDE/AHCI, virtio-blk, virtio-scsi) and their guest-side driver models.

They decode guest commands from guest memory into `emu.block.Request`s; docs/architecture.md places them among
the layers and docs/controllers.md follows a discard through each of them.
"""
