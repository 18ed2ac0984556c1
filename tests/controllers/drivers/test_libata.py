"""libata's rules: when a command may use 28-bit addressing, and Linux's path to ATA TRIM (discard -> WRITE SAME(16)
UNMAP pieces -> libata's DSM translation -> the device)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.ata.config import AtaConfig
from controllers.ata.device import AtaDevice
from controllers.ata.dsm import decode_entries, decode_ranges
from controllers.drivers.libata import (
    ASC_INVALID_FIELD_IN_CDB,
    ASC_INVALID_OPCODE,
    Refused,
    Translated,
    discard_write_sames,
    lba_28_ok,
    max_write_same_blocks,
    trim_entries,
    write_same_to_dsm,
)
from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.profiles import guest_config

MiB = 1 << 20
LIBATA = guest_config("linux-6.1").libata
MAX_WRITE_SAME_BLOCKS = max_write_same_blocks(LIBATA)


def test_the_maximum_write_same_length_is_64_entries_of_65535_sectors():
    assert MAX_WRITE_SAME_BLOCKS == 4_194_240          # about 2 GiB per TRIM command


def test_a_large_discard_becomes_write_same_pieces_of_the_maximum_length():
    pieces = discard_write_sames([(100, 2 * MAX_WRITE_SAME_BLOCKS + 7)], LIBATA)
    assert pieces == [(100, MAX_WRITE_SAME_BLOCKS), (100 + MAX_WRITE_SAME_BLOCKS, MAX_WRITE_SAME_BLOCKS),
                      (100 + 2 * MAX_WRITE_SAME_BLOCKS, 7)]


def test_contiguous_discards_share_one_write_same_and_separate_ones_do_not():
    assert discard_write_sames([(0, 8), (8, 8), (100, 8)], LIBATA) == [(0, 16), (100, 8)]
    # one DSM per WRITE SAME: entries of different requests never share a block
    assert [len(decode_ranges(write_same_to_dsm(lba, n, LIBATA).payload)) for lba, n in
            discard_write_sames([(0, 8), (100, 8)], LIBATA)] == [1, 1]


def test_one_write_same_becomes_one_dsm_with_one_block_of_entries():
    done = write_same_to_dsm(1000, 65535 * 2 + 10, LIBATA)
    assert isinstance(done, Translated)
    assert (done.registers.command, done.registers.features, done.registers.count) == (0x06, 0x01, 1)
    assert done.registers.device == 0xA0                # ata_tf_init's ATA_DEVICE_OBS, never changed
    assert len(done.payload) == 512
    assert decode_ranges(done.payload) == [(1000, 65535), (1000 + 65535, 65535), (1000 + 2 * 65535, 10)]


@pytest.mark.parametrize("kwargs,asc", [({"unmap": False}, ASC_INVALID_FIELD_IN_CDB),
                                        ({"has_trim": False}, ASC_INVALID_FIELD_IN_CDB),
                                        ({"dma": False}, ASC_INVALID_OPCODE)])
def test_libata_refuses_what_it_cannot_translate(kwargs, asc):
    assert write_same_to_dsm(0, 8, LIBATA, **kwargs) == Refused(0x05, asc)


def test_more_than_the_maximum_is_an_invalid_field():
    assert write_same_to_dsm(0, MAX_WRITE_SAME_BLOCKS + 1, LIBATA) == Refused(0x05, ASC_INVALID_FIELD_IN_CDB)
    assert isinstance(write_same_to_dsm(0, MAX_WRITE_SAME_BLOCKS, LIBATA), Translated)


@given(st.integers(0, 1 << 40), st.integers(0, MAX_WRITE_SAME_BLOCKS))
def test_entries_cover_the_range_exactly(lba, n_block):
    entries = trim_entries(lba, n_block, LIBATA)
    assert len(entries) <= 64 and sum(n for _, n in entries) == n_block
    assert all(start == lba + i * 65535 for i, (start, _) in enumerate(entries))
    assert decode_entries(write_same_to_dsm(lba, n_block, LIBATA).payload)[:len(entries)] == entries


def test_a_guest_discard_through_libata_and_the_device_reclaims_host_space(tmp_path):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", 64 * MiB)
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    device = AtaDevice(drive, AtaConfig(capacity_sectors=64 * MiB // 512))
    assert drive.write(0, b"\x01" * (16 * MiB)).ok and drive.flush().ok
    before = os.stat(path).st_blocks * 512
    for lba, n in discard_write_sames([(0, 16 * MiB // 512)], LIBATA):
        done = write_same_to_dsm(lba, n, LIBATA)
        result = device.execute(done.registers, done.payload)
        assert result.ok, result
    assert os.stat(path).st_blocks * 512 <= before - 15 * MiB
    assert drive.read(0, 16 * MiB).data == bytes(16 * MiB)
    drive.close()


@pytest.mark.parametrize("block, n, ok", [(0, 1, True), (0, 256, True), (0, 257, False),
                                          ((1 << 28) - 2, 0, True), ((1 << 28) - 2, 1, False),
                                          ((1 << 28) - 258, 256, True), ((1 << 28) - 257, 256, False)])
def test_lba_28_ok_is_linux_s_rule(block, n, ok):
    assert lba_28_ok(block, n, LIBATA) is ok
