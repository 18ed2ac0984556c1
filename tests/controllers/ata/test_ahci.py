"""The AHCI HBA (QEMU ich9-ahci) and its Linux-style guest driver, in the spirit of QEMU's
tests/qtest/ahci-test.c, over real raw and qcow2 images."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.ahci import AhciHba
from controllers.ata import AtaConfig, AtaDevice, AtaRegisters, parse_identify
from controllers.ata import layouts as L
from controllers.drivers.ahci import AhciDriver, _rw_registers
from emu.block import Drive, DriveOptions
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from images import create_image, open_image
from scenarios.profiles import guest_config
from scenarios.profiles.ata import ahci_config

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SIZE = 16 * MiB
RAM = 8 * MiB
OK, FAIL = 0x50, 0x41
GUEST = guest_config("linux-6.1")


def make(directory, fmt="raw", size=SIZE, discard="unmap", timing=None, prd_bytes=4 * MiB, start=True,
         serial="testdisk", firmware="version", config=None):
    path = os.path.join(str(directory), f"disk.{fmt}")
    create_image(path, fmt, size)
    drive = Drive(open_image(path, fmt), DriveOptions(discard=discard))
    dev = AtaDevice(drive, AtaConfig(capacity_sectors=size // 512, ncq_depth=32, serial=serial, firmware=firmware))
    sim = Simulation()
    mem = GuestMemory(RAM)
    irq = InterruptLine(sim, "ahci")
    hba = AhciHba(sim, mem, irq, [dev], timing=timing, config=config)
    drv = AhciDriver(sim, mem, hba, irq, guest=GUEST, prd_bytes=prd_bytes)
    env = SimpleNamespace(path=path, drive=drive, dev=dev, sim=sim, mem=mem, irq=irq, hba=hba, drv=drv)
    if start:
        assert run(env, drv.start(0)) is True
    return env


def run(env, gen):
    return env.sim.run(env.sim.process(gen))


def pattern(nbytes, seed=1):
    return bytes((i * 7 + seed + (i >> 9)) & 0xFF for i in range(nbytes))


def px(env, reg, port=0):
    return env.hba.mmio_read(L.port_register(port, reg), 4)


@pytest.fixture(params=["raw", "qcow2"])
def fmt(request):
    return request.param


# -- /ahci/hba_spec, /ahci/hba_enable -------------------------------------------------------------------

def test_hba_spec_reset_values(tmp_path):
    env = make(tmp_path, start=False)
    hba = env.hba
    assert hba.mmio_read(L.HBA_CAP) == 0xC0141F05          # NP=5, NCS=31, Gen1, SAM, SNCQ, S64A
    assert hba.mmio_read(L.HBA_GHC) == L.GHC_AE             # HR, IE, MRSM clear; AE set
    assert hba.mmio_read(L.HBA_IS) == 0
    assert hba.mmio_read(L.HBA_PI) == 0x3F
    assert hba.mmio_read(L.HBA_VS) == L.VS_AHCI_1_0
    for reg in (L.HBA_CCC_CTL, L.HBA_CCC_PORTS, L.HBA_EM_LOC, L.HBA_EM_CTL, L.HBA_CAP2, L.HBA_BOHC):
        assert hba.mmio_read(reg) == 0
    for port in range(6):
        regs = {r: px(env, r, port) for r in (L.PX_CLB, L.PX_CLBU, L.PX_FB, L.PX_FBU, L.PX_IS, L.PX_IE, L.PX_CMD,
                                                L.PX_TFD, L.PX_SIG, L.PX_SSTS, L.PX_SCTL, L.PX_SERR, L.PX_SACT,
                                                L.PX_CI, L.PX_SNTF)}
        assert regs[L.PX_CMD] == L.PXCMD_SUD | L.PXCMD_POD   # FRE/CR/FR/ST/CCS/ATAPI/ICC clear
        assert regs[L.PX_TFD] == 0x7F                        # ERR, DRQ, 0x06/0x70 set, BSY clear
        assert regs[L.PX_SIG] == 0xFFFFFFFF
        assert regs[L.PX_SSTS] == (0x113 if port == 0 else 0)
        assert all(regs[r] == 0 for r in (L.PX_CLB, L.PX_CLBU, L.PX_FB, L.PX_FBU, L.PX_IS, L.PX_IE, L.PX_SCTL,
                                          L.PX_SERR, L.PX_SACT, L.PX_CI, L.PX_SNTF))
    assert hba.mmio_read(L.port_register(6, L.PX_CMD)) == 0   # unimplemented ports read 0
    assert hba.mmio_read(0xA0) == 0                          # reserved area
    assert hba.mmio_read(L.HBA_CAP, 8) == 0x80000000_C0141F05   # 8-byte reads assemble two registers
    assert hba.mmio_read(L.HBA_CAP + 1, 1) == 0x1F
    hba.mmio_write(L.HBA_CAP, 0, 4)                          # read-only
    hba.mmio_write(L.HBA_GHC + 1, 0xFF, 1)                   # misaligned: dropped
    assert hba.mmio_read(L.HBA_CAP) == 0xC0141F05 and hba.mmio_read(L.HBA_GHC) == L.GHC_AE


def test_hba_enable_and_initial_d2h(tmp_path):
    env = make(tmp_path)
    drv, mem = env.drv, env.mem
    cmd = px(env, L.PX_CMD)
    assert cmd & L.PXCMD_FRE and cmd & L.PXCMD_FR and cmd & L.PXCMD_ST and cmd & L.PXCMD_CR
    assert px(env, L.PX_CLB) == drv.clb and px(env, L.PX_FB) == drv.fb
    assert px(env, L.PX_SSTS) & 0xF == 3
    assert env.hba.mmio_read(L.HBA_GHC) == L.GHC_AE | L.GHC_IE
    # the signature FIS QEMU sends when FIS receive starts (ahci_init_d2h): status 0x30, error 1
    d2h = mem.read(drv.fb + L.RX_FIS_RFIS, 20)
    assert (d2h[0], d2h[2], d2h[3]) == (0x34, 0x30, 0x01)
    assert px(env, L.PX_SIG) == L.SIG_DISK and px(env, L.PX_TFD) == 0x130
    env.hba.mmio_write(L.port_register(0, L.PX_IE), 0xFFFFFFFF)
    assert px(env, L.PX_IE) == L.PXIE_WRITABLE


def test_port_reset_via_sctl_and_ghc_hr(tmp_path):
    env = make(tmp_path)
    assert run(env, env.drv.identify()).ok
    env.hba.mmio_write(L.port_register(0, L.PX_SCTL), 1)
    env.hba.mmio_write(L.port_register(0, L.PX_SCTL), 0)            # DET 1 -> 0: COMRESET
    assert px(env, L.PX_TFD) == 0x130 and px(env, L.PX_SIG) == L.SIG_DISK   # FRE on: signature FIS again
    env.hba.mmio_write(L.HBA_GHC, L.GHC_HR)
    assert env.hba.mmio_read(L.HBA_GHC) == L.GHC_AE
    assert px(env, L.PX_CMD) == L.PXCMD_SUD | L.PXCMD_POD and px(env, L.PX_TFD) == 0x7F
    assert px(env, L.PX_IE) == 0 and not env.irq.level
    # /ahci/reset/simple: enable again and do I/O
    assert run(env, env.drv.start(0)) is True
    assert run(env, env.drv.write(8, pattern(4096))).ok
    assert run(env, env.drv.read(8, 8)).data_in == pattern(4096)


# -- /ahci/identify, /ahci/max ---------------------------------------------------------------------------

def test_identify_by_pio(tmp_path):
    env = make(tmp_path)
    out = run(env, env.drv.identify())
    assert out.ok and (out.status, out.error) == (OK, 0)
    assert out.port_is == L.PXIS_PSS | L.PXIS_DHRS
    assert out.prdbc == 512 and out.ci == 0 and out.serr == 0
    assert out.data_in == env.dev.identify()
    ident = parse_identify(out.data_in)
    assert ident["serial"] == "testdisk" and ident["firmware"] == "version"
    assert int.from_bytes(out.data_in[10:12], "little") == 512           # word 5
    pio = L.ATA_PIO_SETUP_FIS.parse(out.pio_fis)
    assert pio.transfer_count == 512 and pio.e_status == 0x58 and pio.i
    d2h = L.ATA_D2H_FIS.parse(out.d2h_fis)
    assert (d2h.status, d2h.error) == (out.tfd & 0xFF, out.tfd >> 8) and d2h.i


@pytest.mark.parametrize("size, command", [(SIZE, 0x27), (SIZE, 0xF8), (200 * GiB, 0x27)])
def test_read_native_max(tmp_path, size, command):
    env = make(tmp_path, size=size)
    out = run(env, env.drv.raw(AtaRegisters(command, device=L.DEVICE_LBA), None, 0))
    assert out.ok and out.port_is == L.PXIS_DHRS
    expected = size // 512 - 1
    assert out.lba == (expected if command == 0x27 else expected & (L.LBA28_LIMIT - 1))


@pytest.mark.parametrize("lba,count,ext", [((1 << 28) - 3, 1, False), ((1 << 28) - 2, 1, True),
                                           ((1 << 28) - 258, 256, False), ((1 << 28) - 257, 256, True)])
def test_the_driver_uses_lba28_only_for_commands_ending_below_0fffffff(lba, count, ext):
    """Linux's lba_28_ok: block + n_block < (1 << 28) - 1, so a command touching sector 0FFFFFFEh goes LBA48."""
    regs = _rw_registers(lba, count, GUEST.libata, write=True, ncq=False)
    assert regs.command == (L.AtaCommand.WRITE_DMA_EXT if ext else L.AtaCommand.WRITE_DMA)


