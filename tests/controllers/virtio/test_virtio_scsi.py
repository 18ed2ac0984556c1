"""virtio-scsi (QEMU hw/scsi/virtio-scsi.c) and its Linux-style driver: layouts, QEMU's qtests
(tests/qtest/virtio-scsi-test.c), LUN addressing, every response code, framing errors that break the device, TMF
and AN on the control queue, events, configuration writes and the profiles."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.drivers.config import feature_bits
from controllers.drivers.virtio_scsi import command_header, lun_field
from controllers.scsi import sense as S
from controllers.virtio import layouts as L
from controllers.virtio.scsi import VirtioScsiConfig, VirtioScsiDevice, encode_lun
from emu.errors import DriverLayoutError
from scenarios.profiles.facts import UnknownProfile
from scenarios.profiles.virtio_blk import virtio_pci_config
from scenarios.profiles.virtio_scsi import PROFILES, virtio_scsi_config
from tests.virtio_support import DISK, GUEST, close_scsi, make_virtio_scsi, pattern, run

GOOD, CHECK = 0x00, 0x02
OK, OVERRUN, BAD_TARGET, FAILURE = L.SCSI_S_OK, L.SCSI_S_OVERRUN, L.SCSI_S_BAD_TARGET, L.SCSI_S_FAILURE
BLOCKS = DISK // 512
TUR = bytes(6)
RESP = L.SCSI_CMD_RESP_SIZE + L.SCSI_SENSE_DEFAULT_SIZE      # 108
LINUX_FEATURES = feature_bits(GUEST.virtio_scsi.features)


def inquiry(alloc=36, evpd=0, page=0):
    return bytes([0x12, evpd, page, alloc >> 8, alloc & 0xFF, 0])


def rw10(op, lba, blocks):
    return struct.pack(">BBIBHB", op, 0, lba, 0, blocks, 0)


def write_same10(lba, blocks, flags=0):
    return struct.pack(">BBIBHB", 0x41, flags, lba, 0, blocks, 0)


def unmap_list(*descs):
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    return struct.pack(">HH4x", 6 + len(body), len(body)) + body


def unmap_cdb(length):
    return bytes([0x42, 0, 0, 0, 0, 0, 0, length >> 8, length & 0xFF, 0])


def raw_lun(*b):
    return bytes(b) + bytes(8 - len(b))


@pytest.fixture
def env(tmp_path):
    e = make_virtio_scsi(tmp_path)
    yield e
    close_scsi(e)


def image(env):
    return env.drive.read(0, DISK).data


# -- layouts -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, size", [
    (L.VIRTIO_SCSI_CONFIG, 36), (L.VIRTIO_SCSI_CMD_REQ, 19), (L.VIRTIO_SCSI_CMD_RESP, 12),
    (L.VIRTIO_SCSI_CTRL_TMF_REQ, 24), (L.VIRTIO_SCSI_CTRL_AN_REQ, 16), (L.VIRTIO_SCSI_CTRL_AN_RESP, 5),
    (L.VIRTIO_SCSI_EVENT, 16),
])
def test_layout_sizes_are_virtio_1_2_5_6(layout, size):
    assert layout.sizeof() == size


def test_config_offsets_are_virtio_1_2_5_6_4():
    assert {n: off for n, (off, _) in L.SCSI_CONFIG_FIELDS.items()} == {
        "num_queues": 0, "seg_max": 4, "max_sectors": 8, "cmd_per_lun": 12, "event_info_size": 16,
        "sense_size": 20, "cdb_size": 24, "max_channel": 28, "max_target": 30, "max_lun": 32}


luns8, u64, u32, u8 = st.binary(min_size=8, max_size=8), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), \
    st.integers(0, 255)


@settings(max_examples=25)
@given(lun=luns8, tag=u64, attr=u8, prio=u8, crn=u8, sense_len=u32, resid=u32, qual=st.integers(0, 0xFFFF),
       status=u8, response=u8)
def test_command_codecs_match_construct(lun, tag, attr, prio, crn, sense_len, resid, qual, status, response):
    req = L.VIRTIO_SCSI_CMD_REQ.build(dict(lun=lun, id=tag, task_attr=attr, prio=prio, crn=crn))
    assert req == L.SCSI_CMD_REQ_FAST.pack(lun, tag, attr, prio, crn)
    resp = L.VIRTIO_SCSI_CMD_RESP.build(dict(sense_len=sense_len, resid=resid, status_qualifier=qual, status=status,
                                             response=response))
    assert resp == L.SCSI_CMD_RESP_FAST.pack(sense_len, resid, qual, status, response)


@settings(max_examples=25)
@given(st.lists(u32, min_size=10, max_size=10))
def test_config_codec_matches_construct(values):
    values[7:9] = [v & 0xFFFF for v in values[7:9]]      # max_channel and max_target are 16 bits
    assert L.VIRTIO_SCSI_CONFIG.build(dict(zip(L.SCSI_CONFIG_FIELDS, values))) == L.SCSI_CONFIG_FAST.pack(*values)


@settings(max_examples=25)
@given(type_=u32, sub=u32, lun=luns8, tag=u64, events=u32, actual=u32, response=u8)
def test_control_and_event_codecs_match_construct(type_, sub, lun, tag, events, actual, response):
    assert L.VIRTIO_SCSI_CTRL_TMF_REQ.build(dict(type=type_, subtype=sub, lun=lun, id=tag)) == \
        L.SCSI_TMF_REQ_FAST.pack(type_, sub, lun, tag)
    assert L.VIRTIO_SCSI_CTRL_AN_REQ.build(dict(type=type_, lun=lun, event_requested=events)) == \
        L.SCSI_AN_REQ_FAST.pack(type_, lun, events)
    assert L.VIRTIO_SCSI_CTRL_AN_RESP.build(dict(event_actual=actual, response=response)) == \
        L.SCSI_AN_RESP_FAST.pack(actual, response)
    assert L.VIRTIO_SCSI_EVENT.build(dict(event=type_, lun=lun, reason=events)) == \
        L.SCSI_EVENT_FAST.pack(type_, lun, events)


def test_linux_header_bytes():
    # virtio_scsi_init_hdr: LUN 5 of target 1 in flat space, tag, SIMPLE; the CDB padded to 32 bytes
    hdr = command_header(1, 5, TUR, tag=7)
    assert len(hdr) == 51 and hdr[:8] == bytes.fromhex("0101400500000000")
    assert hdr[8:16] == (7).to_bytes(8, "little") and hdr[16:19] == b"\0\0\0" and hdr[19:] == bytes(32)
    assert encode_lun(1, 5) == bytes.fromhex("0101000500000000") and encode_lun(0, 300)[2:4] == b"\x41\x2c"


# -- probe, config, the qtests ------------------------------------------------------------------------------------

def test_probe_reads_qemu_config_and_posts_event_buffers(env):
    lim = env.drv.limits
    assert (lim.num_queues, lim.seg_max, lim.max_sectors, lim.cmd_per_lun, lim.max_target, lim.max_lun,
            lim.event_info_size) == (1, 254, 0xFFFF, 128, 255, 16383, 16)
    assert env.drv.has(L.SCSI_F_HOTPLUG) and env.drv.has(L.SCSI_F_CHANGE) and not env.drv.has(L.F_ANY_LAYOUT)
    assert not env.transport.offered() & L.bit(L.F_ANY_LAYOUT)      # QEMU's modern interface hides it
    assert len(env.dev._events) == 8 and env.dev.driver_ok
    assert env.drv.pci.config_read(L.SCSI_CONFIG_FIELDS["cdb_size"][0], 4) == 32
    assert env.drv.pci.config_read(L.SCSI_CONFIG_FIELDS["max_channel"][0], 2) == 0


def test_qtest_init_first_command_answers_unit_attention(tmp_path):
    env = make_virtio_scsi(tmp_path, clear_ua=False)
    out = run(env, env.drv.command(0, TUR))
    assert (out.response, out.status) == (OK, CHECK) and out.sense[0] == 0x70
    assert out.sense_code == S.POWER_ON_RESET and len(out.sense) == 18 and out.residual == 0
    assert out.used_len == RESP                                     # QEMU: data sizes + 12 + sense_size
    assert run(env, env.drv.command(0, TUR)).ok
    close_scsi(env)


def test_qtest_unaligned_write_same(env):
    """virtio-scsi-test unaligned-write-same: WRITE SAME(10) of a zero block, of a non-zero block and with NDOB."""
    out = run(env, env.drv.command(0, write_same10(1, 512), bytes(512)))
    assert out.ok
    out = run(env, env.drv.command(0, write_same10(1, 0x3300), b"\x01" * 512))
    assert out.ok and env.drive.read(512, 512).data == b"\x01" * 512
    out = run(env, env.drv.command(0, write_same10(1, 0x3300, flags=0x01)))   # NDOB: QEMU 7.2 does nothing
    assert out.ok and env.drive.read(512, 512).data == b"\x01" * 512


def test_qtest_large_lba_unmap_with_4k_blocks(tmp_path):
    """virtio-scsi-test large-lba-unmap (the range check once counted 512-byte units): 4 KiB blocks, UNMAP LBA
    0x7FFF x 0x3FF."""
    env = make_virtio_scsi(tmp_path, size=1 << 30, block_size=4096)
    body = unmap_list((0x7FFF, 0x3FF))
    assert len(body) == 24 and body[:4] == bytes.fromhex("00160010")
    out = run(env, env.drv.command(0, unmap_cdb(24), body))
    assert out.response == OK and out.status != CHECK
    close_scsi(env)


def test_qtest_write_to_write_protected_disk(tmp_path):
    """In the spirit of write-to-cdrom: WRITE(10) to a read-only LU is DATA PROTECT / WRITE PROTECTED."""
    env = make_virtio_scsi(tmp_path, read_only=True)
    out = run(env, env.drv.command(0, rw10(0x2A, 0, 1), bytes(512)))
    assert (out.response, out.status, out.sense_code) == (OK, CHECK, S.WRITE_PROTECTED)
    close_scsi(env)


def test_read_write_round_trip_and_residuals(env):
    data = pattern(4096)
    out = run(env, env.drv.command(0, rw10(0x2A, 8, 8), data))
    assert out.ok and out.residual == 0 and out.used_len == 4096 + RESP     # QEMU counts the data-out too
    out = run(env, env.drv.command(0, rw10(0x28, 8, 8), data_in_len=4096))
    assert out.ok and out.data_in == data and out.used_len == 4096 + RESP
    out = run(env, env.drv.command(0, inquiry(36), data_in_len=100))        # a larger buffer: the rest is residual
    assert out.ok and out.residual == 64 and out.data_in[8:16] == b"QEMU    "
    out = run(env, env.drv.command(0, TUR, data_in_len=512))                # no data phase: QEMU says 0
    assert out.ok and out.residual == 0


def test_sense_is_cut_to_the_sense_size_the_driver_set(env):
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["sense_size"][0], 8, 4)
    env.drv.sense_size = 8
    out = run(env, env.drv.command(0, rw10(0x28, BLOCKS, 1), data_in_len=512))
    assert (out.status, out.sense) == (CHECK, S.fixed(S.LBA_OUT_OF_RANGE)[:8])
    assert out.used_len == 12 + 8 + 512


# -- response codes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lun", [raw_lun(2, 0, 0, 0), raw_lun(1, 1, 0, 0), raw_lun(1, 0, 0x80, 0),
                                 raw_lun(1, 0, 0xC1, 0), raw_lun(0xC1, 0x01)])
def test_a_lun_naming_no_target_is_bad_target(env, lun):
    hdr = L.SCSI_CMD_REQ_FAST.pack(lun, 1, 0, 0, 0) + TUR.ljust(32, b"\0")
    out = run(env, env.drv.raw(hdr))
    assert (out.response, out.status, out.sense, out.residual) == (BAD_TARGET, 0, b"", 0)


@pytest.mark.parametrize("lun", [raw_lun(1, 0, 0x00, 0), raw_lun(1, 0, 0x40, 0), raw_lun(1, 0, 0, 0, 9, 9, 9, 9)])
def test_peripheral_and_flat_addressing_reach_lun_0(env, lun):
    hdr = L.SCSI_CMD_REQ_FAST.pack(lun, 1, 0, 0, 0) + inquiry().ljust(32, b"\0")
    out = run(env, env.drv.raw(hdr, (), 36))
    assert out.ok and out.data_in[8:12] == b"QEMU"


def test_spec_addressing_needs_zero_bytes_4_to_7(tmp_path):
    env = make_virtio_scsi(tmp_path, profile="strict", config=virtio_scsi_config("strict"),
                           pci=virtio_pci_config("strict"))
    hdr = L.SCSI_CMD_REQ_FAST.pack(raw_lun(1, 0, 0, 0, 0, 0, 0, 1), 1, 0, 0, 0) + TUR.ljust(32, b"\0")
    assert run(env, env.drv.raw(hdr)).response == BAD_TARGET
    close_scsi(env)


def test_data_in_both_directions_is_failure(env):
    before = image(env)
    out = run(env, env.drv.raw(command_header(0, 0, rw10(0x2A, 0, 1)), [bytes(512)], 512))
    assert out.response == FAILURE and out.used_len == 512 + 512 + RESP and image(env) == before


@pytest.mark.parametrize("cdb, data_out, data_in_len", [
    (rw10(0x28, 0, 1), b"", 0),                 # data-in planned, no buffer
    (rw10(0x28, 0, 2), b"", 512),               # buffer too small
    (rw10(0x2A, 0, 1), b"", 512),               # data-out planned, data-in buffer given
    (inquiry(36), bytes(36), 0),                # data-in planned, data-out buffer given
    (unmap_cdb(24), bytes(16), 0),              # parameter list longer than the buffer
])
def test_overrun(tmp_path, cdb, data_out, data_in_len):
    env = make_virtio_scsi(tmp_path, clear_ua=False)
    before = image(env)
    out = run(env, env.drv.command(0, cdb, data_out, data_in_len))
    assert (out.response, out.status, out.residual) == (OVERRUN, 0, 0) and image(env) == before
    # QEMU made the request before it refused the buffers: one that reports the unit attention took it
    assert env.disk.unit_attention == (S.POWER_ON_RESET if cdb[0] == 0x12 else None)
    close_scsi(env)


HDR = command_header(0, 0, TUR)


@pytest.mark.parametrize("out, in_lens", [([HDR[:50]], [RESP]), ([HDR], [RESP - 1]), ([HDR], []), ([], [RESP])])
def test_short_headers_break_the_device(env, out, in_lens):
    before = image(env)
    result = run(env, env.drv.pci.submit(L.SCSI_REQUESTQ, out, in_lens))
    assert result.broken and env.transport.broken_reason == "wrong size for virtio-scsi headers"
    assert env.transport.status & L.STATUS_NEEDS_RESET and image(env) == before
    run(env, env.drv.pci.reset())
    assert run(env, env.drv.probe())
    assert run(env, env.drv.command(0, TUR)).sense_code == S.POWER_ON_RESET     # the reset reset every LU


@pytest.mark.parametrize("framing, response, used", [("qemu", FAILURE, 1 + 8 + RESP), ("spec", OK, RESP)])
def test_split_headers(tmp_path, framing, response, used):
    """virtio_scsi_parse_req checks the header sizes against every buffer of a side (iov_to_buf); QEMU's framing
    then takes the tails of split headers for data in both directions (FAILURE), the spec's does not."""
    env = make_virtio_scsi(tmp_path, config=VirtioScsiConfig(framing=framing, used_len="qemu"))
    out = run(env, env.drv.pci.submit(L.SCSI_REQUESTQ, [HDR[:50], HDR[50:]], [100, 8]))
    assert out.completed and out.data_in[10:12] == bytes([GOOD, response]) and out.used_len == used
    close_scsi(env)


