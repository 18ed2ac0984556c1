"""The adapters against the real QEMU: QtestMemory keeps GuestMemory's contract (bytes land in QEMU's RAM, large
transfers in pieces, out-of-range accesses are DmaErrors before anything is sent, the allocator stays above the
legacy holes), and a virtio-blk discard through emu's driver punches QEMU's hole in the raw file."""

from __future__ import annotations

import os
import random
import struct

import pytest

from controllers.drivers.virtio_blk import VirtioBlkDriver
from emu.errors import DmaError
from emu.qtest.machine import VIRTIO_BLK_IDS, guest_memory, interrupt_line, virtio_function
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import Simulation
from scenarios.profiles import guest_config

pytestmark = pytest.mark.qemu
MiB = 1 << 20


@pytest.fixture
def qemu(qemu_system, tmp_path):
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(16 * MiB))
    with Qemu("virtio-blk", str(path), drive={"discard": "unmap"}) as q:
        q.path = path
        yield q


def test_qtest_memory_keeps_the_guest_memory_contract(qemu):
    mem = guest_memory(qemu.conn, qemu.ram_mib)
    assert mem.size == qemu.ram_mib * MiB
    addr = mem.alloc(300_000, 4096)
    assert addr >= MiB and addr % 4096 == 0
    data = random.Random(1).randbytes(300_000)      # more than one b64 piece
    mem.write(addr, data)
    assert mem.read(addr, len(data)) == data
    assert qemu.conn.value("readl", addr) == struct.unpack_from("<I", data)[0]     # really in QEMU's RAM
    mem.fill(addr, 16, 0xEE)
    mem.write_u16(addr + 16, 0xBEEF)
    mem.pack(struct.Struct("<IQ"), addr + 32, 7, 2**63)
    assert mem.read(addr, 18) == b"\xee" * 16 + b"\xef\xbe"
    assert mem.read_u16(addr + 16) == 0xBEEF and mem.unpack(struct.Struct("<IQ"), addr + 32) == (7, 2**63)
    trips = qemu.conn.round_trips
    with pytest.raises(DmaError):
        mem.write(mem.size - 2, b"abcd")
    with pytest.raises(DmaError):
        mem.read(-1, 4)
    assert qemu.conn.round_trips == trips         # refused before anything went to QEMU
    mem.free(addr)
    assert mem.allocated() == {}


def test_a_discard_through_emus_driver_punches_a_hole_in_qemus_raw_file(qemu):
    sim = Simulation()
    vf = virtio_function(qemu.conn, PciBus(qemu.conn), VIRTIO_BLK_IDS)
    driver = VirtioBlkDriver(sim, guest_memory(qemu.conn, qemu.ram_mib), vf.region,
                             interrupt_line(sim, qemu.conn, vf.function), guest=guest_config("linux-6.1"))
    assert sim.run(sim.process(driver.probe())) is True
    before = os.stat(qemu.path).st_blocks
    outcomes = sim.run(sim.process(driver.discard([(2048, 2048)])))         # 1 MiB at 1 MiB
    assert outcomes and all(o.ok for o in outcomes)
    after = os.stat(qemu.path).st_blocks
    assert before - after >= MiB // 512          # QEMU's raw driver punched the 1 MiB hole (st_blocks: 512 B units)
    with open(qemu.path, "rb") as f:
        assert os.lseek(f.fileno(), MiB, os.SEEK_HOLE) == MiB
