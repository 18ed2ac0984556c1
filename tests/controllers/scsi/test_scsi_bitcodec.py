"""The generated codec of every SCSI layout against construct itself: the same fields from the same bytes, the
same bytes from the same fields, and construct's own error where the codec steps aside."""

from __future__ import annotations

import pytest
from construct import Construct, ConstructError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controllers.scsi import layouts as L
from controllers.scsi.bitcodec import bit_codec

LAYOUTS = {name: value for name, value in vars(L).items() if name.isupper() and isinstance(value, Construct)}
FAST = settings(derandomize=True, max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _reference(layout, data: bytes) -> dict:
    return {k: v for k, v in layout.parse(data).items() if not k.startswith("_")}


def test_every_layout_gets_a_codec():
    assert len(LAYOUTS) > 50
    assert [name for name, layout in LAYOUTS.items() if bit_codec(layout) is None] == []


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@FAST
@given(data=st.data())
def test_codec_parses_and_builds_as_construct_does(name, data):
    layout = LAYOUTS[name]
    codec = bit_codec(layout)
    raw = data.draw(st.binary(min_size=layout.sizeof(), max_size=layout.sizeof() + 3))
    reference = _reference(layout, raw)
    fields = codec.parse(raw)
    assert list(fields.items()) == list(reference.items())
    assert [type(v) for v in fields.values()] == [type(v) for v in reference.values()]
    assert codec.build(reference) == layout.build(reference)
    assert L.parse(layout, memoryview(raw)) == reference and L.build(layout, reference) == layout.build(reference)


@pytest.mark.parametrize("fields", [
    {"opcode": 0x28, "lba": 1 << 32},           # too wide for its bits
    {"opcode": -1},                              # negative
    {"opcode": "x"},                             # not an int
    {},                                          # a field missing
])
def test_what_construct_refuses_is_refused_by_construct(fields):
    full = dict(_reference(L.RW_10, bytes(10)), **fields)
    if not fields:
        del full["lba"]
    assert bit_codec(L.RW_10).build(full) is None
    with pytest.raises((ConstructError, KeyError)):
        L.build(L.RW_10, full)


def test_bytes_fields_take_exact_bytes_only():
    fields = _reference(L.INQUIRY_STANDARD, bytes(36))
    codec = bit_codec(L.INQUIRY_STANDARD)
    assert codec.build(dict(fields, vendor=b"QEMU    ")) == L.INQUIRY_STANDARD.build(dict(fields, vendor=b"QEMU    "))
    assert codec.build(dict(fields, vendor=b"QEMU")) is None and codec.build(dict(fields, vendor=0)) is None


def test_a_short_buffer_is_construct_s_error():
    assert bit_codec(L.INQUIRY).parse(bytes(5)) is None
    with pytest.raises(ConstructError):
        L.parse(L.INQUIRY, bytes(5))