# -- framing ------------------------------------------------------------------------------------------------------

def test_qemu_frames_by_the_first_buffer_without_any_layout(env):
    """virtio_scsi_parse_req: response and data-in in one writable buffer leave no data-in buffer -> OVERRUN."""
    out = run(env, env.drv.raw(command_header(0, 0, rw10(0x28, 0, 1)), (), 0, resp_len=RESP + 512))
    assert out.response == OVERRUN
    # a 200-byte header buffer (header + 149 bytes) is all header: the data-out starts at the next buffer
    data = pattern(512)
    out = run(env, env.drv.raw(command_header(0, 0, rw10(0x2A, 0, 1)) + bytes(149), [data], 0))
    assert out.ok and env.drive.read(0, 512).data == data


@pytest.mark.parametrize("how", ["any_layout", "spec"])
def test_header_size_framing_with_any_layout_or_spec(tmp_path, how):
    if how == "spec":
        env = make_virtio_scsi(tmp_path, config=VirtioScsiConfig(framing="spec"))
    else:
        env = make_virtio_scsi(tmp_path, probe=False, config=VirtioScsiConfig(any_layout=True))
        env.drv.supported = LINUX_FEATURES | L.bit(L.F_ANY_LAYOUT)
        assert run(env, env.drv.probe())
        env.disk.unit_attention = None
    data = pattern(512, seed=4)
    assert run(env, env.drv.raw(command_header(0, 0, rw10(0x2A, 0, 1)) + data)).ok   # header and data in one
    out = run(env, env.drv.pci.submit(L.SCSI_REQUESTQ, [command_header(0, 0, rw10(0x28, 0, 1))], [RESP + 512]))
    assert out.data_in[10:12] == bytes([GOOD, OK]) and out.data_in[RESP:] == data   # data right after the sense
    close_scsi(env)


