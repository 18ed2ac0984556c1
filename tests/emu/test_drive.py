"""The block layer: drive options, splitting, discard/zero semantics and the trace."""

from __future__ import annotations

import errno
import os

import pytest

from emu.block import Drive, DriveOptions, Request
from emu.block.drive import is_zero, split
from emu.errors import UsageError
from emu.sim import Monitor
from emu.trace import Act
from images import create_image, open_image

MiB = 1 << 20


def make(tmp_path, fmt="qcow2", size=16 * MiB, options=None, **drive_options):
    path = str(tmp_path / f"disk.{fmt}")
    create_image(path, fmt, size, options or {})
    return Drive(open_image(path, fmt), DriveOptions(**drive_options)), path


def host_bytes(path):
    return os.stat(path).st_blocks * 512


# -- splitting ---------------------------------------------------------------------------------------
def test_split_matches_qemus_worked_example():
    """QEMU block/io.c bdrv_co_pdiscard: discard [1000, 200000) at 64 KiB alignment -> head, bulk, tail."""
    assert split(1000, 199000, 65536, 1, 0) == [(1000, 64536), (65536, 131072), (196608, 3392)]


def test_split_keeps_aligned_requests_whole_and_caps_chunks():
    assert split(0, 4 * MiB, 65536, 1, 0) == [(0, 4 * MiB)]
    assert split(0, 4 * MiB, 65536, 1, MiB + 100) == [(i * MiB, MiB) for i in range(4)]


def test_split_small_request_inside_one_block_is_one_chunk():
    assert split(4096, 8192, 65536, 1, 0) == [(4096, 8192)]


def test_split_covers_the_request_exactly_for_many_shapes():
    for offset in (0, 1, 511, 512, 65535, 65536, 100000):
        for length in (1, 512, 65536, 65537, 300000):
            for req_align in (1, 512):
                if offset % req_align or length % req_align:
                    continue
                chunks = split(offset, length, 65536, req_align, 0)
                assert chunks[0][0] == offset
                assert sum(n for _, n in chunks) == length
                for (o1, n1), (o2, _) in zip(chunks, chunks[1:]):
                    assert o1 + n1 == o2
                inner = chunks[1:-1]
                assert all(o % 65536 == 0 and n % 65536 == 0 for o, n in inner)


def test_is_zero():
    assert is_zero(bytes(3 * MiB))
    assert not is_zero(bytes(3 * MiB - 1) + b"\x01")
    assert not is_zero(b"\x01" + bytes(100))
    assert is_zero(b"")


# -- options -----------------------------------------------------------------------------------------
def test_detect_zeroes_unmap_requires_discard_unmap():
    with pytest.raises(UsageError, match="detect-zeroes to unmap"):
        DriveOptions(detect_zeroes="unmap")
    assert DriveOptions(discard="unmap", detect_zeroes="unmap").detect_zeroes == "unmap"


@pytest.mark.parametrize("bad", [dict(discard="maybe"), dict(detect_zeroes="yes"), dict(zero_unmap="x"),
                                 dict(request_alignment=3), dict(request_alignment=0)])
def test_bad_drive_options_are_usage_errors(bad):
    with pytest.raises(UsageError):
        DriveOptions(**bad)


def test_discard_aliases_on_and_off():
    assert DriveOptions(discard="on").discard == "unmap"
    assert DriveOptions(discard="off").discard == "ignore"


# -- discard -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_discard_ignore_succeeds_and_frees_nothing(tmp_path, fmt):
    drive, path = make(tmp_path, fmt)
    assert drive.write(0, b"\xaa" * MiB).ok
    drive.flush()
    before = host_bytes(path)
    done = drive.discard(0, MiB)
    assert done.ok
    assert done.trace.events[0].action == Act.DROPPED and "discard=ignore" in done.trace.events[0].detail
    assert host_bytes(path) == before
    assert drive.read(0, MiB).data == b"\xaa" * MiB


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_discard_unmap_returns_host_space_and_reads_zeros(tmp_path, fmt):
    drive, path = make(tmp_path, fmt, discard="unmap")
    drive.write(0, b"\xaa" * MiB)
    drive.flush()
    before = host_bytes(path)
    done = drive.discard(0, MiB)
    drive.flush()
    assert done.ok and done.trace.has(Act.PUNCHED)
    assert before - host_bytes(path) >= MiB - 65536
    assert drive.read(0, MiB).data == bytes(MiB)


