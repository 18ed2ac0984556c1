"""The demo's story: where does the space go when a guest deletes a file?

First as the simulated guest tells it: the catalog's `fstrim-after-delete` (ext4 on Linux 6.1: write, delete,
fstrim, then zeros, umount, blkdiscard) played through each controller under the drive's discard=ignore (QEMU's
default) and discard=unmap, and `xp-install-never-shrinks` played by Windows XP and by Windows 7; each play gives
the top image's host bytes after each phase and what became of the bytes the guest freed (`scenarios.explain`).
Underneath, the same question without a file system, on real image files made by the assembler (`scenarios.run`):
through each controller (IDE, AHCI, virtio-blk, virtio-scsi) a guest driver writes data to a fresh raw and qcow2
image, flushes, discards all of it through the real command path (DSM TRIM, virtio DISCARD, SCSI UNMAP) and flushes
again; each cell gives the host space after each step and, from the per-request traces, the layer that kept the
space. Then the same for every image format at the block layer, and a snapshot that is instant while deleting it (a
merge) costs what the newer layer holds. `emu demo` prints what this computes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

from emu.block import DriveOptions
from emu.errors import BlockError, UsageError
from emu.trace import Act, Trace
from emu.units import MiB, human_size
from scenarios import run as runs
from scenarios.machine import CONTROLLERS
from scenarios.play import play
from scenarios.report.write import write_report

STORY = "fstrim-after-delete"               # the headline story, checked against a real Linux guest
WINDOWS_STORY = "xp-install-never-shrinks"  # played as in the catalog (Windows XP) and by ...
WINDOWS_AGAINST = "windows-7"               # ... the first Windows that sends TRIM, as the story suggests
DISCARDING_TOOLS = ("fstrim", "blkdiscard")  # the guest's tools that fail on a device that offers no discard
RECLAIMED = "reclaimed"                     # explain's reason for bytes the host got back

WRITE_CHUNK = 1 * MiB
PAYLOAD = bytes(range(256)) * (WRITE_CHUNK // 256)
CONTROLLER_FORMATS = ("raw", "qcow2")
DISCARD_OPTIONS = ("ignore", "unmap")
# (format, label, drive discard option, the format's open options): QEMU's behaviour first, then
# VirtualBox's VDI discard
CELLS = [("raw", "raw", "ignore", {}), ("raw", "raw", "unmap", {}), ("qcow2", "qcow2", "ignore", {}),
         ("qcow2", "qcow2", "unmap", {}), ("vdi", "vdi", "unmap", {}),
         ("vdi", "vdi (VBox)", "unmap", {"discard": "virtualbox"}), ("vpc", "vpc", "unmap", {}),
         ("vhdx", "vhdx", "unmap", {}), ("vmdk", "vmdk", "unmap", {})]
# where a discard can end up that gives no space back: the first such event of a trace names the layer
KEEPING = (Act.DROPPED, Act.IGNORED, Act.DEFERRED, Act.KEPT, Act.REJECTED)


class Refused(UsageError):
    """A discarding tool of the guest failed: the device offers no discard."""


@dataclass(frozen=True)
class Outcome:
    """What one play of a catalog story left: the top image's host bytes after each phase, and what became of the
    bytes the guest's file system freed (explain's reason holding the most of them)."""

    directory: str                      # the play's own: its images and result.json
    phases: tuple[tuple[str, int], ...]  # (phase, host bytes of the top image), in run order
    freed: int                          # bytes the file system freed over the run
    reclaimed: int                      # ... of which the host got back
    reason: str                         # the dominant reason's key ('reclaimed' when most came back)
    why: str                            # ... in words
    mkfs_zeroes: int                    # write-zeroes requests mkfs's zeroing reached the drive as


@dataclass(frozen=True)
class TrimCell:
    """fstrim-after-delete through one controller under one discard option."""

    controller: str
    discard: str
    outcome: Outcome
    trimmed: int | None     # what fstrim -v reported; None when it failed
    refused: str            # fstrim's error, when the device offers no discard


@dataclass(frozen=True)
class WindowsCell:
    """xp-install-never-shrinks played by one Windows version."""

    guest: str
    outcome: Outcome


def _outcome(directory: str, result: dict) -> Outcome:
    explained = result["explain"]
    top = max(explained["by_reason"], key=lambda entry: entry["bytes"])
    mkfs = next(step for step in result["steps"] if step["do"] == "mkfs")
    return Outcome(directory, tuple((phase["name"], phase["host_bytes"]) for phase in result["phases"]),
                   explained["freed_bytes"],
                   sum(entry["bytes"] for entry in explained["by_reason"] if entry["reason"] == RECLAIMED),
                   top["reason"], top["text"], mkfs["requests"]["write-zeroes"])


def _play_once(directory: str, name: str, overrides: list[str], report: bool) -> dict:
    """The story played in `directory` (a run left there before is replaced), its result.json written there (and
    the report files, on request). A discarding tool's failure raises Refused."""
    shutil.rmtree(directory, ignore_errors=True)
    started: list[str] = []      # the steps begun, by what they do
    scenario = runs.load_scenario(name, overrides)
    try:
        result = play(scenario, directory, lambda _index, _total, step: started.append(step.do)).result
    except UsageError as error:
        if started and started[-1] in DISCARDING_TOOLS:
            raise Refused(str(error)) from error
        raise
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    if report:
        write_report(result, directory)
    return result


