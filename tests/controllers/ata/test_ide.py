"""The PIIX IDE channel and the ata_piix guest driver over real raw and qcow2 images, after QEMU's ide-test.c."""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.ata import AtaConfig, AtaDevice, AtaRegisters, build_identify, encode_ranges, parse_identify
from controllers.ata import layouts as L
from controllers.drivers.ata_piix import AtaOutcome, PiixDriver
from controllers.ide import REG_CONTROL, IdeChannel
from emu.block import Drive, DriveOptions, Op
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from images import create_image, open_image
from scenarios.profiles import guest_config

MiB = 1 << 20
GiB = 1 << 30
SIZE = 16 * MiB
SECTORS = SIZE // 512
GUEST = guest_config("linux-6.1")

DRDY, DRQ, BSY, DF, ERR, DSC = L.STATUS_DRDY, L.STATUS_DRQ, L.STATUS_BSY, L.STATUS_DF, L.STATUS_ERR, L.STATUS_DSC
BM_ACTIVE, BM_ERROR, BM_INTR = L.BM_STATUS_ACTIVE, L.BM_STATUS_ERROR, L.BM_STATUS_INTR
PRD = struct.Struct("<IHH")
EOT = 0x8000


@dataclass
class Rig:
    sim: Simulation
    mem: GuestMemory
    irq: InterruptLine
    channel: IdeChannel
    device: AtaDevice
    driver: PiixDriver
    path: str

    def run(self, gen):
        return self.sim.run(until=self.sim.process(gen))

    def image(self, offset=0, length=None):
        drive = self.device.drive
        return drive.read(offset, drive.capacity - offset if length is None else length).data


