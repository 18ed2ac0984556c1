"""The SPC-4 part of a SCSI logical unit, whatever its device type: how one command runs (data phase, status,
autosense, unit attentions) and the primary commands.

A transport (virtio-scsi, through target.py) asks `plan(cdb)` for the data phase the CDB implies, as QEMU's
scsi_req_xfer computes it before the command runs (so it can answer OVERRUN or a direction mismatch itself),
moves the bytes, and calls `execute(cdb, data_out, data_in_len)` for the status, the sense data and the read
data. LUN addressing and missing LUNs are the target's; REPORT LUNS lists `luns`, which the target sets.

Commands here: TEST UNIT READY, REQUEST SENSE, INQUIRY with VPD pages 00h/80h/83h, MODE SENSE / MODE SELECT
with the control page 0Ah, REPORT LUNS, REPORT SUPPORTED OPERATION CODES, RESERVE / RELEASE, and the refusal of
every other opcode. Everything of the device type (its own commands, its VPD and mode pages, the block
descriptor) comes from a `CommandSet`: sbc.BlockCommands for a disk.

Behaviour follows QEMU 7.2 hw/scsi/scsi-bus.c (unit attention, REQUEST SENSE, REPORT LUNS) and
hw/scsi/scsi-disk.c (scsi_disk_emulate_command, scsi_disk_emulate_inquiry / _mode_sense / _mode_select /
_vpd_page); every difference between QEMU releases and SPC-4 is a field of `ScsiDiskConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from construct import Construct

from controllers.scsi import sense as S
from controllers.scsi.command import (
    NO_TRANSFER,
    CheckCondition,
    Data,
    Direction,
    Handler,
    NotTransferred,
    ScsiResult,
    Transfer,
    fit_allocation,
    transfer_in,
    transfer_out,
)
from controllers.scsi.config import INT_MAX, ScsiDiskConfig
from controllers.scsi.layouts import (
    BLOCK_DESCRIPTOR_LEN,
    CDB_LAYOUTS,
    CODE_SET_ASCII,
    CODE_SET_BINARY,
    COMMAND_DESCRIPTOR,
    COMMAND_TIMEOUTS_DESCRIPTOR,
    CONTROL_PAGE,
    DESIGNATION_DESCRIPTOR,
    DESIGNATOR_NAA,
    DESIGNATOR_VENDOR_SPECIFIC,
    GOOD,
    INQUIRY,
    INQUIRY_STANDARD,
    INQUIRY_STANDARD_LEN,
    MI_REPORT_SUPPORTED_OPCODES,
    MODE_PAGE_ALL,
    MODE_PAGE_CONTROL,
    MODE_PAGE_HEADER,
    MODE_PARAMETER_HEADER_6,
    MODE_PARAMETER_HEADER_10,
    MODE_SELECT_6,
    MODE_SELECT_10,
    MODE_SENSE_6,
    MODE_SENSE_10,
    MODE_SUBPAGE_HEADER,
    ONE_COMMAND_HEADER,
    PC_CHANGEABLE,
    PC_CURRENT,
    PC_DEFAULT,
    PC_SAVED,
    REPORT_LUNS,
    REPORT_LUNS_HEADER,
    REPORT_SUPPORTED_OPCODES,
    REQUEST_SENSE,
    VPD_DEVICE_ID,
    VPD_HEADER,
    VPD_SUPPORTED_PAGES,
    VPD_UNIT_SERIAL,
    Op,
    build,
    cdb_length,
    cdb_usage,
    parse,
    parse_mode_page,
)
from controllers.scsi.xfer import bus_transfer

INQUIRY_MAX = 256                   # QEMU SCSI_MAX_INQUIRY_LEN
MODE_DATA_MAX = 256                 # QEMU SCSI_MAX_MODE_LEN: MODE SELECT pages longer than this are refused
# RESERVE / RELEASE (6) and (10), obsolete since SPC-3: complete without effect (config.no_op_commands names
# which exist); the 6-byte forms without a data phase (scsi_req_xfer).
_RESERVATIONS = (Op.RESERVE_6, Op.RELEASE_6, Op.RESERVE_10, Op.RELEASE_10)
_NO_DATA = frozenset({Op.TEST_UNIT_READY, Op.RESERVE_6, Op.RELEASE_6})


class CommandSet(Protocol):
    """The device type's own commands behind a logical unit (SBC for a disk: sbc.BlockCommands), and what the
    primary commands report of it."""

    peripheral_device_type: int                     # INQUIRY and VPD byte 0
    # Reads and writes (QEMU scsi_disk_dma_command): no allocation-length limit, data-out as the transport lent it.
    dma_commands: Mapping[int, Handler]
    # Every other command of its own (QEMU scsi_disk_emulate_command), given a copy of the data-out.
    emulated_commands: Mapping[int, Handler]
    # (opcode, service action, CDB layout) of its commands with service actions, for REPORT SUPPORTED OPCODES.
    service_actions: Sequence[tuple[int, int, Construct]]

    def plan(self, cdb: bytes | bytearray | memoryview, size: int) -> Transfer | None:
        """The data phase of one of its commands (`size`: the CDB length), None for any other."""

    def vpd_pages(self) -> list[int]:
        """Its VPD pages, listed after SPC's 00h, 80h and 83h."""

    def vpd_page(self, page: int) -> bytes:
        """The body of one of its VPD pages."""

    def mode_page(self, page: int, pc: int) -> bytes:
        """One of its mode pages (of config.mode_pages, not 0Ah) for page control 0 current, 1 changeable or
        2 default."""

    def mode_parameters(self) -> dict:
        """The device-specific parameter of the mode parameter header, as its fields."""

    def block_descriptor(self) -> bytes:
        """MODE SENSE's block descriptor; empty for none."""

    def select_block_descriptor(self, descriptor: bytes) -> None:
        """Check MODE SELECT's 8-byte block descriptor (raises CheckCondition)."""

    def mode_select(self, pages: list[tuple[int, bytes]]) -> Data:
        """Apply its pages of a checked MODE SELECT list ((page, body after the header) each)."""


