"""The SCSI disk over real raw and qcow2 images, per profile: every command, its errors (status + key/ASC/ASCQ)
and the image left untouched by a failing command; cases after libiscsi's test-tool and QEMU's
tests/qtest/virtio-scsi-test.c."""

from __future__ import annotations

import itertools
import struct

import pytest

from controllers.scsi import layouts as L
from controllers.scsi import sense as S
from controllers.scsi.command import Direction
from controllers.scsi.disk import ScsiDisk
from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.profiles.scsi import scsi_disk_config

MiB = 1 << 20
SIZE = 8 * MiB
GOOD, CHECK = 0x00, 0x02
PROFILES = ("qemu-7.2", "qemu-8.2", "qemu-1.4-pc", "strict")
RECENT_QEMU = ("qemu-7.2", "qemu-8.2", "qemu-1.4-pc")   # the same scsi-hd but for unit attentions, MODE SELECT and
                                                        # (pc-1.4) discard_granularity 0
_COUNTER = itertools.count()


def make(tmp_path, profile="qemu-7.2", fmt="raw", size=SIZE, discard="unmap", bs=512, read_only=False,
         rzau=None, luns=(0,)):
    path = str(tmp_path / f"disk-{next(_COUNTER)}.{fmt}")
    create_image(path, fmt, size)
    drive = Drive(open_image(path, fmt, read_only=read_only), DriveOptions(discard=discard, read_only=read_only))
    disk = ScsiDisk(drive, scsi_disk_config(profile, size // bs, bs, read_only, rzau), luns)
    res = disk.execute(bytes(6))                 # power-on unit attention, as the virtio-scsi qtests expect
    assert (res.status, res.sense_code) == (CHECK, S.POWER_ON_RESET) and res.sense[0] == 0x70
    return disk


def cdb10(op, lba=0, n=0, flags=0, group=0):
    return struct.pack(">BBIBHB", op, flags, lba, group, n, 0)


def cdb12(op, lba=0, n=0, flags=0):
    return struct.pack(">BBIIBB", op, flags, lba, n, 0, 0)


def cdb16(op, lba=0, n=0, flags=0, byte14=0):
    return struct.pack(">BBQIBB", op, flags, lba, n, byte14, 0)


def inquiry(page=None, alloc=255):
    return bytes([0x12, 0 if page is None else 1, page or 0]) + alloc.to_bytes(2, "big") + b"\0"


def unmap_list(descs, *, data_len=None, desc_len=None):
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    dl = len(body) + 6 if data_len is None else data_len
    return struct.pack(">HH4x", dl, len(body) if desc_len is None else desc_len) + body


def unmap_cdb(n, anchor=False):
    return bytes([0x42, int(anchor)]) + bytes(4) + b"\0" + n.to_bytes(2, "big") + b"\0"


def run(disk, cdb, data=b"", alloc=None):
    return disk.execute(cdb, data, alloc)


def fails(res, sense):
    assert res.status == CHECK and res.sense_code == sense, (res.status, res.sense_code)
    return res


def image(disk):
    return disk.drive.read(0, disk.drive.capacity).data


def pattern(nblocks, seed=1, bs=512):
    return bytes((i * 7 + seed) & 0xFF for i in range(nblocks * bs))


# -- unit attention and REQUEST SENSE ------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_inquiry_and_report_luns_neither_see_nor_clear_the_unit_attention(tmp_path, profile):
    path = str(tmp_path / "d.raw")
    create_image(path, "raw", SIZE)
    disk = ScsiDisk(Drive(open_image(path, "raw")), scsi_disk_config(profile, SIZE // 512))
    assert run(disk, inquiry()).ok and run(disk, bytes([0xA0]) + bytes(5) + (16).to_bytes(4, "big") + bytes(2)).ok
    fails(run(disk, cdb10(0x28, 0, 1)), S.POWER_ON_RESET)
    assert run(disk, cdb10(0x28, 0, 1)).ok


@pytest.mark.parametrize("profile, kept", [("qemu-7.2", False), ("qemu-1.4-pc", False), ("qemu-8.2", True),
                                           ("strict", True)])
def test_a_cdb_qemu_cannot_parse_loses_the_unit_attention_only_before_8_1(tmp_path, profile, kept):
    path = str(tmp_path / "d.raw")
    create_image(path, "raw", SIZE)
    disk = ScsiDisk(Drive(open_image(path, "raw")), scsi_disk_config(profile, SIZE // 512))
    fails(run(disk, bytes([0x60]) + bytes(9)), S.INVALID_OPCODE)      # group 3: scsi_req_parse_cdb fails first
    if kept:                                                          # 8.1+: only reporting clears it
        fails(run(disk, bytes(6)), S.POWER_ON_RESET)
    assert run(disk, bytes(6)).ok                                     # 7.2: scsi_req_complete cleared it


MMC_ON_A_DISK = {0x46: bytes([0x46]) + bytes(6) + (8).to_bytes(2, "big") + b"\0",      # GET CONFIGURATION
                 0x4A: bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]),                  # GESN, polled
                 0xBD: bytes([0xBD]) + bytes(7) + (8).to_bytes(2, "big") + bytes(2)}  # MECHANISM STATUS


@pytest.mark.parametrize("op", MMC_ON_A_DISK)
@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_mmc_commands_on_a_disk_as_qemu_answers_them(tmp_path, profile, op):
    """QEMU's scsi-hd dispatches these and refuses them for a disk (INVALID FIELD); GET CONFIGURATION and GESN even
    pass a pending unit attention by. The strict disk does not know them."""
    path = str(tmp_path / "d.raw")
    create_image(path, "raw", SIZE)
    disk = ScsiDisk(Drive(open_image(path, "raw")), scsi_disk_config(profile, SIZE // 512))
    res = run(disk, MMC_ON_A_DISK[op])
    if profile == "strict":
        fails(res, S.POWER_ON_RESET)                                  # reported first ...
        fails(run(disk, MMC_ON_A_DISK[op]), S.INVALID_OPCODE)         # ... then not a disk's command
    elif op == 0xBD:
        fails(res, S.POWER_ON_RESET)
        fails(run(disk, MMC_ON_A_DISK[op]), S.INVALID_FIELD)
    else:
        fails(res, S.INVALID_FIELD)                                   # the unit attention is still pending
        fails(run(disk, bytes(6)), S.POWER_ON_RESET)


def test_qemu_request_sense_first_gets_check_condition_then_reports_it(tmp_path):
    path = str(tmp_path / "d.raw")
    create_image(path, "raw", SIZE)
    disk = ScsiDisk(Drive(open_image(path, "raw")), scsi_disk_config("qemu-7.2", SIZE // 512))
    fails(run(disk, bytes([3, 0, 0, 0, 18, 0])), S.POWER_ON_RESET)       # scsi_req_new: reqops_unit_attention
    res = run(disk, bytes([3, 0, 0, 0, 18, 0]))
    assert res.ok and S.decode(res.data_in) == S.POWER_ON_RESET
    res = run(disk, bytes([3, 0, 0, 0, 252, 0]))
    assert res.ok and S.decode(res.data_in) == S.NO_SENSE and len(res.data_in) == 252   # padded, as QEMU


def test_strict_request_sense_reports_the_unit_attention_as_data(tmp_path):
    path = str(tmp_path / "d.raw")
    create_image(path, "raw", SIZE)
    disk = ScsiDisk(Drive(open_image(path, "raw")), scsi_disk_config("strict", SIZE // 512))
    res = run(disk, bytes([3, 1, 0, 0, 252, 0]))
    assert res.ok and res.data_in == S.descriptor(S.POWER_ON_RESET) and res.residual == 244
    assert run(disk, bytes(6)).ok


@pytest.mark.parametrize("profile", PROFILES)
def test_request_sense_returns_the_last_error_once_in_either_format(tmp_path, profile):
    disk = make(tmp_path, profile)
    fails(run(disk, cdb10(0x28, SIZE // 512, 1)), S.LBA_OUT_OF_RANGE)
    res = run(disk, bytes([3, 1, 0, 0, 8, 0]))
    assert res.ok and res.data_in == bytes.fromhex("7205210000000000")
    res = run(disk, bytes([3, 0, 0, 0, 18, 0]))
    assert res.ok and S.decode(res.data_in) == S.NO_SENSE


# -- INQUIRY and VPD ---------------------------------------------------------------------------------------

def test_standard_inquiry_qemu_pads_to_the_allocation_length(tmp_path):
    disk = make(tmp_path)
    res = run(disk, inquiry(alloc=96))
    f = L.parse(L.INQUIRY_STANDARD, res.data_in[:36])
    assert len(res.data_in) == 96 and f["additional_length"] == 91 and res.data_in[36:] == bytes(60)
    assert (f["vendor"], f["product"], f["revision"], f["version"]) == (b"QEMU    ", b"QEMU HARDDISK   ", b"2.5+", 5)
    assert res.data_in[2:4] == b"\x05\x12" and res.data_in[7] == 0x12
    assert L.parse(L.INQUIRY_STANDARD, run(disk, inquiry(alloc=36)).data_in)["additional_length"] == 31


def test_standard_inquiry_strict_returns_36_bytes(tmp_path):
    disk = make(tmp_path, "strict")
    res = run(disk, inquiry(alloc=96))
    assert len(res.data_in) == 36 and res.residual == 60 and res.data_in[2] == 6 and res.data_in[4] == 31


@pytest.mark.parametrize("profile, pages", [
    ("qemu-7.2", [0x00, 0x83, 0xB0, 0xB1, 0xB2]), ("qemu-1.4-pc", [0x00, 0x83, 0xB0, 0xB1, 0xB2]),
    ("strict", [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]),
])
def test_supported_vpd_pages_and_refusals(tmp_path, profile, pages):
    disk = make(tmp_path, profile)
    res = run(disk, inquiry(0x00))
    assert res.data_in[:4] == bytes([0, 0, 0, len(pages)]) and list(res.data_in[4:4 + len(pages)]) == pages
    for page in (0x81, 0xB3, 0x80 if 0x80 not in pages else 0xB1 if 0xB1 not in pages else 0xC0):
        fails(run(disk, inquiry(page)), S.INVALID_FIELD)
    fails(run(disk, bytes([0x12, 0, 0x83, 0, 255, 0])), S.INVALID_FIELD)   # page code without EVPD


def test_device_identification_page(tmp_path):
    res = run(make(tmp_path), inquiry(0x83))
    assert res.data_in[:14] == bytes.fromhex("0083000a02000006") + b"drive0"   # ASCII, vendor specific
    strict = run(make(tmp_path, "strict"), inquiry(0x83)).data_in
    assert strict[3] == 10 + 12 and strict[14:18] == bytes([1, 3, 0, 8])
    assert strict[18:26] == (0x3000000000000001).to_bytes(8, "big")
    assert run(make(tmp_path, "strict"), inquiry(0x80)).data_in[:12] == b"\x00\x80\x00\x08EMU00001"


@pytest.mark.parametrize("profile, bs, expect", [
    ("qemu-7.2", 512, dict(wsnz=True, maximum_transfer_length=0x3FFFFF, maximum_unmap_lba_count=2097152,
                           maximum_unmap_block_descriptor_count=255, optimal_unmap_granularity=8,
                           ugavalid=False, maximum_write_same_length=0x3FFFFF)),
    ("qemu-7.2", 4096, dict(maximum_transfer_length=524287, maximum_unmap_lba_count=262144,
                            optimal_unmap_granularity=1)),
    ("qemu-1.4-pc", 512, dict(wsnz=True, maximum_transfer_length=0x3FFFFF, maximum_unmap_lba_count=2097152,
                              maximum_unmap_block_descriptor_count=255, optimal_unmap_granularity=0,
                              maximum_write_same_length=0x3FFFFF)),          # observed on 7.2.22, pc-i440fx-1.4
    ("strict", 512, dict(wsnz=False, maximum_transfer_length=65536, maximum_unmap_lba_count=1048576,
                         maximum_unmap_block_descriptor_count=255, ugavalid=True, unmap_granularity_alignment=0,
                         maximum_write_same_length=1048576)),
])
def test_block_limits_page(tmp_path, profile, bs, expect):
    data = run(make(tmp_path, profile, bs=bs), inquiry(0xB0)).data_in
    assert data[:4] == bytes([0, 0xB0, 0, 0x3C])
    fields = L.parse(L.BLOCK_LIMITS, data[4:64])
    assert {k: fields[k] for k in expect} == expect


def test_qemu_max_unmap_lba_count_is_what_libiscsi_flags():
    # libiscsi test_inquiry_block_limits: with LBPU the count must be <= 1048576 unless 0xFFFFFFFF
    counts = {p: scsi_disk_config(p, 1 << 20).max_unmap_blocks for p in ("qemu-7.2", "strict")}
    assert counts["qemu-7.2"] > 1048576 >= counts["strict"]


@pytest.mark.parametrize("profile, byte5, ptype", [("qemu-7.2", 0xE0, 2), ("qemu-1.4-pc", 0xE0, 1),
                                                   ("strict", 0xE4, 2)])
def test_logical_block_provisioning_page(tmp_path, profile, byte5, ptype):
    data = run(make(tmp_path, profile, rzau=True), inquiry(0xB2)).data_in
    assert data[:8] == bytes([0, 0xB2, 0, 4, 0, byte5, ptype, 0])


def test_block_characteristics_page(tmp_path):
    assert run(make(tmp_path, "strict"), inquiry(0xB1)).data_in[:6] == bytes([0, 0xB1, 0, 0x3C, 0, 1])


# -- READ CAPACITY --------------------------------------------------------------------------------------

def rc16(alloc=32, lba=0, pmi=0, action=0x10):
    return bytes([0x9E, action]) + lba.to_bytes(8, "big") + alloc.to_bytes(4, "big") + bytes([pmi, 0])


@pytest.mark.parametrize("profile, rzau, byte14", [("qemu-7.2", True, 0x80), ("qemu-1.4-pc", True, 0x00),
                                                   ("strict", True, 0xC0), ("strict", None, 0x80)])
def test_read_capacity_reports_lbpme_and_lbprz(tmp_path, profile, rzau, byte14):
    disk = make(tmp_path, profile, rzau=rzau)
    res = run(disk, rc16())
    assert res.data_in[:12] == (SIZE // 512 - 1).to_bytes(8, "big") + (512).to_bytes(4, "big")
    assert res.data_in[14] == byte14
    assert run(disk, cdb10(0x25)).data_in == (SIZE // 512 - 1).to_bytes(4, "big") + (512).to_bytes(4, "big")
    fails(run(disk, cdb10(0x25, lba=5)), S.INVALID_FIELD)          # PMI 0 with an LBA
    assert run(disk, cdb10(0x25, lba=5, n=0) [:8] + b"\x01\x00").ok
    fails(run(disk, rc16(lba=1)), S.INVALID_FIELD)


def test_read_capacity_10_clips_at_2_tib(tmp_path):
    size = (1 << 32) * 512 + MiB
    disk = make(tmp_path, size=size)
    assert run(disk, cdb10(0x25)).data_in[:4] == b"\xff\xff\xff\xff"
    assert run(disk, rc16()).data_in[:8] == (size // 512 - 1).to_bytes(8, "big")


def test_allocation_lengths_over_65536_are_refused_by_qemu_only(tmp_path):
    fails(run(make(tmp_path), rc16(alloc=65537)), S.INVALID_FIELD)
    res = run(make(tmp_path, "strict"), rc16(alloc=65537))
    assert res.ok and len(res.data_in) == 32 and res.residual == 65537 - 32


# -- READ / WRITE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("write, read, build", [
    (0x0A, 0x08, lambda op, lba, n: bytes([op, lba >> 16, (lba >> 8) & 0xFF, lba & 0xFF, n, 0])),
    (0x2A, 0x28, cdb10), (0xAA, 0xA8, cdb12), (0x8A, 0x88, cdb16), (0x2E, 0x28, cdb10),
])
def test_write_then_read_back(tmp_path, fmt, write, read, build):
    disk = make(tmp_path, fmt=fmt)
    data = pattern(3)
    assert disk.plan(build(write, 0x123, 3)) == (Direction.OUT, 3 * 512)
    assert run(disk, build(write, 0x123, 3), data).ok
    res = run(disk, build(read, 0x123, 3))
    assert res.ok and res.data_in == data and disk.drive.read(0x123 * 512, 3 * 512).data == data


def test_read_6_of_zero_blocks_means_256(tmp_path):
    disk = make(tmp_path)
    assert disk.plan(bytes([0x08, 0, 0, 8, 0, 0])) == (Direction.IN, 256 * 512)
    assert len(run(disk, bytes([0x08, 0, 0, 8, 0, 0])).data_in) == 256 * 512


@pytest.mark.parametrize("profile", PROFILES)
def test_range_protect_and_zero_length_checks(tmp_path, profile):
    disk = make(tmp_path, profile)
    last = SIZE // 512
    before = image(disk)
    for op in (0x2A, 0x8A):
        build = cdb10 if op == 0x2A else cdb16
        res = fails(run(disk, build(op, last - 1, 2), pattern(2)), S.LBA_OUT_OF_RANGE)
        assert res.residual == 1024
        fails(run(disk, build(op, 0, 1, flags=0x20), pattern(1)), S.INVALID_FIELD)   # WRPROTECT
    fails(run(disk, cdb16(0x8A, (1 << 64) - 1, 2), pattern(2)), S.LBA_OUT_OF_RANGE)  # wraps: no overflow
    fails(run(disk, cdb10(0x28, 0, 1, flags=0xE0)), S.INVALID_FIELD)                 # RDPROTECT
    assert run(disk, cdb10(0x28, last, 0)).ok and run(disk, cdb10(0x2A, last, 0)).ok   # 0 blocks at the end
    fails(run(disk, cdb10(0x28, last + 1, 0)), S.LBA_OUT_OF_RANGE)
    assert image(disk) == before


def test_strict_enforces_the_maximum_transfer_length(tmp_path):
    disk = make(tmp_path, "strict", size=64 * MiB)
    fails(run(disk, cdb16(0x88, 0, 65537)), S.INVALID_FIELD)
    assert run(make(tmp_path, size=64 * MiB), cdb16(0x88, 0, 65537)).ok


@pytest.mark.parametrize("profile", PROFILES)
def test_read_only_drive_answers_write_protected(tmp_path, profile):
    disk = make(tmp_path, profile, read_only=True)
    before = image(disk)
    fails(run(disk, cdb10(0x2A, 0, 1, flags=0x20), pattern(1)), S.WRITE_PROTECTED)   # before WRPROTECT
    if profile in RECENT_QEMU or profile == "strict":
        fails(run(disk, unmap_cdb(24), unmap_list([(0, 8)])), S.WRITE_PROTECTED)
        fails(run(disk, cdb16(0x93, 0, 8, flags=0x08), bytes(512)), S.WRITE_PROTECTED)
    assert run(disk, cdb10(0x28, 0, 1)).ok and image(disk) == before
    header = run(disk, bytes([0x1A, 0x08, 0x08, 0, 255, 0])).data_in[:4]
    assert header[2] & 0x80


def test_fua_and_a_disabled_write_cache_flush(tmp_path):
    disk = make(tmp_path)
    res = run(disk, cdb10(0x2A, 0, 1, flags=0x08), pattern(1))
    assert "flushed" in str(res.completions[0].trace)
    res = run(disk, cdb10(0x2A, 0, 1), pattern(1))
    assert "flushed" not in str(res.completions[0].trace)


# -- VERIFY, SYNCHRONIZE CACHE ------------------------------------------------------------------------

def test_verify_qemu_72_no_range_check_and_bytchk_refused(tmp_path):
    disk = make(tmp_path)
    assert run(disk, cdb10(0x2F, SIZE // 512 + 10, 5)).ok                     # QEMU: VERIFY not range checked
    assert disk.plan(cdb10(0x2F, 0, 2, flags=0x02)) == (Direction.OUT, 1024)
    fails(run(disk, cdb10(0x2F, 0, 2, flags=0x02), pattern(2)), S.INVALID_FIELD)


@pytest.mark.parametrize("profile", ["strict"])
def test_verify_beyond_eol_is_lba_out_of_range(tmp_path, profile):
    disk = make(tmp_path, profile)
    for build, op in ((cdb10, 0x2F), (cdb12, 0xAF), (cdb16, 0x8F)):
        fails(run(disk, build(op, SIZE // 512 - 1, 2)), S.LBA_OUT_OF_RANGE)    # libiscsi test_verify*_beyond_eol


def test_strict_verify_compares(tmp_path):
    disk = make(tmp_path, "strict")
    data = pattern(2)
    assert run(disk, cdb10(0x2A, 4, 2), data).ok
    assert run(disk, cdb10(0x2F, 4, 2, flags=0x02), data).ok
    fails(run(disk, cdb10(0x2F, 4, 2, flags=0x02), data[:-1] + b"\0"), S.MISCOMPARE_DURING_VERIFY)
    assert run(disk, cdb16(0x8F, 100, 50, flags=0x06), bytes(512)).ok          # BYTCHK 11b: one block each
    fails(run(disk, cdb16(0x8F, 3, 2, flags=0x06), bytes(512)), S.MISCOMPARE_DURING_VERIFY)
    fails(run(disk, cdb10(0x2F, 4, 2, flags=0x04)), S.INVALID_FIELD)           # BYTCHK 10b reserved


def test_synchronize_cache(tmp_path):
    disk = make(tmp_path)
    assert run(disk, cdb10(0x35, SIZE, 10)).ok                                 # QEMU ignores the range
    fails(run(disk, cdb16(0x91)), S.INVALID_OPCODE)
    strict = make(tmp_path, "strict")
    res = run(strict, cdb16(0x91, 0, 8))
    assert res.ok and res.completions[0].request.op == "flush"
    fails(run(strict, cdb10(0x35, SIZE // 512, 1)), S.LBA_OUT_OF_RANGE)


# -- UNMAP ---------------------------------------------------------------------------------------------

def written(disk, nblocks=64, lba=0):
    assert run(disk, cdb16(0x8A, lba, nblocks), pattern(nblocks)).ok


@pytest.mark.parametrize("profile", PROFILES)
def test_unmap_header_rules(tmp_path, profile):
    disk = make(tmp_path, profile)
    written(disk)
    before = image(disk)
    assert run(disk, unmap_cdb(0)).ok                                             # length 0: GOOD, nothing parsed
    assert run(disk, unmap_cdb(0, anchor=True)).ok
    anchor = run(disk, unmap_cdb(24, anchor=True), unmap_list([(0, 8)]))
    fails(anchor, S.INVALID_FIELD)
    fails(run(disk, unmap_cdb(6), bytes(6)), S.INVALID_PARAM_LEN)
    bad_len = unmap_list([(0, 8)], desc_len=24)                                   # descriptor length past the list
    res = run(disk, unmap_cdb(len(bad_len)), bad_len)
    odd = unmap_list([(0, 8)], desc_len=20)                                       # not a multiple of 16
    res_odd = run(disk, unmap_cdb(len(odd)), odd)
    if profile in RECENT_QEMU:
        fails(res, S.INVALID_PARAM_LEN)
        fails(res_odd, S.INVALID_PARAM_LEN)
        assert image(disk) == before
    else:                                                                         # SBC: truncated, then executed
        assert res.ok and res_odd.ok and image(disk)[:4096] == bytes(4096)


@pytest.mark.parametrize("profile", PROFILES)
def test_unmap_zero_block_descriptors_libiscsi(tmp_path, profile):
    disk = make(tmp_path, profile)
    last = SIZE // 512
    for descs in ([(lba, 0) for lba in range(0, 256, 17)], [(last, 0)], [], [(0, 0)] * 200 if profile != "strict"
                  else [(0, 0)] * 255):
        assert run(disk, unmap_cdb(8 + 16 * len(descs)), unmap_list(descs)).ok


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_qemu_unmap_stops_at_a_bad_descriptor_after_discarding_the_earlier_ones(tmp_path, fmt):
    disk = make(tmp_path, fmt=fmt)
    written(disk, 256)
    lst = unmap_list([(0, 128), (SIZE // 512, 1), (128, 128)])
    res = fails(run(disk, unmap_cdb(len(lst)), lst), S.LBA_OUT_OF_RANGE)
    assert len(res.completions) == 1 and res.completions[0].request.op == "discard"
    assert disk.drive.read(0, 65536).data == bytes(65536)                     # scsi_unmap_complete_noio
    assert disk.drive.read(65536, 65536).data == pattern(256)[65536:]


def test_strict_unmap_checks_every_descriptor_first(tmp_path):
    disk = make(tmp_path, "strict")
    written(disk, 256)
    before = image(disk)
    lst = unmap_list([(0, 128), (SIZE // 512, 1)])
    res = fails(run(disk, unmap_cdb(len(lst)), lst), S.LBA_OUT_OF_RANGE)
    assert res.completions == [] and image(disk) == before


@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_unmap_limits_are_enforced_only_by_strict(tmp_path, profile):
    disk = make(tmp_path, profile, size=2 << 30)
    too_many = unmap_list([(i * 8, 8) for i in range(256)])
    too_long = unmap_list([(0, disk.config.max_unmap_blocks + 1)])
    for lst in (too_many, too_long):
        res = run(disk, unmap_cdb(len(lst)), lst)
        if profile == "strict":
            fails(res, S.INVALID_PARAM)
            assert res.completions == []
        else:
            assert res.ok                                                   # QEMU enforces neither limit


def test_qemu_large_lba_unmap_with_4k_blocks(tmp_path):
    # virtio-scsi-test.c test_unmap_large_lba (its range check once counted 512-byte units): 4 KiB blocks, 1 GiB,
    # LBA 0x7FFF x 0x3FF blocks
    disk = make(tmp_path, size=1 << 30, bs=4096)
    lst = unmap_list([(0x7FFF, 0x3FF)])
    assert lst[:4] == b"\x00\x16\x00\x10"
    assert run(disk, unmap_cdb(24), lst).ok


# -- WRITE SAME ----------------------------------------------------------------------------------------

def ws16(lba, n, *, unmap=False, anchor=False, ndob=False, flags=0):
    return cdb16(0x93, lba, n, flags=flags | unmap << 3 | anchor << 4 | ndob)


def ws10(lba, n, *, unmap=False, anchor=False, ndob=False, flags=0):
    return cdb10(0x41, lba, n, flags=flags | unmap << 3 | anchor << 4 | ndob)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_write_same_writes_replicated_data_and_zeroes(tmp_path, fmt, profile):
    disk = make(tmp_path, profile, fmt)
    block = pattern(1, seed=9)
    for build in (ws10, ws16):
        assert run(disk, build(10, 1200), block).ok                           # > 512 KiB: several pieces
        assert disk.drive.read(10 * 512, 1200 * 512).data == block * 1200
        res = run(disk, build(10, 1200, unmap=True), bytes(512))
        assert res.ok and res.completions[0].request.op == "write-zeroes" and res.completions[0].request.flags == 2
        assert disk.drive.read(10 * 512, 1200 * 512).data == bytes(1200 * 512)


@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_write_same_refusals(tmp_path, profile):
    disk = make(tmp_path, profile)
    written(disk)
    before = image(disk)
    last = SIZE // 512
    fails(run(disk, ws16(0, 8, anchor=True), bytes(512)), S.INVALID_FIELD)     # ANCHOR without ANC_SUP
    fails(run(disk, ws16(0, 8, anchor=True, unmap=True), bytes(512)), S.INVALID_FIELD)
    fails(run(disk, ws16(0, 8, flags=0x04), bytes(512)), S.INVALID_FIELD)       # PBDATA
    fails(run(disk, ws16(0, 8, flags=0x02), bytes(512)), S.INVALID_FIELD)       # LBDATA
    for lba, n in ((last - 1, 2), (last + 1, 1), (1 << 63, 1), ((1 << 64) - 1, 1)):
        fails(run(disk, ws16(lba, n, unmap=True), bytes(512)), S.LBA_OUT_OF_RANGE)   # libiscsi beyond_eol
    fails(run(disk, ws10(0x80000000, 1), bytes(512)), S.LBA_OUT_OF_RANGE)
    if profile in RECENT_QEMU:
        fails(run(disk, ws16(0, 0), bytes(512)), S.INVALID_FIELD)              # WSNZ = 1
        assert run(disk, ws16(0, disk.config.max_write_same_blocks + 1), bytes(512)).status == CHECK   # range
    else:
        limit = disk.config.max_write_same_blocks
        fails(run(make(tmp_path, "strict", size=(limit + 8) * 512), ws16(0, limit + 1), bytes(512)), S.INVALID_FIELD)
        fails(run(disk, ws16(0, 8, flags=0x20), bytes(512)), S.INVALID_FIELD)  # WRPROTECT
    assert image(disk) == before


def test_strict_write_same_zero_blocks_means_to_the_end(tmp_path):
    disk = make(tmp_path, "strict")
    last = SIZE // 512
    assert run(disk, ws16(last - 4, 0), pattern(1)).ok
    assert disk.drive.read((last - 4) * 512, 2048).data == pattern(1) * 4
    fails(run(disk, ws16(last, 0), pattern(1)), S.LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_write_same_ndob_is_a_no_op_on_qemu_72_and_zeroes_on_strict(tmp_path, fmt):
    qemu = make(tmp_path, "qemu-7.2", fmt)
    written(qemu)
    before = image(qemu)
    assert qemu.plan(ws16(0, 8, ndob=True, unmap=True)) == (Direction.NONE, 0)
    res = run(qemu, ws16(0, 8, ndob=True, unmap=True))
    assert res.ok and res.completions == [] and image(qemu) == before        # as QEMU 7.2.22 does
    assert run(qemu, ws10(0, 8, ndob=True)).ok and image(qemu) == before
    strict = make(tmp_path, "strict", fmt)
    written(strict)
    assert strict.plan(ws10(0, 8, ndob=True)) == (Direction.OUT, 512)       # NDOB only in WRITE SAME(16)
    assert run(strict, ws16(0, 8, ndob=True, unmap=True)).ok
    assert strict.drive.read(0, 4096).data == bytes(4096)


# -- GET LBA STATUS -----------------------------------------------------------------------------------

def gls(lba, alloc=24):
    return rc16(alloc=alloc, lba=lba, action=0x12)


def descriptors(data):
    n = (int.from_bytes(data[:4], "big") - 4) // 16
    return [tuple(L.parse(L.LBA_STATUS_DESCRIPTOR, data[8 + 16 * i:24 + 16 * i]).values()) for i in range(n)]


def test_get_lba_status_exists_only_in_strict(tmp_path):
    fails(run(make(tmp_path), gls(0)), S.INVALID_FIELD)
    disk = make(tmp_path, "strict")
    last = SIZE // 512
    for lba in (last, last + 1, 1 << 63, (1 << 64) - 1):
        fails(run(disk, gls(lba)), S.LBA_OUT_OF_RANGE)                        # libiscsi get_lba_status_beyond_eol
    for lba in (0, 1, 255, last - 1):
        assert run(disk, gls(lba)).ok


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_get_lba_status_follows_writes_and_unmaps(tmp_path, fmt):
    disk = make(tmp_path, "strict", fmt, size=4 * MiB)
    assert run(disk, cdb16(0x8A, 256, 256), pattern(256)).ok                   # 128 KiB at 128 KiB
    res = run(disk, gls(0, alloc=8 + 16 * 8))
    # a fresh raw file holds its first 4 KiB (qemu-img create allocates it), as qemu-img map shows
    head = [(0, 8, 0), (8, 248, 1)] if fmt == "raw" else [(0, 256, 1)]
    assert descriptors(res.data_in) == head + [(256, 256, 0), (512, 8192 - 512, 1)]
    lst = unmap_list([(256, 128)])                                            # 64 KiB: a whole qcow2 cluster
    assert run(disk, unmap_cdb(len(lst)), lst).ok
    # libiscsi test_get_lba_status_unmap_single: the unmapped range now starts a deallocated extent
    assert descriptors(run(disk, gls(256)).data_in) == [(256, 128, 1)]
    assert descriptors(run(disk, gls(384)).data_in) == [(384, 128, 0)]
    assert len(run(disk, gls(0, alloc=20)).data_in) == 20


# -- MODE SENSE / MODE SELECT --------------------------------------------------------------------------

def ms6(page, pc=0, dbd=False, alloc=255, subpage=0):
    return bytes([0x1A, dbd << 3, pc << 6 | page, subpage, alloc, 0])


def ms10(page, pc=0, dbd=False, alloc=1024):
    return bytes([0x5A, dbd << 3, pc << 6 | page, 0, 0, 0, 0]) + alloc.to_bytes(2, "big") + b"\0"


def pages_of(data, header):
    out, p = {}, header + data[header - 1 if header == 4 else 7]
    end = (data[0] + 1) if header == 4 else int.from_bytes(data[:2], "big") + 2
    while p < end:
        out[data[p] & 0x3F] = data[p:p + 2 + data[p + 1]]
        p += 2 + data[p + 1]
    return out


def test_qemu_mode_sense_pages(tmp_path):
    disk = make(tmp_path)
    data = run(disk, ms6(0x3F)).data_in
    assert len(data) == 255 and data[:4] == bytes([99, 0, 0, 8])
    assert data[4:12] == bytes([0, 0, 0x40, 0, 0, 0, 2, 0])                    # general descriptor: 16384 blocks
    pages = pages_of(data, 4)
    assert list(pages) == [1, 4, 5, 8] and pages[8][2] == 0x04 and pages[1][2] == 0x80
    assert pages[4][2:6] == bytes([0, 0, 16, 16])                               # 16 cylinders, 16 heads
    fails(run(disk, ms6(0x0A)), S.INVALID_FIELD)                               # no control page in QEMU
    fails(run(disk, ms6(0x08, pc=3)), S.SAVING_PARAMS_NOT_SUPPORTED)
    changeable = run(disk, ms10(0x08, pc=1, dbd=True)).data_in
    assert changeable[:8] == bytes([0, 26, 0, 0, 0, 0, 0, 0]) and changeable[8:11] == bytes([8, 0x12, 0x04])


def test_strict_mode_sense_pages(tmp_path):
    disk = make(tmp_path, "strict")
    data = run(disk, ms10(0x3F)).data_in
    assert data[3] == 0x10 and data[6:8] == b"\x00\x08"                        # DPOFUA, 8-byte descriptor
    assert data[8:16] == (16384).to_bytes(4, "big") + bytes([0, 0, 2, 0])      # short LBA descriptor
    assert list(pages_of(data, 8)) == [1, 8, 10] and len(data) == 8 + 8 + 12 + 20 + 12
    fails(run(disk, ms6(0x08, subpage=1)), S.INVALID_FIELD)
    fails(run(disk, ms6(0x04)), S.INVALID_FIELD)


def mode_select(disk, page_bytes, six=True):
    if six:
        data = bytes(4) + page_bytes
        return run(disk, bytes([0x15, 0x10, 0, 0, len(data), 0]), data)
    data = bytes(8) + page_bytes
    return run(disk, bytes([0x55, 0x10]) + bytes(5) + len(data).to_bytes(2, "big") + b"\0", data)


@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_mode_select_turns_the_write_cache_off(tmp_path, profile):
    disk = make(tmp_path, profile)
    caching = bytearray(pages_of(run(disk, ms6(0x08, dbd=True)).data_in, 4)[8])
    caching[2] &= ~0x04
    res = mode_select(disk, bytes(caching))
    assert res.ok and disk.write_cache is False and res.completions[0].request.op == "flush"
    assert pages_of(run(disk, ms6(0x08)).data_in, 4)[8][2] & 0x04 == 0
    default = pages_of(run(disk, ms6(0x08, pc=2)).data_in, 4)[8][2] & 0x04
    assert default == (0x04 if profile == "strict" else 0)
    res = run(disk, cdb10(0x2A, 0, 1), pattern(1))
    assert "flushed" in str(res.completions[0].trace)                        # write-through: FUA
    caching[2] |= 0x04
    assert mode_select(disk, bytes(caching), six=False).ok and disk.write_cache


def test_mode_select_refusals_change_nothing(tmp_path):
    disk = make(tmp_path)
    caching = bytearray(pages_of(run(disk, ms6(0x08, dbd=True)).data_in, 4)[8])
    caching[2] = 0x01                                                         # RCD is not changeable
    fails(mode_select(disk, bytes(caching)), S.INVALID_PARAM)
    fails(mode_select(disk, bytes(caching[:-1])), S.INVALID_PARAM_LEN)         # page longer than the list
    fails(mode_select(disk, bytes([8, 0x11]) + bytes(caching[2:-1])), S.INVALID_PARAM)   # wrong page length
    fails(mode_select(disk, bytes([0x08, 0x12]) + bytes(4)), S.INVALID_PARAM_LEN)   # page longer than the list
    fails(mode_select(disk, bytes([0x0A, 0x0A]) + bytes(10)), S.INVALID_PARAM)  # no control page
    fails(run(disk, bytes([0x15, 0x11, 0, 0, 4, 0]), bytes(4)), S.INVALID_FIELD)   # SP = 1
    assert run(disk, bytes([0x15, 0x10, 0, 0, 0, 0])).ok                        # empty list: GOOD
    assert disk.write_cache is True


def block_descriptor(length):
    return bytes(5) + length.to_bytes(3, "big")                         # density, count, reserved, block length


@pytest.mark.parametrize("profile, length, answer", [
    ("qemu-7.2", 512, "good"), ("qemu-7.2", 4096, "refused"), ("qemu-7.2", 256, "good"), ("qemu-7.2", 300, "good"),
    ("qemu-8.2", 4096, "refused"), ("qemu-8.2", 256, "good"),            # 512 x k only (7cfcc79b0a; 7.2.7 too)
    ("qemu-1.4-pc", 4096, "refused"),                                    # 7.2's code on pc-1.4
    ("strict", 512, "good"), ("strict", 300, "refused"),
])
def test_mode_select_block_length_as_each_version_reads_it(tmp_path, profile, length, answer):
    """A length QEMU would switch to is refused (block size changes are not modelled); one it ignores is ignored."""
    disk = make(tmp_path, profile)
    data = bytes([0, 0, 0, 8]) + block_descriptor(length)
    res = run(disk, bytes([0x15, 0x10, 0, 0, len(data), 0]), data)
    if answer == "good":
        assert res.ok and disk.bs == 512
    else:
        fails(res, S.INVALID_PARAM)


def test_strict_d_sense_switches_autosense_to_descriptor_format(tmp_path):
    disk = make(tmp_path, "strict")
    control = bytearray(pages_of(run(disk, ms6(0x0A, dbd=True)).data_in, 4)[10])
    control[2] |= 0x04
    assert mode_select(disk, bytes(control)).ok
    res = fails(run(disk, cdb10(0x28, SIZE, 1)), S.LBA_OUT_OF_RANGE)
    assert res.sense == bytes.fromhex("7205210000000000")


# -- REPORT LUNS, REPORT SUPPORTED OPERATION CODES, unknown opcodes ----------------------------------

def report_luns(alloc, select=0):
    return bytes([0xA0, 0, select, 0, 0, 0]) + alloc.to_bytes(4, "big") + bytes(2)


@pytest.mark.parametrize("profile", ["qemu-7.2", "strict"])
def test_report_luns(tmp_path, profile):
    disk = make(tmp_path, profile, luns=(0, 1, 300))
    res = run(disk, report_luns(64))
    assert res.data_in[:8] == bytes([0, 0, 0, 24, 0, 0, 0, 0])
    assert res.data_in[8:32] == bytes(8) + bytes([0, 1]) + bytes(6) + bytes([0x41, 0x2C]) + bytes(6)
    fails(run(disk, report_luns(15)), S.INVALID_FIELD)
    fails(run(disk, report_luns(64, select=3)), S.INVALID_FIELD)
    assert len(run(disk, report_luns(21)).data_in) == (16 if profile in RECENT_QEMU else 21)


def rsoc(option=0, opcode=0, sa=0, alloc=4096, rctd=False):
    return bytes([0xA3, 0x0C, rctd << 7 | option, opcode]) + sa.to_bytes(2, "big") + alloc.to_bytes(4, "big") + \
        bytes(2)


def test_report_supported_operation_codes(tmp_path):
    fails(run(make(tmp_path), rsoc()), S.INVALID_OPCODE)
    disk = make(tmp_path, "strict")
    data = run(disk, rsoc()).data_in
    listed = [(data[i], int.from_bytes(data[i + 2:i + 4], "big"), data[i + 5] & 1) for i in range(4, len(data), 8)]
    assert (0x42, 0, 0) in listed and (0x9E, 0x12, 1) in listed and (0x9E, 0x10, 1) in listed
    assert (0x91, 0, 0) in listed and len(listed) == int.from_bytes(data[:4], "big") // 8
    one = run(disk, rsoc(1, 0x28)).data_in
    assert one[:4] == bytes([0, 3, 0, 10]) and one[4:] == L.cdb_usage(L.RW_10, 0x28)
    assert run(disk, rsoc(2, 0x9E, 0x12)).data_in[:4] == bytes([0, 3, 0, 16])
    assert run(disk, rsoc(1, 0x07)).data_in == bytes([0, 1, 0, 0])               # REASSIGN BLOCKS not supported
    assert run(disk, rsoc(1, 0x2B)).data_in == bytes([0, 1, 0, 0])               # SEEK(10): obsolete
    assert run(disk, rsoc(1, 0x1B)).data_in[:4] == bytes([0, 3, 0, 6])           # START STOP UNIT
    fails(run(disk, rsoc(1, 0x9E)), S.INVALID_FIELD)                            # has service actions
    fails(run(disk, rsoc(2, 0x28)), S.INVALID_FIELD)
    timed = run(disk, rsoc(rctd=True)).data_in
    assert int.from_bytes(timed[:4], "big") == len(listed) * 20 and timed[9] & 0x02


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("cdb", [bytes([0x07]) + bytes(5), bytes([0xC0]) + bytes(15), bytes([0x7F]) + bytes(9),
                                 bytes([0x28, 0, 0])])
def test_unknown_or_short_cdbs_are_invalid_opcodes(tmp_path, profile, cdb):
    fails(run(make(tmp_path, profile), cdb), S.INVALID_OPCODE)


def test_data_phase_plans(tmp_path):
    disk = make(tmp_path)
    assert disk.plan(inquiry(alloc=0x1234)) == (Direction.IN, 0x1234)
    assert disk.plan(unmap_cdb(24)) == (Direction.OUT, 24)
    assert disk.plan(ws16(0, 8)) == (Direction.OUT, 512)
    assert disk.plan(cdb10(0x35, 0, 8)) == (Direction.NONE, 0)
    assert disk.plan(bytes([0x07, 0, 0, 0, 7, 0])) == (Direction.OUT, 7)       # scsi_cdb_xfer, to the device
    assert disk.plan(bytes([0x4D, 0, 0, 0, 0, 0, 0, 0, 9, 0])) == (Direction.IN, 9)     # from the device
    assert disk.plan(cdb10(0x3F, 0, 8)) == (Direction.NONE, 0)                  # WRITE LONG(10): scsi_req_xfer 0
    assert disk.plan(bytes([0x1D, 0, 0, 1, 2, 0])) == (Direction.OUT, 0x102)    # SEND DIAGNOSTIC: bytes 3-4
    with pytest.raises(ValueError):
        disk.execute(cdb10(0x2A, 0, 1), b"")



# -- commands a fixed disk only checks (QEMU scsi_disk_emulate_command) ---------------------------------------
SECTORS = SIZE // 512
NO_OPS = {
    "start stop": bytes([0x1B, 0, 0, 0, 0x01, 0]),
    "prevent allow": bytes([0x1E, 0, 0, 0, 0x01, 0]),
    "seek last lba": bytes([0x2B, 0]) + (SECTORS - 1).to_bytes(4, "big") + bytes(4),
    "format unit": bytes([0x04]) + bytes(5),
    "reserve 6": bytes([0x16]) + bytes(5),
    "release 10": bytes([0x57]) + bytes(9),
}


@pytest.mark.parametrize("name", NO_OPS)
@pytest.mark.parametrize("profile", PROFILES)
def test_no_op_commands_per_profile(tmp_path, profile, name):
    disk = make(tmp_path, profile)
    run(disk, bytes(6))                                      # TEST UNIT READY takes the power-on unit attention
    before = disk.drive.read(0, 4096).data
    res = run(disk, NO_OPS[name])
    if NO_OPS[name][0] in disk.config.no_op_commands:
        assert res.status == L.GOOD and res.data_in == b"", (profile, name)
    else:
        fails(res, S.INVALID_OPCODE)
    assert disk.drive.read(0, 4096).data == before
    accepted = {"qemu-7.2": set(NO_OPS), "qemu-8.2": set(NO_OPS), "qemu-1.4-pc": set(NO_OPS),
                "strict": {"start stop", "prevent allow", "format unit"}}[profile]
    assert (NO_OPS[name][0] in disk.config.no_op_commands) == (name in accepted)


def test_no_op_commands_check_what_qemu_checks(tmp_path):
    disk = make(tmp_path)
    run(disk, bytes(6))
    fails(run(disk, bytes([0x2B, 0]) + SECTORS.to_bytes(4, "big") + bytes(4)), S.LBA_OUT_OF_RANGE)
    fails(run(disk, bytes([0x16, 0x01]) + bytes(4)), S.INVALID_FIELD)            # RESERVE(6) 3rdPTY
    fails(run(disk, bytes([0x56, 0x02]) + bytes(8)), S.INVALID_FIELD)            # RESERVE(10) LONGID
    assert disk.plan(bytes([0x04, 0, 0, 0, 12, 0])) == (Direction.NONE, 0)     # FORMAT UNIT: a header with FMTDATA
    assert disk.plan(bytes([0x04, 0x30, 0, 0, 0, 0])) == (Direction.OUT, 8)     # ... 8 bytes with LONGLIST
    assert run(disk, bytes([0x04, 0x10, 0, 0, 12, 0]), bytes(4)).status == L.GOOD
    assert disk.plan(NO_OPS["start stop"]) == (Direction.NONE, 0)
