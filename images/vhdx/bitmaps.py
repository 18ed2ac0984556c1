"""Sector bitmaps of a differencing VHDX ([MS-VHDX] 2.5.2): which 512-byte sectors of a partially present
block this file holds (bit set) and which the parent supplies.

Each chunk has one 1 MiB bitmap block, named by the chunk's sector-bitmap entry in the BAT. It is read and
updated in 4 KiB pages (each a log sector of its own); the pages in use are cached, since a run of small
writes into one block asks the same page again and again. Reads, writes and relinking all ask here.
"""

from __future__ import annotations

from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.bat import PAGE, SECTOR, Bat

CACHE_PAGES = 64                   # sector-bitmap pages kept in memory


class SectorBitmaps:
    """The sector bitmaps of one image, read through a small cache of pages."""

    def __init__(self, host: HostFile, bat: Bat) -> None:
        self.host = host
        self.bat = bat
        self.pages: dict[int, bytearray] = {}     # 4 KiB pages by file offset

    def page(self, block: int, sector: int) -> tuple[int, bytearray, int]:
        """(page file offset, page, bit index within the page) for a sector of a block. The page is the
        cached copy: a writer changes it, then stages it in its transaction."""
        bat = self.bat
        sb = bat.entries[bat.bitmap_index(block)] & L.OFFSET_MASK
        bit = (block % bat.ratio) * (bat.block_size // SECTOR) + sector
        page_offset = sb + bit // 8 // PAGE * PAGE
        page = self.pages.get(page_offset)
        if page is None:
            page = bytearray(self.host.pread(page_offset, PAGE))
            if len(self.pages) >= CACHE_PAGES:
                self.pages.pop(next(iter(self.pages)))
            self.pages[page_offset] = page
        return page_offset, page, bit % (PAGE * 8)

    def runs(self, block: int, within: int, n: int):
        """(start, length, present) runs of a partially present block, from its sector bitmap."""
        pos, end = within, within + n
        while pos < end:
            sector = pos // SECTOR
            _, page, bit = self.page(block, sector)
            present = bool(page[bit >> 3] >> (bit & 7) & 1)
            stop = (sector + 1) * SECTOR
            while stop < end:
                sector = stop // SECTOR
                _, page, bit = self.page(block, sector)
                if not bit & 7 and page[bit >> 3] == (0xFF if present else 0) and stop + 8 * SECTOR <= end:
                    stop += 8 * SECTOR
                    continue
                if bool(page[bit >> 3] >> (bit & 7) & 1) != present:
                    break
                stop += SECTOR
            stop = min(stop, end)
            yield pos, stop - pos, present
            pos = stop

    def forget(self) -> None:
        """Drop the cache (the BAT now names other bitmap blocks)."""
        self.pages.clear()
