"""Named ATA device profiles: sets of `AtaConfig` values, each value with the source it was read from.

Issue 5: behaviour that differs between hypervisor versions, or between QEMU and the standard, is a field of
the device's configuration, never a version check in the controller; a profile is nothing but those values
plus where each came from, so `emu --help` and a reader can check every one. QEMU facts were read from the
upstream tree (release commits: 7.2.0 = b67b00e6b4, 1.4.0 = 03e94e39ce) and ../shared/research/controllers.md
(sections 1.1, 1.6, 1.7); standard facts name the ACS-3 (T13/2161-D) or AHCI 1.3.1 item they rest on, and a
value the standard leaves open says it is a choice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from controllers.ahci_config import AhciConfig
from controllers.ata.config import AtaConfig
from emu.errors import UsageError
from scenarios.profiles.facts import FROM_DRIVE, Fact, check_facts, config_from_facts, lookup, profile_fields

Controller = Literal["ide", "ahci"]
CONTROLLERS: tuple[str, ...] = ("ide", "ahci")


# AtaConfig fields a profile sets; capacity comes from the image and ncq_depth from the controller kind.
PROFILE_FIELDS = profile_fields(AtaConfig, given=("capacity_sectors", "ncq_depth", "chs"))


@dataclass(frozen=True)
class Profile:
    """A named set of ATA device facts. `fields` maps AtaConfig field names to Facts (every field in
    PROFILE_FIELDS, so nothing silently falls back to AtaConfig's own defaults); `ncq_depth` maps each
    controller kind to the NCQ depth the device advertises behind it (0 = no NCQ); `ahci` states every
    AhciConfig field (the HBA's completion and error semantics)."""

    name: str
    description: str
    fields: Mapping[str, Fact]
    ncq_depth: Mapping[str, Fact]
    ahci: Mapping[str, Fact]
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_facts(f"profile {self.name}", AtaConfig, self.fields, given=("capacity_sectors", "ncq_depth", "chs"))
        check_facts(f"profile {self.name} ahci", AhciConfig, self.ahci)
        if set(self.ncq_depth) != set(CONTROLLERS):
            raise ValueError(f"profile {self.name}: ncq_depth must cover exactly {', '.join(CONTROLLERS)}")

    def ata_config(self, capacity_sectors: int, controller: Controller,
                   read_zeroes_after_trim: bool | None = None) -> AtaConfig:
        """The device configuration for a disk of `capacity_sectors` behind `controller`.

        `read_zeroes_after_trim` is what the drive really does (Drive.zeroes_after_discard
        computes it from the drive's facts); only fields whose value is FROM_DRIVE use it, and None there means
        "not known", which must not promise zeros. QEMU profiles ignore it: QEMU never sets RZAT.
        """
        if controller not in self.ncq_depth:
            raise UsageError(f"controller '{controller}': profile {self.name} knows {', '.join(CONTROLLERS)}")
        values = {name: fact.value for name, fact in self.fields.items()}
        for name, value in values.items():
            if value == FROM_DRIVE:
                values[name] = bool(read_zeroes_after_trim)
        return AtaConfig(capacity_sectors=capacity_sectors, ncq_depth=self.ncq_depth[controller].value, **values)

    def ahci_config(self) -> AhciConfig:
        """The AHCI HBA's completion and error semantics."""
        return config_from_facts(AhciConfig, self.ahci)

    def facts(self) -> Iterator[tuple[str, Fact]]:
        """Every (label, Fact) of the profile: device fields, NCQ depth per controller kind, then the HBA's."""
        for name in PROFILE_FIELDS:
            yield name, self.fields[name]
        for kind in CONTROLLERS:
            yield f"ncq_depth[{kind}]", self.ncq_depth[kind]
        for name, fact in self.ahci.items():
            yield f"ahci.{name}", fact


# -- qemu-7.2 --------------------------------------------------------------------------------------------

Q72 = "QEMU 7.2.0 (b67b00e6b4)"

_QEMU_72_FIELDS = {
    "model": Fact("QEMU HARDDISK", f"{Q72} hw/ide/core.c ide_init_drive: drive_model_str for IDE_HD"),
    "serial": Fact("QM00001", f"{Q72} hw/ide/core.c ide_init_drive: \"QM%05d\" of the drive counter "
                              "(first disk; later disks count up)"),
    "firmware": Fact("2.5+", f"{Q72} include/qemu/hw-version.h QEMU_HW_VERSION, copied by ide_init_drive from "
                             "qemu_hw_version() (machine types after 2.4 set no hw_version)"),
    "write_cache": Fact(True, f"{Q72} hw/ide/core.c ide_identify word 85 bit 5 = blk_enable_write_cache "
                              "(default cache=writeback)"),
    "trim": Fact(True, f"{Q72} hw/ide/qdev.c ide_dev_initfn: discard_granularity -1 -> 512; ide_identify "
                       "word 169 = 1 when it is non-zero"),
    "drat": Fact(True, f"{Q72} hw/ide/core.c ide_identify: word 69 = 1 << 14 when discard_granularity != 0"),
    "rzat": Fact(False, f"{Q72} hw/ide/core.c ide_identify: word 69 bit 5 never set (controllers.md 1.1, 9.1)"),
    "max_dsm_blocks": Fact(0, f"{Q72} hw/ide/core.c ide_identify: word 105 never written; no DSM COUNT limit "
                              "enforced (controllers.md 1.1, 9.4)"),
    "out_of_range_error": Fact("abrt", f"{Q72} hw/ide/core.c ide_sect_range_ok fails -> ide_rw_error / "
                                       "ide_dma_error: ERR + ABRT, never IDNF (controllers.md 1.6)"),
    "rotation_rate": Fact(0, f"{Q72} hw/ide/qdev.c rotation_rate property default 0 -> word 217 = 0"),
    "physical_sector_exp": Fact(0, f"{Q72} hw/ide/core.c ide_identify: word 106 = 0x6000 | "
                                   "get_physical_block_exp (physical_block_size 512)"),
    "multiple_sectors": Fact(16, f"{Q72} hw/ide/internal.h MAX_MULT_SECTORS 16; ide_reset sets mult_sectors "
                                 "to it (words 47, 59)"),
    "integrity_word": Fact(False, f"{Q72} hw/ide/core.c ide_identify: word 255 never written"),
    "diagnostic_completes": Fact(False, f"{Q72} hw/ide/core.c cmd_exec_dev_diagnostic returns false and never "
                                        "calls ide_cmd_done, so hw/ide/ahci.c sends no D2H FIS and raises no "
                                        "interrupt (8.2 also leaves PxCI set: ahci_cmd_done never runs)"),
}

_QEMU_72_NCQ = {
    "ide": Fact(0, f"{Q72} hw/ide/core.c: ncq_queues stays 0 on PIIX (ide_cmd_table has no FPDMA opcodes), so "
                   "words 75/76 are 0"),
    "ahci": Fact(32, f"{Q72} hw/ide/ahci.c ahci_init: ncq_queues = AHCI_MAX_CMDS (32) -> word 75 = 31, "
                     "word 76 bit 8"),
}

_SERIES = "QEMU 8.2 AHCI series (Niklas Cassel, merged 2023-09 as 13d9f6dca0)"

_QEMU_72_AHCI = {
    "pxci_rule": Fact("after-handling", f"{Q72} hw/ide/ahci.c check_cmd clears PxCI whenever handle_cmd returns 0 "
                                        "(any FIS it got through, errors included) and ahci_cmd_done clears the "
                                        "busy slot unconditionally, then reschedules the scan; ahci_reset_port "
                                        f"leaves PxCI (changed by {_SERIES}: e2a5d9b3d9, 1a16ce64fd, eabb921250)"),
    "ncq_issue_d2h": Fact(False, f"{Q72} hw/ide/ahci.c process_ncq_command writes no D2H FIS (added by 2967dc8209)"),
    "stop_clears_ci": Fact(False, f"{Q72} hw/ide/ahci.c ahci_port_write PORT_CMD: ST 1->0 only unmaps the list "
                                  "(clearing PxCI/PxSACT added by d73b84d0b6)"),
    "error_irq": Fact("tfes+dhrs", f"{Q72} hw/ide/ahci.c ahci_write_fis_d2h: TFES when ERR_STAT, then DHRS always "
                                   "(exclusive since b523a3d54f, QEMU 8.2)"),
    "ncq_error": Fact("serr-tag", f"{Q72} hw/ide/ahci.c ncq_err: scr_err |= 1 << tag; ncq_finish sets the finished "
                                  "bit unless that PxSERR bit is set; ahci_write_fis_sdb raises SDBS only (fixed by "
                                  "7e85cb0db4 and 9f89423537)"),
    "abort_fis_before_err": Fact(True, f"{Q72} hw/ide/core.c ide_abort_command calls ide_transfer_stop (-> "
                                       "ide_cmd_done -> ahci_write_fis_d2h) before setting ERR_STAT, so an opcode "
                                       "ide_cmd_permitted refuses is reported with the previous status (fixed by "
                                       "c3461c6264)"),
}

QEMU_7_2 = Profile(
    name="qemu-7.2",
    description="QEMU 7.2 ide-hd on PIIX IDE or ICH9 AHCI, machine types 2.5 and newer",
    fields=_QEMU_72_FIELDS,
    ncq_depth=_QEMU_72_NCQ,
    ahci=_QEMU_72_AHCI,
    notes=(
        f"Machine types pc-i440fx-1.5..2.4 and pc-q35-2.4 differ only in the firmware string: their hw_version "
        f"(\"1.5.0\"..\"2.4.0\", {Q72} hw/i386/pc_piix.c, pc_q35.c) replaces \"2.5+\".",
    ),
)

# -- qemu-8.2 ----------------------------------------------------------------------------------------------

Q82 = "QEMU 8.2.1 (f48c205fb4)"
_AHCI82 = f"{Q82} hw/ide/ahci.c"

QEMU_8_2 = Profile(
    name="qemu-8.2",
    description="QEMU 8.2 ide-hd on PIIX IDE or ICH9 AHCI: the 7.2 device behind an HBA that completes and reports "
                "errors as AHCI 1.3.1 says",
    fields=_QEMU_72_FIELDS,
    ncq_depth=_QEMU_72_NCQ,
    ahci={
        "pxci_rule": Fact("on-success", f"{_AHCI82} ahci_clear_cmd_issue: only a completion without ERR, BSY and "
                                        "DRQ clears PxCI; no further slot after an error; a port reset clears it "
                                        f"({_SERIES}: e2a5d9b3d9, 1a16ce64fd, eabb921250)"),
        "ncq_issue_d2h": Fact(True, f"{_AHCI82} process_ncq_command answers with a D2H FIS, I = 0 (2967dc8209)"),
        "stop_clears_ci": Fact(True, f"{_AHCI82} ahci_port_write PORT_CMD: ST 1->0 clears PxCI and PxSACT "
                                     "(d73b84d0b6)"),
        "error_irq": Fact("tfes", f"{_AHCI82} ahci_write_fis_d2h: TFES or DHRS, never both (b523a3d54f)"),
        "ncq_error": Fact("tfes", f"{_AHCI82} ncq_err / ahci_write_fis_sdb: the SDB FIS raises TFES, PxSERR is "
                                  "left alone (7e85cb0db4, 9f89423537)"),
        "abort_fis_before_err": Fact(False, f"{Q82} hw/ide/core.c ide_abort_command sets ERR before the FIS is "
                                            "written (c3461c6264)"),
    },
    notes=(
        f"The device facts are 7.2.0's: hw/ide/core.c has no guest-visible change for ide-hd up to {Q82} "
        "(7d7512019f only matters with DMA in flight at a bus reset), and hw_compat_7_2 .. hw_compat_8_1 set "
        "nothing for ide or ahci.",
        "The AHCI series was merged on 2023-09-07 (13d9f6dca0), after 8.1.0 was tagged: QEMU 8.1 behaves as "
        "qemu-7.2 here.",
    ),
)

# -- qemu-1.4-pc -------------------------------------------------------------------------------------------

Q14 = "QEMU 1.4.0 (03e94e39ce)"
COMPAT_1_4 = "QEMU commit bf3caa3dc1 (pc: add compatibility machine types for 1.4), pc_compat_1_4"


def _no_trim_source(word: str) -> str:
    return (f"{COMPAT_1_4} sets ide-hd discard_granularity=0 on pc-i440fx-1.4 and older (still so in "
            f"{Q72} hw/i386/pc.c); QEMU 1.4.0 itself defaults it to 0 ({Q14} hw/block-common.h "
            f"DEFINE_BLOCK_PROPERTIES); ide_identify writes {word} only when it is non-zero")


_QEMU_14_FIELDS = dict(_QEMU_72_FIELDS)   # every field is restated below with its 1.4.0 source
_QEMU_14_FIELDS.update({
    "firmware": Fact("1.4.0", f"{Q72} hw/i386/pc_piix.c pc_i440fx_1_4_machine_options hw_version \"1.4.0\" "
                              f"-> qemu_hw_version(); {Q14} hw/ide/core.c ide_init_drive copies "
                              "qemu_get_version(), the release's own \"1.4.0\""),
    "trim": Fact(False, _no_trim_source("word 169")),
    "drat": Fact(False, _no_trim_source("word 69 bit 14")),
    "rzat": Fact(False, f"{Q14} hw/ide/core.c ide_identify: word 69 bit 5 never set"),
    "max_dsm_blocks": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 105 never written"),
    "out_of_range_error": Fact("abrt", f"{Q14} hw/ide/core.c: no range check of its own; the block layer's "
                                       "-EIO is reported by ide_rw_error / ide_dma_error as ERR + ABRT "
                                       f"(a newer QEMU on pc-1.4: {Q72} ide_sect_range_ok, also ABRT)"),
    "rotation_rate": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 217 not written (no rotation_rate "
                             "property yet)"),
    "physical_sector_exp": Fact(0, f"{Q14} hw/ide/core.c ide_identify: word 106 = 0x6000 | exp; "
                                   "hw/block-common.h physical_block_size default 512"),
    "multiple_sectors": Fact(16, f"{Q14} hw/ide/internal.h MAX_MULT_SECTORS 16"),
    "integrity_word": Fact(False, f"{Q14} hw/ide/core.c ide_identify: word 255 never written"),
    "diagnostic_completes": Fact(False, f"{Q72} on a pc-1.4 machine type: as qemu-7.2 (QEMU 1.4.0 itself wrote "
                                        f"the D2H FIS once READY_STAT was set, {Q14} hw/ide/ahci.c handle_cmd)"),
    "write_cache": Fact(True, f"{Q14} blockdev.c drive_init: BDRV_O_CACHE_WB by default; ide_identify word 85 "
                              "bit 5 = bdrv_enable_write_cache"),
    "model": Fact("QEMU HARDDISK", f"{Q14} hw/ide/core.c ide_init_drive: drive_model_str for IDE_HD"),
    "serial": Fact("QM00001", f"{Q14} hw/ide/core.c ide_init_drive: \"QM%05d\" of the drive counter"),
})

QEMU_1_4_PC = Profile(
    name="qemu-1.4-pc",
    description="QEMU 1.4, or QEMU up to 8.1 with machine type pc-i440fx-1.4 or older (or pc-q35-1.4): no TRIM",
    fields=_QEMU_14_FIELDS,
    ncq_depth={
        "ide": Fact(0, f"{Q14} hw/ide/core.c: ncq_queues 0 on PIIX, words 75/76 not written"),
        "ahci": Fact(32, f"{Q14} hw/ide/ahci.c: ncq_queues = AHCI_MAX_CMDS (32)"),
    },
    ahci={name: Fact(fact.value, f"as qemu-7.2 (a QEMU 7.2 running the pc-1.4 machine type): {fact.source}")
          for name, fact in _QEMU_72_AHCI.items()},
    notes=(
        "QEMU 1.4.0 wrote words 60-61 as the 32-bit capacity without the 2^28-1 clamp newer QEMU applies "
        f"({Q14} ide_identify); AtaConfig has no field for it, so disks of 2^28 sectors (128 GiB) or more show "
        "the clamped value here.",
        "pc-i440fx-1.4..1.7 were removed in QEMU 8.2 (ea985d235b, controllers.md 1.7).",
        "The AHCI HBA facts are QEMU 7.2's. QEMU 1.4.0's own HBA differs again (handle_cmd wrote the D2H FIS "
        "itself once READY_STAT was set) and is not modelled.",
    ),
)

# -- strict ------------------------------------------------------------------------------------------------

ACS3 = "ACS-3 (T13/2161-D)"

_STRICT_FIELDS = dict(_QEMU_72_FIELDS)
_STRICT_FIELDS.update({
    "model": Fact("QEMU HARDDISK", "choice: ACS leaves the model string to the vendor; kept as QEMU's so only "
                                   "behaviour differs from qemu-7.2"),
    "serial": Fact("QM00001", "choice: vendor-assigned in ACS; kept as QEMU's"),
    "firmware": Fact("2.5+", "choice: vendor-assigned in ACS; kept as QEMU 7.2's"),
    "write_cache": Fact(True, f"choice: {ACS3} makes a volatile write cache optional and its power-on state "
                              "vendor-specific; kept on as QEMU"),
    "trim": Fact(True, f"choice: DATA SET MANAGEMENT / TRIM is optional in {ACS3} (IDENTIFY word 169 bit 0); "
                       "this device implements it"),
    "drat": Fact(True, f"{ACS3} IDENTIFY word 69 bit 14 (Deterministic read after TRIM): every emu backend "
                       "answers a read of a trimmed LBA the same way until it is written (a discard zeroes whole "
                       "granules at once or changes nothing)"),
    "rzat": Fact(FROM_DRIVE, f"{ACS3} IDENTIFY word 69 bit 5 (read zeroes after TRIM), set exactly when every "
                             "trimmed sector reads zeros on this drive: read_zeroes_after_trim from whoever creates "
                             "the controller; None (unknown) -> off"),
    "max_dsm_blocks": Fact(1, f"{ACS3} IDENTIFY word 105 (max 512-byte blocks of LBA range entries per DSM; "
                              "a larger COUNT is aborted); the value 1 is a choice: one block of 64 entries is what "
                              "Linux libata sends (ATA_MAX_TRIM_RNUM)"),
    "out_of_range_error": Fact("idnf", f"{ACS3} error outputs of the READ/WRITE commands: ID NOT FOUND when the "
                                       "address is outside the accessible capacity (controllers.md 1.6 [std]); "
                                       "DSM ranges past capacity stay ABRT"),
    "rotation_rate": Fact(0, f"{ACS3} IDENTIFY word 217: 0000h = rate not reported (choice: not claimed)"),
    "physical_sector_exp": Fact(None, f"{ACS3} IDENTIFY word 106 bit 13 means several logical sectors per "
                                      "physical sector; QEMU's 0x6000 sets it with a ratio of 2^0. Word 106 = 0 "
                                      "(not valid: 512-byte physical sectors) says the same without the "
                                      "contradiction (Linux ata_id_log2_per_physical_sector reads both as 0)"),
    "multiple_sectors": Fact(16, "choice: READ/WRITE MULTIPLE block size is device-specific in ACS; kept as "
                                 "QEMU's 16"),
    "integrity_word": Fact(True, f"{ACS3} IDENTIFY word 255 (integrity word: signature A5h, checksum making the "
                                 "page sum to 0 mod 256); optional in ACS, written here as real drives do"),
    "diagnostic_completes": Fact(True, f"{ACS3} EXECUTE DEVICE DIAGNOSTIC normal outputs; AHCI 1.3.1 5.3: a "
                                       "D2H Register FIS (I = 1) ends every non-queued command and clears its "
                                       "PxCI bit"),
})

STRICT = Profile(
    name="strict",
    description="the ATA/ACS-3 and AHCI 1.3.1 standards: IDNF for out-of-range LBAs, integrity word, "
                "RZAT from the drive's real read-after-discard",
    fields=_STRICT_FIELDS,
    ncq_depth={
        "ide": Fact(0, "Serial ATA NCQ (READ/WRITE FPDMA QUEUED) needs a SATA host; PIIX is parallel ATA, so no "
                       f"NCQ ({ACS3} IDENTIFY words 75/76 left 0)"),
        "ahci": Fact(32, "AHCI 1.3.1 3.1.1 CAP.SNCQ / CAP.NCS (up to 32 command slots); "
                         f"{ACS3} IDENTIFY word 75 queue depth 32 maximum (depth 32 is the choice)"),
    },
    ahci={
        "pxci_rule": Fact("on-success", "AHCI 1.3.1 5.3.8 RegFIS:ClearCI (PxCI clears only when a D2H FIS ends a "
                                        "command without ERR) and 10.4.1 (software reset, C bit)"),
        "ncq_issue_d2h": Fact(True, "SATA 3.5a 11.15 FPDMA QUEUED DFPDMAQ2: a D2H FIS with BSY clear and I = 0"),
        "stop_clears_ci": Fact(True, "AHCI 1.3.1 3.3.13 PxSACT and 3.3.14 PxCI: cleared when ST goes 1 -> 0"),
        "error_irq": Fact("tfes", "AHCI 1.3.1 5.3.8.1 RegFIS:Entry: ERR -> ERR:FatalTaskfile, which raises TFES "
                                  "instead of DHRS"),
        "ncq_error": Fact("tfes", "AHCI 1.3.1 5.3.13.1 SDB:Entry: ERR -> ERR:FatalTaskfile (TFES); PxSERR holds "
                                  "only the 3.3.12 error bits"),
        "abort_fis_before_err": Fact(False, f"{ACS3}: an unsupported command ends with ERR and ABRT in the status "
                                            "it reports"),
    },
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QEMU_7_2, QEMU_8_2, QEMU_1_4_PC, STRICT)}
DEFAULT_PROFILE = "qemu-7.2"


def get_profile(name: str) -> Profile:
    """The profile called `name`; an unknown name is a usage error naming the known ones."""
    return lookup(PROFILES, name)