def test_qcow2_ignores_partial_cluster_discards_and_says_so(tmp_path):
    drive, path = make(tmp_path, discard="unmap")
    drive.write(0, b"\x11" * 65536)
    done = drive.discard(4096, 4096)
    assert done.ok
    assert [e.action for e in done.trace.events if e.layer == "qcow2"] == [Act.IGNORED]
    assert drive.read(4096, 4096).data == b"\x11" * 4096


def test_qcow2_discard_splits_unaligned_request_and_frees_only_whole_clusters(tmp_path):
    drive, _ = make(tmp_path, discard="unmap")
    drive.write(0, b"\x22" * (4 * 65536))
    done = drive.discard(1000, 3 * 65536)
    split_events = [e for e in done.trace.events if e.action == Act.SPLIT]
    assert split_events and "3 pieces" in split_events[0].detail
    data = drive.read(0, 4 * 65536).data
    assert data[:65536] == b"\x22" * 65536              # head cluster only partly covered: kept
    assert data[65536:3 * 65536] == bytes(2 * 65536)    # whole clusters: zero
    assert data[3 * 65536:] == b"\x22" * 65536          # tail partly covered: kept


def test_read_only_drive_rejects_writes_but_drops_discards_when_ignoring(tmp_path):
    drive, _ = make(tmp_path, read_only=True)
    assert drive.write(0, b"x" * 512).errno == errno.EPERM
    assert drive.write_zeroes(0, 512).errno == errno.EPERM
    assert drive.discard(0, 512).ok                      # QEMU: discard=ignore returns before the check
    (tmp_path / "second").mkdir()
    drive_unmap, _ = make(tmp_path / "second", read_only=True, discard="unmap")
    assert drive_unmap.discard(0, 65536).errno == errno.EPERM


# -- range and payload checks --------------------------------------------------------------------------
@pytest.mark.parametrize("req", [Request.read(16 * MiB - 512, 1024), Request.read(16 * MiB, 1),
                                 Request.discard(16 * MiB, 512), Request.write_zeroes(0, 16 * MiB + 512),
                                 Request.read(-512, 512)])
def test_requests_past_the_end_fail_with_eio_and_change_nothing(tmp_path, req):
    drive, path = make(tmp_path, discard="unmap")
    before = open(path, "rb").read()
    done = drive.execute(req)
    assert done.errno == errno.EIO
    assert done.trace.events[-1].action == Act.REJECTED
    drive.close()
    assert open(path, "rb").read() == before


def test_last_byte_is_in_range(tmp_path):
    drive, _ = make(tmp_path)
    assert drive.write(16 * MiB - 512, b"\x01" * 512).ok
    assert drive.read(16 * MiB - 1, 1).data == b"\x01"


def test_write_with_wrong_payload_length_is_einval(tmp_path):
    drive, _ = make(tmp_path)
    from emu.block import Op
    assert drive.execute(Request(Op.WRITE, 0, 512, b"x" * 100)).errno == errno.EINVAL


# -- write-zeroes, detect-zeroes ----------------------------------------------------------------------
def test_write_zeroes_on_qcow2_v3_sets_zero_flag_without_allocating(tmp_path):
    drive, path = make(tmp_path)
    done = drive.write_zeroes(0, 4 * 65536)
    assert done.ok and done.trace.has(Act.ZEROED)
    assert drive.read(0, 4 * 65536).data == bytes(4 * 65536)
    drive.close()
    # header, reftable, refblock, L1 and the one new L2 table: no data cluster
    assert os.path.getsize(path) == 5 * 65536
    image = open_image(path, read_only=True)
    assert image.check().allocated_clusters == 0


