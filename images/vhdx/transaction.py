"""One metadata update of a VHDX file, made atomic through its log.

Every change of the BAT, a sector bitmap or the metadata region is a set of whole 4 KiB sectors. A
`Transaction` collects the sectors one request changes; its commit writes them in qemu's order
(vhdx_log_write_and_flush): the data they point at flushed, the headers given a fresh log GUID, the log
entry written and flushed, the sectors applied in place and flushed, the log GUID cleared. A crash anywhere
leaves the old metadata or, once a reader replays the log, the new. The image and relinking both stage
their changes here, so the ordering exists once. Replaying a log left by a crash is part of opening the
image (`images.vhdx.image`), with `images.vhdx.log` reading the entries.
"""

from __future__ import annotations

import uuid

from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.headers import Headers
from images.vhdx.log import Log


class LogWriter:
    """Writes transactions through one file's log; owns the sequence number of the next entry."""

    def __init__(self, host: HostFile, log: Log, headers: Headers, sequence: int) -> None:
        self.host = host
        self.log = log
        self.headers = headers
        self.sequence = sequence

    def commit(self, sectors: dict[int, bytes]) -> None:
        """Make sector updates atomic. An update larger than the log holds (a discard of a terabyte in
        1 MiB blocks changes thousands of BAT pages) goes through in several entries: each sector stands
        alone (a block's BAT entry, a sector-bitmap page), so a crash between entries leaves every block
        old or new, never torn."""
        host = self.host
        host.sync()                                  # the data the new metadata points at is stable
        ordered = sorted(sectors.items())
        per_entry = self.log.max_sectors_per_entry()
        for first in range(0, len(ordered), per_entry):
            chunk = dict(ordered[first:first + per_entry])
            log_guid = uuid.uuid4().bytes_le
            self.headers.rewrite(log_guid=log_guid)
            host.sync()
            entry = self.log.build_entry(log_guid, self.sequence, chunk, host.size())
            self.sequence += 1
            self.log.write_entry(entry)
            host.sync()
            for offset, data in chunk.items():
                host.pwrite(offset, data)
            host.sync()
            self.headers.rewrite(log_guid=L.ZERO_GUID)


class Transaction:
    """The 4 KiB sectors one update changes, by file offset; the last version staged of a sector wins."""

    __slots__ = ("sectors", "writer")

    def __init__(self, writer: LogWriter) -> None:
        self.sectors: dict[int, bytes] = {}
        self.writer = writer

    def stage(self, offset: int, data: bytes) -> None:
        self.sectors[offset] = data

    def commit(self) -> None:
        """Write the staged sectors through the log; nothing at all when none was staged (in-place writes)."""
        if self.sectors:
            self.writer.commit(self.sectors)
