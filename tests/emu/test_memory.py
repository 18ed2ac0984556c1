"""Guest RAM: bounds-checked DMA, little-endian helpers, the shared mapping, the guest-driver allocator."""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from emu.errors import DmaError, EmuError, GuestMemoryError, OutOfGuestMemory
from emu.memory import NULL_GUARD_BYTES, GuestMemory

KiB = 1 << 10
MiB = 1 << 20
RAM = 64 * KiB


@pytest.fixture
def mem():
    with GuestMemory(RAM) as m:
        yield m


# -- DMA ----------------------------------------------------------------------------------------------
def test_fresh_memory_reads_zeros_and_writes_read_back(mem):
    assert mem.read(0, 16) == bytes(16)
    mem.write(0x1000, b"hello")
    assert mem.read(0x0ffe, 9) == b"\0\0hello\0\0"


def test_write_accepts_bytearray_memoryview_and_typed_buffers(mem):
    import array

    mem.write(0x100, bytearray(b"ab"))
    mem.write(0x102, memoryview(b"cd"))
    mem.write(0x104, array.array("I", [0x01020304]))
    assert mem.read(0x100, 8) == b"abcd\x04\x03\x02\x01"


def test_last_byte_is_reachable_and_the_next_is_not(mem):
    mem.write(RAM - 1, b"\xff")
    assert mem.read(RAM - 1, 1) == b"\xff"
    assert mem.read(RAM, 0) == b""
    with pytest.raises(DmaError):
        mem.read(RAM, 1)
    with pytest.raises(DmaError):
        mem.write(RAM, b"x")


def test_dma_error_names_address_length_and_ram_size(mem):
    with pytest.raises(DmaError) as info:
        mem.read(0xfff0, 0x20)
    err = info.value
    assert isinstance(err, EmuError) and isinstance(err, GuestMemoryError)
    assert (err.addr, err.length, err.ram_size) == (0xfff0, 0x20, RAM)
    message = str(err)
    assert "\n" not in message
    assert "0xfff0" in message and "32 bytes" in message and f"{RAM}-byte" in message


@pytest.mark.parametrize("call", [
    lambda m: m.read(-1, 4),
    lambda m: m.read(0, -1),
    lambda m: m.read(RAM - 3, 4),
    lambda m: m.write(-1, b"x"),
    lambda m: m.view(RAM - 1, 2),
    lambda m: m.view(0, -2),
    lambda m: m.fill(RAM - 1, 2, 0),
    lambda m: m.copy(0, RAM - 1, 2),
    lambda m: m.copy(RAM - 1, 0, 2),
    lambda m: m.read_u16(RAM - 1),
    lambda m: m.read_u64(-8),
    lambda m: m.write_u32(RAM - 2, 0),
    lambda m: m.write_u64(RAM - 7, 0),
])
def test_every_access_outside_ram_raises_dma_error(mem, call):
    with pytest.raises(DmaError):
        call(mem)


@given(addr=st.integers(-2 * RAM, 2 * RAM), data=st.binary(min_size=1, max_size=256))
def test_a_write_straddling_the_end_touches_nothing(addr, data):
    with GuestMemory(RAM) as mem:
        mem.fill(0, RAM, 0xAA)
        inside = 0 <= addr and addr + len(data) <= RAM
        if inside:
            mem.write(addr, data)
            assert mem.read(addr, len(data)) == data
        else:
            with pytest.raises(DmaError):
                mem.write(addr, data)
            assert mem.read(0, RAM) == b"\xaa" * RAM


_ops = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 4095), st.binary(max_size=64)),
    st.tuples(st.just("fill"), st.integers(0, 4095), st.integers(0, 64), st.integers(0, 255)),
    st.tuples(st.just("u16"), st.integers(0, 4094), st.integers(0, 0xFFFF)),
    st.tuples(st.just("u32"), st.integers(0, 4092), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("u64"), st.integers(0, 4088), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("copy"), st.integers(0, 4031), st.integers(0, 4031), st.integers(0, 64)),
)


