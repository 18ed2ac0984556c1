"""The SBC-3 block commands of a SCSI disk over a Drive, and what SBC adds to the primary commands.

Commands: READ/WRITE(6/10/12/16), WRITE AND VERIFY and VERIFY(10/12/16), WRITE SAME(10/16) with UNMAP and NDOB,
UNMAP, READ CAPACITY(10/16), GET LBA STATUS, SYNCHRONIZE CACHE(10/16), and the block commands a fixed disk only
checks (FORMAT UNIT, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, SEEK(10)). For the primary commands: the
VPD pages B0h/B1h/B2h, the mode pages 01h/04h/05h/08h, MODE SENSE's block descriptor and device-specific
parameter, and what a MODE SELECT of the caching page changes. `BlockCommands` is the `CommandSet` an
spc.LogicalUnit runs.

Behaviour follows QEMU 7.2 hw/scsi/scsi-disk.c (scsi_disk_dma_command, scsi_disk_emulate_command,
scsi_disk_emulate_unmap / _write_same / _vpd_page, mode_sense_page); every difference between QEMU releases and
SBC-3 is a field of `ScsiDiskConfig`, never a version check here.

A failing command never touches the image: everything is checked before the first write or discard, except
where QEMU itself has already acted (UNMAP with `unmap_validate_first` off stops at the first bad descriptor
after discarding the earlier ones, as scsi_unmap_complete_noio does; a WRITE SAME larger than 512 KiB is
written in pieces, and a backend error on a later piece leaves the earlier ones written).
Departure from QEMU: MODE SELECT cannot change the block size (a block descriptor with another block length
is INVALID FIELD IN PARAMETER LIST).
"""

from __future__ import annotations

from controllers.ata.identify import default_chs
from controllers.scsi import sense as S
from controllers.scsi.codec import decode_rw
from controllers.scsi.command import (
    NO_TRANSFER,
    CheckCondition,
    Data,
    Direction,
    NotTransferred,
    Transfer,
    backend_failure,
    fit_allocation,
    transfer_out,
)
from controllers.scsi.config import ScsiDiskConfig
from controllers.scsi.layouts import (
    BLOCK_CHARACTERISTICS,
    BLOCK_LIMITS,
    CACHING_PAGE,
    FLEXIBLE_DISK_PAGE,
    FORMAT_UNIT,
    GENERAL_BLOCK_DESCRIPTOR,
    GET_LBA_STATUS,
    GET_LBA_STATUS_HEADER,
    LBA_DEALLOCATED,
    LBA_MAPPED,
    LBA_STATUS_DESCRIPTOR,
    LOGICAL_BLOCK_PROVISIONING,
    MODE_PAGE_CACHING,
    MODE_PAGE_HD_GEOMETRY,
    MODE_PAGE_R_W_ERROR,
    PC_CHANGEABLE,
    PC_DEFAULT,
    R_W_ERROR_RECOVERY_PAGE,
    READ_CAPACITY_10,
    READ_CAPACITY_10_DATA,
    READ_CAPACITY_16,
    READ_CAPACITY_16_DATA,
    RIGID_DISK_GEOMETRY_PAGE,
    SAI_GET_LBA_STATUS,
    SAI_READ_CAPACITY_16,
    SEEK_10,
    SHORT_LBA_BLOCK_DESCRIPTOR,
    SYNCHRONIZE_CACHE_10,
    SYNCHRONIZE_CACHE_16,
    TYPE_DISK,
    UNMAP_CDB,
    UNMAP_DESCRIPTOR,
    UNMAP_HEADER,
    VERIFY_10,
    VERIFY_12,
    VERIFY_16,
    VPD_BLOCK_CHARACTERISTICS,
    VPD_BLOCK_LIMITS,
    VPD_LOGICAL_BLOCK_PROVISIONING,
    WRITE_SAME_10,
    WRITE_SAME_16,
    Op,
    build,
    parse,
    parse_mode_page,
)
from controllers.scsi.toc import READ_TOC, read_toc
from emu.block import Completion, Drive, Request
from emu.errors import BlockError, EmuError

