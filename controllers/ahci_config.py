"""How an AHCI HBA reports completions and errors: the parts of QEMU's hw/ide/ahci.c that changed between releases.

QEMU 8.2 rewrote AHCI completion and error reporting to follow AHCI 1.3.1 (Niklas Cassel's series, merged
2023-09-07 as 13d9f6dca0, after 8.1.0; commits named per field below); QEMU 7.2.0 and 8.1.0 behave the older way,
and the 7.2 stable series took all of it but b523a3d54f (v7.2.6, v7.2.8). A profile picks the values, the HBA never
compares versions. Defaults are QEMU 8.2's, which are also the standard's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PxciRule = Literal["on-success", "after-handling"]
ErrorIrq = Literal["tfes", "tfes+dhrs"]
NcqError = Literal["tfes", "serr-tag"]


@dataclass(frozen=True)
class AhciConfig:
    """The HBA's completion and error semantics."""

    # When a slot's PxCI bit clears. "on-success" (8.2: e2a5d9b3d9, 1a16ce64fd, eabb921250; AHCI 1.3.1 5.3.8
    # RegFIS:ClearCI): only a completion without ERR, BSY and DRQ (or a C = 1 reset FIS) clears it, a FIS the HBA
    # cannot use leaves it set, no further slot starts after an error, and a port reset clears PxCI.
    # "after-handling" (7.2.0 check_cmd): every slot handle_cmd got through is cleared, failed or not, the scan
    # goes on after an error, and a port reset leaves PxCI alone.
    pxci_rule: PxciRule = "on-success"
    # An accepted NCQ command is answered at once by a D2H FIS with I = 0 (8.2, 2967dc8209; SATA 3.5a 11.15
    # DFPDMAQ2). QEMU 7.2.0 sends no FIS until the Set Device Bits FIS.
    ncq_issue_d2h: bool = True
    # Writing PxCMD.ST from 1 to 0 clears PxCI and PxSACT (8.2, d73b84d0b6; AHCI 1.3.1 3.3.13, 3.3.14).
    stop_clears_ci: bool = True
    # Interrupt bits of a D2H FIS with ERR: "tfes" alone (8.2, b523a3d54f; AHCI 1.3.1 5.3.8.1 ERR:FatalTaskfile)
    # or "tfes+dhrs" (7.2, 8.1 and the 7.2 stable series raise DHRS as well).
    error_irq: ErrorIrq = "tfes"
    # A failed NCQ command: "tfes" (8.2, 7e85cb0db4 and 9f89423537: the SDB FIS raises TFES) or "serr-tag"
    # (7.2.0: the SDB FIS raises SDBS only, and ncq_err writes the tag's bit into PxSERR, where it also hides that
    # tag's later completions from the SDB FIS until the guest clears PxSERR).
    ncq_error: NcqError = "tfes"
    # An opcode QEMU's ide_cmd_table lacks: 7.2.0's ide_abort_command ended the transfer (writing the D2H FIS)
    # before it set ERR, so that FIS and PxTFD carry the previous command's status (fixed by c3461c6264).
    abort_fis_before_err: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("pxci_rule", ("on-success", "after-handling")), ("error_irq", ("tfes", "tfes+dhrs")),
                              ("ncq_error", ("tfes", "serr-tag"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
