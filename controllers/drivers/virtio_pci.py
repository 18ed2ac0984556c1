"""A guest virtio-pci modern driver modelled on Linux (drivers/virtio/virtio.c virtio_dev_probe,
virtio_pci_modern.c / virtio_pci_modern_dev.c, virtio_ring.c split rings).

It only touches what a guest touches: the function's BAR (through `transport.mmio_read/mmio_write`) and guest RAM,
where it lays out descriptor tables, available and used rings, indirect tables and buffers byte for byte with its
own allocator. Methods that wait are SimPy generators: run them with ``sim.process(...)``.

`submit()` puts one chain of buffers on a queue (indirect when negotiated and the chain has more than one buffer,
as virtqueue_add_split does), kicks when virtqueue_kick_prepare says so, and waits for the used element, reading
the ISR on each interrupt as vp_interrupt does. `raw_chain()` posts descriptors exactly as given, for tests and
replay scripts that want to hand the device a malformed ring.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controllers.virtio.layouts import (
    AVAIL_ALIGN,
    AVAIL_IDX,
    AVAIL_RING,
    DESC_ALIGN,
    DESC_FAST,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    PCI_DEVICE_CFG_OFFSET,
    PCI_ISR_OFFSET,
    PCI_NOTIFY_OFF_MULTIPLIER,
    PCI_NOTIFY_OFFSET,
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FAILED,
    STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
    USED_ALIGN,
    USED_ELEM_FAST,
    USED_IDX,
    USED_RING,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_DESC_SIZE,
    VIRTQ_USED_F_NO_NOTIFY,
    avail_event_offset,
    avail_ring_size,
    bit,
    common_cfg_offset,
    used_event_offset,
    used_ring_size,
    vring_need_event,
)
from emu.errors import DriverError

if TYPE_CHECKING:
    from controllers.virtio.pci import VirtioPciTransport
    from emu.memory import GuestMemory
    from emu.sim import InterruptLine, Simulation


class VirtioDriverError(DriverError):
    """The driver cannot bring the device up (no queue, a refused feature set) or was misused."""


@dataclass
class ChainOutcome:
    """What one chain ended with, as the guest sees it.

    completed: a used element for the chain arrived. used_len: its `len`. data_in: the writable buffers' bytes as
    the device left them (in chain order, concatenated). broken: the device reported NEEDS_RESET before the chain
    completed. timed_out: the command timer ran out first. isr: every ISR bit read while waiting. time: when the
    element was collected (or the wait ended).
    """

    completed: bool
    used_len: int | None
    data_in: bytes
    broken: bool
    timed_out: bool
    isr: int
    time: float


@dataclass(slots=True)
class _Pending:
    """A posted chain: its descriptors and the one guest block holding its indirect table and buffers."""

    head: int
    descs: list[int]
    block: int | None                   # None for raw_chain (the caller's own addresses)
    in_addr: int = 0                    # the writable buffers lie back to back from here
    in_bytes: int = 0


class Virtqueue:
    """The driver side of one split queue (Linux struct vring_virtqueue, split layout)."""

    def __init__(self, mem: GuestMemory, index: int, size: int, *, event_idx: bool, indirect: bool) -> None:
        self.mem = mem
        self.index = index
        self.size = size
        self.event_idx = event_idx
        self.indirect = indirect
        self.desc = mem.alloc(size * VIRTQ_DESC_SIZE, DESC_ALIGN)
        self.avail = mem.alloc(avail_ring_size(size), AVAIL_ALIGN)
        self.used = mem.alloc(used_ring_size(size), USED_ALIGN)
        for addr, n in ((self.desc, size * VIRTQ_DESC_SIZE), (self.avail, avail_ring_size(size)),
                        (self.used, used_ring_size(size))):
            mem.fill(addr, n, 0)
        self.notify_addr = 0            # the doorbell's BAR offset, set by setup_queues
        self.free: deque[int] = deque(range(size))
        self.avail_idx = 0          # split.avail_idx_shadow
        self.num_added = 0
        self.last_used_idx = 0
        self.pending: dict[int, _Pending] = {}

    def close(self) -> None:
        """Give the rings and every buffer still posted back to the allocator."""
        for pending in self.pending.values():
            if pending.block is not None:
                self.mem.free(pending.block)
        self.pending.clear()
        for addr in (self.desc, self.avail, self.used):
            self.mem.free(addr)

    def add(self, out: Sequence[bytes], in_lens: Sequence[int]) -> int:
        """virtqueue_add_split: buffers for `out` (device-readable) then `in_lens` (device-writable, zeroed); an
        indirect table when negotiated, the chain has more than one buffer and a descriptor is free.

        One guest allocation holds the indirect table and every buffer, the writable ones back to back (Linux
        keeps a request's header and status in its preallocated pdu and maps the bio's pages; one block per
        request costs the model one allocation instead of one per piece, and the device sees the same chain)."""
        mem = self.mem
        count = len(out) + len(in_lens)
        if not count:
            raise VirtioDriverError("a chain needs at least one buffer")
        indirect = self.indirect and count > 1 and bool(self.free)
        if not indirect and count > len(self.free):
            raise VirtioDriverError(f"queue {self.index}: {count} descriptors, {len(self.free)} free")
        table_bytes = count * VIRTQ_DESC_SIZE if indirect else 0
        in_bytes = sum(in_lens)
        block = mem.alloc(max(table_bytes + sum(map(len, out)) + in_bytes, 1), DESC_ALIGN)
        entries, pos = [], block + table_bytes
        for data in out:
            mem.write(pos, data)
            entries.append((pos, len(data), 0))
            pos += len(data)
        in_addr = pos
        if in_bytes:
            mem.fill(in_addr, in_bytes, 0)
        for length in in_lens:
            entries.append((pos, length, VIRTQ_DESC_F_WRITE))
            pos += length
        if indirect:
            self._write_chain(block, range(count), entries)
            head = self.free.popleft()
            mem.pack(DESC_FAST, self.desc + head * VIRTQ_DESC_SIZE, block, table_bytes, VIRTQ_DESC_F_INDIRECT, 0)
            descs = [head]
        else:
            descs = [self.free.popleft() for _ in entries]
            self._write_chain(self.desc, descs, entries)
            head = descs[0]
        self.pending[head] = _Pending(head, descs, block, in_addr, in_bytes)
        self.publish(head)
        return head

    def _write_chain(self, table: int, slots: Sequence[int], entries: list[tuple[int, int, int]]) -> None:
        """Descriptor i of the chain for `entries[i]` in slot `slots[i]` of `table`, linked to slot `slots[i + 1]`."""
        mem, last = self.mem, len(entries) - 1
        for i, (addr, length, flags) in enumerate(entries):
            more = i < last
            mem.pack(DESC_FAST, table + slots[i] * VIRTQ_DESC_SIZE, addr, length,
                     flags | VIRTQ_DESC_F_NEXT if more else flags, slots[i + 1] if more else 0)

    def publish(self, head: int) -> None:
        """Put `head` in the available ring and advance the index (the device sees it at the next kick)."""
        self.mem.write_u16(self.avail + AVAIL_RING + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write_u16(self.avail + AVAIL_IDX, self.avail_idx)
        self.num_added += 1

    def kick_prepare(self) -> bool:
        """virtqueue_kick_prepare_split: avail_event with EVENT_IDX, else the used ring's NO_NOTIFY flag."""
        new, old = self.avail_idx, (self.avail_idx - self.num_added) & 0xFFFF
        self.num_added = 0
        if self.event_idx:
            return vring_need_event(self.mem.read_u16(self.used + avail_event_offset(self.size)), new, old)
        return not self.mem.read_u16(self.used) & VIRTQ_USED_F_NO_NOTIFY

    def get_used(self) -> list[tuple[int, int]]:
        """virtqueue_get_buf_ctx_split until empty: (head, len) of each new used element; then, with EVENT_IDX,
        used_event = last_used_idx (virtqueue_enable_cb_prepare) so the next completion interrupts."""
        out = []
        used_idx = self.mem.read_u16(self.used + USED_IDX)
        while self.last_used_idx != used_idx:
            slot = self.used + USED_RING + (self.last_used_idx % self.size) * USED_ELEM_FAST.size
            out.append(self.mem.unpack(USED_ELEM_FAST, slot))
            self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        if self.event_idx:
            self.mem.write_u16(self.avail + used_event_offset(self.size), self.last_used_idx)
        return out

    def detach(self, head: int) -> bytes:
        """detach_buf_split: the chain's descriptors go back on the free list; returns its writable bytes."""
        pending = self.pending.pop(head)
        data = self.mem.read(pending.in_addr, pending.in_bytes) if pending.in_bytes else b""
        if pending.block is not None:
            self.mem.free(pending.block)
        self.free.extendleft(reversed(pending.descs))
        return data


