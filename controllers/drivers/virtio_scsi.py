"""A guest virtio-scsi driver modelled on Linux drivers/scsi/virtio_scsi.c (6.1) over VirtioPciDriver.

virtscsi_probe: negotiate HOTPLUG and CHANGE (and the ring features), read num_queues, seg_max, max_sectors,
cmd_per_lun, max_target and max_lun, set up the control, event and request queues, write cdb_size = 32 and
sense_size = 96 back (virtscsi_init), DRIVER_OK, then post VIRTIO_SCSI_EVENT_LEN event buffers of 16 bytes
(`VirtioScsiDriverConfig.event_buffers`) when HOTPLUG was negotiated (virtscsi_kick_event_all). A command is laid
out as virtscsi_add_cmd does: the 51-byte request header and the data-out (device-readable), then the 108-byte
response and the data-in (device-writable); the LUN field is virtio_scsi_init_hdr's (1, target, 40h | LUN >> 8, LUN
& FFh: flat addressing even below 256), task attribute SIMPLE.

`raw()` takes request-header bytes of the caller's own (any length, any LUN, any CDB) for tests and `emu replay`;
`command()`, `tmf()` and `an()` build them as Linux does. Every method that waits is a SimPy generator.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.drivers.config import GuestConfig, feature_bits
from controllers.drivers.virtio_pci import ChainOutcome, VirtioPciDriver
from controllers.scsi import sense as S
from controllers.scsi.layouts import GOOD
from controllers.virtio.layouts import (
    LUN_FLAT,
    LUN_MAX,
    LUN_METHOD_SHIFT,
    PCI_ISR_OFFSET,
    PCI_NOTIFY_OFF_MULTIPLIER,
    SCSI_AN_REQ_FAST,
    SCSI_AN_RESP_FAST,
    SCSI_AN_RESP_SIZE,
    SCSI_CDB_DEFAULT_SIZE,
    SCSI_CMD_REQ_FAST,
    SCSI_CMD_RESP_FAST,
    SCSI_CMD_RESP_SIZE,
    SCSI_CONFIG_FIELDS,
    SCSI_CONTROLQ,
    SCSI_EVENT_FAST,
    SCSI_EVENT_SIZE,
    SCSI_EVENTQ,
    SCSI_F_HOTPLUG,
    SCSI_LUN_FAST,
    SCSI_REQUESTQ,
    SCSI_S_OK,
    SCSI_S_SIMPLE,
    SCSI_SENSE_DEFAULT_SIZE,
    SCSI_T_TMF,
    SCSI_TMF_REQ_FAST,
    SCSI_TMF_RESP_SIZE,
    bit,
)
from emu.errors import DriverLayoutError

if TYPE_CHECKING:
    from controllers.virtio.pci import VirtioPciTransport
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, Simulation


@dataclass
class ScsiOutcome:
    """One command as the guest sees it: the virtio response (None when the request never completed), the SAM
    status, the sense bytes (sense_len of them) and their key/ASC/ASCQ, the data-in bytes, the residual, the used
    length, and why it did not complete (broken device, timeout)."""

    response: int | None
    status: int | None
    sense: bytes
    data_in: bytes
    residual: int
    used_len: int | None
    broken: bool
    timed_out: bool
    time: float

    @property
    def sense_code(self) -> S.Sense | None:
        return S.decode(self.sense) if self.sense else None

    @property
    def ok(self) -> bool:
        """Response OK and status GOOD."""
        return self.response == SCSI_S_OK and self.status == GOOD


@dataclass(frozen=True)
class ScsiLimits:
    """What virtscsi_probe reads from the configuration space."""

    num_queues: int
    seg_max: int
    max_sectors: int
    cmd_per_lun: int
    max_target: int
    max_lun: int
    event_info_size: int


@dataclass(frozen=True)
class ScsiEvent:
    """One event the device returned: its type (EVENTS_MISSED bit included), the LUN field and the reason."""

    event: int
    lun: bytes
    reason: int


def lun_field(target: int, lun: int) -> bytes:
    """virtio_scsi_init_hdr's 8-byte LUN field: the LUN in the flat address method."""
    if not 0 <= lun <= LUN_MAX:
        raise DriverLayoutError(f"LUN {lun} does not fit a single-level LUN (0..{LUN_MAX})")
    return SCSI_LUN_FAST.pack(1, target, LUN_FLAT << LUN_METHOD_SHIFT | lun, bytes(4))


