"""A virtio-blk-pci function over a real image, with its guest driver: what the virtio tests share."""

from __future__ import annotations

import os
from types import SimpleNamespace

from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.virtio.blk import VirtioBlkConfig, VirtioBlkDevice
from controllers.virtio.pci import VirtioPciConfig, VirtioPciTransport
from emu.block import Drive, DriveOptions
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from images import create_image, open_image

MiB = 1 << 20
DISK = 16 * MiB
RAM = 8 * MiB


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
    drv = VirtioBlkDriver(sim, mem, transport, irq)
    env = SimpleNamespace(path=path, drive=drive, dev=dev, sim=sim, mem=mem, irq=irq, transport=transport, drv=drv)
    if probe:
        assert run(env, drv.probe()) is True
    return env


def run(env, gen):
    """Run one guest-driver generator to its end in the env's simulation; its return value."""
    return env.sim.run(env.sim.process(gen))


def close(env) -> None:
    env.drive.close()
    env.mem.close()


def pattern(nbytes: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed + (i >> 9)) & 0xFF for i in range(nbytes))
