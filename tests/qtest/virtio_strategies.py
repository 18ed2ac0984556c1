"""Hypothesis strategies for replay-script lines of virtio-blk and virtio-scsi, valid and invalid alike, for the
differential property tests: requests at and past the 64 MiB image's end, lengths that are not whole sectors,
segment lists QEMU refuses, every opcode scsi-hd dispatches and some it does not, parameter lists good and bad,
LUNs with no disk, and raw headers too short or with odd LUN fields. Every line is one `parse_script` accepts and
the guest-driver models can send."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

CAPACITY = 131072                       # sectors (512-byte blocks) of tests/qtest/differential.IMAGE_SIZE
SECTOR = 512

# -- shared values -----------------------------------------------------------------------------------------------

# LBAs at the start, inside, at and past the end of the disk, and far out
_EDGE_LBAS = (0, 1, 7, 8, 4096, CAPACITY - 8, CAPACITY - 1, CAPACITY, CAPACITY + 1, 0xFFFFFF, 0xFFFFFFFF,
              1 << 32, (1 << 63) - 1, (1 << 64) - 1)


def _lba(bits: int) -> st.SearchStrategy[int]:
    limit = (1 << bits) - 1
    return st.one_of(st.sampled_from([x for x in _EDGE_LBAS if x <= limit]),
                     st.integers(0, min(limit, CAPACITY + 16)))


def _pattern(length: int) -> st.SearchStrategy[dict]:
    return st.builds(lambda byte: {"pattern": byte, "len": length}, st.sampled_from([0, 0x5A, 0xFF]))


def _data_out(length: int) -> st.SearchStrategy:
    """`length` bytes to send: a pattern (zeros among them, for detect-zeroes)."""
    return _pattern(length) if length else st.just(None)


def _line(command: dict, data_out=None, data_in_len: int = 0) -> dict:
    line = dict(command)
    if data_out is not None:
        line["data_out"] = data_out
    if data_in_len:
        line["data_in_len"] = data_in_len
    return line


# -- virtio-blk --------------------------------------------------------------------------------------------------

_BLK_SECTORS = st.one_of(st.sampled_from(_EDGE_LBAS), st.integers(0, CAPACITY + 16))
# buffer lengths: whole sectors, none, and lengths that are not whole sectors
_BLK_LENGTHS = st.one_of(st.integers(0, 8).map(lambda n: n * SECTOR), st.integers(1, 2 * SECTOR + 1))
_SEG_COUNTS = st.sampled_from([0, 1, 2, 4, 8, 4194303, 4194304, 0xFFFFFFFF])
_SEG_FLAGS = st.sampled_from([0, 1, 2, 3, 0x80000000])
_SEGMENT = st.fixed_dictionaries({"sector": _BLK_SECTORS,
                                  "num_sectors": st.one_of(_SEG_COUNTS, st.integers(0, 64)),
                                  "flags": _SEG_FLAGS})
# the types QEMU 7.2 knows (by name), numbers it does not, and the BARRIER bit on top of known ones
_BLK_NAMES = ("IN", "OUT", "FLUSH", "GET_ID", "GET_LIFETIME", "DISCARD", "WRITE_ZEROES", "SECURE_ERASE",
              "SCSI_CMD", "ZONE_REPORT")
_BLK_NUMBERS = (3, 5, 6, 7, 9, 10, 12, 13, 14, 15, 16, 99, 0x80000000, 0x80000001, 0x80000004, 0x80000008,
                0x8000000B, 0xFFFFFFFF)


@st.composite
def _blk_rw(draw) -> dict:
    kind = draw(st.sampled_from(["IN", "OUT"]))
    length = draw(_BLK_LENGTHS)
    fields = {"type": kind, "sector": draw(_BLK_SECTORS), "ioprio": draw(st.sampled_from([0, 1, 0xFFFFFFFF]))}
    both = draw(st.sampled_from([False] * 5 + [True]))       # a buffer the other way too
    if kind == "IN":
        return _line({"virtio_blk": fields}, draw(_data_out(SECTOR)) if both else None, length)
    return _line({"virtio_blk": fields}, draw(_data_out(length)), SECTOR if both else 0)


@st.composite
def _blk_segments(draw) -> dict:
    kind = draw(st.sampled_from(["DISCARD", "WRITE_ZEROES", "SECURE_ERASE"]))
    segments = draw(st.lists(_SEGMENT, min_size=0, max_size=3))
    extra_in = draw(st.sampled_from([0, 0, 0, 8, SECTOR]))
    return _line({"virtio_blk": {"type": kind, "segments": segments}}, data_in_len=extra_in)


@st.composite
def _blk_payload(draw) -> dict:
    """A DISCARD / WRITE_ZEROES / SECURE_ERASE / other type whose payload is raw bytes: short, odd or long."""
    kind = draw(st.sampled_from(["DISCARD", "WRITE_ZEROES", "SECURE_ERASE", "FLUSH", "GET_ID", "SCSI_CMD"]))
    payload = draw(st.binary(min_size=0, max_size=40))
    line = {"virtio_blk": {"type": kind, "sector": draw(_BLK_SECTORS)}}
    return _line(line, payload.hex() if payload else None, draw(st.sampled_from([0, 1, 8, 19, 20, 21, SECTOR])))


@st.composite
def _blk_other(draw) -> dict:
    kind = draw(st.one_of(st.sampled_from(_BLK_NAMES), st.sampled_from(_BLK_NUMBERS)))
    line = {"virtio_blk": {"type": kind, "sector": draw(_BLK_SECTORS)}}
    data_out = draw(st.one_of(st.none(), st.integers(1, 2).map(lambda n: n * SECTOR).flatmap(_pattern)))
    return _line(line, data_out, draw(st.sampled_from([0, 1, 8, 16, 19, 20, 21, 64, SECTOR])))


@st.composite
def _blk_raw(draw) -> dict:
    """A raw header: shorter than 16 bytes, exactly 16 of a known or unknown type, or longer."""
    kind = draw(st.sampled_from([0, 1, 4, 8, 11, 13, 99]))
    full = struct.pack("<IIQ", kind, draw(st.sampled_from([0, 7])), draw(_BLK_SECTORS))
    header = draw(st.one_of(st.integers(1, 15).map(lambda n: full[:n]), st.just(full),
                            st.binary(min_size=1, max_size=8).map(lambda tail: full + tail)))
    return _line({"header": header.hex()}, None, draw(st.sampled_from([0, 1, 20, SECTOR])))


BLK_LINE = st.one_of(_blk_rw(), _blk_segments(), _blk_payload(), _blk_other(), _blk_raw())


# -- virtio-scsi --------------------------------------------------------------------------------------------------

_ALLOC = st.one_of(st.sampled_from([0, 1, 4, 8, 36, 96, 252, 255, 256, 512, 4096]), st.integers(0, 600))
_BLOCKS = st.one_of(st.sampled_from([0, 1, 2, 8]), st.integers(0, 16))
_RW_BLOCKS = st.one_of(_BLOCKS, _BLOCKS, st.sampled_from([0xFFFF, 0x400000, 0xFFFFFFFF]))
_MAX_BUFFER = 256 << 10                 # larger transfers are drawn with buffers that cannot hold them


def _cdb(*parts: bytes) -> str:
    return b"".join(parts).hex()


@st.composite
def _buffer_for(draw, direction: str, expected: int) -> tuple:
    """The line's data: what the CDB moves (mostly), or a buffer too short, too long, or the wrong way."""
    choice = draw(st.sampled_from(["exact"] * 6 + ["short", "long", "none", "wrong"]))
    if expected > _MAX_BUFFER:
        choice, expected = draw(st.sampled_from(["short", "none", "wrong"])), SECTOR
    length = {"exact": expected, "short": max(expected - draw(st.integers(1, SECTOR)), 0),
              "long": expected + draw(st.sampled_from([1, 8, SECTOR])), "none": 0, "wrong": expected}[choice]
    if choice == "wrong":
        direction = {"in": "out", "out": "in", "none": "in"}[direction]
        length = expected or SECTOR
    if direction == "in":
        return None, length
    if direction == "out":
        return draw(_data_out(length)), 0
    return None, 0


