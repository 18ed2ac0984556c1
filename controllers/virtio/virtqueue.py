"""The device side of a split virtqueue in guest RAM: pop available chains, push used elements, notification rules.

Facts: virtio 1.2 section 2.7 and QEMU virtio_ring.h; the checks and their order are QEMU's
(hw/virtio/virtio.c virtqueue_split_pop, virtqueue_map_desc, virtqueue_split_read_next_desc, virtqueue_get_head,
virtqueue_num_heads, virtio_split_should_notify, virtio_init_region_cache). Every rule a driver can break raises
`VirtioError`, whose message is QEMU's virtio_error text; the transport turns it into "device broken" (status
NEEDS_RESET, a configuration interrupt, nothing processed until reset). Nothing here loops more often than the
queue (or an indirect table) has entries, so no ring content can hang the device.

Where the spec asks more of the device than QEMU checks, the spec is followed (an exact error rather than a silent
surprise, docs/architecture.md "Exact semantics"), and the difference is named here:
- a descriptor with both INDIRECT and NEXT is an error (spec 2.7.5.3.1 forbids it; QEMU ignores NEXT);
- INDIRECT inside an indirect table is an error (2.7.5.3.1; QEMU reads that descriptor as a plain buffer);
- a direct chain may end in one INDIRECT descriptor (2.7.5.3.2 says the device MUST handle it; QEMU only follows
  an indirect head and would read such a descriptor as a plain buffer).
QEMU's virtqueue_split_pop does not check the available index itself; the "more than the queue size ahead" rule is
applied here as virtqueue_num_heads applies it on its other paths (virtio 2.7.13.3 bounds it the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controllers.virtio.layouts import (
    AVAIL_IDX,
    AVAIL_RING,
    DESC_FAST,
    USED_ELEM_FAST,
    USED_IDX,
    USED_RING,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_DESC_SIZE,
    VIRTQUEUE_MAX_SIZE,
    avail_event_offset,
    avail_ring_size,
    used_event_offset,
    used_ring_size,
    vring_need_event,
)
from emu.errors import EmuError

if TYPE_CHECKING:
    from emu.memory import GuestMemory


class VirtioError(EmuError):
    """The driver broke a rule the device cannot recover from (QEMU virtio_error): the device is now broken."""


@dataclass(slots=True)
class Element:
    """One popped chain: its head index and the guest-RAM pieces (address, length), device-readable ones
    (`out_sg`) before device-writable ones (`in_sg`). Every piece was checked to lie in guest RAM when popped."""

    mem: GuestMemory
    index: int
    out_sg: list[tuple[int, int]] = field(default_factory=list)
    in_sg: list[tuple[int, int]] = field(default_factory=list)

    @property
    def out_len(self) -> int:
        return sum(n for _, n in self.out_sg)

    @property
    def in_len(self) -> int:
        return sum(n for _, n in self.in_sg)

    def read_out(self, offset: int, length: int) -> bytes:
        """Gather `length` bytes of the readable side from `offset` (iov_to_buf); fewer when the side is shorter."""
        if self.out_sg and offset + length <= self.out_sg[0][1]:      # a header inside the first buffer
            return self.mem.read(self.out_sg[0][0] + offset, length)
        return b"".join(self._pieces(self.out_sg, offset, length, self.mem.read))

    def out_views(self, offset: int, length: int) -> list[memoryview]:
        """Zero-copy views of `length` bytes of the readable side from `offset` (fewer when it is shorter), for
        a request to write out; the caller releases them (GuestMemory.release) when the request is done."""
        return self._pieces(self.out_sg, offset, length, self.mem.view)

    def in_views(self, offset: int, length: int) -> list[memoryview]:
        """Zero-copy views of the writable side, as `out_views`, for a read to land in."""
        return self._pieces(self.in_sg, offset, length, self.mem.view)

    @staticmethod
    def _pieces(sg: list[tuple[int, int]], offset: int, length: int, take) -> list:
        """`take(address, length)` of each piece of `sg` that overlaps [offset, offset + length)."""
        end = offset + length
        parts, pos = [], 0
        for addr, n in sg:
            lo, hi = max(offset, pos), min(end, pos + n)
            if lo < hi:
                parts.append(take(addr + lo - pos, hi - lo))
            pos += n
            if pos >= end:
                break
        return parts

    def write_in(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Scatter `data` into the writable side from `offset` (iov_from_buf); returns the bytes that fit."""
        if isinstance(data, bytes) and self.in_sg:      # a response header or a status byte: one buffer holds it
            addr, n = self.in_sg[0]
            if offset + len(data) <= n:
                self.mem.write(addr + offset, data)
                return len(data)
            addr, n = self.in_sg[-1]
            start = self.in_len - n
            if start <= offset and offset + len(data) <= start + n:
                self.mem.write(addr + offset - start, data)
                return len(data)
        view = memoryview(data).cast("B")
        end = min(offset + len(view), self.in_len)
        pos = 0
        for addr, n in self.in_sg:
            lo, hi = max(offset, pos), min(end, pos + n)
            if lo < hi:
                self.mem.write(addr + lo - pos, view[lo - offset:hi - offset])
            pos += n
            if pos >= end:
                break
        return max(0, end - offset)


