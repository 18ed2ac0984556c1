"""Create VHDX files with qemu-img's layout (block/vhdx.c vhdx_co_create), plus differencing disks.

File identifier, two headers (random sequence numbers n and n+1), two identical region tables, the
log at 1 MiB, the BAT after it and the 1 MiB metadata region after that, each 1 MiB aligned; the
data area starts 5 MiB after the BAT (room to grow the metadata). A dynamic disk's payload entries
start as PAYLOAD_BLOCK_ZERO (qemu's block_state_zero=on default) or NOT_PRESENT; a fixed disk reserves
its data area and, with block_state_zero=off, has every block present in order after the data start
(with the default block_state_zero=on qemu marks its blocks ZERO all the same); a differencing disk
(an emu extension: qemu 7.2 cannot make or open one) starts with every block NOT_PRESENT and names
its parent by the parent's data-write GUID and by relative and absolute paths in a parent locator.
"""

from __future__ import annotations

import random
import uuid
from array import array

from emu.errors import ImageError, UsageError
from emu.units import parse_size
from images.backend import backing_path
from images.hostfile import HostFile
from images.vhdx import FORMAT
from images.vhdx import layout as L
from images.vhdx.bat import SECTOR, Bat, chunk_ratio, entry_count
from images.vhdx.headers import build_parent_locator
from images.vhdx.log import checksum
from images.vhdx.relink import parent_locator_pairs

CREATE_OPTIONS = ("size", "log_size", "block_size", "subformat", "block_state_zero", "backing_file", "backing_fmt")
CREATOR = "emu"
DEFAULT_LOG_SIZE = 1 * L.MiB


def _auto_block_size(size: int) -> int:
    """qemu's choice, to keep the BAT small."""
    if size > 32 << 40:
        return 64 * L.MiB
    if size > 100 << 30:
        return 32 * L.MiB
    if size > 1 << 30:
        return 16 * L.MiB
    return 8 * L.MiB


def _size_option(options: dict[str, str], key: str, default: int) -> int:
    if key not in options:
        return default
    try:
        return parse_size(options[key])
    except UsageError:
        raise UsageError(f"vhdx: invalid {key} '{options[key]}'") from None


def _bool_option(options: dict[str, str], key: str, default: bool) -> bool:
    value = options.get(key, "on" if default else "off")
    if value not in ("on", "off"):
        raise UsageError(f"vhdx: {key} expects on or off, not '{value}'")
    return value == "on"


def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    """qemu-img prints size, log_size and block_size always, subformat and block_state_zero if given."""
    text = (f"size={size} log_size={_size_option(options, 'log_size', DEFAULT_LOG_SIZE)} "
            f"block_size={_size_option(options, 'block_size', 0)}")
    for key in ("subformat", "block_state_zero"):
        if key in options:
            text += f" {key}={options[key]}"
    backing = options.get("backing_file", backing)
    if backing:
        text += f" backing_file={backing} backing_fmt=vhdx"
    return text


def _metadata(size: int, block_size: int, flags: int, locator: bytes | None) -> bytes:
    """The metadata region's first bytes: the table, then the items packed from 64 KiB."""
    items = [(L.FILE_PARAMS_GUID, L.FILE_PARAMETERS.build(dict(block_size=block_size, flags=flags)),
              L.META_IS_REQUIRED),
             (L.VIRTUAL_SIZE_GUID, size.to_bytes(8, "little"), L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK),
             (L.PAGE83_GUID, uuid.uuid4().bytes_le, L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK),
             (L.LOGICAL_SECTOR_GUID, SECTOR.to_bytes(4, "little"), L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK),
             (L.PHYSICAL_SECTOR_GUID, SECTOR.to_bytes(4, "little"), L.META_IS_REQUIRED | L.META_IS_VIRTUAL_DISK)]
    if locator is not None:
        items.append((L.PARENT_LOCATOR_GUID, locator, L.META_IS_REQUIRED))
    table = bytearray(L.METADATA_TABLE_SIZE)
    table[:32] = L.METADATA_HEADER.build(dict(signature=L.METADATA_SIGNATURE, reserved=0, entry_count=len(items),
                                              reserved2=bytes(20)))
    body = b""
    offset = L.METADATA_TABLE_SIZE
    for i, (item, data, item_flags) in enumerate(items):
        table[32 + i * 32:64 + i * 32] = L.METADATA_ENTRY.build(dict(item_id=item, offset=offset, length=len(data),
                                                                     flags=item_flags, reserved=0))
        body += data
        offset += len(data)
    return bytes(table) + body


def _parent(path: str, backing: str, opener) -> tuple[dict[str, str], int, int]:
    """The parent's locator entries, virtual size and block size."""
    parent = opener(backing_path(path, backing), FORMAT, read_only=True, open_backing=False)
    try:
        return parent_locator_pairs(path, backing, parent.data_write_guid), parent.virtual_size, parent.block_size
    finally:
        parent.close()