@st.composite
def _scsi_rw(draw) -> dict:
    """READ / WRITE / WRITE AND VERIFY (6/10/12/16) with flag bytes (RDPROTECT, DPO, FUA) drawn too."""
    op = draw(st.sampled_from([0x08, 0x0A, 0x28, 0x2A, 0x2E, 0xA8, 0xAA, 0xAE, 0x88, 0x8A, 0x8E]))
    blocks = draw(_RW_BLOCKS)
    flags = draw(st.sampled_from([0, 0, 0x08, 0x10, 0x20, 0x02, 0xE0]))
    if op in (0x08, 0x0A):
        lba = draw(_lba(21))
        blocks &= 0xFF
        cdb = _cdb(bytes([op]), (lba & 0x1FFFFF).to_bytes(3, "big"), bytes([blocks, 0]))
        moved = (blocks or 256) * SECTOR
    elif op >= 0x88 and op <= 0x8E:
        cdb = _cdb(bytes([op, flags]), draw(_lba(64)).to_bytes(8, "big"), blocks.to_bytes(4, "big"), b"\0\0")
        moved = blocks * SECTOR
    elif op >= 0xA8:
        cdb = _cdb(bytes([op, flags]), draw(_lba(32)).to_bytes(4, "big"), blocks.to_bytes(4, "big"), b"\0\0")
        moved = blocks * SECTOR
    else:
        blocks &= 0xFFFF
        cdb = _cdb(bytes([op, flags]), draw(_lba(32)).to_bytes(4, "big"), b"\0", blocks.to_bytes(2, "big"), b"\0")
        moved = blocks * SECTOR
    direction = "in" if op in (0x08, 0x28, 0xA8, 0x88) else "out"
    data_out, data_in = draw(_buffer_for(direction, moved))
    return _line({"cdb": cdb}, data_out, data_in)


