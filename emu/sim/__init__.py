"""Simulated time: the SimPy kernel of a run, interrupt lines, and the latency models that time a Drive.

The functional layers (GuestMemory, Drive, images) know no time; everything SimPy lives here and in the
controllers that use it.
"""

from emu.sim.irq import InterruptLine
from emu.sim.kernel import Simulation
from emu.sim.monitor import Monitor, Row
from emu.sim.timing import DEFAULT_FIXED, DEFAULT_PER_BYTE, LatencyModel, TimedDrive, TimedRequest

__all__ = ["DEFAULT_FIXED", "DEFAULT_PER_BYTE", "InterruptLine", "LatencyModel", "Monitor", "Row", "Simulation", "TimedDrive",
           "TimedRequest"]