def test_write_zeroes_falls_back_to_zero_buffers_on_v2_with_backing(tmp_path):
    base = str(tmp_path / "base.qcow2")
    create_image(base, "qcow2", 4 * MiB, {})
    bdrive = Drive(open_image(base))
    bdrive.write(0, b"\x33" * MiB)
    bdrive.close()
    top = str(tmp_path / "top.qcow2")
    create_image(top, "qcow2", None, {"compat": "0.10"}, backing="base.qcow2", backing_fmt="qcow2")
    drive = Drive(open_image(top), DriveOptions(discard="unmap"))
    done = drive.write_zeroes(0, 65536)
    assert done.ok and done.trace.has(Act.FALLBACK)
    assert drive.read(0, 65536).data == bytes(65536)
    assert drive.read(65536, 65536).data == b"\x33" * 65536


def test_detect_zeroes_on_turns_zero_writes_into_zero_clusters(tmp_path):
    drive, path = make(tmp_path, detect_zeroes="on")
    done = drive.write(0, bytes(65536))
    assert done.trace.has(Act.ZERO_DETECTED) and done.trace.has(Act.ZEROED)
    drive.close()
    assert open_image(path, read_only=True).check().allocated_clusters == 0


def test_detect_zeroes_unmap_punches_raw(tmp_path):
    drive, path = make(tmp_path, "raw", discard="unmap", detect_zeroes="unmap")
    drive.write(0, b"\x44" * MiB)
    drive.flush()
    before = host_bytes(path)
    done = drive.write(0, bytes(MiB))
    assert done.trace.has(Act.PUNCHED)
    assert before - host_bytes(path) >= MiB - 4096


def test_detect_zeroes_off_writes_zero_data(tmp_path):
    drive, path = make(tmp_path)
    done = drive.write(0, bytes(65536))
    assert not done.trace.has(Act.ZERO_DETECTED)
    drive.close()
    assert open_image(path, read_only=True).check().allocated_clusters == 1


def test_may_unmap_passes_through_discard_ignore_by_default_freeing_qcow2_clusters(tmp_path):
    """QEMU's device path keeps MAY_UNMAP under discard=ignore: the cluster is freed, host space kept."""
    drive, path = make(tmp_path)
    drive.write(0, b"\x55" * 65536)
    done = drive.write_zeroes(0, 65536, may_unmap=True)
    assert done.trace.has(Act.FREED) and done.trace.has(Act.KEPT) and not done.trace.has(Act.PUNCHED)
    drive.close()
    image = open_image(path, read_only=True)
    assert image.check().allocated_clusters == 0
    assert image.read(0, 65536) == bytes(65536)


def test_zero_unmap_gated_drops_may_unmap_under_discard_ignore(tmp_path):
    drive, path = make(tmp_path, zero_unmap="gated")
    drive.write(0, b"\x55" * 65536)
    done = drive.write_zeroes(0, 65536, may_unmap=True)
    assert done.trace.events[0].action == Act.DROPPED and "MAY_UNMAP" in done.trace.events[0].detail
    assert not done.trace.has(Act.FREED)
    drive.close()
    assert open_image(path, read_only=True).check().allocated_clusters == 1


# -- alignment, FUA ---------------------------------------------------------------------------------
def test_request_alignment_pads_unaligned_writes(tmp_path):
    drive, _ = make(tmp_path, "raw", request_alignment=4096)
    drive.write(0, b"\x01" * 8192)
    done = drive.write(100, b"\x02" * 10)
    assert done.trace.has(Act.SPLIT)
    data = drive.read(0, 8192).data
    assert data[:100] == b"\x01" * 100 and data[100:110] == b"\x02" * 10 and data[110:] == b"\x01" * 8082


def test_fua_write_is_followed_by_a_flush(tmp_path):
    drive, _ = make(tmp_path)
    done = drive.write(0, b"x" * 512, fua=True)
    assert done.trace.events[-1].action == Act.FLUSHED


