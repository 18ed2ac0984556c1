"""virtio-scsi over ScsiDisk logical units: one target, framing, LUN addressing, responses, TMF, AN and events.

Facts: QEMU 7.2 hw/scsi/virtio-scsi.c (virtio_scsi_parse_req, virtio_scsi_handle_cmd_req_prepare,
virtio_scsi_command_complete, virtio_scsi_do_tmf, virtio_scsi_handle_ctrl_req, virtio_scsi_push_event,
virtio_scsi_get_config / _set_config / _reset) and tests/qtest/virtio-scsi-test.c; virtio 1.2 section 5.6. What
the SCSI bus does for the target (which LU answers, missing LUNs, unit attentions) is controllers/scsi/target.py.

Queues: 0 control, 1 event, 2.. requests. A command is the 19-byte header plus `cdb_size` CDB bytes (readable),
then the data-out; the 12-byte response plus `sense_size` sense bytes (writable), then the data-in. Headers shorter
than that, on any queue, break the device (QEMU virtio_scsi_bad_req: "wrong size for virtio-scsi headers"). Data
in both directions is response FAILURE (INOUT is never offered), a LUN that names no target BAD_TARGET, a data phase
the buffers cannot hold or that goes the other way OVERRUN; everything else runs on the logical unit and completes
with response OK, the SAM status, the residual and the sense data (cut to sense_size). The disk plans the data
phase (ScsiDisk.plan, QEMU scsi_req_xfer) before anything runs; an OVERRUN runs nothing, but QEMU made the request
first, which may take the pending unit attention (ScsiTarget.refused).

Event buffers are kept by the device (`handle` returns None) until an event needs one; with none at hand the
event is lost and the next one carries EVENTS_MISSED (as does a NO_EVENT sent when the driver adds a buffer).

Departure from QEMU: for READ/WRITE with a data buffer larger than the transfer length QEMU's DMA path moves the
whole buffer (scsi_do_read / scsi_write_data hand the full QEMUSGList to dma_blk_io); emu moves the transfer
length and reports the rest of the buffer as the residual.
Not modelled: hot-plug (no TRANSPORT_RESET events), the REPORT LUNS well-known logical unit (addressed as
C1h 01h, answered BAD_TARGET as in QEMU), T10 PI, and commands outstanding across a TMF (every command completes
within its kick, so ABORT TASK and QUERY TASK never find one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from controllers.scsi import sense as S
from controllers.scsi.command import Direction, ScsiResult
from controllers.scsi.disk import ScsiDisk
from controllers.scsi.layouts import GOOD
from controllers.scsi.target import CAPACITY_CHANGED, ScsiTarget
from controllers.virtio.layouts import (
    F_ANY_LAYOUT,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    LUN_FLAT,
    LUN_MAX,
    LUN_METHOD_SHIFT,
    LUN_PERIPHERAL,
    SCSI_AN_REQ_SIZE,
    SCSI_AN_RESP_FAST,
    SCSI_AN_RESP_SIZE,
    SCSI_CDB_DEFAULT_SIZE,
    SCSI_CDB_SIZE_LIMIT,
    SCSI_CMD_REQ_FAST,
    SCSI_CMD_REQ_SIZE,
    SCSI_CMD_RESP_FAST,
    SCSI_CMD_RESP_SIZE,
    SCSI_CONFIG_FAST,
    SCSI_CONFIG_FIELDS,
    SCSI_EVENT_FAST,
    SCSI_EVENT_SIZE,
    SCSI_EVENTQ,
    SCSI_F_CHANGE,
    SCSI_F_HOTPLUG,
    SCSI_LUN_FAST,
    SCSI_S_BAD_TARGET,
    SCSI_S_FAILURE,
    SCSI_S_FUNCTION_REJECTED,
    SCSI_S_INCORRECT_LUN,
    SCSI_S_OK,
    SCSI_S_OVERRUN,
    SCSI_SENSE_DEFAULT_SIZE,
    SCSI_SENSE_SIZE_LIMIT,
    SCSI_T_AN_QUERY,
    SCSI_T_AN_SUBSCRIBE,
    SCSI_T_EVENTS_MISSED,
    SCSI_T_NO_EVENT,
    SCSI_T_PARAM_CHANGE,
    SCSI_T_TMF,
    SCSI_T_TMF_ABORT_TASK,
    SCSI_T_TMF_ABORT_TASK_SET,
    SCSI_T_TMF_CLEAR_TASK_SET,
    SCSI_T_TMF_I_T_NEXUS_RESET,
    SCSI_T_TMF_LOGICAL_UNIT_RESET,
    SCSI_T_TMF_QUERY_TASK,
    SCSI_T_TMF_QUERY_TASK_SET,
    SCSI_TMF_REQ_FAST,
    SCSI_TMF_REQ_SIZE,
    SCSI_TMF_RESP_SIZE,
    U32,
    VIRTIO_ID_SCSI,
    VIRTQUEUE_MAX_SIZE,
    bit,
)
from controllers.virtio.pci import VIRTIO_QUEUE_MAX, Handled
from controllers.virtio.virtqueue import Element, VirtioError

if TYPE_CHECKING:
    from controllers.virtio.pci import VirtioPciTransport

BAD_HEADERS = "wrong size for virtio-scsi headers"       # QEMU virtio_scsi_bad_req
BAD_CONFIG = "bad data written to virtio-scsi configuration space"   # QEMU virtio_scsi_set_config

Framing = Literal["qemu", "spec"]
UsedLength = Literal["qemu", "written"]
ResidualRule = Literal["qemu", "spec"]
Addressing = Literal["qemu", "spec"]


@dataclass(frozen=True)
class VirtioScsiConfig:
    """What a virtio-scsi device offers and how it answers; defaults are QEMU 7.2's virtio-scsi-pci."""

    # Request queues (config num_queues; queues 0 and 1 are control and event) and every queue's size.
    num_queues: int = 1
    queue_size: int = 256
    # Config values the driver reads (QEMU: seg_max = queue size - 2 with seg_max_adjust, max_sectors 0xFFFF,
    # cmd_per_lun 128, max_channel 0, max_target 255, max_lun 16383).
    seg_max: int = 254
    max_sectors: int = 0xFFFF
    cmd_per_lun: int = 128
    max_target: int = 255
    max_lun: int = 16383
    # Features offered: HOTPLUG, CHANGE (PARAM_CHANGE events), ring features and the legacy ANY_LAYOUT bit (QEMU's
    # modern interface hides it: virtio_pci_common_read masks the legacy features).
    hotplug: bool = True
    param_change: bool = True
    indirect_desc: bool = True
    event_idx: bool = True
    any_layout: bool = False
    # Where the data starts: "qemu" = without ANY_LAYOUT negotiated, after the first readable / writable buffer
    # whatever its length (virtio_scsi_parse_req's workaround for old BIOSes); "spec" = right after the
    # cdb_size / sense_size based headers (virtio 1.2 2.6.4: framing is independent of buffer boundaries).
    framing: Framing = "qemu"
    # Used-ring length: "qemu" = every data byte of both sides plus the response header and the whole sense field
    # (virtio_scsi_complete_req pushes qsgl.size + resp_iov.size); "written" = the response structure (sense
    # field zero padded) plus the data-in bytes the device wrote (virtio 1.2 2.7.8).
    used_len: UsedLength = "qemu"
    # Residual: "qemu" = 0 unless the status is GOOD and the CDB has a data phase (virtio_scsi_command_complete;
    # scsi_req_new starts it at the CDB's transfer length); "spec" = data buffer bytes not transferred, always
    # (virtio 1.2 5.6.6.1: data_length - number_of_transferred_bytes).
    residual: ResidualRule = "qemu"
    # LUN addressing: "qemu" = byte 0 is 1 and byte 2 is 0 or 40h-7Fh, bytes 4-7 ignored (virtio_scsi_device_get),
    # and a missing LUN of the target is answered through the target's most recently attached LU, whose unit
    # attention preempts and whose pending sense it sets (do_scsi_device_find, scsi_req_new); "spec" = bytes 4-7
    # must be zero too (virtio 1.2 5.6.6.1) and a missing LUN is answered per SPC-4 without touching any LU.
    addressing: Addressing = "qemu"

    def __post_init__(self) -> None:
        if not 1 <= self.num_queues <= VIRTIO_QUEUE_MAX - 2:
            raise ValueError(f"num_queues {self.num_queues} is outside 1..1022 (VIRTIO_QUEUE_MAX - 2)")
        if not 2 < self.queue_size <= VIRTQUEUE_MAX_SIZE:
            raise ValueError(f"queue_size {self.queue_size} is outside 3..{VIRTQUEUE_MAX_SIZE}")
        for name, allowed in (("framing", ("qemu", "spec")), ("used_len", ("qemu", "written")),
                              ("residual", ("qemu", "spec")), ("addressing", ("qemu", "spec"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {allowed}")

    def offered_features(self) -> int:
        """virtio_scsi_get_features (host_features) plus the common ring features."""
        features = 0
        for flag, on in ((SCSI_F_HOTPLUG, self.hotplug), (SCSI_F_CHANGE, self.param_change),
                         (F_INDIRECT_DESC, self.indirect_desc), (F_EVENT_IDX, self.event_idx),
                         (F_ANY_LAYOUT, self.any_layout)):
            if on:
                features |= bit(flag)
        return features


class _Frame(NamedTuple):
    """Where an element's data lies: data-out from `out_at` (`out_len` bytes), data-in from `in_at`."""

    out_at: int
    out_len: int
    in_at: int
    in_len: int


def encode_lun(target: int, lun: int) -> bytes:
    """The 8-byte LUN field as QEMU fills events: peripheral addressing below 256, flat space (40h) above."""
    return bytes([1, target, 0x40 | lun >> 8 if lun >= 256 else 0, lun & 0xFF]) + bytes(4)


class VirtioScsiDevice:
    """The virtio-scsi device model with one target of ScsiDisk LUNs (`luns`: LUN -> disk, in attachment order);
    plug it into a VirtioPciTransport. The disks and their Drives stay the caller's."""

    device_id = VIRTIO_ID_SCSI

    def __init__(self, luns: Mapping[int, ScsiDisk], config: VirtioScsiConfig | None = None, *,
                 target: int = 0) -> None:
        if not 0 <= target <= 255:
            raise ValueError(f"target {target} is outside 0..255")
        self.config = config or VirtioScsiConfig()
        self.scsi = ScsiTarget(luns, qemu=self.config.addressing == "qemu")
        self.target = target
        self.queue_sizes = (self.config.queue_size,) * (2 + self.config.num_queues)
        self.transport: VirtioPciTransport | None = None
        self._set_defaults()

    def _set_defaults(self) -> None:
        self.cdb_size = SCSI_CDB_DEFAULT_SIZE
        self.sense_size = SCSI_SENSE_DEFAULT_SIZE
        self.negotiated = 0
        self.driver_ok = False
        self.events_dropped = False
        self._events: deque[Element] = deque()

    # -- the VirtioDevice interface -------------------------------------------------------------------------
    def bind(self, transport: VirtioPciTransport) -> None:
        self.transport = transport

    def offered_features(self) -> int:
        return self.config.offered_features()

    def read_config(self) -> bytes:
        """virtio_scsi_get_config."""
        c = self.config
        return SCSI_CONFIG_FAST.pack(c.num_queues, c.seg_max, c.max_sectors, c.cmd_per_lun, SCSI_EVENT_SIZE,
                                     self.sense_size, self.cdb_size, 0, c.max_target, c.max_lun)

    def write_config(self, offset: int, data: bytes) -> None:
        """virtio_scsi_set_config: the bytes land in the configuration, then sense_size and cdb_size are taken
        from it; a sense_size of 65536 or more, or a cdb_size of 256 or more, breaks the device."""
        config = bytearray(self.read_config())
        config[offset:offset + len(data)] = data
        sense_size = U32.unpack_from(config, SCSI_CONFIG_FIELDS["sense_size"][0])[0]
        cdb_size = U32.unpack_from(config, SCSI_CONFIG_FIELDS["cdb_size"][0])[0]
        if sense_size >= SCSI_SENSE_SIZE_LIMIT or cdb_size >= SCSI_CDB_SIZE_LIMIT:
            raise VirtioError(BAD_CONFIG)
        self.sense_size, self.cdb_size = sense_size, cdb_size

    def activate(self, features: int) -> None:
        self.negotiated = features
        self.driver_ok = True

    def reset(self) -> None:
        """virtio_scsi_reset: default sizes, no dropped events, kept buffers gone; bus_cold_reset resets every
        LU (scsi_disk_reset purges with SENSE_CODE(RESET): unit attention 29h/00h)."""
        self._set_defaults()
        self.scsi.reset()

    def handle(self, queue: int, element: Element) -> Handled | None:
        if queue == 0:
            return self._control(element)
        if queue == SCSI_EVENTQ:
            return self._event_buffer(element)
        return self._command(element)

    # -- framing and addressing --------------------------------------------------------------------------------
    def _frame(self, element: Element, req_size: int, resp_size: int) -> _Frame:
        """virtio_scsi_parse_req: both headers present, then where the data begins."""
        if element.out_len < req_size or element.in_len < resp_size:
            raise VirtioError(BAD_HEADERS)
        out_at, in_at = req_size, resp_size
        if self.config.framing == "qemu" and not self.negotiated & bit(F_ANY_LAYOUT):
            out_at = element.out_sg[0][1] if element.out_sg else 0
            in_at = element.in_sg[0][1] if element.in_sg else 0
        return _Frame(out_at, element.out_len - out_at, in_at, element.in_len - in_at)

    def _used(self, frame: _Frame, resp_size: int, data_in: int) -> int:
        if self.config.used_len == "qemu":
            return frame.out_len + frame.in_len + resp_size
        return resp_size + data_in

    def _lun_number(self, lun: bytes) -> int | None:
        """virtio_scsi_device_get: the LUN the 8-byte field names on this target, or None when it names no target
        (the target then answers for a LUN it does not have). QEMU takes the flat method, or the peripheral one
        on bus 0 (a zero third byte), and ignores the last four bytes, which the spec wants zero."""
        first, target, single_level, rest = SCSI_LUN_FAST.unpack(lun)
        method = single_level >> LUN_METHOD_SHIFT
        if first != 1 or target != self.target or not (method == LUN_FLAT or single_level >> 8 == LUN_PERIPHERAL):
            return None
        if self.config.addressing == "spec" and any(rest):
            return None
        return single_level & LUN_MAX

    # -- request queues ---------------------------------------------------------------------------------------------
    def _command(self, element: Element) -> Handled:
        """virtio_scsi_handle_cmd_req_prepare, then the command on its LU and virtio_scsi_command_complete."""
        resp_size = SCSI_CMD_RESP_SIZE + self.sense_size
        frame = self._frame(element, SCSI_CMD_REQ_SIZE + self.cdb_size, resp_size)
        if frame.out_len and frame.in_len:
            return self._respond(element, frame, SCSI_S_FAILURE)
        header = element.read_out(0, SCSI_CMD_REQ_SIZE + self.cdb_size)
        lun = SCSI_CMD_REQ_FAST.unpack_from(header)[0]
        cdb = header[SCSI_CMD_REQ_SIZE:]
        number = self._lun_number(lun)
        if number is None:
            return self._respond(element, frame, SCSI_S_BAD_TARGET)
        plan = self.scsi.plan(number, cdb)
        mode = Direction.OUT if frame.out_len else Direction.IN if frame.in_len else Direction.NONE
        if plan.direction is not Direction.NONE and (plan.direction is not mode
                                                     or plan.length > frame.out_len + frame.in_len):
            self.scsi.refused(number, cdb)
            return self._respond(element, frame, SCSI_S_OVERRUN)
        # the data-out stays in guest RAM: views lent to this command only
        views = element.out_views(frame.out_at, plan.length) if plan.direction is Direction.OUT else []
        try:
            data_out = views[0] if len(views) == 1 else b"".join(views)
            sent = len(data_out)
            result = self.scsi.execute(number, cdb, data_out, frame.in_len, transfer=plan)
        finally:
            element.mem.release(views)
        element.write_in(frame.in_at, result.data_in)
        if result.status != GOOD and result.sense:
            self.scsi.sense_reported(number)      # virtio_scsi_command_complete takes it as autosense
        residual = result.residual + frame.out_len - sent
        if self.config.residual == "qemu" and (result.status != GOOD or plan.direction is Direction.NONE):
            residual = 0
        return self._respond(element, frame, SCSI_S_OK, result, residual)

    def _respond(self, element: Element, frame: _Frame, response: int, result: ScsiResult | None = None,
                 residual: int = 0) -> Handled:
        """The response header (and sense) at the start of the writable side, written after the data-in."""
        status, sense, data_in, completions = GOOD, b"", b"", ()
        if result is not None:
            status, data_in, completions = result.status, result.data_in, tuple(result.completions)
            sense = result.sense[:self.sense_size] if status != GOOD else b""
        header = SCSI_CMD_RESP_FAST.pack(len(sense), residual & 0xFFFFFFFF, 0, status, response)
        if self.config.used_len == "written":
            sense = sense.ljust(self.sense_size, b"\0")
        element.write_in(0, header + sense)
        return Handled(self._used(frame, SCSI_CMD_RESP_SIZE + self.sense_size, len(data_in)), completions)

    # -- control queue ---------------------------------------------------------------------------------------------
    def _control(self, element: Element) -> Handled:
        """virtio_scsi_handle_ctrl_req: TMF and AN; any other type completes with nothing written."""
        if element.out_len < 4:
            raise VirtioError(BAD_HEADERS)
        type_ = U32.unpack(element.read_out(0, 4))[0]
        if type_ == SCSI_T_TMF:
            frame = self._frame(element, SCSI_TMF_REQ_SIZE, SCSI_TMF_RESP_SIZE)
            if frame.out_len and frame.in_len:
                raise VirtioError(BAD_HEADERS)          # parse_req's -ENOTSUP is a bad request on this queue
            _type, subtype, lun, _tag = SCSI_TMF_REQ_FAST.unpack(element.read_out(0, SCSI_TMF_REQ_SIZE))
            element.write_in(0, bytes([self._tmf(subtype, lun)]))
            return Handled(self._used(frame, SCSI_TMF_RESP_SIZE, 0))
        if type_ in (SCSI_T_AN_QUERY, SCSI_T_AN_SUBSCRIBE):
            frame = self._frame(element, SCSI_AN_REQ_SIZE, SCSI_AN_RESP_SIZE)
            if frame.out_len and frame.in_len:
                raise VirtioError(BAD_HEADERS)
            element.write_in(0, SCSI_AN_RESP_FAST.pack(0, SCSI_S_OK))   # no asynchronous events supported
            return Handled(self._used(frame, SCSI_AN_RESP_SIZE, 0))
        return Handled(0)

    def _tmf(self, subtype: int, lun: bytes) -> int:
        """virtio_scsi_do_tmf. No command is ever outstanding here, so aborts and queries find none and complete
        (FUNCTION COMPLETE); resets leave a unit attention on the LUs they reset."""
        if subtype == SCSI_T_TMF_I_T_NEXUS_RESET:
            if lun[1] == self.target:
                self.scsi.reset()
            return SCSI_S_OK
        if subtype not in (SCSI_T_TMF_ABORT_TASK, SCSI_T_TMF_QUERY_TASK, SCSI_T_TMF_LOGICAL_UNIT_RESET,
                           SCSI_T_TMF_ABORT_TASK_SET, SCSI_T_TMF_CLEAR_TASK_SET, SCSI_T_TMF_QUERY_TASK_SET):
            return SCSI_S_FUNCTION_REJECTED             # CLEAR ACA and anything unknown
        number = self._lun_number(lun)
        if number is None:
            return SCSI_S_BAD_TARGET
        if not self.scsi.has(number):
            return SCSI_S_INCORRECT_LUN
        if subtype == SCSI_T_TMF_LOGICAL_UNIT_RESET:
            self.scsi.reset(number)
        return SCSI_S_OK

    # -- event queue --------------------------------------------------------------------------------------------------
    def _event_buffer(self, element: Element) -> Handled | None:
        """virtio_scsi_handle_event: the device keeps the buffer; after a lost event the oldest kept one goes back
        at once as NO_EVENT with EVENTS_MISSED."""
        self._events.append(element)
        if self.events_dropped:
            self._push_event(SCSI_T_NO_EVENT, bytes(8), 0)
        return None

    def notify_param_change(self, lun: int, sense: S.Sense = CAPACITY_CHANGED) -> None:
        """scsi_device_report_change on the target (the LU gets the unit attention unless a reset one is pending),
        and with CHANGE negotiated a PARAM_CHANGE event (reason = ASC | ASCQ << 8) goes out (virtio_scsi_change)."""
        self.scsi.report_change(lun, sense)
        if self.negotiated & bit(SCSI_F_CHANGE):
            self._push_event(SCSI_T_PARAM_CHANGE, encode_lun(self.target, lun), sense.asc | sense.ascq << 8)

    def _push_event(self, event: int, lun: bytes, reason: int) -> None:
        """virtio_scsi_push_event: only after DRIVER_OK; no kept buffer means the event is lost."""
        if not self.driver_ok:
            return
        if not self._events:
            self.events_dropped = True
            return
        element = self._events.popleft()
        try:
            handled = self._fill_event(element, event, lun, reason)
        except VirtioError as exc:
            self.transport.fail(str(exc))
            return
        self.transport.complete(SCSI_EVENTQ, element, handled.written)

    def _fill_event(self, element: Element, event: int, lun: bytes, reason: int) -> Handled:
        if self.events_dropped:
            event |= SCSI_T_EVENTS_MISSED
            self.events_dropped = False
        frame = self._frame(element, 0, SCSI_EVENT_SIZE)
        if frame.out_len and frame.in_len:
            raise VirtioError(BAD_HEADERS)
        element.write_in(0, SCSI_EVENT_FAST.pack(event, lun, reason))
        return Handled(self._used(frame, SCSI_EVENT_SIZE, 0))