def test_strict_used_length_residual_and_padded_sense(tmp_path):
    env = make_virtio_scsi(tmp_path, profile="strict", config=virtio_scsi_config("strict"),
                           pci=virtio_pci_config("strict"))
    out = run(env, env.drv.command(0, rw10(0x2A, 0, 1), bytes(512)))
    assert out.ok and out.used_len == RESP                      # bytes written: the response only
    out = run(env, env.drv.command(0, TUR, data_in_len=512))
    assert out.ok and out.residual == 512 and out.used_len == RESP
    out = run(env, env.drv.command(0, rw10(0x28, BLOCKS, 1), data_in_len=512))
    assert out.status == CHECK and out.residual == 512 and out.used_len == RESP
    close_scsi(env)


# -- missing LUNs -------------------------------------------------------------------------------------------------

def test_missing_lun_answers_for_the_target(tmp_path):
    env = make_virtio_scsi(tmp_path, luns=(0, 2))
    out = run(env, env.drv.command(1, inquiry(), data_in_len=36))
    assert out.ok and out.data_in == bytes([0x7F]) + bytes(35)
    out = run(env, env.drv.command(1, inquiry(255, evpd=1), data_in_len=255))
    assert out.ok and out.data_in[:4] == bytes([0, 0, 1, 0]) and out.residual == 251
    assert run(env, env.drv.command(1, inquiry(255, evpd=1, page=0x80), data_in_len=255)).sense_code == \
        S.INVALID_FIELD
    out = run(env, env.drv.command(1, bytes([0x03, 0, 0, 0, 18, 0]), data_in_len=18))
    assert out.ok and S.decode(out.data_in) == S.LUN_NOT_SUPPORTED
    out = run(env, env.drv.command(1, rw10(0x28, 0, 1), data_in_len=512))
    assert (out.status, out.sense_code) == (CHECK, S.LUN_NOT_SUPPORTED)
    # REPORT LUNS lists LUN 0, then the others newest first (QEMU's bus order)
    out = run(env, env.drv.command(0, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0]), data_in_len=64))
    assert out.ok and out.data_in[:24] == bytes.fromhex("00000010 00000000 0000000000000000 0002000000000000")
    close_scsi(env)