@st.composite
def _scsi_inquiry(draw) -> dict:
    evpd = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
    page = draw(st.sampled_from([0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x01, 0x86, 0xB3, 0xFF]))
    alloc = draw(_ALLOC)
    data_out, data_in = draw(_buffer_for("in", alloc))
    return _line({"cdb": _cdb(bytes([0x12, evpd, page]), alloc.to_bytes(2, "big"), b"\0")}, data_out, data_in)


@st.composite
def _scsi_mode_sense(draw) -> dict:
    ten = draw(st.booleans())
    byte1 = draw(st.sampled_from([0, 0x08, 0x10, 0x18]))       # DBD, LLBAA
    pc = draw(st.integers(0, 3))
    page = draw(st.sampled_from([0x00, 0x01, 0x04, 0x05, 0x08, 0x0A, 0x1C, 0x2A, 0x3F, 0x3E]))
    subpage = draw(st.sampled_from([0, 0, 0xFF, 1]))
    alloc = draw(_ALLOC)
    if ten:
        cdb = _cdb(bytes([0x5A, byte1, pc << 6 | page, subpage, 0, 0, 0]), alloc.to_bytes(2, "big"), b"\0")
    else:
        alloc &= 0xFF
        cdb = _cdb(bytes([0x1A, byte1, pc << 6 | page, subpage, alloc, 0]))
    data_out, data_in = draw(_buffer_for("in", alloc))
    return _line({"cdb": cdb}, data_out, data_in)


@st.composite
def _mode_parameters(draw, ten: bool) -> bytes:
    """A MODE SELECT parameter list: header, maybe a block descriptor (block length 512 or another), pages."""
    descriptors = b""
    if draw(st.booleans()):
        block_length = draw(st.sampled_from([512, 512, 0, 4096, 1024]))
        descriptors = b"\0" * 5 + block_length.to_bytes(3, "big")
    pages = b""
    for _ in range(draw(st.integers(0, 2))):
        page = draw(st.sampled_from([0x08, 0x08, 0x01, 0x04, 0x0A, 0x3F]))
        length = {0x08: 0x12, 0x01: 0x0A, 0x04: 0x16}.get(page, draw(st.sampled_from([2, 10])))
        body = bytearray(length)
        if page == 0x08:
            body[0] = draw(st.sampled_from([0, 0x04]))          # WCE
        pages += bytes([page | draw(st.sampled_from([0, 0x80])), draw(st.sampled_from([length, length, 1]))])
        pages += bytes(body)
    if ten:
        header = struct.pack(">HBBBBH", 0, 0, 0, 0, 0, len(descriptors))
    else:
        header = bytes([0, 0, 0, len(descriptors)])
    return header + descriptors + pages


