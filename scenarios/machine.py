"""A simulated guest machine: one disk behind a controller chosen by name, configured from a hypervisor profile,
and the guest driver a Linux guest would load for it, configured from a guest profile.

Each controller is one entry of `TABLE`: how its emulated function is built around a Drive, which Linux driver
takes it, and the GuestDisk over that driver; a new controller is a new entry.

`emu replay` hands the driver raw commands; `emu demo` and the benchmarks use `Machine.disk`, the same
sector-level operations (write, read, flush, discard) whatever the controller, so a table can compare IDE, AHCI,
virtio-blk and virtio-scsi on equal terms. Behind virtio-scsi, `disk` is Linux's sd layer, which probes the
logical unit (consuming its power-on unit attention) the first time it is used; raw replay commands meet the
disk as a freshly booted guest's first command would. The Drive comes from the caller (scenarios never open
images themselves); its options and its backend's discard facts decide what the strict profiles advertise.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from controllers.ahci import AhciHba
from controllers.ata.device import AtaDevice
from controllers.drivers.ahci import AhciDriver
from controllers.drivers.ata_piix import PiixDriver
from controllers.drivers.blk_layer import UINT_MAX, DiscardLimits, QueueLimits
from controllers.drivers.config import GuestConfig
from controllers.drivers.libata import queue_limits as libata_queue_limits
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
from scenarios.profiles import DEFAULT_GUEST, check_name, guest_config
from scenarios.profiles.ata import ahci_config, ata_config
from scenarios.profiles.scsi import scsi_disk_config
from scenarios.profiles.virtio_blk import virtio_blk_config, virtio_pci_config
from scenarios.profiles.virtio_scsi import virtio_scsi_config

GUEST_RAM = 256 << 20     # rings, command tables, PRDs and buffers of up to a 32 MiB transfer
SECTOR = 512


class GuestDisk:
    """What a guest's block layer asks of its disk driver, in 512-byte sectors. Each call is a generator for the
    machine's simulation; it returns whether every command the driver sent succeeded. `discard` returns the
    number of commands sent (0: the driver sends none, e.g. the device does not advertise discard).
    `discard_command` names what a discard becomes on the wire. `queue_limits()` gives the queue the driver set up
    (what /sys/block/X/queue shows); `write_zeroes` exists only where the queue has WRITE ZEROES."""

    discard_command = "DSM TRIM"        # libata's translation of WRITE SAME(16) UNMAP (libata.py)
    sata_port = False                   # ata_piix: a parallel ATA port (ATA_CBL_PATA*)

    def __init__(self, driver, guest: GuestConfig) -> None:
        self.driver = driver
        self.guest = guest

    def queue_limits(self) -> Generator[Any, Any, QueueLimits]:
        """libata's queue over IDE: after IDENTIFY, as ata_dev_configure and sd set it up."""
        yield from self._identified()
        return libata_queue_limits(self._identity(), self.guest.libata, self.guest.block, sata_port=self.sata_port,
                                   max_segments=self._max_segments())

    def _identified(self) -> Generator[Any, Any, None]:
        if self.driver.info is None:
            yield from self.driver.identify()

    def _identity(self) -> dict:
        return self.driver.info

    def _max_segments(self) -> int:
        return self.guest.libata.piix_max_segments

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

    sata_port = True                    # ahci sets ATA_CBL_SATA

    def _identified(self) -> Generator[Any, Any, None]:
        if self.driver.identity is None:
            yield from self.driver.identify()

    def _identity(self) -> dict:
        return self.driver.identity

    def _max_segments(self) -> int:
        return self.guest.libata.ahci_max_segments

    def write(self, sector: int, data: bytes) -> Generator[Any, Any, bool]:
        return (yield from self.driver.write(sector, data, ncq=True)).ok

    def read(self, sector: int, count: int) -> Generator[Any, Any, bytes | None]:
        out = yield from self.driver.read(sector, count, ncq=True)
        return out.data_in if out.ok else None


