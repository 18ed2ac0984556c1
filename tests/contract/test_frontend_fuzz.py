"""The fuzz contract every front end keeps: random guest input gets the protocol's answer or an EmuError, never
another exception, and the device answers a plain read afterwards (after the recovery a guest driver would run).

One table of front ends, each with its raw guest input (tests/contract/frontend_inputs.py), sent by its Linux-style
driver on a `scenarios.machine` guest under a drawn profile: IDE (a command's task file, PIO or bus-master DMA),
AHCI (a command FIS and its PRDT), virtio-blk (descriptor chains and request headers), virtio-scsi (request headers
with LUN fields and CDBs). The front ends' own fuzz tests (tests/controllers/ata/test_ide.py, test_ahci.py,
test_ata_device.py, tests/controllers/virtio/test_virtio_ring_fuzz.py, test_virtio_scsi_fuzz.py,
tests/controllers/scsi/test_scsi_fuzz.py) check the exact answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from controllers.ata import layouts as ATA
from controllers.drivers.virtio_blk import header, segment
from controllers.ide import REG_CONTROL
from controllers.virtio import layouts as VIRTIO
from emu.block import Drive, DriveOptions
from emu.errors import EmuError
from images import create_image, open_image
from scenarios.machine import CONTROLLERS, GUEST_RAM, Machine, build
from scenarios.profiles import NAMES
from tests.contract.frontend_inputs import (
    BLK_DATA_IN,
    BLK_TYPES,
    CHAIN_HEADS,
    DATA_LENS,
    LUN_FIELDS,
    blk_headers,
    blk_sectors,
    blk_segments,
    descriptor_tables,
    h2d_fises,
    prd_tables,
    scsi_cdbs,
)
from tests.support import time_limit

DISK = 1 << 20
SECTORS = DISK // 512
SCRATCH = GUEST_RAM - (1 << 20)     # far above what the drivers allocate (first fit from the bottom)
FILL = bytes((i * 13 + 1) & 0xFF or 1 for i in range(DISK))
IDE_TIMEOUT = 0.001                 # simulated seconds: ata_piix polls BSY every microsecond until its timer runs out

data_phase = st.tuples(st.sampled_from(["none", "in", "out"]), st.sampled_from([512, 512, 1, 4096, 65536])
                       | st.integers(1, 70000))


def data_of(phase: tuple[str, int]) -> tuple[bytes | None, int]:
    """(data_out, data_in_len) of a drawn data phase: one direction or none, as a driver sends a command."""
    direction, length = phase
    return (FILL[:length] if direction == "out" else None), (length if direction == "in" else 0)


# -- each front end's raw path, its answer, and the recovery its guest driver runs ---------------------------------
def _ide_send(m: Machine, drawn) -> Generator[Any, Any, Any]:
    fis, phase, dma = drawn
    data_out, data_in_len = data_of(phase)
    m.driver.timeout = IDE_TIMEOUT
    return m.driver.raw(None, data_out, data_in_len, dma, fis=fis)


def _ide_recover(m: Machine) -> Generator[Any, Any, None]:
    """libata's ata_sff_softreset: SRST set, then cleared; the channel resets the devices."""
    channel = m.driver.channel
    channel.io_write(REG_CONTROL, ATA.CONTROL_SRST)
    yield m.sim.timeout(1e-5)
    channel.io_write(REG_CONTROL, 0)
    yield m.sim.timeout(0.01)


def _ahci_send(m: Machine, drawn) -> Generator[Any, Any, Any]:
    fis, prdt, phase = drawn
    data_out, data_in_len = data_of(phase)
    return m.driver.raw(None, data_out, data_in_len, fis=fis, prdt=prdt)


def _ata_answered(out) -> bool:
    """A status and an error register, BSY clear unless the command timer ran out."""
    return 0 <= out.status <= 0xFF and 0 <= out.error <= 0xFF and (out.timed_out or not out.status & ATA.STATUS_BSY)


def _no_recovery(m: Machine) -> Generator[Any, Any, None]:
    """The driver recovers on its own (AHCI: ahci_port_check_error after every failed command)."""
    yield m.sim.timeout(0)


def _blk_send(m: Machine, drawn) -> Generator[Any, Any, Any]:
    if drawn[0] == "chain":
        _, table, head, fill = drawn
        m.mem.write(SCRATCH, fill + bytes(32 - len(fill)))
        return m.driver.pci.raw_chain(0, table, head=head)
    _, type_, sector, ioprio, segs, extra, data_in_len = drawn
    payload = b"".join(segment(s, n, f) for s, n, f in segs) + extra
    return m.driver.raw(header(type_, sector, ioprio), [payload], data_in_len)


