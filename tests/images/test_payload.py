"""The synthetic payload at the host file: a write made only of it allocates the range instead of writing it, the
range counts as data for block status, a punch forgets it; any other write is written as it is."""

from __future__ import annotations

import os

from emu.block.payload import PAGE, PAGE_SIZE, is_payload, payload
from images.hostfile import HostFile

MiB = 1 << 20


def test_is_payload_recognises_only_the_page_from_its_start():
    assert is_payload(payload(3 * MiB)) and is_payload(bytes(payload(12 * MiB)))
    assert not is_payload(payload(PAGE_SIZE - 1))                 # shorter than a page
    assert not is_payload(bytes(MiB))
    assert not is_payload(memoryview(PAGE * 3)[1:])                # shifted
    damaged = bytearray(payload(9 * MiB))
    damaged[8 * MiB + 5] ^= 1                                      # past the first 8 MiB piece
    assert not is_payload(damaged)


def test_a_synthetic_host_file_allocates_payload_and_writes_the_rest(tmp_path):
    path = str(tmp_path / "f")
    host = HostFile(path, writable=True, create=True)
    host.synthetic = True
    before = os.statvfs(path)
    host.pwrite(4 * MiB, payload(8 * MiB))
    host.pwrite(0, b"real" * 1024)
    assert os.stat(path).st_blocks * 512 == 8 * MiB + 4096
    assert os.stat(path).st_size == 12 * MiB
    assert host.pread(4 * MiB, 16) == bytes(16)                    # never written: reads zeros
    assert host.pread(0, 4) == b"real"
    assert host.extent_at(4 * MiB) == (True, 12 * MiB)
    assert host.extent_at(2 * MiB)[0] is False and host.extent_at(2 * MiB)[1] == 4 * MiB
    host.punch_hole(6 * MiB, 2 * MiB)
    assert host.extent_at(6 * MiB) == (False, 8 * MiB)
    assert host.extent_at(8 * MiB) == (True, 12 * MiB)
    assert os.stat(path).st_blocks * 512 == 6 * MiB + 4096
    again = HostFile(path, writable=False)                         # the same file opened again knows it
    assert again.extent_at(4 * MiB) == (True, 6 * MiB)
    again.close()
    host.close()
    assert before.f_bfree - os.statvfs(path).f_bfree < 8 * MiB // before.f_frsize


def test_an_ordinary_host_file_writes_the_payload(tmp_path):
    host = HostFile(str(tmp_path / "f"), writable=True, create=True)
    host.pwrite(0, payload(MiB))
    assert host.pread(0, PAGE_SIZE) == PAGE
    host.close()