def command_header(target: int, lun: int, cdb: bytes, tag: int = 0, cdb_size: int = SCSI_CDB_DEFAULT_SIZE) -> bytes:
    """The request header of a command: LUN, tag, SIMPLE, prio 0, crn 0, the CDB zero padded to cdb_size."""
    if len(cdb) > cdb_size:
        raise DriverLayoutError(f"CDB of {len(cdb)} bytes does not fit cdb_size {cdb_size}")
    return SCSI_CMD_REQ_FAST.pack(lun_field(target, lun), tag, SCSI_S_SIMPLE, 0, 0) + cdb.ljust(cdb_size, b"\0")


class VirtioScsiDriver:
    """Linux virtio_scsi on one virtio-pci function, addressing `target`, as `guest` configures it (its commands
    come from sd, whose timer they run under). Run `probe()` first. `supported` is the feature word it accepts."""

    def __init__(self, sim: Simulation, mem: GuestMemory, transport: VirtioPciTransport, irq: InterruptLine, *,
                 guest: GuestConfig, target: int = 0, notify_multiplier: int = PCI_NOTIFY_OFF_MULTIPLIER) -> None:
        self.pci = VirtioPciDriver(sim, mem, transport, irq, timeout=guest.sd.command_timeout,
                                   notify_multiplier=notify_multiplier)
        self.supported = feature_bits(guest.virtio_scsi.features)
        self.event_buffers = guest.virtio_scsi.event_buffers
        self.target = target
        self.limits: ScsiLimits | None = None
        self.sense_size = SCSI_SENSE_DEFAULT_SIZE
        self.cdb_size = SCSI_CDB_DEFAULT_SIZE
        self._tag = 0

    def has(self, feature: int) -> bool:
        return bool(self.pci.features & bit(feature))

    def _cfg(self, name: str) -> int:
        offset, size = SCSI_CONFIG_FIELDS[name]
        return self.pci.config_read(offset, size)

    def probe(self) -> Generator[Any, Any, bool]:
        """virtscsi_probe / virtscsi_init."""
        if not (yield from self.pci.probe(self.supported)):
            return False
        self.limits = ScsiLimits(
            num_queues=self._cfg("num_queues") or 1, seg_max=self._cfg("seg_max") or 1,
            max_sectors=self._cfg("max_sectors") or 0xFFFF, cmd_per_lun=self._cfg("cmd_per_lun") or 1,
            max_target=self._cfg("max_target"), max_lun=self._cfg("max_lun"),
            event_info_size=self._cfg("event_info_size"))
        self.pci.setup_queues(SCSI_REQUESTQ + self.limits.num_queues)
        self.pci.config_write(SCSI_CONFIG_FIELDS["cdb_size"][0], SCSI_CDB_DEFAULT_SIZE, 4)
        self.pci.config_write(SCSI_CONFIG_FIELDS["sense_size"][0], SCSI_SENSE_DEFAULT_SIZE, 4)
        self.cdb_size, self.sense_size = SCSI_CDB_DEFAULT_SIZE, SCSI_SENSE_DEFAULT_SIZE
        self.pci.driver_ok()
        if self.has(SCSI_F_HOTPLUG):
            for _ in range(self.event_buffers):
                self._post_event_buffer()
            if self.pci.queues[SCSI_EVENTQ].kick_prepare():
                self.pci.kick(self.pci.queues[SCSI_EVENTQ])
        return True

    # -- request queues -----------------------------------------------------------------------------------------
    def raw(self, header: bytes, data_out: Sequence[bytes] = (), data_in_len: int | Sequence[int] = 0, *,
            resp_len: int | None = None, queue: int = 0) -> Generator[Any, Any, ScsiOutcome]:
        """Any command: `header` as given (need not be 51 bytes), the readable data buffers, then a writable
        response buffer of `resp_len` bytes (default 12 + sense_size; 0 leaves it out) and writable data-in
        buffers. The response is parsed from the first writable bytes, as the driver reads them."""
        resp_len = SCSI_CMD_RESP_SIZE + self.sense_size if resp_len is None else resp_len
        in_lens = [data_in_len] if isinstance(data_in_len, int) else list(data_in_len)
        in_lens = ([resp_len] if resp_len else []) + [n for n in in_lens if n]
        out = yield from self.pci.submit(SCSI_REQUESTQ + queue, [header, *[d for d in data_out if d]], in_lens)
        return self._outcome(out, resp_len)

    def command(self, lun: int, cdb: bytes, data_out: bytes = b"", data_in_len: int = 0, *,
                queue: int = 0) -> Generator[Any, Any, ScsiOutcome]:
        """virtscsi_queuecommand: one CDB to `lun` of the driver's target."""
        self._tag += 1
        header = command_header(self.target, lun, cdb, self._tag, self.cdb_size)
        return (yield from self.raw(header, [data_out], data_in_len, queue=queue))

    def _outcome(self, out: ChainOutcome, resp_len: int) -> ScsiOutcome:
        if not out.completed:
            return ScsiOutcome(None, None, b"", b"", 0, None, out.broken, out.timed_out, out.time)
        resp = out.data_in[:resp_len].ljust(SCSI_CMD_RESP_SIZE, b"\0")
        sense_len, resid, _qualifier, status, response = SCSI_CMD_RESP_FAST.unpack_from(resp)
        sense = resp[SCSI_CMD_RESP_SIZE:SCSI_CMD_RESP_SIZE + min(sense_len, self.sense_size)]
        return ScsiOutcome(response, status, sense, out.data_in[resp_len:], resid, out.used_len, False, False,
                           out.time)

    # -- control queue ------------------------------------------------------------------------------------------
    def tmf(self, subtype: int, lun: int, tag: int = 0) -> Generator[Any, Any, int | None]:
        """virtscsi_tmf: a task management function for `lun` (and task `tag`); its response byte, or None when
        the request never completed."""
        request = SCSI_TMF_REQ_FAST.pack(SCSI_T_TMF, subtype, lun_field(self.target, lun), tag)
        out = yield from self.pci.submit(SCSI_CONTROLQ, [request], [SCSI_TMF_RESP_SIZE])
        return out.data_in[0] if out.completed else None

    def an(self, type_: int, lun: int, event_requested: int) -> Generator[Any, Any, tuple[int, int] | None]:
        """An asynchronous-notification query or subscription: (event_actual, response), or None."""
        request = SCSI_AN_REQ_FAST.pack(type_, lun_field(self.target, lun), event_requested)
        out = yield from self.pci.submit(SCSI_CONTROLQ, [request], [SCSI_AN_RESP_SIZE])
        return SCSI_AN_RESP_FAST.unpack(out.data_in) if out.completed else None

    # -- event queue --------------------------------------------------------------------------------------------
    def _post_event_buffer(self) -> None:
        """virtscsi_kick_event: one 16-byte writable buffer (the kick is the caller's)."""
        self.pci.queues[SCSI_EVENTQ].add([], [SCSI_EVENT_SIZE])

    def events(self) -> list[ScsiEvent]:
        """virtscsi_complete_event for every returned event buffer (after reading the ISR, as vp_interrupt does),
        each buffer posted again."""
        if self.pci.irq.level:
            self.pci.transport.mmio_read(PCI_ISR_OFFSET, 1)
        queue = self.pci.queues[SCSI_EVENTQ]
        out = []
        for head, _length in queue.get_used():
            raw = queue.detach(head)
            out.append(ScsiEvent(*SCSI_EVENT_FAST.unpack(raw[:SCSI_EVENT_SIZE])))
            self._post_event_buffer()
        if out and queue.kick_prepare():
            self.pci.kick(queue)
        return out
