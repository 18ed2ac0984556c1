"""virtio-blk (QEMU hw/block/virtio-blk.c) and its Linux-style driver: QEMU's tests/qtest/virtio-blk-test.c
scenarios, virtio_blk_handle_request's IOERR/UNSUPP table and order of checks, framing errors that break the device,
the profiles, and host space reclaimed by DISCARD / WRITE_ZEROES on raw and qcow2."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest

from controllers.drivers.config import feature_bits
from controllers.drivers.virtio_blk import header, segment
from controllers.virtio import layouts as L
from controllers.virtio.blk import VirtioBlkConfig
from controllers.virtio.pci import VirtioPciConfig
from emu.block import Flags
from scenarios.profiles import NAMES, get_profile
from scenarios.profiles.facts import UnknownProfile
from scenarios.profiles.families import VIRTIO_BLK
from scenarios.profiles.virtio_blk import virtio_blk_config, virtio_pci_config
from tests.virtio_support import DISK, GUEST, MiB, close, make_virtio_blk, pattern, run

OK, IOERR, UNSUPP = L.BLK_S_OK, L.BLK_S_IOERR, L.BLK_S_UNSUPP
SECTORS = DISK // 512
DISCARD, WZ, UNMAP = L.BLK_T_DISCARD, L.BLK_T_WRITE_ZEROES, L.BLK_WRITE_ZEROES_FLAG_UNMAP
LINUX_FEATURES = feature_bits(GUEST.virtio_blk.features)


def profile_env(tmp_path, profile, fmt="raw", discard="unmap", supported=LINUX_FEATURES):
    env = make_virtio_blk(tmp_path, fmt, discard=discard, config=virtio_blk_config(profile, SECTORS),
                          pci=virtio_pci_config(profile), probe=False)
    env.drv.supported = supported
    assert run(env, env.drv.probe())
    return env


@pytest.fixture
def env(tmp_path):
    e = make_virtio_blk(tmp_path)
    yield e
    close(e)


def image_digest(env) -> bytes:
    return hashlib.sha256(env.drive.read(0, DISK).data).digest()


# -- qtest basic / indirect / idx ------------------------------------------------------------------------------

def test_basic(env):
    """virtio-blk-test basic: capacity, write "TEST", read it back, WRITE_ZEROES then zeros, DISCARD."""
    assert env.drv.limits.capacity == SECTORS
    data = b"TEST" + bytes(508)
    out = run(env, env.drv.write(0, data))
    assert out.ok and out.used_len == 1
    out = run(env, env.drv.read(0, 1))
    assert out.ok and out.data_in == data and out.used_len == 513
    out = run(env, env.drv.raw(header(WZ), [segment(0, 1)], 0))
    assert out.ok and run(env, env.drv.read(0, 1)).data_in == bytes(512)
    assert run(env, env.drv.raw(header(DISCARD), [segment(0, 1)], 0)).ok


def test_basic_any_layout_header_and_data_in_one_buffer(env):
    """VERSION_1 implies any layout: OUT with header + data in one readable buffer, IN with data + status in one
    513-byte writable buffer."""
    data = pattern(512, seed=3)
    out = run(env, env.drv.raw(header(L.BLK_T_OUT, 4) + data, (), 0))
    assert out.ok
    out = run(env, env.drv.raw(header(L.BLK_T_IN, 4), (), 0, status_len=513))
    assert out.completed and out.status == OK and out.data_in == data and out.used_len == 513


@pytest.mark.parametrize("indirect", [True, False])
def test_indirect(tmp_path, indirect):
    """virtio-blk-test indirect: with INDIRECT_DESC the request is one descriptor pointing at a table."""
    env = make_virtio_blk(tmp_path, probe=False)
    env.drv.supported = LINUX_FEATURES & ~(0 if indirect else L.bit(L.F_INDIRECT_DESC))
    assert run(env, env.drv.probe())
    q = env.drv.pci.queues[0]
    head = q.add([header(L.BLK_T_OUT, 8), pattern(1024)], [1])
    flags = env.mem.unpack(L.DESC_FAST, q.desc + 16 * head)[2]
    assert bool(flags & L.VIRTQ_DESC_F_INDIRECT) is indirect
    env.drv.pci.kick(q)
    assert run(env, env.drv.read(8, 2)).data_in == pattern(1024)
    close(env)


@pytest.mark.parametrize("event_idx", [True, False])
def test_idx_one_notification_covers_a_batch(tmp_path, event_idx):
    """virtio-blk-test idx: with EVENT_IDX the device interrupts only when used_event is passed, so one interrupt
    covers several completions; without it, every completion asks for one."""
    env = make_virtio_blk(tmp_path, probe=False)
    env.drv.supported = LINUX_FEATURES & ~(0 if event_idx else L.bit(L.F_EVENT_IDX))
    assert run(env, env.drv.probe())
    assert run(env, env.drv.flush()).ok                      # the first completion always interrupts
    outs = run(env, env.drv.pci.submit_batch(0, [([header(L.BLK_T_FLUSH)], [1])] * 3))
    assert all(o.completed and o.data_in == b"\0" for o in outs)
    notified = [r.notified for r in env.transport.records[-3:]]
    assert notified == ([True, False, False] if event_idx else [True, True, True])
    used = env.drv.pci.queues[0].used
    assert env.mem.read_u16(used + L.avail_event_offset(256)) == (4 if event_idx else 0)
    close(env)


# -- status table (QEMU profile) ---------------------------------------------------------------------------------

def rw(type_, sector, out_len=0, in_len=0):
    return header(type_, sector), [pattern(out_len)] if out_len else [], in_len


CASES = {
    "read past the end": (rw(L.BLK_T_IN, SECTORS, in_len=512), IOERR),
    "read crossing the end": (rw(L.BLK_T_IN, SECTORS - 1, in_len=1024), IOERR),
    "write of a partial sector": (rw(L.BLK_T_OUT, 0, out_len=100), IOERR),
    "read of nothing": (rw(L.BLK_T_IN, 5), OK),
    "read of nothing just past the end": (rw(L.BLK_T_IN, SECTORS + 1), IOERR),
    "unknown type 6": (rw(6, 0), UNSUPP),
    "legacy SCSI command without its buffers": (rw(L.BLK_T_SCSI_CMD, 0), IOERR),   # out_num < 2 || in_num < 3
    "GET_LIFETIME": (rw(L.BLK_T_GET_LIFETIME, 0, in_len=16), UNSUPP),
    "write with the legacy BARRIER bit": (rw(L.BLK_T_OUT | L.BLK_T_BARRIER, 0, out_len=512), OK),
    "FLUSH with the OUT bit": (rw(L.BLK_T_FLUSH | L.BLK_T_OUT, 0), OK),
    "DISCARD without the OUT bit": ((header(DISCARD & ~1), [segment(0, 1)], 0), UNSUPP),
    "DISCARD of two segments": ((header(DISCARD), [segment(0, 1) + segment(8, 1)], 0), UNSUPP),
    "DISCARD of 20 bytes": ((header(DISCARD), [segment(0, 1) + bytes(4)], 0), UNSUPP),
    "DISCARD above max_discard_sectors": ((header(DISCARD), [segment(0, 4194304)], 0), IOERR),
    "DISCARD past the end": ((header(DISCARD), [segment(SECTORS - 1, 2)], 0), IOERR),
    "DISCARD with a reserved flag": ((header(DISCARD), [segment(0, 1, 2)], 0), UNSUPP),
    "DISCARD with UNMAP": ((header(DISCARD), [segment(0, 1, UNMAP)], 0), UNSUPP),
    "DISCARD of zero sectors": ((header(DISCARD), [segment(SECTORS, 0)], 0), OK),
    "WRITE_ZEROES with UNMAP": ((header(WZ), [segment(0, 8, UNMAP)], 0), OK),
    "WRITE_ZEROES with a reserved flag": ((header(WZ), [segment(0, 8, UNMAP | 4)], 0), UNSUPP),
    # order of checks: max sectors, then range, then flags (virtio_blk_handle_discard_write_zeroes)
    "too long and a bad flag": ((header(DISCARD), [segment(0, 4194304, 2)], 0), IOERR),
    "past the end and UNMAP on a discard": ((header(DISCARD), [segment(SECTORS, 1, UNMAP)], 0), IOERR),
}


@pytest.mark.parametrize("name", list(CASES))
def test_qemu_status_table(env, name):
    (hdr, data_out, data_in_len), status = CASES[name]
    before = image_digest(env)
    out = run(env, env.drv.raw(hdr, data_out, data_in_len))
    assert out.completed and out.status == status, name
    assert out.used_len == data_in_len + 1                    # QEMU pushes the whole writable side
    if status != OK:
        assert image_digest(env) == before
    assert not env.transport.broken


def test_legacy_scsi_command_fails_the_ioctl_and_answers_unsupp(env):
    # QEMU 7.2 virtio_blk_handle_scsi_req without VIRTIO_BLK_F_SCSI: CDB buffer, then sense, virtio_scsi_inhdr and
    # status; `errors` (the inhdr's first word) becomes 255 and the status UNSUPP
    before = image_digest(env)
    out = run(env, env.drv.raw(header(L.BLK_T_SCSI_CMD | L.BLK_T_OUT, 0), [bytes(10)], [96, 16]))
    assert out.completed and out.status == UNSUPP and out.used_len == 96 + 16 + 1
    assert out.data_in[96:] == (255).to_bytes(4, "little") + bytes(12) and image_digest(env) == before


@pytest.mark.parametrize("hdr, data_out, in_lens, status_len, reason", [
    (header(L.BLK_T_FLUSH), (), 0, 0, "virtio-blk missing headers"),
    (header(L.BLK_T_FLUSH)[:12], (), 0, 1, "virtio-blk request outhdr too short"),
    (header(DISCARD), (), 0, 1, "discard/write_zeroes header too short"),
    (header(WZ), [bytes(8)], 0, 1, "discard/write_zeroes header too short"),
])
def test_framing_errors_break_the_device(env, hdr, data_out, in_lens, status_len, reason):
    before = image_digest(env)
    out = run(env, env.drv.raw(hdr, data_out, in_lens, status_len=status_len))
    assert not out.completed and out.broken and out.status is None
    assert reason in env.transport.broken_reason
    assert env.transport.status & L.STATUS_NEEDS_RESET and image_digest(env) == before
    run(env, env.drv.pci.reset())
    assert run(env, env.drv.probe()) and run(env, env.drv.flush()).ok


def test_a_chain_without_a_readable_buffer_breaks_the_device(env):
    out = run(env, env.drv.pci.raw_chain(0, [(0x10000, 17, L.VIRTQ_DESC_F_WRITE, 0)]))
    assert out.broken and env.transport.broken_reason == "virtio-blk missing headers"


@pytest.mark.parametrize("serial, in_len, expected", [
    ("", 20, b"\0"), ("disk-7", 20, b"disk-7\0"), ("12345678901234567890", 20, b"12345678901234567890"),
    ("disk-7", 4, b"disk"),
])
def test_get_id(tmp_path, serial, in_len, expected):
    env = make_virtio_blk(tmp_path, serial=serial)
    out = run(env, env.drv.raw(header(L.BLK_T_GET_ID), (), in_len))
    assert out.ok and out.data_in[:len(expected)] == expected and out.data_in[len(expected):] == bytes(
        in_len - len(expected))
    assert out.used_len == in_len + 1
    close(env)


def test_read_only_device_refuses_writes_with_ioerr(tmp_path):
    env = make_virtio_blk(tmp_path, read_only=True)
    assert env.drv.has(L.BLK_F_RO)
    before = image_digest(env)
    assert run(env, env.drv.write(0, pattern(512))).status == IOERR
    assert [o.status for o in run(env, env.drv.discard([(0, 8)]))] == [IOERR]
    assert [o.status for o in run(env, env.drv.write_zeroes(0, 8))] == [IOERR]
    assert run(env, env.drv.read(0, 1)).ok and run(env, env.drv.flush()).ok and image_digest(env) == before
    close(env)


def test_write_cache_mode_follows_config_writes_and_negotiation(tmp_path):
    env = make_virtio_blk(tmp_path)
    wb = L.BLK_CONFIG_FIELDS["writeback"][0]
    assert env.drv.limits.writeback and env.drv.pci.config_read(wb, 1) == 1
    assert run(env, env.drv.write(0, pattern(512))).ok
    assert not env.transport.records[-1].requests[0].flags & Flags.FUA
    env.drv.pci.config_write(wb, 0, 1)                       # CONFIG_WCE: the guest picks writethrough
    assert env.drv.pci.config_read(wb, 1) == 0 and not env.dev.wce
    assert run(env, env.drv.write(0, pattern(512))).ok
    assert env.transport.records[-1].requests[0].flags & Flags.FUA     # writethrough: every write is FUA
    env.drv.pci.config_write(0, 0xFFFFFFFF, 4)               # capacity is not writable
    assert env.drv.pci.config_read(0, 8) == SECTORS
    run(env, env.drv.pci.reset())
    assert env.dev.wce                                        # virtio_blk_reset restores the power-on mode
    env.drv.supported = LINUX_FEATURES & ~(L.bit(L.BLK_F_CONFIG_WCE) | L.bit(L.BLK_F_FLUSH))
    assert run(env, env.drv.probe()) and not env.dev.wce      # no FLUSH negotiated: writethrough at DRIVER_OK
    close(env)


# -- profiles ------------------------------------------------------------------------------------------------------

def test_profiles_state_every_field_with_a_source():
    for name in NAMES:
        config = virtio_blk_config(name, 1000, read_only=True)
        assert config.capacity_sectors == 1000 and config.read_only
        assert all(fact.source for _, fact in get_profile(name)[VIRTIO_BLK].items())
        assert isinstance(virtio_pci_config(name), VirtioPciConfig)
    with pytest.raises(UnknownProfile, match="known profiles are qemu-7.2, qemu-8.2, qemu-1.4-pc, strict"):
        virtio_blk_config("qemu-9", 1)
    assert virtio_blk_config("qemu-7.2", 1) == VirtioBlkConfig(capacity_sectors=1)   # the defaults are QEMU 7.2's


@pytest.mark.parametrize("profile, in_len, broken", [
    ("qemu-7.2", 1, False), ("qemu-8.2", 1, True), ("qemu-8.2", 128, True), ("qemu-8.2", 129, False),
    ("strict", 1, False),
])
def test_a_short_zone_report_breaks_qemu_8_2_and_is_unsupp_otherwise(tmp_path, profile, in_len, broken):
    env = profile_env(tmp_path, profile)
    out = run(env, env.drv.raw(header(L.BLK_T_ZONE_REPORT), (), in_len - 1))
    if broken:                                          # virtio_blk_handle_zone_report: virtio_error, no used element
        assert out.broken and env.transport.state.reason == "in buffer too small for zone report"
    else:
        assert out.status == UNSUPP                     # not a zoned drive
    close(env)


def test_qemu_1_4_pc_offers_no_discard_and_linux_sends_none(tmp_path):
    env = profile_env(tmp_path, "qemu-1.4-pc")
    assert not env.drv.has(L.BLK_F_DISCARD) and not env.drv.has(L.BLK_F_WRITE_ZEROES)
    assert env.transport.mmio_read(L.PCI_DEVICE_CFG_OFFSET + L.BLK_CONFIG_SIZE_BASE, 4) == 0xFFFFFFFF
    assert env.drv.limits.seg_max == 126 and env.drv.pci.queues[0].size == 128
    assert run(env, env.drv.discard([(0, 8)])) == []
    records = len(env.transport.records)
    zeroed = run(env, env.drv.write_zeroes(0, 8))             # Linux falls back to writing zero pages
    assert [o.status for o in zeroed] == [OK] and len(env.transport.records) == records + 1
    # a QEMU 7.2 device still executes a DISCARD it never offered (virtio_blk_handle_request)
    assert run(env, env.drv.raw(header(DISCARD), [segment(0, 8)], 0)).status == OK
    close(env)


def test_strict_profile(tmp_path):
    env = profile_env(tmp_path, "strict", supported=LINUX_FEATURES & ~L.bit(L.BLK_F_WRITE_ZEROES))
    assert env.drv.limits.max_discard_seg == 16
    three = segment(0, 8) + segment(64, 8) + segment(128, 8)
    assert run(env, env.drv.raw(header(DISCARD), [three], 0)).status == OK
    assert run(env, env.drv.raw(header(DISCARD), [segment(0, 1) * 17], 0)).status == UNSUPP
    assert run(env, env.drv.raw(header(DISCARD), [segment(0, 1) + bytes(4)], 0)).status == UNSUPP
    # a later bad segment fails the whole request before anything runs
    assert run(env, env.drv.write(64, pattern(4096))).ok
    before = image_digest(env)
    assert run(env, env.drv.raw(header(DISCARD), [segment(64, 8) + segment(SECTORS, 8)], 0)).status == IOERR
    assert image_digest(env) == before
    # WRITE_ZEROES was not negotiated: UNSUPP; exact types: the BARRIER bit makes a write unknown
    assert run(env, env.drv.raw(header(WZ), [segment(0, 8)], 0)).status == UNSUPP
    assert run(env, env.drv.raw(header(L.BLK_T_OUT | L.BLK_T_BARRIER), [pattern(512)], 0)).status == UNSUPP
    # used length = bytes written: the status byte only for a failed read, data + status for a good one
    assert run(env, env.drv.read(SECTORS, 1)).used_len == 1 and run(env, env.drv.read(0, 1)).used_len == 513
    close(env)


# -- Linux's discard requests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, ranges, segments", [
    ("qemu-7.2", [(0, 4), (100, 4), (200, 4)], [1, 1, 1]),        # QEMU offers one segment per request
    ("strict", [(0, 4), (100, 4), (200, 4)], [3]),                # three bios merge into one request
    ("strict", [(0, 8), (100, 8), (200, 8)], [2, 1]),             # ... up to max_discard_sectors in total
    ("strict", [(0, 48)], [1, 1, 1]),                             # split pieces never merge
])
def test_linux_sends_discard_requests_as_its_block_layer_makes_them(tmp_path, profile, ranges, segments):
    config = dataclasses.replace(virtio_blk_config(profile, SECTORS), max_discard_sectors=16)
    env = make_virtio_blk(tmp_path, config=config, pci=virtio_pci_config(profile))
    outs = run(env, env.drv.discard(ranges))
    assert all(o.ok for o in outs)
    assert [len(r.requests) for r in env.transport.records] == segments     # one block-layer request per segment
    close(env)


# -- host space --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
@pytest.mark.parametrize("how", ["discard", "write-zeroes-unmap"])
def test_discard_and_write_zeroes_reclaim_host_space_only_with_unmap(tmp_path, fmt, discard, how):
    env = make_virtio_blk(tmp_path, fmt, discard=discard)
    data = pattern(4 * MiB, seed=5)
    for off in range(0, 4 * MiB, 256 * 1024):
        assert run(env, env.drv.write((MiB + off) // 512, data[off:off + 256 * 1024])).ok
    assert run(env, env.drv.flush()).ok
    before = os.stat(env.path).st_blocks
    if how == "discard":
        outs = run(env, env.drv.discard([(MiB // 512, 4 * MiB // 512)]))
    else:
        outs = run(env, env.drv.write_zeroes(MiB // 512, 4 * MiB // 512))
    assert [o.status for o in outs] == [OK]
    assert run(env, env.drv.flush()).ok
    after = os.stat(env.path).st_blocks
    read = run(env, env.drv.read(MiB // 512, 256)).data_in
    if discard == "unmap":
        assert after <= before - (4 * MiB // 512) * 9 // 10
        assert read == bytes(128 * 1024)
    else:
        assert after == before
        assert read == (data[:128 * 1024] if how == "discard" else bytes(128 * 1024))
    close(env)


def test_reads_and_writes_go_in_requests_of_the_block_layers_max_sectors(tmp_path):
    env = make_virtio_blk(tmp_path)
    data = pattern(4096 * 512, seed=3)                      # 2 MiB: 2560 + 1536 sectors
    before = len(env.transport.records)
    assert run(env, env.drv.write(8, data)).ok
    assert [r.requests[0].length for r in env.transport.records[before:]] == [2560 * 512, 1536 * 512]
    out = run(env, env.drv.read(8, 4096))
    assert out.ok and out.data_in == data and len(env.transport.records) == before + 4
    close(env)
