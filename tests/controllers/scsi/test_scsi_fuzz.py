"""Hypothesis fuzzing of the SCSI disk: random CDBs, UNMAP parameter lists and WRITE SAME commands on every
profile. Each answer is GOOD or CHECK CONDITION with decodable sense, never an exception; UNMAP and WRITE SAME
are checked against a model of the profile's rules (exact sense, exact image), and any other failing command
leaves the image as it was."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.scsi import layouts as L
from controllers.scsi import sense as S
from controllers.scsi.command import Direction
from controllers.scsi.disk import ScsiDisk
from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.profiles.scsi import scsi_disk_config

BLOCKS = 2048                   # a 1 MiB raw disk: discards punch, so unmapped blocks read zeros
SIZE = BLOCKS * 512
FILL = bytes((i * 13 + 1) & 0xFF or 1 for i in range(SIZE))
PROFILES = ("qemu-7.2", "qemu-1.4-pc", "strict")


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    out = {}
    for profile in PROFILES:
        path = str(tmp_path_factory.mktemp("scsi") / "disk.raw")
        create_image(path, "raw", SIZE)
        disk = ScsiDisk(Drive(open_image(path, "raw"), DriveOptions(discard="unmap")),
                        scsi_disk_config(profile, BLOCKS, read_zeroes_after_unmap=True))
        disk.unit_attention = None
        out[profile] = disk
    return out


def fresh(disk: ScsiDisk) -> bytes:
    """Put the pattern back (only if a command changed it) and reset the mode state; return the image."""
    if disk.drive.read(0, SIZE).data != FILL:
        assert disk.drive.write(0, FILL).ok
    disk.write_cache, disk.d_sense, disk.sense = True, False, None
    return FILL


OPCODES = sorted(L.CDB_LAYOUTS) + [0x04, 0x1B, 0x2B, 0x9E, 0xC0, 0x7F, 0xFF]


@settings(max_examples=150)
@given(profile=st.sampled_from(PROFILES), opcode=st.sampled_from(OPCODES), rest=st.binary(min_size=15, max_size=15),
       small=st.booleans(), data=st.data())
def test_random_cdbs_answer_good_or_check_condition(disks, profile, opcode, rest, small, data):
    disk = disks[profile]
    before = fresh(disk)
    cdb = bytearray([opcode]) + rest
    if small:                                   # keep lengths and addresses inside or near the disk
        length = L.cdb_length(opcode) or 6
        for i in range(2, length - 1):
            cdb[i] &= 0x07 if i != length - 2 else 0xFF
    transfer = disk.plan(bytes(cdb))
    data_out = b""
    if transfer.direction is Direction.OUT:
        if transfer.length > 1 << 16:
            return
        data_out = data.draw(st.binary(min_size=transfer.length, max_size=transfer.length))
    res = disk.execute(bytes(cdb), data_out, min(transfer.length, 1 << 16) if transfer.direction is Direction.IN
                       else 0)
    assert res.status in (L.GOOD, L.CHECK_CONDITION)
    if res.status == L.CHECK_CONDITION:
        sense = S.decode(res.sense)
        assert sense.key in (S.ILLEGAL_REQUEST, S.DATA_PROTECT, S.MISCOMPARE, S.NOT_READY)
        if not (opcode == L.Op.UNMAP and profile != "strict"):      # QEMU's UNMAP may stop half way
            assert disk.drive.read(0, SIZE).data == before
    else:
        assert res.sense == b""


def expected_unmap(profile, anchor, raw):
    """(sense or None, ranges discarded) for an UNMAP under the profile's rules."""
    config = scsi_disk_config(profile, BLOCKS)
    n = len(raw)
    if n == 0:
        return None, []
    if anchor and config.unmap_anchor_check:
        return S.INVALID_FIELD, []
    if n < 8:
        return S.INVALID_PARAM_LEN, []
    data_len, desc_len = struct.unpack(">HH", raw[:4])
    if config.unmap_length_rules == "reject":
        if n < data_len + 2 or n < desc_len + 8 or desc_len % 16:
            return S.INVALID_PARAM_LEN, []
    else:
        desc_len = min(desc_len, n - 8) // 16 * 16
    descs = [struct.unpack(">QI", raw[o:o + 12]) for o in range(8, 8 + desc_len, 16)]
    if config.enforce_limits and len(descs) > config.max_unmap_descriptors:
        return S.INVALID_PARAM, []
    done = []
    for lba, count in descs:
        bad = (S.INVALID_PARAM if config.enforce_limits and count > config.max_unmap_blocks else
               S.LBA_OUT_OF_RANGE if lba + count > BLOCKS else None)
        if bad:
            return bad, ([] if config.unmap_validate_first else done)
        done.append((lba, count))
    return None, done


