"""Where a run is assembled: image files, the Drive on them (its options and a Monitor), the guest machine behind a
controller, and taking it all apart again afterwards.

This is the one module that reaches every layer below it: the commands and the stories built on runs (`emu
replay`, `emu demo`, `emu run`) get their images, drives and machines here and never open an image or build a
device themselves; `qemu_run` puts emu's driver in front of a real QEMU's device instead (`emu replay --target
qemu`). A scenario's disk (`ScenarioDisk`) is its chain of image files, made and filled from the
scenario's `[disk]`, the Drive on the top one, and the offline operations (snapshot, commit, compact) that change
the files under the running guest; `scenarios.play` runs the steps on it.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import images
from controllers.ata.layouts import DSM_MAX_RANGE_SECTORS
from controllers.drivers.ahci import AhciDriver
from controllers.drivers.ata_piix import PiixDriver
from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.drivers.virtio_scsi import VirtioScsiDriver
from emu.block import Drive, DriveOptions
from emu.block.backend import Status
from emu.errors import UsageError
from emu.qtest import machine as qtest
from emu.qtest.pci import PciBus
from emu.qtest.qemu import Qemu
from emu.sim import LatencyModel, Monitor, Simulation
from images import snapshots
from images.chain import commit
from images.compact import compact
from images.filecopy import Copied, copy_file, data_bytes
from images.probe import FORMATS
from scenarios.guest.content import fresh_content
from scenarios.machine import Machine, build
from scenarios.profiles import DEFAULT_GUEST, guest_config
from scenarios.spec import DiskSpec, Scenario, load

HOST_BYTES = "host_bytes"       # the monitor's metric: an image file's space on the host (st_blocks)
# The longest range one ATA DSM TRIM entry carries (its 16-bit sector count): a story explains what that leaves
# behind on a raw image.
ATA_TRIM_RANGE_BYTES = DSM_MAX_RANGE_SECTORS * 512
DEFAULT_OPTIONS = DriveOptions()     # QEMU's -drive defaults (discard=ignore, detect-zeroes=off)


def create_image(path: str, fmt: str, size: int) -> None:
    """A fresh image, laid out as `qemu-img create -f FMT PATH SIZE` lays it out."""
    images.create_image(path, fmt, size, {})


def image_format(path: str) -> str:
    """The image's format, by its magic."""
    return images.detect_format(path)


@contextmanager
def two_copies(image: str, sides: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """Two sparse copies of `image`, one per side, beside it (so a relative backing file still resolves), removed
    afterwards: two runs of one script on the same starting image."""
    directory, stem = os.path.split(os.path.abspath(image))
    made: list[str] = []
    try:
        for side in sides:
            fd, path = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".{side}", dir=directory)
            os.close(fd)
            made.append(path)
            copy_file(image, path, sparse=True)
        yield made[0], made[1]
    finally:
        for path in made:
            os.unlink(path)


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


@dataclass
class QemuMachine:
    """emu's guest driver for `controller`, probed and ready, driving a real QEMU's device over qtest: what the replay
    runner needs of a machine (controller, driver, run)."""

    controller: str
    sim: Simulation
    driver: Any
    qemu: Qemu

    def run(self, gen: Generator[Any, Any, Any]) -> Any:
        return self.sim.run(until=self.sim.process(gen))


def _qemu_driver(qemu: Qemu, controller: str, sim: Simulation, guest: str) -> Any:
    """The driver emu's machine would give `controller`, over QEMU's function instead of emu's: PCI set up as
    firmware does, guest RAM in QEMU, completions as QEMU's interrupts (emu.qtest)."""
    conn, config = qemu.conn, guest_config(guest)
    bus = PciBus(conn, qemu.machine)
    mem = qtest.guest_memory(conn, qemu.ram_mib)
    if controller == "ide":
        return PiixDriver(qtest.ide_channel(sim, conn, bus), mem, guest=config)
    if controller == "ahci":
        ahci = qtest.ahci_function(sim, conn, bus)
        driver = AhciDriver(sim, mem, ahci.hba, ahci.irq, guest=config)
        ready = driver.start(0)
    else:
        kind, ids = {"virtio-blk": (VirtioBlkDriver, qtest.VIRTIO_BLK_IDS),
                     "virtio-scsi": (VirtioScsiDriver, qtest.VIRTIO_SCSI_IDS)}[controller]
        function = qtest.virtio_function(conn, bus, ids)
        driver = kind(sim, mem, function.region, qtest.interrupt_line(sim, conn, function.function), guest=config,
                      notify_multiplier=function.notify_multiplier)
        ready = driver.probe()
    if not sim.run(until=sim.process(ready)):
        raise UsageError(f"QEMU's {controller} device did not come up for emu's driver")
    return driver


