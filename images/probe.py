"""Open and create images: formats are found by magic, never by file name.

A backing file is opened with the format its image records; an image that records none is probed
by magic, and refused rather than guessed as raw (CVE-2008-2004: a guest must not be able to make the
host read an arbitrary file by writing a header into a raw disk).
"""

from __future__ import annotations

import os

from emu.errors import ImageError, InvalidImage, UnsupportedFeature, UsageError
from images import raw
from images.backend import ImageBackend
from images.hostfile import HostFile
from images.qcow2 import create as qcow2_create
from images.qcow2 import image as qcow2_image

MAX_CHAIN_DEPTH = 16  # a chain longer than this is treated as a loop or an attack

FORMATS = ("raw", "qcow2")


def detect_format(path: str) -> str:
    """Name the format by its magic; anything unrecognised is raw (as qemu-img, with our own caveat)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ImageError(f"cannot open: {exc.strerror}", path=path) from None
    if head[:4] == qcow2_image.MAGIC:
        return "qcow2"
    return "raw"


def open_image(path: str, fmt: str | None = None, *, read_only: bool = False, cache: str = "writeback",
               backing_fmt: str | None = None, open_backing: bool = True, check_mode: bool = False,
               _seen: tuple[str, ...] = ()) -> ImageBackend:
    """Open an image and, unless told not to, its whole backing chain (read-only).

    check_mode opens the way `qemu-img check` does: a dirty image is not repaired on open and a
    corrupt one may be opened for repair."""
    real = os.path.realpath(path)
    if real in _seen:
        raise InvalidImage("backing chain loop: the image is its own ancestor", path=path,
                           field="backing_file")
    if len(_seen) >= MAX_CHAIN_DEPTH:
        raise InvalidImage(f"backing chain deeper than {MAX_CHAIN_DEPTH}", path=path, field="backing_file")
    detected = detect_format(path)
    fmt = fmt or detected
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    if fmt != "raw" and detected != fmt:
        raise InvalidImage(f"not a {fmt} image (no {fmt} magic)", path=path, field="magic")
    host = HostFile(path, writable=not read_only, cache=cache)
    try:
        if fmt == "raw":
            image: ImageBackend = raw.open_raw(host, read_only=read_only)
        else:
            image = qcow2_image.open_qcow2(host, read_only=read_only, check_mode=check_mode)
        if open_backing and image.backing_name:
            image.backing = _open_backing(image, backing_fmt, cache, _seen + (real,))
    except ImageError as exc:
        host.close()
        raise exc.with_path(path) from None
    except BaseException:
        host.close()
        raise
    return image


def _open_backing(image: ImageBackend, override_fmt: str | None, cache: str,
                  seen: tuple[str, ...]) -> ImageBackend:
    name = image.backing_name
    assert name is not None
    path = name if os.path.isabs(name) else os.path.join(os.path.dirname(image.path) or ".", name)
    if not os.path.exists(path):
        raise ImageError(f"backing file '{name}' not found", path=image.path, field="backing_file")
    fmt = override_fmt or image.backing_format
    if fmt is not None and fmt not in FORMATS:
        raise UnsupportedFeature(f"backing file '{name}' has format '{fmt}', which emu cannot open (known: "
                                 f"{', '.join(FORMATS)})", path=image.path, field="backing_format")
    if fmt is None:
        fmt = detect_format(path)
        if fmt == "raw":
            raise InvalidImage(f"backing file '{name}' has no recorded format and no known magic; "
                               "refusing to guess raw", path=image.path, field="backing_format")
    return open_image(path, fmt, read_only=True, cache=cache, _seen=seen)


def create_image(path: str, fmt: str, size: int | None, options: dict[str, str] | None = None,
                 backing: str | None = None, backing_fmt: str | None = None) -> None:
    """Create an image the way `qemu-img create` does (same layout, same options)."""
    options = dict(options or {})
    if fmt == "raw":
        if backing:
            raise UsageError("raw images cannot have a backing file")
        if size is None:
            raise UsageError("raw: an image size is required")
        raw.create(path, size, options)
    elif fmt == "qcow2":
        qcow2_create.create(path, size, options, backing=backing, backing_fmt=backing_fmt,
                            opener=open_image)
    else:
        raise UsageError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