def _blk_answered(out) -> bool:
    """Completed with a used length (a request also with its status byte), or the device broke (NEEDS_RESET)."""
    if out.broken:
        return not out.completed
    status = getattr(out, "status", 0)      # a raw chain has no status byte the driver knows of
    return out.completed and status in (VIRTIO.BLK_S_OK, VIRTIO.BLK_S_IOERR, VIRTIO.BLK_S_UNSUPP)


def _virtio_recover(m: Machine) -> Generator[Any, Any, None]:
    """A device reset and the probe again: a guest's recovery after NEEDS_RESET, harmless otherwise."""
    yield from m.driver.pci.reset()
    assert (yield from m.driver.probe())


def _scsi_send(m: Machine, drawn) -> Generator[Any, Any, Any]:
    lun, cdb, out_len, in_len = drawn
    req = VIRTIO.SCSI_CMD_REQ_FAST.pack(lun, 1, 0, 0, 0) + cdb[:32].ljust(32, b"\0")
    return m.driver.raw(req, [FILL[:out_len]], in_len)


def _scsi_answered(out) -> bool:
    """A virtio response, and with response OK a SAM status (GOOD, or CHECK CONDITION with sense); or broken."""
    if out.broken:
        return out.response is None
    if out.response != VIRTIO.SCSI_S_OK:
        return out.response is not None and 0 <= out.response <= 0xFF
    return out.status == 0 or (out.status == 2 and out.sense_code is not None)


@dataclass(frozen=True)
class FuzzedFrontEnd:
    inputs: st.SearchStrategy
    send: Callable[[Machine, Any], Generator[Any, Any, Any]]
    answered: Callable[[Any], bool]
    recover: Callable[[Machine], Generator[Any, Any, None]]


FRONT_ENDS = {
    "ide": FuzzedFrontEnd(st.tuples(h2d_fises(), data_phase, st.sampled_from([None, True, False])), _ide_send,
                          _ata_answered, _ide_recover),
    "ahci": FuzzedFrontEnd(st.tuples(h2d_fises(), prd_tables(GUEST_RAM, SCRATCH), data_phase), _ahci_send,
                           _ata_answered, _no_recovery),
    "virtio-blk": FuzzedFrontEnd(
        st.tuples(st.just("chain"), descriptor_tables(GUEST_RAM, SCRATCH), CHAIN_HEADS, blk_headers(SECTORS))
        | st.tuples(st.just("request"), BLK_TYPES, blk_sectors(SECTORS), st.integers(0, 2**32 - 1),
                    blk_segments(SECTORS), st.binary(max_size=20), BLK_DATA_IN),
        _blk_send, _blk_answered, _virtio_recover),
    "virtio-scsi": FuzzedFrontEnd(
        st.tuples(LUN_FIELDS, scsi_cdbs(SECTORS), DATA_LENS, DATA_LENS).map(
            lambda t: (t[0], t[1], t[2], 0) if t[2] else t),         # one data direction, or none
        _scsi_send, _scsi_answered, _virtio_recover),
}
assert set(FRONT_ENDS) == set(CONTROLLERS), "a controller without a fuzzed front end"


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_random_guest_input_gets_a_protocol_answer_or_an_emu_error(controller):
    front = FRONT_ENDS[controller]

    @settings(max_examples=60, deadline=None)
    @given(profile=st.sampled_from(NAMES), drawn=front.inputs)
    def check(profile, drawn):
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/disk.raw"
            create_image(path, "raw", DISK)
            drive = Drive(open_image(path, "raw"), DriveOptions(discard="unmap"))
            assert drive.write(0, FILL).ok
            machine = build(controller, drive, profile)
            try:
                with time_limit(10):
                    try:
                        out = machine.run(front.send(machine, drawn))
                    except EmuError as exc:             # a deliberate failure is an answer too
                        event(f"{profile}: {type(exc).__name__}")
                    else:
                        assert front.answered(out), out
                        event(f"{profile}: answered")
                    machine.run(front.recover(machine))
                    assert machine.run(machine.disk.read(0, 1)) is not None, "the device no longer answers"
            finally:
                machine.close()
                drive.close()

    check()