WRITE_SAME_MAX = 512 * 1024         # QEMU SCSI_WRITE_SAME_MAX: the replicated buffer written per request

_READS = frozenset({Op.READ_6, Op.READ_10, Op.READ_12, Op.READ_16})
_READS_WRITES = _READS | {Op.WRITE_6, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16}
_SIX_BYTE = frozenset({Op.READ_6, Op.WRITE_6})     # TRANSFER LENGTH 0 means 256 blocks
_WRITE_VERIFY = {Op.WRITE_AND_VERIFY_10: VERIFY_10, Op.WRITE_AND_VERIFY_12: VERIFY_12,
                 Op.WRITE_AND_VERIFY_16: VERIFY_16}
_VERIFY = {Op.VERIFY_10: VERIFY_10, Op.VERIFY_12: VERIFY_12, Op.VERIFY_16: VERIFY_16}
# The block commands a fixed disk completes without effect (config.no_op_commands names which exist); all but
# FORMAT UNIT without a data phase (scsi_req_xfer).
_NO_EFFECT = (Op.FORMAT_UNIT, Op.START_STOP_UNIT, Op.PREVENT_ALLOW_MEDIUM_REMOVAL, Op.SEEK_10)
_NO_DATA = frozenset({Op.START_STOP_UNIT, Op.PREVENT_ALLOW_MEDIUM_REMOVAL, Op.SEEK_10, Op.SYNCHRONIZE_CACHE_10,
                      Op.SYNCHRONIZE_CACHE_16})


