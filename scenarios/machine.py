"""A simulated guest machine: one disk behind a controller chosen by name, configured from a profile, and the
guest driver a Linux guest would load for it.

`emu replay` hands the driver raw commands; `emu demo` and the benchmarks use `Machine.disk`, the same
sector-level operations (write, read, flush, discard) whatever the controller, so a table can compare IDE, AHCI
and virtio on equal terms. The Drive comes from the caller (scenarios never open images themselves); its
options and its backend's discard facts decide what the strict profiles advertise.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from controllers.ahci import AhciHba
from controllers.ata.device import AtaDevice
from controllers.drivers.ahci import AhciDriver
from controllers.drivers.ata_piix import PiixDriver
from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.ide import IdeChannel
from controllers.virtio.blk import VirtioBlkDevice
from controllers.virtio.pci import VirtioPciTransport
from emu.errors import UsageError
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from scenarios.profiles import get_profile, read_zeroes_after_trim
from scenarios.profiles.virtio_blk import virtio_blk_config, virtio_pci_config

CONTROLLERS = ("ide", "ahci", "virtio-blk")
GUEST_RAM = 256 << 20     # rings, command tables, PRDs and buffers of up to a 32 MiB transfer
SECTOR = 512


class GuestDisk:
    """What a guest's block layer asks of its disk driver, in 512-byte sectors. Each call is a generator for the
    machine's simulation; it returns whether every command the driver sent succeeded. `discard` returns the
    number of commands sent (0: the driver sends none, e.g. the device does not advertise discard)."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def write(self, sector: int, data: bytes) -> Generator[Any, Any, bool]:
        return (yield from self.driver.write(sector, data)).ok

    def read(self, sector: int, count: int) -> Generator[Any, Any, bytes | None]:
        out = yield from self.driver.read(sector, count)
        return out.data_in if out.ok else None

    def flush(self) -> Generator[Any, Any, bool]:
        return (yield from self.driver.flush()).ok

    def discard(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, tuple[int, bool]]:
        outcomes = yield from self.driver.trim(ranges)
        return len(outcomes), all(o.ok for o in outcomes)


class AhciDisk(GuestDisk):
    """libata on AHCI queues reads and writes with NCQ (READ/WRITE FPDMA QUEUED), as Linux does."""

    def write(self, sector: int, data: bytes) -> Generator[Any, Any, bool]:
        return (yield from self.driver.write(sector, data, ncq=True)).ok

    def read(self, sector: int, count: int) -> Generator[Any, Any, bytes | None]:
        out = yield from self.driver.read(sector, count, ncq=True)
        return out.data_in if out.ok else None


class VirtioBlkDisk(GuestDisk):
    def discard(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, tuple[int, bool]]:
        outcomes = yield from self.driver.discard(ranges)
        return len(outcomes), all(o.ok for o in outcomes)


@dataclass
class Machine:
    """One guest: its simulation, RAM, the controller's guest driver (for raw commands) and `disk`."""

    controller: str
    profile: str
    sim: Simulation
    mem: GuestMemory
    driver: PiixDriver | AhciDriver | VirtioBlkDriver
    disk: GuestDisk

    def run(self, gen: Generator[Any, Any, Any]) -> Any:
        """Run one guest-driver generator to its end; its return value."""
        return self.sim.run(until=self.sim.process(gen))

    def close(self) -> None:
        self.mem.close()


def build(controller: str, drive, profile_name: str, *, timing: LatencyModel | None = None) -> Machine:
    """A booted guest with `drive` behind `controller` as profile `profile_name` describes the device; the
    driver has probed it (IDENTIFY / feature negotiation) and is ready. UsageError for an unknown controller or
    profile, or a device the driver will not take."""
    get_profile(profile_name)
    sim = Simulation()
    mem = GuestMemory(GUEST_RAM)
    irq = InterruptLine(sim, controller)
    try:
        if controller == "virtio-blk":
            machine = _virtio_blk(controller, drive, profile_name, sim, mem, irq, timing)
        elif controller in ("ide", "ahci"):
            machine = _ata(controller, drive, profile_name, sim, mem, irq, timing)
        else:
            raise UsageError(f"controller '{controller}': known controllers are {', '.join(CONTROLLERS)}")
    except BaseException:
        mem.close()
        raise
    return machine


def _ata(controller: str, drive, profile_name: str, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
         timing: LatencyModel | None) -> Machine:
    profile = get_profile(profile_name)
    backend = drive.backend
    rzat = read_zeroes_after_trim(drive.options.discard, backend.limits.discard_alignment, backend.supports_discard)
    device = AtaDevice(drive, profile.ata_config(drive.capacity // SECTOR, controller, read_zeroes_after_trim=rzat))
    if controller == "ahci":
        hba = AhciHba(sim, mem, irq, [device], timing=timing, config=profile.ahci_config())
        driver = AhciDriver(sim, mem, hba, irq)
        if not sim.run(until=sim.process(driver.start(0))):
            raise UsageError("the AHCI port did not come up")
        return Machine(controller, profile_name, sim, mem, driver, AhciDisk(driver))
    driver = PiixDriver(IdeChannel(sim, mem, irq, (device, None), timing), mem)
    return Machine(controller, profile_name, sim, mem, driver, GuestDisk(driver))


def _virtio_blk(controller: str, drive, profile_name: str, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
                timing: LatencyModel | None) -> Machine:
    read_only = drive.options.read_only or drive.backend.read_only
    device = VirtioBlkDevice(drive, virtio_blk_config(profile_name, drive.capacity // SECTOR, read_only=read_only))
    transport = VirtioPciTransport(sim, mem, irq, device, timing=timing, config=virtio_pci_config(profile_name))
    driver = VirtioBlkDriver(sim, mem, transport, irq)
    if not sim.run(until=sim.process(driver.probe())):
        raise UsageError("the virtio-blk device refused the driver's features")
    return Machine(controller, profile_name, sim, mem, driver, VirtioBlkDisk(driver))
