"""`emu demo`: where does the space go when a guest deletes a file?

A walk-through on real image files. First the core story: through each controller (IDE, AHCI, virtio-blk,
virtio-scsi), a guest driver writes data to a fresh raw and qcow2 image, deletes it and discards it through the
real command path (DSM TRIM, virtio DISCARD, SCSI UNMAP), under the drive's discard=ignore (QEMU's default) and
discard=unmap; a table gives the host space after each step and, from the per-request trace, the layer that kept
the space. Then the same for every image format at the block layer, and a snapshot that is instant while deleting
it (a merge) costs what the newer layer holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from controllers.ata.layouts import DSM_MAX_RANGE_SECTORS
from emu.block import Drive, DriveOptions
from emu.cli.common import Parser
from emu.errors import BlockError
from emu.sim import Monitor
from emu.trace import Act
from emu.units import MiB, human_size, parse_size
from images import create_image, open_image, snapshots
from scenarios import machine as machines
from scenarios.profiles import DEFAULT_PROFILE, NAMES, check_name

WRITE_CHUNK = 1 * MiB


def _host_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512


# (format, label, drive discard option, the format's open options): QEMU's behaviour first, then
# VirtualBox's VDI discard (a profile's choice in later issues)
CELLS = [("raw", "raw", "ignore", {}), ("raw", "raw", "unmap", {}), ("qcow2", "qcow2", "ignore", {}),
         ("qcow2", "qcow2", "unmap", {}), ("vdi", "vdi", "unmap", {}),
         ("vdi", "vdi (VBox)", "unmap", {"discard": "virtualbox"}), ("vpc", "vpc", "unmap", {}),
         ("vhdx", "vhdx", "unmap", {}), ("vmdk", "vmdk", "unmap", {})]


# where a discard can end up that gives no space back: the first such event of a trace names the layer
KEEPING = (Act.DROPPED, Act.IGNORED, Act.DEFERRED, Act.KEPT, Act.REJECTED)


def _controller_cell(directory: str, controller: str, fmt: str, discard: str, profile: str, disk: int,
                     data: int) -> dict:
    """A guest writes `data` bytes through `controller`, flushes, discards it all and flushes again."""
    path = os.path.join(directory, f"{controller}-{discard}.{fmt}")
    create_image(path, fmt, disk, {})
    monitor = Monitor()
    drive = Drive(open_image(path, fmt), DriveOptions(discard=discard), monitor)
    guest = machines.build(controller, drive, profile)
    monitor.clock = lambda: guest.sim.now
    try:
        disk_ops = guest.disk
        payload = bytes(range(256)) * (WRITE_CHUNK // 256)
        for offset in range(0, data, WRITE_CHUNK):
            chunk = payload[:min(WRITE_CHUNK, data - offset)]
            if not guest.run(disk_ops.write(offset // 512, chunk)):
                raise BlockError(5, f"{controller}: the guest's write at {offset} failed")
        guest.run(disk_ops.flush())
        written = _host_bytes(path)
        since = len(monitor.requests)
        sent, ok = guest.run(disk_ops.discard([(0, data // 512)]))
        guest.run(disk_ops.flush())
        discards = list(monitor.traces("discard", since))
        command = disk_ops.discard_command
        return {"controller": controller, "format": fmt, "discard": discard, "written": written,
                "discarded": _host_bytes(path), "sent": sent, "command": command,
                "why": _why_kept(command, sent, ok, discards)}
    finally:
        guest.close()
        drive.close()


def _why_kept(command: str, sent: int, ok: bool, traces: list) -> str:
    """The layer that kept the space, from the first trace event that gave nothing back."""
    if not sent:
        return "guest: the device does not offer discard, so the driver sends none"
    if not ok:
        return f"device: a {command} command failed"
    for trace in traces:
        for event in trace.events:
            if event.action in KEEPING:
                reason = event.detail.split(";")[0].split(":")[0]
                return f"{event.layer}: {event.action} ({reason})" if reason else f"{event.layer}: {event.action}"
    return "-"


def _controller_table(directory: str, profile: str, disk: int, data: int) -> None:
    print(f"Through the controllers (profile {profile}): the guest driver writes {human_size(data)}, then "
          "discards all of it")
    print(f"{'controller':<12}{'format':<8}{'discard=':<10}{'after write':>12}{'after discard':>15}"
          f"{'commands sent':>22}  where the space stayed")
    for controller in machines.CONTROLLERS:
        for fmt in ("raw", "qcow2"):
            for discard in ("ignore", "unmap"):
                r = _controller_cell(directory, controller, fmt, discard, profile, disk, data)
                kept = r["discarded"] > r["written"] // 2
                sent = f"{r['sent']} {r['command']}" if r["sent"] else "none"
                print(f"{controller:<12}{fmt:<8}{discard:<10}{human_size(r['written']):>12}"
                      f"{human_size(r['discarded']):>15}{sent:>22}  {r['why'] if kept else 'reclaimed'}")
    print("The drivers cut the discard as Linux does: libata sends DSM TRIM through its WRITE SAME translation,")
    print("virtio_blk sends DISCARD, sd sends the command of the provisioning mode it chose from the VPD pages.")
    if data > DSM_MAX_RANGE_SECTORS * 512:
        print("IDE and AHCI leave a few KiB on raw: a DSM range holds at most 65535 sectors, so each range ends 512 "
              "bytes\nshort of a 4 KiB boundary, and the host keeps every 4 KiB block a punch covers only in part.")
    print()


def _run_cell(directory: str, fmt: str, label: str, discard: str, options: dict, disk: int, data: int) -> dict:
    path = os.path.join(directory, f"disk-{discard}{'-vbox' if options else ''}.{fmt}")
    create_image(path, fmt, disk, {})
    row = {"format": label, "discard": discard, "created": _host_bytes(path)}
    drive = Drive(open_image(path, fmt, options=options), DriveOptions(discard=discard))
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
        row["note"] = next((e.detail for t in traces for e in t.events if e.action == Act.DROPPED), "")
        row["dropped"] = sum(t.bytes_with(Act.DROPPED) for t in traces)
        row["ignored"] = sum(sum(e.length for e in t.events if e.action == Act.IGNORED) for t in traces)
        row["deferred"] = sum(sum(e.length for e in t.events if e.action == Act.DEFERRED) for t in traces)
    finally:
        drive.close()
    return row


def _snapshot_walk(directory: str, data: int) -> None:
    """A snapshot costs nothing; deleting it merges what the newer layer holds."""
    path = os.path.join(directory, "vm.qcow2")
    create_image(path, "qcow2", 4 * data, {})
    _fill(path, 0, data)
    print(f"\nSnapshots: vm.qcow2 holds {human_size(data)} of data.")
    start = time.perf_counter()
    snapshots.create(path, "before")
    took = time.perf_counter() - start
    print(f"  emu img snapshot -c before vm.qcow2   {took * 1000:8.1f} ms  nothing copied: vm.qcow2 became "
          "vm@before.qcow2, a new empty vm.qcow2 sits on it")
    _fill(path, 0, data // 8)
    print(f"  the guest writes {human_size(data // 8)}: it lands in vm.qcow2 only "
          f"({human_size(_host_bytes(path))} on the host)")
    start = time.perf_counter()
    moved = snapshots.delete(path, "before")
    took = time.perf_counter() - start
    print(f"  emu img snapshot -d before vm.qcow2   {took * 1000:8.1f} ms  {human_size(moved.data_bytes)} merged "
          "into vm@before.qcow2, which became vm.qcow2")


def _fill(path: str, offset: int, length: int) -> None:
    drive = Drive(open_image(path))
    try:
        payload = bytes(range(256)) * (WRITE_CHUNK // 256)
        for start in range(offset, offset + length, WRITE_CHUNK):
            _ok(drive.write(start, payload[:min(WRITE_CHUNK, offset + length - start)]))
        _ok(drive.flush())
    finally:
        drive.close()


def _ok(completion):
    if not completion.ok:
        raise BlockError(completion.errno, str(completion.error))
    return completion


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
        raise BlockError(22, "--size must be between 1 byte and the disk size")
    directory = a.dir or tempfile.mkdtemp(prefix="emu-demo-")
    os.makedirs(directory, exist_ok=True)
    try:
        print(f"emu demo: a guest writes {human_size(data)} to a fresh {human_size(disk)} disk, deletes it and")
        print("discards (TRIMs) the freed blocks. Host space is st_blocks of the image file.\n")
        _controller_table(directory, a.profile, disk, data)
        print("At the block layer, for every image format:")
        rows = [_run_cell(directory, fmt, label, discard, options, disk, data)
                for fmt, label, discard, options in CELLS]
        print(f"{'format':<12}{'discard=':<10}{'created':>10}{'after write':>13}{'after discard':>15}"
              f"{'reclaimed':>11}  where the rest of the discards went")
        for r in rows:
            reclaimed = r["written"] - r["discarded"]
            why = []
            if r["dropped"]:
                why.append(f"{human_size(r['dropped'])} dropped: {r['note'].split(':')[0].split(';')[0]}")
            if r["ignored"]:
                why.append(f"{human_size(r['ignored'])} in partial clusters or blocks ignored")
            if r["deferred"]:
                why.append(f"{human_size(r['deferred'])} in partial blocks: remembered, freed once a block is whole")
            print(f"{r['format']:<12}{r['discard']:<10}{human_size(r['created']):>10}"
                  f"{human_size(r['written']):>13}{human_size(r['discarded']):>15}"
                  f"{human_size(max(0, reclaimed)):>11}  {'; '.join(why) or '-'}")
        for r in rows[1:4:2]:
            print(f"\n{r['format']}, discard={r['discard']}: what the layers did with the first two discards")
            for trace in r["traces"]:
                print("  " + str(trace).replace("\n", "\n  "))
        print("\nWhy: with discard=ignore (QEMU's default) the drive drops every discard before it reaches the")
        print("image. With discard=unmap, raw punches holes in the host file; qcow2 frees whole clusters only:")
        print("the guest's discards start 4 KiB into a 64 KiB cluster, so each one leaves its partial first and")
        print("last cluster allocated. Freed clusters are punched in the host file, which keeps its length:")
        print("its space is returned, not its size. qemu's vdi, vpc and vmdk drivers have no discard at all;")
        print("VirtualBox frees whole 1 MiB VDI blocks, remembering partly discarded ones until they are whole,")
        print("and shrinks the file; VHDX frees whole blocks only (32 MiB for a 1 GiB disk), which the guest's")
        print("1 MiB discards never cover.")
        _snapshot_walk(directory, data)
        if a.dir:
            print(f"\nImages kept in {directory}; try: emu img map {os.path.join(directory, 'disk-unmap.qcow2')}")
    finally:
        if not a.dir:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
