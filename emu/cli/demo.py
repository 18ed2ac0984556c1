"""`emu demo`: where does the space go when a guest deletes a file?

The story (the catalog's fstrim-after-delete through every controller and a Windows install told by the simulated
guest; underneath, which guest driver writes and discards what, onto which format, and which layer kept the space)
is `scenarios.demo`; this prints its tables.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap

from emu.cli.common import Parser
from emu.errors import UsageError
from emu.units import human_size, parse_size
from scenarios import demo
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name
from scenarios.report.rows import Table, size
from scenarios.report.tables import layout
from scenarios.run import load_scenario

WIDTH = 116        # the why paragraphs are wrapped to the width of the tables underneath


def _short(why: str) -> str:
    """A reason's words up to its first explanation: 'the drive dropped the discard'."""
    return re.split(r":| \(", why, maxsplit=1)[0]


def _on(cells: list) -> str:
    """The controllers of `cells`, once each, in the order played."""
    return ", ".join(dict.fromkeys(cell.controller for cell in cells))


def _span(values: list[int]) -> str:
    """One size, or the range the sizes cover: '64 MiB', '63.9 MiB to 64 MiB'."""
    low, high = min(values), max(values)
    return size(low) if low == high else f"{size(low)} to {size(high)}"


def _came_back(outcomes: list[demo.Outcome]) -> str:
    return (f"{_span([o.reclaimed for o in outcomes])} of the {_span([o.freed for o in outcomes])} the guest freed "
            "came back")


def _paragraph(sentences: list[str]) -> str:
    return textwrap.fill(" ".join(sentences), WIDTH)


def _why(cells: list[demo.TrimCell]) -> list[str]:
    """What the headline table shows, read from its cells: what fstrim says, what each discard option gave back and
    why, and why the images differ before anything was deleted."""
    ran = [c for c in cells if c.trimmed is not None]
    refused = [c for c in cells if c.trimmed is None]
    lines = []
    if ran:
        lines.append(f"Why: fstrim reports {_span([c.trimmed for c in ran])} trimmed on {_on(ran)}, the free space it "
                     "asked the device to discard, whatever the host did with it.")
    if refused:
        lines.append(f"Why: fstrim fails on {_on(refused)} ({refused[0].refused}); the story goes on with a sync in "
                     f"place of {' and '.join(demo.DISCARDING_TOOLS)}.")
    for discard in demo.DISCARD_OPTIONS:
        by_reason: dict[str, list[demo.TrimCell]] = {}
        for cell in cells:
            if cell.discard == discard:
                by_reason.setdefault(cell.outcome.reason, []).append(cell)
        for reason, same in by_reason.items():
            because = "" if reason == demo.RECLAIMED else f"; {same[0].outcome.why}"
            lines.append(f"With discard={discard} on {_on(same)}, {_came_back([c.outcome for c in same])}{because}.")
    zeroed = [c for c in cells if c.outcome.mkfs_zeroes]
    written = [c for c in cells if not c.outcome.mkfs_zeroes]
    if zeroed and written:
        first = cells[0].outcome.phases[0][0]
        counts = sorted({c.outcome.mkfs_zeroes for c in zeroed})
        lines.append(f"The images differ from the start ({first}): mkfs's zeroing reached the drive as written data "
                     f"on {_on(written)} ({_span([c.outcome.phases[0][1] for c in written])}), as "
                     f"{' to '.join(map(str, counts))} write-zeroes requests on {_on(zeroed)} "
                     f"({_span([c.outcome.phases[0][1] for c in zeroed])}).")
    return lines


def _phase_table(lead: tuple[str, ...], middle: tuple[str, ...],
                 plays: list[tuple[tuple[str, ...], demo.Outcome, tuple[str, ...]]]) -> str:
    """A story's plays as a table: each play's `lead` cells, the image's host bytes after each phase (the phases its
    result names), its `middle` cells and where the space stayed."""
    phases = tuple(name for name, _ in plays[0][1].phases)
    rows = tuple((*first, *(size(host) for _, host in outcome.phases), *then, _short(outcome.why))
                 for first, outcome, then in plays)
    numeric = (*[False] * len(lead), *[True] * len(phases), *[False] * (len(middle) + 1))
    return "\n".join(layout(Table((*lead, *phases, *middle, "where the space stayed"), rows, numeric)))


def _story(directory: str, profile: str, report: bool) -> None:
    """The headline table: fstrim-after-delete per controller and discard option, then why."""
    scenario = load_scenario(demo.STORY)
    print(f"{demo.STORY} ({scenario.title}): a {scenario.machine.guest} guest through every controller under the "
          f"drive's\ndiscard=ignore and discard=unmap (profile {profile}); host bytes of the image after each phase:")
    cells = demo.trim_cells(directory, profile, report)
    print(_phase_table(("controller", "discard="), ("fstrim -v",),
                       [((c.controller, c.discard), c.outcome, (c.refused or f"{size(c.trimmed)} trimmed",))
                        for c in cells]))
    print(f"\n{_paragraph(_why(cells))}\n")


def _windows(directory: str, profile: str, report: bool) -> None:
    """The Windows story, played by the catalog's guest and by one that sends TRIM."""
    scenario = load_scenario(demo.WINDOWS_STORY)
    print(f"{demo.WINDOWS_STORY} ({scenario.title}),\nthrough {scenario.machine.controller} under "
          f"discard={scenario.drive.discard} (profile {profile}):")
    cells = demo.windows_cells(directory, profile, report)
    print(_phase_table(("guest",), (), [((c.guest,), c.outcome, ()) for c in cells]))
    print(f"\n{_paragraph([f'{c.guest}: {_came_back([c.outcome])}.' for c in cells])}\n")


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
    p.add_argument("--dir", help="where to keep the runs and images (default: a temporary directory, removed after)")
    p.add_argument("--size", default="64M", help="how much the guest driver writes underneath (default 64M)")
    p.add_argument("--disk", default="1G", help="the virtual disk size underneath (default 1G)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"device profile of every run: {', '.join(NAMES)} (default {DEFAULT_PROFILE})")
    a = p.parse_args(argv)
    check_name(a.profile)
    data, disk = parse_size(a.size), parse_size(a.disk)
    if not 0 < data <= disk:
        raise UsageError("--size must be between 1 byte and the disk size")
    directory = a.dir or tempfile.mkdtemp(prefix="emu-demo-")
    os.makedirs(directory, exist_ok=True)
    try:
        print("emu demo: where does the space go when a guest deletes a file? First as the simulated guest tells it.\n")
        _story(directory, a.profile, bool(a.dir))
        _windows(directory, a.profile, bool(a.dir))
        print(f"Underneath: no file system, a guest driver writes {human_size(data)} to a fresh {human_size(disk)} "
              "disk, deletes it and\ndiscards (TRIMs) the freed blocks. Host space is st_blocks of the image file.\n")
        _controller_table(directory, a.profile, disk, data)
        _format_table(directory, disk, data)
        _snapshot_lines(directory, data)
        if a.dir:
            print(f"\nKept in {directory}: each story's run in its own directory (result.json, report.html, its "
                  f"image), and the images underneath; try: emu img map {os.path.join(directory, 'disk-unmap.qcow2')}")
    finally:
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
