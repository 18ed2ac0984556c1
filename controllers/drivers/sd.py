"""The Linux SCSI disk upper layer (drivers/scsi/sd.c, 6.1) over any "SCSI command" callable.

`command(cdb, data_out, data_in_len)` is a generator returning an outcome with `ok`, `status`, `sense_code` and
`data_in` (VirtioScsiDriver.command bound to a LUN is one; libata's SCSI translation could be another).

probe(): TEST UNIT READY until GOOD (sd_spinup_disk: a power-on unit attention is retried, `SdConfig.spinup_tries`),
INQUIRY, READ CAPACITY(16) when the device claims more than SPC-2 (sd_try_rc16_first) falling back to (10) when
(16) fails, READ CAPACITY(10) otherwise (and (16) after it when the last LBA is FFFFFFFFh); then VPD 00h and, when
listed, B2h (sd_read_block_provisioning, only with LBPME) and B0h (sd_read_block_limits). The provisioning mode is
`provisioning_mode()` (sd_read_block_limits / sd_discard_mode) and the discard limits `discard_limits()`
(sd_config_discard). Discards become requests as the block layer makes them (blk_layer: one range per request,
split at the limit, contiguous bios merged) and each request is one command: UNMAP with one descriptor
(sd_setup_unmap_cmnd), or WRITE SAME(16)/(10) of one zero block with UNMAP (sd_setup_write_same16_cmnd / _10_cmnd),
or WRITE SAME(10) without UNMAP in writesame_zero mode. Reads and writes use READ/WRITE(10), or (16) above 2^32
blocks or 65535 blocks per command (sd_setup_read_write_cmnd), cut to the transfer limit.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from controllers.drivers import blk_layer
from controllers.drivers.config import GuestConfig, SdConfig
from controllers.scsi import sense as S
from controllers.scsi.layouts import (
    BLOCK_LIMITS,
    BLOCK_LIMITS_LEN,
    INQUIRY,
    INQUIRY_STANDARD,
    INQUIRY_STANDARD_LEN,
    LOGICAL_BLOCK_PROVISIONING,
    READ_CAPACITY_10,
    READ_CAPACITY_10_DATA,
    READ_CAPACITY_16,
    READ_CAPACITY_16_DATA,
    SAI_READ_CAPACITY_16,
    SYNCHRONIZE_CACHE_10,
    TEST_UNIT_READY,
    UNMAP_CDB,
    UNMAP_DESCRIPTOR,
    UNMAP_HEADER,
    VPD_HEADER,
    WRITE_SAME_10,
    WRITE_SAME_16,
    Op,
    parse,
)
from emu.errors import DriverError, DriverLayoutError

SECTOR = 512
UINT_MAX = 0xFFFFFFFF


class ProvisioningMode(StrEnum):
    """sd's provisioning_mode names (lbp_mode[] in sd.c)."""

    FULL = "full"
    UNMAP = "unmap"
    WS16 = "writesame_16"
    WS10 = "writesame_10"
    ZERO = "writesame_zero"
    DISABLED = "disabled"


class CommandOutcome(Protocol):
    ok: bool
    status: int | None
    data_in: bytes

    @property
    def sense_code(self) -> S.Sense | None: ...


Command = Callable[[bytes, bytes, int], Generator[Any, Any, CommandOutcome]]


class SdError(DriverError):
    """The disk could not be brought up (a command the probe needs failed)."""


@dataclass(frozen=True)
class BlockLimits:
    """The Block Limits VPD page fields sd reads (from a page of at least 64 bytes)."""

    max_xfer_blocks: int
    max_unmap_lba_count: int
    max_unmap_descriptors: int
    unmap_granularity: int
    unmap_alignment: int | None         # None when UGAVALID is 0
    max_ws_blocks: int

    @property
    def max_unmap_blocks(self) -> int:
        """sd_read_block_limits: the UNMAP LBA limit counts only when a descriptor count is given too (else 0)."""
        return self.max_unmap_lba_count if self.max_unmap_lba_count and self.max_unmap_descriptors else 0


@dataclass(frozen=True)
class Provisioning:
    """The Logical Block Provisioning VPD page bits sd reads."""

    lbpu: bool
    lbpws: bool
    lbpws10: bool