@pytest.mark.parametrize("profile, preempted", [("qemu-7.2", True), ("strict", False)])
def test_missing_lun_and_another_lus_unit_attention(tmp_path, profile, preempted):
    env = make_virtio_scsi(tmp_path, profile=profile, luns=(0, 2), config=virtio_scsi_config(profile))
    env.disks[2].unit_attention = S.POWER_ON_RESET               # the newest LU answers for missing LUNs in QEMU
    out = run(env, env.drv.command(1, TUR))
    assert out.sense_code == (S.POWER_ON_RESET if preempted else S.LUN_NOT_SUPPORTED)
    assert (env.disks[2].unit_attention is None) is preempted
    close_scsi(env)


# -- configuration writes --------------------------------------------------------------------------------------------

def test_cdb_size_writes_change_the_header(env):
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["cdb_size"][0], 16, 4)
    env.drv.cdb_size = 16
    out = run(env, env.drv.command(0, inquiry(), data_in_len=36))
    assert out.ok and len(env.transport.records) and out.data_in[8:12] == b"QEMU"
    out = run(env, env.drv.raw(command_header(0, 0, TUR, cdb_size=16)[:34]))
    assert out.broken                                            # 19 + 16 bytes are needed


def test_cdb_size_zero_is_invalid_opcode(env):
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["cdb_size"][0], 0, 4)
    env.disk.unit_attention = S.POWER_ON_RESET
    out = run(env, env.drv.raw(command_header(0, 0, b"", cdb_size=0)))
    assert (out.status, out.sense_code) == (CHECK, S.INVALID_OPCODE) and env.disk.sense == S.INVALID_OPCODE
    assert env.disk.unit_attention is None      # 7.2: scsi_req_complete clears the unreported unit attention


