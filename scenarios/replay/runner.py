"""Sending a replay script through a guest machine: each line becomes one raw command of the machine's guest driver
(encoded into guest memory, registers and queues as Linux's driver lays it out), and each answer an outcome in the
script's terms.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from controllers.ata.device import AtaRegisters
from emu.errors import DriverLayoutError, UsageError
from scenarios.replay.script import FAMILY_OF, ScriptError, Step

if TYPE_CHECKING:
    from scenarios.machine import Machine


def _ata(machine: Machine, step: Step) -> dict:
    regs = AtaRegisters(**step.ata) if step.ata is not None else None
    extra = {"dma": step.dma} if machine.controller == "ide" else {}
    outcome = machine.run(machine.driver.raw(regs, step.data_out, step.data_in_len, fis=step.fis, **extra))
    result = {"status": outcome.status, "error": outcome.error, "data_in": outcome.data_in.hex()}
    if outcome.lba is not None:
        result["lba"] = outcome.lba
    return result


def _readable(step: Step) -> list[bytes]:
    """The device-readable buffers after the header: the line's data, if any."""
    return [step.data_out] if step.data_out else []


def _recovered(machine: Machine, request: Generator[Any, Any, Any]) -> Any:
    """Run a virtio request; a request that broke the device (NEEDS_RESET, QEMU's virtio_error) is reported as
    such, and the driver then resets and probes the device again, as a guest's recovery would."""
    outcome = machine.run(request)
    if outcome.broken and not machine.run(machine.driver.probe()):
        raise UsageError(f"the {machine.controller} device did not come back after a reset")
    return outcome


def _virtio_blk(machine: Machine, step: Step) -> dict:
    outcome = _recovered(machine, machine.driver.raw(step.header, _readable(step), step.data_in_len))
    return {"status": outcome.status, "used_len": outcome.used_len, "data_in": outcome.data_in.hex(),
            "broken": outcome.broken}


def _scsi(machine: Machine, step: Step) -> dict:
    """A CDB to a LUN of target 0, or a raw request header. Data-in is shown for a GOOD command only: after a
    failure the guest's buffer holds nothing the device promised."""
    driver = machine.driver
    if step.cdb is not None:
        request = driver.command(step.lun, step.cdb, step.data_out or b"", step.data_in_len)
    else:
        request = driver.raw(step.header, _readable(step), step.data_in_len)
    outcome = _recovered(machine, request)
    code = outcome.sense_code
    return {"response": outcome.response, "status": outcome.status,
            "data_in": outcome.data_in.hex() if outcome.ok else "", "residual": outcome.residual,
            "sense": None if code is None else {"key": code.key, "asc": code.asc, "ascq": code.ascq},
            "broken": outcome.broken}


# how each family's lines are sent (the families of scenarios.replay.script, by name)
SENDERS: dict[str, Callable[[Machine, Step], dict]] = {"ata": _ata, "virtio-blk": _virtio_blk, "scsi": _scsi}


def replay(machine: Machine, steps: Iterable[Step], where: str) -> Iterator[tuple[Step, dict]]:
    """Each step of script `where` sent in turn, with its outcome (its "line" first, values named as the script
    names them). Lazy: a caller shows or checks each outcome before the next command runs."""
    family = FAMILY_OF[machine.controller]
    send = SENDERS[family.name]
    for step in steps:
        try:
            outcome = send(machine, step)
        except DriverLayoutError as exc:    # the guest-driver model cannot send it (e.g. more PRDs than a table)
            raise ScriptError(f"{where}:{step.line}: {exc}") from None
        yield step, {"line": step.line, **family.with_names(outcome)}