def provisioning_mode(lbpme: bool, limits: BlockLimits | None, lbp: Provisioning | None) -> ProvisioningMode:
    """sd's choice: without LBPME the disk is fully provisioned; READ CAPACITY(16)'s LBPME alone selects
    writesame_16; a Block Limits page (3Ch long) then decides with the B2h bits when that page was read, else by
    whether an UNMAP limit is given (sd_read_block_limits, sd_discard_mode)."""
    if not lbpme:
        return ProvisioningMode.FULL
    if limits is None:
        return ProvisioningMode.WS16
    max_unmap = limits.max_unmap_blocks
    if lbp is None:
        return ProvisioningMode.UNMAP if max_unmap else ProvisioningMode.WS16
    if lbp.lbpu and max_unmap:
        return ProvisioningMode.UNMAP
    if lbp.lbpws:
        return ProvisioningMode.WS16
    if lbp.lbpws10:
        return ProvisioningMode.WS10
    return ProvisioningMode.DISABLED


@dataclass(frozen=True)
class DiscardLimits:
    """sd_config_discard's queue limits: blocks per discard command, granularity and alignment in bytes."""

    max_blocks: int
    granularity: int
    alignment: int


def discard_limits(mode: ProvisioningMode, block_size: int, physical_block_size: int, limits: BlockLimits | None,
                   sd: SdConfig) -> DiscardLimits:
    """sd_config_discard: max discard blocks per mode (0 = no discard, else capped at SD_MAX_WS16_BLOCKS or
    SD_MAX_WS10_BLOCKS), granularity = max(physical block, OPTIMAL UNMAP GRANULARITY), alignment = UNMAP
    GRANULARITY ALIGNMENT (when UGAVALID)."""
    lim = limits or BlockLimits(0, 0, 0, 0, None, 0)
    max_unmap = lim.max_unmap_blocks
    granularity = max(physical_block_size, lim.unmap_granularity * block_size)
    alignment = (lim.unmap_alignment or 0) * block_size
    cap = {ProvisioningMode.UNMAP: sd.max_ws16_blocks, ProvisioningMode.WS16: sd.max_ws16_blocks,
           ProvisioningMode.WS10: sd.max_ws10_blocks, ProvisioningMode.ZERO: sd.max_ws10_blocks}.get(mode)
    if cap is None:
        return DiscardLimits(0, granularity, alignment)
    limit = max_unmap if mode is ProvisioningMode.UNMAP else lim.max_ws_blocks
    return DiscardLimits(min(limit, cap) if limit else cap, granularity, alignment)


# The READ/WRITE(10) and (16) CDBs sd sends with no flags, as struct codecs for the per-request path (equal to
# layouts.RW_10 / RW_16 built with protect, dpo, fua and group 0: tests/controllers/drivers/test_sd.py).
RW_10_FAST = struct.Struct(">BBIBHB")      # opcode, flags, LBA, group, transfer length, control
RW_16_FAST = struct.Struct(">BBQIBB")      # opcode, flags, LBA, transfer length, group, control


# The fixed CDBs of the probe and of a flush (sd_spinup_disk, sd_read_capacity_10, sd_setup_flush_cmnd).
TUR_CDB = TEST_UNIT_READY.build(dict(opcode=Op.TEST_UNIT_READY, control=0))
READ_CAPACITY_10_CDB = READ_CAPACITY_10.build(dict(opcode=Op.READ_CAPACITY_10, lba=0, pmi=False, control=0))
SYNCHRONIZE_CACHE_10_CDB = SYNCHRONIZE_CACHE_10.build(dict(opcode=Op.SYNCHRONIZE_CACHE_10, sync_nv=False,
                                                            immed=False, lba=0, group=0, number_of_blocks=0,
                                                            control=0))


def _inquiry_cdb(evpd: bool, page: int, allocation_length: int) -> bytes:
    return INQUIRY.build(dict(opcode=Op.INQUIRY, cmddt=False, evpd=evpd, page_code=page,
                              allocation_length=allocation_length, control=0))


def unmap_command(lba: int, blocks: int) -> tuple[bytes, bytes]:
    """sd_setup_unmap_cmnd: UNMAP with a 24-byte parameter list holding one descriptor."""
    cdb = UNMAP_CDB.build(dict(opcode=Op.UNMAP, anchor=False, group=0, parameter_list_length=24, control=0))
    params = UNMAP_HEADER.build(dict(unmap_data_length=6 + 16, block_descriptor_data_length=16))
    return cdb, params + UNMAP_DESCRIPTOR.build(dict(lba=lba, count=blocks))


