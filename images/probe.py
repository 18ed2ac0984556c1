"""Open and create images: formats are found by magic, never by file name.

A backing file is opened with the format its image records; an image that records none is probed
by magic, and refused rather than guessed as raw (CVE-2008-2004: a guest must not be able to make the
host read an arbitrary file by writing a header into a raw disk).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from emu.errors import ImageError, InvalidImage, UnsupportedFeature, UsageError
from images import raw
from images.backend import ImageBackend, backing_path
from images.hostfile import HostFile
from images.qcow2 import create as qcow2_create
from images.qcow2 import image as qcow2_image
from images.qcow2 import layout as qcow2_layout
from images.vdi import image as vdi_image
from images.vhd import image as vhd_image
from images.vhdx import create as vhdx_create
from images.vhdx import image as vhdx_image
from images.vmdk import image as vmdk_image

MAX_CHAIN_DEPTH = 16  # a chain longer than this is treated as a loop or an attack


@dataclass(frozen=True)
class Format:
    """One image format: how to recognise, open and create it (qemu-img's name)."""

    name: str
    probe: Callable[[bytes, bytes], bool] | None   # (first 512 bytes, last 512 bytes); None: raw
    open: Callable[..., ImageBackend]           # open(host, read_only=, check_mode=, **open_options)
    create: Callable[..., None]                 # create(path, size, options, backing=, backing_fmt=, opener=)
    describe: Callable[..., str]                # the option list `qemu-img create` prints
    open_options: tuple[str, ...] = ()


def _open_raw(host: HostFile, *, read_only: bool, check_mode: bool = False) -> ImageBackend:
    return raw.open_raw(host, read_only=read_only)


def _create_raw(path, size, options, *, backing, backing_fmt, opener) -> None:
    if backing:
        raise UsageError("raw images cannot have a backing file")
    if size is None:
        raise UsageError("raw: an image size is required")
    raw.create(path, size, options)


def _open_vmdk(host: HostFile, *, read_only: bool, check_mode: bool = False):
    return vmdk_image.open_vmdk(host, read_only=read_only)


def _open_vhd(host: HostFile, *, read_only: bool, check_mode: bool = False, size_calc: str = "auto"):
    return vhd_image.open_vhd(host, read_only=read_only, size_calc=size_calc)


def _open_vdi(host: HostFile, *, read_only: bool, check_mode: bool = False, discard: str = "qemu"):
    return vdi_image.open_vdi(host, read_only=read_only, discard=discard)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("qcow2", lambda head, tail: head[:4] == qcow2_layout.MAGIC, qcow2_image.open_qcow2,
           qcow2_create.create, qcow2_create.describe),
    Format("vdi", lambda head, tail: vdi_image.probe(head), _open_vdi, vdi_image.create, vdi_image.describe,
           vdi_image.OPEN_OPTIONS),
    Format("vpc", vhd_image.probe, _open_vhd, vhd_image.create, vhd_image.describe, vhd_image.OPEN_OPTIONS),
    Format("vhdx", lambda head, tail: vhdx_image.probe(head), vhdx_image.open_vhdx, vhdx_create.create,
           vhdx_create.describe),
    Format("vmdk", lambda head, tail: vmdk_image.probe(head), _open_vmdk, vmdk_image.create, vmdk_image.describe),
    Format("raw", None, _open_raw, _create_raw, raw.describe),
)}


def _format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown format '{name}' (known: {', '.join(FORMATS)})") from None


def detect_format(path: str) -> str:
    """Name the format by its magic; anything unrecognised is raw (as qemu-img, with our own caveat)."""
    host = HostFile(path, writable=False)
    try:
        head = host.pread_exact(0, 512)
        size = host.size()
        tail = host.pread_exact(size - 512, 512) if size >= 1024 else b""
    finally:
        host.close()
    for fmt in FORMATS.values():
        if fmt.probe is not None and fmt.probe(head, tail):
            return fmt.name
    return "raw"


def open_image(path: str, fmt: str | None = None, *, read_only: bool = False, cache: str = "writeback",
               backing_fmt: str | None = None, open_backing: bool = True, check_mode: bool = False,
               options: dict[str, str] | None = None, _seen: tuple[str, ...] = ()) -> ImageBackend:
    """Open an image and, unless told not to, its whole backing chain (read-only).

    check_mode opens the way `qemu-img check` does: a dirty image is not repaired on open and a
    corrupt one may be opened for repair. `options` are the format's open options (e.g. vdi discard=).
    """
    real = os.path.realpath(path)
    if real in _seen:
        raise InvalidImage("backing chain loop: the image is its own ancestor", path=path,
                           field="backing_file")
    if len(_seen) >= MAX_CHAIN_DEPTH:
        raise InvalidImage(f"backing chain deeper than {MAX_CHAIN_DEPTH}", path=path, field="backing_file")
    detected = detect_format(path)
    spec = _format(fmt or detected)
    if spec.probe is not None and detected != spec.name:
        raise InvalidImage(f"not a {spec.name} image (no {spec.name} magic)", path=path, field="magic")
    options = dict(options or {})
    for key in options:
        if key not in spec.open_options:
            raise UsageError(f"{spec.name}: unknown open option '{key}'"
                             + (f" (known: {', '.join(spec.open_options)})" if spec.open_options else ""))
    if not read_only and not os.stat(path).st_mode & 0o222:
        # no one may write it (an immutable base): refused for root too, who could otherwise
        raise ImageError("the file is write-protected (no write permission bits); open it read-only",
                         path=path)
    host = HostFile(path, writable=not read_only, cache=cache)
    try:
        image = spec.open(host, read_only=read_only, check_mode=check_mode, **options)
        if open_backing and image.backing_name:
            image.backing = _open_backing(image, backing_fmt, cache, _seen + (real,))
            image.check_parent(image.backing)
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
    path = backing_path(image.path, name)
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


def describe_create(fmt: str, options: dict[str, str], size: int, backing: str | None = None,
                    backing_fmt: str | None = None) -> str:
    """The option list `qemu-img create` prints after fmt=, in its order."""
    return _format(fmt).describe(options, size, backing, backing_fmt)


def create_image(path: str, fmt: str, size: int | None, options: dict[str, str] | None = None,
                 backing: str | None = None, backing_fmt: str | None = None) -> None:
    """Create an image the way `qemu-img create` does (same layout, same options). Sizes are rounded
    up to whole 512-byte sectors, as qemu-img rounds them for every format."""
    if size is not None:
        size = -(-size // 512) * 512
    _format(fmt).create(path, size, dict(options or {}), backing=backing, backing_fmt=backing_fmt,
                        opener=open_image)