def test_every_request_has_a_trace(tmp_path):
    drive, _ = make(tmp_path, discard="unmap")
    for req in (Request.read(0, 512), Request.write(0, b"x" * 512), Request.discard(0, 65536),
                Request.write_zeroes(0, 512), Request.flush()):
        done = drive.execute(req)
        assert done.trace.op == req.op.value and done.trace.offset == req.offset


def test_freed_clusters_are_reused_by_later_allocations(tmp_path):
    """qemu's allocator moves its cursor back when a cluster is freed: the file does not grow."""
    drive, path = make(tmp_path, discard="unmap")
    drive.write(0, b"\x61" * (4 * 65536))
    drive.flush()
    size = os.path.getsize(path)
    drive.discard(0, 4 * 65536)
    drive.write(8 * 65536, b"\x62" * (4 * 65536))
    drive.close()
    assert os.path.getsize(path) == size
    image = open_image(path, read_only=True)
    result = image.check()
    assert (result.corruptions, result.leaks, result.allocated_clusters) == (0, 0, 4)
    assert image.read(8 * 65536, 4 * 65536) == b"\x62" * (4 * 65536)


def test_the_monitor_hears_every_request_in_order_with_its_time(tmp_path):
    now = [0.0]
    monitor = Monitor(lambda: now[0])
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", 16 * MiB, {})
    drive = Drive(open_image(path, "qcow2"), DriveOptions(discard="ignore"), monitor)
    drive.write(0, bytes(512))
    since = len(monitor.requests)
    now[0] = 2.5
    drive.discard(0, 4096)
    drive.read(1 << 40, 512)                       # rejected: past the end
    drive.flush()
    assert [(s.time, s.trace.op) for s in monitor.requests] == [(0.0, "write"), (2.5, "discard"), (2.5, "read"),
                                                                 (2.5, "flush")]
    assert [t.op for t in monitor.traces(since=since)] == ["discard", "read", "flush"]
    assert [t.op for t in monitor.traces("discard")] == ["discard"]
    assert monitor.requests[1].trace.has(Act.DROPPED) and monitor.requests[2].trace.has(Act.REJECTED)
    drive.close()


# -- guest-RAM views lent to a request (zero-copy device paths) ----------------------------------------
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("request_alignment", [1, 4096])
def test_read_into_scatters_the_same_bytes_as_read(tmp_path, fmt, request_alignment):
    drive, _ = make(tmp_path, fmt, request_alignment=request_alignment)
    data = bytes(range(256)) * 64
    assert drive.write(8192, data).ok
    bufs = [bytearray(1000), bytearray(3096), bytearray(1)]
    views = [memoryview(b) for b in bufs]
    done = drive.read_into(8192 + 512, views)
    assert done.ok and done.data is None and done.request.length == 4097
    assert b"".join(bufs) == drive.read(8192 + 512, 4097).data


def test_read_into_past_the_end_of_a_short_raw_file_gives_zeros(tmp_path):
    drive, path = make(tmp_path, "raw")
    os.truncate(path, 4096 + 100)                     # the host file ends inside the range; the disk does not
    drive.backend.host.pwrite(4096, b"\x77" * 100)
    bufs = [memoryview(bytearray(b"\xff" * 50)), memoryview(bytearray(b"\xff" * 4000))]
    assert drive.read_into(4096, bufs).ok
    assert bytes(bufs[0]) == b"\x77" * 50 and bytes(bufs[1]) == b"\x77" * 50 + bytes(3950)


def test_read_into_out_of_range_fails_and_leaves_the_buffers(tmp_path):
    drive, _ = make(tmp_path, "raw")
    buf = bytearray(b"\xab" * 512)
    done = drive.read_into(drive.capacity, [memoryview(buf)])
    assert done.errno == errno.EIO and buf == b"\xab" * 512


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vdi"])
def test_a_written_view_is_not_kept_by_any_format(tmp_path, fmt):
    """A device lends a view of guest RAM and releases it after the request: every format still has the data."""
    drive, _ = make(tmp_path, fmt)
    ram = bytearray(b"\x5a" * 65536)
    view = memoryview(ram)
    assert drive.write(65536, view).ok
    view.release()
    ram[:] = bytes(65536)
    assert drive.read(65536, 65536).data == b"\x5a" * 65536