class VirtioBlkDisk(GuestDisk):
    discard_command = "DISCARD"

    def queue_limits(self) -> Generator[Any, Any, QueueLimits]:
        """virtblk_probe: max_hw_sectors -1U, max_segments from seg_max, segments of size_max (else -1U), discard
        and WRITE ZEROES from the negotiated features and the configuration space."""
        yield from ()
        lim = self.driver.limits
        discard = None
        if lim.max_discard_sectors:
            discard = DiscardLimits(lim.max_discard_sectors, lim.discard_granularity,
                                    max_segments=lim.max_discard_seg, logical_block=lim.blk_size)
        return QueueLimits(max_sectors=self.guest.block.max_sectors, max_hw_sectors=UINT_MAX,
                           max_segments=lim.seg_max, max_segment_size=UINT_MAX,
                           max_write_zeroes=lim.max_write_zeroes_sectors, discard=discard,
                           logical_block=lim.blk_size)

    def write_zeroes(self, sector: int, count: int, *, unmap: bool) -> Generator[Any, Any, bool]:
        outcomes = yield from self.driver.write_zeroes(sector, count, unmap=unmap)
        return all(o.ok for o in outcomes)

    def _send_discards(self, ranges: Sequence[tuple[int, int]]) -> Generator[Any, Any, list]:
        return (yield from self.driver.discard(ranges))


class SdGuestDisk(GuestDisk):
    """Linux sd over virtio_scsi on LUN 0: probed on first use, then READ/WRITE(10/16), SYNCHRONIZE CACHE and
    the discard commands of the provisioning mode sd chose (UNMAP, WRITE SAME(16/10) with UNMAP, or none)."""

    def __init__(self, driver: VirtioScsiDriver, guest: GuestConfig) -> None:
        super().__init__(driver, guest)
        self.sd = SdDriver(lambda cdb, data_out, data_in_len: driver.command(0, cdb, data_out, data_in_len),
                           guest=guest, max_hw_sectors=driver.limits.max_sectors)

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

    def queue_limits(self) -> Generator[Any, Any, QueueLimits]:
        """sd's queue over virtio_scsi: the host's seg_max entries of the SCSI default segment size."""
        yield from self._ready()
        return self.sd.queue_limits(self.driver.limits.seg_max, self.guest.block.max_segment_size)

    def write_zeroes(self, sector: int, count: int, *, unmap: bool) -> Generator[Any, Any, bool]:
        yield from self._ready()
        outcomes = yield from self.sd.write_zeroes(sector, count, unmap=unmap)
        return all(o.ok for o in outcomes)


Driver = PiixDriver | AhciDriver | VirtioBlkDriver | VirtioScsiDriver
Function = IdeChannel | AhciHba | VirtioPciTransport


@dataclass(frozen=True)
class Parts:
    """What every controller is built from: the guest's simulation, RAM and interrupt line, the drive, the
    hypervisor profile's name, the guest drivers' configuration and the device timing."""

    sim: Simulation
    mem: GuestMemory
    irq: InterruptLine
    drive: Drive
    profile: str
    guest: GuestConfig
    timing: LatencyModel | None

    def bring_up(self, step: Generator[Any, Any, bool], refused: str) -> None:
        """Run a driver's bring-up (port start, feature negotiation); UsageError `refused` when it fails."""
        if not self.sim.run(until=self.sim.process(step)):
            raise UsageError(refused)


@dataclass(frozen=True)
class Controller:
    """One controller: the emulated function a Drive sits behind (device and transport, as the profile describes
    them), the Linux driver on it, brought up, and the GuestDisk over that driver."""

    function: Callable[[Parts], Function]
    driver: Callable[[Parts, Any], Driver]
    disk: Callable[[Parts, Any], GuestDisk]


def _ata_device(parts: Parts, controller: str) -> AtaDevice:
    drive = parts.drive
    return AtaDevice(drive, ata_config(parts.profile, drive.capacity // SECTOR, controller,
                                       read_zeroes_after_trim=drive.zeroes_after_discard(SECTOR)))


def _ide_channel(parts: Parts) -> IdeChannel:
    return IdeChannel(parts.sim, parts.mem, parts.irq, (_ata_device(parts, "ide"), None), parts.timing)


def _ahci_hba(parts: Parts) -> AhciHba:
    return AhciHba(parts.sim, parts.mem, parts.irq, [_ata_device(parts, "ahci")], timing=parts.timing,
                   config=ahci_config(parts.profile))


def _virtio_pci(parts: Parts, device: VirtioBlkDevice | VirtioScsiDevice) -> VirtioPciTransport:
    return VirtioPciTransport(parts.sim, parts.mem, parts.irq, device, timing=parts.timing,
                              config=virtio_pci_config(parts.profile))