class LogicalUnit:
    """A SCSI logical unit over the device type's `commands`. State that commands change (D_SENSE, the pending
    unit attention, the last sense data) lives here; the rest is `config`."""

    def __init__(self, config: ScsiDiskConfig, commands: CommandSet, luns: tuple[int, ...] = (0,)) -> None:
        self.config = config
        self.commands = commands
        self.luns = luns                         # REPORT LUNS content (QEMU: LUN 0 and every other LUN)
        self.d_sense = False                     # control page D_SENSE; MODE SELECT changes it (strict)
        self.unit_attention: S.Sense | None = S.POWER_ON_RESET if config.power_on_unit_attention else None
        self.sense: S.Sense | None = None        # sense data of the last command (QEMU dev->sense)
        self.sense_is_ua = False
        self._dma = commands.dma_commands
        self._handlers: dict[int, Handler] = {
            Op.TEST_UNIT_READY: lambda cdb, data, alloc: b"",
            Op.REQUEST_SENSE: self._request_sense,
            Op.INQUIRY: self._inquiry,
            Op.MODE_SENSE_6: self._mode_sense,
            Op.MODE_SENSE_10: self._mode_sense,
            Op.MODE_SELECT_6: self._mode_select,
            Op.MODE_SELECT_10: self._mode_select,
            Op.REPORT_LUNS: self._report_luns,
            **({Op.MAINTENANCE_IN: self._maintenance_in} if config.report_supported_opcodes else {}),
            **{op: self._reserve_release for op in _RESERVATIONS if op in config.no_op_commands},
            **commands.emulated_commands,
        }

    # -- the data phase --------------------------------------------------------------------------------
    def plan(self, cdb: bytes | bytearray | memoryview) -> Transfer:
        """Direction and length of the data phase, from the CDB alone (QEMU scsi_req_xfer / scsi_cmd_xfer_mode):
        the command set's rule for its commands, the parameter list length for MODE SELECT, the allocation
        length for INQUIRY. A CDB that cannot be decoded plans none."""
        size = cdb_length(cdb[0]) if cdb else None
        if size is None or len(cdb) < size:
            return NO_TRANSFER
        planned = self.commands.plan(cdb, size)
        if planned is not None:
            return planned
        op = cdb[0]
        if op in (Op.MODE_SELECT_6, Op.MODE_SELECT_10):
            return transfer_out(parse(CDB_LAYOUTS[op], cdb[:size])["parameter_list_length"])
        if op in _NO_DATA:
            return NO_TRANSFER
        if op == Op.INQUIRY:
            return transfer_in(parse(INQUIRY, cdb[:size])["allocation_length"])     # SPC-3+: 16 bits
        # Everything else, known or not, has the data phase QEMU's bus gives it (scsi_req_xfer, scsi_cmd_xfer_mode).
        return bus_transfer(cdb, size)

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
        except CheckCondition as check:
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
        residual = data_in_len - len(data_in) + (len(data_out) if isinstance(data, NotTransferred) else 0)
        return ScsiResult(GOOD, b"", data_in, residual, completions)

    def refused(self, cdb: bytes | bytearray | memoryview) -> None:
        """A command the transport refused after QEMU made its request (virtio-scsi OVERRUN: only a CDB that plans
        a data phase, so one QEMU could parse): it never runs, but with unit_attention_taken_when_made one that would
        report the pending unit attention has taken it (scsi_req_alloc -> scsi_fetch_unit_attention_sense). QEMU makes
        one with a transfer over INT32_MAX bytes an INVALID FIELD request instead (scsi_req_new), which takes none."""
        op = cdb[0]
        if (self.config.unit_attention_taken_when_made and self.unit_attention is not None
                and self.plan(cdb).length <= INT_MAX
                and op not in self.config.unit_attention_exempt and not (op == Op.REQUEST_SENSE and self.sense_is_ua)):
            self.unit_attention = None

    def completed_unreported(self) -> None:
        """A command completed without reporting the pending unit attention (one QEMU could not parse): QEMU up to
        8.0 clears it all the same (unit_attention_clear "on-completion"), 8.1+ keeps it."""
        if self.config.unit_attention_clear == "on-completion":
            self.unit_attention = None

    def _dispatch(self, cdb: bytes, data_out: bytes | bytearray | memoryview, transfer: Transfer) -> Data:
        op = cdb[0]
        length = cdb_length(op)
        if length is None or len(cdb) < length:
            self.completed_unreported()
            raise CheckCondition(S.INVALID_OPCODE)  # QEMU scsi_req_parse_cdb fails -> reqops_invalid_opcode
        if self.unit_attention is not None and op not in self.config.unit_attention_exempt:
            ua = self.unit_attention
            if op == Op.REQUEST_SENSE and self.config.request_sense_unit_attention == "parameter-data":
                # SPC-4 REQUEST SENSE: reports the pending unit attention in its data and clears it
                self.unit_attention = None
                return self._sense_data(cdb, ua)
            if not (op == Op.REQUEST_SENSE and self.sense_is_ua):
                self.unit_attention = None          # QEMU reqops_unit_attention, then scsi_clear_unit_attention
                raise CheckCondition(ua)
        dma = self._dma.get(op)
        if dma is not None:
            return dma(cdb, data_out, transfer.length)
        limit = self.config.max_allocation_length
        if limit is not None and transfer.length > limit and op != Op.REPORT_LUNS:
            # scsi_disk_emulate_command refuses cmd.xfer > 65536 before it looks at the opcode (REPORT LUNS is
            # answered by the bus, scsi_target_send_command, which has no such limit)
            raise CheckCondition(S.INVALID_FIELD)
        handler = self._handlers.get(op)
        if handler is None:
            # scsi_disk_emulate_command default: INVALID OPCODE; an MMC command scsi-hd dispatches and refuses
            # (not TYPE_ROM): INVALID FIELD
            raise CheckCondition(S.INVALID_FIELD if op in self.config.invalid_field_commands else S.INVALID_OPCODE)
        return handler(cdb, bytes(data_out), transfer.length)

    # -- RESERVE / RELEASE -----------------------------------------------------------------------------------
    def _reserve_release(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_disk_emulate_command: no reservations are kept, but the 3rdPTY bit (and, in the 10-byte form,
        LONGID) is refused."""
        f = parse(CDB_LAYOUTS[cdb[0]], cdb)
        if f["third_party"] or f.get("longid"):
            raise CheckCondition(S.INVALID_FIELD)
        return b""

    # -- REQUEST SENSE --------------------------------------------------------------------------------------
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
            return fit_allocation(data, f["allocation_length"], self.config.allocation_rule)
        return data[:f["allocation_length"]]

    # -- INQUIRY ---------------------------------------------------------------------------------------------
    def _inquiry(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        c = self.config
        f = parse(INQUIRY, cdb)
        if f["evpd"]:
            return fit_allocation(self._vpd(f["page_code"]), alloc, c.allocation_rule)
        if f["page_code"]:
            raise CheckCondition(S.INVALID_FIELD)   # SPC-4: PAGE CODE without EVPD
        if c.allocation_rule == "qemu" and alloc > INQUIRY_STANDARD_LEN:
            additional = min(alloc, INQUIRY_MAX) - 5   # scsi_disk_emulate_inquiry: the padded length
        else:
            additional = INQUIRY_STANDARD_LEN - 5
        data = build(INQUIRY_STANDARD, dict(
            peripheral_qualifier=0, peripheral_device_type=self.commands.peripheral_device_type, rmb=False,
            lu_cong=False, version=c.scsi_version, normaca=False, hisup=True, response_data_format=2,
            additional_length=additional, sccs=False, acc=False, tpgs=0, threepc=False, protect=False,
            encserv=False, vs1=False, multip=False, addr16=False, wbus16=False, sync=True,
            cmdque=c.command_queueing, vs2=False, vendor=c.vendor.ljust(8).encode(),
            product=c.product.ljust(16).encode(), revision=c.revision.ljust(4).encode()))
        return fit_allocation(data, alloc, c.allocation_rule)

    def _vpd_pages(self) -> list[int]:
        serial = [VPD_UNIT_SERIAL] if self.config.serial is not None else []
        return [VPD_SUPPORTED_PAGES, *serial, VPD_DEVICE_ID, *self.commands.vpd_pages()]

    def _vpd(self, page: int) -> bytes:
        """A VPD page (QEMU scsi_disk_emulate_vpd_page); a page the unit does not have is INVALID FIELD."""
        pages = self._vpd_pages()
        if page not in pages:
            raise CheckCondition(S.INVALID_FIELD)
        c = self.config
        if page == VPD_SUPPORTED_PAGES:
            body = bytes(pages)
        elif page == VPD_UNIT_SERIAL:
            body = c.serial.encode()
        elif page == VPD_DEVICE_ID:
            body = b""
            if c.device_id:
                ident = c.device_id.encode()
                body += build(DESIGNATION_DESCRIPTOR, dict(
                    protocol_identifier=0, code_set=CODE_SET_ASCII, piv=False, association=0,
                    designator_type=DESIGNATOR_VENDOR_SPECIFIC, designator_length=len(ident))) + ident
            if c.wwn:
                body += build(DESIGNATION_DESCRIPTOR, dict(
                    protocol_identifier=0, code_set=CODE_SET_BINARY, piv=False, association=0,
                    designator_type=DESIGNATOR_NAA, designator_length=8)) + c.wwn.to_bytes(8, "big")
        else:
            body = self.commands.vpd_page(page)
        return build(VPD_HEADER, dict(peripheral_qualifier=0, page_code=page, page_length=len(body),
                                      peripheral_device_type=self.commands.peripheral_device_type)) + body

    # -- MODE SENSE / MODE SELECT --------------------------------------------------------------------------
    def _mode_page(self, page: int, pc: int) -> bytes:
        """One mode page for page control `pc` (0 current, 1 changeable, 2 default): the control page 0Ah, with
        only D_SENSE changeable, or the command set's."""
        if pc == PC_DEFAULT and self.config.mode_default_values == "current":
            pc = PC_CURRENT                         # QEMU answers the default values with the current ones
        if page != MODE_PAGE_CONTROL:
            return self.commands.mode_page(page, pc)
        d_sense = True if pc == PC_CHANGEABLE else (False if pc == PC_DEFAULT else self.d_sense)
        return build(CONTROL_PAGE, dict(
            ps=False, spf=False, page_code=page, page_length=0x0A, tst=0, tmf_only=False, dpicz=False,
            d_sense=d_sense, gltsd=False, rlec=False, queue_algorithm_modifier=0, nuar=False, qerr=0, vs=False,
            rac=False, ua_intlck_ctrl=0, swp=False, ato=False, tas=False, atmpe=False, rwwp=False,
            busy_timeout_period=0, extended_self_test_completion_time=0))

    def _mode_sense(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_disk_emulate_mode_sense: header, the block descriptor unless DBD, then the page (or every
        page for 3Fh); saved values are not supported."""
        c = self.config
        six = cdb[0] == Op.MODE_SENSE_6
        f = parse(MODE_SENSE_6 if six else MODE_SENSE_10, cdb)
        page, pc = f["page_code"], f["pc"]
        descriptor = b"" if f["dbd"] else self.commands.block_descriptor()
        if pc == PC_SAVED:
            raise CheckCondition(S.SAVING_PARAMS_NOT_SUPPORTED)
        if c.mode_subpage_check and f["subpage_code"] not in (0, 0xFF if page == MODE_PAGE_ALL else 0):
            raise CheckCondition(S.INVALID_FIELD)
        if page == MODE_PAGE_ALL:
            pages = b"".join(self._mode_page(p, pc) for p in sorted(c.mode_pages))
        elif page in c.mode_pages:
            pages = self._mode_page(page, pc)
        else:
            raise CheckCondition(S.INVALID_FIELD)
        flags = dict(self.commands.mode_parameters(), medium_type=0, block_descriptor_length=len(descriptor))
        if six:
            size = MODE_PARAMETER_HEADER_6.sizeof() + len(descriptor) + len(pages)
            header = build(MODE_PARAMETER_HEADER_6, dict(flags, mode_data_length=size - 1))
        else:
            size = MODE_PARAMETER_HEADER_10.sizeof() + len(descriptor) + len(pages)
            header = build(MODE_PARAMETER_HEADER_10, dict(flags, mode_data_length=size - 2, longlba=False))
        return fit_allocation(header + descriptor + pages, alloc, c.allocation_rule)

    def _mode_select(self, cdb: bytes, data_out: bytes, alloc: int) -> Data:
        """QEMU scsi_disk_emulate_mode_select: PF = 1 and SP = 0 only; the header and block descriptor, then
        every page checked (only changeable bits may differ from the current values) before any is applied."""
        six = cdb[0] == Op.MODE_SELECT_6
        f = parse(MODE_SELECT_6 if six else MODE_SELECT_10, cdb)
        if not data_out:
            return b""                              # parameter list length 0: GOOD before anything else
        if not f["pf"] or f["sp"]:
            raise CheckCondition(S.INVALID_FIELD, transferred=True)
        header = MODE_PARAMETER_HEADER_6 if six else MODE_PARAMETER_HEADER_10
        if len(data_out) < header.sizeof():
            raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
        bd_len = parse(header, data_out[:header.sizeof()])["block_descriptor_length"]
        rest = data_out[header.sizeof():]
        if len(rest) < bd_len:
            raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
        if bd_len not in (0, BLOCK_DESCRIPTOR_LEN):
            raise CheckCondition(S.INVALID_PARAM, transferred=True)
        if bd_len:
            self.commands.select_block_descriptor(rest[:BLOCK_DESCRIPTOR_LEN])
        pages = self._select_pages(rest[bd_len:])
        for page, body in pages:
            if page == MODE_PAGE_CONTROL:
                self.d_sense = parse_mode_page(CONTROL_PAGE, page, body)["d_sense"]
        return self.commands.mode_select(pages)

    def _select_pages(self, data: bytes) -> list[tuple[int, bytes]]:
        """(page, the bytes after its header) of every page in a MODE SELECT list, checked as QEMU's first
        pass of mode_select_pages / scsi_disk_check_mode_select does."""
        out = []
        while data:
            spf = bool(data[0] & 0x40)              # the SPF bit decides which header follows
            size = MODE_SUBPAGE_HEADER.sizeof() if spf else MODE_PAGE_HEADER.sizeof()
            if len(data) < size:
                raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
            h, data = parse(MODE_SUBPAGE_HEADER if spf else MODE_PAGE_HEADER, data[:size]), data[size:]
            page, subpage, length = h["page_code"], h.get("subpage_code", 0), h["page_length"]
            if subpage:
                raise CheckCondition(S.INVALID_PARAM, transferred=True)
            if length > len(data):
                raise CheckCondition(S.INVALID_PARAM_LEN, transferred=True)
            body, data = data[:length], data[length:]
            if page == MODE_PAGE_ALL or page not in self.config.mode_pages or length + 2 > MODE_DATA_MAX:
                raise CheckCondition(S.INVALID_PARAM, transferred=True)
            current = self._mode_page(page, PC_CURRENT)[2:]
            mask = self._mode_page(page, PC_CHANGEABLE)[2:]
            if len(current) != length or any((a ^ b) & ~m & 0xFF for a, b, m in zip(current, body, mask)):
                raise CheckCondition(S.INVALID_PARAM, transferred=True)
            out.append((page, body))
        return out

    # -- REPORT LUNS, REPORT SUPPORTED OPERATION CODES -----------------------------------------------------
    def _report_luns(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """QEMU scsi_target_emulate_report_luns: allocation length at least 16 and SELECT REPORT 0-2, else
        INVALID FIELD IN CDB; LUN 0 first, then the others (single-level, peripheral or flat addressing)."""
        f = parse(REPORT_LUNS, cdb)
        if alloc < 16 or f["select_report"] > 2:
            raise CheckCondition(S.INVALID_FIELD)
        luns = [0] + [lun for lun in self.luns if lun != 0]
        body = b"".join((bytes([0, lun]) if lun < 256 else bytes([0x40 | lun >> 8, lun & 0xFF])) + bytes(6)
                        for lun in luns)
        data = build(REPORT_LUNS_HEADER, dict(lun_list_length=len(body))) + body
        if self.config.allocation_rule == "qemu":
            return data[:alloc & ~7]               # r->len = MIN(len, xfer & ~7)
        return data[:alloc]

    def _supported(self) -> list[tuple[int, int | None, Construct]]:
        """(opcode, service action, CDB layout) of every command this unit runs, in opcode order."""
        runs = self._handlers.keys() | self._dma.keys()
        out: list[tuple[int, int | None, Construct]] = [
            (op, MI_REPORT_SUPPORTED_OPCODES if op == Op.MAINTENANCE_IN else None, layout)
            for op, layout in CDB_LAYOUTS.items() if op in runs]
        out += self.commands.service_actions
        return sorted(out, key=lambda command: (command[0], command[1] or 0))

    def _maintenance_in(self, cdb: bytes, data_out: bytes, alloc: int) -> bytes:
        """SPC-4 REPORT SUPPORTED OPERATION CODES: all commands (option 0) or one command by opcode (1) or
        by opcode and service action (2); CDB usage data comes from the layouts the unit decodes."""
        f = parse(REPORT_SUPPORTED_OPCODES, cdb)
        if f["service_action"] != MI_REPORT_SUPPORTED_OPCODES:
            raise CheckCondition(S.INVALID_FIELD)
        supported = self._supported()
        timeouts = build(COMMAND_TIMEOUTS_DESCRIPTOR, dict(
            descriptor_length=0x0A, command_specific=0, nominal_command_processing_timeout=0,
            recommended_command_timeout=0)) if f["rctd"] else b""
        option = f["reporting_options"]
        if option == 0:
            body = b"".join(build(COMMAND_DESCRIPTOR, dict(
                opcode=op, service_action=sa or 0, ctdp=f["rctd"], servactv=sa is not None,
                cdb_length=layout.sizeof())) + timeouts for op, sa, layout in supported)
            return (len(body).to_bytes(4, "big") + body)[:alloc]
        if option not in (1, 2):
            raise CheckCondition(S.INVALID_FIELD)
        op, sa = f["requested_opcode"], f["requested_service_action"]
        has_actions = op in (Op.SERVICE_ACTION_IN_16, Op.MAINTENANCE_IN)
        if has_actions != (option == 2):
            raise CheckCondition(S.INVALID_FIELD)   # option 1 for an opcode with service actions, or 2 without
        match = [layout for o, s, layout in supported if o == op and (option == 1 or s == sa)]
        if not match:
            header = build(ONE_COMMAND_HEADER, dict(ctdp=False, support=1, cdb_size=0))
            return header[:alloc]
        usage = cdb_usage(match[0], op, sa if option == 2 else None)
        header = build(ONE_COMMAND_HEADER, dict(ctdp=f["rctd"], support=3, cdb_size=len(usage)))
        return (header + usage + timeouts)[:alloc]
