"""A virtio-blk-pci function over a real image, with its guest driver: what the virtio tests share."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.drivers.virtio_scsi import VirtioScsiDriver
from controllers.scsi.disk import ScsiDisk
from controllers.virtio.blk import VirtioBlkConfig, VirtioBlkDevice
from controllers.virtio.pci import VirtioPciConfig, VirtioPciTransport
from controllers.virtio.scsi import VirtioScsiConfig, VirtioScsiDevice
from emu.block import Drive, DriveOptions
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from images import create_image, open_image
from scenarios.profiles import guest_config
from scenarios.profiles.scsi import scsi_disk_config

MiB = 1 << 20
DISK = 16 * MiB
RAM = 8 * MiB
GUEST = guest_config("linux-6.1")      # the drivers' configuration: a Linux 6.1 guest


def make_virtio_blk(directory, fmt: str = "raw", size: int = DISK, *, discard: str = "unmap",
                    config: VirtioBlkConfig | None = None, pci: VirtioPciConfig | None = None,
                    timing: LatencyModel | None = None, probe: bool = True, **config_fields) -> SimpleNamespace:
    """An image, a Drive, the device, the transport and a probed Linux-style driver (probe=False: not yet)."""
    path = os.path.join(str(directory), f"disk.{fmt}")
    create_image(path, fmt, size, {})
    drive = Drive(open_image(path, fmt), DriveOptions(discard=discard))
    config = config or VirtioBlkConfig(capacity_sectors=size // 512, **config_fields)
    sim = Simulation()
    mem = GuestMemory(RAM)
    irq = InterruptLine(sim, "virtio-blk")
    dev = VirtioBlkDevice(drive, config)
    transport = VirtioPciTransport(sim, mem, irq, dev, timing=timing, config=pci)
    drv = VirtioBlkDriver(sim, mem, transport, irq, guest=GUEST,
                          notify_multiplier=transport.config.notify_off_multiplier)
    env = SimpleNamespace(path=path, drive=drive, dev=dev, sim=sim, mem=mem, irq=irq, transport=transport, drv=drv)
    if probe:
        assert run(env, drv.probe()) is True
    return env


def make_virtio_scsi(directory, fmt: str = "raw", size: int = DISK, *, discard: str = "unmap",
                     profile: str = "qemu-7.2", luns: tuple[int, ...] = (0,), config: VirtioScsiConfig | None = None,
                     pci: VirtioPciConfig | None = None, probe: bool = True, clear_ua: bool = True,
                     block_size: int = 512, **disk_fields) -> SimpleNamespace:
    """One image per LUN (disk.FMT, disk-LUN.FMT), a ScsiDisk of `profile` on each, the virtio-scsi device and
    transport, and a probed Linux-style driver; `clear_ua` drops the power-on unit attentions after the probe."""
    sim, mem = Simulation(), GuestMemory(RAM)
    disks, paths = {}, []
    for lun in luns:
        path = os.path.join(str(directory), f"disk.{fmt}" if lun == luns[0] else f"disk-{lun}.{fmt}")
        create_image(path, fmt, size, {})
        drive = Drive(open_image(path, fmt), DriveOptions(discard=discard))
        disk_config = dataclasses.replace(scsi_disk_config(profile, size // block_size, block_size), **disk_fields)
        disks[lun] = ScsiDisk(drive, disk_config)
        paths.append(path)
    irq = InterruptLine(sim, "virtio-scsi")
    dev = VirtioScsiDevice(disks, config)
    transport = VirtioPciTransport(sim, mem, irq, dev, config=pci)
    drv = VirtioScsiDriver(sim, mem, transport, irq, guest=GUEST,
                           notify_multiplier=transport.config.notify_off_multiplier)
    env = SimpleNamespace(path=paths[0], paths=paths, disks=disks, disk=disks[luns[0]], drive=disks[luns[0]].drive,
                          dev=dev, sim=sim, mem=mem, irq=irq, transport=transport, drv=drv)
    if probe:
        assert run(env, drv.probe()) is True
        if clear_ua:
            for disk in disks.values():
                disk.unit_attention = None
    return env


def close_scsi(env) -> None:
    for disk in env.disks.values():
        disk.drive.close()
    env.mem.close()


def data_extents(map_json: list[dict]) -> list[tuple[int, int, bool]]:
    """`qemu-img map --output=json` entries as (start, length, holds data), adjacent equal ones merged: what
    GET LBA STATUS reports as mapped / deallocated runs."""
    merged: list[tuple[int, int, bool]] = []
    for e in map_json:
        if merged and merged[-1][2] == e["data"] and merged[-1][0] + merged[-1][1] == e["start"]:
            merged[-1] = (merged[-1][0], merged[-1][1] + e["length"], e["data"])
        else:
            merged.append((e["start"], e["length"], e["data"]))
    return merged


def run(env, gen):
    """Run one guest-driver generator to its end in the env's simulation; its return value."""
    return env.sim.run(env.sim.process(gen))


def close(env) -> None:
    env.drive.close()
    env.mem.close()


def pattern(nbytes: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed + (i >> 9)) & 0xFF for i in range(nbytes))
