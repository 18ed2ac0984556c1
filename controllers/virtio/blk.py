"""virtio-blk over a Drive: request decoding, validation and status exactly as QEMU's virtio-blk does it.

Facts: QEMU 8.2.1 hw/block/virtio-blk.c (virtio_blk_handle_request, virtio_blk_sect_range_ok,
virtio_blk_handle_discard_write_zeroes, virtio_blk_update_config, virtio_blk_get_features, virtio_blk_set_status,
virtio_blk_reset), hw/block/virtio-blk-common.c (exposed config size); virtio 1.2 5.2.

A request is a 16-byte header in the readable side, its data, and a status byte: the last byte of the writable
side. Framing errors (no readable or no writable buffer, a header shorter than 16 bytes, a DISCARD / WRITE_ZEROES
payload shorter than one segment) raise VirtioError: QEMU calls virtio_error, the element is never completed and
the device is broken until reset. Everything else completes with OK, IOERR or UNSUPP. A request is validated
completely before the Drive sees it, so a failing request never touches the image (a multi-segment DISCARD checks
all its segments first, where QEMU, which takes one segment only, has nothing to check in between).

Every behaviour that differs between QEMU versions or between QEMU and the spec is a `VirtioBlkConfig` field;
scenarios/profiles/virtio_blk.py holds the values per profile, each with its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from controllers.ata.identify import default_chs
from controllers.virtio.layouts import (
    BLK_CONFIG_DEFAULTS,
    BLK_CONFIG_FAST,
    BLK_CONFIG_FIELDS,
    BLK_CONFIG_SIZE_BASE,
    BLK_CONFIG_SIZE_DISCARD,
    BLK_CONFIG_SIZE_WRITE_ZEROES,
    BLK_F_BLK_SIZE,
    BLK_F_CONFIG_WCE,
    BLK_F_DISCARD,
    BLK_F_FLUSH,
    BLK_F_GEOMETRY,
    BLK_F_MQ,
    BLK_F_RO,
    BLK_F_SEG_MAX,
    BLK_F_TOPOLOGY,
    BLK_F_WRITE_ZEROES,
    BLK_ID_BYTES,
    BLK_OUTHDR_FAST,
    BLK_OUTHDR_SIZE,
    BLK_S_IOERR,
    BLK_S_OK,
    BLK_S_UNSUPP,
    BLK_SEGMENT_FAST,
    BLK_SEGMENT_SIZE,
    BLK_T_BARRIER,
    BLK_T_DISCARD,
    BLK_T_FLUSH,
    BLK_T_GET_ID,
    BLK_T_IN,
    BLK_T_OUT,
    BLK_T_SCSI_CMD,
    BLK_T_WRITE_ZEROES,
    BLK_T_ZONE_REPORT,
    BLK_WRITE_ZEROES_FLAG_UNMAP,
    BLK_ZONE_REPORT_MIN_IN,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    SECTOR_SIZE,
    VIRTIO_ID_BLOCK,
    VIRTQUEUE_MAX_SIZE,
    bit,
)
from controllers.virtio.pci import Handled
from controllers.virtio.virtqueue import Element, VirtioError
from emu.block import Completion, Request

if TYPE_CHECKING:
    from emu.block import Drive

BDRV_REQUEST_MAX_SECTORS = 4194303      # QEMU: INT_MAX >> 9, the largest request and the largest discard limit
TypeDecoding = Literal["qemu", "exact"]
UsedLength = Literal["in_len", "written"]


@dataclass(frozen=True)
class VirtioBlkConfig:
    """What a virtio-blk device offers and how it answers; defaults are QEMU 7.2's virtio-blk-pci."""

    # Capacity in 512-byte sectors (config `capacity`; QEMU blk_get_geometry: image size / 512).
    capacity_sectors: int
    # The device is read-only: VIRTIO_BLK_F_RO offered, writes, discards and zero writes answer IOERR.
    read_only: bool = False
    # GET_ID answer, at most 20 bytes (QEMU property `serial`, default none: an empty string).
    serial: str = ""
    # Queues and their size (QEMU num-queues, queue-size); MQ is offered when there is more than one.
    num_queues: int = 1
    queue_size: int = 256
    # SEG_MAX value (QEMU: queue_size - 2 with seg-max-adjust, else 126).
    seg_max: int = 254
    # BLK_SIZE and TOPOLOGY values (logical block size, log2 physical/logical, minimum / optimal I/O in blocks).
    blk_size: int = SECTOR_SIZE
    physical_block_exp: int = 0
    min_io_size: int = 0
    opt_io_size: int = 0
    # GEOMETRY (cylinders, heads, sectors); None = QEMU's guess for the size (hd_geometry_guess).
    geometry: tuple[int, int, int] | None = None
    # Volatile write cache at power-on (config `writeback`, FLUSH offered); QEMU: cache=writeback.
    write_cache: bool = True
    # CONFIG_WCE offered: the driver may switch the cache mode through `writeback`.
    config_wce: bool = True
    # INDIRECT_DESC and EVENT_IDX offered (QEMU indirect_desc / event_idx properties, default on).
    indirect_desc: bool = True
    event_idx: bool = True
    # DISCARD / WRITE_ZEROES offered, and their limits (config fields at 36..56).
    discard: bool = True
    write_zeroes: bool = True
    max_discard_sectors: int = BDRV_REQUEST_MAX_SECTORS
    max_discard_seg: int = 1
    discard_sector_alignment: int = 1
    max_write_zeroes_sectors: int = BDRV_REQUEST_MAX_SECTORS
    max_write_zeroes_seg: int = 1
    write_zeroes_may_unmap: bool = True
    # DISCARD / WRITE_ZEROES requests when the feature was not negotiated: False executes them anyway (QEMU 4.0+
    # dispatches the type whatever was negotiated); True answers UNSUPP (a device that does not know them).
    commands_need_feature: bool = False
    # IN/OUT requests above this many sectors answer IOERR (QEMU BDRV_REQUEST_MAX_SECTORS); None: no limit.
    max_rw_sectors: int | None = BDRV_REQUEST_MAX_SECTORS
    # "qemu": the OUT and legacy BARRIER bits of `type` are flags (type & ~(OUT | BARRIER) picks the command), and
    # the legacy SCSI_CMD answers as QEMU's without VIRTIO_BLK_F_SCSI (IOERR or UNSUPP, by the buffer count);
    # "exact": only the spec's type values are known, anything else is UNSUPP.
    type_decoding: TypeDecoding = "qemu"
    # A ZONE_REPORT request (type 16 under "qemu" decoding) whose writable side is shorter than the status byte, the
    # report header and one zone descriptor (129 bytes) breaks the device ("in buffer too small for zone report",
    # QEMU 8.1+ virtio_blk_handle_zone_report, 4f7366506a) before a non-zoned drive answers UNSUPP; False: UNSUPP.
    zone_report_buffer_check: bool = False
    # Used-ring length: "in_len" = the whole writable side whatever was written (QEMU virtio_blk_req_complete
    # pushes req->in_len); "written" = the bytes really written, data plus status (virtio 1.2 2.7.8).
    used_len: UsedLength = "in_len"

    def __post_init__(self) -> None:
        if self.capacity_sectors < 0:
            raise ValueError(f"capacity_sectors {self.capacity_sectors} is negative")
        if len(self.serial.encode()) > BLK_ID_BYTES:
            raise ValueError(f"serial {self.serial!r} is longer than {BLK_ID_BYTES} bytes")
        if not 1 <= self.num_queues <= 0xFFFF:
            raise ValueError(f"num_queues {self.num_queues} is outside 1..65535")
        if not 2 <= self.queue_size <= VIRTQUEUE_MAX_SIZE:
            raise ValueError(f"queue_size {self.queue_size} is outside 2..{VIRTQUEUE_MAX_SIZE}")
        if self.blk_size < SECTOR_SIZE or self.blk_size & (self.blk_size - 1):
            raise ValueError(f"blk_size {self.blk_size} is not a power of two of at least 512")
        for name in ("max_discard_sectors", "max_write_zeroes_sectors", "max_discard_seg", "max_write_zeroes_seg"):
            if not 1 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"{name} {getattr(self, name)} is outside 1..2**32-1")
        if self.type_decoding not in ("qemu", "exact"):
            raise ValueError(f"type_decoding {self.type_decoding!r} is neither 'qemu' nor 'exact'")
        if self.used_len not in ("in_len", "written"):
            raise ValueError(f"used_len {self.used_len!r} is neither 'in_len' nor 'written'")

    def offered_features(self) -> int:
        """virtio_blk_get_features plus the ring features (transport bits other than VERSION_1)."""
        features = bit(BLK_F_SEG_MAX) | bit(BLK_F_GEOMETRY) | bit(BLK_F_BLK_SIZE) | bit(BLK_F_TOPOLOGY)
        for flag, on in ((BLK_F_RO, self.read_only), (BLK_F_FLUSH, self.write_cache or self.config_wce),
                         (BLK_F_CONFIG_WCE, self.config_wce), (BLK_F_MQ, self.num_queues > 1),
                         (BLK_F_DISCARD, self.discard), (BLK_F_WRITE_ZEROES, self.write_zeroes),
                         (F_INDIRECT_DESC, self.indirect_desc), (F_EVENT_IDX, self.event_idx)):
            if on:
                features |= bit(flag)
        return features