class VirtioPciDriver:
    """Linux's virtio core + virtio_pci_modern over one function. `probe()` negotiates, `setup_queues()` lays
    out the rings, `driver_ok()` starts the device; `submit()` runs one chain. `timeout`: simulated seconds before
    a request counts as lost (the timer of the device driver's queue, a guest profile's fact). `notify_multiplier`
    is the notify capability's notify_off_multiplier, which Linux reads from PCI configuration space (vp_modern_probe)
    and whoever found the function hands in."""

    def __init__(self, sim: Simulation, mem: GuestMemory, transport: VirtioPciTransport, irq: InterruptLine, *,
                 timeout: float, notify_multiplier: int = PCI_NOTIFY_OFF_MULTIPLIER) -> None:
        self.sim = sim
        self.mem = mem
        self.transport = transport
        self.irq = irq
        self.timeout = timeout
        self.notify_multiplier = notify_multiplier
        self.offered = 0
        self.features = 0
        self.queues: list[Virtqueue] = []

    # -- registers -----------------------------------------------------------------------------------------------
    def rd(self, name: str, size: int) -> int:
        return self.transport.mmio_read(common_cfg_offset(name), size)

    def wr(self, name: str, value: int, size: int) -> None:
        self.transport.mmio_write(common_cfg_offset(name), value, size)

    @property
    def status(self) -> int:
        return self.rd("device_status", 1)

    def add_status(self, bits: int) -> None:
        """virtio_add_status: read, OR, write back."""
        self.wr("device_status", self.status | bits, 1)

    def config_read(self, offset: int, size: int) -> int:
        """A device-configuration field (vp_modern get: plain MMIO reads of the device region)."""
        return self.transport.mmio_read(PCI_DEVICE_CFG_OFFSET + offset, size)

    def config_write(self, offset: int, value: int, size: int) -> None:
        self.transport.mmio_write(PCI_DEVICE_CFG_OFFSET + offset, value, size)

    # -- bring-up -----------------------------------------------------------------------------------------------------
    def reset(self) -> Generator[Any, Any, None]:
        """vp_reset: write 0, then poll until the status reads 0 (the device may take its time)."""
        self.wr("device_status", 0, 1)
        while self.status:
            yield self.sim.timeout(0.001)
        for queue in self.queues:
            queue.close()
        self.queues = []

    def probe(self, supported: int, accept: int | None = None) -> Generator[Any, Any, bool]:
        """virtio_dev_probe up to FEATURES_OK: reset, ACKNOWLEDGE, DRIVER, read the 64 feature bits, write the
        accepted ones (`accept` as given, else offered & supported), set FEATURES_OK and read it back; a device
        that clears it gets FAILED and False."""
        yield from self.reset()
        self.add_status(STATUS_ACKNOWLEDGE)
        self.add_status(STATUS_DRIVER)
        self.offered = 0
        for word in (0, 1):
            self.wr("device_feature_select", word, 4)
            self.offered |= self.rd("device_feature", 4) << (32 * word)
        self.features = self.offered & supported if accept is None else accept
        for word in (0, 1):
            self.wr("driver_feature_select", word, 4)
            self.wr("driver_feature", self.features >> (32 * word) & 0xFFFFFFFF, 4)
        self.add_status(STATUS_FEATURES_OK)
        if not self.status & STATUS_FEATURES_OK:
            self.add_status(STATUS_FAILED)
            return False
        return True

    def setup_queues(self, count: int) -> None:
        """vp_modern_find_vqs: for each queue, read its size, lay out the rings, program their addresses, enable."""
        if count > self.rd("num_queues", 2):
            raise VirtioDriverError(f"{count} queues wanted, the device has {self.rd('num_queues', 2)}")
        for index in range(count):
            self.wr("queue_select", index, 2)
            size = self.rd("queue_size", 2)
            if not size or self.rd("queue_enable", 2):
                raise VirtioDriverError(f"queue {index} is unavailable (size {size})")
            queue = Virtqueue(self.mem, index, size, event_idx=bool(self.features & bit(F_EVENT_IDX)),
                              indirect=bool(self.features & bit(F_INDIRECT_DESC)))
            self.wr("queue_size", size, 2)
            self.wr("queue_desc", queue.desc, 8)
            self.wr("queue_driver", queue.avail, 8)
            self.wr("queue_device", queue.used, 8)
            # vp_modern_map_vq_notify: the doorbell is found once, from queue_notify_off
            queue.notify_addr = PCI_NOTIFY_OFFSET + self.rd("queue_notify_off", 2) * self.notify_multiplier
            self.wr("queue_enable", 1, 2)
            self.queues.append(queue)

    def driver_ok(self) -> None:
        self.add_status(STATUS_DRIVER_OK)

    # -- requests -----------------------------------------------------------------------------------------------------
    def kick(self, queue: Virtqueue) -> None:
        """vp_notify: the queue index written to the doorbell address mapped at setup."""
        self.transport.mmio_write(queue.notify_addr, queue.index, 2)

    def submit(self, queue_index: int, out: Sequence[bytes], in_lens: Sequence[int]) -> Generator[Any, Any,
                                                                                                  ChainOutcome]:
        """One chain: add, kick if needed, wait for its used element."""
        outcomes = yield from self.submit_batch(queue_index, [(out, in_lens)])
        return outcomes[0]

    def submit_batch(self, queue_index: int, chains: Sequence[tuple[Sequence[bytes], Sequence[int]]]
                     ) -> Generator[Any, Any, list[ChainOutcome]]:
        """Several chains added together and published with one kick (a blk-mq batch ending in commit_rqs);
        the outcomes in the same order."""
        queue = self.queues[queue_index]
        heads = [queue.add(out, in_lens) for out, in_lens in chains]
        if queue.kick_prepare():
            self.kick(queue)
        return (yield from self._wait(queue, heads))

    def raw_chain(self, queue_index: int, descriptors: Sequence[tuple[int, int, int, int]],
                  head: int = 0) -> Generator[Any, Any, ChainOutcome]:
        """Descriptors (addr, len, flags, next) written verbatim into table slots 0.., `head` published, a kick;
        no buffers are allocated and the queue must be idle. The used length is reported; data_in is empty."""
        queue = self.queues[queue_index]
        if queue.pending or len(descriptors) > queue.size:
            raise VirtioDriverError("raw_chain needs an idle queue and at most queue-size descriptors")
        for i, (addr, length, flags, nxt) in enumerate(descriptors):
            self.mem.pack(DESC_FAST, queue.desc + i * VIRTQ_DESC_SIZE, addr & (2**64 - 1), length & 0xFFFFFFFF,
                          flags & 0xFFFF, nxt & 0xFFFF)
        head &= 0xFFFF
        queue.pending[head] = _Pending(head, [], None)
        queue.publish(head)
        queue.num_added = 0
        self.kick(queue)
        outcomes = yield from self._wait(queue, [head])
        queue.pending.pop(head, None)
        return outcomes[0]

    def _wait(self, queue: Virtqueue, heads: list[int]) -> Generator[Any, Any, list[ChainOutcome]]:
        """Collect used elements (answering interrupts by reading the ISR) until every head is back, the device
        reports NEEDS_RESET, or the timeout passes."""
        isr, deadline = 0, self.sim.now + self.timeout
        done: dict[int, tuple[int, bytes, float]] = {}
        broken = timed_out = False
        while True:
            if self.irq.level:
                isr |= self._interrupt()
            for used_head, length in queue.get_used():
                if used_head in queue.pending:
                    done[used_head] = (length, queue.detach(used_head), self.sim.now)
            if all(h in done for h in heads):
                break
            if self.status & STATUS_NEEDS_RESET:
                broken = True
                break
            if not (yield from self.irq.wait_until(deadline)):
                timed_out = True
                break
        outcomes = []
        for h in heads:
            if h in done:
                length, data, when = done[h]
                outcomes.append(ChainOutcome(True, length, data, False, False, isr, when))
            else:
                outcomes.append(ChainOutcome(False, None, b"", broken, timed_out, isr, self.sim.now))
        return outcomes

    def _interrupt(self) -> int:
        """vp_interrupt: reading the ISR clears it and lowers the line (bit 0 used buffers, bit 1 configuration)."""
        return self.transport.mmio_read(PCI_ISR_OFFSET, 1)
