"""`emu demo`: where does the space go when a guest deletes a file?

The story (which guest writes and discards what, through which controller, onto which format, and which layer
kept the space) is `scenarios.demo`; this prints its tables.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from emu.cli.common import Parser
from emu.errors import UsageError
from emu.units import human_size, parse_size
from scenarios import demo
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name


def _controller_table(directory: str, profile: str, disk: int, data: int) -> None:
    print(f"Through the controllers (profile {profile}): the guest driver writes {human_size(data)}, then "
          "discards all of it")
    print(f"{'controller':<12}{'format':<8}{'discard=':<10}{'after write':>12}{'after discard':>15}"
          f"{'commands sent':>22}  where the space stayed")
    for c in demo.controller_cells(directory, profile, disk, data):
        sent = f"{c.sent} {c.command}" if c.sent else "none"
        print(f"{c.controller:<12}{c.format:<8}{c.discard:<10}{human_size(c.written):>12}"
              f"{human_size(c.discarded):>15}{sent:>22}  {c.why if c.kept else 'reclaimed'}")
    print("The drivers cut the discard as Linux does: libata sends DSM TRIM through its WRITE SAME translation,")
    print("virtio_blk sends DISCARD, sd sends the command of the provisioning mode it chose from the VPD pages.")
    if demo.ata_ranges_leave_blocks(data):
        print("IDE and AHCI leave a few KiB on raw: a DSM range holds at most 65535 sectors, so each range ends 512 "
              "bytes\nshort of a 4 KiB boundary, and the host keeps every 4 KiB block a punch covers only in part.")
    print()


def _format_table(directory: str, disk: int, data: int) -> None:
    print("At the block layer, for every image format:")
    cells = demo.format_cells(directory, disk, data)
    print(f"{'format':<12}{'discard=':<10}{'created':>10}{'after write':>13}{'after discard':>15}"
          f"{'reclaimed':>11}  where the rest of the discards went")
    for c in cells:
        print(f"{c.format:<12}{c.discard:<10}{human_size(c.created):>10}"
              f"{human_size(c.written):>13}{human_size(c.discarded):>15}"
              f"{human_size(c.reclaimed):>11}  {c.where_the_rest_went}")
    for c in cells[1:4:2]:
        print(f"\n{c.format}, discard={c.discard}: what the layers did with the first two discards")
        for trace in c.traces:
            print("  " + str(trace).replace("\n", "\n  "))
    print("\nWhy: with discard=ignore (QEMU's default) the drive drops every discard before it reaches the")
    print("image. With discard=unmap, raw punches holes in the host file; qcow2 frees whole clusters only:")
    print("the guest's discards start 4 KiB into a 64 KiB cluster, so each one leaves its partial first and")
    print("last cluster allocated. Freed clusters are punched in the host file, which keeps its length:")
    print("its space is returned, not its size. qemu's vdi, vpc and vmdk drivers have no discard at all;")
    print("VirtualBox frees whole 1 MiB VDI blocks, remembering partly discarded ones until they are whole,")
    print("and shrinks the file; VHDX frees whole blocks only (32 MiB for a 1 GiB disk), which the guest's")
    print("1 MiB discards never cover.")


def _snapshot_lines(directory: str, data: int) -> None:
    walk = demo.snapshot_walk(directory, data)
    print(f"\nSnapshots: vm.qcow2 holds {human_size(walk.data)} of data.")
    print(f"  emu img snapshot -c before vm.qcow2   {walk.took * 1000:8.1f} ms  nothing copied: vm.qcow2 became "
          "vm@before.qcow2, a new empty vm.qcow2 sits on it")
    print(f"  the guest writes {human_size(walk.written)}: it lands in vm.qcow2 only "
          f"({human_size(walk.active_host_bytes)} on the host)")
    print(f"  emu img snapshot -d before vm.qcow2   {walk.merge_took * 1000:8.1f} ms  {human_size(walk.merged)} merged "
          "into vm@before.qcow2, which became vm.qcow2")


def main(argv: list[str]) -> int:
    p = Parser("emu demo", "Walk through what happens to host space when a guest writes, deletes and discards.")
    p.add_argument("--dir", help="where to put the images (default: a temporary directory, removed after)")
    p.add_argument("--size", default="64M", help="how much the guest writes (default 64M)")
    p.add_argument("--disk", default="1G", help="virtual disk size (default 1G)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"device profile for the controller table: {', '.join(NAMES)} (default {DEFAULT_PROFILE})")
    a = p.parse_args(argv)
    check_name(a.profile)
    data, disk = parse_size(a.size), parse_size(a.disk)
    if not 0 < data <= disk:
        raise UsageError("--size must be between 1 byte and the disk size")
    directory = a.dir or tempfile.mkdtemp(prefix="emu-demo-")
    os.makedirs(directory, exist_ok=True)
    try:
        print(f"emu demo: a guest writes {human_size(data)} to a fresh {human_size(disk)} disk, deletes it and")
        print("discards (TRIMs) the freed blocks. Host space is st_blocks of the image file.\n")
        _controller_table(directory, a.profile, disk, data)
        _format_table(directory, disk, data)
        _snapshot_lines(directory, data)
        if a.dir:
            print(f"\nImages kept in {directory}; try: emu img map {os.path.join(directory, 'disk-unmap.qcow2')}")
    finally:
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