@given(st.lists(_ops, max_size=30))
def test_dma_operations_match_a_bytearray_model(ops):
    model = bytearray(4096)
    with GuestMemory(4096) as mem:
        for op, addr, *args in ops:
            if op == "write":
                (data,) = args
                data = data[:4096 - addr]
                mem.write(addr, data)
                model[addr:addr + len(data)] = data
            elif op == "fill":
                length, byte = args
                length = min(length, 4096 - addr)
                mem.fill(addr, length, byte)
                model[addr:addr + length] = bytes([byte]) * length
            elif op == "copy":
                src, length = args
                mem.copy(addr, src, length)
                model[addr:addr + length] = model[src:src + length]
            else:
                (value,) = args
                width = int(op[1:]) // 8
                getattr(mem, f"write_{op}")(addr, value)
                model[addr:addr + width] = value.to_bytes(width, "little")
                assert getattr(mem, f"read_{op}")(addr) == value
        assert mem.read(0, 4096) == bytes(model)


def test_scalars_are_little_endian(mem):
    mem.write_u8(0x10, 0x7F)
    mem.write_u16(0x20, 0x1122)
    mem.write_u32(0x30, 0x11223344)
    mem.write_u64(0x40, 0x1122334455667788)
    assert mem.read(0x10, 1) == b"\x7f"
    assert mem.read(0x20, 2) == b"\x22\x11"
    assert mem.read(0x30, 4) == b"\x44\x33\x22\x11"
    assert mem.read(0x40, 8) == bytes.fromhex("8877665544332211")
    assert (mem.read_u8(0x10), mem.read_u16(0x20), mem.read_u32(0x30), mem.read_u64(0x40)) == (
        0x7F, 0x1122, 0x11223344, 0x1122334455667788)


@pytest.mark.parametrize("call", [
    lambda m: m.write_u8(0, 256),
    lambda m: m.write_u16(0, -1),
    lambda m: m.write_u32(0, 1 << 32),
    lambda m: m.fill(0, 4, 256),
])
def test_a_value_that_does_not_fit_is_refused_not_truncated(mem, call):
    with pytest.raises(ValueError):
        call(mem)
    assert mem.read(0, 8) == bytes(8)


def test_records_pack_and_unpack_with_a_struct(mem):
    prd = struct.Struct("<IxxxxI")      # e.g. a PRD-like entry: base address, reserved, byte count
    mem.pack(prd, 0x2000, 0xDEAD0000, 0x8000_01FF)
    assert mem.read(0x2000, 12) == bytes.fromhex("0000adde 00000000 ff010080".replace(" ", ""))
    assert mem.unpack(prd, 0x2000) == (0xDEAD0000, 0x8000_01FF)
    with pytest.raises(DmaError):
        mem.unpack(prd, RAM - 8)


def test_view_is_zero_copy_both_ways(mem):
    with mem.view(0x3000, 8) as view:
        view[0:4] = b"abcd"
        assert mem.read(0x3000, 4) == b"abcd"
        mem.write(0x3004, b"efgh")
        assert bytes(view) == b"abcdefgh"
        assert not view.readonly


def test_copy_handles_overlapping_ranges(mem):
    mem.write(0x100, b"0123456789")
    mem.copy(0x102, 0x100, 8)
    assert mem.read(0x100, 10) == b"0101234567"


def test_fill_covers_more_than_one_chunk():
    with GuestMemory(3 * MiB) as mem:
        mem.fill(1, 3 * MiB - 2, 0x5A)
        data = mem.read(0, 3 * MiB)
        assert data[0] == 0 and data[-1] == 0 and data[1:-1] == b"\x5a" * (3 * MiB - 2)


def test_64k_dma_is_a_memcpy_not_a_python_loop():
    """4096 transfers of 64 KiB (256 MiB each way): milliseconds as memcpy, minutes as a byte loop."""
    with GuestMemory(4 * MiB) as mem:
        block = bytes(range(256)) * 256
        start = time.perf_counter()
        for i in range(4096):
            addr = (i % 64) * 64 * KiB
            mem.write(addr, block)
            assert len(mem.read(addr, 64 * KiB)) == 64 * KiB
        assert time.perf_counter() - start < 5.0


def test_null_page_is_readable_but_never_allocated(mem):
    mem.write(0, b"guard")
    assert mem.read(0, 5) == b"guard"
    addrs = [mem.alloc(16, align=1) for _ in range(8)]
    assert min(addrs) >= NULL_GUARD_BYTES


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_mapping_is_shared_with_a_forked_process(mem):
    pid = os.fork()
    if pid == 0:    # child: write and leave without running any pytest teardown
        try:
            mem.write(0x4000, b"from the child")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert mem.read(0x4000, 14) == b"from the child"