def _play(directory: str, name: str, overrides: list[str], report: bool) -> tuple[dict, str]:
    """The story's result, and the error its discarding tools gave ('' if none). A device that offers no discard
    makes fstrim and blkdiscard fail, as they do on a real guest; the story is then played again with a sync in
    their place (their phases kept), so its other phases still show."""
    try:
        return _play_once(directory, name, overrides, report), ""
    except Refused as refused:
        steps = runs.load_scenario(name, overrides).steps
        instead = [f"steps[{i}].do=sync" for i, step in enumerate(steps) if step.do in DISCARDING_TOOLS]
        return _play_once(directory, name, overrides + instead, report), str(refused)


def trim_cell(directory: str, controller: str, discard: str, profile: str, report: bool = False) -> TrimCell:
    """fstrim-after-delete through `controller` under `discard`, in its own subdirectory of `directory`."""
    where = os.path.join(directory, f"{STORY}-{controller}-{discard}")
    result, refused = _play(where, STORY, [f"controller={controller}", f"discard={discard}", f"profile={profile}"],
                            report)
    trimmed = next((step["output"]["trimmed_bytes"] for step in result["steps"] if step["do"] == "fstrim"), None)
    return TrimCell(controller, discard, _outcome(where, result), trimmed, refused)


def trim_cells(directory: str, profile: str, report: bool = False) -> list[TrimCell]:
    """Every controller under each discard option."""
    return [trim_cell(directory, controller, discard, profile, report)
            for controller in CONTROLLERS for discard in DISCARD_OPTIONS]


def windows_cells(directory: str, profile: str, report: bool = False) -> list[WindowsCell]:
    """The Windows story as the catalog has it, then played by WINDOWS_AGAINST."""
    scenario = runs.load_scenario(WINDOWS_STORY)
    cells = []
    for guest in (scenario.machine.guest, WINDOWS_AGAINST):
        where = os.path.join(directory, f"{WINDOWS_STORY}-{guest}")
        result, _ = _play(where, WINDOWS_STORY, [f"machine.guest={guest}", f"profile={profile}"], report)
        cells.append(WindowsCell(guest, _outcome(where, result)))
    return cells


@dataclass(frozen=True)
class ControllerCell:
    """One guest's write and discard through one controller onto one format under one discard option."""

    controller: str
    format: str
    discard: str
    written: int            # host bytes after the write and flush
    discarded: int          # ... after the discard and flush
    sent: int               # discard commands the driver sent
    command: str            # what a discard becomes on the wire
    why: str                # the layer that kept the space, if it was kept

    @property
    def kept(self) -> bool:
        """Most of the space stayed on the host."""
        return self.discarded > self.written // 2


@dataclass(frozen=True)
class FormatCell:
    """One format at the block layer: the guest's file written, deleted and discarded extent by extent."""

    format: str             # the format's label (VirtualBox's VDI discard is its own row)
    discard: str
    created: int            # host bytes of the fresh image
    written: int
    discarded: int
    traces: list[Trace]     # of the first two discards
    note: str               # the first dropped discard's reason
    dropped: int            # bytes of discards the drive or the format dropped,
    ignored: int            # ... ignored in partial clusters or blocks,
    deferred: int           # ... remembered in partial blocks until they are whole

    @property
    def reclaimed(self) -> int:
        return max(0, self.written - self.discarded)

    @property
    def where_the_rest_went(self) -> str:
        why = []
        if self.dropped:
            why.append(f"{human_size(self.dropped)} dropped: {self.note.split(':')[0].split(';')[0]}")
        if self.ignored:
            why.append(f"{human_size(self.ignored)} in partial clusters or blocks ignored")
        if self.deferred:
            why.append(f"{human_size(self.deferred)} in partial blocks: remembered, freed once a block is whole")
        return "; ".join(why) or "-"


@dataclass(frozen=True)
class SnapshotWalk:
    """A snapshot taken, the guest writing on, and the snapshot deleted (a merge); seconds of wall time."""

    data: int               # what the image held when the snapshot was taken
    took: float
    written: int            # what the guest wrote afterwards
    active_host_bytes: int  # the new active image's host space after that write
    merge_took: float
    merged: int             # bytes merged into the snapshot's file


