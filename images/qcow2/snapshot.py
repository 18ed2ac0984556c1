"""The internal snapshot table: read and validated, so snapshots are listed and their clusters
counted by `check`. (emu does not create or apply internal snapshots; external ones are chains.)"""

from __future__ import annotations

from dataclasses import dataclass

from construct import ConstructError

from emu.errors import InvalidImage
from images.hostfile import HostFile
from images.qcow2 import layout as L

_ENTRY_FIXED = 40


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    disk_size: int | None
    icount: int | None

    def to_json(self) -> dict:
        """The keys qemu-img info --output=json uses for a snapshot (icount only when recorded)."""
        out: dict = {} if self.icount is None else {"icount": self.icount}
        return out | {"vm-clock-nsec": self.vm_clock_nsec % 10**9, "name": self.name,
                "date-sec": self.date_sec, "date-nsec": self.date_nsec,
                "vm-clock-sec": self.vm_clock_nsec // 10**9, "id": self.id, "vm-state-size": self.vm_state_size}


def read_snapshots(host: HostFile, offset: int, count: int, cluster_size: int) -> list[Snapshot]:
    if not count:
        return []
    file_size = host.size()
    snapshots = []
    pos = offset
    for index in range(count):
        if pos - offset > L.MAX_SNAPSHOT_TABLE:
            raise InvalidImage("snapshot table too large", field="snapshots_offset")
        head = host.pread_exact(pos, _ENTRY_FIXED)
        if len(head) < _ENTRY_FIXED:
            raise InvalidImage(f"snapshot {index} runs past the end of the file", field="snapshots_offset",
                               offset=pos)
        try:
            h = L.SNAPSHOT_HEADER.parse(head)
        except ConstructError:
            raise InvalidImage(f"snapshot {index} header unreadable", field="snapshots_offset") from None
        if h.extra_data_size > L.MAX_SNAPSHOT_EXTRA:
            raise InvalidImage(f"snapshot {index} extra data too large ({h.extra_data_size})",
                               field="extra_data_size", offset=pos)
        variable = h.extra_data_size + h.id_str_size + h.name_size
        body = host.pread_exact(pos + _ENTRY_FIXED, variable)
        if len(body) < variable:
            raise InvalidImage(f"snapshot {index} runs past the end of the file", field="snapshots_offset",
                               offset=pos)
        extra = body[:h.extra_data_size]
        disk_size = icount = None
        vm_state = h.vm_state_size
        if len(extra) >= 16:
            parsed = L.SNAPSHOT_EXTRA.parse(extra, extra_data_size=h.extra_data_size)
            vm_state, disk_size = parsed.vm_state_size_large, parsed.disk_size
            if parsed.icount is not None and parsed.icount != (1 << 64) - 1:
                icount = parsed.icount
        if h.l1_table_offset % cluster_size:
            raise InvalidImage(f"snapshot {index} L1 table is not cluster aligned", field="l1_table_offset",
                               offset=h.l1_table_offset)
        if h.l1_size * 8 > L.MAX_L1_BYTES or h.l1_table_offset + h.l1_size * 8 > file_size:
            raise InvalidImage(f"snapshot {index} L1 table is too large or past the end of the file",
                               field="l1_size", offset=h.l1_table_offset)
        ids = body[h.extra_data_size:h.extra_data_size + h.id_str_size].decode("utf-8", "replace")
        name = body[h.extra_data_size + h.id_str_size:variable].decode("utf-8", "replace")
        snapshots.append(Snapshot(ids, name, h.l1_table_offset, h.l1_size, h.date_sec, h.date_nsec,
                                  h.vm_clock_nsec, vm_state, disk_size, icount))
        pos += _ENTRY_FIXED + variable
        pos += -(pos - offset) % 8
    return snapshots


def table_length(host: HostFile, offset: int, count: int) -> int:
    """Bytes the snapshot table occupies (for refcount checking)."""
    pos = offset
    for _ in range(count):
        h = L.SNAPSHOT_HEADER.parse(host.pread(pos, _ENTRY_FIXED))
        pos += _ENTRY_FIXED + h.extra_data_size + h.id_str_size + h.name_size
        pos += -(pos - offset) % 8
    return pos - offset
