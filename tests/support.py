"""Test support shared by the property and interop tests: image variants and the reference model.

The model states what a guest must read after each operation, written from the documented
semantics (docs/formats.md; QEMU 7.2 block/io.c bdrv_co_pdiscard and block/qcow2-cluster.c for what a
discard or a zero write leaves), independently of the code under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tracemalloc
from dataclasses import dataclass, field

import pytest

from emu.errors import EmuError, ImageError
from images import create_image, open_image
from images.inspect import map_extents

MiB = 1 << 20


@dataclass(frozen=True)
class Variant:
    name: str
    fmt: str
    options: dict = field(default_factory=dict)
    backing: str | None = None     # format of a backing file, or None
    size: int = 4 * MiB
    backing_size: int = 3 * MiB    # a shorter backing file: the tail reads as zeros

    @property
    def cluster_size(self) -> int:
        return int(self.options.get("cluster_size", 65536)) if self.fmt == "qcow2" else 1

    @property
    def v2(self) -> bool:
        return self.options.get("compat") == "0.10"


VARIANTS = [
    Variant("raw", "raw"),
    Variant("qcow2-v3-64k", "qcow2"),
    Variant("qcow2-v3-512", "qcow2", {"cluster_size": "512"}),
    Variant("qcow2-v3-4k", "qcow2", {"cluster_size": "4096"}),
    Variant("qcow2-v3-2m", "qcow2", {"cluster_size": "2097152"}, size=8 * MiB),
    Variant("qcow2-v2-64k", "qcow2", {"compat": "0.10"}),
    Variant("qcow2-v3-lazy", "qcow2", {"lazy_refcounts": "on", "cluster_size": "4096"}),
    Variant("qcow2-v3-over-qcow2", "qcow2", {}, backing="qcow2"),
    Variant("qcow2-v3-4k-over-raw", "qcow2", {"cluster_size": "4096"}, backing="raw"),
    Variant("qcow2-v2-over-qcow2", "qcow2", {"compat": "0.10"}, backing="qcow2"),
]


def base_pattern(size: int) -> bytes:
    """Recognisable backing content: every 4 KiB block holds its index, with a hole in the middle."""
    blocks = bytearray()
    for i in range(size // 4096):
        blocks += bytes([(i % 250) + 1]) * 4096
    blocks[size // 3:size // 3 + 200000] = bytes(200000)
    return bytes(blocks)


def make_variant(tmp_dir: str, variant: Variant) -> tuple[str, bytearray]:
    """Create the image (and its backing file); return its path and the initial guest view."""
    path = os.path.join(tmp_dir, f"disk.{variant.fmt}")
    model = bytearray(variant.size)
    if variant.backing:
        base = os.path.join(tmp_dir, f"base.{variant.backing}")
        create_image(base, variant.backing, variant.backing_size, {})
        content = base_pattern(variant.backing_size)
        image = open_image(base, variant.backing)
        image.write(0, content)
        image.close()
        create_image(path, variant.fmt, variant.size, variant.options, backing=os.path.basename(base),
                     backing_fmt=variant.backing)
        model[:len(content)] = content
    else:
        create_image(path, variant.fmt, variant.size, variant.options)
    return path, model


def model_discard(variant: Variant, model: bytearray, offset: int, length: int, unmap: bool) -> None:
    """What a discard does to the guest view (discard=unmap on the drive)."""
    if not unmap or length == 0:
        return
    if variant.fmt == "raw":
        model[offset:offset + length] = bytes(length)   # punched: the whole range reads zeros
        return
    if variant.v2 and variant.backing:
        return                                           # v2 with backing: discard ignored
    cs = variant.cluster_size
    start = -(-offset // cs) * cs
    end = (offset + length) // cs * cs
    if offset + length == variant.size:
        end = offset + length                            # the last partial cluster at the image end
    if end > start:
        model[start:end] = bytes(end - start)


# -- guards and the refused-open check of the malformed-file tests ---------------------------------

class Hang(BaseException):
    """Raised by the time guard. A BaseException, so that no `except Exception` (nor the Drive's
    `except OSError`, which would catch TimeoutError) can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail with Hang if the block takes longer than `seconds` of wall time."""
    def on_alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def traced_memory():
    """Trace Python allocations in the block; yields a dict whose "peak" is set on exit."""
    result = {"peak": 0}
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        result["peak"] = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()


SMALL_PEAK = 4 * MiB      # a refused open of a small image needs far less than this


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_open_fails(path: str, cls: type[ImageError], field: str, *, fmt: str | None = None,
                      names_path: str | None = None) -> ImageError:
    """Open read-only, then read-write: both must raise `cls` naming the file and `field`, with a
    small memory peak, leaving the file as it was. Returns the read-only exception."""
    before = digest(path)
    raised = []
    for read_only in (True, False):
        with traced_memory() as memory, time_limit(10):
            with pytest.raises(EmuError) as info:
                image = open_image(path, fmt, read_only=read_only)
                image.close()
        exc = info.value
        mode = "read-only" if read_only else "read-write"
        assert type(exc) is cls, f"{mode}: {type(exc).__name__} instead of {cls.__name__}: {exc}"
        assert exc.field == field, f"{mode}: field {exc.field!r} instead of {field!r}: {exc}"
        assert (names_path or path) in str(exc), f"{mode}: message does not name the file: {exc}"
        assert memory["peak"] < SMALL_PEAK, f"{mode}: {memory['peak']} bytes allocated before failing"
        raised.append(exc)
    assert digest(path) == before, "a refused open modified the file"
    return raised[0]


def without_reclaim(info: dict) -> dict:
    """emu's info is qemu-img's plus one key of its own, "reclaim"."""
    assert set(info.pop("reclaim")) == {"discard", "write-zeroes", "offline"}
    return info


def qemu_part(human: str) -> str:
    """emu's human info is qemu-img's followed by a "Space reclaim (emu):" section."""
    head, sep, tail = human.partition("Space reclaim (emu):\n")
    assert sep and [line.split(":")[0] for line in tail.splitlines()] == ["    discard", "    write zeroes",
                                                                         "    offline"]
    return head


def emu_read(path: str) -> bytes:
    """The whole guest view of an image (and its chain), as emu reads it."""
    image = open_image(path, read_only=True)
    try:
        return image.read(0, image.virtual_size)
    finally:
        image.close()


def emu_map(path: str) -> list[dict]:
    """emu's map of an image, as qemu-img map --output=json entries."""
    image = open_image(path, read_only=True)
    try:
        return [e.to_json() for e in map_extents(image)]
    finally:
        image.close()


def libvhdi_read(child: str, parent: str | None = None) -> tuple[str | None, bytes]:
    """A VHD or VHDX guest view as libvhdi (pyvhdi) reads it, with the parent it is handed, and the
    parent file name the child records (None without a parent)."""
    from tests.conftest import oracle_module
    pyvhdi = oracle_module("pyvhdi", "libvhdi-python")
    disk = pyvhdi.file()
    disk.open(child)
    name = None
    if parent is not None:
        name = disk.get_parent_filename()
        base = pyvhdi.file()
        base.open(parent)
        disk.set_parent(base)
    disk.seek(0)
    return name, disk.read(disk.get_media_size())


def patch_bytes(path: str, offset: int, raw: bytes) -> None:
    """Overwrite bytes of a file in place (malformed-file tests)."""
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), raw, offset)
