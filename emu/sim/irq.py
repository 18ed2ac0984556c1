"""Interrupt lines: how a device model tells a guest-driver model, in simulated time, that it is done.

A line is level-triggered, like INTx on PCI: the device raises it and keeps it raised until the driver
has acknowledged the cause (reads/clears the controller's status) and the device lowers it. A driver
process yields `wait()`; it resumes at the simulated instant the line is (or becomes) raised.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:
    from emu.sim.kernel import Simulation


class InterruptLine:
    """One level-triggered interrupt line between a device and a guest driver.

    `raises` counts low-to-high transitions: a raise on a line already raised is invisible to a
    level-triggered guest, so it neither counts nor wakes anyone again. `history` holds every
    transition as (time, level) for timeline assertions.
    """

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name
        self.raises = 0
        self.history: list[tuple[float, bool]] = []
        self._level = False
        self._waiters: list[simpy.Event] = []

    @property
    def level(self) -> bool:
        return self._level

    def raise_(self) -> None:
        """Assert the line and wake every waiter (their events fire now, with this line as value)."""
        if self._level:
            return
        self._level = True
        self.raises += 1
        self.history.append((self.sim.env.now, True))
        self._wake()

    def lower(self) -> None:
        """Deassert the line; the next `wait()` waits for the next raise. Woken waiters stay woken."""
        if not self._level:
            return
        self._level = False
        self.history.append((self.sim.env.now, False))

    def pulse(self) -> None:
        """An edge (MSI-like): wake the current waiters and count a raise, but leave the line low.

        On a line that is already raised it does nothing: no waiter can be pending there.
        """
        if self._level:
            return
        self.raise_()
        self.lower()

    def wait(self) -> simpy.Event:
        """An event that fires when the line is raised: at once if it is raised now, else at the next raise."""
        event = self.sim.env.event()
        if self._level:
            event.succeed(self)
        else:
            self._waiters.append(event)
        return event

    def wait_until(self, deadline: float) -> Generator[simpy.Event, Any, bool]:
        """A driver's wait with a command timer: sleep until the line is raised or simulated time `deadline`.
        False, without sleeping, once the deadline has passed (the command timed out)."""
        remaining = deadline - self.sim.now
        if remaining <= 0:
            return False
        yield self.sim.env.any_of([self.wait(), self.sim.timeout(remaining)])
        return True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.succeed(self)

    def __repr__(self) -> str:
        return f"InterruptLine({self.name!r}, {'raised' if self._level else 'low'}, raises={self.raises})"
