"""The mkfs.ext4 model does to a device what the real mke2fs 1.47 does to a file, system call for system call:
the same discards and zeroed ranges in the same order, the same pages written (and the same of them all zeros),
and the fsyncs where the real tool makes them (strace of the real mke2fs is the oracle)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from controllers.drivers.blk_layer import DiscardLimits, QueueLimits
from scenarios.guest.ext4.mkfs import MkfsOptions, mkfs
from tests.conftest import _missing

MiB = 1 << 20
PAGE = 4096


class Recorder:
    """A device that records what a tool asks of it (the system calls strace would show)."""

    def __init__(self, size: int, discard: bool) -> None:
        self.size = size
        self.limits = QueueLimits(2560, 65535, 128, 65536, 0, DiscardLimits(4194240) if discard else None)
        self.ops: list[tuple] = []
        self.pages: dict[int, bytearray] = {}

    def _gen(self, op):
        self.ops.append(op)
        yield from ()

    def flush(self):
        return self._gen(("fsync",))

    def fsync(self):
        return self._gen(("fsync",))

    def zeroout(self, offset, length, unmap=False):
        return self._gen(("zero", offset, length))

    def discard(self, offset, length):
        self.ops.append(("discard", offset, length))
        yield from ()
        return True

    def pwrite(self, offset, data):
        self.ops.append(("write", offset, len(data)))
        for i, b in enumerate(data):            # small writes only (metadata): page contents for the zero check
            page = self.pages.setdefault((offset + i) // PAGE, bytearray(PAGE))
            page[(offset + i) % PAGE] = b
        yield from ()


def run_model(size: int, options: str, discard: bool) -> Recorder:
    dev = Recorder(size, discard)
    gen = mkfs(dev, MkfsOptions.parse(options), lazy_itable_default=True)
    try:
        while True:
            next(gen)
    except StopIteration:
        pass
    return dev


STRACE_LINE = re.compile(r'^(fsync|pwrite64|fallocate)\(3(?:, (.*))?\) += ')


def run_real(tmp_path, size: int, options: str) -> tuple[list[tuple], dict[int, bool]]:
    """mke2fs under strace on a sparse file: the calls on the device and, per page written, whether all zero."""
    for tool in ("strace", "mke2fs"):
        if not (shutil.which(tool) or shutil.which(tool, path="/sbin:/usr/sbin")):
            _missing(f"{tool} is not installed (Debian packages strace, e2fsprogs)")
    path = str(tmp_path / "fs.raw")
    with open(path, "wb") as f:
        f.truncate(size)
    log = str(tmp_path / "strace.txt")
    env = dict(os.environ, MKE2FS_CONFIG=str(tmp_path / "none"), E2FSPROGS_FAKE_TIME="1700000000")
    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/sbin:/usr/sbin")
    subprocess.run(["strace", "-o", log, "-xx", "-s", "1048576", "-e", "trace=fsync,pwrite64,fallocate",
                    mke2fs, "-q", "-F", "-t", "ext4", *options.split(), path], check=True, env=env,
                   capture_output=True)
    ops, zero = [], {}
    for line in open(log):
        m = STRACE_LINE.match(line)
        if not m:
            continue
        call, args = m.groups()
        if call == "fsync":
            ops.append(("fsync",))
        elif call == "fallocate":
            mode, offset, length = [a.strip() for a in args.split(",")[-3:]]
            kind = "zero" if "ZERO_RANGE" in args else "discard"
            ops.append((kind, int(offset), int(length)))
        else:
            data_hex, length, offset = re.match(r'"(.*)", (\d+), (\d+)$', args).groups()
            data = bytes.fromhex(data_hex.replace("\\x", ""))
            offset, length = int(offset), int(length)
            ops.append(("write", offset, length))
            for page in range(offset // PAGE, -(-(offset + length) // PAGE)):
                lo, hi = max(offset, page * PAGE), min(offset + length, (page + 1) * PAGE)
                zero[page] = zero.get(page, True) and not any(data[lo - offset:hi - offset])
    return ops, zero


CASES = [
    ("1G", "-E nodiscard,lazy_itable_init=0,lazy_journal_init=0"),
    ("1G", "-E nodiscard,lazy_itable_init=1,lazy_journal_init=1"),
    ("1G", "-E nodiscard"),
    ("64M", "-E nodiscard,lazy_itable_init=0"),
    ("300M", "-E nodiscard,lazy_itable_init=0"),
    ("16G", "-E nodiscard,lazy_itable_init=1"),
    ("130G", "-E nodiscard,lazy_itable_init=1,lazy_journal_init=1"),
]


@pytest.mark.parametrize("size, options", CASES)
def test_mkfs_makes_the_real_tools_calls(tmp_path, size, options):
    nbytes = int(size[:-1]) * {"M": MiB, "G": 1 << 30}[size[-1]]
    real, real_zero = run_real(tmp_path, nbytes, options)
    model = run_model(nbytes, options, discard=False)
    first_write = next(i for i, op in enumerate(real) if op[0] == "write")
    assert real[:first_write] and all(op == ("fsync",) for op in real[:first_write])
    assert model.ops[0] == ("fsync",)
    # zeroed ranges, discards and fsyncs: same kind, place and order
    assert [op for op in model.ops[1:] if op[0] != "write"] == [op for op in real[first_write:] if op[0] != "write"]
    # the same pages written, the same of them all zeros
    model_pages = {p: not any(model.pages[p]) for p in model.pages}
    assert model_pages.keys() == real_zero.keys()
    assert {p for p, z in model_pages.items() if z} == {p for p, z in real_zero.items() if z}


def test_discard_is_a_probe_then_the_whole_device():
    """mke2fs -E discard on a device that discards (a file is such a device for mke2fs: fallocate PUNCH_HOLE)."""
    model = run_model(1 << 30, "-E discard", discard=True)
    discards = [op for op in model.ops if op[0] == "discard"]
    assert discards == [("discard", 0, 4096), ("discard", 0, 1 << 30)]
    assert model.ops.index(discards[0]) < next(i for i, op in enumerate(model.ops) if op[0] == "write")
