"""One run's simulated world: a SimPy environment and the run's own random generator."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

import simpy


class Simulation:
    """One `simpy.Environment` plus a `random.Random(seed)` for this run only.

    Models draw randomness from `sim.random`, never the global `random` module, so runs side by side
    (matrix cells) do not disturb each other and a seed reproduces a run exactly.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.env = simpy.Environment()
        self.random = random.Random(seed)

    @property
    def now(self) -> float:
        """Simulated seconds since the start of the run."""
        return self.env.now

    def run(self, until: float | simpy.Event | None = None) -> Any:
        """Run until no event is left, until a time, or until an event fires (whose value is returned)."""
        return self.env.run(until)

    def process(self, generator: Generator[simpy.Event, Any, Any]) -> simpy.Process:
        return self.env.process(generator)

    def timeout(self, delay: float, value: Any = None) -> simpy.Timeout:
        return self.env.timeout(delay, value)

    def event(self) -> simpy.Event:
        return self.env.event()