@pytest.mark.parametrize("field, value", [("cdb_size", 256), ("sense_size", 65536)])
def test_oversized_config_writes_break_the_device(env, field, value):
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS[field][0], value, 4)
    assert env.transport.broken and env.transport.broken_reason == "bad data written to virtio-scsi configuration space"
    run(env, env.drv.pci.reset())
    assert env.dev.cdb_size == 32 and env.dev.sense_size == 96 and not env.transport.broken


def test_only_sense_and_cdb_size_are_writable(env):
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["num_queues"][0], 9, 4)
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["cdb_size"][0] + 1, 0, 1)   # a byte of cdb_size
    assert env.drv.pci.config_read(0, 4) == 1 and env.dev.cdb_size == 32
    env.drv.pci.config_write(L.SCSI_CONFIG_FIELDS["sense_size"][0], 200, 2)
    assert env.dev.sense_size == 200


# -- control queue -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subtype, lun, expected", [
    (L.SCSI_T_TMF_ABORT_TASK, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_QUERY_TASK, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_ABORT_TASK_SET, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_CLEAR_TASK_SET, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_QUERY_TASK_SET, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_LOGICAL_UNIT_RESET, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_I_T_NEXUS_RESET, 0, L.SCSI_S_OK),
    (L.SCSI_T_TMF_CLEAR_ACA, 0, L.SCSI_S_FUNCTION_REJECTED),
    (99, 0, L.SCSI_S_FUNCTION_REJECTED),
    (L.SCSI_T_TMF_ABORT_TASK, 3, L.SCSI_S_INCORRECT_LUN),
    (L.SCSI_T_TMF_LOGICAL_UNIT_RESET, 3, L.SCSI_S_INCORRECT_LUN),
])
def test_tmf_responses(env, subtype, lun, expected):
    assert run(env, env.drv.tmf(subtype, lun, tag=5)) == expected


