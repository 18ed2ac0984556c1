"""One SCSI target and its logical units: what QEMU's SCSI bus answers for them, whatever the transport.

A transport (virtio-scsi now; an iSCSI front end later) decodes its own LUN field into a LUN number and hands the
target the CDB. The target picks the logical unit, answers for a LUN it does not have, and keeps the unit
attentions that resets and capacity changes leave. Facts: QEMU 7.2 hw/scsi/scsi-bus.c (do_scsi_device_find,
scsi_req_new, scsi_target_send_command, scsi_device_set_ua, scsi_device_report_change, scsi_ua_precedence) and
hw/scsi/scsi-disk.c (scsi_disk_reset); SPC-4 for a logical unit that is not supported.

`qemu`: QEMU's rules, where the LU found first on the target (the newest) answers for a missing LUN, lending its
pending unit attention and keeping the sense. Otherwise SPC-4, where no other LU is involved.
"""

from __future__ import annotations

from collections.abc import Mapping

from controllers.scsi import sense as S
from controllers.scsi.command import ScsiResult, Transfer
from controllers.scsi.layouts import (
    CHECK_CONDITION,
    GOOD,
    INQUIRY,
    REQUEST_SENSE,
    VPD_HEADER,
    Op,
    build,
    cdb_length,
    parse,
)
from controllers.scsi.spc import LogicalUnit

MAX_LUN = 16384                      # flat space LUNs 0..16383
TYPE_NO_LUN = 0x7F                   # INQUIRY byte 0 for a LUN the target does not have: qualifier 011b, type 1Fh
CAPACITY_CHANGED = S.Sense(S.UNIT_ATTENTION, 0x2A, 0x09)     # CAPACITY DATA HAS CHANGED