@st.composite
def _scsi_mode_select(draw) -> dict:
    ten = draw(st.booleans())
    params = draw(_mode_parameters(ten))
    length = draw(st.sampled_from([len(params)] * 4 + [0, 2, len(params) + 4]))
    byte1 = draw(st.sampled_from([0x10, 0x10, 0x11, 0x00, 0x01]))      # PF, SP
    if ten:
        cdb = _cdb(bytes([0x55, byte1, 0, 0, 0, 0, 0]), length.to_bytes(2, "big"), b"\0")
    else:
        length &= 0xFF
        cdb = _cdb(bytes([0x15, byte1, 0, 0, length, 0]))
    data = params.ljust(length, b"\0")[:length]
    data_out = draw(st.sampled_from([data.hex(), data.hex(), (data + b"\0" * 8).hex(), data[:1].hex()]))
    return _line({"cdb": cdb}, data_out or None)


@st.composite
def _scsi_write_same(draw) -> dict:
    sixteen = draw(st.booleans())
    flags = draw(st.sampled_from([0, 0x08, 0x01, 0x09, 0x10, 0x02, 0x04, 0xE0]))     # UNMAP, NDOB, ANCHOR...
    blocks = draw(st.one_of(_BLOCKS, st.sampled_from([4096, 0xFFFF])))
    if sixteen:
        cdb = _cdb(bytes([0x93, flags]), draw(_lba(64)).to_bytes(8, "big"), blocks.to_bytes(4, "big"), b"\0\0")
    else:
        flags &= ~0x01
        cdb = _cdb(bytes([0x41, flags]), draw(_lba(32)).to_bytes(4, "big"), b"\0", blocks.to_bytes(2, "big"),
                   b"\0")
    expected = 0 if flags & 0x01 else SECTOR
    data_out, data_in = draw(_buffer_for("out", expected))
    if data_out is not None and draw(st.booleans()):
        data_out = {"pattern": draw(st.sampled_from([0, 0x5A])), "len": data_out["len"]}
    return _line({"cdb": cdb}, data_out, data_in)


@st.composite
def _unmap_parameters(draw) -> bytes:
    count = draw(st.integers(0, 3))
    descriptors = b"".join(struct.pack(">QI4x", draw(_lba(64)), draw(_BLOCKS | st.sampled_from([0xFFFFFFFF])))
                           for _ in range(count))
    data_length = draw(st.sampled_from([6 + len(descriptors)] * 4 + [0, 6, 7, 100]))
    block_length = draw(st.sampled_from([len(descriptors)] * 4 + [8, 15, 17, 64]))
    return struct.pack(">HH4x", data_length & 0xFFFF, block_length) + descriptors


@st.composite
def _scsi_unmap(draw) -> dict:
    params = draw(_unmap_parameters())
    params = draw(st.sampled_from([params, params, params, params[:6], params[:8] + b"\0" * 3, b""]))
    length = draw(st.sampled_from([len(params)] * 4 + [0, 4, 8, len(params) + 16]))
    anchor = draw(st.sampled_from([0, 0, 0, 1]))
    cdb = _cdb(bytes([0x42, anchor, 0, 0, 0, 0, 0]), length.to_bytes(2, "big"), b"\0")
    return _line({"cdb": cdb}, params.hex() if params else None)


@st.composite
def _scsi_verify(draw) -> dict:
    op = draw(st.sampled_from([0x2F, 0xAF, 0x8F]))
    byte1 = draw(st.sampled_from([0, 0, 0x02, 0x04, 0x06, 0x10, 0xE0]))     # BYTCHK, DPO, VRPROTECT
    blocks = draw(_BLOCKS)
    if op == 0x2F:
        cdb = _cdb(bytes([op, byte1]), draw(_lba(32)).to_bytes(4, "big"), b"\0", blocks.to_bytes(2, "big"), b"\0")
    elif op == 0xAF:
        cdb = _cdb(bytes([op, byte1]), draw(_lba(32)).to_bytes(4, "big"), blocks.to_bytes(4, "big"), b"\0\0")
    else:
        cdb = _cdb(bytes([op, byte1]), draw(_lba(64)).to_bytes(8, "big"), blocks.to_bytes(4, "big"), b"\0\0")
    data_out, data_in = draw(_buffer_for("none", 0))
    return _line({"cdb": cdb}, data_out, data_in)


