"""The Linux sd model: provisioning-mode choice per VPD combination and per profile, sd_config_discard's limits,
discard splitting to them, and the commands it sends through virtio-scsi."""

from __future__ import annotations

import dataclasses
import functools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.drivers.sd import (
    READ_CAPACITY_10_CDB,
    RW_10_FAST,
    RW_16_FAST,
    SYNCHRONIZE_CACHE_10_CDB,
    TUR_CDB,
    BlockLimits,
    DiscardLimits,
    Provisioning,
    ProvisioningMode,
    SdDriver,
    SdError,
    discard_limits,
    provisioning_mode,
    unmap_command,
    write_same_command,
)
from controllers.scsi import layouts as L
from controllers.scsi import sense as S
from emu.errors import DriverLayoutError
from scenarios.profiles.virtio_blk import virtio_pci_config
from scenarios.profiles.virtio_scsi import virtio_scsi_config
from tests.virtio_support import GUEST, MiB, close_scsi, make_virtio_scsi, pattern, run

M = ProvisioningMode
LIMITS = BlockLimits(max_xfer_blocks=0, max_unmap_lba_count=2048, max_unmap_descriptors=255, unmap_granularity=8,
                     unmap_alignment=None, max_ws_blocks=4096)
NO_UNMAP = dataclasses.replace(LIMITS, max_unmap_lba_count=0)
NO_DESC = dataclasses.replace(LIMITS, max_unmap_descriptors=0)


@pytest.mark.parametrize("lbpme, limits, lbp, mode", [
    (False, LIMITS, Provisioning(True, True, True), M.FULL),          # no LBPME: fully provisioned
    (True, None, Provisioning(True, True, True), M.WS16),              # READ CAPACITY(16) alone
    (True, LIMITS, None, M.UNMAP),                                     # no B2h page, an UNMAP limit
    (True, NO_UNMAP, None, M.WS16),                                    # no B2h page, no UNMAP limit
    (True, LIMITS, Provisioning(True, True, True), M.UNMAP),
    (True, NO_UNMAP, Provisioning(True, True, True), M.WS16),          # LBPU without a limit is not enough
    (True, NO_DESC, Provisioning(True, False, True), M.WS10),          # ... nor with no descriptor count
    (True, LIMITS, Provisioning(False, True, False), M.WS16),
    (True, LIMITS, Provisioning(False, False, True), M.WS10),
    (True, LIMITS, Provisioning(False, False, False), M.DISABLED),
])
def test_provisioning_mode_branches(lbpme, limits, lbp, mode):
    assert provisioning_mode(lbpme, limits, lbp) is mode


@pytest.mark.parametrize("mode, expected", [
    (M.UNMAP, DiscardLimits(2048, 4096, 0)),
    (M.WS16, DiscardLimits(4096, 4096, 0)),
    (M.WS10, DiscardLimits(4096, 4096, 0)),
    (M.ZERO, DiscardLimits(4096, 4096, 0)),
    (M.FULL, DiscardLimits(0, 4096, 0)),
    (M.DISABLED, DiscardLimits(0, 4096, 0)),
])
def test_sd_config_discard_limits(mode, expected):
    assert discard_limits(mode, 512, 512, LIMITS, GUEST.sd) == expected


def test_discard_limits_caps_and_granularity():
    big = dataclasses.replace(LIMITS, max_ws_blocks=0, unmap_granularity=0, unmap_alignment=3)
    assert discard_limits(M.WS16, 512, 4096, big, GUEST.sd) == DiscardLimits(0x7FFFFF, 4096, 1536)  # physical wins
    assert discard_limits(M.WS10, 512, 512, big, GUEST.sd).max_blocks == 0xFFFF
    assert discard_limits(M.UNMAP, 4096, 4096, dataclasses.replace(LIMITS, max_unmap_lba_count=1 << 30),
                          GUEST.sd).max_blocks == 0x7FFFFF


