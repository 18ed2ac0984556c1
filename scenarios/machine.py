"""A simulated guest machine: one disk behind a controller chosen by name, configured from a profile, and the
guest driver a Linux guest would load for it.

`emu replay` hands the driver raw commands; `emu demo` and the benchmarks use `Machine.disk`, the same
sector-level operations (write, read, flush, discard) whatever the controller, so a table can compare IDE, AHCI,
virtio-blk and virtio-scsi on equal terms. Behind virtio-scsi, `disk` is Linux's sd layer, which probes the
logical unit (consuming its power-on unit attention) the first time it is used; raw replay commands meet the
disk as a freshly booted guest's first command would. The Drive comes from the caller (scenarios never open
images themselves); its options and its backend's discard facts decide what the strict profiles advertise.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from controllers.ahci import AhciHba
from controllers.ata.device import AtaDevice
from controllers.drivers.ahci import AhciDriver
from controllers.drivers.ata_piix import PiixDriver
from controllers.drivers.sd import ProvisioningMode, SdDriver, SdError
from controllers.drivers.virtio_blk import VirtioBlkDriver
from controllers.drivers.virtio_scsi import VirtioScsiDriver
from controllers.ide import IdeChannel
from controllers.scsi.disk import ScsiDisk
from controllers.virtio.blk import VirtioBlkDevice
from controllers.virtio.pci import VirtioPciTransport
from controllers.virtio.scsi import VirtioScsiDevice
from emu.block import Drive
from emu.errors import UsageError
from emu.memory import GuestMemory
from emu.sim import InterruptLine, LatencyModel, Simulation
from scenarios.profiles import get_profile
from scenarios.profiles.scsi import scsi_disk_config
from scenarios.profiles.virtio_blk import virtio_blk_config, virtio_pci_config
from scenarios.profiles.virtio_scsi import virtio_scsi_config

CONTROLLERS = ("ide", "ahci", "virtio-blk", "virtio-scsi")
GUEST_RAM = 256 << 20     # rings, command tables, PRDs and buffers of up to a 32 MiB transfer
SECTOR = 512


class GuestDisk:
    """What a guest's block layer asks of its disk driver, in 512-byte sectors. Each call is a generator for the
    machine's simulation; it returns whether every command the driver sent succeeded. `discard` returns the
    number of commands sent (0: the driver sends none, e.g. the device does not advertise discard).
    `discard_command` names what a discard becomes on the wire."""

    discard_command = "DSM TRIM"        # libata's translation of WRITE SAME(16) UNMAP (libata.py)

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
        outcomes = yield from self._send_discards(ranges)
        return len(outcomes), all(o.ok for o in outcomes)

    def _send_discards(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list]:
        """The driver's discard path; one outcome per command it sent."""
        return (yield from self.driver.trim(ranges))


class AhciDisk(GuestDisk):
    """libata on AHCI queues reads and writes with NCQ (READ/WRITE FPDMA QUEUED), as Linux does."""

    def write(self, sector: int, data: bytes) -> Generator[Any, Any, bool]:
        return (yield from self.driver.write(sector, data, ncq=True)).ok

    def read(self, sector: int, count: int) -> Generator[Any, Any, bytes | None]:
        out = yield from self.driver.read(sector, count, ncq=True)
        return out.data_in if out.ok else None


class VirtioBlkDisk(GuestDisk):
    discard_command = "DISCARD"

    def _send_discards(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list]:
        return (yield from self.driver.discard(ranges))


class SdGuestDisk(GuestDisk):
    """Linux sd over virtio_scsi on LUN 0: probed on first use, then READ/WRITE(10/16), SYNCHRONIZE CACHE and
    the discard commands of the provisioning mode sd chose (UNMAP, WRITE SAME(16/10) with UNMAP, or none)."""

    def __init__(self, driver: VirtioScsiDriver) -> None:
        super().__init__(driver)
        self.sd = SdDriver(lambda cdb, data_out, data_in_len: driver.command(0, cdb, data_out, data_in_len),
                           max_hw_sectors=driver.limits.max_sectors)

    @property
    def discard_command(self) -> str:
        """The command of the provisioning mode sd chose (known once it has probed the disk)."""
        mode = self.sd.disk.mode if self.sd.disk is not None else None
        return {ProvisioningMode.UNMAP: "UNMAP", ProvisioningMode.WS16: "WRITE SAME(16)",
                ProvisioningMode.WS10: "WRITE SAME(10)"}.get(mode, "no command")

    def _ready(self) -> Generator[Any, Any, None]:
        if self.sd.disk is None:
            try:
                yield from self.sd.probe()
            except SdError as exc:
                raise UsageError(f"sd could not attach the virtio-scsi disk: {exc}") from None

    def write(self, sector: int, data: bytes) -> Generator[Any, Any, bool]:
        yield from self._ready()
        return (yield from self.sd.write(sector, data))

    def read(self, sector: int, count: int) -> Generator[Any, Any, bytes | None]:
        yield from self._ready()
        ok, data = yield from self.sd.read(sector, count)
        return data if ok else None

    def flush(self) -> Generator[Any, Any, bool]:
        yield from self._ready()
        return (yield from self.sd.flush())

    def _send_discards(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list]:
        yield from self._ready()
        return (yield from self.sd.discard(ranges))


