"""The front-end contract every controller keeps, under the qemu-7.2 and strict profiles, through its guest driver.

One table of controllers drives it: the last LBA can be written and read back; the next one fails with the
protocol's error (ATA: ERR with ABRT under QEMU, IDNF under ATA/ACS; virtio-blk: IOERR; SCSI: CHECK CONDITION,
ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE) and leaves the image file and its host allocation as they
were; a discard the guest sends reaches the Drive and frees host space on raw with discard=unmap.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import pytest

from controllers.ata import layouts as ATA
from controllers.scsi import layouts as SCSI
from controllers.scsi import sense
from controllers.virtio import layouts as VIRTIO
from emu.block import Drive, DriveOptions, Op
from emu.sim import Monitor
from emu.trace import Act
from images import create_image, open_image
from scenarios.machine import CONTROLLERS, Machine, build
from tests.contract.formats import host_bytes
from tests.support import MiB, digest

SIZE = 16 * MiB
SECTORS = SIZE // 512
PROFILES = ("qemu-7.2", "strict")


def rw16(opcode: int, lba: int, blocks: int) -> bytes:
    return SCSI.RW_16.build(dict(opcode=opcode, protect=0, dpo=False, fua=False, rarc=False, lba=lba,
                                 transfer_length=blocks, group=0, control=0))


@dataclass(frozen=True)
class FrontEnd:
    """How a controller's guest driver reads and writes sectors, and the answer its protocol gives.

    read(machine, lba, count) / write(machine, lba, data): generators returning the driver's outcome.
    answer(outcome): the protocol's status, comparable with `out_of_range[profile]`, what a request past the
    last LBA must get."""

    controller: str
    read: Callable[[Machine, int, int], Generator[Any, Any, Any]]
    write: Callable[[Machine, int, bytes], Generator[Any, Any, Any]]
    ok: Callable[[Any], bool]
    data: Callable[[Any], bytes]
    answer: Callable[[Any], Any]
    out_of_range: dict[str, Any]


def _ata(controller: str) -> FrontEnd:
    # QEMU's ide_sect_range_ok failures end in ide_rw_error -> ABRT; ATA/ACS-3 6.3.6: IDNF for an address
    # outside the user-accessible range
    return FrontEnd(controller, lambda m, lba, n: m.driver.read(lba, n), lambda m, lba, data: m.driver.write(lba, data),
                    lambda out: out.ok and not out.status & ATA.STATUS_ERR, lambda out: out.data_in,
                    lambda out: (out.status & ATA.STATUS_ERR, out.error),
                    {"qemu-7.2": (ATA.STATUS_ERR, ATA.ERROR_ABRT), "strict": (ATA.STATUS_ERR, ATA.ERROR_IDNF)})


FRONT_ENDS = {fe.controller: fe for fe in (
    _ata("ide"),
    _ata("ahci"),
    # virtio 1.2 5.2.6.1: a request past the capacity is answered VIRTIO_BLK_S_IOERR
    FrontEnd("virtio-blk", lambda m, lba, n: m.driver.read(lba, n), lambda m, lba, data: m.driver.write(lba, data),
             lambda out: out.ok, lambda out: out.data_in, lambda out: out.status,
             {profile: VIRTIO.BLK_S_IOERR for profile in PROFILES}),
    # SBC-3 4.5: LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h), sense key ILLEGAL REQUEST
    FrontEnd("virtio-scsi", lambda m, lba, n: m.driver.command(0, rw16(SCSI.Op.READ_16, lba, n), b"", n * 512),
             lambda m, lba, data: m.driver.command(0, rw16(SCSI.Op.WRITE_16, lba, len(data) // 512), data),
             lambda out: out.ok, lambda out: out.data_in,
             lambda out: (out.response, out.status, out.sense_code),
             {profile: (VIRTIO.SCSI_S_OK, SCSI.CHECK_CONDITION, sense.LBA_OUT_OF_RANGE) for profile in PROFILES}),
)}
assert set(FRONT_ENDS) == set(CONTROLLERS), "a controller without a front-end contract entry"


@pytest.fixture(params=[(c, p) for c in CONTROLLERS for p in PROFILES], ids=lambda cp: f"{cp[0]}-{cp[1]}")
def rig(request, tmp_path):
    """A booted guest (it has read sector 0, as any OS does; behind virtio-scsi that probe consumes the power-on
    unit attention) with a raw disk under discard=unmap, the Drive reporting to a Monitor."""
    controller, profile = request.param
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", SIZE)
    monitor = Monitor()
    drive = Drive(open_image(path, "raw"), DriveOptions(discard="unmap"), monitor)
    machine = build(controller, drive, profile)
    try:
        assert machine.run(machine.disk.read(0, 1)) == bytes(512)
        yield FRONT_ENDS[controller], profile, machine, monitor, path
    finally:
        machine.close()
        drive.close()


def test_the_last_lba_is_written_and_read_back(rig):
    front, _profile, machine, _monitor, _path = rig
    data = bytes(range(256)) * 2
    assert front.ok(machine.run(front.write(machine, SECTORS - 1, data)))
    out = machine.run(front.read(machine, SECTORS - 1, 1))
    assert front.ok(out) and front.data(out) == data


def test_the_next_lba_fails_with_the_protocol_error_and_touches_nothing(rig):
    front, profile, machine, _monitor, path = rig
    last = b"\xa5" * 512
    assert front.ok(machine.run(front.write(machine, SECTORS - 1, last)))
    assert machine.run(machine.disk.flush())
    before = (digest(path), host_bytes(path))
    for request in (front.write(machine, SECTORS, b"\x5a" * 512), front.write(machine, SECTORS - 1, b"\x5a" * 1024),
                    front.read(machine, SECTORS, 1), front.read(machine, SECTORS - 1, 2)):
        out = machine.run(request)
        assert not front.ok(out) and front.answer(out) == front.out_of_range[profile]
    assert machine.run(machine.disk.flush())
    assert (digest(path), host_bytes(path)) == before, "a refused request changed the image"
    out = machine.run(front.read(machine, SECTORS - 1, 1))       # the device still answers
    assert front.ok(out) and front.data(out) == last


def test_a_guest_discard_reaches_the_drive_and_frees_host_space(rig):
    _front, _profile, machine, monitor, path = rig
    first, count = 2048, 2048                                    # 1 MiB at 1 MiB
    assert machine.run(machine.disk.write(first, b"\x11" * (count * 512)))
    assert machine.run(machine.disk.flush())
    before, seen = host_bytes(path), len(monitor.requests)
    sent, ok = machine.run(machine.disk.discard([(first, count)]))
    assert sent >= 1 and ok
    discards = list(monitor.traces(Op.DISCARD, since=seen))
    assert discards, f"{machine.disk.discard_command} never reached the Drive"
    assert sum(t.length for t in discards) == count * 512
    assert all(first * 512 <= t.offset and t.offset + t.length <= (first + count) * 512 for t in discards)
    assert all(t.has(Act.PUNCHED) for t in discards)
    assert before - host_bytes(path) == count * 512
    assert machine.run(machine.disk.read(first, 8)) == bytes(4096)
