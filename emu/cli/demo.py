"""`emu demo`: where does the space go when a guest deletes a file?

A walk-through on real image files: a guest writes data, deletes it and sends discards (TRIM). For raw
and qcow2, with the drive's discard=ignore (QEMU's default) and discard=unmap, it prints the host space
after each step and, from the per-request trace, why a discard did or did not give space back.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from emu.block import Drive, DriveOptions
from emu.cli.common import Parser
from emu.errors import BlockError
from emu.trace import Act
from emu.units import MiB, human_size, parse_size
from images import create_image, open_image

WRITE_CHUNK = 1 * MiB


def _host_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512


def _run_cell(directory: str, fmt: str, discard: str, disk: int, data: int) -> dict:
    path = os.path.join(directory, f"disk-{discard}.{fmt}")
    create_image(path, fmt, disk, {})
    row = {"format": fmt, "discard": discard, "created": _host_bytes(path)}
    drive = Drive(open_image(path, fmt), DriveOptions(discard=discard))
    try:
        payload = bytes(range(256)) * (WRITE_CHUNK // 256)
        for offset in range(0, data, WRITE_CHUNK):
            _ok(drive.write(offset, payload))
        _ok(drive.flush())
        row["written"] = _host_bytes(path)
        # the guest deletes the file: its file system sends one discard per extent, here 4 KiB-unaligned
        # at the start (a partial cluster) and then the rest in 1 MiB pieces
        traces = [_ok(drive.discard(0, 4096)).trace]
        for offset in range(4096, data, WRITE_CHUNK):
            traces.append(_ok(drive.discard(offset, min(WRITE_CHUNK, data - offset))).trace)
        _ok(drive.flush())
        row["discarded"] = _host_bytes(path)
        row["traces"] = traces[:2]
        row["dropped"] = sum(t.bytes_with(Act.DROPPED) for t in traces)
        row["ignored"] = sum(sum(e.length for e in t.events if e.action == Act.IGNORED) for t in traces)
    finally:
        drive.close()
    return row


def _ok(completion):
    if not completion.ok:
        raise BlockError(completion.errno, str(completion.error))
    return completion


def main(argv: list[str]) -> int:
    p = Parser("emu demo", "Walk through what happens to host space when a guest writes, deletes and discards.")
    p.add_argument("--dir", help="where to put the images (default: a temporary directory, removed after)")
    p.add_argument("--size", default="64M", help="how much the guest writes (default 64M)")
    p.add_argument("--disk", default="1G", help="virtual disk size (default 1G)")
    a = p.parse_args(argv)
    data, disk = parse_size(a.size), parse_size(a.disk)
    if not 0 < data <= disk:
        raise BlockError(22, "--size must be between 1 byte and the disk size")
    directory = a.dir or tempfile.mkdtemp(prefix="emu-demo-")
    os.makedirs(directory, exist_ok=True)
    try:
        print(f"emu demo: a guest writes {human_size(data)} to a fresh {human_size(disk)} disk, deletes it and")
        print("discards (TRIMs) the freed blocks. Host space is st_blocks of the image file.\n")
        rows = [_run_cell(directory, fmt, discard, disk, data)
                for fmt in ("raw", "qcow2") for discard in ("ignore", "unmap")]
        print(f"{'format':<8}{'discard=':<10}{'created':>10}{'after write':>13}{'after discard':>15}"
              f"{'reclaimed':>11}  where the rest of the discards went")
        for r in rows:
            reclaimed = r["written"] - r["discarded"]
            why = []
            if r["dropped"]:
                why.append(f"{human_size(r['dropped'])} dropped by the drive")
            if r["ignored"]:
                why.append(f"{human_size(r['ignored'])} in partial clusters ignored")
            print(f"{r['format']:<8}{r['discard']:<10}{human_size(r['created']):>10}{human_size(r['written']):>13}"
                  f"{human_size(r['discarded']):>15}{human_size(max(0, reclaimed)):>11}  {'; '.join(why) or '-'}")
        for r in rows:
            print(f"\n{r['format']}, discard={r['discard']}: what the layers did with the first two discards")
            for trace in r["traces"]:
                print("  " + str(trace).replace("\n", "\n  "))
        print("\nWhy: with discard=ignore (QEMU's default) the drive drops every discard before it reaches the")
        print("image. With discard=unmap, raw punches holes in the host file; qcow2 frees whole clusters only:")
        print("the guest's discards start 4 KiB into a 64 KiB cluster, so each one leaves its partial first and")
        print("last cluster allocated. Freed clusters are punched in the host file, which keeps its length:")
        print("its space is returned, not its size.")
        if a.dir:
            print(f"\nImages kept in {directory}; try: emu img map {os.path.join(directory, 'disk-unmap.qcow2')}")
    finally:
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
