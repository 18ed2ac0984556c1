"""A SCSI disk (QEMU scsi-hd, or an SBC-3 direct-access logical unit) over a Drive, independent of the transport.

It is an SPC logical unit (spc.LogicalUnit: `plan` / `execute`, status and sense, unit attentions, INQUIRY,
MODE SENSE / MODE SELECT, REPORT LUNS, ...) whose device-type commands are SBC's (sbc.BlockCommands: reads and
writes, UNMAP, WRITE SAME, READ CAPACITY, SYNCHRONIZE CACHE, the block limits and provisioning pages, ...).
"""

from __future__ import annotations

from controllers.scsi.config import ScsiDiskConfig
from controllers.scsi.sbc import BlockCommands
from controllers.scsi.spc import LogicalUnit
from emu.block import Drive


class ScsiDisk(LogicalUnit):
    """A SCSI disk on one Drive: `block` holds its SBC commands and the state they change (the write cache)."""

    def __init__(self, drive: Drive, config: ScsiDiskConfig, luns: tuple[int, ...] = (0,)) -> None:
        self.block = BlockCommands(drive, config)
        super().__init__(config, self.block, luns)
        self.drive = drive
        self.bs = config.block_size

    @property
    def write_cache(self) -> bool:
        """Caching page WCE; MODE SELECT changes it."""
        return self.block.write_cache

    @write_cache.setter
    def write_cache(self, enabled: bool) -> None:
        self.block.write_cache = enabled
