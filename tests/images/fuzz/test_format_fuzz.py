"""Hypothesis mutations of VDI, VHD and VMDK files (qcow2 and VHDX have their own, deeper fuzzers).

Seeds are small images qemu-img made and wrote to (and an emu differencing child for each). A mutant
changes a few bytes of its metadata (headers, block map / BAT, descriptor, grain tables) or is cut
short; opening it read-only and read-write, reading, mapping, checking and writing must either work
or raise an error of emu's one family (never another exception, never a hang).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from emu.errors import EmuError
from images import create_image, open_image
from images.inspect import map_extents
from tests.conftest import run
from tests.support import time_limit

MiB = 1 << 20
# format -> (extension, bytes of the file that hold metadata, in qemu-img's layout for an 8 MiB disk)
FORMATS = {"vdi": ("vdi", 0x1000), "vpc": ("vhd", 0x1000), "vmdk": ("vmdk", 0x30000)}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, qemu_img, qemu_io):
    """Per format: a written image and an emu child of it, as bytes, with the parent kept on disk."""
    directory = tmp_path_factory.mktemp("seeds")
    out = {}
    for fmt, (ext, _) in FORMATS.items():
        base, child = str(directory / f"base.{ext}"), str(directory / f"child.{ext}")
        run(qemu_img, "create", "-q", "-f", fmt, base, "8M")
        run(qemu_io, "-f", fmt, "-c", "write -P 1 0 3M", "-c", "write -P 2 5M 4k", base)
        create_image(child, fmt, None, {}, backing=f"base.{ext}", backing_fmt=fmt)
        image = open_image(child)
        image.write(MiB + 512, b"\x03" * 70000)
        image.close()
        out[fmt] = {name: open(path, "rb").read() for name, path in (("base", base), ("child", child))}
        out[fmt]["dir"] = str(directory)
    return out


def exercise(path: str) -> None:
    for read_only in (True, False):
        try:
            image = open_image(path, read_only=read_only)
        except EmuError as exc:
            event(f"refused: {getattr(exc, 'field', None) or type(exc).__name__}")
            continue
        event("opened")
        try:
            image.read(0, image.virtual_size)
            map_extents(image)
            if not read_only:
                image.check()
                image.write(2 * MiB + 100, b"\x09" * 5000)
                image.read(2 * MiB, 8192)
        except EmuError:
            pass
        finally:
            try:
                image.close()
            except EmuError:
                pass


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mutated_files_raise_only_emu_errors(fmt, seeds):
    ext, meta = FORMATS[fmt]

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(which=st.sampled_from(["base", "child"]),
           edits=st.lists(st.tuples(st.integers(0, meta - 1), st.binary(min_size=1, max_size=8)), min_size=1,
                          max_size=4),
           cut=st.one_of(st.none(), st.integers(0, meta + 4 * MiB)))
    def check(which, edits, cut):
        data = bytearray(seeds[fmt][which])
        for offset, raw in edits:
            data[offset:offset + len(raw)] = raw
        if cut is not None:
            del data[cut:]
        assume(bytes(data) != seeds[fmt][which])
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(seeds[fmt]["dir"], f"base.{ext}"), tmp)
            path = os.path.join(tmp, f"{which}.{ext}")
            with open(path, "wb") as f:
                f.write(data)
            with time_limit(20):
                exercise(path)

    check()
