"""A virtio-pci modern function as QEMU builds one (hw/virtio/virtio-pci.c, hw/virtio/virtio.c), as register accesses.

One memory BAR with QEMU's layout (virtio_pci_realize / virtio_pci_modern_regions_init): the common configuration
structure at 0x0000, the ISR byte at 0x1000, the device configuration at 0x2000 and the notification area at
0x3000 with notify_off_multiplier 4, queue n's doorbell at 0x3000 + 4 n. The PCI capability list that points at
these regions is not modelled: a guest-driver model knows the offsets, as Linux learns them from the capabilities.

The device behind the transport is anything with the small `VirtioDevice` interface (virtio-blk, virtio-scsi): its
id, the features it offers, its queue sizes, its configuration bytes, and `handle(queue, element)`.
The transport owns feature negotiation, the status machine, the queues, notifications and the interrupt.

Interrupts are INTx (no MSI-X vectors: QEMU without vectors stores VIRTIO_MSI_NO_VECTOR on every vector write):
the line is raised while the ISR is non-zero and lowered when the guest reads the ISR, which clears it
(virtio_pci_isr_read). QEMU's virtio_pci_notify drives the line from ISR bit 0; a configuration change sets ISR to
0x3 there, so "ISR non-zero" is the same level, and also right for the spec's 0x2.

A driver mistake the device cannot recover from (`VirtioError`: a malformed ring, a malformed request) marks the
device broken as QEMU's virtio_error does: NEEDS_RESET in the status (with VERSION_1 negotiated) and a
configuration interrupt (when DRIVER_OK), and no queue is processed again until the driver resets the device.

Timing: without a `timing` model each kick is processed inside the notify write. With one, the device pops and
executes every available request at once (so the image changes in submission order), and the transport's
`DeviceClock` delivers each request's used element and interrupt once the cost of its block-layer requests has
passed, requests overlapping as a multi-queue SSD's would; a reset drops completions still pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from controllers.virtio.layouts import (
    COMMON_CFG_FIELDS,
    F_EVENT_IDX,
    F_RING_RESET,
    F_VERSION_1,
    PCI_COMMON_CFG_OFFSET,
    PCI_DEVICE_CFG_OFFSET,
    PCI_ISR_CONFIG,
    PCI_ISR_OFFSET,
    PCI_ISR_QUEUE,
    PCI_NOTIFY_OFF_MULTIPLIER,
    PCI_NOTIFY_OFFSET,
    PCI_REGION_SIZE,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
    VIRTIO_MSI_NO_VECTOR,
    VIRTQUEUE_MAX_SIZE,
    bit,
)
from controllers.virtio.virtqueue import Element, SplitQueue, VirtioError
from emu.sim import DeviceClock

if TYPE_CHECKING:
    from emu.block import Completion
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, LatencyModel, Simulation

VIRTIO_QUEUE_MAX = 1024             # QEMU: queue_select accepts indices below this


class Handled(NamedTuple):
    """What a device did with one element: bytes it wrote into the writable buffers (the used length) and the
    block-layer completions it caused (their cost times the completion)."""

    written: int
    completions: tuple[Completion, ...] = ()


class VirtioDevice(Protocol):
    """What a virtio device model gives the transport. `handle` may raise VirtioError for a request it cannot
    even frame (the device then breaks); any protocol status it writes itself. `handle` returning None keeps the
    element (virtio-scsi's event buffers): such a device also defines `bind(transport)`, called once by the
    transport, and later hands the element back with `transport.complete(...)` or breaks with `transport.fail(...)`.
    `write_config` may raise VirtioError too (QEMU virtio_scsi_set_config)."""

    device_id: int
    queue_sizes: tuple[int, ...]    # the largest size of each queue; their number is the queue count

    def offered_features(self) -> int: ...

    def read_config(self) -> bytes: ...

    def write_config(self, offset: int, data: bytes) -> None: ...

    def activate(self, features: int) -> None: ...

    def reset(self) -> None: ...

    def handle(self, queue: int, element: Element) -> Handled | None: ...


@dataclass(frozen=True)
class VirtioPciConfig:
    """Transport behaviours where QEMU and the virtio 1.2 spec differ (profiles pick the values).

    features_check: "spec" refuses FEATURES_OK when the driver accepted a feature that was not offered or did not
        accept VERSION_1 (3.1.1, 6.1: the device may refuse a driver without VERSION_1); "qemu" drops the unoffered
        bits (virtio_set_features_nocheck) and accepts FEATURES_OK either way.
    config_isr: ISR value a configuration change sets: 0x3 in QEMU (virtio_notify_config), 0x2 in the spec (4.1.4.5).
    notify_off_multiplier: the notify capability's queue doorbell spacing (4.1.4.4): QEMU's 4, or a page (0x1000)
        with page-per-vq, which machine types up to 2.7 turn on; the notification area holds VIRTIO_QUEUE_MAX of them.
    ring_reset: whether VIRTIO_F_RING_RESET is offered. The queue_reset register works either way, as QEMU's does
        (virtio_pci_common_write checks no feature).
    """

    features_check: Literal["spec", "qemu"] = "spec"
    config_isr: int = PCI_ISR_CONFIG
    notify_off_multiplier: int = PCI_NOTIFY_OFF_MULTIPLIER
    ring_reset: bool = False

    def __post_init__(self) -> None:
        if self.features_check not in ("spec", "qemu"):
            raise ValueError(f"features_check {self.features_check!r} is neither 'spec' nor 'qemu'")
        if self.config_isr not in (PCI_ISR_CONFIG, PCI_ISR_CONFIG | PCI_ISR_QUEUE):
            raise ValueError(f"config_isr {self.config_isr:#x} is neither 0x2 nor 0x3")
        if self.notify_off_multiplier not in (PCI_NOTIFY_OFF_MULTIPLIER, PCI_REGION_SIZE):
            raise ValueError(f"notify_off_multiplier {self.notify_off_multiplier:#x} is neither 4 nor 0x1000")


@dataclass
class _QueueRegs:
    """The per-queue registers of the common configuration (proxy->vqs[n] in QEMU)."""

    max_size: int
    size: int
    enabled: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0
    ring: SplitQueue | None = None


@dataclass
class RequestRecord:
    """One element's passage through the transport, for timelines and tests (simulated seconds)."""

    queue: int
    head: int
    issue_time: float
    done_time: float | None = None
    written: int = 0
    notified: bool = False
    requests: tuple = ()            # the block-layer Requests the element caused, in order


@dataclass
class _State:
    status: int = 0
    device_feature_select: int = 0
    driver_feature_select: int = 0
    driver_words: list[int] = field(default_factory=lambda: [0, 0])
    features: int = 0               # negotiated
    queue_select: int = 0
    isr: int = 0
    generation: int = 0             # config_generation
    broken: bool = False
    reason: str | None = None       # the VirtioError that broke the device


class VirtioPciTransport:
    """One virtio-pci modern function in front of `device`; its BAR is `mmio_read` / `mmio_write`."""

    def __init__(self, sim: Simulation, mem: GuestMemory, irq: InterruptLine, device: VirtioDevice, *,
                 timing: LatencyModel | None = None, config: VirtioPciConfig | None = None) -> None:
        if not device.queue_sizes or any(not 0 < s <= VIRTQUEUE_MAX_SIZE for s in device.queue_sizes):
            raise ValueError(f"queue sizes {device.queue_sizes} must be 1..{VIRTQUEUE_MAX_SIZE}, at least one")
        self.sim = sim
        self.mem = mem
        self.irq = irq
        self.device = device
        self.clock = DeviceClock(sim, timing)
        self.config = config or VirtioPciConfig()
        self.records: list[RequestRecord] = []
        self._reset_state()
        bind = getattr(device, "bind", None)
        if bind is not None:
            bind(self)

    def _reset_state(self) -> None:
        self.state = _State()
        self.queues = [_QueueRegs(max_size=s, size=s) for s in self.device.queue_sizes]

    # -- public views ------------------------------------------------------------------------------------------
    @property
    def status(self) -> int:
        return self.state.status

    @property
    def features(self) -> int:
        """The negotiated feature bits."""
        return self.state.features

    @property
    def broken(self) -> bool:
        return self.state.broken

    @property
    def broken_reason(self) -> str | None:
        return self.state.reason

    def offered(self) -> int:
        """Device features plus VERSION_1 (a modern-only function always offers it, virtio_pci_device_plugged) and
        RING_RESET where the profile says so."""
        return self.device.offered_features() | bit(F_VERSION_1) | (bit(F_RING_RESET) if self.config.ring_reset else 0)

    # -- BAR accesses --------------------------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int = 4) -> int:
        """A 1/2/4/8-byte read; QEMU's regions take at most 4 bytes, so 8 is two 4-byte reads (low first)."""
        if size == 8:
            return self.mmio_read(offset, 4) | self.mmio_read(offset + 4, 4) << 32
        if size not in (1, 2, 4):
            raise ValueError(f"MMIO read size {size} is not 1, 2, 4 or 8")
        region, addr = divmod(offset, PCI_REGION_SIZE)
        mask = (1 << (8 * size)) - 1
        if region == PCI_COMMON_CFG_OFFSET // PCI_REGION_SIZE:
            return self._common_read(addr) & mask
        if region == PCI_ISR_OFFSET // PCI_REGION_SIZE:
            return self._isr_read() & mask
        if region == PCI_DEVICE_CFG_OFFSET // PCI_REGION_SIZE:
            return self._config_read(addr, size)
        return 0                                        # notify reads 0; outside the BAR: nothing decodes it

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        """A 1/2/4/8-byte write (8 = two 4-byte writes, low first)."""
        if size == 8:
            self.mmio_write(offset, value & 0xFFFFFFFF, 4)
            self.mmio_write(offset + 4, value >> 32 & 0xFFFFFFFF, 4)
            return
        if size not in (1, 2, 4):
            raise ValueError(f"MMIO write size {size} is not 1, 2, 4 or 8")
        value &= (1 << (8 * size)) - 1
        region, addr = divmod(offset, PCI_REGION_SIZE)
        if region == PCI_COMMON_CFG_OFFSET // PCI_REGION_SIZE:
            self._common_write(addr, value)
        elif region == PCI_DEVICE_CFG_OFFSET // PCI_REGION_SIZE:
            self._config_write(addr, value, size)
        elif 0 <= offset - PCI_NOTIFY_OFFSET < self.config.notify_off_multiplier * VIRTIO_QUEUE_MAX:
            self.notify((offset - PCI_NOTIFY_OFFSET) // self.config.notify_off_multiplier)
        # ISR writes are ignored (virtio_pci_isr_write)

    # -- common configuration (virtio_pci_common_read / _write) ---------------------------------------------------
    def _queue(self) -> _QueueRegs | None:
        sel = self.state.queue_select
        return self.queues[sel] if sel < len(self.queues) else None

    def _common_read(self, addr: int) -> int:
        st, q = self.state, self._queue()
        name = _COMMON_BY_OFFSET.get(addr)
        if name == "device_feature_select":
            return st.device_feature_select
        if name == "device_feature":
            return self.offered() >> (32 * st.device_feature_select) & 0xFFFFFFFF \
                if st.device_feature_select <= 1 else 0
        if name == "driver_feature_select":
            return st.driver_feature_select
        if name == "driver_feature":
            return st.driver_words[st.driver_feature_select] if st.driver_feature_select <= 1 else 0
        if name in ("config_msix_vector", "queue_msix_vector"):
            return VIRTIO_MSI_NO_VECTOR
        if name == "num_queues":
            return len(self.queues)
        if name == "device_status":
            return st.status
        if name == "config_generation":
            return st.generation & 0xFF
        if name == "queue_select":
            return st.queue_select
        if name == "queue_notify_off":
            return st.queue_select                      # "Simply map queues in order"
        if q is None:
            return 0                                    # a queue that does not exist reads as size 0
        if name == "queue_size":
            return q.size
        if name == "queue_enable":
            return int(q.enabled)
        for reg in ("desc", "driver", "device"):
            lo = COMMON_CFG_FIELDS[f"queue_{reg}"][0]
            if addr in (lo, lo + 4):
                return getattr(q, reg) >> (32 if addr == lo + 4 else 0) & 0xFFFFFFFF
        return 0

    def _common_write(self, addr: int, value: int) -> None:
        st, q = self.state, self._queue()
        name = _COMMON_BY_OFFSET.get(addr)
        if name == "device_feature_select":
            st.device_feature_select = value
        elif name == "driver_feature_select":
            st.driver_feature_select = value
        elif name == "driver_feature":
            if st.driver_feature_select <= 1:
                st.driver_words[st.driver_feature_select] = value
                if not st.status & STATUS_FEATURES_OK:  # virtio_set_features: -EINVAL after FEATURES_OK
                    accepted = st.driver_words[1] << 32 | st.driver_words[0]
                    if self.config.features_check == "qemu":
                        accepted &= self.offered()
                    st.features = accepted
        elif name == "device_status":
            self._set_status(value & 0xFF)
        elif name == "queue_select":
            if value < VIRTIO_QUEUE_MAX:
                st.queue_select = value
        elif q is None:
            return                                      # registers of a queue that does not exist
        elif name == "queue_size":
            if 0 < value <= VIRTQUEUE_MAX_SIZE:         # virtio_queue_set_num: never 0, never above the maximum
                q.size = value
        elif name == "queue_enable":
            if value != 1:
                self._break(f"wrong value for queue_enable {value:#x}")
            else:
                self._enable(q)
        elif name == "queue_reset":
            if value == 1:                              # virtio_queue_reset: disabled, size back to the maximum;
                q.enabled, q.ring, q.size = False, None, q.max_size     # the ring addresses stay (proxy->vqs)
        else:
            for reg in ("desc", "driver", "device"):
                lo = COMMON_CFG_FIELDS[f"queue_{reg}"][0]
                if addr == lo:
                    setattr(q, reg, getattr(q, reg) & ~0xFFFFFFFF | value)
                elif addr == lo + 4:
                    setattr(q, reg, getattr(q, reg) & 0xFFFFFFFF | value << 32)

    def _enable(self, q: _QueueRegs) -> None:
        """queue_enable = 1: the rings are mapped now (virtio_queue_set_rings, virtio_init_region_cache)."""
        q.enabled = True
        try:
            q.ring = SplitQueue(self.mem, q.size, q.desc, q.driver, q.device,
                                event_idx=bool(self.state.features & bit(F_EVENT_IDX)))
        except VirtioError as exc:
            q.ring = None
            self._break(str(exc))

    # -- device status (virtio_set_status, virtio_reset) ------------------------------------------------------------
    def _set_status(self, value: int) -> None:
        st = self.state
        if value == 0:
            self.reset()
            return
        if value & STATUS_FEATURES_OK and not st.status & STATUS_FEATURES_OK and not self._features_acceptable():
            return                                      # FEATURES_OK refused: the write is dropped
        if value & STATUS_DRIVER_OK and not st.status & STATUS_DRIVER_OK:
            self.device.activate(st.features)
        st.status = value

    def _features_acceptable(self) -> bool:
        if self.config.features_check == "qemu":
            return True
        accepted = self.state.features
        return not accepted & ~self.offered() and bool(accepted & bit(F_VERSION_1))

    def reset(self) -> None:
        """Writing 0 to device_status (and power-on): status, features, ISR and every queue back to their reset
        values, the device reset, pending completions dropped, the interrupt line lowered."""
        self.clock.reset()
        self.device.reset()
        generation = self.state.generation
        self._reset_state()
        self.state.generation = generation
        self.irq.lower()

    # -- ISR and interrupts -------------------------------------------------------------------------------------------
    def _isr_read(self) -> int:
        value, self.state.isr = self.state.isr, 0
        self.irq.lower()
        return value

    def _raise(self, bits: int) -> None:
        self.state.isr |= bits
        self.irq.raise_()

    def notify_config(self) -> None:
        """virtio_notify_config: only once DRIVER_OK; bumps config_generation and interrupts."""
        if not self.state.status & STATUS_DRIVER_OK:
            return
        self.state.generation += 1
        self._raise(self.config.config_isr)

    def _break(self, reason: str) -> None:
        """virtio_error: NEEDS_RESET (with VERSION_1) and a configuration interrupt; the device stops."""
        st = self.state
        if st.broken:
            return
        st.broken, st.reason = True, reason
        if st.features & bit(F_VERSION_1):
            st.status |= STATUS_NEEDS_RESET
            self.notify_config()

    # -- device configuration (virtio_config_modern_read* / write*) -----------------------------------------------
    def _config_read(self, addr: int, size: int) -> int:
        data = self.device.read_config()
        if addr + size > len(data):
            return (1 << (8 * size)) - 1                # beyond config_len: all ones
        return int.from_bytes(data[addr:addr + size], "little")

    def _config_write(self, addr: int, value: int, size: int) -> None:
        if addr + size <= len(self.device.read_config()):
            try:
                self.device.write_config(addr, value.to_bytes(size, "little"))
            except VirtioError as exc:
                self._break(str(exc))

    # -- queue notification -------------------------------------------------------------------------------------------
    def notify(self, index: int) -> None:
        """virtio_queue_notify: a kick of a queue that does not exist or is not enabled, or of a broken device, does
        nothing; otherwise every available element is handled."""
        if index >= len(self.queues) or self.state.broken:
            return
        ring = self.queues[index].ring
        if ring is None:
            return
        try:
            while (element := ring.pop()) is not None:
                self._dispatch(index, ring, element)
                if self.state.broken:
                    return
            ring.enable_notification()
        except VirtioError as exc:
            self._break(str(exc))

    def _dispatch(self, index: int, ring: SplitQueue, element: Element) -> None:
        record = RequestRecord(index, element.index, self.sim.now)
        self.records.append(record)
        try:
            handled = self.device.handle(index, element)
        except VirtioError as exc:
            ring.detach()
            self._break(str(exc))
            return
        if handled is None:
            return                                      # the device keeps the element (bind / complete)
        record.written = handled.written
        record.requests = tuple(c.request for c in handled.completions)
        if not self.clock.timed:
            if not self.state.broken:
                self._push(ring, element, handled.written, record)
            return
        self.clock.later(self.clock.cost(handled.completions), self._used, ring, element, handled.written, record)

    def _used(self, ring: SplitQueue, element: Element, written: int, record: RequestRecord) -> None:
        """A handled element's completion once its time has passed: pushed unless the device broke meanwhile."""
        if not self.state.broken:
            self._push(ring, element, written, record)

    def _push(self, ring: SplitQueue, element: Element, written: int, record: RequestRecord) -> None:
        """virtqueue_push and virtio_notify."""
        ring.push(element, written)
        record.done_time = self.sim.now
        if ring.should_notify():
            record.notified = True
            self._raise(PCI_ISR_QUEUE)

    def complete(self, index: int, element: Element, written: int) -> None:
        """Hand back an element the device kept (its `handle` returned None), now; nothing once broken."""
        ring = self.queues[index].ring
        if self.state.broken or ring is None:
            return
        record = RequestRecord(index, element.index, self.sim.now, written=written)
        self.records.append(record)
        self._push(ring, element, written, record)

    def fail(self, reason: str) -> None:
        """virtio_error raised by the device outside `handle` (on an element it kept)."""
        self._break(reason)


_COMMON_BY_OFFSET = {offset: name for name, (offset, _size) in COMMON_CFG_FIELDS.items()}