@st.composite
def _scsi_service_action_in(draw) -> dict:
    action = draw(st.sampled_from([0x10, 0x10, 0x12, 0x12, 0x11, 0x13, 0x00, 0x1F]))
    alloc = draw(st.sampled_from([0, 8, 12, 16, 24, 32, 64]) | st.integers(0, 100))
    cdb = _cdb(bytes([0x9E, action]), draw(_lba(64)).to_bytes(8, "big"), alloc.to_bytes(4, "big"),
               bytes([draw(st.sampled_from([0, 1])), 0]))
    data_out, data_in = draw(_buffer_for("in", alloc))
    return _line({"cdb": cdb}, data_out, data_in)


@st.composite
def _scsi_simple(draw) -> dict:
    """The commands with small fixed CDBs: TEST UNIT READY, READ CAPACITY(10), SYNCHRONIZE CACHE(10/16), REPORT
    LUNS, REQUEST SENSE, START STOP UNIT, PREVENT ALLOW, SEEK, RESERVE/RELEASE, FORMAT UNIT, and the MMC commands
    scsi-hd dispatches (READ TOC among them)."""
    kind = draw(st.sampled_from(["tur", "cap10", "sync10", "sync16", "luns", "sense", "start", "prevent", "seek",
                                 "reserve", "format", "mmc", "toc"]))
    direction, expected = "none", 0
    if kind == "tur":
        cdb = bytes(6)
    elif kind == "cap10":
        cdb = bytes([0x25, 0]) + draw(_lba(32)).to_bytes(4, "big") + bytes([0, 0, draw(st.sampled_from([0, 1])), 0])
        direction, expected = "in", 8
    elif kind == "sync10":
        cdb = bytes([0x35, draw(st.sampled_from([0, 2]))]) + draw(_lba(32)).to_bytes(4, "big") + bytes(4)
    elif kind == "sync16":
        cdb = bytes([0x91, 0]) + draw(_lba(64)).to_bytes(8, "big") + bytes(6)
    elif kind == "luns":
        alloc = draw(st.sampled_from([0, 4, 8, 15, 16, 24, 512]))
        cdb = bytes([0xA0, 0, draw(st.sampled_from([0, 1, 2, 0x10]))]) + bytes(3) + alloc.to_bytes(4, "big") + bytes(2)
        direction, expected = "in", alloc
    elif kind == "sense":
        alloc = draw(st.sampled_from([0, 8, 18, 32, 252, 255]))
        cdb = bytes([0x03, draw(st.sampled_from([0, 1])), 0, 0, alloc, 0])
        direction, expected = "in", alloc
    elif kind == "start":
        cdb = bytes([0x1B, draw(st.sampled_from([0, 1])), 0, 0, draw(st.sampled_from([0, 1, 2, 3, 0x10, 0x30])), 0])
    elif kind == "prevent":
        cdb = bytes([0x1E, 0, 0, 0, draw(st.integers(0, 3)), 0])
    elif kind == "seek":
        cdb = bytes([0x2B, 0]) + draw(_lba(32)).to_bytes(4, "big") + bytes(4)
    elif kind == "reserve":
        op = draw(st.sampled_from([0x16, 0x17, 0x56, 0x57]))
        cdb = bytes([op, draw(st.sampled_from([0, 1, 2]))]) + bytes(4 if op < 0x20 else 8)
    elif kind == "format":
        byte1 = draw(st.sampled_from([0, 0x08, 0x07, 0x10, 0x30]))         # FMTDATA, LONGLIST
        cdb = bytes([0x04, byte1, 0, 0, draw(st.sampled_from([0, 4])), 0])
        direction, expected = ("out", 8 if byte1 & 0x20 else 4) if byte1 & 0x10 else ("none", 0)
    elif kind == "toc":
        alloc = draw(st.sampled_from([0, 4, 12, 20, 48, 64]))
        cdb = bytes([0x43, draw(st.sampled_from([0, 2])), draw(st.sampled_from([0, 1, 2, 3, 0x0F])), 0, 0, 0,
                     draw(st.sampled_from([0, 1, 2, 0xAA]))]) + alloc.to_bytes(2, "big") + bytes(1)
        direction, expected = "in", alloc
    else:
        op = draw(st.sampled_from([0x46, 0x4A, 0x51, 0xAD, 0xBD]))
        alloc = draw(st.sampled_from([0, 8, 64]))
        cdb = bytes([op, 1]) + bytes(5) + alloc.to_bytes(2, "big") + bytes(1 if op < 0xA0 else 3)
        direction, expected = "in", alloc
    data_out, data_in = draw(_buffer_for(direction, expected))
    return _line({"cdb": cdb.hex()}, data_out, data_in)