def make(tmp_path, fmt="raw", size=SIZE, discard="unmap", timing=None, mem_size=8 * MiB, **config):
    path = str(tmp_path / f"disk.{fmt}")
    create_image(path, fmt, size)
    drive = Drive(open_image(path, fmt), DriveOptions(discard=discard))
    device = AtaDevice(drive, AtaConfig(capacity_sectors=size // 512, **config))
    sim = Simulation()
    mem = GuestMemory(mem_size)
    irq = InterruptLine(sim, "ide0")
    channel = IdeChannel(sim, mem, irq, (device, None), timing)
    return Rig(sim, mem, irq, channel, device, PiixDriver(channel, mem, guest=GUEST), path)


@pytest.fixture(params=["raw", "qcow2"])
def fmt(request):
    return request.param


def pattern(nbytes, seed=1):
    return bytes((i * 7 + seed + (i >> 9)) & 0xFF for i in range(nbytes))


# -- helpers in the style of ide-test.c ---------------------------------------------------------------------------
def send_dma_request(rig, cmd, lba, nsect, prdt, *, features=0, abort=False, prdt_addr=0x100000):
    """ide-test.c send_dma_request: PRDs, BM direction, task file, BM start, wait, the checks it makes."""
    ch, mem = rig.channel, rig.mem
    from_dev = cmd in (0xC8, 0x25)
    for k, (addr, size) in enumerate(prdt):
        mem.pack(PRD, prdt_addr + 8 * k, addr, size & 0xFFFF, (size >> 16) & 0xFFFF)
    ch.io_write(6, L.DEVICE_LBA)
    ch.bm_write(L.BM_PRDT, prdt_addr, 4)
    ch.bm_write(L.BM_CMD, L.BM_CMD_TO_MEMORY if from_dev else 0)
    ch.io_write(1, features)
    ch.io_write(2, nsect & 0xFF)
    ch.io_write(3, lba & 0xFF)
    ch.io_write(4, (lba >> 8) & 0xFF)
    ch.io_write(5, (lba >> 16) & 0xFF)
    ch.io_write(6, L.DEVICE_LBA | ((lba >> 24) & 0xF))
    ch.io_write(7, cmd)
    ch.bm_write(L.BM_CMD, L.BM_CMD_START | (L.BM_CMD_TO_MEMORY if from_dev else 0))
    if abort:
        ch.bm_write(L.BM_CMD, 0)
    rig.sim.run()
    status = ch.bm_read(L.BM_STATUS)
    assert rig.irq.level == bool(status & BM_INTR)
    assert ch.io_read(REG_CONTROL) & DRDY
    assert not ch.io_read(REG_CONTROL) & (BSY | DRQ)
    ch.io_read(7)
    assert not rig.irq.level                    # reading the status register clears the IRQ
    if status & BM_ACTIVE:
        ch.bm_write(L.BM_CMD, 0)
    return status


def clear_bm(rig):
    rig.channel.bm_write(L.BM_STATUS, BM_INTR | BM_ERROR)


# -- /ide/identify ---------------------------------------------------------------------------------------------------
def test_identify_word_by_word(tmp_path, fmt):
    rig = make(tmp_path, fmt)
    ch = rig.channel
    ch.io_write(6, 0)
    ch.io_write(7, L.AtaCommand.IDENTIFY_DEVICE)
    assert rig.irq.level
    status = ch.io_read(7)
    assert not rig.irq.level
    assert status & (DRDY | DRQ) == DRDY | DRQ and not status & (BSY | DF | ERR)
    words = []
    for _ in range(256):
        status = ch.io_read(REG_CONTROL)
        assert status & (DRDY | DRQ) == DRDY | DRQ and not status & (BSY | DF | ERR)
        words.append(ch.io_read(0, 2))
    status = ch.io_read(7)
    assert status & DRDY and not status & (DRQ | BSY | ERR)
    assert status == 0x50
    page = struct.pack("<256H", *words)
    assert page == build_identify(rig.device.config)
    info = parse_identify(page)
    assert (info["serial"], info["firmware"]) == ("QM00001", "2.5+")
    assert words[85] & (1 << 5)                 # write cache enabled
    assert ch.io_read(0, 2) == 0                # no DRQ: the data port moves nothing


def test_identify_by_driver_and_bm_interrupt_bit(tmp_path):
    rig = make(tmp_path)
    outcome = rig.run(rig.driver.identify())
    assert (outcome.status, outcome.error, outcome.ok) == (0x50, 0, True)
    assert rig.driver.info["lba48"] and rig.driver.info["trim"] and rig.driver.multi_count == 16
    # PIIX routes the IDE interrupt through the bus master (bmdma_irq): INTERRUPT is set even for PIO
    assert rig.channel.bm_read(L.BM_STATUS) & BM_INTR


# -- /ide/bmdma/simple_rw ---------------------------------------------------------------------------------------------
def test_bmdma_simple_rw(tmp_path, fmt):
    rig = make(tmp_path, fmt)
    buf = 0x200000
    for lba, byte in ((0, 0x55), (1, 0xAA)):
        rig.mem.fill(buf, 512, byte)
        status = send_dma_request(rig, 0xCA, lba, 1, [(buf, 512 | EOT << 16)])
        assert status == BM_INTR
        assert not rig.channel.io_read(REG_CONTROL) & (DF | ERR)
        clear_bm(rig)
    for lba, byte in ((0, 0x55), (1, 0xAA)):
        rig.mem.fill(buf, 512, 0)
        status = send_dma_request(rig, 0xC8, lba, 1, [(buf, 512 | EOT << 16)])
        assert status == BM_INTR
        assert rig.mem.read(buf, 512) == bytes([byte]) * 512
        clear_bm(rig)
    assert rig.image(0, 1024) == b"\x55" * 512 + b"\xAA" * 512
    # the task file after a DMA read: LBA advanced past the sector, count 0 (ide_dma_cb)
    assert (rig.channel.io_read(3), rig.channel.io_read(2)) == (2, 0)


# -- /ide/bmdma/trim ---------------------------------------------------------------------------------------------------
def test_bmdma_trim(tmp_path, fmt):
    rig = make(tmp_path, fmt)
    assert rig.run(rig.driver.write(0, b"\x77" * 16 * 512)).ok
    buf = 0x200000
    rig.mem.write(buf, encode_ranges([(0, 2), (6, 8)]))
    status = send_dma_request(rig, 0x06, 0, 1, [(buf, 512 | EOT << 16)], features=0x01)
    assert status == BM_INTR
    assert not rig.channel.io_read(7) & ERR
    if fmt == "raw":                              # qcow2 drops discards of partial 64 KiB clusters
        assert rig.image(0, 16 * 512) == bytes(1024) + b"\x77" * 4 * 512 + bytes(8 * 512) + b"\x77" * 2 * 512
    clear_bm(rig)
    rig.mem.write(buf, encode_ranges([(10, 1), (SECTORS - 1, 2)]))
    status = send_dma_request(rig, 0x06, 0, 1, [(buf, 512 | EOT << 16)], features=0x01)
    assert status & BM_INTR
    assert rig.channel.io_read(7) & ERR
    assert rig.channel.io_read(1) & L.ERROR_ABRT
    if fmt == "raw":
        assert rig.image(10 * 512, 512) == bytes(512)  # entries before the bad one are trimmed
    assert rig.device.drive.read(10 * 512, 512).ok


# -- /ide/bmdma/various_prdts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sectors", [1, 2, 8, 64, 256])
@pytest.mark.parametrize("abort", [False, True])
def test_bmdma_various_prdts(tmp_path, sectors, abort):
    rig = make(tmp_path, mem_size=2 * MiB)
    rig.device.drive.write(0, pattern(sectors * 512))
    for size in (0, 256, 512, 768, 4096, sectors * 512 - 256, sectors * 512, sectors * 512 + 256, 65280):
        size &= 0xFFFF
        prd_bytes = size or 0x10000
        req = sectors * 512
        if prd_bytes < req:
            expected = 0
        elif prd_bytes == req or abort:
            expected = BM_INTR
        else:
            expected = BM_INTR | BM_ACTIVE
        rig.mem.fill(0, 0x10000, 0xEE)
        status = send_dma_request(rig, 0xC8, 0, sectors & 0xFF, [(0, size | EOT << 16)], abort=abort)
        assert status == expected, (size, status)
        assert not rig.channel.bm_read(L.BM_STATUS) & BM_ERROR
        if prd_bytes >= req:
            assert rig.mem.read(0, req) == pattern(req)
        else:
            assert rig.mem.read(0, 0x10000) == b"\xEE" * 0x10000     # nothing moved
        clear_bm(rig)


def test_short_prdt_write_leaves_the_image_and_raises_no_irq(tmp_path):
    rig = make(tmp_path)
    rig.mem.fill(0x200000, 1024, 0x33)
    status = send_dma_request(rig, 0xCA, 4, 2, [(0x200000, 512 | EOT << 16)])
    assert status == 0 and rig.irq.raises == 0
    assert rig.channel.io_read(7) == 0x50
    assert rig.image(4 * 512, 1024) == bytes(1024)


# -- /ide/bmdma/no_busmaster and PRDs outside guest RAM --------------------------------------------------------------
def test_garbage_prdt_without_eot_does_not_crash(tmp_path):
    rig = make(tmp_path, mem_size=2 * MiB)
    rig.mem.fill(0x100000, 4096 * 8, 0)         # 4096 zero PRDs: 64 KiB at address 0 each, no EOT
    status = send_dma_request(rig, 0xC8, 0, 0, [], prdt_addr=0x100000)   # count 0 = 256 sectors
    assert status == BM_ACTIVE | BM_INTR
    assert not status & BM_ERROR


def test_prdt_table_past_ram_end_fails_with_bm_error(tmp_path):
    rig = make(tmp_path, mem_size=1 * MiB)
    end = rig.mem.size - 16                     # two zero PRDs without EOT, then the end of RAM
    rig.mem.fill(end, 16, 0)
    # 3 PRDs of 64 KiB would describe enough; the walk reads the third entry past the end of RAM
    status = send_dma_request(rig, 0xC8, 0, 0, [], prdt_addr=end)
    assert status & BM_ERROR and status & BM_INTR and not status & BM_ACTIVE
    assert rig.channel.io_read(1) == L.ERROR_ABRT


@pytest.mark.parametrize("cmd", [0xCA, 0xC8])
def test_prd_address_past_ram_fails_and_leaves_image_and_ram(tmp_path, cmd):
    rig = make(tmp_path, mem_size=1 * MiB)
    rig.device.drive.write(0, b"\x11" * 1024)
    status = send_dma_request(rig, cmd, 0, 2, [(0x80000, 512), (0xFFF00000, 512 | EOT << 16)], prdt_addr=0x1000)
    assert status == BM_INTR | BM_ERROR
    assert rig.channel.io_read(REG_CONTROL) == 0x41
    assert rig.channel.io_read(1) == L.ERROR_ABRT
    assert rig.image(0, 1024) == b"\x11" * 1024


# -- LBA48 above 2^28 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dma", [True, False])
def test_lba48_above_2_28_on_a_sparse_200_gib_raw(tmp_path, dma):
    rig = make(tmp_path, "raw", size=200 * GiB)
    lba = (1 << 28) + 12345
    data = pattern(20 * 512, seed=9)
    outcome = rig.run(rig.driver.write(lba, data, dma=dma))
    assert outcome.ok
    assert rig.image(lba * 512, len(data)) == data
    assert rig.image((lba & 0x0FFFFFFF) * 512, 512) == bytes(512)     # no LBA28 wrap-around
    outcome = rig.run(rig.driver.read(lba, 20, dma=dma))
    assert outcome.ok and outcome.data_in == data
    # the HOB bytes read back: the LBA registers point past the transfer
    ch = rig.channel
    ch.io_write(REG_CONTROL, L.CONTROL_HOB)
    hob = ch.io_read(3) | ch.io_read(4) << 8 | ch.io_read(5) << 16
    ch.io_write(REG_CONTROL, 0)
    low = ch.io_read(3) | ch.io_read(4) << 8 | ch.io_read(5) << 16
    assert hob << 24 | low == lba + 20
    assert os.stat(rig.path).st_blocks * 512 < 1 * MiB


@pytest.mark.parametrize("lba,count,ext", [((1 << 28) - 3, 1, False), ((1 << 28) - 2, 1, True),
                                           ((1 << 28) - 258, 256, False), ((1 << 28) - 257, 256, True)])
def test_lba28_only_for_commands_ending_below_0fffffff(tmp_path, lba, count, ext):
    """Linux's lba_28_ok: block + n_block < (1 << 28) - 1, so a command touching sector 0FFFFFFEh goes LBA48."""
    rig = make(tmp_path, "raw", size=200 * GiB)
    rig.run(rig.driver.identify())
    regs = rig.driver._rw_regs(lba, count, write=False, dma=True)
    assert regs.command == (L.AtaCommand.READ_DMA_EXT if ext else L.AtaCommand.READ_DMA)


def test_lba48_out_of_range_reports_the_lba(tmp_path):
    rig = make(tmp_path)
    regs = AtaRegisters(0x25, lba=SECTORS - 1, count=2, device=L.DEVICE_LBA)
    outcome = rig.run(rig.driver.raw(regs, None, 1024, dma=True))
    assert (outcome.status, outcome.error, outcome.lba) == (0x41, L.ERROR_ABRT, SECTORS - 1)
    assert outcome.bm_status == BM_INTR


# -- PIO -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("write, read, block", [(0x30, 0x20, 1), (0x34, 0x24, 1), (0xC5, 0xC4, 16), (0x39, 0x29, 16)])
def test_pio_write_then_read_several_sectors(tmp_path, fmt, write, read, block):
    rig = make(tmp_path, fmt)
    rig.run(rig.driver.identify())
    n = 40
    data = pattern(n * 512, seed=3)
    before = rig.irq.raises
    outcome = rig.run(rig.driver.raw(AtaRegisters(write, lba=100, count=n, device=L.DEVICE_LBA), data, 0, dma=False))
    assert (outcome.status, outcome.error) == (0x50, 0)
    assert rig.irq.raises - before == -(-n // block)         # one interrupt per block written
    assert rig.image(100 * 512, n * 512) == data
    before = rig.irq.raises
    outcome = rig.run(rig.driver.raw(AtaRegisters(read, lba=100, count=n, device=L.DEVICE_LBA), None, n * 512,
                                     dma=False))
    assert (outcome.status, outcome.error, outcome.data_in) == (0x50, 0, data)
    assert rig.irq.raises - before == -(-n // block)         # one interrupt per block ready


def test_pio_driver_uses_read_write_multiple(tmp_path):
    rig = make(tmp_path)
    data = pattern(33 * 512)
    assert rig.run(rig.driver.write(7, data, dma=False)).ok
    outcome = rig.run(rig.driver.read(7, 33, dma=False))
    assert outcome.ok and outcome.data_in == data


def test_pio_write_crossing_capacity_aborts_at_the_bad_block_and_writes_nothing(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    lba = SECTORS - 2
    for reg, value in ((2, 4), (3, lba & 0xFF), (4, (lba >> 8) & 0xFF), (5, lba >> 16), (6, L.DEVICE_LBA), (7, 0x30)):
        ch.io_write(reg, value)
    blocks = 0
    while ch.io_read(REG_CONTROL) & DRQ:
        for _ in range(256):
            ch.io_write(0, 0xABCD, 2)
        blocks += 1
        ch.io_read(7)
    assert blocks == 3                            # QEMU checks each block: the third is past the end
    assert (ch.io_read(7), ch.io_read(1)) == (0x41, L.ERROR_ABRT)
    assert rig.image((SECTORS - 2) * 512) == bytes(1024)
    # the task file points at the refused block, as QEMU's ide_sector_write leaves it
    assert ch.io_read(3) | ch.io_read(4) << 8 | ch.io_read(5) << 16 == SECTORS


def test_pio_read_crossing_capacity_delivers_the_good_blocks_then_aborts(tmp_path):
    rig = make(tmp_path)
    rig.device.drive.write((SECTORS - 2) * 512, b"\x42" * 1024)
    regs = AtaRegisters(0x20, lba=SECTORS - 2, count=4, device=L.DEVICE_LBA)
    outcome = rig.run(rig.driver.raw(regs, None, 4 * 512, dma=False))
    assert (outcome.status, outcome.error) == (0x41, L.ERROR_ABRT)
    assert outcome.data_in == b"\x42" * 1024


def test_data_port_direction_and_drq_rules(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    ch.io_write(0, 0x1234, 2)                     # no DRQ: ignored
    ch.io_write(6, L.DEVICE_LBA)
    ch.io_write(2, 1)
    ch.io_write(7, 0x20)
    ch.io_write(0, 0xFFFF, 2)                     # a write during PIO-in is ignored
    assert ch.io_read(0, 4) == int.from_bytes(rig.image(0, 4), "little")   # 32-bit data port
    assert ch.io_read(0, 1) == 0xFF               # a byte access to the data port is not the data port
    ch.io_write(1, 0x99)                          # command-block writes are ignored while DRQ
    assert ch.io_read(1) == 0


# -- registers -------------------------------------------------------------------------------------------------------
def test_hob_fifo_and_control(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    for reg, (hi, lo) in {1: (0x11, 0x22), 2: (0x33, 0x44), 3: (0x55, 0x66), 4: (0x77, 0x88), 5: (0x99, 0xAA)}.items():
        ch.io_write(reg, hi)
        ch.io_write(reg, lo)
    ch.io_write(REG_CONTROL, L.CONTROL_HOB)
    assert [ch.io_read(r) for r in range(1, 6)] == [0x11, 0x33, 0x55, 0x77, 0x99]
    ch.io_write(6, 0x40)                          # any command-block write clears HOB
    assert [ch.io_read(r) for r in range(2, 6)] == [0x44, 0x66, 0x88, 0xAA]
    assert ch.io_read(6) == 0xE0                  # QEMU ORs 0xA0 into the device register


def test_nien_suppresses_the_interrupt_and_status_read_acks(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    ch.io_write(REG_CONTROL, L.CONTROL_NIEN)
    ch.io_write(7, 0xE7)                          # FLUSH CACHE
    assert not rig.irq.level and not ch.bm_read(L.BM_STATUS) & BM_INTR
    assert ch.io_read(7) == 0x50
    ch.io_write(REG_CONTROL, 0)
    ch.io_write(7, 0xE7)
    assert rig.irq.level
    assert ch.io_read(REG_CONTROL) == 0x50 and rig.irq.level     # alternate status does not ack
    assert ch.io_read(7) == 0x50 and not rig.irq.level


def test_software_reset_gives_the_disk_signature(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    ch.io_write(2, 0x12)
    ch.io_write(7, 0x20)                          # a PIO read left in DRQ
    ch.io_write(REG_CONTROL, L.CONTROL_SRST)
    assert ch.io_read(REG_CONTROL) & BSY
    rig.sim.run()
    ch.io_write(REG_CONTROL, 0)
    assert (ch.io_read(7), ch.io_read(1)) == (0x50, 0x01)
    assert [ch.io_read(r) for r in (2, 3, 4, 5)] == [1, 1, 0, 0]


def test_unknown_command_aborts(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    ch.io_write(7, 0x3D)                          # WRITE DMA FUA EXT: not in QEMU's table
    assert rig.irq.level
    assert (ch.io_read(7), ch.io_read(1)) == (0x41, L.ERROR_ABRT)


def test_command_to_absent_slave_is_ignored(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    ch.io_write(6, L.DEVICE_DEV1)
    ch.io_write(7, L.AtaCommand.IDENTIFY_DEVICE)
    assert not rig.irq.level and rig.irq.raises == 0
    assert ch.io_read(7) == 0 and ch.io_read(REG_CONTROL) == 0 and ch.io_read(1) == 0
    assert ch.io_read(0, 2) == 0
    quick = dataclasses.replace(GUEST, sd=dataclasses.replace(GUEST.sd, command_timeout=1.0))
    slave = PiixDriver(ch, rig.mem, guest=quick, device=1)
    outcome = rig.run(slave.raw(AtaRegisters(0xEC), None, 512, dma=False))
    assert outcome.timed_out and not outcome.ok
    ch.io_write(6, 0)
    assert ch.io_read(7) == 0x50                  # the master is untouched
    assert rig.run(rig.driver.identify()).ok


# -- TRIM end to end -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("discard, freed", [("unmap", True), ("ignore", False)])
def test_trim_through_ide_reclaims_host_space(tmp_path, fmt, discard, freed):
    rig = make(tmp_path, fmt, discard=discard)
    n = 4096                                      # 2 MiB
    assert rig.run(rig.driver.write(0, b"\x5A" * n * 512)).ok
    assert rig.run(rig.driver.flush()).ok
    before = os.stat(rig.path).st_blocks
    outcomes = rig.run(rig.driver.trim([(0, n)]))
    assert len(outcomes) == 1 and all(o.ok and o.bm_status == BM_INTR for o in outcomes)
    assert rig.run(rig.driver.flush()).ok
    after = os.stat(rig.path).st_blocks
    if freed:
        assert after * 512 <= before * 512 - MiB
    else:
        assert after == before
    assert (rig.image(0, n * 512) == bytes(n * 512)) == freed


def test_trim_not_sent_without_trim_advertised(tmp_path):
    rig = make(tmp_path, trim=False)
    assert rig.run(rig.driver.trim([(0, 8)])) == []


def test_dsm_count_zero_completes_without_transfer(tmp_path):
    rig = make(tmp_path)
    rig.device.drive.write(0, b"\x01" * 512)
    outcome = rig.run(rig.driver.raw(AtaRegisters(0x06, features=1, count=0, device=0x40), b"", 0, dma=True))
    assert (outcome.status, outcome.error, outcome.bm_status) == (0x50, 0, BM_INTR)
    assert rig.image(0, 512) == b"\x01" * 512


# -- timing ----------------------------------------------------------------------------------------------------------
def test_read_completes_at_the_modelled_time(tmp_path):
    model = LatencyModel(fixed={"read": 1e-3, "write": 2e-3}, per_byte={"read": 1e-9})
    rig = make(tmp_path, timing=model)
    ch = rig.channel
    rig.device.drive.write(0, b"\x24" * 8 * 512)
    rig.driver.info = parse_identify(rig.device.identify())

    def go():
        start = rig.sim.now
        outcome = yield from rig.driver.read(0, 8, dma=True)
        return outcome, rig.sim.now - start

    proc = rig.sim.process(go())
    rig.sim.run(until=5e-4)
    assert ch.io_read(REG_CONTROL) == 0x58        # DMA in flight: QEMU shows DRDY|DSC|DRQ
    assert ch.bm_read(L.BM_STATUS) == BM_ACTIVE and not rig.irq.level
    outcome, elapsed = rig.sim.run(until=proc)
    assert outcome.ok and outcome.data_in == b"\x24" * 8 * 512
    assert elapsed == pytest.approx(model.cost("read", 8 * 512))
    assert rig.irq.history[0][0] == pytest.approx(model.cost("read", 8 * 512))


def test_pio_read_is_busy_until_the_modelled_time(tmp_path):
    model = LatencyModel(fixed={"read": 1e-3}, per_byte={})
    rig = make(tmp_path, timing=model)
    ch = rig.channel
    ch.io_write(6, L.DEVICE_LBA)
    ch.io_write(2, 2)
    ch.io_write(7, 0x20)
    assert ch.io_read(REG_CONTROL) & BSY and not rig.irq.level
    ch.io_write(7, 0xE7)                          # a command while BSY is ignored
    rig.sim.run(until=2e-3)
    assert rig.irq.history[0][0] == pytest.approx(1e-3)
    assert ch.io_read(7) == 0x58


def test_bm_stop_drains_a_dma_in_flight(tmp_path):
    model = LatencyModel(fixed={"write": 1.0}, per_byte={})
    rig = make(tmp_path, timing=model)
    ch, mem = rig.channel, rig.mem
    mem.pack(PRD, 0x100000, 0x200000, 512, EOT)
    mem.fill(0x200000, 512, 0x66)
    ch.bm_write(L.BM_PRDT, 0x100000, 4)
    ch.io_write(6, L.DEVICE_LBA)
    ch.io_write(2, 1)
    ch.io_write(3, 0)                             # after reset the sector register holds the signature's 1
    ch.io_write(7, 0xCA)
    ch.bm_write(L.BM_CMD, L.BM_CMD_START)
    assert rig.image(0, 512) == b"\x66" * 512     # the effect happens at the start
    assert not rig.irq.level
    ch.bm_write(L.BM_CMD, 0)                      # ide_cancel_dma_sync: the request completes now
    assert rig.irq.level and ch.bm_read(L.BM_STATUS) == BM_INTR
    assert ch.io_read(7) == 0x50


# -- fuzz: random port traffic never raises and never writes the image except by a valid write -----------------------
class SpyDevice(AtaDevice):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    def execute(self, regs, *args, **kwargs):
        result = super().execute(regs, *args, **kwargs)
        self.results.append(result)
        return result


_OPCODES = [0x20, 0x24, 0x25, 0x29, 0x30, 0x34, 0x35, 0x39, 0xC4, 0xC5, 0xC8, 0xCA, 0x06, 0xE7, 0xEA, 0xEC, 0xEF,
            0x90, 0x27, 0xF8, 0x40, 0x3D, 0x00, 0xFF]
_op = st.one_of(
    st.tuples(st.just("io_w"), st.sampled_from([1, 2, 3, 4, 5, 6, REG_CONTROL, 9]), st.integers(0, 0xFF),
              st.just(1)),
    st.tuples(st.just("io_w"), st.sampled_from([0, 2, 7]), st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("io_w"), st.just(7), st.sampled_from(_OPCODES), st.just(1)),
    st.tuples(st.just("io_w"), st.just(3), st.integers(0, 7), st.just(1)),
    st.tuples(st.just("io_r"), st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, REG_CONTROL, 12]), st.just(0),
              st.sampled_from([1, 2, 4])),
    st.tuples(st.just("bm_w"), st.integers(0, 7), st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(0, 0x20000)),
              st.sampled_from([1, 2, 4])),
    st.tuples(st.just("bm_w"), st.just(0), st.sampled_from([0, 1, 8, 9]), st.just(1)),
    st.tuples(st.just("bm_r"), st.integers(0, 7), st.just(0), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("run"), st.just(0), st.integers(1, 2000), st.just(0)),
    # guest-memory and multi-access steps, so that valid and nearly valid commands happen too
    st.tuples(st.just("taskfile"), st.integers(0, 2100), st.integers(0, 20), st.sampled_from([0x40, 0x50, 0x00])),
    st.tuples(st.just("prd"), st.integers(0, 63), st.integers(0, 0x40000),
              st.integers(0, 0xFFFF).map(lambda n: n | (1 << 31)) | st.integers(0, 0xFFFF)),
    st.tuples(st.just("command"), st.integers(0, 2100), st.integers(0, 20), st.sampled_from([0x30, 0x34, 0xC5, 0x39,
                                                                                            0xCA, 0x35, 0x06])),
    st.tuples(st.just("data"), st.integers(1, 600), st.integers(0, 0xFFFF), st.sampled_from([2, 4])),
)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
@given(ops=st.lists(_op, max_size=80), timed=st.booleans(), seed=st.integers(0, 255))
def test_random_port_traffic_never_raises_or_corrupts(ops, timed, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "disk.raw")
        create_image(path, "raw", 1 * MiB)
        drive = Drive(open_image(path, "raw"), DriveOptions(discard="ignore"))
        device = SpyDevice(drive, AtaConfig(capacity_sectors=2048))
        before = bytearray(pattern(1 * MiB, seed))
        drive.write(0, bytes(before))
        sim = Simulation()
        mem = GuestMemory(256 * 1024)
        mem.write(0, pattern(mem.size, seed + 1))
        irq = InterruptLine(sim, "ide0")
        ch = IdeChannel(sim, mem, irq, (device, None), LatencyModel() if timed else None)
        for kind, offset, value, size in ops:
            if kind == "io_w":
                ch.io_write(offset, value, size)
            elif kind == "io_r":
                ch.io_read(offset, size)
            elif kind == "bm_w":
                ch.bm_write(offset, value, size)
            elif kind == "bm_r":
                ch.bm_read(offset, size)
            elif kind == "taskfile":        # LBA `offset`, count `value`, device register `size`
                for reg, byte in ((2, value), (3, offset & 0xFF), (4, offset >> 8), (5, 0), (6, size)):
                    ch.io_write(reg, byte)
            elif kind == "command":         # a write-ish command `size` at LBA `offset`, count `value`
                for reg, byte in ((2, value), (3, offset & 0xFF), (4, offset >> 8), (5, 0), (6, 0x40), (1, 1),
                                  (7, size)):
                    ch.io_write(reg, byte)
            elif kind == "prd":             # PRD number `offset` of a table at 0x1000: address, size with EOT bit
                mem.pack(struct.Struct("<II"), 0x1000 + 8 * offset, value, size)
                ch.bm_write(L.BM_PRDT, 0x1000, 4)
            elif kind == "data":            # `offset` data-port writes (and as many reads) of `size` bytes
                for _ in range(offset):
                    ch.io_write(0, value, size)
                    ch.io_read(0, size)
            else:
                sim.run(until=sim.now + value * 1e-6)
        sim.run(until=sim.now + 1.0)
        for result in device.results:
            for done in result.completions:
                if done.request.op is Op.WRITE and done.ok:
                    assert result.ok
                    before[done.request.offset:done.request.offset + done.request.length] = done.request.payload
        assert drive.read(0, 1 * MiB).data == bytes(before)
        drive.close()
        mem.close()


def test_outcome_ok_property():
    assert AtaOutcome(0x50, 0).ok
    assert not AtaOutcome(0x41, 4).ok
    assert not AtaOutcome(0x50, 0, timed_out=True).ok


# -- SMART over the task file (smartctl's path: CHS-mode device register, LBA mid/high 4F/C2) ------------------
def test_smart_read_data_and_return_status_through_the_ports(tmp_path):
    rig = make(tmp_path)
    ch = rig.channel
    for reg, value in ((1, 0xD0), (2, 1), (3, 0), (4, 0x4F), (5, 0xC2), (6, 0xA0)):
        ch.io_write(reg, value)
    ch.io_write(7, L.AtaCommand.SMART)
    rig.sim.run()
    assert ch.io_read(7) & (DRDY | DRQ) == DRDY | DRQ
    page = struct.pack("<256H", *(ch.io_read(0, 2) for _ in range(256)))
    assert page == rig.device.smart.data_page()
    assert ch.io_read(7) == 0x50
    assert [ch.io_read(r) for r in (3, 4, 5, 6)] == [0, 0x4F, 0xC2, 0xA0]   # a page: the task file stays
    rig.device.smart.errors = 1
    out = rig.run(rig.driver.raw(AtaRegisters(0xB0, features=0xDA, lba=0xC24F00), None, 0))
    assert out.ok and (ch.io_read(4), ch.io_read(5)) == (0xF4, 0x2C)      # RETURN STATUS: threshold exceeded
    out = rig.run(rig.driver.raw(AtaRegisters(0xB0, features=0xD0, lba=0x4F00), None, 512))
    assert (out.status, out.error) == (0x41, L.ERROR_ABRT)                  # no C2: abort, no data phase
