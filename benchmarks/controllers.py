"""The full request path per controller, against a bare os.pwrite/os.pread loop, in one process.

For each controller (PIIX IDE with bus-master DMA, AHCI with NCQ, virtio-blk, virtio-scsi with sd), 4 KiB and
64 KiB requests, sequential writes then reads, at queue depth 1, issued in a loop by one guest process: a
Linux-style guest driver encodes every request into guest memory (PRDs, command tables and FISes, or virtqueue
descriptors), the emulated controller decodes those bytes, the device runs the command through the Drive onto a
raw image, and the driver collects the completion in simulated time. The anchor is a plain os.pwrite (os.pread)
loop over the same offsets on another raw file in the same directory, timed in the same invocation; the ratio is
emu's request rate over the anchor's (1.0 = as fast as the bare system calls).
Each measurement runs `--repeat` times, interleaved with its anchor; the fastest run counts.

The row `inline-ring` is a second yardstick, not emu: one virtio-blk round trip written out inline with the
project's struct codecs (header, three-entry indirect table, available ring, pwrite/preadv straight from a guest
RAM buffer, status byte, used ring) with no checks, no functions, no block layer and no simulated time. It is what
any byte-level path costs at least in CPython; emu's rows are to be read against it as well as against bare.

    python benchmarks/controllers.py [--count 5000] [--repeat 3] [--dir DIR]
                                     [--controllers ide,ahci,virtio-blk,virtio-scsi,inline-ring]
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from controllers.virtio.layouts import (  # noqa: E402
    AVAIL_IDX,
    AVAIL_RING,
    BLK_OUTHDR_FAST,
    BLK_T_IN,
    BLK_T_OUT,
    DESC_FAST,
    USED_ELEM_FAST,
    USED_IDX,
    USED_RING,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
)
from emu.block import Drive, DriveOptions  # noqa: E402
from images import create_image, open_image  # noqa: E402
from scenarios.machine import CONTROLLERS, build  # noqa: E402

DISK = 512 << 20
SIZES = (4 << 10, 64 << 10)
INLINE = "inline-ring"


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
    """Seconds for `count` guest requests of `size` bytes through `controller`, sequential, queue depth 1: one
    guest process issues them in a loop, as a program in the guest would."""
    drive = Drive(open_image(path, "raw"), DriveOptions())
    guest = build(controller, drive, "qemu-7.2")
    disk, sectors, span = guest.disk, size // 512, DISK // size
    buf = bytes([0x5A]) * size

    def workload():
        for i in range(count):
            if op == "write":
                ok = yield from disk.write((i % span) * sectors, buf)
            else:
                ok = (yield from disk.read((i % span) * sectors, sectors)) is not None
            if not ok:
                raise SystemExit(f"{controller}: {op} {i} failed")

    try:
        start = time.perf_counter()
        guest.run(workload())
        return time.perf_counter() - start
    finally:
        guest.close()
        drive.close()


def inline_ring(path: str, op: str, size: int, count: int) -> float:
    """Seconds for `count` virtio-blk round trips written out inline (see the module docstring): the floor."""
    ring, table, hdr, status, data = 0, 4096, 8192, 8208, 65536       # desc table, avail, used in the first page
    avail, used, qsize = 1024, 2048, 128
    ram = mmap.mmap(-1, data + size)
    view = memoryview(ram)
    buf = bytes([0x5A]) * size
    data_flags = 0 if op == "write" else VIRTQ_DESC_F_WRITE
    fd = os.open(path, os.O_RDWR)
    try:
        span = DISK // size
        start = time.perf_counter()
        for i in range(count):
            slot = i % qsize
            # guest: header, data, a three-entry indirect table, the head in the available ring
            BLK_OUTHDR_FAST.pack_into(ram, hdr, BLK_T_OUT if op == "write" else BLK_T_IN, 0, (i % span) * size >> 9)
            if op == "write":
                ram[data:data + size] = buf
            DESC_FAST.pack_into(ram, table, hdr, 16, VIRTQ_DESC_F_NEXT, 1)
            DESC_FAST.pack_into(ram, table + 16, data, size, data_flags | VIRTQ_DESC_F_NEXT, 2)
            DESC_FAST.pack_into(ram, table + 32, status, 1, VIRTQ_DESC_F_WRITE, 0)
            DESC_FAST.pack_into(ram, ring, table, 48, VIRTQ_DESC_F_INDIRECT, 0)
            ram[avail + AVAIL_RING + 2 * slot:avail + AVAIL_RING + 2 * slot + 2] = b"\0\0"
            ram[avail + AVAIL_IDX:avail + AVAIL_IDX + 2] = ((i + 1) & 0xFFFF).to_bytes(2, "little")
            # device: the head, its indirect table, the header, the data moved without a copy, status, used ring
            head = int.from_bytes(ram[avail + AVAIL_RING + 2 * slot:avail + AVAIL_RING + 2 * slot + 2], "little")
            t_addr, t_len, _f, _n = DESC_FAST.unpack_from(ram, ring + 16 * head)
            chain = DESC_FAST.iter_unpack(ram[t_addr:t_addr + t_len])
            (h_addr, _, _, _), (d_addr, d_len, _, _), (s_addr, _, _, _) = chain
            type_, _prio, sector = BLK_OUTHDR_FAST.unpack_from(ram, h_addr)
            if type_ == BLK_T_OUT:
                os.pwrite(fd, view[d_addr:d_addr + d_len], sector << 9)
            else:
                os.preadv(fd, [view[d_addr:d_addr + d_len]], sector << 9)
            ram[s_addr] = 0
            USED_ELEM_FAST.pack_into(ram, used + USED_RING + 8 * slot, head, 1)
            ram[used + USED_IDX:used + USED_IDX + 2] = ((i + 1) & 0xFFFF).to_bytes(2, "little")
            # guest: the used element, the status, a read's data out of guest RAM
            _head, _len = USED_ELEM_FAST.unpack_from(ram, used + USED_RING + 8 * slot)
            if ram[status] or (op == "read" and len(ram[data:data + size]) != size):
                raise SystemExit(f"{INLINE}: {op} {i} failed")
        return time.perf_counter() - start
    finally:
        os.close(fd)
        view.release()
        ram.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=5000, help="requests per run, for both sizes")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="directory for the images (default: a temporary one)")
    p.add_argument("--controllers", default=",".join((*CONTROLLERS, INLINE)))
    a = p.parse_args()
    controllers = a.controllers.split(",")
    unknown = sorted(set(controllers) - {*CONTROLLERS, INLINE})
    if unknown:
        raise SystemExit(f"unknown controller {unknown[0]!r}: known are {', '.join((*CONTROLLERS, INLINE))}")
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
                        if controller == INLINE:
                            emu_s = min(emu_s, inline_ring(emu_path, op, size, count))
                        else:
                            emu_s = min(emu_s, through(emu_path, controller, op, size, count))
                        bare_s = min(bare_s, bare(bare_path, op, size, count))
                    print(f"{controller:<12}{op:<7}{size >> 10:>5}K{count:>10}{count / emu_s:>12.0f}"
                          f"{count / bare_s:>12.0f}{bare_s / emu_s:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