@contextmanager
def qemu_run(image: str, controller: str, fmt: str | None = None, *, options: DriveOptions = DEFAULT_OPTIONS,
             binary: str | None = None, machine_type: str | None = None, guest: str = DEFAULT_GUEST
             ) -> Iterator[QemuMachine]:
    """A real QEMU (Debian's 7.2: `qemu-system-x86_64 -qtest`) with `image` as the drive of `controller` on
    `machine_type` (default: the newest pc or q35), the drive's discard and detect-zeroes options as `-drive` takes
    them, and emu's guest driver on its device."""
    drive = {"discard": options.discard, "detect-zeroes": options.detect_zeroes}
    extra = {} if binary is None else {"binary": binary}
    with Qemu(controller, image, fmt or images.detect_format(image), drive=drive, machine_type=machine_type,
              **extra) as qemu:
        sim = Simulation()
        yield QemuMachine(controller, sim, _qemu_driver(qemu, controller, sim, guest), qemu)


def load_scenario(source: str, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """A scenario file or catalog name, read with the image formats emu has."""
    return load(source, overrides, formats=tuple(FORMATS))


# -- a scenario's disk ----------------------------------------------------------------------------------------------
EXTENSIONS = {"raw": "img", "qcow2": "qcow2", "vdi": "vdi", "vpc": "vhd", "vhdx": "vhdx", "vmdk": "vmdk"}
FILL_CHUNK = 4 << 20        # a backing layer's fill is written in pieces of this size


def layer_kind(flags: int) -> str:
    """What a layer holds for a range, as `qemu-img map` tells it: data, zeros without data, or nothing (the layer
    below shows through)."""
    if flags & Status.DATA:
        return "data"
    return "zero" if flags & Status.ALLOCATED else "unallocated"


@dataclass(frozen=True)
class Created:
    """An image file as its create left it: what the guest sees, what the host holds, what the create wrote
    (data, not holes nor fallocated ranges: what its time depends on)."""

    virtual_size: int
    file_size: int
    host_bytes: int
    written_bytes: int


class ScenarioDisk:
    """The image files of a scenario's `[disk]` in `directory` (its backing layers `base*.EXT` filled as the
    scenario says, then `disk.EXT` on top), the Drive on the top one, and a probe of every layer's host bytes in
    `monitor`. The files are the run's: they stay in `directory` for qemu-img to read afterwards. Copies of the
    top are `copy-NAME.EXT`; once the disk is made VirtualBox's immutable base, the guest writes `diff.EXT`."""

    def __init__(self, directory: str, spec: DiskSpec, options: DriveOptions, monitor: Monitor,
                 rng: random.Random) -> None:
        self.directory = directory
        self.spec = spec
        self.options = options
        self.monitor = monitor
        self.created: dict[str, Created] = {}
        self.copies: dict[str, tuple[str, bool]] = {}      # name -> (file, sparse)
        self.immutable: tuple[str, bool] | None = None     # (the base, auto-reset)
        os.makedirs(directory, exist_ok=True)
        below: str | None = None
        for i, layer in enumerate(spec.backing):
            stem = "base" if len(spec.backing) == 1 else f"base{i + 1}"
            path = os.path.join(directory, f"{stem}.{EXTENSIONS[layer.format]}")
            self._create(path, layer.format, layer.options, below)
            self._fill(path, layer.format, layer.fill, rng)
            below = path
        self.top = os.path.join(directory, f"disk.{EXTENSIONS[spec.format]}")
        self._create(self.top, spec.format, spec.options, below)
        self.drive = Drive(images.open_image(self.top, spec.format), options, monitor)
        self._attached()

    def _create(self, path: str, fmt: str, options: dict[str, str], below: str | None) -> None:
        if os.path.exists(path):
            raise UsageError(f"{path} already exists: give the run an empty directory")
        images.create_image(path, fmt, self.spec.size, options,
                            backing=None if below is None else os.path.basename(below),
                            backing_fmt=None if below is None else images.detect_format(below))
        st = os.stat(path)
        self.created[os.path.basename(path)] = Created(self.spec.size, st.st_size, st.st_blocks * 512,
                                                       data_bytes(path))

    @staticmethod
    def _fill(path: str, fmt: str, fills, rng: random.Random) -> None:
        image = images.open_image(path, fmt)
        try:
            for fill in fills:
                for offset in range(fill.offset, fill.offset + fill.size, FILL_CHUNK):
                    n = min(FILL_CHUNK, fill.offset + fill.size - offset)
                    image.write(offset, fresh_content(rng, n, fill.content))
            image.flush()
        finally:
            image.close()

    # -- what the run reads --------------------------------------------------------------------------------------
    def chain(self) -> list:
        """The open image backends of the chain, base first."""
        return list(reversed(self.drive.backend.chain()))

    def layers(self) -> list[str]:
        """The layers' file names, base first (the names of the monitor's rows)."""
        return [os.path.basename(layer.path) for layer in self.chain()]

    def _attached(self) -> None:
        """A chain opened under the Drive: its host files told about a synthetic payload, its layers probed."""
        for layer in self.chain():
            layer.host.synthetic = self.spec.payload == "synthetic"
        for layer in self.monitor.probed(HOST_BYTES):
            self.monitor.unprobe(layer, HOST_BYTES)
        for layer in self.chain():
            path = layer.path
            self.monitor.probe(os.path.basename(path), HOST_BYTES, lambda path=path: host_bytes(path))

    def host_bytes(self) -> dict[str, int]:
        """Every layer's host bytes now, base first."""
        return {os.path.basename(layer.path): host_bytes(layer.path) for layer in self.chain()}

    def maps(self) -> dict[str, list[list]]:
        """Per layer, what it holds over the guest's address space: runs of [offset, length, kind]."""
        out = {}
        for layer in self.chain():
            runs: list[list] = []
            offset, end = 0, layer.virtual_size
            while offset < end:
                status = layer.block_status(offset, end - offset)
                kind = layer_kind(status.flags)
                if runs and runs[-1][2] == kind:
                    runs[-1][1] += status.length
                else:
                    runs.append([offset, status.length, kind])
                offset += status.length
            out[os.path.basename(layer.path)] = runs
        return out

    # -- offline operations on the files ---------------------------------------------------------------------------
    def _offline(self, operation: Callable[[], object]) -> object:
        """Close the image, change the files, reopen the top under the same Drive (the guest does not notice)."""
        self.drive.flush()
        self.drive.close()
        try:
            return operation()
        finally:
            self.drive.reattach(images.open_image(self.top, images.detect_format(self.top)))
            self._attached()

    def snapshot(self, action: str, name: str) -> int:
        """Take, revert to or delete (merge) snapshot `name` of the top image, as `emu img snapshot` does; the
        bytes a delete merged (0 for take and revert, which copy nothing)."""
        if action == "delete":
            return self._offline(lambda: snapshots.delete(self.top, name).data_bytes)
        operation = snapshots.create if action == "take" else snapshots.revert
        self._offline(lambda: operation(self.top, name))
        return 0

    def commit(self) -> int:
        """`emu img commit` of the top into the layer below; the bytes written there."""
        return self._offline(lambda: commit(self.top).data_bytes)

    def compact(self) -> int:
        """`emu img compact` of the top image; the host bytes it gave back."""
        def run() -> int:
            done = compact(self.top)
            return done.host_before - done.host_after
        return self._offline(run)

    def _path(self, stem: str) -> str:
        return os.path.join(self.directory, f"{stem}.{EXTENSIONS[self.spec.format]}")

    def copy(self, name: str, sparse: bool) -> Copied:
        """A full copy of the top image file, `copy-NAME.EXT`, as `cp --sparse=always|never` makes it."""
        target = self._path(f"copy-{name}")
        if os.path.exists(target):
            raise UsageError(f"{target} already exists: give the run an empty directory")
        done = self._offline(lambda: copy_file(self.top, target, sparse=sparse))
        self.copies[name] = (target, sparse)
        return done

    def restore(self, name: str) -> Copied:
        """The top image file replaced by a copy of copy `name` (made as that copy was); the bytes copied."""
        source, sparse = self.copies[name]

        def run() -> Copied:
            temporary = os.path.join(self.directory, f".{os.path.basename(self.top)}.restore")
            done = copy_file(source, temporary, sparse=sparse)
            os.replace(temporary, self.top)
            return done
        return self._offline(run)

    def make_immutable(self, auto_reset: bool) -> snapshots.PowerOn:
        """VirtualBox's `modifymedium --type immutable [--autoreset]` on the top image, then a power-on: the image
        becomes a write-protected base and the guest writes into `diff.EXT`, a differencing image on it."""
        base, child = self.top, self._path("diff")

        def run() -> snapshots.PowerOn:
            done = snapshots.power_on_immutable(base, child, auto_reset=auto_reset)
            self.top = child
            return done
        done = self._offline(run)
        self.immutable = (base, auto_reset)
        return done

    def power_on(self) -> snapshots.PowerOn | None:
        """What a power-on does to the disk: an immutable base's differencing image is reset (auto-reset) or kept;
        None for an ordinary disk, which a power cycle leaves as it is."""
        if self.immutable is None:
            return None
        base, auto_reset = self.immutable
        return self._offline(lambda: snapshots.power_on_immutable(base, self.top, auto_reset=auto_reset))

    def close(self) -> None:
        self.drive.close()
