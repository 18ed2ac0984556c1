"""SCSI layouts: sizes from the standards, byte vectors from QEMU's tests, sense formats, the fast READ/WRITE
codec against construct, CDB usage data."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.scsi import layouts as L
from controllers.scsi import sense as S
from controllers.scsi.codec import decode_rw


@pytest.mark.parametrize("layout, size", [
    (L.RW_6, 6), (L.RW_10, 10), (L.RW_12, 12), (L.RW_16, 16), (L.VERIFY_10, 10), (L.VERIFY_12, 12),
    (L.VERIFY_16, 16), (L.SYNCHRONIZE_CACHE_10, 10), (L.SYNCHRONIZE_CACHE_16, 16), (L.UNMAP_CDB, 10),
    (L.UNMAP_HEADER, 8), (L.UNMAP_DESCRIPTOR, 16), (L.WRITE_SAME_10, 10), (L.WRITE_SAME_16, 16),
    (L.READ_CAPACITY_10, 10), (L.READ_CAPACITY_10_DATA, 8), (L.READ_CAPACITY_16, 16), (L.READ_CAPACITY_16_DATA, 32),
    (L.GET_LBA_STATUS, 16), (L.GET_LBA_STATUS_HEADER, 8), (L.LBA_STATUS_DESCRIPTOR, 16), (L.INQUIRY, 6),
    (L.INQUIRY_STANDARD, 36), (L.VPD_HEADER, 4), (L.DESIGNATION_DESCRIPTOR, 4), (L.BLOCK_LIMITS, 0x3C),
    (L.BLOCK_CHARACTERISTICS, 0x3C), (L.LOGICAL_BLOCK_PROVISIONING, 4), (L.MODE_SENSE_6, 6), (L.MODE_SENSE_10, 10),
    (L.MODE_SELECT_6, 6), (L.MODE_SELECT_10, 10), (L.MODE_PARAMETER_HEADER_6, 4), (L.MODE_PARAMETER_HEADER_10, 8),
    (L.SHORT_LBA_BLOCK_DESCRIPTOR, 8), (L.GENERAL_BLOCK_DESCRIPTOR, 8), (L.R_W_ERROR_RECOVERY_PAGE, 12),
    (L.RIGID_DISK_GEOMETRY_PAGE, 24), (L.FLEXIBLE_DISK_PAGE, 32), (L.CACHING_PAGE, 20), (L.CONTROL_PAGE, 12),
    (L.REPORT_LUNS, 12), (L.REPORT_LUNS_HEADER, 8), (L.REPORT_SUPPORTED_OPCODES, 12), (L.COMMAND_DESCRIPTOR, 8),
    (L.ONE_COMMAND_HEADER, 4), (L.COMMAND_TIMEOUTS_DESCRIPTOR, 12), (L.REQUEST_SENSE, 6), (L.TEST_UNIT_READY, 6),
    (L.FIXED_SENSE, 18), (L.DESCRIPTOR_SENSE, 8),
])
def test_every_layout_has_the_size_its_standard_gives(layout, size):
    assert layout.sizeof() == size


def test_every_cdb_layout_is_as_long_as_its_opcode_group_says():
    for op, layout in L.CDB_LAYOUTS.items():
        assert layout.sizeof() == L.cdb_length(op), hex(op)
    assert [L.cdb_length(op) for op in (0x7F, 0xC0, 0xE0)] == [None, None, None]


def test_qemu_large_lba_unmap_parameter_list():
    # tests/qtest/virtio-scsi-test.c test_unmap_large_lba: data length 0x16, descriptor length 0x10,
    # LBA 0x7FFF, 0x3FF blocks
    raw = bytes.fromhex("0016 0010 00000000 0000000000007fff 000003ff 00000000")
    assert L.parse(L.UNMAP_HEADER, raw[:8]) == dict(unmap_data_length=0x16, block_descriptor_data_length=0x10)
    assert L.parse(L.UNMAP_DESCRIPTOR, raw[8:]) == dict(lba=0x7FFF, count=0x3FF)
    assert L.UNMAP_HEADER.build(dict(unmap_data_length=0x16, block_descriptor_data_length=0x10)) == raw[:8]


def test_unaligned_write_same_cdb_of_qemus_test():
    # virtio-scsi-test.c test_unaligned_write_same: WRITE SAME(10) LBA 1, 0x3300 blocks; and NDOB
    cdb = bytes.fromhex("41 00 00 00 00 01 00 33 00 00")
    assert L.parse(L.WRITE_SAME_10, cdb) == dict(opcode=0x41, protect=0, anchor=False, unmap=False, pbdata=False,
                                                 lbdata=False, ndob=False, lba=1, group=0, number_of_blocks=0x3300,
                                                 control=0)
    assert L.parse(L.WRITE_SAME_10, bytes([0x41, 0x01]) + cdb[2:])["ndob"] is True


def test_read_capacity_16_data_carries_lbpme_and_lbprz_in_byte_14():
    raw = L.READ_CAPACITY_16_DATA.build(dict(last_lba=0x7FFF, block_length=512, rc_basis=0, p_type=0, prot_en=False,
                                             p_i_exponent=0, lbppbe=3, lbpme=True, lbprz=True, lowest_aligned_lba=0))
    assert raw[:14] == bytes.fromhex("0000000000007fff 00000200 00 03") and raw[14] == 0xC0 and raw[15:] == bytes(17)


def test_block_limits_offsets_match_qemu_and_libiscsi():
    raw = L.BLOCK_LIMITS.build(dict(
        wsnz=True, maximum_compare_and_write_length=0, optimal_transfer_length_granularity=0,
        maximum_transfer_length=0x3FFFFF, optimal_transfer_length=0, maximum_prefetch_length=0,
        maximum_unmap_lba_count=2097152, maximum_unmap_block_descriptor_count=255, optimal_unmap_granularity=8,
        ugavalid=True, unmap_granularity_alignment=3, maximum_write_same_length=0x3FFFFF))
    page = bytes(4) + raw                      # offsets from the page start, as libiscsi's unmarshaller counts
    assert page[4] == 1 and page[8:12] == (0x3FFFFF).to_bytes(4, "big")
    assert page[20:24] == (2097152).to_bytes(4, "big") and page[24:28] == (255).to_bytes(4, "big")
    assert page[28:32] == (8).to_bytes(4, "big") and page[32:36] == bytes.fromhex("80000003")
    assert page[36:44] == (0x3FFFFF).to_bytes(8, "big") and len(page) == 64


# ---------------------------------------------------------------------------------------------- sense

def test_fixed_and_descriptor_sense_are_qemus_bytes():
    # scsi_build_sense_buf: fixed 70h, key at 2, additional length 10, ASC/ASCQ at 12/13; descriptor 72h
    assert S.fixed(S.LBA_OUT_OF_RANGE) == bytes.fromhex("700005000000000a000000002100") + bytes(4)
    assert S.descriptor(S.WRITE_PROTECTED) == bytes.fromhex("7207270000000000")
    for sense in (S.INVALID_FIELD, S.POWER_ON_RESET, S.SPACE_ALLOC_FAILED):
        assert S.decode(S.fixed(sense)) == S.decode(S.descriptor(sense)) == sense
    with pytest.raises(ValueError):
        S.decode(b"\x70" + bytes(5))


@pytest.mark.parametrize("err, status, sense", [
    (errno.EIO, L.CHECK_CONDITION, S.IO_ERROR), (errno.ENOSPC, L.CHECK_CONDITION, S.SPACE_ALLOC_FAILED),
    (errno.EINVAL, L.CHECK_CONDITION, S.INVALID_FIELD), (errno.ENOMEM, L.CHECK_CONDITION, S.TARGET_FAILURE),
    (errno.ENODATA, L.CHECK_CONDITION, S.READ_ERROR), (errno.ENOMEDIUM, L.CHECK_CONDITION, S.NO_MEDIUM),
    (errno.EPERM, L.CHECK_CONDITION, S.IO_ERROR), (errno.EDOM, S.TASK_SET_FULL, None),
    (errno.EBADE, S.RESERVATION_CONFLICT, None),
])
def test_backend_errno_maps_as_scsi_sense_from_errno(err, status, sense):
    assert S.from_errno(err) == (status, sense)


# ---------------------------------------------------------------------------------------------- fast codec

RW_LAYOUTS = {0x08: L.RW_6, 0x0A: L.RW_6, 0x28: L.RW_10, 0x2A: L.RW_10, 0xA8: L.RW_12, 0xAA: L.RW_12,
              0x88: L.RW_16, 0x8A: L.RW_16}


@given(st.sampled_from(sorted(RW_LAYOUTS)), st.binary(min_size=15, max_size=15))
def test_fast_rw_decoder_agrees_with_construct(opcode, rest):
    cdb = bytes([opcode]) + rest
    layout = RW_LAYOUTS[opcode]
    f = L.parse(layout, cdb[:layout.sizeof()])
    fast = decode_rw(cdb[:layout.sizeof()])
    assert (fast.lba, fast.transfer_length) == (f["lba"], f["transfer_length"])
    assert (fast.protect, fast.dpo, fast.fua) == (f.get("protect", 0), f.get("dpo", False), f.get("fua", False))


def test_read_16_vector():
    cdb = bytes.fromhex("88 e8 0000000123456789 00000010 00 00")
    assert decode_rw(cdb) == (7, False, True, 0x123456789, 16)
    assert L.parse(L.RW_16, cdb)["rarc"] is False


def test_cdb_usage_data_sets_exactly_the_decoded_bits():
    assert L.cdb_usage(L.RW_10, 0x28) == bytes.fromhex("28fc ffffffff 1f ffff ff")
    assert L.cdb_usage(L.UNMAP_CDB, 0x42) == bytes.fromhex("42 01 00000000 1f ffff ff")
    assert L.cdb_usage(L.READ_CAPACITY_16, 0x9E, 0x10)[:2] == bytes.fromhex("9e10")
