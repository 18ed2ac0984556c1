"""The block layer: requests, drive options and the Drive that applies them to one image backend."""

from emu.block.drive import UNMONITORED, Drive, DriveMonitor
from emu.block.options import DriveOptions
from emu.block.request import Completion, Flags, Op, Request

__all__ = ["UNMONITORED", "Completion", "Drive", "DriveMonitor", "DriveOptions", "Flags", "Op", "Request"]
