"""The device side of split virtqueues (QEMU virtqueue_split_pop's rules), on rings written here with the
construct definitions, independently of the guest-driver model."""

from __future__ import annotations

import pytest

from controllers.virtio import layouts as L
from controllers.virtio.virtqueue import SplitQueue, VirtioError
from emu.memory import GuestMemory

RAM = 1 << 20
W, N, IND = L.VIRTQ_DESC_F_WRITE, L.VIRTQ_DESC_F_NEXT, L.VIRTQ_DESC_F_INDIRECT


class Ring:
    """A queue laid out by hand: descriptors and available entries go in with construct."""

    def __init__(self, mem: GuestMemory, size: int = 8, *, event_idx: bool = False) -> None:
        self.mem, self.size = mem, size
        self.desc = mem.alloc(16 * size, 16)
        self.avail = mem.alloc(L.avail_ring_size(size), 2)
        self.used = mem.alloc(L.used_ring_size(size), 4)
        for addr, n in ((self.desc, 16 * size), (self.avail, L.avail_ring_size(size)),
                        (self.used, L.used_ring_size(size))):
            mem.fill(addr, n, 0)
        self.idx = 0
        self.q = SplitQueue(mem, size, self.desc, self.avail, self.used, event_idx=event_idx)

    def put(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0, table: int | None = None) -> None:
        base = self.desc if table is None else table
        self.mem.write(base + 16 * i, L.VIRTQ_DESC.build(dict(addr=addr, len=length, flags=flags, next=nxt)))

    def offer(self, *heads: int) -> None:
        for head in heads:
            self.mem.write_u16(self.avail + 4 + 2 * (self.idx % self.size), head)
            self.idx = (self.idx + 1) & 0xFFFF
        self.mem.write_u16(self.avail + 2, self.idx)

    def used_ring(self) -> dict:
        return L.virtq_used(self.size).parse(self.mem.read(self.used, L.used_ring_size(self.size)))


@pytest.fixture
def mem():
    with GuestMemory(RAM) as m:
        yield m


def test_an_empty_queue_pops_nothing(mem):
    assert Ring(mem).q.pop() is None


def test_a_three_descriptor_request_pops_readable_then_writable_and_pushes_its_used_element(mem):
    r = Ring(mem)
    r.put(0, 0x10000, 16, N, 1)
    r.put(1, 0x11000, 512, N, 2)
    r.put(2, 0x12000, 1, W | N, 5)            # a NEXT on the writable status chains on to 5
    r.put(5, 0x12100, 7, W)
    mem.write(0x10000, b"H" * 16)
    r.offer(0)
    e = r.q.pop()
    assert (e.index, e.out_sg, e.in_sg) == (0, [(0x10000, 16), (0x11000, 512)], [(0x12000, 1), (0x12100, 7)])
    assert e.read_out(0, 16) == b"H" * 16 and e.read_out(10, 100)[:6] == b"H" * 6
    assert e.write_in(0, b"abcdefghij") == 8 and mem.read(0x12000, 1) + mem.read(0x12100, 7) == b"abcdefgh"
    assert r.q.inuse == 1 and r.q.pop() is None
    r.q.push(e, 8)
    used = r.used_ring()
    assert used.idx == 1 and (used.ring[0].id, used.ring[0].len) == (0, 8) and r.q.inuse == 0


def test_an_indirect_head_and_a_chain_ending_in_an_indirect_table(mem):
    r = Ring(mem)
    table = mem.alloc(48, 16)
    r.put(0, 0x20000, 16, N, 1, table=table)
    r.put(1, 0x21000, 4096, W | N, 2, table=table)
    r.put(2, 0x22000, 1, W, table=table)
    r.put(3, table, 48, IND | W)                  # WRITE on the table descriptor is ignored (2.7.5.3.2)
    tail = mem.alloc(32, 16)
    r.put(0, 0x31000, 512, N, 1, table=tail)
    r.put(1, 0x32000, 1, W, table=tail)
    r.put(4, 0x30000, 16, N, 6)
    r.put(6, tail, 32, IND)                       # the direct chain ends in an indirect table (2.7.5.3.2)
    r.offer(3, 4)
    first, second = r.q.pop(), r.q.pop()
    assert (first.index, first.out_sg, first.in_sg) == (3, [(0x20000, 16)], [(0x21000, 4096), (0x22000, 1)])
    assert (second.index, second.out_sg, second.in_sg) == (4, [(0x30000, 16), (0x31000, 512)], [(0x32000, 1)])


