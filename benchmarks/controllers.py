"""The full request path per controller, against a bare os.pwrite/os.pread loop, in one process.

For each controller (PIIX IDE with bus-master DMA, AHCI with NCQ, virtio-blk, virtio-scsi with sd), 4 KiB and
64 KiB requests, sequential writes then reads, at queue depth 1: a Linux-style guest driver encodes every request
into guest memory (PRDs, command tables and FISes, or virtqueue descriptors), the emulated controller decodes
those bytes, the device runs the command through the Drive onto a raw image, and the driver waits for the completion in
simulated time. The anchor is a plain os.pwrite (os.pread) loop over the same offsets on another raw file in the
same directory, timed in the same invocation; the ratio is emu's request rate over the anchor's (1.0 = as fast
as the bare system calls; the goal for 64 KiB is 0.5 or more). Each measurement runs `--repeat` times,
interleaved with its anchor; the fastest run counts.

    python benchmarks/controllers.py [--count 5000] [--repeat 3] [--dir DIR]
                                     [--controllers ide,ahci,virtio-blk,virtio-scsi]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from emu.block import Drive, DriveOptions  # noqa: E402
from images import create_image, open_image  # noqa: E402
from scenarios.machine import CONTROLLERS, build  # noqa: E402

DISK = 512 << 20
SIZES = (4 << 10, 64 << 10)


def bare(path: str, op: str, size: int, count: int) -> float:
    """Seconds for `count` os.pwrite / os.pread calls of `size` bytes, sequential."""
    fd = os.open(path, os.O_RDWR)
    try:
        buf = bytes([0x5A]) * size
        span = DISK // size
        start = time.perf_counter()
        if op == "write":
            for i in range(count):
                os.pwrite(fd, buf, (i % span) * size)
        else:
            for i in range(count):
                os.pread(fd, size, (i % span) * size)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def through(path: str, controller: str, op: str, size: int, count: int) -> float:
    """Seconds for `count` guest requests of `size` bytes through `controller`, sequential, queue depth 1."""
    drive = Drive(open_image(path, "raw"), DriveOptions())
    guest = build(controller, drive, "qemu-7.2")
    try:
        disk, sectors, span = guest.disk, size // 512, DISK // size
        buf = bytes([0x5A]) * size
        start = time.perf_counter()
        if op == "write":
            for i in range(count):
                if not guest.run(disk.write((i % span) * sectors, buf)):
                    raise SystemExit(f"{controller}: write {i} failed")
        else:
            for i in range(count):
                if guest.run(disk.read((i % span) * sectors, sectors)) is None:
                    raise SystemExit(f"{controller}: read {i} failed")
        return time.perf_counter() - start
    finally:
        guest.close()
        drive.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=5000, help="requests per run, for both sizes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="directory for the images (default: a temporary one)")
    p.add_argument("--controllers", default=",".join(CONTROLLERS))
    a = p.parse_args()
    controllers = a.controllers.split(",")
    unknown = sorted(set(controllers) - set(CONTROLLERS))
    if unknown:
        raise SystemExit(f"unknown controller {unknown[0]!r}: known are {', '.join(CONTROLLERS)}")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        emu_path, bare_path = os.path.join(tmp, "emu.raw"), os.path.join(tmp, "bare.raw")
        for path in (emu_path, bare_path):
            create_image(path, "raw", DISK)
        print(f"{'controller':<12}{'op':<7}{'size':>6}{'requests':>10}{'emu req/s':>12}{'bare req/s':>12}"
              f"{'emu/bare':>10}")
        for controller in controllers:
            for op in ("write", "read"):
                for size in SIZES:
                    count = a.count
                    emu_s = bare_s = float("inf")
                    for _ in range(a.repeat):
                        emu_s = min(emu_s, through(emu_path, controller, op, size, count))
                        bare_s = min(bare_s, bare(bare_path, op, size, count))
                    print(f"{controller:<12}{op:<7}{size >> 10:>5}K{count:>10}{count / emu_s:>12.0f}"
                          f"{count / bare_s:>12.0f}{bare_s / emu_s:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
