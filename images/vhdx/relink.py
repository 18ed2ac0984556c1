"""Relinking a VHDX to another parent, or making it standalone (qemu-img rebase -u; qemu 7.2 cannot do
this for VHDX), and the create options that reproduce an image's layout.

A differencing VHDX names its parent in the parent locator metadata item ([MS-VHDX] 2.6.2.6):
parent_linkage is the parent's data-write GUID, relative_path and absolute_win32_path say where it
is; the file parameters' HasParent flag makes the disk differencing. Every change is made in 4 KiB
pages (the metadata table, the items, the BAT pages that change) through one log entry, so a crash
leaves the old link or the new one. The image's own data-write GUID is kept: its own children stay
linked to it (like Hyper-V's reparenting, this only rewrites where the parent is).

Changing the kind of disk changes the BAT too: a differencing BAT has a sector-bitmap entry after
every chunk, the last chunk included. Made standalone, a partially present block becomes fully
present with the sectors it did not hold zeroed first (they read zeros now, not the parent's data),
and the sector-bitmap blocks are released. A dynamic disk that gets a parent keeps its blocks:
NOT_PRESENT ones read from the parent from then on, ZERO and UNMAPPED ones keep reading zeros.

This module rewrites the file; `VhdxImage.set_backing` checks the request and keeps the image's own view
of its parent in step.
"""

from __future__ import annotations

import os
from array import array

from emu.errors import UnsupportedFeature, UsageError
from images.backend import backing_path
from images.hostfile import HostFile
from images.vhdx import layout as L
from images.vhdx.bat import PAGE, Bat, entry_count
from images.vhdx.bitmaps import SectorBitmaps
from images.vhdx.headers import format_guid, read_regions
from images.vhdx.transaction import LogWriter, Transaction

MAX_LOCATOR_VALUE = 0xFFFF          # key/value lengths are 16-bit byte counts of UTF-16LE


def parent_locator_pairs(path: str, name: str, data_write_guid: bytes) -> dict[str, str]:
    """The locator entries create and set_backing write for an image at `path` naming its parent
    `name` (relative to the image's directory): the linkage and the relative and absolute paths."""
    absolute = os.path.realpath(backing_path(path, name))
    relative = os.path.relpath(absolute, os.path.dirname(os.path.realpath(path)))
    pairs = {"parent_linkage": format_guid(data_write_guid),
             "relative_path": ".\\" + relative.replace("/", "\\"),
             "absolute_win32_path": absolute}
    for key, value in pairs.items():
        if len(value.encode("utf-16-le")) > MAX_LOCATOR_VALUE:
            raise UsageError(f"{path}: parent path too long for the VHDX parent locator ({key} is "
                             f"{len(value.encode('utf-16-le'))} bytes of UTF-16, at most {MAX_LOCATOR_VALUE})")
    return pairs


def rewrite_link(host: HostFile, bat: Bat, bitmaps: SectorBitmaps, writer: LogWriter, locator: bytes | None,
                 path: str) -> None:
    """Write the parent locator (None: none, the disk becomes standalone) and HasParent into the metadata
    region and reshape the BAT for the new kind of disk, in one transaction. On failure the BAT in memory
    is as before; on success the sector-bitmap blocks a standalone disk no longer uses are punched."""
    _, region = read_regions(host)
    old = host.pread(region.file_offset, region.length)
    new = _metadata_with(bytearray(old), region.length, locator, path)
    tx = Transaction(writer)
    for at in range(0, region.length, PAGE):
        if new[at:at + PAGE] != old[at:at + PAGE]:
            tx.stage(region.file_offset + at, bytes(new[at:at + PAGE]))
    saved = array("Q", bat.entries)
    try:
        released = _reshape_bat(host, bat, bitmaps, to_diff=locator is not None, tx=tx, path=path)
        tx.commit()
    except BaseException:
        bat.entries = saved
        raise
    bat.differencing = locator is not None
    bitmaps.forget()
    for offset in released:
        host.punch_hole(offset, L.BITMAP_BLOCK)


def _entries(table: bytearray) -> list:
    head = L.METADATA_HEADER.parse(table)
    size = L.METADATA_ENTRY.sizeof()
    return [L.METADATA_ENTRY.parse(table[32 + i * size:32 + (i + 1) * size]) for i in range(head.entry_count)]