def test_tmf_to_no_target_is_bad_target_except_nexus_reset(env):
    env.drv.target = 7
    assert run(env, env.drv.tmf(L.SCSI_T_TMF_ABORT_TASK_SET, 0)) == L.SCSI_S_BAD_TARGET
    assert run(env, env.drv.tmf(L.SCSI_T_TMF_I_T_NEXUS_RESET, 0)) == L.SCSI_S_OK
    assert env.disk.unit_attention is None                       # another target's nexus: nothing reset


def test_resets_leave_a_unit_attention(tmp_path):
    env = make_virtio_scsi(tmp_path, luns=(0, 1))
    assert run(env, env.drv.tmf(L.SCSI_T_TMF_LOGICAL_UNIT_RESET, 1)) == L.SCSI_S_OK
    assert env.disks[1].unit_attention == S.POWER_ON_RESET and env.disks[0].unit_attention is None
    assert run(env, env.drv.tmf(L.SCSI_T_TMF_I_T_NEXUS_RESET, 0)) == L.SCSI_S_OK
    assert env.disks[0].unit_attention == S.POWER_ON_RESET
    close_scsi(env)


def test_asynchronous_notification_answers_no_events(env):
    for type_ in (L.SCSI_T_AN_QUERY, L.SCSI_T_AN_SUBSCRIBE):
        assert run(env, env.drv.an(type_, 0, 0x7E)) == (0, L.SCSI_S_OK)


def test_unknown_control_type_completes_with_nothing_written(env):
    out = run(env, env.drv.pci.submit(L.SCSI_CONTROLQ, [struct.pack("<I", 9) + bytes(20)], [1]))
    assert out.completed and out.used_len == 0


@pytest.mark.parametrize("out, in_lens", [([b"\0\0\0"], [1]), ([struct.pack("<II", 0, 0)], [1]),
                                          ([struct.pack("<I", 1) + bytes(8)], [5]),
                                          ([struct.pack("<II8sQ", 0, 0, bytes(8), 0), b"x"], [1, 4])])
def test_short_control_requests_break_the_device(env, out, in_lens):
    result = run(env, env.drv.pci.submit(L.SCSI_CONTROLQ, out, in_lens))
    assert result.broken and env.transport.broken_reason == "wrong size for virtio-scsi headers"


