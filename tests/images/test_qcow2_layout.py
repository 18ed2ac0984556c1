"""The fast table codecs agree byte for byte with the construct definitions and with the spec."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from images.qcow2 import layout as L
from images.qcow2.header import Qcow2Header
from images.qcow2.tables import RefcountCodec, decode_u64, encode_u64


@given(st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_u64_table_codec_matches_construct(values):
    raw = L.u64_table(len(values)).build(values)
    assert encode_u64(array("Q", values)) == raw
    assert list(decode_u64(raw)) == values


@pytest.mark.parametrize("order", [3, 4, 5, 6])
@given(data=st.data())
def test_refcount_codec_matches_construct_for_whole_bytes(order, data):
    codec = RefcountCodec(order, 512)
    values = data.draw(st.lists(st.integers(0, codec.max), min_size=codec.entries, max_size=codec.entries))
    raw = L.refcount_block(codec.entries, codec.bits).build(values)
    assert codec.encode(array(codec.empty().typecode, values)) == raw
    assert list(codec.decode(raw)) == values


@pytest.mark.parametrize("order", [0, 1, 2])
@given(data=st.data())
def test_sub_byte_refcounts_are_packed_lsb_first_as_the_spec_says(order, data):
    codec = RefcountCodec(order, 512)
    raw = data.draw(st.binary(min_size=512, max_size=512))
    values = codec.decode(raw)
    bits, per_byte = codec.bits, 8 // codec.bits
    for i in range(0, codec.entries, 97):   # qcow2.txt: refcount_block[i / (8/bits)] >> (i % (8/bits)) * bits
        assert values[i] == (raw[i // per_byte] >> (i % per_byte) * bits) & codec.max
    assert codec.encode(values) == raw


headers = st.builds(
    Qcow2Header, version=st.just(3), cluster_bits=st.integers(12, 21),
    size=st.integers(0, 2**40).map(lambda v: v * 512),
    l1_table_offset=st.just(0), refcount_table_offset=st.integers(1, 50), refcount_table_clusters=st.integers(1, 4),
    incompatible_features=st.sampled_from([0, L.INCOMPAT_DIRTY]), compatible_features=st.sampled_from([0, 1]),
    refcount_order=st.integers(0, 6), backing_file=st.one_of(st.none(), st.text("abcxyz./-_", min_size=1, max_size=40)),
    backing_format=st.sampled_from([None, "qcow2", "raw"]))


@given(headers)
def test_header_build_then_parse_round_trips(h):
    h.refcount_table_offset *= h.cluster_size
    cs = h.cluster_size
    h.size = min(h.size, (cs * cs // 8) * (L.MAX_L1_BYTES // 8))   # the largest disk an L1 table can map
    h.l1_size = -(-h.size // (cs * cs // 8))
    h.l1_table_offset = h.refcount_table_offset + h.refcount_table_clusters * cs
    file_size = h.l1_table_offset + h.l1_size * 8 + cs
    raw = h.build()
    parsed = Qcow2Header.parse(raw.ljust(cs, b"\0"), file_size)
    for name in ("version", "cluster_bits", "size", "l1_size", "l1_table_offset", "refcount_table_offset",
                 "refcount_table_clusters", "incompatible_features", "compatible_features", "refcount_order",
                 "backing_file", "backing_format"):
        assert getattr(parsed, name) == getattr(h, name), name
    assert parsed.build() == raw