def write_same_command(lba: int, blocks: int, block_size: int, *, sixteen: bool, unmap: bool) -> tuple[bytes, bytes]:
    """sd_setup_write_same16_cmnd / _10_cmnd: one zeroed block of data-out, the UNMAP bit when asked."""
    fields = dict(protect=0, anchor=False, unmap=unmap, pbdata=False, lbdata=False, ndob=False, lba=lba,
                  number_of_blocks=blocks, group=0, control=0)
    if sixteen:
        return WRITE_SAME_16.build(dict(fields, opcode=Op.WRITE_SAME_16)), bytes(block_size)
    return WRITE_SAME_10.build(dict(fields, opcode=Op.WRITE_SAME_10)), bytes(block_size)


@dataclass
class SdDisk:
    """What the probe learned."""

    capacity: int                       # logical blocks
    block_size: int
    physical_block_size: int
    lbpme: bool
    lbprz: bool
    scsi_level: int
    vpd_pages: tuple[int, ...]
    limits: BlockLimits | None
    provisioning: Provisioning | None
    mode: ProvisioningMode
    discard: DiscardLimits
    max_xfer_blocks: int


class SdDriver:
    """sd on one logical unit reached through `command`, as `guest` configures sd and the block layer. `probe()`
    first; every method is a generator. A `provisioning_override` plays the sysfs provisioning_mode attribute
    (e.g. writesame_zero)."""

    def __init__(self, command: Command, *, guest: GuestConfig, max_hw_sectors: int = 0xFFFF,
                 provisioning_override: ProvisioningMode | None = None) -> None:
        self.command = command
        self.config = guest.sd
        self.max_sectors = guest.block.max_sectors
        self.max_hw_sectors = max_hw_sectors      # the host's max_sectors (virtio-scsi: config max_sectors)
        self.override = provisioning_override
        self.disk: SdDisk | None = None

    def _must(self, outcome: CommandOutcome, what: str) -> bytes:
        if not outcome.ok:
            raise SdError(f"{what} failed: status {outcome.status}, sense {outcome.sense_code}")
        return outcome.data_in

    def probe(self) -> Generator[Any, Any, SdDisk]:
        for _ in range(self.config.spinup_tries):
            tur = yield from self.command(TUR_CDB, b"", 0)
            if tur.ok:
                break
        self._must(tur, "TEST UNIT READY")
        inquiry = self._must((yield from self.command(_inquiry_cdb(False, 0, INQUIRY_STANDARD_LEN), b"",
                                                      INQUIRY_STANDARD_LEN)), "INQUIRY")
        version = parse(INQUIRY_STANDARD, inquiry.ljust(INQUIRY_STANDARD_LEN, b"\0"))["version"] & 0x07
        scsi_level = version + 1 if version >= 2 else version      # scsi_scan: SCSI-2 and later are + 1
        capacity, block_size, lbppbe, lbpme, lbprz = yield from self._read_capacity(scsi_level > 5)
        pages: tuple[int, ...] = ()
        limits = provisioning = None
        if scsi_level >= 5:                                           # scsi_device_supports_vpd: SPC-2 and later
            page0 = yield from self._vpd(0x00)
            if page0 is not None:
                pages = tuple(page0[4:4 + parse(VPD_HEADER, page0[:4])["page_length"]])
            if lbpme and 0xB2 in pages:
                provisioning = yield from self._vpd_b2()
            if 0xB0 in pages:
                limits = yield from self._vpd_b0()
        mode = self.override or provisioning_mode(lbpme, limits, provisioning)
        physical = block_size << lbppbe
        max_xfer = limits.max_xfer_blocks if limits and limits.max_xfer_blocks else self.config.max_xfer_blocks
        self.disk = SdDisk(capacity, block_size, physical, lbpme, lbprz, scsi_level, pages, limits, provisioning,
                           mode, discard_limits(mode, block_size, physical, limits if lbpme else None, self.config),
                           max_xfer)
        return self.disk

    def _read_capacity(self, rc16_first: bool) -> Generator[Any, Any, tuple[int, int, int, bool, bool]]:
        """sd_read_capacity: (blocks, block size, LBPPBE, LBPME, LBPRZ)."""
        if rc16_first:
            out = yield from self._rc16()
            if out is not None:
                return out
        rc10 = self._must((yield from self.command(READ_CAPACITY_10_CDB, b"", 8)),
                          "READ CAPACITY(10)")
        rc = parse(READ_CAPACITY_10_DATA, rc10.ljust(8, b"\0"))
        last, block_size = rc["last_lba"], rc["block_length"]
        if last == 0xFFFFFFFF and not rc16_first:
            out = yield from self._rc16()
            if out is not None:
                return out
        return last + 1, block_size, 0, False, False

    def _rc16(self) -> Generator[Any, Any, tuple[int, int, int, bool, bool] | None]:
        cdb = READ_CAPACITY_16.build(dict(opcode=Op.SERVICE_ACTION_IN_16, service_action=SAI_READ_CAPACITY_16,
                                          lba=0, allocation_length=32, pmi=False, control=0))
        out = yield from self.command(cdb, b"", 32)
        if not out.ok:
            return None
        rc = parse(READ_CAPACITY_16_DATA, out.data_in[:32].ljust(32, b"\0"))
        return rc["last_lba"] + 1, rc["block_length"], rc["lbppbe"], rc["lbpme"], rc["lbprz"]

    def _vpd(self, page: int) -> Generator[Any, Any, bytes | None]:
        length = self.config.vpd_len[page]
        out = yield from self.command(_inquiry_cdb(True, page, length), b"", length)
        if not out.ok or len(out.data_in) < 4 or parse(VPD_HEADER, out.data_in[:4])["page_code"] != page:
            return None
        return out.data_in

    def _vpd_b2(self) -> Generator[Any, Any, Provisioning | None]:
        data = yield from self._vpd(0xB2)
        if data is None or len(data) < 6:
            return None
        lbp = parse(LOGICAL_BLOCK_PROVISIONING, data[4:8].ljust(4, b"\0"))
        return Provisioning(lbp["lbpu"], lbp["lbpws"], lbp["lbpws10"])

    def _vpd_b0(self) -> Generator[Any, Any, BlockLimits | None]:
        data = yield from self._vpd(0xB0)
        # sd_read_block_limits takes the limits and the discard mode from a page of at least 64 bytes
        if data is None or len(data) < 4 or min(len(data), parse(VPD_HEADER, data[:4])["page_length"] + 4) < 64:
            return None
        b0 = parse(BLOCK_LIMITS, data[4:BLOCK_LIMITS_LEN].ljust(BLOCK_LIMITS_LEN - 4, b"\0"))
        return BlockLimits(b0["maximum_transfer_length"], b0["maximum_unmap_lba_count"],
                           b0["maximum_unmap_block_descriptor_count"], b0["optimal_unmap_granularity"],
                           b0["unmap_granularity_alignment"] if b0["ugavalid"] else None,
                           b0["maximum_write_same_length"] & UINT_MAX)        # sd keeps the low 32 bits

    # -- I/O -----------------------------------------------------------------------------------------------------
    def _rw_cdb(self, write: bool, lba: int, blocks: int) -> bytes:
        """sd_setup_read_write_cmnd: (16) for big disks or long transfers, else (10) (use_10_for_rw)."""
        if self.disk.capacity > UINT_MAX or blocks > 0xFFFF:
            return RW_16_FAST.pack(Op.WRITE_16 if write else Op.READ_16, 0, lba, blocks, 0, 0)
        return RW_10_FAST.pack(Op.WRITE_10 if write else Op.READ_10, 0, lba, 0, blocks, 0)

    def _step(self) -> int:
        """Blocks per read/write command: the queue's max_sectors (host limit, the block layer's default, and the
        device's MAXIMUM TRANSFER LENGTH)."""
        bs = self.disk.block_size
        sectors = min(self.max_hw_sectors, self.max_sectors, self.disk.max_xfer_blocks * (bs // SECTOR))
        return max(1, sectors * SECTOR // bs)

    def read(self, lba: int, blocks: int) -> Generator[Any, Any, tuple[bool, bytes]]:
        """(all good, data); stops at the first failure."""
        bs, step, data = self.disk.block_size, self._step(), []
        for first in range(lba, lba + blocks, step):
            n = min(step, lba + blocks - first)
            out = yield from self.command(self._rw_cdb(False, first, n), b"", n * bs)
            if not out.ok:
                return False, b"".join(data)
            data.append(out.data_in)
        return True, b"".join(data)

    def write(self, lba: int, data: bytes) -> Generator[Any, Any, bool]:
        bs, step = self.disk.block_size, self._step()
        if len(data) % bs:
            raise DriverLayoutError(f"write of {len(data)} bytes is not whole {bs}-byte blocks")
        view = memoryview(data)                     # pieces go to the driver without a copy each
        for off in range(0, len(data), step * bs):
            piece = view[off:off + step * bs]
            out = yield from self.command(self._rw_cdb(True, lba + off // bs, len(piece) // bs), piece, 0)
            if not out.ok:
                return False
        return True

    def flush(self) -> Generator[Any, Any, bool]:
        """sd_setup_flush_cmnd: SYNCHRONIZE CACHE(10) of the whole disk."""
        out = yield from self.command(SYNCHRONIZE_CACHE_10_CDB, b"", 0)
        return out.ok

    def discard_commands(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
        """The (CDB, data-out) of every command that discarding (sector, count) ranges of 512-byte sectors sends;
        none when the mode has no discard (blkdev_issue_discard fails with EOPNOTSUPP)."""
        d = self.disk
        limits = self.discard_queue_limits()
        if limits is None:
            return []
        per_block = d.block_size // SECTOR
        for sector, count in ranges:
            if sector % per_block or count % per_block:
                raise DriverLayoutError(f"discard {sector}+{count} is not whole {d.block_size}-byte blocks")
        out = []
        for [(start, n)] in blk_layer.discard_requests(ranges, limits):     # one range per request (sd)
            lba, blocks = start // per_block, n // per_block
            if d.mode is ProvisioningMode.UNMAP:
                out.append(unmap_command(lba, blocks))
            else:
                out.append(write_same_command(lba, blocks, d.block_size, sixteen=d.mode is ProvisioningMode.WS16,
                                              unmap=d.mode is not ProvisioningMode.ZERO))
        return out

    def max_ws_blocks(self) -> int:
        """sd_config_write_same: WRITE SAME's block limit (the B0 page's, capped at SD_MAX_WS16_BLOCKS above
        SD_MAX_WS10_BLOCKS); 0 when the disk gives none (sd then sets no_write_same and zeroes with writes)."""
        limits = self.disk.limits
        blocks = limits.max_ws_blocks if limits else 0
        if blocks > self.config.max_ws10_blocks:
            return min(blocks, self.config.max_ws16_blocks)
        return blocks

    def queue_limits(self, max_segments: int, max_segment_size: int) -> blk_layer.QueueLimits:
        """The queue sd sets up over a host with these scatter-gather limits (sd_revalidate_disk)."""
        d = self.disk
        per_block = d.block_size // SECTOR
        return blk_layer.QueueLimits(
            max_sectors=self._step() * per_block,
            max_hw_sectors=min(self.max_hw_sectors, d.max_xfer_blocks * per_block),
            max_segments=max_segments, max_segment_size=max_segment_size,
            max_write_zeroes=self.max_ws_blocks() * per_block, discard=self.discard_queue_limits(),
            logical_block=d.block_size)

    def discard_queue_limits(self) -> blk_layer.DiscardLimits | None:
        """The queue's discard limits in 512-byte sectors, or None when the provisioning mode has no discard."""
        d = self.disk
        if not d.discard.max_blocks:
            return None
        per_block = d.block_size // SECTOR
        return blk_layer.DiscardLimits(d.discard.max_blocks * per_block, max(d.discard.granularity // SECTOR, 1),
                                       d.discard.alignment // SECTOR, logical_block=d.block_size)

    def write_zeroes(self, sector: int, count: int, *, unmap: bool) -> Generator[Any, Any, list[CommandOutcome]]:
        """sd_setup_write_zeroes_cmnd: WRITE SAME of a zeroed block, in requests of at most max_ws_blocks; with the
        UNMAP bit only when `unmap` and the disk reads zeros after UNMAP (LBPRZ with LBPWS: SD_ZERO_WS16_UNMAP);
        (16) for large LBAs or counts, else (10). Stops at the first failure."""
        d = self.disk
        per_block = d.block_size // SECTOR
        step = self.max_ws_blocks()
        if not step or sector % per_block or count % per_block:
            raise DriverLayoutError(f"sd cannot zero {sector}+{count} with WRITE SAME (max_ws_blocks {step})")
        with_unmap = unmap and d.lbprz and bool(d.provisioning and d.provisioning.lbpws)
        outcomes = []
        lba, blocks = sector // per_block, count // per_block
        for first in range(lba, lba + blocks, step):
            n = min(step, lba + blocks - first)
            sixteen = with_unmap or first + n > UINT_MAX or n > 0xFFFF
            cdb, data = write_same_command(first, n, d.block_size, sixteen=sixteen, unmap=with_unmap)
            out = yield from self.command(cdb, data, 0)
            outcomes.append(out)
            if not out.ok:
                break
        return outcomes

    def discard(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list[CommandOutcome]]:
        """Send the discard commands in order; stops after the first failure."""
        outcomes = []
        for cdb, data_out in self.discard_commands(ranges):
            out = yield from self.command(cdb, data_out, 0)
            outcomes.append(out)
            if not out.ok:
                break
        return outcomes
