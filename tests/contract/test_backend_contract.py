"""The backend contract every image format keeps, on real files, through the Drive and through the backend.

One table (`formats.FORMATS`) drives every test: what a guest writes reads back, unwritten space reads zeros (or
the backing file), write-zeroes reads zeros, a discard leaves the old data or zeros (zeros where the entry says it
frees) and never adds host space over data, block status agrees with reads, data survives a reopen, a read-only
open refuses writes, out-of-range requests fail with EIO, and qemu-img checks and compares what emu wrote.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from emu.block import Drive, DriveOptions, Request
from emu.block.backend import Status
from emu.errors import BlockError
from tests.conftest import run
from tests.contract.formats import CLUSTER, FORMATS, FormatCase, apply, host_bytes, open_case
from tests.support import MiB, digest, make_variant


@pytest.fixture(params=FORMATS, ids=lambda case: case.name)
def case(request) -> FormatCase:
    return request.param


def fresh(tmp_path, case: FormatCase, discard: str = "unmap") -> tuple[str, bytearray, Drive]:
    path, model = make_variant(str(tmp_path), case)
    return path, model, Drive(open_case(path, case), DriveOptions(discard=discard))


def pattern(length: int, seed: int) -> bytes:
    """Data without zero bytes, in a 255-byte cycle that 512-byte sectors and power-of-two units do not repeat,
    so a byte read from the wrong place shows."""
    cycle = bytes((i * 7 + seed) % 255 + 1 for i in range(255))
    return (cycle * (length // 255 + 1))[:length]


def fill(drive: Drive, model: bytearray) -> None:
    data = pattern(len(model), 3)
    assert drive.write(0, data).ok and drive.flush().ok
    model[:] = data


def workload(size: int) -> list[tuple]:
    """Guest operations at awkward places: unaligned heads and tails, unit boundaries, the last byte, data
    written over discarded and zeroed ranges."""
    return [("write", 0, MiB + 4097, 0x11), ("write", 3, 5, 0x22), ("write", 2 * MiB - 700, 1400, 0x33),
            ("write", size - 513, 513, 0x44), ("zero", 3 * CLUSTER - 100, 2 * CLUSTER + 200, True),
            ("zero", 512 * 1024, CLUSTER, False), ("discard", 5 * CLUSTER + 1, 4 * CLUSTER), ("flush",),
            ("discard", 0, MiB), ("write", 700000, 100000, 0x55), ("discard", size - 2 * MiB, 2 * MiB),
            ("write", size - 2 * MiB + 4096, 8192, 0x66), ("read", 0, size)]


def base_file(tmp_path, case: FormatCase) -> str | None:
    return str(tmp_path / f"base.{case.backing}") if case.backing else None


# -- reads and writes ----------------------------------------------------------------------------------------------
def test_what_is_written_reads_back_at_any_offset_and_length(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    backend, size = drive.backend, case.size
    shapes = [(0, 1), (511, 2), (4095, 4098), (CLUSTER - 1, 3), (MiB - 5, 10), (MiB + 3, 300000), (size - 1, 1),
              (size - 700, 700)]
    try:
        for seed, (offset, length) in enumerate(shapes):
            data = pattern(length, seed)
            if seed % 2:
                backend.write(offset, data)
            else:
                assert drive.execute(Request.write(offset, data)).ok
            model[offset:offset + length] = data
            lo, hi = max(0, offset - 1), min(size, offset + length + 1)   # and the bytes either side
            assert drive.read(lo, hi - lo).data == backend.read(lo, hi - lo) == model[lo:hi], (offset, length)
        assert drive.read(0, size).data == backend.read(0, size) == model
    finally:
        drive.close()


def test_unwritten_space_reads_zeros_or_the_backing_data(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    try:
        assert drive.read(0, case.size).data == drive.backend.read(0, case.size) == model
        for offset, length in ((1, 1), (4095, 4098), (case.size - 3, 3)):
            assert drive.read(offset, length).data == model[offset:offset + length]
    finally:
        drive.close()


@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_write_zeroes_makes_the_range_read_zeros(tmp_path, case, discard):
    path, model, drive = fresh(tmp_path, case, discard)
    try:
        fill(drive, model)
        for offset, length, may_unmap in ((3, 5, False), (CLUSTER - 100, 200, True), (MiB - 4096, 3 * 4096, False),
                                          (case.size - 512, 512, True)):
            before = host_bytes(path)
            apply(drive, case, model, ("zero", offset, length, may_unmap))
            assert drive.flush().ok and host_bytes(path) <= before, "a zero write over data grew the file"
            assert drive.read(0, case.size).data == model
        before = host_bytes(path)
        apply(drive, case, model, ("zero", 2 * MiB, 2 * MiB, True))      # whole units of every entry
        assert drive.flush().ok and drive.read(0, case.size).data == model
        if case.zeroes_unmap and discard == "unmap":
            assert host_bytes(path) < before, "a write-zeroes with MAY_UNMAP over whole units freed nothing"
        else:
            assert host_bytes(path) <= before
    finally:
        drive.close()


# -- discards ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_a_discard_leaves_the_old_data_or_zeros_and_never_adds_host_space(tmp_path, case, discard):
    """Zeros exactly where the entry says the discard frees (a deferred unit: whole, or not at all), the old data
    everywhere else; over data the file never grows, and whole units discarded give host space back."""
    path, model, drive = fresh(tmp_path, case, discard)
    try:
        fill(drive, model)
        for offset, length in ((5 * CLUSTER + 1, 4 * CLUSTER), (3, 700), (MiB - 512, MiB + 1024), (2 * MiB, 2 * MiB)):
            before = host_bytes(path)
            apply(drive, case, model, ("discard", offset, length))
            assert drive.flush().ok and drive.read(0, case.size).data == model, (offset, length)
            assert host_bytes(path) <= before, f"discard {offset:#x}+{length:#x} grew the file"
        if case.discard_unit and discard == "unmap":
            assert host_bytes(path) < before, "discarding whole units freed nothing"
    finally:
        drive.close()


def test_a_discard_of_unwritten_space_adds_at_most_its_metadata(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    try:
        before = host_bytes(path)
        apply(drive, case, model, ("discard", 0, case.size))
        assert drive.flush().ok and drive.read(0, case.size).data == model
        assert host_bytes(path) - before <= case.discard_metadata
    finally:
        drive.close()


# -- block status --------------------------------------------------------------------------------------------------
def test_block_status_agrees_with_what_reads_return(tmp_path, case):
    """Walked as qemu-img map walks the chain: a ZERO run (or a run without DATA) reads zeros; every byte the
    guest wrote lies in a DATA run; the Drive's `mapped` says DATA where the backend does."""
    path, model, drive = fresh(tmp_path, case)
    try:
        for op in workload(case.size):
            apply(drive, case, model, op)
        offset, runs = 0, []
        while offset < case.size:
            status, _depth = drive.backend.status_above(offset, case.size - offset)
            length, flags = status.length, status.flags
            assert 0 < length <= case.size - offset
            data = drive.read(offset, length).data
            assert data == model[offset:offset + length]
            if flags & Status.ZERO or not flags & Status.DATA:
                assert data == bytes(length), f"run {offset:#x}+{length:#x} (flags {flags:#x}) holds data"
            assert drive.mapped(offset, length)[0] == bool(flags & Status.DATA)
            runs.append(flags & (Status.DATA | Status.ZERO))
            offset += length
        assert Status.DATA in runs
    finally:
        drive.close()


