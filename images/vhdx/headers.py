"""The VHDX header section and metadata region: headers, region table, metadata items, parent locator.

Parsing here validates bounds and checksums before anything is allocated from what the file claims
([MS-VHDX] 2.2 and 2.6); `images.vhdx.image` builds the disk from the result. `Headers` is the pair of
header copies of an open file, which every change of its GUIDs rewrites.
"""

from __future__ import annotations

import uuid

from construct import ConstructError

from emu.errors import InvalidImage, UnsupportedFeature
from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.log import checksum


def format_guid(raw: bytes) -> str:
    return "{" + str(uuid.UUID(bytes_le=bytes(raw))) + "}"


def read_headers(host: HostFile) -> tuple[int, list]:
    """Both headers (None where invalid) and the index of the current one ([MS-VHDX] 2.2.2.1)."""
    headers: list = []
    for offset in L.HEADER_OFFSETS:
        raw = host.pread(offset, L.HEADER_AREA)
        h = L.HEADER.parse(raw)
        valid = h.signature == L.HEADER_SIGNATURE and h.version == 1 and checksum(raw) == h.checksum
        headers.append(h if valid else None)
    a, b = headers
    if a is None and b is None:
        raise InvalidImage("no valid VHDX header (both copies have a bad signature, version or checksum)",
                           field="header")
    if a is None or b is None:
        return (1 if a is None else 0), headers
    if a.sequence_number == b.sequence_number:
        if L.HEADER.build(a) != L.HEADER.build(b):   # Disk2VHD writes two identical headers
            raise InvalidImage("both headers have the same sequence number but differ", field="header")
        return 0, headers
    return (0 if a.sequence_number > b.sequence_number else 1), headers


class Headers:
    """The two header copies of an open file and which one is current ([MS-VHDX] 2.2.2.1).

    A rewrite replaces the other copy with the next sequence number, twice, so that both copies are valid
    and current afterwards; each write is flushed before the next, so a crash leaves one valid copy. Every
    rewrite records this session's file-write GUID."""

    def __init__(self, host: HostFile) -> None:
        self.host = host
        self.current, self.copies = read_headers(host)
        self.session_guid = uuid.uuid4().bytes_le

    @property
    def active(self):
        return self.copies[self.current]

    def rewrite(self, *, data_guid: bool = False, log_guid: bytes | None = None) -> None:
        """A new data-write GUID (the first change after opening) and/or a log GUID (set while a log entry
        is being applied, ZERO_GUID once it is)."""
        new_data_guid = uuid.uuid4().bytes_le if data_guid else None
        for _ in range(2):
            target = 1 - self.current
            header = dict(self.copies[self.current])
            header.pop("_io", None)
            header["sequence_number"] += 1
            header["file_write_guid"] = self.session_guid
            if new_data_guid is not None:
                header["data_write_guid"] = new_data_guid
            if log_guid is not None:
                header["log_guid"] = log_guid
            raw = bytearray(self.host.pread(L.HEADER_OFFSETS[target], L.HEADER_AREA))
            raw[:L.HEADER.sizeof()] = L.HEADER.build(header)
            raw[4:8] = checksum(raw).to_bytes(4, "little")
            self.host.pwrite(L.HEADER_OFFSETS[target], raw)
            self.host.sync()
            self.copies[target] = L.HEADER.parse(raw)
            self.current = target


