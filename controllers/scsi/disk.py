"""A SCSI block device (SBC direct-access logical unit) over a Drive, independent of the transport.

A transport (virtio-scsi, through controllers/scsi/target.py) asks `plan(cdb)` for the data phase the CDB implies,
as QEMU's scsi_req_xfer computes it before the command runs (so it can answer OVERRUN or a direction mismatch
itself), moves the bytes, and calls `execute(cdb, data_out, data_in_len)` for the status, the sense data and the
read data. LUN addressing and missing LUNs are the target's; REPORT LUNS lists `luns`, which the target sets.

Behaviour follows QEMU 7.2 hw/scsi/scsi-disk.c (scsi_disk_emulate_command, scsi_disk_dma_command,
scsi_disk_emulate_unmap / _write_same / _mode_select / _vpd_page) and hw/scsi/scsi-bus.c (unit attention,
REQUEST SENSE, REPORT LUNS) as ../shared/research/controllers.md section 5 describes them; every difference
between QEMU releases and SBC-3/SPC-4 is a field of `ScsiDiskConfig`, never a version check here.

A failing command never touches the image: everything is checked before the first write or discard, except
where QEMU itself has already acted (UNMAP with `unmap_validate_first` off stops at the first bad descriptor
after discarding the earlier ones, as scsi_unmap_complete_noio does; a WRITE SAME larger than 512 KiB is
written in pieces, and a backend error on a later piece leaves the earlier ones written).
Departure from QEMU: MODE SELECT cannot change the block size (a block descriptor with another block length
is INVALID FIELD IN PARAMETER LIST).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from controllers.ata.identify import default_chs
from controllers.scsi import sense as S
from controllers.scsi.codec import decode_rw
from controllers.scsi.config import ScsiDiskConfig
from controllers.scsi.layouts import (
    BLOCK_CHARACTERISTICS,
    BLOCK_DESCRIPTOR_LEN,
    BLOCK_LIMITS,
    CACHING_PAGE,
    CDB_LAYOUTS,
    CHECK_CONDITION,
    CODE_SET_ASCII,
    CODE_SET_BINARY,
    COMMAND_DESCRIPTOR,
    COMMAND_TIMEOUTS_DESCRIPTOR,
    CONTROL_PAGE,
    DESIGNATION_DESCRIPTOR,
    DESIGNATOR_NAA,
    DESIGNATOR_VENDOR_SPECIFIC,
    FLEXIBLE_DISK_PAGE,
    GENERAL_BLOCK_DESCRIPTOR,
    GENERIC_TRANSFER_LENGTH,
    GET_LBA_STATUS,
    GET_LBA_STATUS_HEADER,
    GOOD,
    INQUIRY,
    INQUIRY_STANDARD,
    INQUIRY_STANDARD_LEN,
    LBA_DEALLOCATED,
    LBA_MAPPED,
    LBA_STATUS_DESCRIPTOR,
    LOGICAL_BLOCK_PROVISIONING,
    MI_REPORT_SUPPORTED_OPCODES,
    MODE_PAGE_ALL,
    MODE_PAGE_CACHING,
    MODE_PAGE_CONTROL,
    MODE_PAGE_HD_GEOMETRY,
    MODE_PAGE_R_W_ERROR,
    MODE_PAGE_HEADER,
    MODE_PARAMETER_HEADER_10,
    MODE_PARAMETER_HEADER_6,
    MODE_SELECT_10,
    MODE_SELECT_6,
    MODE_SENSE_10,
    MODE_SENSE_6,
    MODE_SUBPAGE_HEADER,
    ONE_COMMAND_HEADER,
    PC_CHANGEABLE,
    PC_DEFAULT,
    PC_SAVED,
    READ_CAPACITY_10,
    READ_CAPACITY_10_DATA,
    READ_CAPACITY_16,
    READ_CAPACITY_16_DATA,
    REPORT_LUNS,
    REPORT_LUNS_HEADER,
    REPORT_SUPPORTED_OPCODES,
    REQUEST_SENSE,
    RIGID_DISK_GEOMETRY_PAGE,
    R_W_ERROR_RECOVERY_PAGE,
    SAI_GET_LBA_STATUS,
    SAI_READ_CAPACITY_16,
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
    VPD_DEVICE_ID,
    VPD_HEADER,
    VPD_LOGICAL_BLOCK_PROVISIONING,
    VPD_SUPPORTED_PAGES,
    VPD_UNIT_SERIAL,
    WRITE_SAME_10,
    WRITE_SAME_16,
    Op,
    cdb_length,
    cdb_usage,
    parse,
)
from emu.block import Completion, Drive, Request
from emu.errors import BlockError, EmuError

WRITE_SAME_MAX = 512 * 1024         # QEMU SCSI_WRITE_SAME_MAX: the replicated buffer written per request
INQUIRY_MAX = 256                   # QEMU SCSI_MAX_INQUIRY_LEN
MODE_DATA_MAX = 256                 # QEMU SCSI_MAX_MODE_LEN: MODE SELECT pages longer than this are refused

_READS = frozenset({Op.READ_6, Op.READ_10, Op.READ_12, Op.READ_16})
_WRITES = frozenset({Op.WRITE_6, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16})
_WRITE_VERIFY = {Op.WRITE_AND_VERIFY_10: VERIFY_10, Op.WRITE_AND_VERIFY_12: VERIFY_12,
                 Op.WRITE_AND_VERIFY_16: VERIFY_16}
_VERIFY = {Op.VERIFY_10: VERIFY_10, Op.VERIFY_12: VERIFY_12, Op.VERIFY_16: VERIFY_16}
# The no-op commands (config.no_op_commands may name) that scsi_req_xfer gives no data phase.
_NO_TRANSFER = (Op.START_STOP_UNIT, Op.PREVENT_ALLOW_MEDIUM_REMOVAL, Op.SEEK_10, Op.RESERVE_6, Op.RELEASE_6)
NO_OP_COMMANDS = frozenset({*_NO_TRANSFER, Op.FORMAT_UNIT, Op.RESERVE_10, Op.RELEASE_10})


class Direction(StrEnum):
    NONE = "none"
    IN = "in"           # data-in: device to initiator
    OUT = "out"         # data-out: initiator to device


class Transfer(NamedTuple):
    direction: Direction
    length: int


_NONE = Transfer(Direction.NONE, 0)


@dataclass
class ScsiResult:
    """What the logical unit answers: SCSI status, sense data (autosense, with CHECK CONDITION), the data-in
    bytes, the residual (bytes of the initiator's buffer not transferred) and every block-layer completion the
    command caused, in order."""

    status: int
    sense: bytes = b""
    data_in: bytes = b""
    residual: int = 0
    completions: list[Completion] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == GOOD

    @property
    def sense_code(self) -> S.Sense | None:
        return S.decode(self.sense) if self.sense else None


class _Check(Exception):
    """A command ends with `status` (CHECK CONDITION unless a backend errno says otherwise) and `sense`.
    `transferred`: the data-out phase already happened (QEMU parses parameter lists after moving them)."""

    def __init__(self, sense: S.Sense | None, *, transferred: bool = False, status: int = CHECK_CONDITION,
                 completions: list[Completion] | None = None) -> None:
        super().__init__(sense)
        self.sense = sense
        self.transferred = transferred
        self.status = status
        self.completions = completions or []


class _NotTransferred(bytes):
    """The empty result of a data-out command that succeeds without taking its data (QEMU 1.4 WRITE SAME)."""


def _failed(done: Completion, completions: list[Completion], *, transferred: bool = True) -> _Check:
    """QEMU scsi_handle_rw_error under rerror/werror=report: scsi_sense_from_errno of the backend's errno."""
    status, sense = S.from_errno(done.errno)
    return _Check(sense, status=status, transferred=transferred, completions=completions)


class ScsiDisk:
    """A SCSI disk (QEMU scsi-hd, or an SBC-3 logical unit) on one Drive. State that commands change (write
    cache, D_SENSE, unit attention, the last sense data) lives here; the rest is `config`."""

    def __init__(self, drive: Drive, config: ScsiDiskConfig, luns: tuple[int, ...] = (0,)) -> None:
        if config.capacity_blocks * config.block_size > drive.capacity:
            raise ValueError(f"config capacity {config.capacity_blocks} x {config.block_size} bytes exceeds the "
                             f"{drive.capacity}-byte drive")
        self.drive = drive
        self.config = config
        self.luns = luns                         # REPORT LUNS content (QEMU: LUN 0 and every other LUN)
        self.bs = config.block_size
        self.blocks = config.capacity_blocks
        self.read_only = config.read_only or drive.read_only
        self.write_cache = config.write_cache    # caching page WCE; MODE SELECT changes it
        self.d_sense = False                     # control page D_SENSE; MODE SELECT changes it (strict)
        self.unit_attention: S.Sense | None = S.POWER_ON_RESET if config.power_on_unit_attention else None
        self.sense: S.Sense | None = None        # sense data of the last command (QEMU dev->sense)
        self.sense_is_ua = False
        self.chs = default_chs(config.capacity_blocks * config.block_size // 512)   # mode pages 04h/05h
        self._handlers = {
            Op.TEST_UNIT_READY: lambda cdb, data, alloc: b"",
            Op.REQUEST_SENSE: self._request_sense,
            Op.INQUIRY: self._inquiry,
            Op.MODE_SENSE_6: self._mode_sense,
            Op.MODE_SENSE_10: self._mode_sense,
            Op.MODE_SELECT_6: self._mode_select,
            Op.MODE_SELECT_10: self._mode_select,
            Op.READ_CAPACITY_10: self._read_capacity_10,
            Op.SERVICE_ACTION_IN_16: self._service_action_in,
            Op.SYNCHRONIZE_CACHE_10: self._synchronize_cache,
            Op.SYNCHRONIZE_CACHE_16: self._synchronize_cache,
            Op.UNMAP: self._unmap,
            Op.WRITE_SAME_10: self._write_same,
            Op.WRITE_SAME_16: self._write_same,
            Op.REPORT_LUNS: self._report_luns,
            Op.MAINTENANCE_IN: self._maintenance_in,
            **{op: self._no_op for op in config.no_op_commands},
            **dict.fromkeys(_VERIFY, self._verify),
        }

    # -- the data phase --------------------------------------------------------------------------------
    def plan(self, cdb: bytes | bytearray | memoryview) -> Transfer:
        """Direction and length of the data phase, from the CDB alone (QEMU scsi_req_xfer / scsi_cmd_xfer_mode):
        the transfer length in blocks for reads and writes, the allocation length for data-in commands, the
        parameter list length for UNMAP / MODE SELECT, one block for WRITE SAME (none with NDOB). A CDB that
        cannot be decoded plans none."""
        size = cdb_length(cdb[0]) if cdb else None
        if size is None or len(cdb) < size:
            return _NONE
        op, bs = cdb[0], self.bs
        if op in _READS or op in _WRITES or op in _WRITE_VERIFY:
            n = decode_rw(cdb).transfer_length if op not in _WRITE_VERIFY else parse(_WRITE_VERIFY[op], cdb)[
                "transfer_length"]
            if op in (Op.READ_6, Op.WRITE_6) and n == 0:
                n = 256
            return Transfer(Direction.IN if op in _READS else Direction.OUT, n * bs) if n else _NONE
        if op in _VERIFY:
            f = parse(_VERIFY[op], cdb)
            n = {1: f["transfer_length"], 3: 1}.get(f["bytchk"], 0) * bs
            return Transfer(Direction.OUT, n) if n else _NONE
        if op in (Op.WRITE_SAME_10, Op.WRITE_SAME_16):
            return _NONE if self._ndob(cdb) else Transfer(Direction.OUT, bs)
        if op in (Op.UNMAP, Op.MODE_SELECT_6, Op.MODE_SELECT_10):
            n = parse(CDB_LAYOUTS[op], cdb[:size])["parameter_list_length"]
            return Transfer(Direction.OUT, n) if n else _NONE
        if op in (Op.TEST_UNIT_READY, Op.SYNCHRONIZE_CACHE_10, Op.SYNCHRONIZE_CACHE_16, *_NO_TRANSFER):
            return _NONE
        if op == Op.READ_CAPACITY_10:
            return Transfer(Direction.IN, 8)
        if op == Op.INQUIRY:
            n = parse(INQUIRY, cdb[:size])["allocation_length"]     # SPC-3+: 16 bits
            return Transfer(Direction.IN, n) if n else _NONE
        # Everything else, known or not, transfers its group's generic length (QEMU scsi_cdb_xfer); FORMAT UNIT
        # to the device (scsi_cmd_xfer_mode), the rest from it.
        n = parse(GENERIC_TRANSFER_LENGTH[size], cdb[:size])["length"]
        if not n:
            return _NONE
        return Transfer(Direction.OUT if op == Op.FORMAT_UNIT else Direction.IN, n)

    # -- execution -------------------------------------------------------------------------------------
    def execute(self, cdb: bytes | bytearray | memoryview, data_out: bytes | bytearray | memoryview = b"",
                data_in_len: int | None = None, *, transfer: Transfer | None = None) -> ScsiResult:
        """Run one command. `data_out` must be exactly the planned data-out (else ValueError: a transport bug);
        `data_in_len` is the initiator's data-in buffer (default: the planned length); `transfer` is `plan(cdb)`
        when the transport already asked for it (so a command is planned once). `data_out` may be a view of
        guest RAM, used only until this returns: a WRITE hands it to the Drive as it is, every other command
        takes a copy. Guest errors never raise: they answer CHECK CONDITION with sense data (fixed format, or
        descriptor with D_SENSE)."""
        cdb = bytes(cdb)
        if transfer is None:
            transfer = self.plan(cdb)
        if transfer.direction is Direction.OUT:
            if len(data_out) != transfer.length:
                raise ValueError(f"CDB {cdb[:1].hex()} plans {transfer.length} bytes of data out, got {len(data_out)}")
        elif len(data_out):
            raise ValueError(f"CDB {cdb[:1].hex()} has no data-out phase, got {len(data_out)} bytes")
        if data_in_len is None:
            data_in_len = transfer.length if transfer.direction is Direction.IN else 0
        try:
            data = self._dispatch(cdb, data_out, transfer)
        except _Check as check:
            self.sense = check.sense
            self.sense_is_ua = check.sense is not None and check.sense.key == S.UNIT_ATTENTION
            sense = b"" if check.sense is None else S.build(check.sense, descriptor_format=self.d_sense)
            residual = len(data_out) if not check.transferred else 0
            return ScsiResult(check.status, sense, b"", residual + data_in_len, check.completions)
        completions = []
        if isinstance(data, tuple):
            data, completions = data
        self.sense, self.sense_is_ua = None, False     # QEMU scsi_req_complete(GOOD) clears dev->sense
        data_in = bytes(data[:data_in_len])
        residual = data_in_len - len(data_in) + (len(data_out) if isinstance(data, _NotTransferred) else 0)
        return ScsiResult(GOOD, b"", data_in, residual, completions)

    def completed_unreported(self) -> None:
        """A command completed without reporting the pending unit attention (one QEMU could not parse): QEMU up to
        8.0 clears it all the same (unit_attention_clear "on-completion"), 8.1+ keeps it."""
        if self.config.unit_attention_clear == "on-completion":
            self.unit_attention = None

    def _dispatch(self, cdb: bytes, data_out: bytes, transfer: Transfer):
        op = cdb[0]
        length = cdb_length(op)
        if length is None or len(cdb) < length:
            self.completed_unreported()
            raise _Check(S.INVALID_OPCODE)          # QEMU scsi_req_parse_cdb fails -> reqops_invalid_opcode
        if self.unit_attention is not None and op not in self.config.unit_attention_exempt:
            ua = self.unit_attention
            if op == Op.REQUEST_SENSE and self.config.request_sense_unit_attention == "parameter-data":
                # SPC-4 REQUEST SENSE: reports the pending unit attention in its data and clears it
                self.unit_attention = None
                return self._sense_data(cdb, ua)
            if not (op == Op.REQUEST_SENSE and self.sense_is_ua):
                self.unit_attention = None          # QEMU reqops_unit_attention, then scsi_clear_unit_attention
                raise _Check(ua)
        if op in _READS or op in _WRITES or op in _WRITE_VERIFY:
            return self._read_write(cdb, data_out)
        limit = self.config.max_allocation_length
        if limit is not None and transfer.length > limit and op != Op.REPORT_LUNS:
            # scsi_disk_emulate_command refuses cmd.xfer > 65536 before it looks at the opcode (REPORT LUNS is
            # answered by the bus, scsi_target_send_command, which has no such limit)
            raise _Check(S.INVALID_FIELD)
        handler = self._handlers.get(op)
        if handler is None and op in self.config.invalid_field_commands:
            raise _Check(S.INVALID_FIELD)           # QEMU: an MMC command the disk dispatches, refused (not TYPE_ROM)
        if handler is None or (op == Op.SYNCHRONIZE_CACHE_16 and not self.config.synchronize_cache_16) or (
                op == Op.MAINTENANCE_IN and not self.config.report_supported_opcodes):
            raise _Check(S.INVALID_OPCODE)          # scsi_disk_emulate_command default: INVALID_OPCODE
        return handler(cdb, bytes(data_out), transfer.length)

    def _answer(self, data: bytes, alloc: int) -> bytes:
        """Data-in of an emulated command: QEMU returns exactly the allocation length, zero padded
        (iov_len = MIN(buflen, xfer) with a zeroed buffer); SPC the data up to the allocation length."""
        if self.config.allocation_rule == "qemu":
            return data[:alloc].ljust(alloc, b"\0")
        return data[:alloc]

    # -- commands without effect -------------------------------------------------------------------------------
    def _no_op(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_disk_emulate_command for the commands a fixed disk only checks: SEEK(10) past the last LBA is
        LBA OUT OF RANGE; RESERVE/RELEASE refuse the 3rdPTY (and, in the 10-byte form, LONGID) bit; START STOP
        UNIT and PREVENT ALLOW MEDIUM REMOVAL change nothing on a non-removable disk; FORMAT UNIT ignores its
        parameter data. No data-in either way."""
        op = cdb[0]
        f = parse(CDB_LAYOUTS[op], cdb)
        if op == Op.SEEK_10 and f["lba"] >= self.blocks:
            raise _Check(S.LBA_OUT_OF_RANGE)
        if op in (Op.RESERVE_6, Op.RELEASE_6, Op.RESERVE_10, Op.RELEASE_10) and (f["third_party"] or f.get("longid")):
            raise _Check(S.INVALID_FIELD)
        return b""

    # -- TEST UNIT READY, REQUEST SENSE ---------------------------------------------------------------------
    def _request_sense(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        pending = self.sense
        self.sense, self.sense_is_ua = None, False
        return self._sense_data(cdb, pending)

    def _sense_data(self, cdb: bytes, pending: S.Sense | None) -> bytes:
        """REQUEST SENSE data: the pending sense (QEMU: the bus answers with dev->sense, up to the allocation
        length) or NO SENSE (QEMU: the disk answers, padded); DESC selects the descriptor format."""
        f = parse(REQUEST_SENSE, cdb)
        data = S.build(pending or S.NO_SENSE, descriptor_format=f["desc"])
        if pending is None:
            return self._answer(data, f["allocation_length"])
        return data[:f["allocation_length"]]

    # -- INQUIRY ---------------------------------------------------------------------------------------------
    def _inquiry(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        f = parse(INQUIRY, cdb)
        if f["evpd"]:
            return self._answer(self._vpd(f["page_code"]), alloc)
        if f["page_code"]:
            raise _Check(S.INVALID_FIELD)           # SPC-4: PAGE CODE without EVPD
        c = self.config
        if c.allocation_rule == "qemu" and alloc > INQUIRY_STANDARD_LEN:
            additional = min(alloc, INQUIRY_MAX) - 5   # scsi_disk_emulate_inquiry: the padded length
        else:
            additional = INQUIRY_STANDARD_LEN - 5
        data = INQUIRY_STANDARD.build(dict(
            peripheral_qualifier=0, peripheral_device_type=TYPE_DISK, rmb=False, lu_cong=False,
            version=c.scsi_version, normaca=False, hisup=True, response_data_format=2,
            additional_length=additional, sccs=False, acc=False, tpgs=0, threepc=False, protect=False,
            encserv=False, vs1=False, multip=False, addr16=False, wbus16=False, sync=True,
            cmdque=c.command_queueing, vs2=False, vendor=c.vendor.ljust(8).encode(),
            product=c.product.ljust(16).encode(), revision=c.revision.ljust(4).encode()))
        return self._answer(data, alloc)

    def _vpd_pages(self) -> list[int]:
        c = self.config
        pages = [VPD_SUPPORTED_PAGES] + ([VPD_UNIT_SERIAL] if c.serial is not None else [])
        pages += [VPD_DEVICE_ID, VPD_BLOCK_LIMITS]
        pages += [VPD_BLOCK_CHARACTERISTICS] if c.block_characteristics_vpd else []
        return pages + [VPD_LOGICAL_BLOCK_PROVISIONING]

    def _vpd(self, page: int) -> bytes:
        """A VPD page (QEMU scsi_disk_emulate_vpd_page); a page the disk does not have is INVALID FIELD."""
        if page not in self._vpd_pages():
            raise _Check(S.INVALID_FIELD)
        c = self.config
        if page == VPD_SUPPORTED_PAGES:
            body = bytes(self._vpd_pages())
        elif page == VPD_UNIT_SERIAL:
            body = c.serial.encode()
        elif page == VPD_DEVICE_ID:
            body = b""
            if c.device_id:
                ident = c.device_id.encode()
                body += DESIGNATION_DESCRIPTOR.build(dict(
                    protocol_identifier=0, code_set=CODE_SET_ASCII, piv=False, association=0,
                    designator_type=DESIGNATOR_VENDOR_SPECIFIC, designator_length=len(ident))) + ident
            if c.wwn:
                body += DESIGNATION_DESCRIPTOR.build(dict(
                    protocol_identifier=0, code_set=CODE_SET_BINARY, piv=False, association=0,
                    designator_type=DESIGNATOR_NAA, designator_length=8)) + c.wwn.to_bytes(8, "big")
        elif page == VPD_BLOCK_LIMITS:
            max_io = c.max_transfer_blocks
            body = BLOCK_LIMITS.build(dict(
                wsnz=c.wsnz, maximum_compare_and_write_length=0, optimal_transfer_length_granularity=0,
                maximum_transfer_length=max_io, optimal_transfer_length=0, maximum_prefetch_length=0,
                maximum_unmap_lba_count=c.max_unmap_blocks,
                maximum_unmap_block_descriptor_count=c.max_unmap_descriptors,
                optimal_unmap_granularity=c.unmap_granularity_blocks,
                ugavalid=c.unmap_granularity_alignment is not None,
                unmap_granularity_alignment=c.unmap_granularity_alignment or 0,
                maximum_write_same_length=c.max_write_same_blocks))
        elif page == VPD_BLOCK_CHARACTERISTICS:
            body = BLOCK_CHARACTERISTICS.build(dict(medium_rotation_rate=c.rotation_rate, product_type=0, wabereq=0,
                                                    wacereq=0, nominal_form_factor=0, vbuls=False))
        else:
            body = LOGICAL_BLOCK_PROVISIONING.build(dict(
                threshold_exponent=0, lbpu=c.lbpu, lbpws=c.lbpws, lbpws10=c.lbpws10, lbprz=int(c.lbprz),
                anc_sup=False, dp=False, provisioning_type=c.provisioning_type))
        return VPD_HEADER.build(dict(peripheral_qualifier=0, peripheral_device_type=TYPE_DISK, page_code=page,
                                     page_length=len(body))) + body

    # -- READ CAPACITY, GET LBA STATUS ---------------------------------------------------------------------
    def _read_capacity_10(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        f = parse(READ_CAPACITY_10, cdb)
        if not self.blocks:
            raise _Check(S.LUN_NOT_READY)           # QEMU: an empty medium
        if not f["pmi"] and f["lba"]:
            raise _Check(S.INVALID_FIELD)           # SBC-3: LBA must be 0 when PMI is 0
        return READ_CAPACITY_10_DATA.build(dict(last_lba=min(self.blocks - 1, 0xFFFFFFFF), block_length=self.bs))

    def _service_action_in(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        action = cdb[1] & 0x1F
        if action == SAI_READ_CAPACITY_16:
            return self._read_capacity_16(cdb, alloc)
        if action == SAI_GET_LBA_STATUS and self.config.get_lba_status:
            return self._get_lba_status(cdb)
        raise _Check(S.INVALID_FIELD)               # QEMU: only READ CAPACITY(16) -> INVALID FIELD IN CDB

    def _read_capacity_16(self, cdb: bytes, alloc: int) -> bytes:
        f = parse(READ_CAPACITY_16, cdb)
        if not self.blocks:
            raise _Check(S.LUN_NOT_READY)
        if not f["pmi"] and f["lba"]:
            raise _Check(S.INVALID_FIELD)
        c = self.config
        data = READ_CAPACITY_16_DATA.build(dict(
            last_lba=self.blocks - 1, block_length=self.bs, rc_basis=0, p_type=0, prot_en=False, p_i_exponent=0,
            lbppbe=c.physical_block_exp, lbpme=c.lbpme, lbprz=c.lbprz, lowest_aligned_lba=0))
        return self._answer(data, alloc)

    def _get_lba_status(self, cdb: bytes) -> bytes:
        """SBC-3: descriptors of consecutive extents from the starting LBA, each mapped or deallocated as
        Drive.mapped says (what qemu-img map reports as data), as many as the allocation length holds."""
        f = parse(GET_LBA_STATUS, cdb)
        lba, alloc = f["lba"], f["allocation_length"]
        if lba >= self.blocks:
            raise _Check(S.LBA_OUT_OF_RANGE)
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
        body = b"".join(LBA_STATUS_DESCRIPTOR.build(dict(
            lba=start, count=min(count, 0xFFFFFFFF),
            provisioning_status=LBA_MAPPED if mapped else LBA_DEALLOCATED)) for start, count, mapped in extents)
        header = GET_LBA_STATUS_HEADER.build(dict(parameter_data_length=len(body) + 4))
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
            raise _Check(sense, status=status) from None
        except (EmuError, OSError):
            raise _Check(S.IO_ERROR) from None
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
            raise _Check(S.INVALID_FIELD)           # no protection information (QEMU scsi_disk_dma_command)

    def _read_write(self, cdb: bytes, data_out: bytes):
        op = cdb[0]
        if op in _WRITE_VERIFY:
            f = parse(_WRITE_VERIFY[op], cdb)
            protect, lba, count, fua = f["protect"], f["lba"], f["transfer_length"], True   # scsi_is_cmd_fua
        else:
            protect, _dpo, fua, lba, count = decode_rw(cdb)
            if op in (Op.READ_6, Op.WRITE_6) and count == 0:
                count = 256
        reading = op in _READS
        if not reading and self.read_only:
            raise _Check(S.WRITE_PROTECTED)
        self._protect(protect)
        if self.config.enforce_limits and count > self.config.max_transfer_blocks:
            raise _Check(S.INVALID_FIELD)           # SBC-3 5.x: TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH
        if not self._range_ok(lba, count):
            raise _Check(S.LBA_OUT_OF_RANGE)
        if not count:
            return b""
        bs = self.bs
        if reading:
            done = self.drive.read(lba * bs, count * bs)
            if not done.ok:
                raise _failed(done, [done], transferred=False)
            return done.data, [done]
        # With the write cache off QEMU's block backend makes every write FUA (blk_co_pwritev_part).
        done = self.drive.write(lba * bs, data_out, fua=fua or not self.write_cache)
        if not done.ok:
            raise _failed(done, [done])
        return b"", [done]

    def _verify(self, cdb: bytes, data_out: bytes, alloc: int):
        c = self.config
        f = parse(_VERIFY[cdb[0]], cdb)
        if c.protect_check == "all":
            self._protect(f["protect"])
        bytchk, lba, count = f["bytchk"], f["lba"], f["transfer_length"]
        if bytchk and (c.verify_bytchk == "invalid-field" or bytchk == 2):
            raise _Check(S.INVALID_FIELD)           # QEMU 7.2: any BYTCHK; SBC-4: 10b is reserved
        if c.enforce_limits and bytchk and count > c.max_transfer_blocks:
            raise _Check(S.INVALID_FIELD)           # a verification with data is a transfer (B0h limit)
        if c.verify_range_check and not self._range_ok(lba, count):
            raise _Check(S.LBA_OUT_OF_RANGE)
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
                raise _failed(done, completions)
            expected = data_out[first * bs:(first + n) * bs] if bytchk == 1 else bytes(data_out) * n
            if done.data != expected:
                raise _Check(S.MISCOMPARE_DURING_VERIFY, transferred=True, completions=completions)
        return b"", completions

    def _synchronize_cache(self, cdb: bytes, data_out: bytes, alloc: int):
        layout = SYNCHRONIZE_CACHE_10 if cdb[0] == Op.SYNCHRONIZE_CACHE_10 else SYNCHRONIZE_CACHE_16
        f = parse(layout, cdb)
        if self.config.sync_cache_range_check and not self._range_ok(f["lba"], f["number_of_blocks"]):
            raise _Check(S.LBA_OUT_OF_RANGE)        # SBC-3
        return self._flush()

    def _flush(self):
        done = self.drive.flush()
        if not done.ok:
            raise _failed(done, [done])
        return b"", [done]

    # -- UNMAP ---------------------------------------------------------------------------------------------
    def _unmap(self, cdb: bytes, data_out: bytes, alloc: int):
        """QEMU scsi_disk_emulate_unmap's order: a 0-byte list is GOOD before anything is looked at; then
        ANCHOR, the header lengths, write protection, and the descriptors."""
        c = self.config
        if not data_out:
            return b""
        if c.unmap_anchor_check and parse(UNMAP_CDB, cdb)["anchor"]:
            raise _Check(S.INVALID_FIELD, transferred=True)   # ANC_SUP = 0 (SBC-3)
        descriptors = self._unmap_descriptors(data_out)
        if c.unmap_write_protect_check and self.read_only:
            raise _Check(S.WRITE_PROTECTED, transferred=True)
        if c.enforce_limits and len(descriptors) > c.max_unmap_descriptors:
            raise _Check(S.INVALID_PARAM, transferred=True)
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
                raise _failed(done, completions)
        return b"", completions

    def _unmap_check(self, lba: int, count: int, completions: list[Completion]) -> None:
        if self.config.enforce_limits and count > self.config.max_unmap_blocks:
            raise _Check(S.INVALID_PARAM, transferred=True, completions=completions)   # SBC-3
        if not self._range_ok(lba, count):
            raise _Check(S.LBA_OUT_OF_RANGE, transferred=True, completions=completions)

    def _unmap_descriptors(self, data: bytes) -> list[tuple[int, int]]:
        """(LBA, blocks) of each descriptor, after the header checks of `unmap_length_rules`."""
        n = len(data)
        if n < UNMAP_HEADER.sizeof():
            raise _Check(S.INVALID_PARAM_LEN, transferred=True)
        header = parse(UNMAP_HEADER, data[:8])
        desc_len = header["block_descriptor_data_length"]
        if self.config.unmap_length_rules == "reject":
            if n < header["unmap_data_length"] + 2 or n < desc_len + 8 or desc_len & 15:
                raise _Check(S.INVALID_PARAM_LEN, transferred=True)
        else:
            desc_len = min(desc_len, n - 8) & ~15   # an incomplete last descriptor is ignored (SBC-3)
        size = UNMAP_DESCRIPTOR.sizeof()
        out = []
        for offset in range(8, 8 + desc_len, size):
            d = parse(UNMAP_DESCRIPTOR, data[offset:offset + size])
            out.append((d["lba"], d["count"]))
        return out

    # -- WRITE SAME ------------------------------------------------------------------------------------------
    def _write_same(self, cdb: bytes, data_out: bytes, alloc: int):
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
            raise _Check(S.INVALID_FIELD, transferred=True)   # ANC_SUP = 0; PBDATA/LBDATA not supported
        if count == 0:
            if c.wsnz:
                raise _Check(S.INVALID_FIELD, transferred=True)   # WSNZ = 1 (SBC-3)
            count = max(self.blocks - lba, 0)       # SBC-3: to the last LBA
        if self.read_only:
            raise _Check(S.WRITE_PROTECTED, transferred=True)
        if not self._range_ok(lba, count) or (f["number_of_blocks"] == 0 and lba >= self.blocks):
            raise _Check(S.LBA_OUT_OF_RANGE, transferred=True)
        if c.enforce_limits and count > c.max_write_same_blocks:
            raise _Check(S.INVALID_FIELD, transferred=True)   # SBC-3: above MAXIMUM WRITE SAME LENGTH
        bs = self.bs
        fua = not self.write_cache
        block = bytes(bs) if ndob else bytes(data_out)
        if not any(block):
            # scsi_disk_emulate_write_same: NDOB or a zero block -> write-zeroes, MAY_UNMAP iff UNMAP is set
            done = self.drive.execute(Request.write_zeroes(lba * bs, count * bs, may_unmap=f["unmap"], fua=fua))
            if not done.ok:
                raise _failed(done, [done])
            return b"", [done]
        completions: list[Completion] = []
        buf = block * (min(count * bs, WRITE_SAME_MAX) // bs)
        offset, end = lba * bs, (lba + count) * bs
        while offset < end:
            piece = buf[:end - offset]
            done = self.drive.write(offset, piece, fua=fua)
            completions.append(done)
            if not done.ok:
                raise _failed(done, completions)
            offset += len(piece)
        return b"", completions

    def _ndob(self, cdb: bytes) -> bool:
        """Whether the CDB has no data-out: NDOB in WRITE SAME(16) (SBC-3 r35), and in WRITE SAME(10) too where
        QEMU reads the bit ("no-op"; SBC leaves bit 0 of WRITE SAME(10) obsolete)."""
        mode = self.config.write_same_ndob
        return bool(cdb[1] & 0x01) and mode != "ignored" and (cdb[0] == Op.WRITE_SAME_16 or mode == "no-op")

    def _write_same_discard(self, lba: int, count: int, unmap: bool):
        """QEMU 1.4 scsi_disk_emulate_command WRITE_SAME: write protection and range first, then only UNMAP = 1
        is accepted, and the range is discarded without the data-out block ever being fetched."""
        if self.read_only:
            raise _Check(S.WRITE_PROTECTED)
        if not self._range_ok(lba, count):
            raise _Check(S.LBA_OUT_OF_RANGE)
        if not unmap:
            raise _Check(S.INVALID_FIELD)
        if not count:
            return _NotTransferred()
        done = self.drive.discard(lba * self.bs, count * self.bs)
        if not done.ok:
            raise _failed(done, [done], transferred=False)
        return _NotTransferred(), [done]

    # -- MODE SENSE / MODE SELECT --------------------------------------------------------------------------
    def _mode_page(self, page: int, pc: int) -> bytes:
        """One mode page for page control `pc` (0 current, 1 changeable, 2 default), as QEMU mode_sense_page
        fills pages 01h/04h/05h/08h; the control page 0Ah has only D_SENSE changeable."""
        changeable = pc == PC_CHANGEABLE
        default = pc == PC_DEFAULT and self.config.mode_default_values == "power-on"
        head = dict(ps=False, spf=False, page_code=page)
        if page == MODE_PAGE_CACHING:
            wce = True if changeable else (self.config.write_cache if default else self.write_cache)
            return CACHING_PAGE.build(dict(
                head, page_length=0x12, ic=False, abpf=False, cap=False, disc=False, size=False, wce=wce, mf=False,
                rcd=False, demand_read_retention_priority=0, write_retention_priority=0,
                disable_prefetch_transfer_length=0, minimum_prefetch=0, maximum_prefetch=0,
                maximum_prefetch_ceiling=0, fsw=False, lbcss=False, dra=False, nv_dis=False,
                number_of_cache_segments=0, cache_segment_size=0))
        if page == MODE_PAGE_CONTROL:
            d_sense = True if changeable else (False if default else self.d_sense)
            return CONTROL_PAGE.build(dict(
                head, page_length=0x0A, tst=0, tmf_only=False, dpicz=False, d_sense=d_sense, gltsd=False,
                rlec=False, queue_algorithm_modifier=0, nuar=False, qerr=0, vs=False, rac=False, ua_intlck_ctrl=0,
                swp=False, ato=False, tas=False, atmpe=False, rwwp=False, busy_timeout_period=0,
                extended_self_test_completion_time=0))
        if page == MODE_PAGE_R_W_ERROR:
            return R_W_ERROR_RECOVERY_PAGE.build(dict(
                head, page_length=0x0A, awre=not changeable, arre=False, tb=False, rc=False, eer=False, per=False,
                dte=False, dcr=False, read_retry_count=0, lbpere=False, mwr=0, write_retry_count=0,
                recovery_time_limit=0))
        cyls, heads, secs = (0, 0, 0) if changeable else self.chs
        rpm = 0 if changeable else 5400
        if page == MODE_PAGE_HD_GEOMETRY:
            return RIGID_DISK_GEOMETRY_PAGE.build(dict(
                head, page_length=0x16, cylinders=cyls, heads=heads, write_precomp_cylinder=cyls,
                reduced_write_current_cylinder=cyls, step_rate=0 if changeable else 200,
                landing_zone_cylinder=0 if changeable else 0xFFFFFF, rpl=0, rotational_offset=0,
                rotation_rate=rpm))
        one = 0 if changeable else 1                # MODE_PAGE_FLEXIBLE_DISK_GEOMETRY
        return FLEXIBLE_DISK_PAGE.build(dict(
            head, page_length=0x1E, transfer_rate=0 if changeable else 5000, heads=heads, sectors_per_track=secs,
            bytes_per_sector=0 if changeable else self.bs & 0xFF00, cylinders=cyls & 0xFFFF,
            write_precomp_cylinder=cyls & 0xFFFF, reduced_write_current_cylinder=cyls & 0xFFFF, step_rate=one,
            step_pulse_width=one, head_settle_delay=one, motor_on_delay=one, motor_off_delay=one, rotation_rate=rpm))

    def _mode_sense(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_disk_emulate_mode_sense: header, an 8-byte block descriptor unless DBD, then the page (or
        every page for 3Fh); saved values are not supported."""
        c = self.config
        six = cdb[0] == Op.MODE_SENSE_6
        f = parse(MODE_SENSE_6 if six else MODE_SENSE_10, cdb)
        page, pc = f["page_code"], f["pc"]
        descriptor = b""
        if not f["dbd"] and self.blocks:
            if c.mode_block_descriptor == "general":
                count = self.blocks if self.blocks <= 0xFFFFFF else 0   # QEMU: 0 when it does not fit
                descriptor = GENERAL_BLOCK_DESCRIPTOR.build(dict(density_code=0, number_of_blocks=count,
                                                                 block_length=self.bs))
            else:
                descriptor = SHORT_LBA_BLOCK_DESCRIPTOR.build(dict(number_of_blocks=min(self.blocks, 0xFFFFFFFF),
                                                                   block_length=self.bs))
        if pc == PC_SAVED:
            raise _Check(S.SAVING_PARAMS_NOT_SUPPORTED)
        if c.mode_subpage_check and f["subpage_code"] not in (0, 0xFF if page == MODE_PAGE_ALL else 0):
            raise _Check(S.INVALID_FIELD)
        if page == MODE_PAGE_ALL:
            pages = b"".join(self._mode_page(p, pc) for p in sorted(c.mode_pages))
        elif page in c.mode_pages:
            pages = self._mode_page(page, pc)
        else:
            raise _Check(S.INVALID_FIELD)
        flags = dict(medium_type=0, wp=self.read_only, dpofua=c.dpofua, block_descriptor_length=len(descriptor))
        if six:
            size = MODE_PARAMETER_HEADER_6.sizeof() + len(descriptor) + len(pages)
            header = MODE_PARAMETER_HEADER_6.build(dict(flags, mode_data_length=size - 1))
        else:
            size = MODE_PARAMETER_HEADER_10.sizeof() + len(descriptor) + len(pages)
            header = MODE_PARAMETER_HEADER_10.build(dict(flags, mode_data_length=size - 2, longlba=False))
        return self._answer(header + descriptor + pages, alloc)

    def _mode_select(self, cdb: bytes, data_out: bytes, alloc: int):
        """QEMU scsi_disk_emulate_mode_select: PF = 1 and SP = 0 only; the header and block descriptor, then
        every page checked (only changeable bits may differ from the current values) before any is applied.
        Turning the write cache off flushes it."""
        six = cdb[0] == Op.MODE_SELECT_6
        f = parse(MODE_SELECT_6 if six else MODE_SELECT_10, cdb)
        if not data_out:
            return b""                              # parameter list length 0: GOOD before anything else
        if not f["pf"] or f["sp"]:
            raise _Check(S.INVALID_FIELD, transferred=True)
        header = MODE_PARAMETER_HEADER_6 if six else MODE_PARAMETER_HEADER_10
        n = len(data_out)
        if n < header.sizeof():
            raise _Check(S.INVALID_PARAM_LEN, transferred=True)
        bd_len = parse(header, data_out[:header.sizeof()])["block_descriptor_length"]
        rest = data_out[header.sizeof():]
        if len(rest) < bd_len:
            raise _Check(S.INVALID_PARAM_LEN, transferred=True)
        if bd_len not in (0, BLOCK_DESCRIPTOR_LEN):
            raise _Check(S.INVALID_PARAM, transferred=True)
        if bd_len:
            block_length = parse(GENERAL_BLOCK_DESCRIPTOR, rest[:BLOCK_DESCRIPTOR_LEN])["block_length"]
            mask = self.config.mode_select_block_lengths
            switches = bool(block_length) and (mask is None or not block_length & ~mask)
            if switches and block_length != self.bs:
                raise _Check(S.INVALID_PARAM, transferred=True)   # block size changes are not modelled
        pages = self._select_pages(rest[bd_len:])
        for page, body in pages:
            if page == MODE_PAGE_CACHING:
                self.write_cache = self._page_fields(CACHING_PAGE, page, body)["wce"]
            elif page == MODE_PAGE_CONTROL:
                self.d_sense = self._page_fields(CONTROL_PAGE, page, body)["d_sense"]
        if not self.write_cache:
            return self._flush()
        return b""

    def _select_pages(self, data: bytes) -> list[tuple[int, bytes]]:
        """(page, the bytes after its header) of every page in a MODE SELECT list, checked as QEMU's first
        pass of mode_select_pages / scsi_disk_check_mode_select does."""
        out = []
        while data:
            spf = bool(data[0] & 0x40)              # the SPF bit decides which header follows
            size = MODE_SUBPAGE_HEADER.sizeof() if spf else MODE_PAGE_HEADER.sizeof()
            if len(data) < size:
                raise _Check(S.INVALID_PARAM_LEN, transferred=True)
            h, data = parse(MODE_SUBPAGE_HEADER if spf else MODE_PAGE_HEADER, data[:size]), data[size:]
            page, subpage, length = h["page_code"], h.get("subpage_code", 0), h["page_length"]
            if subpage:
                raise _Check(S.INVALID_PARAM, transferred=True)
            if length > len(data):
                raise _Check(S.INVALID_PARAM_LEN, transferred=True)
            body, data = data[:length], data[length:]
            if page == MODE_PAGE_ALL or page not in self.config.mode_pages or length + 2 > MODE_DATA_MAX:
                raise _Check(S.INVALID_PARAM, transferred=True)
            current = self._mode_page(page, 0)[2:]
            mask = self._mode_page(page, PC_CHANGEABLE)[2:]
            if len(current) != length or any((a ^ b) & ~m & 0xFF for a, b, m in zip(current, body, mask)):
                raise _Check(S.INVALID_PARAM, transferred=True)
            out.append((page, body))
        return out

    @staticmethod
    def _page_fields(layout, page: int, body: bytes) -> dict:
        """The fields of a selected page's body, read through its page_0 format layout."""
        header = MODE_PAGE_HEADER.build(dict(ps=False, spf=False, page_code=page, page_length=len(body)))
        return parse(layout, header + body)

    # -- REPORT LUNS, REPORT SUPPORTED OPERATION CODES -----------------------------------------------------
    def _report_luns(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_target_emulate_report_luns: allocation length at least 16 and SELECT REPORT 0-2, else
        INVALID FIELD IN CDB; LUN 0 first, then the others (single-level, peripheral or flat addressing)."""
        f = parse(REPORT_LUNS, cdb)
        if alloc < 16 or f["select_report"] > 2:
            raise _Check(S.INVALID_FIELD)
        luns = [0] + [lun for lun in self.luns if lun != 0]
        body = b"".join((bytes([0, lun]) if lun < 256 else bytes([0x40 | lun >> 8, lun & 0xFF])) + bytes(6)
                        for lun in luns)
        data = REPORT_LUNS_HEADER.build(dict(lun_list_length=len(body))) + body
        if self.config.allocation_rule == "qemu":
            return data[:alloc & ~7]               # r->len = MIN(len, xfer & ~7)
        return data[:alloc]

    def _supported(self) -> list[tuple[int, int | None, object]]:
        """(opcode, service action, CDB layout) of every command this disk runs."""
        c = self.config
        out = []
        for op, layout in sorted(CDB_LAYOUTS.items()):
            if (op == Op.SYNCHRONIZE_CACHE_16 and not c.synchronize_cache_16) or (
                    op == Op.MAINTENANCE_IN and not c.report_supported_opcodes) or (
                    op in NO_OP_COMMANDS and op not in c.no_op_commands):
                continue
            out.append((op, MI_REPORT_SUPPORTED_OPCODES if op == Op.MAINTENANCE_IN else None, layout))
        index = next(i for i, (op, _, _) in enumerate(out) if op > Op.SERVICE_ACTION_IN_16)
        sai = [(Op.SERVICE_ACTION_IN_16, SAI_READ_CAPACITY_16, READ_CAPACITY_16)]
        if c.get_lba_status:
            sai.append((Op.SERVICE_ACTION_IN_16, SAI_GET_LBA_STATUS, GET_LBA_STATUS))
        return out[:index] + sai + out[index:]

    def _maintenance_in(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """SPC-4 REPORT SUPPORTED OPERATION CODES: all commands (option 0) or one command by opcode (1) or
        by opcode and service action (2); CDB usage data comes from the layouts the disk decodes."""
        f = parse(REPORT_SUPPORTED_OPCODES, cdb)
        if f["service_action"] != MI_REPORT_SUPPORTED_OPCODES:
            raise _Check(S.INVALID_FIELD)
        supported = self._supported()
        timeouts = COMMAND_TIMEOUTS_DESCRIPTOR.build(dict(
            descriptor_length=0x0A, command_specific=0, nominal_command_processing_timeout=0,
            recommended_command_timeout=0)) if f["rctd"] else b""
        option = f["reporting_options"]
        if option == 0:
            body = b"".join(COMMAND_DESCRIPTOR.build(dict(
                opcode=op, service_action=sa or 0, ctdp=f["rctd"], servactv=sa is not None,
                cdb_length=layout.sizeof())) + timeouts for op, sa, layout in supported)
            return (len(body).to_bytes(4, "big") + body)[:alloc]
        if option not in (1, 2):
            raise _Check(S.INVALID_FIELD)
        op, sa = f["requested_opcode"], f["requested_service_action"]
        has_actions = op in (Op.SERVICE_ACTION_IN_16, Op.MAINTENANCE_IN)
        if has_actions != (option == 2):
            raise _Check(S.INVALID_FIELD)           # option 1 for an opcode with service actions, or 2 without
        match = [layout for o, s, layout in supported if o == op and (option == 1 or s == sa)]
        if not match:
            header = ONE_COMMAND_HEADER.build(dict(ctdp=False, support=1, cdb_size=0))
            return header[:alloc]
        usage = cdb_usage(match[0], op, sa if option == 2 else None)
        header = ONE_COMMAND_HEADER.build(dict(ctdp=f["rctd"], support=3, cdb_size=len(usage)))
        return (header + usage + timeouts)[:alloc]

