"""Nothing is proportional to the virtual size: a 16 TiB image is created, opened, mapped, written at
its far end and checked quickly and in little memory."""

from __future__ import annotations

import time
import tracemalloc

from emu.block import Drive, DriveOptions
from images import create_image, open_image
from images.inspect import compare_images, map_extents

TiB = 1 << 40


def test_16_tib_qcow2_is_created_opened_mapped_and_checked_fast_and_small(tmp_path):
    path = str(tmp_path / "big.qcow2")
    start = time.perf_counter()
    create_image(path, "qcow2", 16 * TiB, {})
    image = open_image(path)
    extents = map_extents(image)
    result = image.check()
    image.close()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    image = open_image(path)
    map_extents(image)
    image.check()
    image.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(e.start, e.length, e.zero, e.data) for e in extents] == [(0, 16 * TiB, True, False)]
    assert (result.corruptions, result.leaks) == (0, 0)
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert peak < 100 << 20, f"peak {peak >> 20} MiB"


def test_writes_at_the_far_end_of_a_16_tib_image(tmp_path):
    path = str(tmp_path / "big.qcow2")
    create_image(path, "qcow2", 16 * TiB, {})
    drive = Drive(open_image(path), DriveOptions(discard="unmap"))
    last = 16 * TiB - 65536
    assert drive.write(last, b"\x42" * 65536).ok
    assert drive.write(8 * TiB + 4096, b"\x43" * 512).ok
    assert drive.read(last, 65536).data == b"\x42" * 65536
    drive.close()

    def inspect():
        image = open_image(path, read_only=True)
        other = open_image(path, read_only=True)
        try:
            return [e for e in map_extents(image) if e.data], image.check(), compare_images(image, other)
        finally:
            image.close()
            other.close()

    start = time.perf_counter()
    extents, result, same = inspect()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    inspect()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [e.start for e in extents] == [8 * TiB, last]
    assert result.allocated_clusters == 2 and result.corruptions == result.leaks == 0
    assert same.identical
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert peak < 100 << 20, f"peak {peak >> 20} MiB"