# -- /ahci/io/{pio,dma}/{lba28,lba48}/{simple,double,long,short}/{zero,low,high} ----------------------------

SIZES = {"simple": 4096, "double": 8192, "long": 128 * KiB, "short": 512}


@pytest.mark.parametrize("proto", ["dma", "pio"])
@pytest.mark.parametrize("lba48", [False, True], ids=["lba28", "lba48"])
@pytest.mark.parametrize("length", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("offset", ["zero", "low", "high"])
def test_io(tmp_path, proto, lba48, length, offset):
    nbytes = SIZES[length] * (2 if lba48 and length == "long" else 1)
    size = 200 * GiB if lba48 and offset == "high" else SIZE      # a sparse 200 GiB raw for LBA48 high
    env = make(tmp_path, size=size)
    sectors = size // 512
    lba = {"zero": 0, "low": 10, "high": sectors - nbytes // 512}[offset]
    data = pattern(nbytes, seed=nbytes % 251)
    out = run(env, env.drv.write(lba, data, pio=proto == "pio", lba48=lba48))
    assert out.ok and (out.status, out.error) == (OK, 0) and out.prdbc == nbytes and out.ci == 0
    expected_is = L.PXIS_DHRS | (L.PXIS_PSS if proto == "pio" and nbytes > 512 else 0)
    assert out.port_is == expected_is
    command = env.hba.records[-1].command
    assert (command in (0x24, 0x25, 0x34, 0x35)) == lba48
    out = run(env, env.drv.read(lba, nbytes // 512, pio=proto == "pio", lba48=lba48))
    assert out.ok and out.data_in == data and out.prdbc == nbytes
    assert out.port_is == L.PXIS_DHRS | (L.PXIS_PSS if proto == "pio" else 0)
    assert env.drive.read(lba * 512, nbytes).data == data


def test_fragmented_prdt_32_byte_entries(tmp_path, fmt):
    env = make(tmp_path, fmt, prd_bytes=32)
    data = pattern(4096, seed=9)
    out = run(env, env.drv.write(100, data))
    assert out.ok and out.prdbc == 4096
    out = run(env, env.drv.read(100, 8))
    assert out.ok and out.data_in == data and out.prdbc == 4096
    assert env.drive.read(100 * 512, 4096).data == data


def test_flush(tmp_path, fmt):
    env = make(tmp_path, fmt)
    assert run(env, env.drv.write(0, pattern(512))).ok
    out = run(env, env.drv.flush())
    assert out.ok and out.port_is == L.PXIS_DHRS and out.prdbc == 0
    assert env.hba.records[-1].command == 0xEA


# -- NCQ -------------------------------------------------------------------------------------------------

def test_ncq_simple(tmp_path, fmt):
    env = make(tmp_path, fmt)
    assert run(env, env.drv.identify()).ok
    data = pattern(4096, seed=3)
    out = run(env, env.drv.write(64, data, ncq=True))
    assert out.ok and out.sact == 0 and out.ci == 0
    assert out.port_is & L.PXIS_SDBS and not out.port_is & (L.PXIS_DHRS | L.PXIS_TFES)
    sdb = L.ATA_SDB_FIS.parse(out.sdb_fis)
    assert sdb.sactive == 1 and sdb.status == OK and sdb.i
    out = run(env, env.drv.read(64, 8, ncq=True))
    assert out.ok and out.data_in == data and out.tfd == OK


def test_ncq_tags_overlap_in_simulated_time(tmp_path):
    model = LatencyModel(fixed={"read": 1.0}, per_byte={})
    env = make(tmp_path, timing=model)
    assert run(env, env.drv.write(0, pattern(32 * 512))).ok
    t0 = env.sim.now
    outs = run(env, env.drv.ncq_batch([("read", i * 4, 4) for i in range(8)]))
    assert all(o.ok for o in outs)
    assert [o.data_in for o in outs] == [pattern(32 * 512)[i * 2048:(i + 1) * 2048] for i in range(8)]
    ncq = [r for r in env.hba.records if r.ncq]
    assert len(ncq) == 8 and {r.slot for r in ncq} == set(range(8))
    assert all(r.issue_time == t0 and r.done_time == t0 + 1.0 for r in ncq)   # all eight overlap
    assert env.sim.now == t0 + 1.0
    # the same reads without NCQ: one after another
    t1 = env.sim.now
    for i in range(4):
        assert run(env, env.drv.read(i * 4, 4)).ok
    assert env.sim.now == t1 + 4.0


def test_non_ncq_slots_run_one_after_another(tmp_path):
    """Two slots issued with one PxCI write: the second starts when the first completes (check_cmd bh)."""
    env = make(tmp_path, timing=LatencyModel(fixed={"read": 1.0}, per_byte={}))
    drv, mem = env.drv, env.mem
    tables = []
    for slot in (0, 1):
        buf = mem.alloc(512)
        table = mem.alloc(0x80 + 16, align=128)
        tables += [buf, table]
        mem.fill(table, 0x80, 0)
        mem.write(table, L.ATA_H2D_FIS.build(dict(command=0xC8, features=0, lba=slot, device=0x40, count=1)))
        mem.write(table + 0x80, L.AHCI_PRDT_ENTRY.build(dict(dba=buf, dbc=511)))
        mem.write(drv.clb + 32 * slot, L.AHCI_CMD_HEADER.build(dict(cfl=5, prdtl=1, ctba=table)))
    env.hba.mmio_write(L.port_register(0, L.PX_CI), 0b11)
    env.sim.run()
    reads = env.hba.records[-2:]
    assert [(r.slot, r.issue_time, r.done_time) for r in reads] == [(0, 0.0, 1.0), (1, 1.0, 2.0)]
    assert px(env, L.PX_CI) == 0


# -- TRIM ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_trim_reclaims_host_space_only_with_unmap(tmp_path, fmt, discard):
    env = make(tmp_path, fmt, discard=discard)
    data = pattern(4 * MiB, seed=5)
    for off in range(0, 4 * MiB, 128 * KiB):
        assert run(env, env.drv.write((MiB + off) // 512, data[off:off + 128 * KiB], lba48=True)).ok
    assert run(env, env.drv.flush()).ok
    before = os.stat(env.path).st_blocks
    outs = run(env, env.drv.trim([(MiB // 512, 4 * MiB // 512)]))
    assert len(outs) == 1 and outs[0].ok and outs[0].port_is == L.PXIS_DHRS
    assert run(env, env.drv.flush()).ok
    after = os.stat(env.path).st_blocks
    read = run(env, env.drv.read(MiB // 512, 256, lba48=True))
    assert read.ok
    if discard == "unmap":
        assert after <= before - (4 * MiB // 512) * 9 // 10
        assert read.data_in == bytes(128 * KiB)
    else:
        assert after == before
        assert read.data_in == data[:128 * KiB]


@pytest.mark.parametrize("ranges, dsm_commands", [
    ([(i * 16, 8) for i in range(5)], 5),                       # separate ranges: a request, so a DSM, each
    ([(0, 8), (8, 8), (16, 8)], 1),                             # contiguous ones merge into one WRITE SAME(16)
    ([(0, 70 * 65535)], 2),                                     # 64 entries of 65535 sectors fill one DSM
])
def test_trim_sends_one_dsm_per_block_layer_request(tmp_path, ranges, dsm_commands):
    env = make(tmp_path, size=3 << 30)                          # sparse: room for a 2 GiB DSM
    outs = run(env, env.drv.trim(ranges))
    assert len(outs) == dsm_commands and all(o.ok for o in outs)
    assert [r.command for r in env.hba.records[-dsm_commands:]] == [0x06] * dsm_commands


# -- errors ----------------------------------------------------------------------------------------------

def test_unsupported_opcode_sets_tfes_and_keeps_ci(tmp_path):
    env = make(tmp_path)
    out = run(env, env.drv.raw(AtaRegisters(0x3D, device=L.DEVICE_LBA), None, 0))   # WRITE DMA FUA EXT
    assert not out.ok and (out.status, out.error) == (FAIL, L.ERROR_ABRT)
    assert out.tfd == L.ERROR_ABRT << 8 | FAIL
    assert out.port_is & L.PXIS_TFES and not out.port_is & L.PXIS_DHRS          # one or the other (8.2)
    assert out.ci & 1 and out.serr == 0                                         # PxCI stays set (8.2)
    d2h = L.ATA_D2H_FIS.parse(out.d2h_fis)
    assert (d2h.status, d2h.error) == (FAIL, L.ERROR_ABRT)
    assert px(env, L.PX_CI) == 0                                                # cleared by recovery
    assert run(env, env.drv.read(0, 1)).ok


def test_out_of_range_dma_and_ncq(tmp_path):
    env = make(tmp_path)
    before = hashlib.sha256(env.drive.read(0, SIZE).data).digest()
    out = run(env, env.drv.write(SIZE // 512 - 1, pattern(1024)))
    assert not out.ok and (out.status, out.error) == (FAIL, L.ERROR_ABRT) and out.ci & 1 and out.prdbc == 0
    out = run(env, env.drv.write(SIZE // 512 - 1, pattern(1024), ncq=True))
    assert not out.ok and out.sact & 1 and out.port_is & L.PXIS_TFES               # PxSACT stays set
    assert L.ATA_SDB_FIS.parse(out.sdb_fis).sactive == 0
    assert hashlib.sha256(env.drive.read(0, SIZE).data).digest() == before
    assert run(env, env.drv.identify()).ok and run(env, env.drv.read(0, 1, ncq=True)).ok


@pytest.mark.parametrize("ncq", [False, True])
def test_prdt_beyond_ram_and_short_prdt_are_errors(tmp_path, ncq):
    env = make(tmp_path)
    assert run(env, env.drv.identify()).ok
    before = hashlib.sha256(env.drive.read(0, SIZE).data).digest()
    regs = (AtaRegisters(0x61, features=8, lba=0, count=0, device=0x40) if ncq
            else AtaRegisters(0x35, lba=0, count=8, device=0x40))
    out = run(env, env.drv.raw(regs, pattern(4096), 0, prdt=[(RAM + 4096, 4096)]))
    assert not out.ok and out.port_is & L.PXIS_HBFS and out.port_is & L.PXIS_TFES
    assert out.tfd == L.ERROR_ABRT << 8 | FAIL
    out = run(env, env.drv.raw(regs, pattern(4096), 0, prdt=[(RAM - 2048, 2048), (RAM, 2048)]))
    assert not out.ok and out.port_is & L.PXIS_HBFS
    out = run(env, env.drv.raw(regs, pattern(4096), 0, prdt=[(0x10000, 512)]))
    assert not out.ok and out.port_is & L.PXIS_OFS and (ncq or out.port_is & L.PXIS_TFES)
    out = run(env, env.drv.raw(regs, pattern(4096), 0, prdt=[]))
    assert not out.ok and out.port_is & L.PXIS_OFS
    assert hashlib.sha256(env.drive.read(0, SIZE).data).digest() == before
    assert run(env, env.drv.identify()).ok


def test_dropped_fis_times_out_and_recovers(tmp_path):
    """QEMU ignores a FIS with a PM port or reserved bits set: no completion; the driver times out and resets."""
    env = make(tmp_path)
    fis = bytearray(L.ATA_H2D_FIS.build(dict(command=0xEC, features=0, lba=0, device=0, count=0)))
    fis[1] |= 0x01
    out = run(env, env.drv.raw(None, None, 512, fis=bytes(fis)))
    assert out.timed_out and not out.ok and out.ci & 1
    assert run(env, env.drv.identify()).ok


def test_fre_off_means_no_fis_no_tfd_update_no_interrupt(tmp_path):
    """ahci_write_fis_d2h/pio return early without FIS receive: the command completes (PxCI cleared) silently."""
    env = make(tmp_path)
    env.hba.mmio_write(L.port_register(0, L.PX_CMD), px(env, L.PX_CMD) & ~L.PXCMD_FRE)
    assert not px(env, L.PX_CMD) & L.PXCMD_FR
    tfd, raises = px(env, L.PX_TFD), env.irq.raises
    out = run(env, env.drv.identify())
    assert out.ok and out.ci == 0 and out.port_is == 0 and out.tfd == tfd and env.irq.raises == raises


# -- fuzzing -----------------------------------------------------------------------------------------------

FUZZ_DISK = 1 * MiB

fis_bytes = st.builds(
    lambda head, cmd, rest: bytes([0x27, head, cmd]) + rest,
    st.sampled_from([0x80, 0x80, 0x80, 0x00, 0x81, 0x90]),
    st.sampled_from([0x06, 0x20, 0x24, 0x25, 0x27, 0x30, 0x35, 0x60, 0x61, 0x63, 0x64, 0xC8, 0xCA, 0xE7, 0xEA,
                     0xEC, 0xEF, 0xF8, 0x00, 0xFF]) | st.integers(0, 255),
    st.binary(min_size=17, max_size=17),
) | st.binary(min_size=0, max_size=24)
prdt_tables = st.none() | st.lists(st.tuples(
    st.sampled_from([0x10000, 0x20000, RAM - 512, RAM, RAM + 4096, 1 << 40, 0]) | st.integers(0, RAM * 2),
    st.sampled_from([1, 512, 4096, 1 << 22]) | st.integers(1, 1 << 22)), max_size=4)


@settings(max_examples=60, deadline=None)
@given(fis=fis_bytes, prdt=prdt_tables, data_len=st.sampled_from([0, 512, 4096]), out=st.booleans(),
       profile=st.sampled_from(["qemu-7.2", "strict"]))
def test_fuzz_raw_fis_and_prdt_never_raise(fis, prdt, data_len, out, profile):
    with tempfile.TemporaryDirectory() as tmp:
        env = make(tmp, size=FUZZ_DISK, config=ahci_config(profile))
        before = env.drive.read(0, FUZZ_DISK).data
        baseline = env.mem.allocated()
        data_out = pattern(data_len) if out and data_len else None
        outcome = run(env, env.drv.raw(None, data_out, 0 if data_out else data_len, fis=fis, prdt=prdt))
        assert env.mem.allocated() == baseline                       # the driver freed its buffers
        assert px(env, L.PX_TFD) & (L.STATUS_BSY | L.STATUS_DRQ) == 0
        if outcome.ok:
            assert not outcome.status & L.STATUS_ERR or len(fis) > 2 and fis[2] in L.NCQ_COMMANDS
        elif len(fis) < 3 or fis[2] != 0x06:                         # a failing DSM may trim earlier entries
            assert env.drive.read(0, FUZZ_DISK).data == before
        # the port still works afterwards
        assert run(env, env.drv.read(0, 1)).ok
        env.drive.close()
        env.mem.close()


# -- SMART and EXECUTE DEVICE DIAGNOSTIC -------------------------------------------------------------------------
def test_smart_pages_and_status_over_ahci(tmp_path):
    env = make(tmp_path)
    out = run(env, env.drv.raw(AtaRegisters(0xB0, features=0xD0, lba=0xC24F00), None, 512))
    assert out.ok and out.data_in == env.dev.smart.data_page() and out.prdbc == 512
    assert L.ATA_PIO_SETUP_FIS.parse(out.pio_fis).transfer_count == 512
    d2h = L.ATA_D2H_FIS.parse(out.d2h_fis)
    assert (d2h.status, d2h.lba & 0xFFFF00) == (OK, 0xC24F00)              # the task file did not advance
    out = run(env, env.drv.raw(AtaRegisters(0xB0, features=0xDA, lba=0xC24F00), None, 0))
    assert out.ok and L.ATA_D2H_FIS.parse(out.d2h_fis).lba & 0xFFFF00 == 0xC24F00


@pytest.mark.parametrize("completes", [False, True], ids=["qemu", "strict"])
def test_execute_device_diagnostic_over_ahci(tmp_path, completes):
    """QEMU never completes 0x90 behind AHCI (no ide_cmd_done): no FIS, PxCI stays set, the driver times out and
    resets; a standard device ends it with a D2H FIS carrying the diagnostic code and the signature."""
    env = make(tmp_path)
    env.dev.config = dataclasses.replace(env.dev.config, diagnostic_completes=completes)
    out = run(env, env.drv.raw(AtaRegisters(0x90, lba=0x123456, count=7, device=0xE0), None, 0))
    if not completes:
        assert out.timed_out and out.ci & 1 and not out.port_is & L.PXIS_DHRS
        assert run(env, env.drv.identify()).ok
        return
    assert out.ok and out.port_is == L.PXIS_DHRS and out.ci == 0
    d2h = L.ATA_D2H_FIS.parse(out.d2h_fis)
    assert (d2h.status, d2h.error, d2h.count, d2h.lba & 0xFFFFFF, d2h.device) == (OK, 0x01, 1, 1, 0xA0)


def test_read_multiple_blocks_follow_set_multiple_mode(tmp_path):
    """The PIO Setup FIS of the last DRQ block: 5 sectors in blocks of 16 are one 2560-byte block; after SET
    MULTIPLE MODE 2 the last block is the fifth sector alone."""
    env = make(tmp_path)
    read_multiple = AtaRegisters(0xC4, lba=0, count=5, device=L.DEVICE_LBA)
    out = run(env, env.drv.raw(read_multiple, None, 5 * 512))
    assert out.ok and L.ATA_PIO_SETUP_FIS.parse(out.pio_fis).transfer_count == 5 * 512
    assert run(env, env.drv.raw(AtaRegisters(0xC6, count=2, device=L.DEVICE_LBA), None, 0)).ok
    out = run(env, env.drv.raw(read_multiple, None, 5 * 512))
    assert out.ok and L.ATA_PIO_SETUP_FIS.parse(out.pio_fis).transfer_count == 512



# -- QEMU 7.2's completion and error semantics (AhciConfig; the tests above are QEMU 8.2 / AHCI 1.3.1) ------------
QEMU_72 = ahci_config("qemu-7.2")        # Debian's 7.2.22: the 8.2 rework backported, DHRS still raised with TFES
# upstream 7.2.0, before the stable series took the rework: the value each qemu-7.2 fact's source gives for 7.2.0
QEMU_720 = dataclasses.replace(QEMU_72, pxci_rule="after-handling", ncq_issue_d2h=False, stop_clears_ci=False,
                               ncq_error="serr-tag", abort_fis_before_err=True)


def test_upstream_7_2_0_unknown_opcode_reports_the_previous_status_the_first_time(tmp_path):
    """Upstream QEMU 7.2.0's ide_abort_command wrote the D2H FIS before setting ERR: the first unknown opcode looks
    successful, a second one in a row shows the ERR status the first left behind (c3461c6264's commit message).
    Debian's 7.2.22 no longer does (the qemu-7.2 profile follows it)."""
    env = make(tmp_path, config=QEMU_720)
    assert run(env, env.drv.identify()).ok
    unknown = AtaRegisters(0x3D, device=L.DEVICE_LBA)
    out = run(env, env.drv.raw(unknown, None, 0))
    assert (out.status, out.error) == (OK, 0) and out.ci == 0 and out.port_is == L.PXIS_DHRS
    out = run(env, env.drv.raw(unknown, None, 0))
    assert (out.status, out.error) == (FAIL, 0)         # the first one's ERR; handle_reg_h2d_fis zeroed the error
    assert out.port_is == L.PXIS_TFES | L.PXIS_DHRS and out.ci == 0       # both interrupts; PxCI cleared anyway
    assert run(env, env.drv.read(0, 1)).ok


def test_qemu_7_2_0_clears_pxci_for_every_handled_command_and_ignored_fis(tmp_path):
    env = make(tmp_path, config=QEMU_720)
    out = run(env, env.drv.write(SIZE // 512 - 1, pattern(1024)))          # out of range: ERR, PxCI cleared
    assert (out.status, out.error) == (FAIL, L.ERROR_ABRT) and out.ci == 0
    assert out.port_is & L.PXIS_TFES and out.port_is & L.PXIS_DHRS
    fis = bytearray(L.ATA_H2D_FIS.build(dict(command=0xEC, features=0, lba=0, device=0, count=0)))
    fis[1] |= 0x01                                                         # a PM port: ignored, PxCI cleared
    out = run(env, env.drv.raw(None, None, 512, fis=bytes(fis)))
    assert out.ci == 0 and out.port_is == 0                                # no FIS, no interrupt
    assert run(env, env.drv.identify()).ok


def test_qemu_7_2_keeps_pxci_after_an_error_and_for_an_ignored_fis(tmp_path):
    """Debian's 7.2.22 (v7.2.6): PxCI clears only on success; an error still raises DHRS beside TFES."""
    env = make(tmp_path, config=QEMU_72)
    out = run(env, env.drv.write(SIZE // 512 - 1, pattern(1024)))
    assert (out.status, out.error) == (FAIL, L.ERROR_ABRT) and out.ci & 1
    assert out.port_is & L.PXIS_TFES and out.port_is & L.PXIS_DHRS
    (tmp_path / "fis").mkdir()
    env = make(tmp_path / "fis", config=QEMU_72)
    fis = bytearray(L.ATA_H2D_FIS.build(dict(command=0xEC, features=0, lba=0, device=0, count=0)))
    fis[1] |= 0x01                                                         # a PM port: ignored, PxCI stays set
    out = run(env, env.drv.raw(None, None, 512, fis=bytes(fis)))
    assert out.ci & 1 and out.timed_out        # as Debian's QEMU 7.2.22 (emu replay --diff): the driver times out
    for head in (bytes([0x34, 0x80]), bytes([0x27, 0x00])):                # another FIS type; the C bit clear
        out = run(env, env.drv.raw(None, None, 512, fis=head + bytes(fis[2:])))
        assert out.ci & 1 and out.timed_out
    assert run(env, env.drv.identify()).ok


def test_qemu_7_2_short_ncq_prdt_raises_ofs_alone(tmp_path):
    """process_ncq_command: a PRDT shorter than the transfer -> ncq_err and OFS, no Set Device Bits FIS, so PxTFD
    keeps the previous status (observed on Debian's QEMU 7.2.22 with emu replay --diff)."""
    env = make(tmp_path, config=QEMU_72)
    before = run(env, env.drv.identify())
    regs = AtaRegisters(0x60, features=8, lba=0, count=2 << 3, device=0x40)
    out = run(env, env.drv.raw(regs, None, 4096, prdt=[(0x10000, 512)]))
    assert not out.ok and out.port_is == L.PXIS_OFS and out.serr == 0
    assert out.tfd == before.tfd and out.sdb_fis == before.sdb_fis and out.sact & 1 << 2
    assert run(env, env.drv.read(0, 1, ncq=True)).ok


def test_qemu_7_2_0_stop_and_reset_leave_pxci(tmp_path):
    env = make(tmp_path, config=QEMU_720)
    port = env.hba.ports[0]
    port.ci = port.sact = 0b100            # as a command whose table QEMU could not map (handle_cmd returns -1)
    env.hba.mmio_write(L.port_register(0, L.PX_CMD), px(env, L.PX_CMD) & ~L.PXCMD_ST)
    assert (px(env, L.PX_CI), px(env, L.PX_SACT)) == (0b100, 0b100)
    port.reset()
    assert px(env, L.PX_CI) == 0b100 and px(env, L.PX_SACT) == 0
    (tmp_path / "strict").mkdir()
    strict = make(tmp_path / "strict")
    strict.hba.ports[0].ci = strict.hba.ports[0].sact = 0b100
    strict.hba.mmio_write(L.port_register(0, L.PX_CMD), px(strict, L.PX_CMD) & ~L.PXCMD_ST)
    assert (px(strict, L.PX_CI), px(strict, L.PX_SACT)) == (0, 0)


def test_qemu_7_2_0_ncq_sends_no_d2h_at_issue_and_reports_errors_in_pxserr(tmp_path):
    env = make(tmp_path, config=QEMU_720)
    before = run(env, env.drv.identify()).d2h_fis
    out = run(env, env.drv.write(8, pattern(4096), ncq=True))
    assert out.ok and out.d2h_fis == before and not out.port_is & L.PXIS_DHRS
    out = run(env, env.drv.write(SIZE // 512 - 1, pattern(1024), ncq=True))
    assert not out.ok and out.serr == 1 << 0                              # tag 0's bit, not a SError code
    assert out.port_is & L.PXIS_SDBS and not out.port_is & L.PXIS_TFES
    env.hba.ports[0].serr = 1                                              # a guest that leaves PxSERR alone:
    out = run(env, env.drv.read(0, 1, ncq=True))                           # tag 0 never shows as finished
    assert not out.ok and out.sact & 1 and L.ATA_SDB_FIS.parse(out.sdb_fis).sactive == 0


def test_driver_sends_no_trim_to_a_disk_without_it(tmp_path):
    """sd leaves provisioning off when IDENTIFY word 169 lacks TRIM (qemu-1.4-pc): the discard never leaves the
    guest, so the image keeps its data."""
    env = make(tmp_path)
    env.dev.config = dataclasses.replace(env.dev.config, trim=False)
    assert run(env, env.drv.write(0, pattern(4096))).ok
    assert run(env, env.drv.trim([(0, 8)])) == []
    assert env.drive.read(0, 4096).data == pattern(4096)