def create(path: str, size: int | None, options: dict[str, str], *, backing: str | None,
           backing_fmt: str | None, opener) -> None:
    for key in options:
        if key not in CREATE_OPTIONS:
            raise UsageError(f"vhdx: invalid parameter '{key}'")
    subformat = options.get("subformat", "dynamic")
    if subformat not in ("dynamic", "fixed"):
        raise UsageError(f"vhdx: subformat '{subformat}' is not dynamic or fixed")
    log_size = _size_option(options, "log_size", DEFAULT_LOG_SIZE)
    log_size = -(-log_size // L.MiB) * L.MiB
    if log_size < L.MiB or log_size >= 1 << 32:
        raise UsageError("vhdx: log size must be at least 1 MB and smaller than 4 GB")
    block_size = _size_option(options, "block_size", 0)
    block_size = min(-(-block_size // L.MiB) * L.MiB, L.BLOCK_SIZE_MAX)
    zero_blocks = _bool_option(options, "block_state_zero", True)
    backing = options.get("backing_file", backing)
    locator = None
    if backing:
        if options.get("backing_fmt", backing_fmt) not in (None, FORMAT):
            raise UsageError("vhdx: a differencing VHDX's parent must be a VHDX (-F vhdx)")
        if subformat == "fixed":
            raise UsageError("vhdx: a differencing disk cannot be fixed")
        if options.get("block_state_zero") == "on":
            raise UsageError("vhdx: block_state_zero=on would hide the parent; a differencing disk starts with "
                             "every block not present")
        pairs, parent_size, parent_block = _parent(path, backing, opener)
        if size is not None and size != parent_size:
            raise UsageError(f"vhdx: a differencing disk has its parent's size ({parent_size} bytes)")
        size, block_size = parent_size, block_size or parent_block
        locator = build_parent_locator(pairs)
        zero_blocks = False
    if size is None:
        raise UsageError("vhdx: image creation needs a size parameter")
    size += -size % SECTOR
    if size > L.MAX_DISK_SIZE:
        raise UsageError("vhdx: image size too large; max of 64TB")
    if size == 0:
        raise UsageError("vhdx: image size must be greater than 0")
    block_size = block_size or _auto_block_size(size)
    if block_size & (block_size - 1):
        raise UsageError("vhdx: block size must be a power of two")
    fixed = subformat == "fixed"
    blocks = -(-size // block_size)
    entries = entry_count(blocks, chunk_ratio(block_size), locator is not None)
    bat_offset = L.HEADER_SECTION_END + log_size
    bat_length = -(-entries * 8 // L.MiB) * L.MiB
    meta_offset = bat_offset + bat_length
    data_offset = meta_offset + L.MiB + 4 * L.MiB
    flags = (L.PARAM_LEAVE_ALLOCATED if fixed else 0) | (L.PARAM_HAS_PARENT if locator is not None else 0)
    metadata = _metadata(size, block_size, flags, locator)
    if len(metadata) > L.MiB:
        raise UsageError("vhdx: parent paths too long for the metadata region")

    header = dict(signature=L.HEADER_SIGNATURE, checksum=0, sequence_number=random.getrandbits(32),
                  file_write_guid=uuid.uuid4().bytes_le, data_write_guid=uuid.uuid4().bytes_le,
                  log_guid=L.ZERO_GUID, log_version=0, version=1, log_length=log_size,
                  log_offset=L.HEADER_SECTION_END)
    regions = bytearray(L.REGION_AREA)
    regions[:16] = L.REGION_HEADER.build(dict(signature=L.REGION_SIGNATURE, checksum=0, entry_count=2, reserved=0))
    # qemu leaves the Required bit clear on both entries (Hyper-V sets it; [MS-VHDX] 2.2.3.2 asks only that
    # an unknown required region be refused, and every reader knows these two)
    regions[16:48] = L.REGION_ENTRY.build(dict(guid=L.BAT_GUID, file_offset=bat_offset, length=bat_length,
                                               required=0))
    regions[48:80] = L.REGION_ENTRY.build(dict(guid=L.METADATA_GUID, file_offset=meta_offset, length=L.MiB,
                                               required=0))
    regions[4:8] = checksum(regions).to_bytes(4, "little")

    host = HostFile(path, writable=True, create=True)
    try:
        host.pwrite(0, L.FILE_SIGNATURE + f"{CREATOR}\0".encode("utf-16-le"))
        for offset in L.HEADER_OFFSETS:
            raw = bytearray(L.HEADER_AREA)
            raw[:L.HEADER.sizeof()] = L.HEADER.build(header)
            raw[4:8] = checksum(raw).to_bytes(4, "little")
            host.pwrite(offset, raw)
            header["sequence_number"] += 1
        for offset in L.REGION_OFFSETS:
            host.pwrite(offset, regions)
        host.truncate(data_offset + (size if fixed else 0))
        if fixed or zero_blocks:
            # as qemu 7.2 (vhdx_create_bat): block_state_zero=on, the default, wins over subformat=fixed, so a
            # default fixed disk has its data area reserved but every block ZERO (file offset 0), and qemu
            # appends a block at the end of the file on its first write; the whole BAT region is written
            state = L.PAYLOAD_ZERO if zero_blocks else L.PAYLOAD_FULLY_PRESENT
            bat = Bat(array("Q", bytes(bat_length)), bat_offset, bat_length, block_size, size, differencing=False)
            for block in range(blocks):
                offset = data_offset + block * block_size if state == L.PAYLOAD_FULLY_PRESENT else 0
                bat.entries[bat.index(block)] = offset | state
            host.pwrite(bat_offset, bat.encode(0, len(bat.entries)))
        host.pwrite(meta_offset, metadata)
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None
    finally:
        host.close()
