"""windows-xp, windows-7, windows-8, windows-2012, windows-10: what a Windows guest's file systems tell its disk when
space is freed (delete notifications: ATA TRIM, SCSI UNMAP, viostor's virtio-blk DISCARD), and the tools around it.

A Windows guest's commands still reach the emulated controllers through the Linux 6.1 driver models (the drivers'
wire shapes are Linux's: scenarios.guest.select.driver_profile); these facts decide *whether* and *when* the guest
sends a discard, per controller. Sources are those of the research note discard-matrix.md, section 2b (W1-W6) and
section 5's guest-gate table, cited as the note cites them; a fact the note marks unsourced says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from scenarios.profiles.facts import Fact, lookup
from scenarios.profiles.family import Family, FamilyProfile, Profile, Section, Shape

CONTROLLERS = ("ide", "ahci", "virtio-blk", "virtio-scsi")

# The research note's sources (discard-matrix.md §2b), as it cites them.
MS_TRIM = ("https://learn.microsoft.com/en-us/windows/win32/w8cookbook/new-api-allows-apps-to-send--trim-and-unmap--"
           "hints-to-storage-media")
MS_FSUTIL = "https://learn.microsoft.com/windows-server/administration/windows-commands/fsutil-behavior"
VOLUMES_BLOG = "https://volumes.blog/2015/04/28/vsphere-6-guest-unmap-support-or-the-case-for-sparse-se-part-2/"
VWIN = "virtio-win/kvm-guest-drivers-windows viostor/virtio_stor.c (commit 335d1368, 2019-06-04, build tag mm192)"
VBOX_GIST = "https://gist.github.com/pryorda/647e1b35d5066c05d36ba988566150e4"


@dataclass(frozen=True)
class DeleteNotifyConfig:
    """Whether the file system's delete notifications reach a disk behind one controller as a discard."""

    notifies: bool


@dataclass(frozen=True)
class WindowsFsConfig:
    """NTFS's side of delete notifications, and the tools that free space in bulk."""

    disable_delete_notify: int      # fsutil behavior DisableDeleteNotify: 0 = notifications on
    retrim: bool                    # Optimize-Volume -ReTrim / defrag /L (the Storage Optimizer) exists
    format_trims: bool              # a quick format first trims the whole volume (when notifications are on)
    fat_notifies: bool              # FAT32's deletes send notifications too
    full_format_zeroes: bool        # a full format (no /Q) writes zeros over the volume, rather than only reading it


DELETE_NOTIFY = Family("delete-notify", DeleteNotifyConfig, variants=CONTROLLERS, variant_of="controller")
WINDOWS_FS = Family("ntfs", WindowsFsConfig)

WINDOWS_GUEST = Shape("windows guest", (
    Section("delete-notify", ((DELETE_NOTIFY, ""),)),
    Section("ntfs", ((WINDOWS_FS, ""),)),
))


def _per_controller(ide: Fact, ahci: Fact, blk: Fact, scsi: Fact) -> dict[str, Fact]:
    return dict(zip(CONTROLLERS, (ide, ahci, blk, scsi), strict=True))


def _notify(name: str, facts: dict[str, Fact]) -> FamilyProfile:
    return FamilyProfile(DELETE_NOTIFY, f"{name}: which controllers' disks get NTFS's delete notifications",
                         {"notifies": facts})


NONE_BEFORE_7 = Fact(False, f"discard-matrix.md W1: TRIM was introduced in Windows 7 ({MS_TRIM}); an earlier "
                            "Windows sends no delete notification (by absence)")
ATA_TRIM_7 = Fact(True, f"discard-matrix.md W1 and §5 guest gates (Windows 7: TRIM to ATA): {MS_TRIM}; W3 reports "
                        f"Windows 7 on VirtualBox SATA not reclaiming (anecdotal, {VBOX_GIST})")
NO_UNMAP_7 = Fact(False, f"discard-matrix.md W2 and §5 (Windows 7: no SCSI UNMAP use): SCSI UNMAP came with "
                         f"Windows 8 / Server 2012 ({MS_TRIM})")
NO_VIOSTOR_7 = Fact(False, f"discard-matrix.md W4 and §5: viostor turns SCSI UNMAP into VIRTIO_BLK_T_DISCARD "
                           f"({VWIN}); Windows 7 sends no UNMAP (W2), so none reaches virtio-blk")
TRIM_8 = Fact(True, f"discard-matrix.md W1/W2 and §5 (Windows 8 / 2012+: TRIM and UNMAP): {MS_TRIM}")
UNMAP_8 = Fact(True, f"discard-matrix.md W2: SCSI UNMAP from Windows 8 / Server 2012, which needs the LBP VPD page "
                     f"B2h (QEMU's scsi-disk has it, §1a) ({MS_TRIM}; {VOLUMES_BLOG}); vioscsi passes UNMAP "
                     "through (W6)")
