"""virtio layouts: sizes and offsets from the spec, and the fast codecs byte for byte against construct."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.virtio import layouts as L

u16, u32, u64 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 2**64 - 1)


@pytest.mark.parametrize("layout, size", [
    (L.VIRTQ_DESC, 16), (L.VIRTQ_USED_ELEM, 8), (L.virtq_avail(256), 6 + 2 * 256), (L.virtq_used(256), 6 + 8 * 256),
    (L.VIRTIO_PCI_COMMON_CFG, 0x3C), (L.VIRTIO_BLK_CONFIG, 96), (L.VIRTIO_BLK_OUTHDR, 16),
    (L.VIRTIO_BLK_SEGMENT, 16), (L.GET_ID_PAGE, 20),
])
def test_every_layout_has_the_size_its_spec_gives(layout, size):
    assert layout.sizeof() == size


def test_ring_sizes_and_event_words():
    assert (L.avail_ring_size(8), L.used_ring_size(8)) == (22, 70)
    assert L.used_event_offset(8) == 20 and L.avail_event_offset(8) == 68


def test_common_cfg_offsets_are_virtio_1_2_4_1_4_3():
    expected = {"device_feature_select": 0x00, "device_feature": 0x04, "driver_feature_select": 0x08,
                "driver_feature": 0x0C, "config_msix_vector": 0x10, "num_queues": 0x12, "device_status": 0x14,
                "config_generation": 0x15, "queue_select": 0x16, "queue_size": 0x18, "queue_msix_vector": 0x1A,
                "queue_enable": 0x1C, "queue_notify_off": 0x1E, "queue_desc": 0x20, "queue_driver": 0x28,
                "queue_device": 0x30, "queue_notify_data": 0x38, "queue_reset": 0x3A}
    assert {name: off for name, (off, _) in L.COMMON_CFG_FIELDS.items()} == expected


def test_blk_config_offsets_are_virtio_1_2_5_2_4():
    offsets = {name: off for name, (off, _) in L.BLK_CONFIG_FIELDS.items()}
    assert offsets["seg_max"] == 12 and offsets["blk_size"] == 20 and offsets["writeback"] == 32
    assert offsets["num_queues"] == 34 and offsets["max_discard_sectors"] == 36 and offsets["max_discard_seg"] == 40
    assert offsets["discard_sector_alignment"] == 44 and offsets["max_write_zeroes_sectors"] == 48
    assert offsets["write_zeroes_may_unmap"] == 56 and offsets["max_secure_erase_sectors"] == 60
    assert offsets["zoned_model"] == 92
    assert (L.BLK_CONFIG_SIZE_BASE, L.BLK_CONFIG_SIZE_DISCARD, L.BLK_CONFIG_SIZE_WRITE_ZEROES) == (36, 48, 57)


def test_a_qtest_style_write_header_and_segment_bytes():
    # virtio-blk-test.c: OUT at sector 0; a WRITE_ZEROES segment of 1 sector with flags 0
    header = bytes.fromhex("01000000" "00000000" + "00" * 8)
    assert L.VIRTIO_BLK_OUTHDR.build(dict(type=L.BLK_T_OUT, sector=0)) == header
    assert L.VIRTIO_BLK_SEGMENT.build(dict(sector=0x10, num_sectors=1)) == bytes.fromhex("10" + "00" * 7 + "01000000"
                                                                                          + "00" * 4)


@given(addr=u64, length=u32, flags=u16, nxt=u16)
def test_descriptor_codec_matches_construct(addr, length, flags, nxt):
    built = L.VIRTQ_DESC.build(dict(addr=addr, len=length, flags=flags, next=nxt))
    assert built == L.DESC_FAST.pack(addr, length, flags, nxt)
    assert L.DESC_FAST.unpack(built) == (addr, length, flags, nxt)


@given(id_=u32, length=u32)
def test_used_element_codec_matches_construct(id_, length):
    built = L.VIRTQ_USED_ELEM.build(dict(id=id_, len=length))
    assert built == L.USED_ELEM_FAST.pack(id_, length)


@given(type_=u32, ioprio=u32, sector=u64)
def test_request_header_codec_matches_construct(type_, ioprio, sector):
    built = L.VIRTIO_BLK_OUTHDR.build(dict(type=type_, ioprio=ioprio, sector=sector))
    assert built == L.BLK_OUTHDR_FAST.pack(type_, ioprio, sector)
    assert tuple(L.VIRTIO_BLK_OUTHDR.parse(built).values())[1:] == L.BLK_OUTHDR_FAST.unpack(built)


@given(sector=u64, num=u32, flags=u32)
def test_segment_codec_matches_construct(sector, num, flags):
    built = L.VIRTIO_BLK_SEGMENT.build(dict(sector=sector, num_sectors=num, flags=flags))
    assert built == L.BLK_SEGMENT_FAST.pack(sector, num, flags)


@given(ring=st.lists(u16, min_size=4, max_size=4), idx=u16, event=u16)
def test_avail_ring_layout(ring, idx, event):
    raw = L.virtq_avail(4).build(dict(flags=1, idx=idx, ring=ring, used_event=event))
    assert L.U16.unpack_from(raw, L.AVAIL_IDX)[0] == idx
    assert [L.U16.unpack_from(raw, L.AVAIL_RING + 2 * i)[0] for i in range(4)] == ring
    assert L.U16.unpack_from(raw, L.used_event_offset(4))[0] == event


@pytest.mark.parametrize("event, new, old, expected", [
    (0, 1, 0, True), (1, 1, 0, False), (2, 3, 1, True), (0xFFFF, 0, 0xFFFE, True), (5, 3, 1, False),
    (7, 7, 7, False),
])
def test_vring_need_event(event, new, old, expected):
    assert L.vring_need_event(event, new, old) is expected


@given(first=st.integers(0, 255), target=st.integers(0, 255), single_level=u16, rest=st.binary(min_size=4, max_size=4))
def test_lun_codec_matches_construct(first, target, single_level, rest):
    built = L.VIRTIO_SCSI_LUN.build(dict(first=first, target=target, single_level=single_level, rest=rest))
    assert built == L.SCSI_LUN_FAST.pack(first, target, single_level, rest)
    assert tuple(L.VIRTIO_SCSI_LUN.parse(built).values())[1:] == L.SCSI_LUN_FAST.unpack(built)


@given(st.data())
def test_blk_config_codec_matches_construct(data):
    # capacity (it has no default) and any subset of the others, each in its range; the rest take the defaults
    fields = {}
    for name, (_offset, size) in L.BLK_CONFIG_FIELDS.items():
        if name == "capacity" or data.draw(st.booleans()):
            fields[name] = data.draw(st.integers(0, 2 ** (8 * size) - 1))
    assert L.BLK_CONFIG_FAST.pack(*{**L.BLK_CONFIG_DEFAULTS, **fields}.values()) == L.VIRTIO_BLK_CONFIG.build(fields)