# -- events -----------------------------------------------------------------------------------------------------

def test_param_change_event_and_unit_attention(env):
    env.dev.notify_param_change(0)
    events = env.drv.events()
    assert [(e.event, e.lun, e.reason) for e in events] == [(L.SCSI_T_PARAM_CHANGE, encode_lun(0, 0), 0x092A)]
    assert len(env.dev._events) == 8                              # the driver posted the buffer again
    out = run(env, env.drv.command(0, TUR))
    assert out.sense_code == S.Sense(S.UNIT_ATTENTION, 0x2A, 0x09)


def test_lost_events_are_reported_as_missed(env):
    for _ in range(9):                                           # 8 buffers, then none
        env.dev.notify_param_change(0)
    assert env.dev.events_dropped
    events = env.drv.events()                                    # 8 back; re-posting them kicks the queue
    assert len(events) == 8 and all(e.event == L.SCSI_T_PARAM_CHANGE for e in events)
    missed = env.drv.events()
    assert [(e.event, e.lun, e.reason) for e in missed] == [(L.SCSI_T_NO_EVENT | L.SCSI_T_EVENTS_MISSED, bytes(8), 0)]
    assert not env.dev.events_dropped


def test_no_events_before_driver_ok_or_without_change(tmp_path):
    env = make_virtio_scsi(tmp_path, probe=False)
    env.dev.notify_param_change(0)
    assert not env.dev.events_dropped
    env.drv.supported = LINUX_FEATURES & ~L.bit(L.SCSI_F_CHANGE)
    assert run(env, env.drv.probe())
    env.disk.unit_attention = None
    env.dev.notify_param_change(0)
    assert env.drv.events() == [] and env.disk.unit_attention == S.Sense(S.UNIT_ATTENTION, 0x2A, 0x09)
    env.disk.unit_attention = S.POWER_ON_RESET
    env.dev.notify_param_change(0)                               # a reset UA outranks capacity changed
    assert env.disk.unit_attention == S.POWER_ON_RESET
    close_scsi(env)


def test_a_short_event_buffer_breaks_the_device_when_used(env):
    env.dev._events.clear()
    q = env.drv.pci.queues[L.SCSI_EVENTQ]
    q.add([], [8])
    env.drv.pci.kick(q)
    assert not env.transport.broken
    env.dev.notify_param_change(0)
    assert env.transport.broken_reason == "wrong size for virtio-scsi headers"


# -- profiles -------------------------------------------------------------------------------------------------------

def test_profiles_state_every_field_with_a_source():
    for name, profile in PROFILES.items():
        assert isinstance(virtio_scsi_config(name), VirtioScsiConfig)
        assert all(fact.source for _, fact in profile.items())
    assert virtio_scsi_config("qemu-7.2") == VirtioScsiConfig()      # the defaults are QEMU 7.2's
    with pytest.raises(UnknownProfile, match="known profiles are qemu-7.2, qemu-8.2, qemu-1.4-pc, strict"):
        virtio_scsi_config("qemu-9")


def test_qemu_1_4_pc_queues_and_no_any_layout(tmp_path):
    env = make_virtio_scsi(tmp_path, profile="qemu-1.4-pc", config=virtio_scsi_config("qemu-1.4-pc"),
                           pci=virtio_pci_config("qemu-1.4-pc"))
    assert env.drv.limits.seg_max == 126 and env.drv.pci.queues[2].size == 128
    assert not env.transport.offered() & L.bit(L.F_ANY_LAYOUT)
    assert run(env, env.drv.command(0, inquiry(), data_in_len=36)).data_in[32:36] == b"1.4."
    close_scsi(env)


def test_device_arguments_are_checked(env):
    with pytest.raises(ValueError, match="must include 0"):
        VirtioScsiDevice({1: env.disk}, VirtioScsiConfig())
    with pytest.raises(ValueError):
        VirtioScsiConfig(framing="any")
    with pytest.raises(ValueError):
        dataclasses.replace(VirtioScsiConfig(), queue_size=2)
    assert lun_field(0, 0) == bytes.fromhex("0100400000000000")
    assert lun_field(2, 0x1234) == bytes.fromhex("0102523400000000")     # flat space: 01b, then 14 bits
    with pytest.raises(DriverLayoutError, match="single-level"):
        lun_field(0, 0x4000)