# -- what the drive answers for the devices above it ---------------------------------------------------
ZEROES_AFTER_DISCARD = [  # format, create options, discard=, every discarded 512-byte sector reads zeros
    ("raw", {}, "unmap", True),                                 # hole punching zeroes any 512-byte range
    ("raw", {}, "ignore", False),                               # the drive drops the discard: old data stays
    ("qcow2", {}, "unmap", False),                              # 64 KiB clusters: a partial cluster keeps data
    ("qcow2", {"cluster_size": "512"}, "unmap", True),          # every sector is a whole cluster
    ("qcow2", {"cluster_size": "512"}, "ignore", False),
    ("vdi", {}, "unmap", False),                                # QEMU's vdi has no discard
    ("vpc", {}, "unmap", False),
    ("vmdk", {}, "unmap", False),
]


@pytest.mark.parametrize("fmt, options, discard, expected", ZEROES_AFTER_DISCARD)
def test_zeroes_after_discard_is_a_promise_every_sector_keeps(tmp_path, fmt, options, discard, expected):
    """What strict devices advertise (RZAT, LBPRZ) comes from the drive, and it holds: a drive that says yes
    reads zeros in every sector it discarded, one that says no keeps the old data of some sector."""
    drive, _ = make(tmp_path, fmt, 1 * MiB, options, discard=discard)
    assert drive.zeroes_after_discard(512) is expected
    assert drive.write(0, b"\xa5" * 256 * 1024).ok
    for sector in (0, 1, 7, 130, 1000):
        assert drive.discard(sector * 512, 512).ok
    reads = [drive.read(sector * 512, 512).data for sector in (0, 1, 7, 130, 1000)]
    assert all(r == bytes(512) for r in reads[:-1]) is expected
    assert reads[-1] == b"\0" * 512   # past the written area: zeros whatever the drive does


def test_zeroes_after_discard_refuses_a_sector_of_no_bytes(tmp_path):
    drive, _ = make(tmp_path, "raw", 1 * MiB, discard="unmap")
    with pytest.raises(ValueError):
        drive.zeroes_after_discard(0)


def test_the_drive_answers_read_only_limits_and_allocation_itself(tmp_path):
    path = str(tmp_path / "ro.qcow2")
    create_image(path, "qcow2", 4 * MiB, {})
    drive = Drive(open_image(path, "qcow2"), DriveOptions(read_only=True))
    assert drive.read_only and drive.format_name == "qcow2" and drive.limits.discard_alignment == 65536
    assert drive.allocated(0, 4 * MiB) == (False, 4 * MiB)
    writable = Drive(open_image(path, "qcow2"))
    assert not writable.read_only
    assert writable.write(65536, b"x" * 512).ok
    assert writable.allocated(0, 4 * MiB) == (False, 65536)
    assert writable.allocated(65536, 4 * MiB - 65536)[0] is True
    writable.close()
    drive.close()
    assert Drive(open_image(path, "qcow2", read_only=True)).read_only


def test_reattach_puts_another_image_under_the_drive_of_the_same_size_only(tmp_path):
    drive, _ = make(tmp_path, discard="unmap")
    drive.write(0, b"a" * 4096)
    drive.close()
    other = str(tmp_path / "other.img")
    create_image(other, "raw", 16 * MiB)
    image = open_image(other, "raw")
    drive.reattach(image)
    assert drive.format_name == "raw" and image.host_unmap          # the drive's options carry over
    assert drive.read(0, 4096).data == bytes(4096)
    small = str(tmp_path / "small.img")
    create_image(small, "raw", 8 * MiB)
    with pytest.raises(UsageError, match="the drive has 16777216"):
        drive.reattach(open_image(small, "raw"))
    drive.close()