def read_regions(host: HostFile) -> tuple[object, object]:
    """(BAT region, metadata region) from the first valid region table copy."""
    problem = "bad checksum"
    for offset in L.REGION_OFFSETS:
        raw = host.pread(offset, L.REGION_AREA)
        rh = L.REGION_HEADER.parse(raw)
        if rh.signature != L.REGION_SIGNATURE or checksum(raw) != rh.checksum:
            problem = "bad signature" if rh.signature != L.REGION_SIGNATURE else "bad checksum"
            continue
        if rh.entry_count > L.MAX_REGION_ENTRIES:
            raise InvalidImage(f"region table with {rh.entry_count} entries (at most 2047)", field="region_table")
        found: dict[bytes, object] = {}
        size = L.REGION_ENTRY.sizeof()
        for i in range(rh.entry_count):
            entry = L.REGION_ENTRY.parse(raw[16 + i * size:16 + (i + 1) * size])
            if entry.guid in (L.BAT_GUID, L.METADATA_GUID):
                if entry.guid in found:
                    raise InvalidImage("region table lists the same region twice", field="region_table")
                found[entry.guid] = entry
            elif entry.required & L.REGION_REQUIRED:
                raise UnsupportedFeature(f"required region {format_guid(entry.guid)} is unknown", field="region_table")
        if L.BAT_GUID not in found or L.METADATA_GUID not in found:
            raise InvalidImage("region table lacks the BAT or the metadata region", field="region_table")
        return found[L.BAT_GUID], found[L.METADATA_GUID]
    raise InvalidImage(f"no valid region table ({problem} in both copies)", field="region_table")


def check_regions(bat, meta, header) -> None:
    """The log (from the header), BAT and metadata regions lie after the header section, 4 KiB aligned, and
    do not overlap."""
    spans = [("log", header.log_offset, header.log_length), ("BAT", bat.file_offset, bat.length),
             ("metadata", meta.file_offset, meta.length)]
    for name, start, length in spans[1:]:
        if start < L.HEADER_SECTION_END or length % L.LOG_SECTOR or length == 0:
            raise InvalidImage(f"{name} region at {start}, {length} bytes: inside the header section or not "
                               "4 KiB aligned", field="region_table")
    for i, (name, start, length) in enumerate(spans):
        for other, ostart, olength in spans[i + 1:]:
            if start < ostart + olength and ostart < start + length and length and olength:
                raise InvalidImage(f"the {name} and {other} regions overlap", field="region_table")


def read_metadata(host: HostFile, region) -> dict[bytes, bytes]:
    """Known metadata items by GUID, bounds-checked ([MS-VHDX] 2.6)."""
    if region.file_offset + L.METADATA_TABLE_SIZE > host.size():
        raise InvalidImage(f"the metadata table at {region.file_offset} runs past the end of the file "
                           f"({host.size()} bytes; truncated?)", field="metadata")
    raw = host.pread(region.file_offset, L.METADATA_TABLE_SIZE)
    mh = L.METADATA_HEADER.parse(raw)
    if mh.signature != L.METADATA_SIGNATURE:
        raise InvalidImage(f"bad metadata table signature {mh.signature!r}", field="metadata")
    if mh.entry_count > L.MAX_METADATA_ENTRIES:
        raise InvalidImage(f"metadata table with {mh.entry_count} entries (at most 2047)", field="metadata")
    known = (L.FILE_PARAMS_GUID, L.VIRTUAL_SIZE_GUID, L.PAGE83_GUID, L.LOGICAL_SECTOR_GUID,
             L.PHYSICAL_SECTOR_GUID, L.PARENT_LOCATOR_GUID)
    items: dict[bytes, bytes] = {}
    size = L.METADATA_ENTRY.sizeof()
    for i in range(mh.entry_count):
        entry = L.METADATA_ENTRY.parse(raw[32 + i * size:32 + (i + 1) * size])
        if entry.item_id not in known:
            if entry.flags & L.META_IS_REQUIRED:
                raise UnsupportedFeature(f"required metadata item {format_guid(entry.item_id)} is unknown",
                                         field="metadata")
            continue
        if entry.item_id in items:
            raise InvalidImage(f"metadata item {format_guid(entry.item_id)} appears twice", field="metadata")
        if entry.length > L.MiB or entry.offset < L.METADATA_TABLE_SIZE \
                or entry.offset + entry.length > region.length:
            raise InvalidImage(f"metadata item {format_guid(entry.item_id)} lies outside the metadata region",
                               field="metadata")
        if region.file_offset + entry.offset + entry.length > host.size():
            raise InvalidImage(f"metadata item {format_guid(entry.item_id)} lies past the end of the file "
                               "(truncated?)", field="metadata")
        items[entry.item_id] = host.pread(region.file_offset + entry.offset, entry.length)
    for item, name, need in ((L.FILE_PARAMS_GUID, "file parameters", 8), (L.VIRTUAL_SIZE_GUID, "virtual disk size", 8),
                             (L.PAGE83_GUID, "page 83 data", 16), (L.LOGICAL_SECTOR_GUID, "logical sector size", 4),
                             (L.PHYSICAL_SECTOR_GUID, "physical sector size", 4)):
        if item not in items:
            raise InvalidImage(f"required metadata item '{name}' is missing", field="metadata")
        if len(items[item]) < need:
            raise InvalidImage(f"metadata item '{name}' is {len(items[item])} bytes, shorter than its {need}",
                               field="metadata")
    return items