class SplitQueue:
    """One enabled split virtqueue of `size` entries: the device's view and its private indices.

    `event_idx` is whether VIRTIO_RING_F_EVENT_IDX was negotiated. The constructor refuses rings that do not lie
    in guest RAM (virtio_init_region_cache: "Cannot map desc/avail/used").
    """

    def __init__(self, mem: GuestMemory, size: int, desc: int, avail: int, used: int, *, event_idx: bool) -> None:
        for what, addr, length in (("desc", desc, size * VIRTQ_DESC_SIZE), ("avail", avail, avail_ring_size(size)),
                                   ("used", used, used_ring_size(size))):
            if addr < 0 or addr + length > mem.size:
                raise VirtioError(f"Cannot map {what}: {length} bytes at {addr:#x} are outside guest RAM")
        self.mem = mem
        self.size = size
        self.desc, self.avail, self.used = desc, avail, used
        self.event_idx = event_idx
        self.last_avail_idx = 0
        self.used_idx = 0
        self.inuse = 0
        self.signalled_used = 0
        self.signalled_used_valid = False

    # -- available ring ---------------------------------------------------------------------------------
    def avail_idx(self) -> int:
        return self.mem.read_u16(self.avail + AVAIL_IDX)

    def avail_flags(self) -> int:
        return self.mem.read_u16(self.avail)

    def pop(self) -> Element | None:
        """virtqueue_split_pop: the next available chain, or None when the ring is empty."""
        avail_idx = self.avail_idx()
        if avail_idx == self.last_avail_idx:
            return None
        if (avail_idx - self.last_avail_idx) & 0xFFFF > self.size:
            raise VirtioError(f"Guest moved used index from {self.last_avail_idx} to {avail_idx}")
        if self.inuse >= self.size:
            raise VirtioError("Virtqueue size exceeded")
        head = self.mem.read_u16(self.avail + AVAIL_RING + 2 * (self.last_avail_idx % self.size))
        if head >= self.size:
            raise VirtioError(f"Guest says index {head} is available")
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        if self.event_idx:
            self.mem.write_u16(self.used + avail_event_offset(self.size), self.last_avail_idx)
        element = Element(self.mem, head)
        self._walk(element, head)
        self.inuse += 1
        return element

    def _walk(self, element: Element, head: int) -> None:
        """Collect the chain's buffers, with virtqueue_split_pop's and virtqueue_map_desc's checks in their order.

        The ring's table lies in guest RAM (checked when the queue was enabled) and an indirect table is checked
        before it is read, whole, so the entries need no bounds check of their own."""
        mem = self.mem
        ram = mem.size
        out_sg, in_sg = element.out_sg, element.in_sg
        ring = self.desc

        def read(j: int) -> tuple[int, int, int, int]:
            return mem.unpack(DESC_FAST, ring + j * VIRTQ_DESC_SIZE)

        limit, i, entries, in_table = self.size, head, 0, False
        while True:
            addr, length, flags, nxt = read(i)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if in_table:
                    raise VirtioError("Indirect descriptor inside an indirect table")
                if flags & VIRTQ_DESC_F_NEXT:
                    raise VirtioError("Descriptor with both INDIRECT and NEXT")
                if not length or length % VIRTQ_DESC_SIZE:
                    raise VirtioError("Invalid size for indirect buffer table")
                if addr + length > ram:
                    raise VirtioError("Cannot map indirect buffer")
                read = list(DESC_FAST.iter_unpack(mem.read(addr, length))).__getitem__
                limit, i, entries, in_table = length // VIRTQ_DESC_SIZE, 0, 0, True
                continue
            # virtqueue_map_desc: order, zero size, the per-element buffer limit, the buffer lies in RAM
            if not flags & VIRTQ_DESC_F_WRITE and in_sg:
                raise VirtioError("Incorrect order for descriptors")
            if not length:
                raise VirtioError("virtio: zero sized buffers are not allowed")
            if len(out_sg) + len(in_sg) >= VIRTQUEUE_MAX_SIZE:
                raise VirtioError("virtio: too many descriptors in one element")
            if addr + length > ram:
                raise VirtioError("virtio: bogus descriptor or out of resources")
            (in_sg if flags & VIRTQ_DESC_F_WRITE else out_sg).append((addr, length))
            entries += 1
            if entries > limit:
                raise VirtioError("Looped descriptor")
            if not flags & VIRTQ_DESC_F_NEXT:
                return
            if nxt >= limit:
                raise VirtioError(f"Desc next is {nxt}")
            i = nxt

    # -- used ring ------------------------------------------------------------------------------------------
    def push(self, element: Element, written: int) -> None:
        """virtqueue_push: one used element {head, bytes written}, then the used index."""
        slot = self.used + USED_RING + (self.used_idx % self.size) * USED_ELEM_FAST.size
        self.mem.pack(USED_ELEM_FAST, slot, element.index, written)
        old = self.used_idx
        self.used_idx = (old + 1) & 0xFFFF
        self.mem.write_u16(self.used + USED_IDX, self.used_idx)
        self.inuse -= 1
        # virtqueue_split_flush: the last signalled index fell out of the window, so it no longer counts
        new = self.used_idx
        if ((new - self.signalled_used) & 0xFFFF) >= 0x8000 or \
                ((new - self.signalled_used) & 0xFFFF) < ((new - old) & 0xFFFF):
            self.signalled_used_valid = False

    def detach(self) -> None:
        """virtqueue_detach_element: an element that will never be pushed (its device broke on it)."""
        self.inuse -= 1

    def should_notify(self) -> bool:
        """virtio_split_should_notify: NO_INTERRUPT without EVENT_IDX, else used_event against the last signal."""
        if not self.event_idx:
            return not self.avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT
        valid, old = self.signalled_used_valid, self.signalled_used
        self.signalled_used_valid = True
        self.signalled_used = new = self.used_idx
        used_event = self.mem.read_u16(self.avail + used_event_offset(self.size))
        return not valid or vring_need_event(used_event, new, old)

    def enable_notification(self) -> None:
        """virtio_queue_set_notification(vq, 1) after a batch: with EVENT_IDX, avail_event = the avail index seen."""
        if self.event_idx:
            self.mem.write_u16(self.used + avail_event_offset(self.size), self.avail_idx())