class BlockCommands:
    """The SBC commands of a SCSI disk on one Drive. The state its commands change (the write cache) lives here;
    the rest is `config`."""

    peripheral_device_type = TYPE_DISK

    def __init__(self, drive: Drive, config: ScsiDiskConfig) -> None:
        if config.capacity_blocks * config.block_size > drive.capacity:
            raise ValueError(f"config capacity {config.capacity_blocks} x {config.block_size} bytes exceeds the "
                             f"{drive.capacity}-byte drive")
        self.drive = drive
        self.config = config
        self.bs = config.block_size
        self.blocks = config.capacity_blocks
        self.read_only = config.read_only or drive.read_only
        self.write_cache = config.write_cache    # caching page WCE; MODE SELECT changes it
        self.chs = default_chs(config.capacity_blocks * config.block_size // 512)   # mode pages 04h/05h
        # Reads and writes (QEMU scsi_disk_dma_command): no allocation-length limit, data-out as the transport lent it
        self.dma_commands = dict.fromkeys((*_READS_WRITES, *_WRITE_VERIFY), self._read_write)
        # The rest (QEMU scsi_disk_emulate_command), the commands this profile has
        self.emulated_commands = {
            Op.READ_CAPACITY_10: self._read_capacity_10,
            Op.SERVICE_ACTION_IN_16: self._service_action_in,
            Op.SYNCHRONIZE_CACHE_10: self._synchronize_cache,
            **({Op.SYNCHRONIZE_CACHE_16: self._synchronize_cache} if config.synchronize_cache_16 else {}),
            Op.UNMAP: self._unmap,
            Op.WRITE_SAME_10: self._write_same,
            Op.WRITE_SAME_16: self._write_same,
            **{op: self._no_effect for op in _NO_EFFECT if op in config.no_op_commands},
            **dict.fromkeys(_VERIFY, self._verify),
            **({READ_TOC: self._read_toc} if config.read_toc else {}),
        }
        # SERVICE ACTION IN(16) as REPORT SUPPORTED OPERATION CODES lists it: (opcode, service action, CDB layout)
        self.service_actions = [(Op.SERVICE_ACTION_IN_16, SAI_READ_CAPACITY_16, READ_CAPACITY_16)]
        if config.get_lba_status:
            self.service_actions.append((Op.SERVICE_ACTION_IN_16, SAI_GET_LBA_STATUS, GET_LBA_STATUS))

    # -- the data phase --------------------------------------------------------------------------------
    def plan(self, cdb: bytes | bytearray | memoryview, size: int) -> Transfer | None:
        """The data phase of a block command (QEMU scsi_req_xfer): the transfer length in blocks for reads and
        writes, one block for WRITE SAME (none with NDOB), the parameter list length for UNMAP; None for a
        command that is not one of them."""
        op, bs = cdb[0], self.bs
        if op in _READS_WRITES:
            n = decode_rw(cdb).transfer_length
            if n == 0 and op in _SIX_BYTE:
                n = 256
            return Transfer(Direction.IN if op in _READS else Direction.OUT, n * bs) if n else NO_TRANSFER
        if op in _WRITE_VERIFY:
            return transfer_out(parse(_WRITE_VERIFY[op], cdb)["transfer_length"] * bs)
        if op in _VERIFY:
            f = parse(_VERIFY[op], cdb)
            return transfer_out({1: f["transfer_length"], 3: 1}.get(f["bytchk"], 0) * bs)
        if op in (Op.WRITE_SAME_10, Op.WRITE_SAME_16):
            return NO_TRANSFER if self._ndob(cdb) else Transfer(Direction.OUT, bs)
        if op == Op.UNMAP:
            return transfer_out(parse(UNMAP_CDB, cdb[:size])["parameter_list_length"])
        if op in _NO_DATA:
            return NO_TRANSFER
        if op == Op.READ_CAPACITY_10:
            return Transfer(Direction.IN, 8)
        if op == Op.FORMAT_UNIT:
            # QEMU scsi_req_xfer: the parameter list header only, with FMTDATA (8 bytes with LONGLIST)
            f = parse(FORMAT_UNIT, cdb[:size])
            return transfer_out((8 if f["longlist"] else 4) if f["fmtdata"] else 0)
        return None

    # -- what the primary commands report of a disk ------------------------------------------------------
    def vpd_pages(self) -> list[int]:
        """The SBC VPD pages, in page code order."""
        characteristics = [VPD_BLOCK_CHARACTERISTICS] if self.config.block_characteristics_vpd else []
        return [VPD_BLOCK_LIMITS, *characteristics, VPD_LOGICAL_BLOCK_PROVISIONING]

    def vpd_page(self, page: int) -> bytes:
        """The body of one of `vpd_pages()` (QEMU scsi_disk_emulate_vpd_page)."""
        c = self.config
        if page == VPD_BLOCK_LIMITS:
            return build(BLOCK_LIMITS, dict(
                wsnz=c.wsnz, maximum_compare_and_write_length=0, optimal_transfer_length_granularity=0,
                maximum_transfer_length=c.max_transfer_blocks, optimal_transfer_length=0, maximum_prefetch_length=0,
                maximum_unmap_lba_count=c.max_unmap_blocks,
                maximum_unmap_block_descriptor_count=c.max_unmap_descriptors,
                optimal_unmap_granularity=c.unmap_granularity_blocks,
                ugavalid=c.unmap_granularity_alignment is not None,
                unmap_granularity_alignment=c.unmap_granularity_alignment or 0,
                maximum_write_same_length=c.max_write_same_blocks))
        if page == VPD_BLOCK_CHARACTERISTICS:
            return build(BLOCK_CHARACTERISTICS, dict(medium_rotation_rate=c.rotation_rate, product_type=0, wabereq=0,
                                                     wacereq=0, nominal_form_factor=0, vbuls=False))
        return build(LOGICAL_BLOCK_PROVISIONING, dict(
            threshold_exponent=0, lbpu=c.lbpu, lbpws=c.lbpws, lbpws10=c.lbpws10, lbprz=int(c.lbprz),
            anc_sup=False, dp=False, provisioning_type=c.provisioning_type))

    def mode_parameters(self) -> dict:
        """The device-specific parameter of the mode parameter header (SBC: WP and DPOFUA)."""
        return dict(wp=self.read_only, dpofua=self.config.dpofua)

    def block_descriptor(self) -> bytes:
        """MODE SENSE's block descriptor, none for an empty medium: QEMU's general one (a block count of 0 when it
        does not fit 24 bits) or SBC's short LBA one."""
        if not self.blocks:
            return b""
        if self.config.mode_block_descriptor == "general":
            count = self.blocks if self.blocks <= 0xFFFFFF else 0
            return build(GENERAL_BLOCK_DESCRIPTOR, dict(density_code=0, number_of_blocks=count, block_length=self.bs))
        return build(SHORT_LBA_BLOCK_DESCRIPTOR, dict(number_of_blocks=min(self.blocks, 0xFFFFFFFF),
                                                      block_length=self.bs))

    def select_block_descriptor(self, descriptor: bytes) -> None:
        """MODE SELECT's block descriptor: a BLOCK LENGTH that would switch the block size (non-zero, and within
        `mode_select_block_lengths` unless that is None) must be the current one, since block size changes are
        not modelled; other lengths are ignored, as QEMU does."""
        block_length = parse(GENERAL_BLOCK_DESCRIPTOR, descriptor)["block_length"]
        mask = self.config.mode_select_block_lengths
        switches = bool(block_length) and (mask is None or not block_length & ~mask)
        if switches and block_length != self.bs:
            raise CheckCondition(S.INVALID_PARAM, transferred=True)

    def mode_page(self, page: int, pc: int) -> bytes:
        """Mode page 01h, 04h, 05h or 08h for page control `pc` (0 current, 1 changeable, 2 default), as QEMU
        mode_sense_page fills them."""
        changeable, default = pc == PC_CHANGEABLE, pc == PC_DEFAULT
        head = dict(ps=False, spf=False, page_code=page)
        if page == MODE_PAGE_CACHING:
            wce = True if changeable else (self.config.write_cache if default else self.write_cache)
            return build(CACHING_PAGE, dict(
                head, page_length=0x12, ic=False, abpf=False, cap=False, disc=False, size=False, wce=wce, mf=False,
                rcd=False, demand_read_retention_priority=0, write_retention_priority=0,
                disable_prefetch_transfer_length=0, minimum_prefetch=0, maximum_prefetch=0,
                maximum_prefetch_ceiling=0, fsw=False, lbcss=False, dra=False, nv_dis=False,
                number_of_cache_segments=0, cache_segment_size=0))
        if page == MODE_PAGE_R_W_ERROR:
            return build(R_W_ERROR_RECOVERY_PAGE, dict(
                head, page_length=0x0A, awre=not changeable, arre=False, tb=False, rc=False, eer=False, per=False,
                dte=False, dcr=False, read_retry_count=0, lbpere=False, mwr=0, write_retry_count=0,
                recovery_time_limit=0))
        cyls, heads, secs = (0, 0, 0) if changeable else self.chs
        rpm = 0 if changeable else 5400
        if page == MODE_PAGE_HD_GEOMETRY:
            return build(RIGID_DISK_GEOMETRY_PAGE, dict(
                head, page_length=0x16, cylinders=cyls, heads=heads, write_precomp_cylinder=cyls,
                reduced_write_current_cylinder=cyls, step_rate=0 if changeable else 200,
                landing_zone_cylinder=0 if changeable else 0xFFFFFF, rpl=0, rotational_offset=0,
                rotation_rate=rpm))
        one = 0 if changeable else 1                # MODE_PAGE_FLEXIBLE_DISK_GEOMETRY
        return build(FLEXIBLE_DISK_PAGE, dict(
            head, page_length=0x1E, transfer_rate=0 if changeable else 5000, heads=heads, sectors_per_track=secs,
            bytes_per_sector=0 if changeable else self.bs & 0xFF00, cylinders=cyls & 0xFFFF,
            write_precomp_cylinder=cyls & 0xFFFF, reduced_write_current_cylinder=cyls & 0xFFFF, step_rate=one,
            step_pulse_width=one, head_settle_delay=one, motor_on_delay=one, motor_off_delay=one, rotation_rate=rpm))

    def mode_select(self, pages: list[tuple[int, bytes]]) -> Data:
        """Apply the checked pages of a MODE SELECT ((page, body after its header) each) that are SBC's: the
        caching page's WCE. With the write cache off the command ends with a flush (QEMU
        scsi_disk_emulate_mode_select)."""
        for page, body in pages:
            if page == MODE_PAGE_CACHING:
                self.write_cache = parse_mode_page(CACHING_PAGE, page, body)["wce"]
        if not self.write_cache:
            return self._flush()
        return b""

    # -- commands without effect -------------------------------------------------------------------------------
    def _no_effect(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_disk_emulate_command for the block commands a fixed disk only checks: SEEK(10) past the last
        LBA is LBA OUT OF RANGE; START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL change nothing on a
        non-removable disk; FORMAT UNIT ignores its parameter data. No data-in either way."""
        if cdb[0] == Op.SEEK_10 and parse(SEEK_10, cdb)["lba"] >= self.blocks:
            raise CheckCondition(S.LBA_OUT_OF_RANGE)
        return b""

    # -- READ CAPACITY, GET LBA STATUS ---------------------------------------------------------------------
    def _read_capacity_10(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        f = parse(READ_CAPACITY_10, cdb)
        if not self.blocks:
            raise CheckCondition(S.LUN_NOT_READY)   # QEMU: an empty medium
        if not f["pmi"] and f["lba"]:
            raise CheckCondition(S.INVALID_FIELD)   # SBC-3: LBA must be 0 when PMI is 0
        return build(READ_CAPACITY_10_DATA, dict(last_lba=min(self.blocks - 1, 0xFFFFFFFF), block_length=self.bs))

    def _read_toc(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        data = read_toc(cdb, self.blocks)
        if data is None:
            raise CheckCondition(S.INVALID_FIELD)
        return fit_allocation(data, alloc, self.config.allocation_rule)

    def _service_action_in(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        action = cdb[1] & 0x1F
        if action == SAI_READ_CAPACITY_16:
            return self._read_capacity_16(cdb, alloc)
        if action == SAI_GET_LBA_STATUS and self.config.get_lba_status:
            return self._get_lba_status(cdb)
        raise CheckCondition(S.INVALID_FIELD)       # QEMU: only READ CAPACITY(16) -> INVALID FIELD IN CDB

    def _read_capacity_16(self, cdb: bytes, alloc: int) -> bytes:
        f = parse(READ_CAPACITY_16, cdb)
        if not self.blocks:
            raise CheckCondition(S.LUN_NOT_READY)
        if not f["pmi"] and f["lba"]:
            raise CheckCondition(S.INVALID_FIELD)
        c = self.config
        data = build(READ_CAPACITY_16_DATA, dict(
            last_lba=self.blocks - 1, block_length=self.bs, rc_basis=0, p_type=0, prot_en=False, p_i_exponent=0,
            lbppbe=c.physical_block_exp, lbpme=c.lbpme, lbprz=c.lbprz, lowest_aligned_lba=0))
        return fit_allocation(data, alloc, c.allocation_rule)

    def _get_lba_status(self, cdb: bytes) -> bytes:
        """SBC-3: descriptors of consecutive extents from the starting LBA, each mapped or deallocated as
        Drive.mapped says (what qemu-img map reports as data), as many as the allocation length holds."""
        f = parse(GET_LBA_STATUS, cdb)
        lba, alloc = f["lba"], f["allocation_length"]
        if lba >= self.blocks:
            raise CheckCondition(S.LBA_OUT_OF_RANGE)
        wanted = max(1, (alloc - GET_LBA_STATUS_HEADER.sizeof()) // LBA_STATUS_DESCRIPTOR.sizeof())
        extents: list[list] = []
        while lba < self.blocks and len(extents) <= wanted:
            mapped, count = self._lba_run(lba)
            if extents and extents[-1][2] == mapped and extents[-1][1] + count <= 0xFFFFFFFF:
                extents[-1][1] += count
            else:
                extents.append([lba, count, mapped])
            lba += count
        extents = extents[:wanted]
        body = b"".join(build(LBA_STATUS_DESCRIPTOR, dict(
            lba=start, count=min(count, 0xFFFFFFFF),
            provisioning_status=LBA_MAPPED if mapped else LBA_DEALLOCATED)) for start, count, mapped in extents)
        header = build(GET_LBA_STATUS_HEADER, dict(parameter_data_length=len(body) + 4))
        return (header + body)[:alloc]

    def _lba_run(self, lba: int) -> tuple[bool, int]:
        """(mapped, blocks) from `lba`: a block holding data in any part is mapped. A backend that cannot
        answer fails the command as a read error would (I/O PROCESS TERMINATED for EIO)."""
        bs = self.bs
        offset = lba * bs
        try:
            has_data, nbytes = self.drive.mapped(offset, self.blocks * bs - offset)
        except BlockError as exc:
            status, sense = S.from_errno(exc.errno)
            raise CheckCondition(sense, status=status) from None
        except (EmuError, OSError):
            raise CheckCondition(S.IO_ERROR) from None
        if has_data:
            return True, -(-nbytes // bs)
        if nbytes < bs:
            return True, 1                          # a deallocated head, then data within the same block
        return False, nbytes // bs

    # -- reads and writes ------------------------------------------------------------------------------
    def _range_ok(self, lba: int, count: int) -> bool:
        """QEMU check_lba_range: no overflow and lba + count <= max_lba + 1 (a 0-block transfer at the block
        past the end is valid)."""
        return lba + count <= self.blocks

    def _protect(self, protect: int) -> None:
        if protect and self.config.scsi_version > 2:
            raise CheckCondition(S.INVALID_FIELD)   # no protection information (QEMU scsi_disk_dma_command)

    def _read_write(self, cdb: bytes, data_out: bytes | bytearray | memoryview, alloc: int) -> Data:
        op = cdb[0]
        if op in _WRITE_VERIFY:
            f = parse(_WRITE_VERIFY[op], cdb)
            protect, lba, count, fua = f["protect"], f["lba"], f["transfer_length"], True   # scsi_is_cmd_fua
        else:
            protect, _dpo, fua, lba, count = decode_rw(cdb)
            if count == 0 and op in _SIX_BYTE:
                count = 256
        reading = op in _READS
        if not reading and self.read_only:
            raise CheckCondition(S.WRITE_PROTECTED)
        self._protect(protect)
        if self.config.enforce_limits and count > self.config.max_transfer_blocks:
            raise CheckCondition(S.INVALID_FIELD)   # SBC-3 5.x: TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH
        if not self._range_ok(lba, count):
            raise CheckCondition(S.LBA_OUT_OF_RANGE)
        if not count:
            return b""
        bs = self.bs
        if reading:
            done = self.drive.read(lba * bs, count * bs)
            if not done.ok:
                raise backend_failure(done, [done], transferred=False)
            return done.data, [done]
        # With the write cache off QEMU's block backend makes every write FUA (blk_co_pwritev_part).
        done = self.drive.write(lba * bs, data_out, fua=fua or not self.write_cache)
        if not done.ok:
            raise backend_failure(done, [done])
        return b"", [done]

    def _verify(self, cdb: bytes, data_out: bytes, alloc: int) -> Data:
        c = self.config
        f = parse(_VERIFY[cdb[0]], cdb)
        if c.protect_check == "all":
            self._protect(f["protect"])
        bytchk, lba, count = f["bytchk"], f["lba"], f["transfer_length"]
        if bytchk and (c.verify_bytchk == "invalid-field" or bytchk == 2):
            raise CheckCondition(S.INVALID_FIELD)   # QEMU 7.2: any BYTCHK; SBC-4: 10b is reserved
        if c.enforce_limits and bytchk and count > c.max_transfer_blocks:
            raise CheckCondition(S.INVALID_FIELD)   # a verification with data is a transfer (B0h limit)
        if c.verify_range_check and not self._range_ok(lba, count):
            raise CheckCondition(S.LBA_OUT_OF_RANGE)
        if not (bytchk and c.verify_bytchk == "compare" and count):
            return b""
        # SBC-3: BYTCHK 01b compares the data-out with the blocks, 11b one block with each of them
        bs, completions = self.bs, []
        step = max(1, WRITE_SAME_MAX // bs)
        for first in range(0, count, step):
            n = min(step, count - first)
            done = self.drive.read((lba + first) * bs, n * bs)
            completions.append(done)
            if not done.ok:
                raise backend_failure(done, completions)
            expected = data_out[first * bs:(first + n) * bs] if bytchk == 1 else bytes(data_out) * n
            if done.data != expected:
                raise CheckCondition(S.MISCOMPARE_DURING_VERIFY, transferred=True, completions=completions)
        return b"", completions

    def _synchronize_cache(self, cdb: bytes, data_out: bytes, alloc: int) -> Data:
        layout = SYNCHRONIZE_CACHE_10 if cdb[0] == Op.SYNCHRONIZE_CACHE_10 else SYNCHRONIZE_CACHE_16
        f = parse(layout, cdb)
        if self.config.sync_cache_range_check and not self._range_ok(f["lba"], f["number_of_blocks"]):
            raise CheckCondition(S.LBA_OUT_OF_RANGE)    # SBC-3
        return self._flush()

    def _flush(self) -> Data:
        done = self.drive.flush()
        if not done.ok:
            raise backend_failure(done, [done])
        return b"", [done]

    # -- UNMAP ---------------------------------------------------------------------------------------------
    def _unmap(self, cdb: bytes, data_out: bytes, alloc: int) -> Data:
        """QEMU scsi_disk_emulate_unmap's order: a 0-byte list is GOOD before anything is looked at; then
        ANCHOR, the header lengths, write protection, and the descriptors."""
        c = self.config
        if not data_out:
            return b""
        if c.unmap_anchor_check and parse(UNMAP_CDB, cdb)["anchor"]:
            raise CheckCondition(S.INVALID_FIELD, transferred=True)   # ANC_SUP = 0 (SBC-3)
        descriptors = self._unmap_descriptors(data_out)
        if c.unmap_write_protect_check and self.read_only:
            raise CheckCondition(S.WRITE_PROTECTED, transferred=True)
        if c.enforce_limits and len(descriptors) > c.max_unmap_descriptors:
            raise CheckCondition(S.INVALID_PARAM, transferred=True)
        if c.unmap_validate_first:
            for lba, count in descriptors:
                self._unmap_check(lba, count, [])
        completions: list[Completion] = []
        for lba, count in descriptors:
            self._unmap_check(lba, count, completions)
            if not count:
                continue                            # QEMU sends a 0-byte discard, which does nothing
            done = self.drive.discard(lba * self.bs, count * self.bs)
            completions.append(done)
            if not done.ok:
                raise backend_failure(done, completions)
        return b"", completions

    def _unmap_check(self, lba: int, count: int, completions: list[Completion]) -> None:
        if self.config.enforce_limits and count > self.config.max_unmap_blocks:
            raise CheckCondition(S.INVALID_PARAM, transferred=True, completions=completions)   # SBC-3
        if not self._range_ok(lba, count):
            raise CheckCondition(S.LBA_OUT_OF_RANGE, transferred=True, completions=completions)

    def _unmap_descriptors(self, data: bytes) -> list[tuple[int, int]]:
        """(LBA, blocks) of each descriptor, after the header checks of `unmap_length_rules`."""
        n = len(data)
        if n < UNMAP_HEADER.sizeof():
            raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
        header = parse(UNMAP_HEADER, data[:8])
        desc_len = header["block_descriptor_data_length"]
        if self.config.unmap_length_rules == "reject":
            if n < header["unmap_data_length"] + 2 or n < desc_len + 8 or desc_len & 15:
                raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
        else:
            desc_len = min(desc_len, n - 8) & ~15   # an incomplete last descriptor is ignored (SBC-3)
        size = UNMAP_DESCRIPTOR.sizeof()
        out = []
        for offset in range(8, 8 + desc_len, size):
            d = parse(UNMAP_DESCRIPTOR, data[offset:offset + size])
            out.append((d["lba"], d["count"]))
        return out

    # -- WRITE SAME ------------------------------------------------------------------------------------------
    def _write_same(self, cdb: bytes, data_out: bytes, alloc: int) -> Data:
        c = self.config
        f = parse(WRITE_SAME_10 if cdb[0] == Op.WRITE_SAME_10 else WRITE_SAME_16, cdb)
        lba, count = f["lba"], f["number_of_blocks"]
        if c.write_same == "discard-if-unmap":
            return self._write_same_discard(lba, count, f["unmap"])
        ndob = self._ndob(cdb)
        if ndob and c.write_same_ndob == "no-op":
            return b""                              # QEMU 7.2: xfer 0 -> scsi_req_complete(GOOD) at once
        if c.protect_check == "all":
            self._protect(f["protect"])
        if f["anchor"] or f["pbdata"] or f["lbdata"]:
            raise CheckCondition(S.INVALID_FIELD, transferred=True)   # ANC_SUP = 0; PBDATA/LBDATA not supported
        if count == 0:
            if c.wsnz:
                raise CheckCondition(S.INVALID_FIELD, transferred=True)   # WSNZ = 1 (SBC-3)
            count = max(self.blocks - lba, 0)       # SBC-3: to the last LBA
        if self.read_only:
            raise CheckCondition(S.WRITE_PROTECTED, transferred=True)
        if not self._range_ok(lba, count) or (f["number_of_blocks"] == 0 and lba >= self.blocks):
            raise CheckCondition(S.LBA_OUT_OF_RANGE, transferred=True)
        if c.enforce_limits and count > c.max_write_same_blocks:
            raise CheckCondition(S.INVALID_FIELD, transferred=True)   # SBC-3: above MAXIMUM WRITE SAME LENGTH
        bs = self.bs
        fua = not self.write_cache
        block = bytes(bs) if ndob else bytes(data_out)
        if not any(block):
            # scsi_disk_emulate_write_same: NDOB or a zero block -> write-zeroes, MAY_UNMAP iff UNMAP is set
            done = self.drive.execute(Request.write_zeroes(lba * bs, count * bs, may_unmap=f["unmap"], fua=fua))
            if not done.ok:
                raise backend_failure(done, [done])
            return b"", [done]
        completions: list[Completion] = []
        buf = block * (min(count * bs, WRITE_SAME_MAX) // bs)
        offset, end = lba * bs, (lba + count) * bs
        while offset < end:
            piece = buf[:end - offset]
            done = self.drive.write(offset, piece, fua=fua)
            completions.append(done)
            if not done.ok:
                raise backend_failure(done, completions)
            offset += len(piece)
        return b"", completions

    def _ndob(self, cdb: bytes | bytearray | memoryview) -> bool:
        """Whether the CDB has no data-out: NDOB in WRITE SAME(16) (SBC-3 r35), and in WRITE SAME(10) too where
        QEMU reads the bit ("no-op"; SBC leaves bit 0 of WRITE SAME(10) obsolete)."""
        mode = self.config.write_same_ndob
        return bool(cdb[1] & 0x01) and mode != "ignored" and (cdb[0] == Op.WRITE_SAME_16 or mode == "no-op")

    def _write_same_discard(self, lba: int, count: int, unmap: bool) -> Data:
        """QEMU 1.4 scsi_disk_emulate_command WRITE_SAME: write protection and range first, then only UNMAP = 1
        is accepted, and the range is discarded without the data-out block ever being fetched."""
        if self.read_only:
            raise CheckCondition(S.WRITE_PROTECTED)
        if not self._range_ok(lba, count):
            raise CheckCondition(S.LBA_OUT_OF_RANGE)
        if not unmap:
            raise CheckCondition(S.INVALID_FIELD)
        if not count:
            return NotTransferred()
        done = self.drive.discard(lba * self.bs, count * self.bs)
        if not done.ok:
            raise backend_failure(done, [done], transferred=False)
        return NotTransferred(), [done]
