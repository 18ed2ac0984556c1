"""Drive options, modelled on QEMU's -drive / -blockdev options (qemu-options.hx, block.c)."""

from __future__ import annotations

from dataclasses import dataclass

from emu.errors import UsageError

DISCARD_VALUES = {"ignore": "ignore", "off": "ignore", "unmap": "unmap", "on": "unmap"}
DETECT_ZEROES_VALUES = ("off", "on", "unmap")
ZERO_UNMAP_VALUES = ("passthrough", "gated")


@dataclass(frozen=True, slots=True)
class DriveOptions:
    """What the drive does with requests before they reach the image.

    discard:        "ignore" (QEMU's default: a discard succeeds and does nothing) or "unmap".
    detect_zeroes:  "off", "on" (an all-zero write becomes a write-zeroes) or "unmap" (... that may
                    deallocate); "unmap" is refused unless discard is "unmap", as QEMU refuses it.
    zero_unmap:     "passthrough" (QEMU's device path: a guest write-zeroes with UNMAP keeps its MAY_UNMAP
                    flag even under discard=ignore, so qcow2 clusters are freed) or "gated" (MAY_UNMAP
                    is dropped unless discard=unmap, as the BdrvChild API does; arguably what users expect).
    request_alignment: bytes; unaligned reads and writes are padded (read-modify-write), as QEMU does.
    """

    discard: str = "ignore"
    detect_zeroes: str = "off"
    read_only: bool = False
    request_alignment: int = 1
    zero_unmap: str = "passthrough"

    def __post_init__(self) -> None:
        if self.discard not in DISCARD_VALUES:
            raise UsageError(f"discard='{self.discard}': expected ignore or unmap")
        object.__setattr__(self, "discard", DISCARD_VALUES[self.discard])
        if self.detect_zeroes not in DETECT_ZEROES_VALUES:
            raise UsageError(f"detect-zeroes='{self.detect_zeroes}': expected off, on or unmap")
        if self.detect_zeroes == "unmap" and self.discard != "unmap":
            raise UsageError("setting detect-zeroes to unmap is not allowed without setting discard "
                             "operation to unmap")
        if self.zero_unmap not in ZERO_UNMAP_VALUES:
            raise UsageError(f"zero_unmap='{self.zero_unmap}': expected passthrough or gated")
        align = self.request_alignment
        if align < 1 or align & (align - 1):
            raise UsageError(f"request alignment {align} is not a power of two")

    @property
    def unmap(self) -> bool:
        return self.discard == "unmap"
