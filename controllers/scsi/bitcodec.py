"""Fast parse and build of the SCSI layouts, generated from each BitStruct's own definition.

construct's BitStruct turns every byte into eight and walks them field by field: 15-30 us for a CDB or a data
page, several times a command. A SCSI layout is a fixed run of big-endian bit fields (BitsInteger, Flag, Padding,
Bytewise(Bytes)), so one int.from_bytes and a shift and mask per field give the same values. What this does not
reproduce exactly (another field type, a short buffer, a value construct would refuse) is left to construct, so
its errors stay construct's. Checked against construct by tests/controllers/scsi/test_scsi_bitcodec.py.
"""

from __future__ import annotations

from construct import BitsInteger, Bytes, Flag, Padded, Pass, Renamed, Struct, Transformed
from construct.lib import bits2bytes, bytes2bits

_INT, _FLAG, _BYTES = range(3)
_FLAG_CLASS = type(Flag)        # construct's Flag is the one instance of its class


class BitCodec:
    """The named fields of one BitStruct: (name, kind, shift from the last bit, width in bits)."""

    def __init__(self, fields: tuple[tuple[str, int, int, int], ...], size: int) -> None:
        self.fields = fields
        self.size = size

    def parse(self, data: bytes | bytearray | memoryview) -> dict | None:
        """The fields of `data` as construct parses them (without `_io`), None when it is too short."""
        if len(data) < self.size:
            return None
        value = int.from_bytes(data[:self.size], "big")
        out = {}
        for name, kind, shift, width in self.fields:
            field = value >> shift & ((1 << width) - 1)
            out[name] = field if kind == _INT else bool(field) if kind == _FLAG else field.to_bytes(width >> 3, "big")
        return out

    def build(self, obj: dict) -> bytes | None:
        """The bytes construct builds from `obj`, None when a field is missing or one construct would refuse (or
        coerce: an int for a Bytes field)."""
        value = 0
        for name, kind, shift, width in self.fields:
            field = obj.get(name)
            if kind == _INT:
                if not isinstance(field, int) or not 0 <= field < 1 << width:
                    return None
            elif kind == _FLAG:
                if name not in obj:
                    return None
                field = 1 if field else 0
            elif type(field) is bytes and len(field) << 3 == width:
                field = int.from_bytes(field, "big")
            else:
                return None
            value |= field << shift
        return value.to_bytes(self.size, "big")


def bit_codec(layout) -> BitCodec | None:
    """The codec of a fixed-size BitStruct made only of fields it reproduces, else None."""
    if not (isinstance(layout, Transformed) and layout.decodefunc is bytes2bits and isinstance(layout.subcon, Struct)):
        return None
    fields, pos = [], 0
    for sub in layout.subcon.subcons:
        if isinstance(sub, Padded) and sub.subcon is Pass and isinstance(sub.length, int) and sub.pattern == b"\0":
            pos += sub.length
            continue
        if not isinstance(sub, Renamed) or not sub.name or sub.name.startswith("_"):
            return None
        inner = sub.subcon
        if isinstance(inner, BitsInteger) and isinstance(inner.length, int) and not inner.signed \
                and inner.swapped is False:
            kind, width = _INT, inner.length
        elif isinstance(inner, _FLAG_CLASS):
            kind, width = _FLAG, 1
        elif isinstance(inner, Transformed) and inner.decodefunc is bits2bytes and isinstance(inner.subcon, Bytes) \
                and isinstance(inner.subcon.length, int):
            kind, width = _BYTES, inner.subcon.length * 8
        else:
            return None
        fields.append((sub.name, kind, pos, width))
        pos += width
    if pos % 8 or pos != layout.sizeof() * 8:
        return None
    return BitCodec(tuple((name, kind, pos - start - width, width) for name, kind, start, width in fields), pos // 8)