VIOSTOR_8 = Fact(True, f"discard-matrix.md W4: viostor with discard support (2019-06 and later: {VWIN}); a "
                       "virtio-win older than that sends none (its public ISO version is unsourced)")

DISABLE_DELETE_NOTIFY = Fact(0, f"discard-matrix.md W1: `fsutil behavior query DisableDeleteNotify` is 0 by default "
                                f"(notifications on) ({MS_FSUTIL}; https://pastebin.com/LGDZ6NCR)")
NO_RETRIM = Fact(False, f"discard-matrix.md W2: the Storage Optimizer's retrim came with Windows 8 / Server 2012 "
                        f"({MS_TRIM})")
RETRIM = Fact(True, f"discard-matrix.md W2 ({MS_TRIM}) and H6 (retrim from the defrag scheduled task): "
                    "https://blog.workinghardinit.work/2012/05/23/trimunmap-support-in-windows-server-2012-hyper-vvhdx/")
NO_FORMAT_TRIM = Fact(False, "by absence: a Windows without delete notifications (W1) trims nothing when formatting")
FORMAT_TRIM = Fact(True, "unsourced (the research note does not cover format): a model of Windows 7+ quick format "
                         "trimming the whole volume when delete notifications are on")
FAT_NO_NOTIFY = Fact(False, "unsourced (the research note names NTFS only, W1): FAT32 is modelled as sending no "
                            "delete notifications on any Windows")


FULL_READS = Fact(False, "unsourced (the research note does not cover format): a model of XP's full format as a "
                         "read-only surface scan")
FULL_ZEROES = Fact(True, "unsourced in the research note: Microsoft KB 941961 is commonly cited for Vista and later "
                         "full formats writing zeros over the whole volume")


def _profile(name: str, notify: dict[str, Fact], retrim: Fact, format_trims: Fact,
             full: Fact = FULL_ZEROES) -> Profile:
    return Profile(name, WINDOWS_GUEST, (
        _notify(name, notify),
        FamilyProfile(WINDOWS_FS, f"{name}: DisableDeleteNotify, retrim, what format writes and trims, FAT32",
                      {"disable_delete_notify": DISABLE_DELETE_NOTIFY, "retrim": retrim,
                       "format_trims": format_trims, "fat_notifies": FAT_NO_NOTIFY, "full_format_zeroes": full},
                      notes=("The commands reach the emulated controllers in the Linux 6.1 drivers' shapes "
                             "(request sizes, TRIM ranges): an approximation of storport's.",)),
    ))


WINDOWS_XP = _profile("windows-xp", _per_controller(NONE_BEFORE_7, NONE_BEFORE_7, NONE_BEFORE_7, NONE_BEFORE_7),
                      NO_RETRIM, NO_FORMAT_TRIM, FULL_READS)
WINDOWS_7 = _profile("windows-7", _per_controller(ATA_TRIM_7, ATA_TRIM_7, NO_VIOSTOR_7, NO_UNMAP_7), NO_RETRIM,
                     FORMAT_TRIM)
WINDOWS_8 = _profile("windows-8", _per_controller(TRIM_8, TRIM_8, VIOSTOR_8, UNMAP_8), RETRIM, FORMAT_TRIM)
WINDOWS_2012 = _profile("windows-2012", _per_controller(TRIM_8, TRIM_8, VIOSTOR_8, UNMAP_8), RETRIM, FORMAT_TRIM)
WINDOWS_10 = _profile("windows-10", _per_controller(TRIM_8, TRIM_8, VIOSTOR_8, UNMAP_8), RETRIM, FORMAT_TRIM)

PROFILES: dict[str, Profile] = {p.name: p for p in (WINDOWS_XP, WINDOWS_7, WINDOWS_8, WINDOWS_2012, WINDOWS_10)}


@dataclass(frozen=True)
class WindowsConfig:
    """What one Windows guest does on one controller: whether deletes notify, and its file-system tools."""

    notifies: bool
    fs: WindowsFsConfig

    @property
    def ntfs_discards(self) -> bool:
        """NTFS sends delete notifications to this disk (the controller gets them, DisableDeleteNotify is 0)."""
        return self.notifies and self.fs.disable_delete_notify == 0


def windows_config(name: str, controller: str) -> WindowsConfig:
    """The configuration of Windows guest profile `name` behind `controller`."""
    profile = lookup(PROFILES, name)
    return WindowsConfig(profile[DELETE_NOTIFY].config(controller).notifies, profile[WINDOWS_FS].config())