class ScsiTarget:
    """The logical units of one target (`luns`: LUN -> unit, a ScsiDisk, in attachment order; LUN 0 required)."""

    def __init__(self, luns: Mapping[int, LogicalUnit], *, qemu: bool) -> None:
        if 0 not in luns or any(not 0 <= lun < MAX_LUN for lun in luns):
            # QEMU's target answers a missing LUN 0 itself (TEST UNIT READY GOOD, an inactive INQUIRY); not modelled
            raise ValueError(f"LUNs {list(luns)} must include 0 and lie in 0..{MAX_LUN - 1}")
        self.luns = dict(luns)
        self.qemu = qemu
        # QEMU's bus lists children newest first: REPORT LUNS names them in that order, and the first one found on
        # the target answers for a LUN it does not have.
        self._newest_first = list(reversed(self.luns))
        for disk in self.luns.values():
            disk.luns = tuple(self._newest_first)

    def has(self, lun: int) -> bool:
        return lun in self.luns

    def _answering(self, lun: int) -> LogicalUnit:
        return self.luns.get(lun) or self.luns[self._newest_first[0]]

    def plan(self, lun: int, cdb: bytes) -> Transfer:
        """The data phase of `cdb` (LogicalUnit.plan of the LU that answers for `lun`)."""
        return self._answering(lun).plan(cdb)

    def sense_reported(self, lun: int) -> None:
        """The transport delivered a command's sense with its status (autosense, QEMU scsi_req_get_sense, UA_INTLCK_CTRL
        00b): a unit attention among it is no longer the LU's sense for a REQUEST SENSE."""
        disk = self._answering(lun)
        if disk.sense_is_ua:
            disk.sense, disk.sense_is_ua = None, False

    def refused(self, lun: int, cdb: bytes) -> None:
        """The transport refused `cdb`'s buffers after planning it (LogicalUnit.refused of the LU that answers)."""
        self._answering(lun).refused(cdb)

    def execute(self, lun: int, cdb: bytes, data_out: bytes | memoryview, data_in_len: int, *,
                transfer: Transfer | None = None) -> ScsiResult:
        """Run `cdb` for `lun`: on its LU, or answered for the target when the LUN is missing. `transfer`: what
        `plan(lun, cdb)` gave, when the transport asked first."""
        disk = self._answering(lun)
        if transfer is None:
            transfer = disk.plan(cdb)
        buffer = data_in_len + len(data_out)
        if not cdb:             # scsi_req_new: a 0-byte CDB is reqops_invalid_opcode, before any unit attention
            disk.completed_unreported()
            return self._check(disk, S.INVALID_OPCODE, self.has(lun) or self.qemu, buffer)
        if not self.has(lun):
            return self._missing_lun(disk, cdb, transfer.length, buffer)
        return disk.execute(cdb, data_out, data_in_len, transfer=transfer)

    def _missing_lun(self, disk: LogicalUnit, cdb: bytes, planned: int, buffer: int) -> ScsiResult:
        """scsi_target_send_command: INQUIRY says "no LU here", REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED,
        anything else is CHECK CONDITION with it. `buffer`: the data bytes of the request."""
        qemu = self.qemu
        op = cdb[0]
        if cdb_length(op) is None or len(cdb) < cdb_length(op):
            disk.completed_unreported()
            return self._check(disk, S.INVALID_OPCODE, qemu, buffer)
        if qemu and disk.unit_attention is not None and op not in disk.config.unit_attention_exempt and not (
                op == Op.REQUEST_SENSE and disk.sense_is_ua):
            ua, disk.unit_attention = disk.unit_attention, None      # reqops_unit_attention
            disk.sense, disk.sense_is_ua = ua, True
            return ScsiResult(CHECK_CONDITION, S.fixed(ua), residual=buffer)
        if op == Op.INQUIRY:
            f = parse(INQUIRY, cdb[:INQUIRY.sizeof()])
            if f["cmddt"] or f["page_code"]:        # CMDDT, or a page other than 00h
                return self._check(disk, S.INVALID_FIELD, qemu, buffer)
            if f["evpd"]:
                # VPD page 00h listing itself; QEMU writes the page code where the peripheral byte belongs
                # (scsi_target_emulate_inquiry), so its page is one byte shorter
                data = build(VPD_HEADER, dict(peripheral_qualifier=TYPE_NO_LUN >> 5,
                                              peripheral_device_type=TYPE_NO_LUN & 0x1F, page_code=0, page_length=1))
                data = (data[1:] if qemu else data) + bytes([0x00])
            else:
                data = bytes([TYPE_NO_LUN]) + bytes(35)
            data = data[:planned]
        elif op == Op.REQUEST_SENSE:
            desc = parse(REQUEST_SENSE, cdb[:REQUEST_SENSE.sizeof()])["desc"]
            data = S.build(S.LUN_NOT_SUPPORTED, descriptor_format=desc)[:planned]
        else:
            return self._check(disk, S.LUN_NOT_SUPPORTED, qemu, buffer)
        if qemu:        # scsi_req_complete(GOOD) without sense empties the answering LU's dev->sense
            disk.sense, disk.sense_is_ua = None, False
        return ScsiResult(GOOD, b"", data, buffer - len(data))

    @staticmethod
    def _check(disk: LogicalUnit, sense: S.Sense, record: bool, buffer: int) -> ScsiResult:
        """CHECK CONDITION with fixed sense; `record`: the LU keeps it as its pending sense (scsi_req_complete)."""
        if record:
            disk.sense, disk.sense_is_ua = sense, False
        return ScsiResult(CHECK_CONDITION, S.fixed(sense), residual=buffer)

    def reset(self, lun: int | None = None) -> None:
        """scsi_disk_reset of one LU (or all) -> scsi_device_purge_requests(SENSE_CODE(RESET)): 29h/00h, which
        outranks any other unit attention (scsi_ua_precedence)."""
        for disk in self.luns.values() if lun is None else (self.luns[lun],):
            if disk.config.power_on_unit_attention:
                disk.unit_attention = S.POWER_ON_RESET

    def report_change(self, lun: int, sense: S.Sense = CAPACITY_CHANGED) -> None:
        """scsi_device_report_change: the LU gets the unit attention unless one that outranks it is pending."""
        disk = self.luns[lun]
        if disk.unit_attention is None or _ua_precedence(sense) < _ua_precedence(disk.unit_attention):
            disk.unit_attention = sense


def _ua_precedence(sense: S.Sense) -> int:
    """QEMU scsi_ua_precedence: lower wins; the reset conditions (29h/00h-07h but 05h/06h) come first."""
    if sense.asc == 0x29 and sense.ascq == 0x04:
        return 1
    if sense.asc == 0x3F and sense.ascq == 0x01:
        return 2
    if sense.asc == 0x29 and sense.ascq <= 0x07 and sense.ascq not in (0x05, 0x06):
        return sense.ascq
    if sense.asc == 0x2F and sense.ascq == 0x01:
        return 8
    return sense.asc << 8 | sense.ascq