def _virtio_blk_function(parts: Parts) -> VirtioPciTransport:
    drive = parts.drive
    config = virtio_blk_config(parts.profile, drive.capacity // SECTOR, read_only=drive.read_only)
    return _virtio_pci(parts, VirtioBlkDevice(drive, config))


def _virtio_scsi_function(parts: Parts) -> VirtioPciTransport:
    drive = parts.drive
    config = scsi_disk_config(parts.profile, drive.capacity // SECTOR, SECTOR, drive.read_only,
                              read_zeroes_after_unmap=drive.zeroes_after_discard(SECTOR))
    return _virtio_pci(parts, VirtioScsiDevice({0: ScsiDisk(drive, config)}, virtio_scsi_config(parts.profile)))


def _piix_driver(parts: Parts, channel: IdeChannel) -> PiixDriver:
    return PiixDriver(channel, parts.mem, guest=parts.guest)


def _ahci_driver(parts: Parts, hba: AhciHba) -> AhciDriver:
    driver = AhciDriver(parts.sim, parts.mem, hba, parts.irq, guest=parts.guest)
    parts.bring_up(driver.start(0), "the AHCI port did not come up")
    return driver


def _virtio_blk_driver(parts: Parts, transport: VirtioPciTransport) -> VirtioBlkDriver:
    driver = VirtioBlkDriver(parts.sim, parts.mem, transport, parts.irq, guest=parts.guest,
                             notify_multiplier=transport.config.notify_off_multiplier)
    parts.bring_up(driver.probe(), "the virtio-blk device refused the driver's features")
    return driver


def _virtio_scsi_driver(parts: Parts, transport: VirtioPciTransport) -> VirtioScsiDriver:
    driver = VirtioScsiDriver(parts.sim, parts.mem, transport, parts.irq, guest=parts.guest,
                              notify_multiplier=transport.config.notify_off_multiplier)
    parts.bring_up(driver.probe(), "the virtio-scsi device refused the driver's features")
    return driver


TABLE: dict[str, Controller] = {
    "ide": Controller(_ide_channel, _piix_driver, lambda parts, driver: GuestDisk(driver, parts.guest)),
    "ahci": Controller(_ahci_hba, _ahci_driver, lambda parts, driver: AhciDisk(driver, parts.guest)),
    "virtio-blk": Controller(_virtio_blk_function, _virtio_blk_driver,
                             lambda parts, driver: VirtioBlkDisk(driver, parts.guest)),
    "virtio-scsi": Controller(_virtio_scsi_function, _virtio_scsi_driver,
                              lambda parts, driver: SdGuestDisk(driver, parts.guest)),
}
CONTROLLERS: tuple[str, ...] = tuple(TABLE)


@dataclass
class Machine:
    """One guest: its simulation, RAM, the controller's guest driver (for raw commands) and `disk`."""

    controller: str
    profile: str
    sim: Simulation
    mem: GuestMemory
    driver: Driver
    disk: GuestDisk
    sectors: int = 0                    # the disk's size as the guest sees it, 512-byte sectors

    def run(self, gen: Generator[Any, Any, Any]) -> Any:
        """Run one guest-driver generator to its end; its return value."""
        return self.sim.run(until=self.sim.process(gen))

    def close(self) -> None:
        self.mem.close()


def build(controller: str, drive: Drive, profile_name: str, *, timing: LatencyModel | None = None,
          guest: str = DEFAULT_GUEST) -> Machine:
    """A booted guest with `drive` behind `controller` as hypervisor profile `profile_name` describes the device,
    its drivers configured by guest profile `guest`; the driver has probed the device (IDENTIFY / feature
    negotiation) and is ready. UsageError for an unknown controller or profile, or a device the driver will not
    take."""
    check_name(profile_name)
    config = guest_config(guest)
    entry = TABLE.get(controller)
    if entry is None:
        raise UsageError(f"controller '{controller}': known controllers are {', '.join(CONTROLLERS)}")
    sim = Simulation()
    mem = GuestMemory(GUEST_RAM)
    parts = Parts(sim, mem, InterruptLine(sim, controller), drive, profile_name, config, timing)
    try:
        driver = entry.driver(parts, entry.function(parts))
        return Machine(controller, profile_name, sim, mem, driver, entry.disk(parts, driver), drive.capacity // SECTOR)
    except BaseException:
        mem.close()
        raise
