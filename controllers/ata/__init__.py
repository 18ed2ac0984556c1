"""The ATA command set's wire and memory layouts, shared by the PIIX IDE and AHCI front ends and their guest
drivers: register blocks, SATA FISes, AHCI command lists and PRDTs, IDE bus-master PRDs, DSM range entries and
the IDENTIFY DEVICE page. Pure encode/decode only; device behaviour lives elsewhere.

Modules: `config` (AtaConfig, the device's configuration), `layouts` (construct definitions and constants),
`codec` (struct-based codecs for the per-command records), `identify` (IDENTIFY DEVICE), `dsm` (TRIM payloads),
`device` (AtaDevice: the command set of a hard disk, transport-independent).
Each module names the QEMU, Linux and standard sources of its facts.
"""

from __future__ import annotations

from controllers.ata.config import AtaConfig
from controllers.ata.device import AtaDevice, AtaRegisters, AtaResult, Protocol, Transfer
from controllers.ata.dsm import decode_ranges, encode_ranges
from controllers.ata.identify import ata_string, ata_string_decode, build_identify, parse_identify

__all__ = [
    "AtaConfig",
    "AtaDevice",
    "AtaRegisters",
    "AtaResult",
    "Protocol",
    "Transfer",
    "ata_string",
    "ata_string_decode",
    "build_identify",
    "decode_ranges",
    "encode_ranges",
    "parse_identify",
]