# -- persistence and read-only -------------------------------------------------------------------------------------
def test_data_survives_flush_close_and_reopen(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    base = base_file(tmp_path, case)
    base_digest = digest(base) if base else None
    for op in workload(case.size):
        apply(drive, case, model, op)
    drive.close()
    drive = Drive(open_case(path, case), DriveOptions(discard="unmap"))
    try:
        assert drive.read(0, case.size).data == model
    finally:
        drive.close()
    image = open_case(path, case, read_only=True)
    try:
        assert image.read(0, case.size) == model
        if case.checks:
            result = image.check()
            assert (result.corruptions, result.leaks, result.check_errors) == (0, 0, 0), result.messages
    finally:
        image.close()
    if base:
        assert digest(base) == base_digest, "the backing file was written"


def test_a_read_only_open_refuses_writes_and_leaves_the_file_as_it_was(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    for op in workload(case.size):
        apply(drive, case, model, op)
    drive.close()
    before = digest(path)
    drive = Drive(open_case(path, case, read_only=True), DriveOptions(discard="unmap"))
    try:
        assert drive.read_only
        for done in (drive.write(0, b"\x99" * 512), drive.write(case.size - 1, b"\x99"),
                     drive.write_zeroes(0, MiB, may_unmap=True)):
            assert isinstance(done.error, BlockError), done.request
        discarded = drive.discard(0, case.size)         # refused, or dropped by a format without discard
        assert discarded.ok or isinstance(discarded.error, BlockError)
        with pytest.raises(BlockError):
            drive.backend.write(0, b"\x99" * 512)
        assert drive.read(0, case.size).data == model
    finally:
        drive.close()
    assert digest(path) == before


def test_out_of_range_requests_fail_with_eio_and_touch_nothing(tmp_path, case):
    path, model, drive = fresh(tmp_path, case)
    size = case.size
    try:
        for op in workload(size):
            apply(drive, case, model, op)
        assert drive.flush().ok
        before, allocated = digest(path), host_bytes(path)
        for req in (Request.read(size, 512), Request.read(size - 512, 1024), Request.read(-512, 512),
                    Request.write(size, b"\x77" * 512), Request.write(size - 1, b"\x77" * 2),
                    Request.write(-1, b"\x77"), Request.discard(size - 512, 1024), Request.discard(size, 1),
                    Request.write_zeroes(size, 512, may_unmap=True), Request.write_zeroes(size - 512, 513)):
            done = drive.execute(req)
            assert not done.ok and done.errno == errno.EIO, req
        assert drive.flush().ok
        assert (digest(path), host_bytes(path)) == (before, allocated)
        assert drive.read(0, size).data == model
    finally:
        drive.close()


# -- qemu-img as the oracle ----------------------------------------------------------------------------------------
@pytest.mark.qemu
def test_qemu_img_check_is_clean_and_compare_finds_the_expected_content(tmp_path, case, qemu_img):
    path, model, drive = fresh(tmp_path, case)
    try:
        for op in workload(case.size):
            apply(drive, case, model, op)
    finally:
        drive.close()
    reference = str(tmp_path / "expected.raw")
    with open(reference, "wb") as f:
        f.write(model)
    info = json.loads(run(qemu_img, "info", "--output=json", "-f", case.fmt, path).stdout)
    assert info["virtual-size"] == case.size
    run(qemu_img, "compare", "-f", case.fmt, "-F", "raw", path, reference)
    if case.checks:
        run(qemu_img, "check", "-f", case.fmt, path)
    assert os.path.getsize(reference) == case.size