def _metadata_with(meta: bytearray, region_length: int, locator: bytes | None, path: str) -> bytearray:
    """The metadata region with the HasParent flag and the parent locator item set (or removed)."""
    entries = _entries(meta)
    size = L.METADATA_ENTRY.sizeof()
    params = next(e for e in entries if e.item_id == L.FILE_PARAMS_GUID)
    file_params = L.FILE_PARAMETERS.parse(meta[params.offset:params.offset + 8])
    flags = file_params.flags
    flags = flags | L.PARAM_HAS_PARENT if locator is not None else flags & ~L.PARAM_HAS_PARENT
    meta[params.offset:params.offset + 8] = L.FILE_PARAMETERS.build(dict(block_size=file_params.block_size,
                                                                         flags=flags))
    old = next((e for e in entries if e.item_id == L.PARENT_LOCATOR_GUID), None)
    if old is not None:
        meta[old.offset:old.offset + old.length] = bytes(old.length)
        entries.remove(old)
    if locator is not None:
        starts = sorted(e.offset for e in entries)
        at = None
        if old is not None:   # in place if it fits before the next item
            room = min([s for s in starts if s >= old.offset] + [region_length]) - old.offset
            at = old.offset if len(locator) <= room else None
        if at is None:
            at = max([e.offset + e.length for e in entries] + [L.METADATA_TABLE_SIZE])
        if at + len(locator) > region_length:
            raise UsageError(f"{path}: parent locator of {len(locator)} bytes does not fit the "
                             f"{region_length}-byte VHDX metadata region")
        if 32 + size * (len(entries) + 1) > L.METADATA_TABLE_SIZE:
            raise UsageError(f"{path}: the VHDX metadata table is full")
        meta[at:at + len(locator)] = locator
        entries.append(L.METADATA_ENTRY.parse(L.METADATA_ENTRY.build(dict(
            item_id=L.PARENT_LOCATOR_GUID, offset=at, length=len(locator), flags=L.META_IS_REQUIRED, reserved=0))))
    table = bytearray(L.METADATA_TABLE_SIZE)
    head = dict(L.METADATA_HEADER.parse(meta), entry_count=len(entries))
    head.pop("_io", None)
    table[:32] = L.METADATA_HEADER.build(head)
    for i, entry in enumerate(entries):
        fields = {k: v for k, v in entry.items() if not k.startswith("_")}
        table[32 + i * size:32 + (i + 1) * size] = L.METADATA_ENTRY.build(fields)
    meta[:L.METADATA_TABLE_SIZE] = table
    return meta


def _reshape_bat(host: HostFile, bat: Bat, bitmaps: SectorBitmaps, *, to_diff: bool, tx: Transaction,
                 path: str) -> list[int]:
    """BAT changes for a change of disk kind, staged in `tx`; returns the sector-bitmap blocks that a
    disk made standalone no longer uses (to punch after the commit)."""
    if to_diff == bat.differencing:
        return []
    ratio = bat.ratio
    entries = bat.entries
    diff_entries = entry_count(bat.blocks, ratio, True)
    plain_entries = entry_count(bat.blocks, ratio, False)
    released: list[int] = []
    if to_diff:
        if diff_entries * 8 > bat.region_length:
            raise UnsupportedFeature(f"the BAT region ({bat.region_length} bytes) has no room for the "
                                     "sector-bitmap entries of a differencing disk", path=path, field="bat")
        extra = host.pread(bat.offset + len(entries) * 8, (diff_entries - len(entries)) * 8)
        entries.frombytes(bytes(len(extra)))
        changed = [i for i in range(ratio, diff_entries, ratio + 1) if entries[i]]
        changed += [plain_entries + k for k in range(diff_entries - plain_entries) if any(extra[8 * k:8 * k + 8])]
        for index in changed:
            bat.set(index, L.SB_NOT_PRESENT, 0, tx)
        return released
    for block in range(bat.blocks):
        index = bat.index(block)
        entry = entries[index]
        if entry & L.STATE_MASK == L.PAYLOAD_PARTIALLY_PRESENT:
            base = entry & L.OFFSET_MASK
            for start, run, present in bitmaps.runs(block, 0, bat.block_len(block)):
                if not present:
                    host.zero_range(base + start, run)
            bat.set(index, L.PAYLOAD_FULLY_PRESENT, base, tx)
    for index in range(ratio, diff_entries, ratio + 1):
        if entries[index] & L.STATE_MASK == L.SB_PRESENT:
            released.append(entries[index] & L.OFFSET_MASK)
        if entries[index]:
            bat.set(index, L.SB_NOT_PRESENT, 0, tx)
    del entries[plain_entries:]
    return released


def creation_options(bat: Bat, *, fixed: bool, log_length: int) -> dict[str, str]:
    """subformat, block_size, log_size, and block_state_zero=off for a disk whose blocks start NOT_PRESENT
    (dynamic) or all present (fixed): what the states of its BAT show."""
    options = {"subformat": "fixed" if fixed else "dynamic", "block_size": str(bat.block_size),
               "log_size": str(log_length)}
    states = {bat.state(block) for block in range(bat.blocks)}
    if bat.differencing or (L.PAYLOAD_NOT_PRESENT in states if not fixed else L.PAYLOAD_ZERO not in states):
        options["block_state_zero"] = "off"
    return options