def test_close_is_idempotent_and_refuses_while_a_view_is_alive():
    mem = GuestMemory(RAM)
    view = mem.view(0, 4)
    with pytest.raises(BufferError, match="still alive"):
        mem.close()
    assert not mem.closed
    mem.write(0, b"ok")         # still usable after the refused close
    view.release()
    mem.close()
    mem.close()
    assert mem.closed


def test_context_manager_unmaps():
    with GuestMemory(RAM) as mem:
        mem.write(0, b"x")
    assert mem.closed


@pytest.mark.parametrize("size", [0, -4096])
def test_ram_size_must_be_positive(size):
    with pytest.raises(ValueError):
        GuestMemory(size)


# -- allocator ------------------------------------------------------------------------------------------
def test_alloc_is_first_fit_aligned_and_after_the_null_page(mem):
    a = mem.alloc(100)
    b = mem.alloc(10, align=4096)
    c = mem.alloc(1)
    assert a == NULL_GUARD_BYTES
    assert b == 2 * 4096
    assert c == a + 112             # first fit: the gap after a, at 16-byte alignment
    assert mem.allocated() == {a: 100, c: 1, b: 10}


def test_freed_blocks_coalesce_so_the_whole_ram_can_be_allocated_again(mem):
    whole = RAM - NULL_GUARD_BYTES
    addrs = [mem.alloc(1000, align=8) for _ in range(40)]
    for addr in addrs[::2] + addrs[1::2]:
        mem.free(addr)
    assert mem.allocated() == {}
    assert mem.free_bytes == whole
    assert mem.alloc(whole, align=1) == NULL_GUARD_BYTES


def test_out_of_guest_memory_is_a_clear_emu_error(mem):
    mem.alloc(RAM - NULL_GUARD_BYTES - 100)
    with pytest.raises(OutOfGuestMemory, match="no free block of 4096 bytes aligned to 16") as info:
        mem.alloc(4096)
    assert isinstance(info.value, EmuError)
    assert info.value.free_bytes == 100


def test_a_small_ram_has_nothing_to_allocate():
    with GuestMemory(NULL_GUARD_BYTES) as mem:
        with pytest.raises(OutOfGuestMemory):
            mem.alloc(1)


def test_double_free_and_unknown_address_are_errors(mem):
    addr = mem.alloc(64)
    with pytest.raises(GuestMemoryError, match="not an allocated block"):
        mem.free(addr + 16)
    mem.free(addr)
    with pytest.raises(GuestMemoryError, match="double free"):
        mem.free(addr)
    with pytest.raises(GuestMemoryError):
        mem.free(0)


@pytest.mark.parametrize(("size", "align"), [(0, 16), (-1, 16), (16, 0), (16, 3), (16, 24)])
def test_bad_alloc_arguments_are_programming_errors(mem, size, align):
    with pytest.raises(ValueError):
        mem.alloc(size, align)


class AllocatorMachine(RuleBasedStateMachine):
    """Random alloc/free sequences: blocks stay aligned, disjoint, inside RAM and past the null page."""

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.mem = GuestMemory(32 * KiB)
        self.live: dict[int, tuple[int, int]] = {}

    @rule(target=blocks, size=st.integers(1, 5000), align_bits=st.integers(0, 12))
    def alloc(self, size, align_bits):
        align = 1 << align_bits
        try:
            addr = self.mem.alloc(size, align)
        except OutOfGuestMemory:
            return -1
        assert addr % align == 0
        assert NULL_GUARD_BYTES <= addr and addr + size <= self.mem.size
        self.mem.fill(addr, size, len(self.live) % 256)
        self.live[addr] = (size, len(self.live) % 256)
        return addr

    @rule(addr=consumes(blocks))
    def free(self, addr):
        if addr == -1:
            return
        size, byte = self.live.pop(addr)
        assert self.mem.read(addr, size) == bytes([byte]) * size   # nobody else was handed these bytes
        self.mem.free(addr)

    @invariant()
    def bookkeeping_adds_up(self):
        spans = sorted((a, a + s) for a, (s, _) in self.live.items())
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
        assert {a: s for a, (s, _) in self.live.items()} == self.mem.allocated()
        used = sum(s for s, _ in self.live.values())
        assert self.mem.free_bytes == self.mem.size - NULL_GUARD_BYTES - used

    def teardown(self):
        self.mem.close()


TestAllocatorMachine = AllocatorMachine.TestCase
