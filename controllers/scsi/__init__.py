"""A SCSI block device (SBC-3 direct-access logical unit, as QEMU's scsi-hd), independent of its transport.

Modules: `layouts` (CDBs, parameter lists, VPD and mode pages, sense data in construct), `codec` (the fast
READ/WRITE CDB decoder checked against them), `sense` (named conditions, fixed and descriptor formats, backend
errno mapping), `config` (ScsiDiskConfig: every QEMU-vs-standard difference a field), `command` (data phase,
handler results and failures, ScsiResult), `spc` (LogicalUnit: how a command runs, and the primary commands any
device type answers), `sbc` (BlockCommands: the block commands over a Drive), `disk` (ScsiDisk: the two
together), `target` (the LUNs of one target, and what it answers for a missing one).
"""

from __future__ import annotations

from controllers.scsi.command import Direction, ScsiResult, Transfer
from controllers.scsi.config import ScsiDiskConfig
from controllers.scsi.disk import ScsiDisk
from controllers.scsi.sense import Sense
from controllers.scsi.spc import LogicalUnit

__all__ = ["Direction", "LogicalUnit", "ScsiDisk", "ScsiDiskConfig", "ScsiResult", "Sense", "Transfer"]
