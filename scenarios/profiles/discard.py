"""What a drive does to a trimmed range, as the facts a device profile needs (no image or block-layer import).

Kept apart from `ata.py` because the same fact answers more than one protocol: ATA IDENTIFY word 69 bit 5
(RZAT) now, and later SCSI READ CAPACITY(16) LBPRZ and the virtio-blk profiles. Whoever creates the controller
knows the drive (its discard option and image format) and passes the facts in; this module only combines them,
so scenarios never reach past the controllers into `images` or `emu.block` (tests/unit/test_layering.py).
"""

from __future__ import annotations

from emu.errors import UsageError

SECTOR_SIZE = 512

# The -drive discard= spellings emu.block.options.DISCARD_VALUES accepts (QEMU: off = ignore, on = unmap),
# repeated here because scenarios may not import emu.block.
DISCARD_OPTIONS = {"ignore": "ignore", "off": "ignore", "unmap": "unmap", "on": "unmap"}


def read_zeroes_after_trim(discard: str, discard_granularity: int, discard_zeroes: bool, *,
                           sector_size: int = SECTOR_SIZE) -> bool:
    """Whether every sector the guest trims reads zeros afterwards, on a drive with these facts.

    discard:             the drive's discard option, "unmap" ("on") or "ignore" ("off"). With ignore a discard
                         succeeds and changes nothing (QEMU's default, controllers.md 1.7), so old data stays.
    discard_granularity: bytes; the aligned unit whose discard the format turns into zeros. Anything smaller, or
                         the unaligned head and tail of a range, is dropped and keeps its old data.
    discard_zeroes:      whether the format's discard makes the range read zeros at all.

    Drives as emu builds them (discard-matrix.md section 4, formats.md):
      raw on a host file system that punches holes: granularity 512, zeroes yes (fallocate PUNCH_HOLE zeroes
      partial blocks too) -> True with unmap;
      qcow2 v3 (compat=1.1): whole clusters only (L2 zero flag), partial clusters dropped -> True only with
      512-byte clusters; qcow2 v2 with a backing file refuses discard (zeroes no);
      vdi, vpc (VHD), vmdk: QEMU's drivers discard nothing (zeroes no) -> False;
      raw on a host file system that cannot punch: zeroes no -> False.
    The answer must hold for every sector a guest may trim, since the guest will rely on it (Linux treats an
    RZAT disk's discard as zeroing), hence "every", not "usually".
    """
    mode = DISCARD_OPTIONS.get(discard)
    if mode is None:
        raise UsageError(f"discard='{discard}': expected ignore or unmap")
    if discard_granularity < 1:
        raise ValueError(f"discard granularity {discard_granularity} must be at least 1 byte")
    if sector_size < 1:
        raise ValueError(f"sector size {sector_size} must be at least 1 byte")
    if mode == "ignore" or not discard_zeroes:
        return False
    # A single trimmed sector must be a whole number of granules, wherever it lies.
    return sector_size % discard_granularity == 0