def test_command_bytes():
    cdb, body = unmap_command(0x1234, 77)
    assert cdb == bytes.fromhex("42000000000000001800") and body == struct.pack(">HH4xQI4x", 22, 16, 0x1234, 77)
    cdb, data = write_same_command(5, 9, 512, sixteen=True, unmap=True)
    assert cdb == bytes.fromhex("9308") + (5).to_bytes(8, "big") + (9).to_bytes(4, "big") + b"\0\0"
    assert data == bytes(512)
    cdb, _ = write_same_command(5, 9, 4096, sixteen=False, unmap=False)
    assert cdb == bytes.fromhex("41000000000500000900")
    fixed = (TUR_CDB, READ_CAPACITY_10_CDB, SYNCHRONIZE_CACHE_10_CDB)
    assert fixed == (bytes(6), b"\x25" + bytes(9), b"\x35" + bytes(9))


# -- probe through virtio-scsi, per profile -------------------------------------------------------------------

def sd_env(tmp_path, profile, **fields):
    env = make_virtio_scsi(tmp_path, profile=profile, config=virtio_scsi_config(profile),
                           pci=virtio_pci_config(profile), clear_ua=False, **fields)
    env.sd = SdDriver(functools.partial(env.drv.command, 0), guest=GUEST, max_hw_sectors=env.drv.limits.max_sectors)
    env.info = run(env, env.sd.probe())
    return env


@pytest.mark.parametrize("profile, mode, max_blocks, lbpme", [
    ("qemu-7.2", M.UNMAP, 2097152, True),                        # 1 GiB / 512, below the WS16 cap
    ("qemu-1.4-pc", M.FULL, 0, False),
    ("strict", M.UNMAP, 1048576, True),
])
def test_probe_chooses_the_mode_per_profile(tmp_path, profile, mode, max_blocks, lbpme):
    env = sd_env(tmp_path, profile)
    info = env.info
    assert info.capacity == 16 * MiB // 512 and info.block_size == 512 and info.lbpme is lbpme
    assert info.mode is mode and info.discard.max_blocks == max_blocks
    assert env.disk.unit_attention is None                     # TEST UNIT READY took the power-on UA
    if lbpme:
        assert info.discard.granularity == 4096 and 0xB2 in info.vpd_pages
    close_scsi(env)


@pytest.mark.parametrize("fields, mode", [
    (dict(lbpu=False), M.WS16),
    (dict(lbpu=False, lbpws=False), M.WS10),
    (dict(lbpu=False, lbpws=False, lbpws10=False), M.DISABLED),
    (dict(max_unmap_bytes=0), M.WS16),
    (dict(lbpme=False), M.FULL),
])
def test_probe_follows_the_vpd_bits(tmp_path, fields, mode):
    env = sd_env(tmp_path, "qemu-7.2", **fields)
    assert env.info.mode is mode
    close_scsi(env)


def test_read_capacity_10_first_below_spc3(tmp_path):
    env = sd_env(tmp_path, "qemu-7.2", scsi_version=4)           # SPC-2: no READ CAPACITY(16), no LBPME
    assert env.info.scsi_level == 5 and env.info.mode is M.FULL and env.info.capacity == 16 * MiB // 512
    close_scsi(env)


# -- discards and I/O through virtio-scsi -----------------------------------------------------------------------

@pytest.mark.parametrize("profile, fields, opcode, count", [
    ("qemu-7.2", {}, 0x42, 3),                                   # UNMAP, split at 2048 blocks (limit lowered)
    ("qemu-7.2", dict(lbpu=False), 0x93, 2),                     # WRITE SAME(16) at max_ws_blocks
    ("qemu-7.2", dict(lbpu=False, lbpws=False), 0x41, 2),        # WRITE SAME(10)
    ("strict", {}, 0x42, 3),
])
def test_discard_commands_follow_the_mode_and_limits(tmp_path, profile, fields, opcode, count):
    env = sd_env(tmp_path, profile, max_unmap_bytes=2048 * 512, max_write_same_bytes=4096 * 512, **fields)
    commands = env.sd.discard_commands([(8, 5000)])
    assert [c[0][0] for c in commands] == [opcode] * count
    assert all(o.ok for o in run(env, env.sd.discard([(8, 5000)])))
    close_scsi(env)