class _Status(Exception):
    """A request's protocol outcome other than OK, raised from the depths of validation."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class VirtioBlkDevice:
    """The virtio-blk device model: plug it into a VirtioPciTransport. It owns nothing but its state; the Drive
    stays the caller's."""

    device_id = VIRTIO_ID_BLOCK

    def __init__(self, drive: Drive, config: VirtioBlkConfig) -> None:
        if config.capacity_sectors * SECTOR_SIZE > drive.capacity:
            raise ValueError(f"capacity_sectors {config.capacity_sectors} is larger than the drive "
                             f"({drive.capacity} bytes)")
        self.drive = drive
        self.config = config
        self.queue_sizes = (config.queue_size,) * config.num_queues
        self._sector_mask = config.blk_size // SECTOR_SIZE - 1
        self.wce = config.write_cache
        self.negotiated = 0

    # -- the VirtioDevice interface -------------------------------------------------------------------------
    def offered_features(self) -> int:
        return self.config.offered_features()

    def read_config(self) -> bytes:
        """virtio_blk_update_config, cut to the size QEMU exposes for the offered features."""
        c = self.config
        cyls, heads, secs = c.geometry or default_chs(c.capacity_sectors)
        fields = dict(capacity=c.capacity_sectors, seg_max=c.seg_max, cylinders=cyls, heads=heads, sectors=secs,
                      blk_size=c.blk_size, physical_block_exp=c.physical_block_exp, min_io_size=c.min_io_size,
                      opt_io_size=c.opt_io_size, writeback=int(self.wce), num_queues=c.num_queues)
        size = BLK_CONFIG_SIZE_BASE
        if c.discard:
            fields.update(max_discard_sectors=c.max_discard_sectors, max_discard_seg=c.max_discard_seg,
                          discard_sector_alignment=c.discard_sector_alignment)
            size = BLK_CONFIG_SIZE_DISCARD
        if c.write_zeroes:
            fields.update(max_write_zeroes_sectors=c.max_write_zeroes_sectors,
                          max_write_zeroes_seg=c.max_write_zeroes_seg,
                          write_zeroes_may_unmap=int(c.write_zeroes_may_unmap))
            size = BLK_CONFIG_SIZE_WRITE_ZEROES
        return BLK_CONFIG_FAST.pack(*{**BLK_CONFIG_DEFAULTS, **fields}.values())[:size]

    def write_config(self, offset: int, data: bytes) -> None:
        """virtio_blk_set_config: only `writeback` is writable; it sets the cache mode."""
        wb = BLK_CONFIG_FIELDS["writeback"][0]
        if offset <= wb < offset + len(data):
            self.wce = data[wb - offset] != 0

    def activate(self, features: int) -> None:
        """virtio_blk_set_status at DRIVER_OK: without CONFIG_WCE the cache mode follows the FLUSH feature."""
        self.negotiated = features
        if not features & bit(BLK_F_CONFIG_WCE):
            self.wce = bool(features & bit(BLK_F_FLUSH))

    def reset(self) -> None:
        """virtio_blk_reset: the power-on cache mode comes back."""
        self.wce = self.config.write_cache
        self.negotiated = 0

    def handle(self, queue: int, element: Element) -> Handled:
        """virtio_blk_handle_request for one element: frame it, execute it, write the status byte."""
        if not element.out_sg or not element.in_sg:
            raise VirtioError("virtio-blk missing headers")
        if element.out_len < BLK_OUTHDR_SIZE:
            raise VirtioError("virtio-blk request outhdr too short")
        type_, _ioprio, sector = BLK_OUTHDR_FAST.unpack(element.read_out(0, BLK_OUTHDR_SIZE))
        completions: list[Completion] = []
        data_in = 0
        try:
            data_in = self._execute(type_, sector, element, completions)
            status = BLK_S_OK
        except _Status as outcome:
            status = outcome.status
        in_len = element.in_len
        element.write_in(in_len - 1, bytes([status]))
        written = in_len if self.config.used_len == "in_len" else data_in + 1
        return Handled(written, tuple(completions))

    # -- requests --------------------------------------------------------------------------------------------
    def _command(self, type_: int) -> int | None:
        """The command a `type` selects, or None (UNSUPP). DISCARD / WRITE_ZEROES without the OUT bit are None."""
        if self.config.type_decoding == "exact":
            known = (BLK_T_IN, BLK_T_OUT, BLK_T_FLUSH, BLK_T_GET_ID, BLK_T_DISCARD, BLK_T_WRITE_ZEROES)
            return type_ if type_ in known else None
        key = type_ & ~(BLK_T_OUT | BLK_T_BARRIER)
        if key == BLK_T_IN:
            return BLK_T_OUT if type_ & BLK_T_OUT else BLK_T_IN
        if key in (BLK_T_FLUSH, BLK_T_GET_ID, BLK_T_SCSI_CMD, BLK_T_ZONE_REPORT):
            return key
        if key in (BLK_T_DISCARD & ~BLK_T_OUT, BLK_T_WRITE_ZEROES & ~BLK_T_OUT) and type_ & BLK_T_OUT:
            return key | BLK_T_OUT
        return None

    def _execute(self, type_: int, sector: int, element: Element, completions: list[Completion]) -> int:
        """Run one request; returns the number of bytes written into the writable side (before the status)."""
        command = self._command(type_)
        if command in (BLK_T_IN, BLK_T_OUT):
            return self._read_write(command == BLK_T_OUT, sector, element, completions)
        if command == BLK_T_FLUSH:
            self._submit(Request.flush(), completions)
            return 0
        if command == BLK_T_GET_ID:
            serial = self.config.serial.encode()
            ident = (serial + b"\0")[:min(len(serial) + 1, element.in_len - 1, BLK_ID_BYTES)]
            element.write_in(0, ident)
            return len(ident)
        if command in (BLK_T_DISCARD, BLK_T_WRITE_ZEROES):
            self._discard_write_zeroes(command == BLK_T_WRITE_ZEROES, element, completions)
            return 0
        if command == BLK_T_SCSI_CMD:
            self._legacy_scsi(element)
        if command == BLK_T_ZONE_REPORT and self.config.zone_report_buffer_check \
                and element.in_len < BLK_ZONE_REPORT_MIN_IN:
            raise VirtioError("in buffer too small for zone report")
        raise _Status(BLK_S_UNSUPP)

    @staticmethod
    def _legacy_scsi(element: Element) -> None:
        """virtio_blk_handle_scsi_req without VIRTIO_BLK_F_SCSI (never offered): fewer than two readable or three
        writable buffers is IOERR; otherwise `errors` of the virtio_scsi_inhdr (the second-to-last writable buffer)
        becomes 255 "so that the ioctl fails in the guest", and the caller answers UNSUPP. QEMU stores all four bytes
        whatever that buffer's length; here only the bytes inside it are written."""
        if len(element.out_sg) < 2 or len(element.in_sg) < 3:
            raise _Status(BLK_S_IOERR)
        addr, length = element.in_sg[-2]
        element.mem.write(addr, (255).to_bytes(4, "little")[:length])

    def _range_ok(self, sector: int, nbytes: int, limit: int | None) -> bool:
        """virtio_blk_sect_range_ok: size limit, sector alignment to the logical block, size a whole number of
        logical blocks, and the range inside the capacity."""
        sectors = nbytes // SECTOR_SIZE
        capacity = self.config.capacity_sectors
        return not ((limit is not None and sectors > limit) or sector & self._sector_mask
                    or nbytes % self.config.blk_size or sector > capacity or sectors > capacity - sector)

    def _read_write(self, write: bool, sector: int, element: Element, completions: list[Completion]) -> int:
        """The data moves between guest RAM and the image without a copy in between (views lent to the request);
        a failed read may have changed the data buffers, which the guest may not look at after IOERR anyway."""
        nbytes = element.out_len - BLK_OUTHDR_SIZE if write else element.in_len - 1
        if not self._range_ok(sector, nbytes, self.config.max_rw_sectors):
            raise _Status(BLK_S_IOERR)
        if write and self.config.read_only:
            raise _Status(BLK_S_IOERR)
        if not nbytes:
            return 0                                    # QEMU submits an empty request, which succeeds
        offset = sector * SECTOR_SIZE
        views = element.out_views(BLK_OUTHDR_SIZE, nbytes) if write else element.in_views(0, nbytes)
        try:
            if write:
                data = views[0] if len(views) == 1 else b"".join(views)
                self._submit(Request.write(offset, data, fua=not self.wce), completions)
                return 0
            self._submit(Request.read_into(offset, views), completions)
            return nbytes
        finally:
            element.mem.release(views)

    def _discard_write_zeroes(self, zeroes: bool, element: Element, completions: list[Completion]) -> None:
        """virtio_blk_handle_discard_write_zeroes, for each segment in turn: all are checked before any runs."""
        c = self.config
        feature = BLK_F_WRITE_ZEROES if zeroes else BLK_F_DISCARD
        if c.commands_need_feature and not self.negotiated & bit(feature):
            raise _Status(BLK_S_UNSUPP)
        max_seg = c.max_write_zeroes_seg if zeroes else c.max_discard_seg
        max_sectors = c.max_write_zeroes_sectors if zeroes else c.max_discard_sectors
        payload = element.out_len - BLK_OUTHDR_SIZE
        if payload > BLK_SEGMENT_SIZE and (payload % BLK_SEGMENT_SIZE or payload // BLK_SEGMENT_SIZE > max_seg):
            raise _Status(BLK_S_UNSUPP)                 # QEMU (one segment): "out_len > sizeof(dwz_hdr)"
        if payload < BLK_SEGMENT_SIZE:
            raise VirtioError("virtio-blk discard/write_zeroes header too short")
        raw = element.read_out(BLK_OUTHDR_SIZE, payload)
        segments = [BLK_SEGMENT_FAST.unpack_from(raw, off) for off in range(0, payload, BLK_SEGMENT_SIZE)]
        for sector, num_sectors, flags in segments:
            if num_sectors > max_sectors:
                raise _Status(BLK_S_IOERR)
            if not self._range_ok(sector, num_sectors * SECTOR_SIZE, None):
                raise _Status(BLK_S_IOERR)
            if flags & ~BLK_WRITE_ZEROES_FLAG_UNMAP:
                raise _Status(BLK_S_UNSUPP)             # "any unknown flag" (virtio 1.2 5.2.6.2)
            if not zeroes and flags & BLK_WRITE_ZEROES_FLAG_UNMAP:
                raise _Status(BLK_S_UNSUPP)             # UNMAP on a discard
        if c.read_only:
            raise _Status(BLK_S_IOERR)
        for sector, num_sectors, flags in segments:
            if not num_sectors:
                continue                                # a zero-length segment completes OK
            offset, length = sector * SECTOR_SIZE, num_sectors * SECTOR_SIZE
            if zeroes:
                request = Request.write_zeroes(offset, length, may_unmap=bool(flags & BLK_WRITE_ZEROES_FLAG_UNMAP))
            else:
                request = Request.discard(offset, length)
            self._submit(request, completions)

    def _submit(self, request: Request, completions: list[Completion]) -> None:
        """One block-layer request; a failure (werror=report) is IOERR."""
        done = self.drive.execute(request)
        completions.append(done)
        if not done.ok:
            raise _Status(BLK_S_IOERR)