def _ok(completion):
    if not completion.ok:
        raise BlockError(completion.errno, str(completion.error))
    return completion


def _why_kept(command: str, sent: int, ok: bool, traces: list[Trace]) -> str:
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


def controller_cell(directory: str, controller: str, fmt: str, discard: str, profile: str, disk: int,
                    data: int) -> ControllerCell:
    """A guest writes `data` bytes through `controller`, flushes, discards it all and flushes again."""
    path = os.path.join(directory, f"{controller}-{discard}.{fmt}")
    runs.create_image(path, fmt, disk)
    with runs.guest_run(path, controller, profile, fmt, options=DriveOptions(discard=discard)) as run:
        guest, disk_ops = run.machine, run.machine.disk
        for offset in range(0, data, WRITE_CHUNK):
            chunk = PAYLOAD[:min(WRITE_CHUNK, data - offset)]
            if not guest.run(disk_ops.write(offset // 512, chunk)):
                raise BlockError(5, f"{controller}: the guest's write at {offset} failed")
        guest.run(disk_ops.flush())
        written = run.host_bytes()
        since = len(run.monitor.requests)
        sent, ok = guest.run(disk_ops.discard([(0, data // 512)]))
        guest.run(disk_ops.flush())
        discards = list(run.monitor.traces("discard", since))
        command = disk_ops.discard_command
        return ControllerCell(controller, fmt, discard, written, run.host_bytes(), sent, command,
                              _why_kept(command, sent, ok, discards))


def controller_cells(directory: str, profile: str, disk: int, data: int) -> Iterator[ControllerCell]:
    """Every controller x format x discard option, one at a time (each cell takes a while)."""
    for controller in CONTROLLERS:
        for fmt in CONTROLLER_FORMATS:
            for discard in DISCARD_OPTIONS:
                yield controller_cell(directory, controller, fmt, discard, profile, disk, data)


def ata_ranges_leave_blocks(data: int) -> bool:
    """A discard of `data` bytes needs more than one DSM range, each ending 512 bytes short of a 4 KiB boundary."""
    return data > runs.ATA_TRIM_RANGE_BYTES


def format_cell(directory: str, fmt: str, label: str, discard: str, open_options: dict[str, str], disk: int,
                data: int) -> FormatCell:
    path = os.path.join(directory, f"disk-{discard}{'-vbox' if open_options else ''}.{fmt}")
    runs.create_image(path, fmt, disk)
    created = runs.host_bytes(path)
    with runs.drive_run(path, fmt, options=DriveOptions(discard=discard), open_options=open_options) as run:
        drive = run.drive
        for offset in range(0, data, WRITE_CHUNK):
            _ok(drive.write(offset, PAYLOAD))
        _ok(drive.flush())
        written = run.host_bytes()
        # the guest deletes the file: its file system sends one discard per extent, here 4 KiB-unaligned
        # at the start (a partial cluster) and then the rest in 1 MiB pieces
        traces = [_ok(drive.discard(0, 4096)).trace]
        for offset in range(4096, data, WRITE_CHUNK):
            traces.append(_ok(drive.discard(offset, min(WRITE_CHUNK, data - offset))).trace)
        _ok(drive.flush())
        return FormatCell(
            label, discard, created, written, run.host_bytes(), traces[:2],
            note=next((e.detail for t in traces for e in t.events if e.action == Act.DROPPED), ""),
            dropped=sum(t.bytes_with(Act.DROPPED) for t in traces),
            ignored=sum(sum(e.length for e in t.events if e.action == Act.IGNORED) for t in traces),
            deferred=sum(sum(e.length for e in t.events if e.action == Act.DEFERRED) for t in traces))


def format_cells(directory: str, disk: int, data: int) -> list[FormatCell]:
    return [format_cell(directory, fmt, label, discard, options, disk, data) for fmt, label, discard, options in CELLS]


def _fill(path: str, offset: int, length: int) -> None:
    with runs.drive_run(path) as run:
        for start in range(offset, offset + length, WRITE_CHUNK):
            _ok(run.drive.write(start, PAYLOAD[:min(WRITE_CHUNK, offset + length - start)]))
        _ok(run.drive.flush())


def snapshot_walk(directory: str, data: int) -> SnapshotWalk:
    """A snapshot costs nothing; deleting it merges what the newer layer holds."""
    path = os.path.join(directory, "vm.qcow2")
    runs.create_image(path, "qcow2", 4 * data)
    _fill(path, 0, data)
    start = time.perf_counter()
    runs.take_snapshot(path, "before")
    took = time.perf_counter() - start
    _fill(path, 0, data // 8)
    active = runs.host_bytes(path)
    start = time.perf_counter()
    merged = runs.delete_snapshot(path, "before")
    merge_took = time.perf_counter() - start
    return SnapshotWalk(data, took, data // 8, active, merge_took, merged)