def test_contiguous_discards_merge_into_one_command_up_to_the_limit(tmp_path):
    env = sd_env(tmp_path, "qemu-7.2", max_unmap_bytes=2048 * 512)
    commands = env.sd.discard_commands([(3, 5), (8, 100), (108, 2000), (5000, 8)])   # granularity 8 sectors
    descriptors = [struct.unpack_from(">QI", data, 8) for _cdb, data in commands]
    # 3+5 and 8+100 merge (a head bio and the next), so does the head of 108+2000 (108..111); the rest of it
    # would pass 2048 blocks and starts a command of its own; then a gap
    assert descriptors == [(3, 109), (112, 1996), (5000, 8)]
    close_scsi(env)


def test_no_discard_without_provisioning(tmp_path):
    env = sd_env(tmp_path, "qemu-1.4-pc")
    assert env.sd.discard_commands([(0, 64)]) == [] and run(env, env.sd.discard([(0, 64)])) == []
    close_scsi(env)


def test_writesame_zero_override_zeroes_without_unmap(tmp_path):
    env = sd_env(tmp_path, "qemu-7.2")
    env.sd.override = M.ZERO
    env.info = run(env, env.sd.probe())
    assert run(env, env.sd.write(0, pattern(4096)))
    (cdb, data), = env.sd.discard_commands([(0, 8)])
    assert cdb[0] == 0x41 and not cdb[1] & 0x08 and data == bytes(512)
    assert all(o.ok for o in run(env, env.sd.discard([(0, 8)])))
    assert run(env, env.sd.read(0, 8)) == (True, bytes(4096))
    close_scsi(env)


def test_read_write_flush_split_to_the_limits(tmp_path):
    env = sd_env(tmp_path, "strict", max_io_bytes=64 * 1024)     # B0h MAXIMUM TRANSFER LENGTH 128 blocks
    data = pattern(300 * 512)
    records = len(env.transport.records)
    assert run(env, env.sd.write(10, data)) and len(env.transport.records) - records == 3
    assert run(env, env.sd.read(10, 300)) == (True, data)
    assert run(env, env.sd.flush())
    ok, _ = run(env, env.sd.read(env.info.capacity - 1, 2))
    assert not ok
    close_scsi(env)


def test_discard_of_a_partial_block_is_refused(tmp_path):
    env = sd_env(tmp_path, "qemu-7.2", block_size=4096)
    with pytest.raises(DriverLayoutError):
        env.sd.discard_commands([(1, 8)])
    assert env.sd.discard_commands([(8, 8)]) == [unmap_command(1, 1)]
    close_scsi(env)


def test_probe_fails_when_the_lu_is_unusable(tmp_path):
    env = make_virtio_scsi(tmp_path)
    sd = SdDriver(functools.partial(env.drv.command, 5), guest=GUEST)      # no such LUN: LOGICAL UNIT NOT SUPPORTED
    with pytest.raises(SdError, match="TEST UNIT READY failed"):
        run(env, sd.probe())
    assert env.disk.sense == S.LUN_NOT_SUPPORTED                  # QEMU: the answering LU keeps the sense
    close_scsi(env)


@given(write=st.booleans(), lba=st.integers(0, 2**32 - 1), blocks=st.integers(0, 0xFFFF))
def test_read_write_10_fast_codec_equals_the_layout(write, lba, blocks):
    op = L.Op.WRITE_10 if write else L.Op.READ_10
    fields = dict(opcode=op, protect=0, dpo=False, fua=False, rarc=False, lba=lba, group=0, transfer_length=blocks,
                  control=0)
    assert RW_10_FAST.pack(op, 0, lba, 0, blocks, 0) == L.RW_10.build(fields)


@given(write=st.booleans(), lba=st.integers(0, 2**64 - 1), blocks=st.integers(0, 2**32 - 1))
def test_read_write_16_fast_codec_equals_the_layout(write, lba, blocks):
    op = L.Op.WRITE_16 if write else L.Op.READ_16
    fields = dict(opcode=op, protect=0, dpo=False, fua=False, rarc=False, lba=lba, group=0, transfer_length=blocks,
                  control=0)
    assert RW_16_FAST.pack(op, 0, lba, blocks, 0, 0) == L.RW_16.build(fields)