# opcodes scsi-hd 7.2 does not dispatch: MAINTENANCE IN/OUT, LOG SENSE, PERSISTENT RESERVE, READ LONG, COMPARE AND
# WRITE, XDWRITE, vendor specific, the reserved group 3 (0x60..0x7F, no CDB length) and variable-length 0x7F
_UNKNOWN_OPS = (0x01, 0x05, 0x07, 0x0B, 0x4D, 0x4C, 0x5E, 0x5F, 0x3E, 0x3F, 0x89, 0xA3, 0xA4, 0x60, 0x70, 0x7E,
                0x7F, 0xC0, 0xE5, 0xFF)


@st.composite
def _scsi_unknown(draw) -> dict:
    """An opcode scsi-hd does not know, or a CDB of any opcode shorter than its group's length (the driver pads
    it with zeros to cdb_size, as Linux does)."""
    op = draw(st.sampled_from(_UNKNOWN_OPS))
    cdb = bytes([op]) + draw(st.binary(min_size=0, max_size=15))
    data_in = draw(st.sampled_from([0, 0, 8, SECTOR]))
    return _line({"cdb": cdb.hex()}, None, data_in)


@st.composite
def _scsi_short(draw) -> dict:
    """A known opcode with a CDB of 1 to 5 bytes: the zero padding completes it."""
    op = draw(st.sampled_from([0x00, 0x12, 0x25, 0x28, 0x2A, 0x9E, 0xA0, 0x35, 0x5A]))
    cdb = bytes([op]) + draw(st.binary(min_size=0, max_size=4))
    return _line({"cdb": cdb.hex()}, None, draw(st.sampled_from([0, 8, 36, SECTOR])))


_SCSI_CDB_LINE = st.one_of(_scsi_rw(), _scsi_inquiry(), _scsi_mode_sense(), _scsi_mode_select(), _scsi_write_same(),
                           _scsi_unmap(), _scsi_verify(), _scsi_service_action_in(), _scsi_simple(),
                           _scsi_unknown(), _scsi_short())
_LUNS = st.sampled_from([0] * 12 + [1, 2, 7, 255, 256, 16383])


@st.composite
def _scsi_cdb_line(draw) -> dict:
    line = draw(_SCSI_CDB_LINE)
    lun = draw(_LUNS)
    if lun:
        line["lun"] = lun
    return line


@st.composite
def _lun_field(draw) -> bytes:
    """An 8-byte virtio-scsi LUN field: the flat form Linux sends, another target, a peripheral-method or
    out-of-range LUN, a first byte other than 1, junk in bytes 4-7."""
    first = draw(st.sampled_from([1, 1, 1, 0, 2, 0xC1]))
    target = draw(st.sampled_from([0, 0, 0, 1, 255]))
    lun = draw(st.sampled_from([0x4000, 0x4000, 0x4001, 0x0000, 0x0001, 0x7FFF, 0x8000, 0xC000, 0x0100]))
    tail = draw(st.sampled_from([bytes(4), bytes(4), b"\1\0\0\0", b"\xff" * 4]))
    return bytes([first, target]) + lun.to_bytes(2, "big") + tail


@st.composite
def _scsi_raw(draw) -> dict:
    """A raw request header: the 19 bytes before the CDB (LUN, tag, task attribute, prio, crn) and 32 CDB bytes,
    cut short or extended."""
    attribute = draw(st.sampled_from([0, 0, 1, 2, 3, 0xFF]))
    cdb = draw(st.sampled_from([bytes(6), bytes([0x12, 0, 0, 0, 36, 0]), bytes([0x25]) + bytes(9),
                                bytes([0xA0]) + bytes(5) + (16).to_bytes(4, "big") + bytes(2)])).ljust(32, b"\0")
    header = draw(_lun_field()) + struct.pack("<QBBB", draw(st.sampled_from([0, 1])), attribute, 0, 0) + cdb
    header = draw(st.sampled_from([header] * 4 + [header[:draw(st.integers(1, 50))], header + b"\0" * 4]))
    return _line({"request": header.hex()}, None, draw(st.sampled_from([0, 8, 36, SECTOR])))


SCSI_LINE = st.one_of(_scsi_cdb_line(), _scsi_cdb_line(), _scsi_cdb_line(), _scsi_raw())
