"""jbd2 as ext4 on Linux 6.1 drives it in ordered mode: which metadata blocks a transaction carries, and what a
commit writes.

A commit writes, inside the journal: the journal superblock first when the journal was empty (its log tail moves
off block 0), then one descriptor block and a copy of every metadata block of the transaction, contiguously (one
bio per buffer, plugged: one request), then the commit block with REQ_PREFLUSH | REQ_FUA (a flush, the block,
and a flush for FUA on a disk without FUA). The committed blocks become dirty in the block device's cache and
reach their home location when the device is written back (sync, umount). Checked against Linux 6.1's trace of
the same steps (tests/oracle/linux-6.1).

The journal is modelled as a ring of its blocks after the superblock; revoke records and the checkpoint of a full
journal are not modelled (the scenarios never fill it).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from scenarios.guest.linux.block import BlockDevice

SECTOR = 512
TAGS_PER_DESCRIPTOR = (4096 - 12 - 4) // 16     # jbd2 csum v3: 16-byte tags after a 12-byte header, a 4-byte tail


class Journal:
    """The journal of a mounted ext4 on `dev`: its physical extents, the running transaction's metadata blocks
    (file system block numbers, in the order they joined) and where the next commit goes."""

    def __init__(self, dev: BlockDevice, extents: list[tuple[int, int]], block_size: int) -> None:
        self.dev = dev
        self.extents = extents
        self.block_size = block_size
        self.blocks = sum(n for _, n in extents)
        self.running: dict[int, None] = {}
        self.started: float | None = None      # when the running transaction took its first block
        self.head = 1                   # the next journal block a commit writes (block 0 is the superblock)
        self.empty = True               # nothing logged since mount: the first commit moves the log tail
        self.sequence = 1

    def add(self, *blocks: int) -> None:
        """Metadata blocks an operation changed join the running transaction (once each)."""
        if blocks and not self.running:
            self.started = self.dev.clock()
        for b in blocks:
            self.running.setdefault(b, None)

    def _physical(self, jblock: int) -> int:
        for first, n in self.extents:
            if jblock < n:
                return first + jblock
            jblock -= n
        raise ValueError(f"journal block {jblock} past the journal's end")

    def _filler(self, role: str) -> bytes:
        text = f"jbd2 {role} {self.sequence} ".encode()
        return (text * (self.block_size // len(text) + 1))[:self.block_size]

    def _sector(self, jblock: int) -> int:
        return self._physical(jblock) * self.block_size // SECTOR

    def write_superblock(self) -> Generator[Any, Any, None]:
        """The journal superblock written alone (a log-tail update, REQ_SYNC without FUA)."""
        yield from self.dev.submit_write(self._sector(0), self._filler("superblock"), contiguous=False)

    def commit(self) -> Generator[Any, Any, list[int]]:
        """Commit the running transaction (nothing when it is empty); the metadata blocks it carried."""
        blocks = list(self.running)
        if not blocks:
            return []
        self.running, self.started = {}, None
        if self.empty:
            yield from self.write_superblock()
            self.empty = False
        descriptors = -(-len(blocks) // TAGS_PER_DESCRIPTOR)
        count = descriptors + len(blocks)
        if self.head + count + 1 > self.blocks:
            self.head = 1                # wrap: the scenarios never fill the journal, so no checkpoint is waited for
        runs = [(self._sector(self.head + i), self._filler("log")) for i in range(count)]
        yield from self.dev.submit_writes(runs)
        self.head += count
        yield from self.dev.write_fua(self._sector(self.head), self._filler("commit"))
        self.head += 1
        self.sequence += 1
        return blocks
