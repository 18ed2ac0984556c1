"""A device's clock: when the completion of a command it has already executed reaches the guest.

A controller runs every command on the Drive at once, so the image changes in submission order whatever the
timing; the clock only decides when the completion (status, FIS, used element, interrupt) is delivered: as
many simulated seconds later as the latency model says the command's block-layer requests take, in a SimPy
process per delivery, so deliveries overlap. Without a model the device is untimed and completes inside the
register write (doorbell) that started the command. A device reset drops what is still pending.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import simpy

    from emu.block.request import Completion
    from emu.sim.kernel import Simulation
    from emu.sim.timing import LatencyModel


class Delivery:
    """One completion waiting out its modelled time. It runs once: when its time comes, or earlier by
    `deliver()` (a bus master stopped mid-transfer drains it); never after `cancel()` or a reset of its clock."""

    __slots__ = ("_action", "_args", "_clock", "_epoch")

    def __init__(self, clock: DeviceClock, action: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._clock = clock
        self._epoch = clock.epoch
        self._action: Callable[..., Any] | None = action
        self._args = args

    @property
    def pending(self) -> bool:
        return self._action is not None and self._epoch == self._clock.epoch

    def cancel(self) -> None:
        self._action = None

    def deliver(self) -> None:
        """Run the action now if it is still pending; its scheduled time then finds nothing to do."""
        if self.pending:
            action, self._action = self._action, None
            action(*self._args)

    def _wait(self, delay: float) -> Generator[simpy.Event, Any, None]:
        yield self._clock.sim.timeout(delay)
        self.deliver()


class DeviceClock:
    """The timing of one device (a port, a channel, a transport) in the run's `Simulation`.

    `model` None: untimed (`timed` False), and the device completes each command at once, inside the caller,
    without asking the clock: that path is every untimed run's hot one and creates no process or closure.
    `reset()` is the device's reset: every delivery still pending is dropped (an epoch, so a reset costs
    nothing however many are pending).
    """

    __slots__ = ("epoch", "model", "sim", "timed")

    def __init__(self, sim: Simulation, model: LatencyModel | None = None) -> None:
        self.sim = sim
        self.model = model
        self.timed = model is not None
        self.epoch = 0

    def cost(self, completions: Iterable[Completion]) -> float:
        """Modelled seconds of the requests one command caused; a failed request moves no bytes, so it costs
        the fixed part only. Untimed: 0."""
        model = self.model
        if model is None:
            return 0.0
        return sum(model.cost(c.request.op, c.request.length if c.ok else 0) for c in completions)

    def later(self, delay: float, action: Callable[..., Any], *args: Any) -> Delivery:
        """Run `action(*args)` `delay` simulated seconds from now (a zero delay too: after the current step)."""
        delivery = Delivery(self, action, args)
        self.sim.process(delivery._wait(delay))
        return delivery

    def reset(self) -> None:
        """Drop every delivery still pending."""
        self.epoch += 1