def test_indices_wrap_at_16_bits(mem):
    r = Ring(mem, size=4)
    r.q.last_avail_idx = r.q.used_idx = r.idx = 0xFFFE
    r.put(0, 0x10000, 16, W)
    r.offer(0, 0, 0)
    for _ in range(3):
        r.q.push(r.q.pop(), 16)
    assert r.q.last_avail_idx == 1 and r.used_ring().idx == 1 and r.q.pop() is None


def _loop(r, mem):
    r.put(0, 0x10000, 16, N, 1)
    r.put(1, 0x10000, 16, N, 0)
    r.offer(0)


def _nested(r, mem):
    table, inner = mem.alloc(32, 16), mem.alloc(16, 16)
    r.put(0, 0x10000, 16, N, 1, table=table)
    r.put(1, inner, 16, IND, table=table)
    r.put(0, table, 32, IND)
    r.offer(0)


def _too_many_in_flight(r, mem):
    r.put(0, 0x10000, 16)
    r.offer(*[0] * 8)
    for _ in range(8):
        r.q.pop()
    r.offer(0)


def _huge_table(r, mem):
    n = L.VIRTQUEUE_MAX_SIZE + 1
    table = mem.alloc(16 * n, 16)
    for i in range(n):
        r.put(i, 0x10000, 1, N if i + 1 < n else 0, i + 1, table=table)
    r.put(0, table, 16 * n, IND)
    r.offer(0)


@pytest.mark.parametrize("build, message", [
    (lambda r, m: (r.put(0, 0x10000, 1, W | N, 1), r.put(1, 0x10000, 16), r.offer(0)), "Incorrect order"),
    (_loop, "Looped descriptor"),
    (lambda r, m: (r.put(0, 0x10000, 16, N, 8), r.offer(0)), "Desc next is 8"),
    (lambda r, m: (r.put(0, 0x10000, 0), r.offer(0)), "zero sized buffers"),
    (lambda r, m: (r.put(0, RAM - 8, 16), r.offer(0)), "bogus descriptor"),
    (lambda r, m: (r.put(0, 2**64 - 16, 16), r.offer(0)), "bogus descriptor"),
    (lambda r, m: r.offer(9), "Guest says index 9 is available"),
    (lambda r, m: (r.put(0, 0x10000, 16), r.offer(*[0] * 9)), "Guest moved used index from 0 to 9"),
    (_too_many_in_flight, "Virtqueue size exceeded"),
    (_nested, "inside an indirect table"),
    (lambda r, m: (r.put(0, 0x40000, 32, IND | N, 1), r.offer(0)), "both INDIRECT and NEXT"),
    (lambda r, m: (r.put(0, 0x40000, 0, IND), r.offer(0)), "Invalid size for indirect buffer table"),
    (lambda r, m: (r.put(0, 0x40000, 24, IND), r.offer(0)), "Invalid size for indirect buffer table"),
    (lambda r, m: (r.put(0, RAM - 16, 32, IND), r.offer(0)), "Cannot map indirect buffer"),
    (_huge_table, "too many descriptors"),
])
def test_every_ring_rule_breaks_with_qemus_message(mem, build, message):
    r = Ring(mem)
    build(r, mem)
    with pytest.raises(VirtioError, match=message):
        r.q.pop()


@pytest.mark.parametrize("part", ["desc", "avail", "used"])
def test_rings_outside_ram_are_refused_when_the_queue_is_set_up(mem, part):
    addrs = {"desc": 0x1000, "avail": 0x2000, "used": 0x3000, part: RAM - 8}
    with pytest.raises(VirtioError, match=f"Cannot map {part}"):
        SplitQueue(mem, 8, addrs["desc"], addrs["avail"], addrs["used"], event_idx=False)


def test_no_interrupt_flag_without_event_idx(mem):
    r = Ring(mem)
    assert r.q.should_notify()
    mem.write_u16(r.avail, L.VIRTQ_AVAIL_F_NO_INTERRUPT)
    assert not r.q.should_notify()


def test_event_idx_used_event_and_avail_event(mem):
    r = Ring(mem, event_idx=True)
    r.put(0, 0x10000, 16, W)
    mem.write_u16(r.avail, L.VIRTQ_AVAIL_F_NO_INTERRUPT)      # ignored with EVENT_IDX
    mem.write_u16(r.avail + L.used_event_offset(8), 2)        # "interrupt me once used idx passes 2"
    r.offer(0, 0, 0)
    notified = []
    for _ in range(3):
        e = r.q.pop()
        r.q.push(e, 16)
        notified.append(r.q.should_notify())
    assert notified == [True, False, True]                    # the first signal is always sent, then used_event
    assert r.used_ring().avail_event == 3                     # written on each pop: the next index it will read
    r.offer(0)
    r.q.enable_notification()
    assert r.used_ring().avail_event == 4