@dataclass
class Machine:
    """One guest: its simulation, RAM, the controller's guest driver (for raw commands) and `disk`."""

    controller: str
    profile: str
    sim: Simulation
    mem: GuestMemory
    driver: PiixDriver | AhciDriver | VirtioBlkDriver | VirtioScsiDriver
    disk: GuestDisk

    def run(self, gen: Generator[Any, Any, Any]) -> Any:
        """Run one guest-driver generator to its end; its return value."""
        return self.sim.run(until=self.sim.process(gen))

    def close(self) -> None:
        self.mem.close()


def build(controller: str, drive: Drive, profile_name: str, *, timing: LatencyModel | None = None) -> Machine:
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
        elif controller == "virtio-scsi":
            machine = _virtio_scsi(controller, drive, profile_name, sim, mem, irq, timing)
        elif controller in ("ide", "ahci"):
            machine = _ata(controller, drive, profile_name, sim, mem, irq, timing)
        else:
            raise UsageError(f"controller '{controller}': known controllers are {', '.join(CONTROLLERS)}")
    except BaseException:
        mem.close()
        raise
    return machine


def _ata(controller: str, drive: Drive, profile_name: str, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
         timing: LatencyModel | None) -> Machine:
    profile = get_profile(profile_name)
    rzat = drive.zeroes_after_discard(SECTOR)
    device = AtaDevice(drive, profile.ata_config(drive.capacity // SECTOR, controller, read_zeroes_after_trim=rzat))
    if controller == "ahci":
        hba = AhciHba(sim, mem, irq, [device], timing=timing, config=profile.ahci_config())
        driver = AhciDriver(sim, mem, hba, irq)
        if not sim.run(until=sim.process(driver.start(0))):
            raise UsageError("the AHCI port did not come up")
        return Machine(controller, profile_name, sim, mem, driver, AhciDisk(driver))
    driver = PiixDriver(IdeChannel(sim, mem, irq, (device, None), timing), mem)
    return Machine(controller, profile_name, sim, mem, driver, GuestDisk(driver))


def _virtio_blk(controller: str, drive: Drive, profile_name: str, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
                timing: LatencyModel | None) -> Machine:
    device = VirtioBlkDevice(drive, virtio_blk_config(profile_name, drive.capacity // SECTOR,
                                                      read_only=drive.read_only))
    transport = VirtioPciTransport(sim, mem, irq, device, timing=timing, config=virtio_pci_config(profile_name))
    driver = VirtioBlkDriver(sim, mem, transport, irq)
    if not sim.run(until=sim.process(driver.probe())):
        raise UsageError("the virtio-blk device refused the driver's features")
    return Machine(controller, profile_name, sim, mem, driver, VirtioBlkDisk(driver))


def _virtio_scsi(controller: str, drive: Drive, profile_name: str, sim: Simulation, mem: GuestMemory, irq: InterruptLine,
                 timing: LatencyModel | None) -> Machine:
    config = scsi_disk_config(profile_name, drive.capacity // SECTOR, SECTOR, drive.read_only,
                              read_zeroes_after_unmap=drive.zeroes_after_discard(SECTOR))
    device = VirtioScsiDevice({0: ScsiDisk(drive, config)}, virtio_scsi_config(profile_name))
    transport = VirtioPciTransport(sim, mem, irq, device, timing=timing, config=virtio_pci_config(profile_name))
    driver = VirtioScsiDriver(sim, mem, transport, irq)
    if not sim.run(until=sim.process(driver.probe())):
        raise UsageError("the virtio-scsi device refused the driver's features")
    return Machine(controller, profile_name, sim, mem, driver, SdGuestDisk(driver))
