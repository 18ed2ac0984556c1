"""The one error family of emu.

Every deliberate failure is an `EmuError`; the command line catches only this family and prints it as
one line. Anything else escaping is a bug and must show its traceback in tests.
"""

from __future__ import annotations

import errno as _errno


class EmuError(Exception):
    """Root of every deliberate failure."""


class UsageError(EmuError):
    """A bad command-line argument or option value."""


class ImageError(EmuError):
    """An image file cannot be opened, created or used.

    The message names the file and the field: ``<path>: <field>: <what> (offset 0x...)``.
    """

    def __init__(self, what: str, *, path: str | None = None, field: str | None = None,
                 offset: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.path = path
        self.field = field
        self.offset = offset

    def with_path(self, path: str) -> ImageError:
        """Add the file name if a lower layer did not know it; keeps the type."""
        if self.path is None:
            self.path = path
        return self

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        text = ": ".join(parts + [self.what])
        if self.offset is not None:
            text += f" (offset {self.offset:#x})"
        return text


class InvalidImage(ImageError):
    """The file is not a valid image of the format (bad magic, field out of range, truncated...)."""


class UnsupportedFeature(ImageError):
    """The file is valid but uses a feature emu does not implement (e.g. an unknown incompatible bit)."""


class CorruptImage(ImageError):
    """Metadata found inconsistent while the image was in use."""


class BlockError(EmuError):
    """A block-layer request failed; `errno` is what a device model turns into its protocol status."""

    def __init__(self, err: int, what: str) -> None:
        super().__init__(what)
        self.errno = err

    def __str__(self) -> str:
        return f"{self.args[0]} ({_errno.errorcode.get(self.errno, self.errno)})"


class DriverError(EmuError):
    """A guest-driver model failed: the device would not come up, or refused what the driver needs to use it."""


class DriverLayoutError(DriverError):
    """The guest driver cannot lay this request out as the real driver would (more PRDs than one table holds,
    sectors the disk does not advertise, partial sectors): the caller asked for something the driver never sends,
    so nothing reached the device."""


class GuestMemoryError(EmuError):
    """Misuse of guest RAM by a guest-driver model: a bad free, or no room left for an allocation."""


class DmaError(GuestMemoryError):
    """An access to guest RAM outside [0, size): raised before any byte is read or written.

    A controller catches it and completes the command with its protocol's error, as a DMA to an
    unassigned guest-physical address fails on real hardware.
    """

    def __init__(self, addr: int, length: int, ram_size: int, op: str = "access") -> None:
        super().__init__(f"guest memory {op} of {length} bytes at {addr:#x} is outside the "
                         f"{ram_size}-byte ({ram_size:#x}) guest RAM")
        self.addr = addr
        self.length = length
        self.ram_size = ram_size


class OutOfGuestMemory(GuestMemoryError):
    """The guest-driver allocator has no free block of the requested size and alignment."""

    def __init__(self, size: int, align: int, ram_size: int, free_bytes: int) -> None:
        super().__init__(f"out of guest memory: no free block of {size} bytes aligned to {align} in the "
                         f"{ram_size}-byte guest RAM ({free_bytes} bytes free in all)")
        self.size = size
        self.align = align
        self.free_bytes = free_bytes