def parse_parent_locator(data: bytes) -> dict[str, str]:
    """The parent locator's key/value pairs ([MS-VHDX] 2.6.2.6), UTF-16LE strings."""
    try:
        head = L.PARENT_LOCATOR_HEADER.parse(data)
    except ConstructError:
        raise InvalidImage("parent locator too short", field="parent_locator") from None
    if head.locator_type != L.PARENT_TYPE_VHDX:
        raise UnsupportedFeature(f"parent locator type {format_guid(head.locator_type)} is not a VHDX parent",
                                 field="parent_locator")
    base, size = L.PARENT_LOCATOR_HEADER.sizeof(), L.PARENT_LOCATOR_ENTRY.sizeof()
    if base + head.key_value_count * size > len(data):
        raise InvalidImage(f"parent locator claims {head.key_value_count} entries, more than fit",
                           field="parent_locator")
    pairs: dict[str, str] = {}
    for i in range(head.key_value_count):
        e = L.PARENT_LOCATOR_ENTRY.parse(data[base + i * size:base + (i + 1) * size])
        if e.key_offset + e.key_length > len(data) or e.value_offset + e.value_length > len(data) \
                or not e.key_length or not e.value_length:
            raise InvalidImage("parent locator entry points outside the locator", field="parent_locator")
        key = data[e.key_offset:e.key_offset + e.key_length].decode("utf-16-le", "replace")
        pairs[key] = data[e.value_offset:e.value_offset + e.value_length].decode("utf-16-le", "replace")
    if "parent_linkage" not in pairs:
        raise InvalidImage("parent locator has no parent_linkage", field="parent_locator")
    return pairs


def locator_path(pairs: dict[str, str]) -> str | None:
    """Where a parent locator says the parent is, as a backing file name: the relative path, else the
    absolute or volume path, with forward slashes."""
    for key in ("relative_path", "absolute_win32_path", "volume_path"):
        value = pairs.get(key)
        if value:
            value = value.replace("\\", "/")
            return value[2:] if value.startswith("./") else value
    return None


def build_parent_locator(pairs: dict[str, str]) -> bytes:
    base, size = L.PARENT_LOCATOR_HEADER.sizeof(), L.PARENT_LOCATOR_ENTRY.sizeof()
    head = L.PARENT_LOCATOR_HEADER.build(dict(locator_type=L.PARENT_TYPE_VHDX, reserved=0,
                                              key_value_count=len(pairs)))
    table, strings = [], b""
    at = base + size * len(pairs)
    for key, value in pairs.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table.append(L.PARENT_LOCATOR_ENTRY.build(dict(key_offset=at, value_offset=at + len(k),
                                                       key_length=len(k), value_length=len(v))))
        strings += k + v
        at += len(k) + len(v)
    return head + b"".join(table) + strings
