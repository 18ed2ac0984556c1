"""ATA/AHCI/IDE layouts: sizes, byte vectors from the specs and QEMU's tests, IDENTIFY, DSM, fast codecs."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from construct import ConstructError
from hypothesis import given
from hypothesis import strategies as st

from controllers.ata import codec as C
from controllers.ata import layouts as L
from controllers.ata.config import AtaConfig
from controllers.ata.dsm import decode_entries, decode_ranges, encode_entries, encode_ranges, split_ranges
from controllers.ata.identify import (
    ata_string,
    ata_string_decode,
    build_identify,
    default_chs,
    parse_identify,
    transfer_mode_words,
)

MiB = 1 << 20
TiB = 1 << 40


def words(page: bytes) -> tuple[int, ...]:
    return struct.unpack("<256H", page)


# ---------------------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("layout, size", [
    (L.ATA_H2D_FIS, 20), (L.ATA_D2H_FIS, 20), (L.ATA_PIO_SETUP_FIS, 20), (L.ATA_DMA_SETUP_FIS, 28),
    (L.ATA_SDB_FIS, 8), (L.AHCI_CMD_HEADER, 32), (L.AHCI_PRDT_ENTRY, 16), (L.IDE_BM_PRD, 8),
    (L.DSM_RANGE_ENTRY, 8), (L.AHCI_CMD_TABLE_HEADER, 0x80), (L.AHCI_RECEIVED_FIS, 256), (L.IDENTIFY_PAGE, 512),
    (L.ATA_TASKFILE, 13),
])
def test_every_layout_has_the_size_its_spec_gives(layout, size):
    assert layout.sizeof() == size


def test_the_fast_codecs_have_the_same_sizes():
    assert (C.ATA_H2D_FIS_FAST.size, C.AHCI_CMD_HEADER_FAST.size, C.AHCI_PRDT_ENTRY_FAST.size) == (20, 32, 16)


def test_a_command_table_starts_its_prdt_at_0x80():
    table = L.ahci_command_table(3)
    raw = table.build(dict(cfis=bytes(range(64)), prdt=[dict(dba=0x1000 * n, dbc=511) for n in range(3)]))
    assert len(raw) == 0x80 + 3 * 16
    assert raw[:64] == bytes(range(64)) and raw[64:0x80] == bytes(64)
    assert C.prdt_regions(raw, 3, offset=0x80) == [(0, 512), (0x1000, 512), (0x2000, 512)]


# ---------------------------------------------------------------------------------------------- FIS vectors

# READ DMA EXT of 8 sectors at LBA 0x123456789A, as libqos ahci.c command_table_init / ahci_command_set_offset
# build it: C bit, device = LBA bit only (0x40), features 0, count in bytes 12-13.
READ_DMA_EXT_FIS = bytes.fromhex("27 80 25 00 9a 78 56 40 34 12 00 00 08 00 00 00 00 00 00 00")
READ_DMA_EXT_FIELDS = dict(command=0x25, lba=0x123456789A, count=8, device=0x40)


def test_read_dma_ext_fis_is_built_as_qemus_ahci_test_builds_it():
    assert L.ATA_H2D_FIS.build(READ_DMA_EXT_FIELDS) == READ_DMA_EXT_FIS
    assert C.pack_h2d_fis(**READ_DMA_EXT_FIELDS) == READ_DMA_EXT_FIS
    parsed = L.ATA_H2D_FIS.parse(READ_DMA_EXT_FIS)
    assert parsed == C.unpack_h2d_fis(READ_DMA_EXT_FIS)
    assert (parsed.c, parsed.lba, parsed.count, parsed.features, parsed.pm_port) == (True, 0x123456789A, 8, 0, 0)


def test_a_fis_of_another_type_is_refused_by_the_construct_definition():
    with pytest.raises(ConstructError):
        L.ATA_H2D_FIS.parse(b"\x34" + READ_DMA_EXT_FIS[1:])


def test_ncq_fields_are_read_from_the_repurposed_h2d_fis():
    # libqos: WRITE FPDMA QUEUED of 8 sectors in slot 5: features = sector count, tag << 3 in count 7:0,
    # device = 0x40 (NCQ_DEVICE_MAGIC); FUA would be device bit 7.
    fis = C.pack_h2d_fis(command=0x61, features=8, count=5 << 3, device=0xC0, lba=0x1000)
    ncq = L.ncq_fields(C.unpack_h2d_fis(fis))
    assert ncq == dict(tag=5, sector_count=8, rarc=False, prio=0, subcommand=0, fua=True, trim=False, lba=0x1000)
    assert L.ncq_fields(dict(count=0, features=0, device=0x40, auxiliary=0, lba=0))["sector_count"] == 65536


def test_d2h_fis_for_an_aborted_command():
    raw = L.ATA_D2H_FIS.build(dict(i=True, status=0x41, error=0x04, lba=0x0000AB00CDEF, device=0xE0, count=3))
    assert raw == bytes.fromhex("34 40 41 04 ef cd 00 e0 ab 00 00 00 03 00 00 00 00 00 00 00")
    assert L.ATA_D2H_FIS.parse(raw) == dict(fis_type=0x34, i=True, pm_port=0, status=0x41, error=0x04,
                                           lba=0xAB00CDEF, device=0xE0, count=3)


def test_pio_setup_fis_carries_e_status_and_transfer_count():
    raw = L.ATA_PIO_SETUP_FIS.build(dict(i=True, d=True, status=0x58, e_status=0x58, transfer_count=512, lba=0))
    assert raw[0] == 0x5F and raw[1] == 0x60 and raw[2] == 0x58
    assert raw[15] == 0x58 and raw[16:18] == b"\x00\x02" and raw[18:] == b"\0\0"


def test_dma_setup_fis_layout():
    raw = L.ATA_DMA_SETUP_FIS.build(dict(a=True, d=True, dma_buffer_id=0x1122334455667788, dma_buffer_offset=0x200,
                                         transfer_count=0x1000))
    assert raw[:4] == bytes([0x41, 0xA0, 0, 0])
    assert raw[4:12] == (0x1122334455667788).to_bytes(8, "little") and raw[12:16] == bytes(4)
    assert raw[16:20] == (0x200).to_bytes(4, "little") and raw[20:24] == (0x1000).to_bytes(4, "little")


def test_sdb_fis_reports_finished_tags_in_sactive():
    raw = L.ATA_SDB_FIS.build(dict(i=True, status=0x50 & L.SDB_STATUS_MASK, sactive=1 << 5 | 1))
    assert raw == bytes.fromhex("a1 40 50 00 21 00 00 00")


FIS_FIELDS = {
    L.ATA_D2H_FIS: st.fixed_dictionaries(dict(
        i=st.booleans(), pm_port=st.integers(0, 15), status=st.integers(0, 255), error=st.integers(0, 255),
        lba=st.integers(0, 2**48 - 1), device=st.integers(0, 255), count=st.integers(0, 0xFFFF))),
    L.ATA_PIO_SETUP_FIS: st.fixed_dictionaries(dict(
        i=st.booleans(), d=st.booleans(), pm_port=st.integers(0, 15), status=st.integers(0, 255),
        error=st.integers(0, 255), lba=st.integers(0, 2**48 - 1), device=st.integers(0, 255),
        count=st.integers(0, 0xFFFF), e_status=st.integers(0, 255), transfer_count=st.integers(0, 0xFFFF))),
    L.ATA_DMA_SETUP_FIS: st.fixed_dictionaries(dict(
        a=st.booleans(), i=st.booleans(), d=st.booleans(), pm_port=st.integers(0, 15),
        dma_buffer_id=st.integers(0, 2**64 - 1), dma_buffer_offset=st.integers(0, 2**32 - 1),
        transfer_count=st.integers(0, 2**32 - 1))),
    L.ATA_SDB_FIS: st.fixed_dictionaries(dict(
        n=st.booleans(), i=st.booleans(), pm_port=st.integers(0, 15), status=st.integers(0, 255),
        error=st.integers(0, 255), sactive=st.integers(0, 2**32 - 1))),
}


@pytest.mark.parametrize("layout", list(FIS_FIELDS), ids=["d2h", "pio_setup", "dma_setup", "sdb"])
@given(data=st.data())
def test_device_to_host_fis_fields_round_trip(layout, data):
    fields = data.draw(FIS_FIELDS[layout])
    parsed = layout.parse(layout.build(fields))
    parsed.pop("fis_type")
    assert parsed == fields


# ---------------------------------------------------------------------------------------------- AHCI memory

def test_command_header_as_libqos_writes_it_for_a_dma_write():
    # command_header_init: flags = 5 (CFL) | CMDH_CLR_BSY | CMDH_WRITE; one PRD; table at 0x7F80.
    raw = C.pack_cmd_header(cfl=5, c=True, w=True, prdtl=1, ctba=0x7F80)
    assert raw == struct.pack("<HHIQ16x", 5 | L.CMDH_C | L.CMDH_W, 1, 0, 0x7F80)
    assert L.AHCI_CMD_HEADER.build(dict(cfl=5, c=True, w=True, prdtl=1, ctba=0x7F80)) == raw


def test_prdt_entry_holds_byte_count_minus_one_and_the_i_bit():
    # libqos ahci_command_commit: dbc = prd_size - 1 | 0x80000000 (request the DPS interrupt)
    raw = C.pack_prdt_entry(dba=0xABCD0000, dbc=4096 - 1, i=True)
    assert raw == struct.pack("<QII", 0xABCD0000, 0, 4095 | 0x80000000)
    assert L.AHCI_PRDT_ENTRY.parse(raw) == dict(dba=0xABCD0000, i=True, dbc=4095)
    assert L.prdt_byte_count(L.AHCI_PRDT_ENTRY.parse(raw).dbc) == 4096
    assert L.prdt_byte_count(L.AHCI_PRDT_DBC_MASK) == 4 * MiB


def test_received_fis_area_puts_each_fis_at_qemus_offset():
    area = L.AHCI_RECEIVED_FIS.build(dict(dsfis=b"\x41" * 28, psfis=b"\x5f" * 20, rfis=b"\x34" * 20,
                                          sdbfis=b"\xa1" * 8, ufis=b"\x99" * 64))
    offsets = (L.RX_FIS_DSFIS, L.RX_FIS_PSFIS, L.RX_FIS_RFIS, L.RX_FIS_SDBFIS, L.RX_FIS_UFIS)
    assert offsets == (0, 0x20, 0x40, 0x58, 0x60)
    assert area[0x00:0x1C] == b"\x41" * 28 and area[0x1C:0x20] == bytes(4)
    assert area[0x20:0x34] == b"\x5f" * 20 and area[0x34:0x40] == bytes(12)
    assert area[0x40:0x54] == b"\x34" * 20 and area[0x54:0x58] == bytes(4)
    assert area[0x58:0x60] == b"\xa1" * 8
    assert area[0x60:0xA0] == b"\x99" * 64 and area[0xA0:] == bytes(0x60)
    assert L.AHCI_RECEIVED_FIS.parse(bytes(256)).rfis == bytes(20)


def test_ahci_register_offsets():
    assert L.port_register(0, L.PX_CI) == 0x138
    assert L.port_register(5, L.PX_SACT) == 0x100 + 5 * 0x80 + 0x34
    assert L.SSTS_QEMU_ATTACHED == 0x113
    # QEMU's ICH9 CAP for 6 ports (hw/ide/ahci.c), composed from the named bits
    cap = 5 | 31 << L.CAP_NCS_SHIFT | 1 << L.CAP_ISS_SHIFT | L.CAP_SNCQ | L.CAP_SAM | L.CAP_S64A
    assert cap == 0xC0141F05


# ---------------------------------------------------------------------------------------------- IDE

def test_bus_master_prd_eot_is_bit_15_of_the_last_word():
    raw = L.IDE_BM_PRD.build(dict(address=0x00100000, byte_count=512, eot=True))
    assert raw == struct.pack("<II", 0x00100000, 512 | L.BM_PRD_EOT)
    assert L.IDE_BM_PRD.parse(raw) == dict(address=0x00100000, byte_count=512, eot=True)
    assert L.IDE_BM_PRD.parse(struct.pack("<II", 8, 0x7FFF0000 | 0x200)).eot is False


@given(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.booleans())
def test_bus_master_prd_fast_codec_equals_the_layout(address, byte_count, eot):
    raw = L.IDE_BM_PRD.build(dict(address=address, byte_count=byte_count, eot=eot))
    assert C.IDE_BM_PRD_FAST.pack(address, byte_count, (L.BM_PRD_EOT >> 16) if eot else 0) == raw
    assert C.IDE_BM_PRD_FAST.unpack(raw) == (address, byte_count, 0x8000 if eot else 0)


def test_bus_master_prd_byte_count_zero_means_64_kib():
    assert L.bm_prd_length(0) == 65536
    assert L.bm_prd_length(512) == 512
    assert L.bm_prd_length(0xFFFF) == 0xFFFE     # QEMU masks bit 0
    assert L.bm_prd_length(1) == 65536


def test_lba_and_count_decoding_follows_ide_get_sector():
    tf = dict(command=0x20, features=0, lba=0x9A_563412, count=0, device=0xE5, control=0)
    assert L.decode_lba(tf, lba48=False) == 0x5563412
    assert L.decode_lba(dict(tf, lba=0x123456789ABC), lba48=True) == 0x123456789ABC
    chs = dict(tf, device=0xA2, lba=0x000301)     # cylinder 3, head 2, sector 1
    assert L.decode_lba(chs, lba48=False) == (3 * 16 + 2) * 63
    assert L.decode_count(0, lba48=False) == 256 and L.decode_count(0x1200, lba48=False) == 256
    assert L.decode_count(0, lba48=True) == 65536 and L.decode_count(7, lba48=True) == 7


def test_taskfile_record_round_trips():
    fields = dict(command=0x35, features=0x0102, lba=0x0000FFEEDDCC, count=0x10, device=0x40, control=0x08)
    assert L.ATA_TASKFILE.parse(L.ATA_TASKFILE.build(fields)) == fields


# ---------------------------------------------------------------------------------------------- IDENTIFY

def test_identify_page_sums_to_zero_with_the_integrity_word():
    page = build_identify(AtaConfig(capacity_sectors=64 * MiB // 512, integrity_word=True))
    assert len(page) == 512
    assert page[510] == 0xA5
    assert sum(page) % 256 == 0
    assert parse_identify(page)["integrity_valid"]


def test_identify_without_the_integrity_word_leaves_word_255_zero_as_qemu_does():
    page = build_identify(AtaConfig(capacity_sectors=1000))    # QEMU's default: no integrity word
    assert words(page)[255] == 0
    assert not parse_identify(page)["integrity_signature"]


def test_identify_capacity_of_a_64_mib_disk():
    w = words(build_identify(AtaConfig(capacity_sectors=64 * MiB // 512)))
    assert (w[60], w[61]) == (0x0000, 0x0002)                 # 131072 sectors
    assert w[100:104] == (0x0000, 0x0002, 0x0000, 0x0000)
    assert (w[1], w[3], w[6]) == (130, 16, 63)                # guess_chs_for_size


def test_identify_capacity_of_a_3_tib_disk_caps_lba28():
    page = build_identify(AtaConfig(capacity_sectors=3 * TiB // 512))
    w = words(page)
    assert (w[60], w[61]) == (0xFFFF, 0x0FFF)                 # 0x0FFFFFFF
    assert w[100:104] == (0x0000, 0x8000, 0x0001, 0x0000)     # 0x180000000
    assert w[1] == 16383
    info = parse_identify(page)
    assert info["capacity_lba28"] == 0x0FFFFFFF and info["capacity_sectors"] == 3 * TiB // 512


def test_identify_fixed_words_are_qemus():
    w = words(build_identify(AtaConfig(capacity_sectors=1 << 20)))
    expected = {0: 0x0040, 5: 512, 47: 0x8010, 49: 0x0B00, 53: 0x0007, 59: 0x0110, 62: 0x0007, 63: 0x0007,
                64: 0x0003, 69: 0x4000, 75: 0, 76: 0, 80: 0x00F0, 81: 0x0016, 82: 0x4021, 83: 0x7400, 84: 0x4000,
                85: 0x4021, 86: 0x3400, 87: 0x4000, 88: 0x203F, 93: 0x6001, 105: 0, 106: 0x6000, 169: 1, 217: 0}
    assert {n: w[n] for n in expected} == expected


def test_identify_strings_are_byte_swapped_and_space_padded():
    page = build_identify(AtaConfig(capacity_sectors=1 << 20, serial="testdisk", firmware="version",
                                    model="QEMU HARDDISK"))
    assert page[20:40] == b"ettsidks" + b" " * 12
    assert page[46:54] == b"evsroi n"
    assert page[54:94] == b"EQUMH RADDSI K" + b" " * 26
    info = parse_identify(page)
    assert (info["serial"], info["firmware"], info["model"]) == ("testdisk", "version", "QEMU HARDDISK")


@given(trim=st.booleans(), drat=st.booleans(), rzat=st.booleans(), max_dsm=st.integers(0, 0xFFFF),
       ncq=st.integers(0, 32), write_cache=st.booleans())
def test_identify_words_follow_the_config(trim, drat, rzat, max_dsm, ncq, write_cache):
    config = AtaConfig(capacity_sectors=1 << 30, integrity_word=True, trim=trim, drat=drat, rzat=rzat,
                       max_dsm_blocks=max_dsm, ncq_depth=ncq, write_cache=write_cache)
    page = build_identify(config)
    w = words(page)
    assert w[169] == int(trim)
    assert w[69] == (drat << 14) | (rzat << 5)
    assert w[105] == max_dsm
    assert w[75] == max(ncq - 1, 0) and w[76] == (0x0100 if ncq else 0)
    assert w[85] & 0x20 == (0x20 if write_cache else 0)
    assert sum(page) % 256 == 0
    info = parse_identify(page)
    assert (info["trim"], info["drat"], info["rzat"], info["max_dsm_blocks"]) == (trim, drat, rzat, max_dsm)
    assert info["zero_after_trim"] == (trim and drat and rzat)     # Linux needs word 69 mask 0x4020
    assert info["ncq"] == bool(ncq) and (not ncq or info["queue_depth"] == ncq)
    assert info["write_cache_enabled"] == write_cache


def test_transfer_mode_rewrites_words_62_63_88_as_set_features_does():
    assert transfer_mode_words(0x45) == (0x07, 0x07, 0x203F)     # UDMA5: QEMU's power-on state
    assert transfer_mode_words(0x22) == (0x07, 0x0407, 0x3F)     # MWDMA2
    assert transfer_mode_words(0x0C) == (0x07, 0x07, 0x3F)       # PIO4
    assert transfer_mode_words(0x80) is None
    page = build_identify(AtaConfig(capacity_sectors=100, integrity_word=True), transfer_mode=0x42)
    assert words(page)[88] == 0x043F and sum(page) % 256 == 0
    with pytest.raises(ValueError):
        build_identify(AtaConfig(capacity_sectors=100), transfer_mode=0x30)


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
def test_ata_string_round_trips(text):
    assert ata_string_decode(ata_string(text, 40)) == text


def test_ata_string_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        ata_string("x" * 21, 20)
    with pytest.raises(ValueError):
        ata_string("é", 20)


@pytest.mark.parametrize("changes", [
    dict(capacity_sectors=-1), dict(capacity_sectors=1 << 48), dict(serial="s" * 21), dict(model="m" * 41),
    dict(firmware="123456789"), dict(ncq_depth=33), dict(max_dsm_blocks=0x10000), dict(out_of_range_error="eio"),
    dict(physical_sector_exp=16), dict(chs=(10, 17, 63)),
])
def test_config_refuses_values_the_page_cannot_hold(changes):
    with pytest.raises(ValueError):
        AtaConfig(**dict(dict(capacity_sectors=1000), **changes))


def test_config_is_a_frozen_value():
    config = AtaConfig(capacity_sectors=1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.trim = False
    assert dataclasses.replace(config, trim=False, drat=False) == AtaConfig(capacity_sectors=1000, trim=False,
                                                                            drat=False)
    assert default_chs(1) == (2, 16, 63)


# ---------------------------------------------------------------------------------------------- DSM / TRIM

def test_dsm_entry_layout():
    raw = encode_entries([(0x123456789ABC, 0x10)])
    assert raw[:8] == bytes.fromhex("bc 9a 78 56 34 12 10 00") and len(raw) == 512
    assert L.DSM_RANGE_ENTRY.parse(raw[:8]) == dict(lba=0x123456789ABC, count=0x10)
    assert encode_ranges([]) == b""


def test_dsm_ranges_longer_than_65535_are_split():
    assert split_ranges([(100, 65535 * 2 + 5), (7, 0)]) == [(100, 65535), (100 + 65535, 65535), (100 + 131070, 5)]
    assert decode_ranges(encode_ranges([(0, 200000)])) == [(0, 65535), (65535, 65535), (131070, 65535), (196605, 3395)]


def test_dsm_decode_skips_unused_entries_and_trailing_bytes_as_qemu_does():
    # ide-test /ide/bmdma/trim's first payload, with an unused entry between the two ranges
    data = encode_entries([(0, 2), (50, 0), (6, 8)]) + b"\xff" * 7
    assert decode_entries(data)[:3] == [(0, 2), (50, 0), (6, 8)]
    assert decode_ranges(data) == [(0, 2), (6, 8)]


def test_dsm_encode_refuses_ranges_outside_the_wire_format():
    for bad in ([(-1, 1)], [(0, -1)], [(2**48 - 1, 2)]):
        with pytest.raises(ValueError):
            encode_ranges(bad)
    with pytest.raises(ValueError):
        encode_entries([(0, 0x10000)])


ranges = st.lists(st.tuples(st.integers(0, 2**47), st.one_of(st.just(0), st.integers(1, 300000))), max_size=80)


@given(ranges)
def test_dsm_encode_then_decode_gives_the_ranges_back(rs):
    data = encode_ranges(rs)
    assert len(data) % 512 == 0
    decoded = decode_ranges(data)
    expected = []                                  # the model: ACS entries hold at most 65535 sectors
    for lba, count in rs:
        while count:
            expected.append((lba, min(count, 65535)))
            lba, count = lba + min(count, 65535), count - min(count, 65535)
    assert decoded == expected
    assert len(data) // 512 == -(-len(expected) // 64)


@given(st.binary(max_size=600))
def test_dsm_decode_agrees_with_the_construct_definition(data):
    whole = data[:len(data) // 8 * 8]
    expected = [(e.lba, e.count) for e in L.DSM_RANGE_ENTRY[len(whole) // 8].parse(whole)]
    assert decode_entries(data) == expected
    assert decode_ranges(data) == [(lba, n) for lba, n in expected if n]


# ---------------------------------------------------------------------------------------------- fast codecs

h2d_fields = st.fixed_dictionaries(dict(
    c=st.booleans(), reserved=st.integers(0, 7), pm_port=st.integers(0, 15), command=st.integers(0, 255),
    features=st.integers(0, 0xFFFF), lba=st.integers(0, 2**48 - 1), device=st.integers(0, 255),
    count=st.integers(0, 0xFFFF), icc=st.integers(0, 255), control=st.integers(0, 255),
    auxiliary=st.integers(0, 2**32 - 1)))

header_fields = st.fixed_dictionaries(dict(
    cfl=st.integers(0, 31), a=st.booleans(), w=st.booleans(), p=st.booleans(), r=st.booleans(), b=st.booleans(),
    c=st.booleans(), pmp=st.integers(0, 15), prdtl=st.integers(0, 0xFFFF), prdbc=st.integers(0, 2**32 - 1),
    ctba=st.integers(0, 2**64 - 1)))

prdt_fields = st.fixed_dictionaries(dict(dba=st.integers(0, 2**64 - 1), dbc=st.integers(0, 0x3FFFFF),
                                         i=st.booleans()))


@given(h2d_fields)
def test_h2d_fis_fast_encoder_equals_construct(fields):
    raw = L.ATA_H2D_FIS.build(fields)
    assert C.pack_h2d_fis(**fields) == raw
    assert L.ATA_H2D_FIS.parse(raw) == dict(fields, fis_type=0x27)


@given(st.binary(min_size=19, max_size=19))
def test_h2d_fis_fast_decoder_equals_construct(tail):
    raw = b"\x27" + tail
    parsed = C.unpack_h2d_fis(raw)
    assert parsed == L.ATA_H2D_FIS.parse(raw)
    assert C.h2d_fis_values(raw) == tuple(L.ATA_H2D_FIS.parse(raw)[name] for name in C.H2D_FIS_FIELDS)
    assert C.pack_h2d_fis(**parsed) == raw          # every bit of a H2D FIS is a field: exact round trip


@given(header_fields)
def test_command_header_fast_encoder_equals_construct(fields):
    raw = L.AHCI_CMD_HEADER.build(fields)
    assert C.pack_cmd_header(**fields) == raw
    assert C.unpack_cmd_header(raw) == fields


@given(st.binary(min_size=32, max_size=32))
def test_command_header_fast_decoder_equals_construct(raw):
    assert C.unpack_cmd_header(raw) == L.AHCI_CMD_HEADER.parse(raw)


@given(prdt_fields)
def test_prdt_fast_encoder_equals_construct(fields):
    raw = L.AHCI_PRDT_ENTRY.build(fields)
    assert C.pack_prdt_entry(**fields) == raw
    assert C.unpack_prdt_entry(raw) == fields


@given(st.binary(min_size=16 * 4, max_size=16 * 4))
def test_prdt_fast_decoder_equals_construct(raw):
    for n in range(4):
        assert C.unpack_prdt_entry(raw, 16 * n) == L.AHCI_PRDT_ENTRY.parse(raw[16 * n:16 * n + 16])
    table = L.AHCI_PRDT_ENTRY[4].parse(raw)
    assert C.prdt_regions(raw, 4) == [(e.dba, e.dbc + 1) for e in table]


d2h_common = dict(status=st.integers(0, 255), error=st.integers(0, 255), lba=st.integers(0, 2**48 - 1),
                  device=st.integers(0, 255), count=st.integers(0, 0xFFFF), i=st.booleans(),
                  pm_port=st.integers(0, 15))


@given(st.fixed_dictionaries(d2h_common))
def test_d2h_fis_fast_encoder_equals_construct(fields):
    assert C.pack_d2h_fis(**fields) == L.ATA_D2H_FIS.build(fields)


@given(st.binary(min_size=19, max_size=19))
def test_d2h_fis_fast_decoder_equals_construct(tail):
    raw = b"\x34" + tail
    assert C.unpack_d2h_fis(raw) == L.ATA_D2H_FIS.parse(raw)
    assert C.unpack_d2h_fis(b"\0" * 4 + raw, 4) == L.ATA_D2H_FIS.parse(raw)


@given(st.fixed_dictionaries(dict(d2h_common, d=st.booleans(), e_status=st.integers(0, 255),
                                  transfer_count=st.integers(0, 0xFFFF))))
def test_pio_setup_fis_fast_encoder_equals_construct(fields):
    assert C.pack_pio_setup_fis(**fields) == L.ATA_PIO_SETUP_FIS.build(fields)


@given(st.fixed_dictionaries(dict(status=st.integers(0, 255), error=st.integers(0, 255), i=st.booleans(),
                                  n=st.booleans(), pm_port=st.integers(0, 15), sactive=st.integers(0, 2**32 - 1))))
def test_sdb_fis_fast_encoder_equals_construct(fields):
    assert C.pack_sdb_fis(**fields) == L.ATA_SDB_FIS.build(fields)


def test_fast_encoders_refuse_fields_that_do_not_fit():
    with pytest.raises(ValueError):
        C.pack_h2d_fis(command=0x25, lba=2**48)
    with pytest.raises(ValueError):
        C.pack_prdt_entry(dba=0, dbc=0x400000)
    with pytest.raises(ValueError):
        C.pack_cmd_header(cfl=32, prdtl=0, ctba=0)