descriptor = st.tuples(st.one_of(st.integers(0, BLOCKS + 2), st.integers(0, 2**64 - 1)),
                       st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))


@settings(max_examples=120)
@given(profile=st.sampled_from(PROFILES), anchor=st.booleans(), descs=st.lists(descriptor, max_size=6),
       header=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))),
       cut=st.integers(0, 16))
def test_unmap_parameter_lists_match_the_profile_model(disks, profile, anchor, descs, header, cut):
    disk = disks[profile]
    fresh(disk)
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    dl, bl = header if header is not None else (len(body) + 6, len(body))
    raw = (struct.pack(">HH4x", dl, bl) + body)
    raw = raw[:max(0, len(raw) - cut)]
    cdb = bytes([0x42, int(anchor), 0, 0, 0, 0, 0]) + len(raw).to_bytes(2, "big") + b"\0"
    res = disk.execute(cdb, raw)
    sense, done = expected_unmap(profile, anchor, raw)
    assert (res.status, res.sense_code) == ((L.CHECK_CONDITION, sense) if sense else (L.GOOD, None))
    model = bytearray(FILL)
    for lba, count in done:
        model[lba * 512:(lba + count) * 512] = bytes(count * 512)
    assert disk.drive.read(0, SIZE).data == model


@settings(max_examples=120)
@given(profile=st.sampled_from(("qemu-7.2", "strict")), sixteen=st.booleans(),
       lba=st.one_of(st.integers(0, BLOCKS + 2), st.integers(0, 2**32 - 1)), count=st.integers(0, 80),
       flags=st.integers(0, 0x1F), zero=st.booleans())
def test_write_same_matches_the_profile_model(disks, profile, sixteen, lba, count, flags, zero):
    disk = disks[profile]
    fresh(disk)
    config = disk.config
    cdb = (struct.pack(">BBQIBB", 0x93, flags, lba, count, 0, 0) if sixteen else
           struct.pack(">BBIBHB", 0x41, flags, lba, 0, count, 0))
    block = bytes(512) if zero else bytes(range(256)) * 2
    ndob = bool(flags & 1) and (sixteen or config.write_same_ndob == "no-op")
    res = disk.execute(cdb, b"" if ndob else block)
    model = bytearray(FILL)
    if ndob and config.write_same_ndob == "no-op":
        expect = None
    elif flags & 0x16:
        expect = S.INVALID_FIELD
    else:
        n = count if count or config.wsnz else max(BLOCKS - lba, 0)
        if count == 0 and config.wsnz:
            expect = S.INVALID_FIELD
        elif lba + n > BLOCKS or (count == 0 and lba >= BLOCKS):
            expect = S.LBA_OUT_OF_RANGE
        else:
            expect = None
            model[lba * 512:(lba + n) * 512] = (bytes(512) if ndob else block) * n
    assert (res.status, res.sense_code) == ((L.CHECK_CONDITION, expect) if expect else (L.GOOD, None))
    assert disk.drive.read(0, SIZE).data == model
