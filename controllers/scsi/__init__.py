"""A SCSI block device (SBC-3 direct-access logical unit, as QEMU's scsi-hd), independent of its transport.

Modules: `layouts` (CDBs, parameter lists, VPD and mode pages, sense data in construct), `codec` (the fast
READ/WRITE CDB decoder checked against them), `sense` (named conditions, fixed and descriptor formats, backend
errno mapping), `config` (ScsiDiskConfig: every QEMU-vs-SBC difference a field), `disk` (ScsiDisk: plan and
execute one CDB over a Drive). Facts and their sources: ../shared/research/controllers.md section 5.
"""

from __future__ import annotations

from controllers.scsi.config import ScsiDiskConfig
from controllers.scsi.disk import Direction, ScsiDisk, ScsiResult, Transfer
from controllers.scsi.sense import Sense

__all__ = ["Direction", "ScsiDisk", "ScsiDiskConfig", "ScsiResult", "Sense", "Transfer"]
