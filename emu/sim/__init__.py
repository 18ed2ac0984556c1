"""Simulated time: the SimPy kernel of a run, interrupt lines, device clocks and the latency models that time them.

The functional layers (GuestMemory, Drive, images) know no time; everything SimPy lives here and in the
controllers that use it.
"""

from emu.sim.clock import Delivery, DeviceClock
from emu.sim.irq import InterruptLine
from emu.sim.kernel import Simulation
from emu.sim.monitor import Monitor, Row
from emu.sim.timing import DEFAULT_FIXED, DEFAULT_PER_BYTE, LatencyModel

__all__ = ["DEFAULT_FIXED", "DEFAULT_PER_BYTE", "Delivery", "DeviceClock", "InterruptLine", "LatencyModel", "Monitor",
           "Row", "Simulation"]
