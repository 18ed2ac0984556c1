"""Real QEMU as an oracle: its qtest protocol lets emu act as the guest (registers, RAM, interrupt lines) of a
real QEMU, so the same guest-driver models that drive emu's devices can drive QEMU's."""

from emu.qtest.protocol import COMMANDS, QtestConnection, QtestError

__all__ = ["COMMANDS", "QtestConnection", "QtestError"]
