"""Where a run is assembled: image files, the Drive on them (its options and a Monitor), the guest machine behind a
controller, and taking it all apart again afterwards.

This is the one module that reaches every layer below it: the commands and the stories built on runs (`emu
replay`, `emu demo`) get their images, drives and machines here and never open an image or build a device
themselves. Today a run is one image, its Drive and, for a guest, the machine on it; it grows into the scenario
runner (a TOML scenario -> images -> Drive -> machine -> guest file system -> result) in the same place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import images
from controllers.ata.layouts import DSM_MAX_RANGE_SECTORS
from emu.block import Drive, DriveOptions
from emu.sim import LatencyModel, Monitor
from images import snapshots
from scenarios.machine import Machine, build

HOST_BYTES = "host_bytes"       # the monitor's metric: an image file's space on the host (st_blocks)
# The longest range one ATA DSM TRIM entry carries (its 16-bit sector count): a story explains what that leaves
# behind on a raw image.
ATA_TRIM_RANGE_BYTES = DSM_MAX_RANGE_SECTORS * 512
DEFAULT_OPTIONS = DriveOptions()     # QEMU's -drive defaults (discard=ignore, detect-zeroes=off)


def create_image(path: str, fmt: str, size: int) -> None:
    """A fresh image, laid out as `qemu-img create -f FMT PATH SIZE` lays it out."""
    images.create_image(path, fmt, size, {})


def host_bytes(path: str) -> int:
    """What a file holds on the host (st_blocks), where a discard's space shows."""
    return os.stat(path).st_blocks * 512


def take_snapshot(path: str, name: str) -> None:
    """An external snapshot of the image at `path` (instant: the file becomes the snapshot's, a new one sits on it)."""
    snapshots.create(path, name)


def delete_snapshot(path: str, name: str) -> int:
    """Delete snapshot `name` of the image at `path` by merging the newer layer into it; the bytes merged."""
    return snapshots.delete(path, name).data_bytes


@dataclass
class Run:
    """One assembled run, open: the image file, the Drive on it, the Monitor both report to, and the guest machine
    (None for a run at the block layer)."""

    image: str
    drive: Drive
    monitor: Monitor
    machine: Machine | None = None

    @property
    def layer(self) -> str:
        """The image's name in the monitor's rows."""
        return os.path.basename(self.image)

    def host_bytes(self) -> int:
        """Sample the run's probes now; the image file's host space."""
        rows = self.monitor.sample()
        return int(next(row.value for row in rows if (row.layer, row.metric) == (self.layer, HOST_BYTES)))


@contextmanager
def drive_run(image: str, fmt: str | None = None, *, options: DriveOptions = DEFAULT_OPTIONS,
              open_options: dict[str, str] | None = None) -> Iterator[Run]:
    """A run at the block layer: `image` (format `fmt`, or by its magic; the format's `open_options`) behind a
    Drive with `options`, reporting to a fresh Monitor that probes the file's host space; closed on the way out."""
    monitor = Monitor()
    drive = Drive(images.open_image(image, fmt, read_only=options.read_only, options=open_options), options, monitor)
    run = Run(image, drive, monitor)
    monitor.probe(run.layer, HOST_BYTES, lambda: host_bytes(image))
    try:
        yield run
    finally:
        drive.close()


@contextmanager
def guest_run(image: str, controller: str, profile: str, fmt: str | None = None, *,
              options: DriveOptions = DEFAULT_OPTIONS, timing: LatencyModel | None = None) -> Iterator[Run]:
    """A booted guest with the Drive on `image` behind `controller`, configured from `profile`; the monitor's
    clock is the machine's simulated time."""
    with drive_run(image, fmt, options=options) as run:
        machine = build(controller, run.drive, profile, timing=timing)
        run.monitor.clock = lambda: machine.sim.now
        run.machine = machine
        try:
            yield run
        finally:
            machine.close()
