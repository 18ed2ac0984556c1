"""Where a new payload or sector-bitmap block of a VHDX goes in the file.

qemu (vhdx_allocate_block) always extends the file by a 1 MiB aligned block, so a new block reads as
zeros. emu does the same, but first reuses block-sized slots inside the file that nothing uses any more
(freed by discards in this session, or left by a writer that crashed before its BAT update), so that a
guest that discards and rewrites does not grow the file without bound.
"""

from __future__ import annotations

from emu.trace import Act, Trace
from images.hostfile import HostFile
from images.vhdx import FORMAT
from images.vhdx import layout as L
from images.vhdx.bat import Bat


class BlockSlots:
    """The free block slots of one image, found on the first allocation and kept up to date after."""

    def __init__(self, host: HostFile, bat: Bat, regions: list[tuple[int, int]]) -> None:
        self.host = host
        self.bat = bat
        self.regions = regions        # header section, log, BAT and metadata regions: never slots
        self.free: list[int] | None = None

    def _unused(self) -> list[int]:
        """1 MiB aligned, block-sized ranges inside the file that no region or BAT entry uses, lowest last
        so pop() takes it. Only ranges above the lowest block in use count: the space between the metadata
        and the first block is what qemu and Hyper-V keep for the metadata to grow (qemu leaves 4 MiB there,
        and a fixed disk made with block_state_zero=on reserves its whole data area with no block in it),
        and qemu puts the first block at the end of the file."""
        bs = self.bat.block_size
        used = self.bat.used_ranges()
        if not used:
            return []
        floor = min(start for start, _ in used)
        used += self.regions
        used.sort()
        slots, pos, size = [], floor, self.host.size()
        for start, end in used + [(size, size)]:
            pos = -(-pos // L.MiB) * L.MiB
            while pos + bs <= min(start, size):
                slots.append(pos)
                pos += bs
            pos = max(pos, end)
        return slots[::-1]

    def allocate(self, length: int, need_zero: bool, trace: Trace, what: str) -> int:
        """A 1 MiB aligned slot of `length` bytes: a free one if it is block-sized, else at the end of the
        file. `need_zero`: the slot must read as zeros (a reused slot holds old data)."""
        host = self.host
        if length == self.bat.block_size and self.free is None:
            self.free = self._unused()
        if length == self.bat.block_size and self.free:
            offset = self.free.pop()
            if need_zero:                          # a hole reads as zeros and costs no space
                host.punch_hole(offset, length)
                if not host.can_punch:
                    host.zero_range(offset, length)
            how = "reused a freed slot"
        else:
            offset = -(-host.size() // L.MiB) * L.MiB
            host.truncate(offset + length)
            how = "file extended"
        trace.add(FORMAT, Act.ALLOCATED, 0, length, f"{what} at host {offset:#x} ({how})", length)
        return offset

    def release(self, slot: int) -> None:
        """A block slot that no entry names any more, for the next allocation."""
        if self.free is not None:
            self.free.append(slot)

    def forget(self) -> None:
        """Find the free slots anew on the next allocation (the BAT changed its shape)."""
        self.free = None
