"""Moving data along a backing chain: commit (merge a child into an ancestor), rebase (safe or
unsafe), stream (pull ancestors' data into a child).

Each operation works on image paths, opens what it needs and closes it again, and returns what it
moved, so the command line and the lessons can show that a merge costs what the child holds while
creating a snapshot costs nothing. Data is written with the destination format's own write and
write-zeroes (this is the image layer: no drive options apply to offline maintenance).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from emu.block.backend import Status
from emu.errors import UnsupportedFeature, UsageError
from images.backend import ImageBackend, backing_path, zeros
from images.convert import differing_runs
from images.probe import detect_format, open_image

CHUNK = 2 << 20   # the buffer size of qemu's commit and rebase loops

Progress = Callable[[int, int], None]
# create options that describe a fully allocated image (a child or a compacted copy is never one)
_FIXED_OPTIONS = {"subformat": ("fixed",), "static": ("on",), "preallocation": ("metadata", "falloc", "full")}


@dataclass(slots=True)
class Moved:
    """What an operation wrote into the destination layer."""

    data_bytes: int = 0     # written from buffers
    zero_bytes: int = 0     # made to read as zeros without data (write-zeroes)
    note: str = ""


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def sparse_options(image: ImageBackend) -> tuple[dict[str, str], bool]:
    """Create options for a new, sparse image laid out like `image`, and whether `image` is a
    fixed-size (fully allocated) one."""
    options = image.creation_options()
    sparse = {key: value for key, value in options.items() if value not in _FIXED_OPTIONS.get(key, ())}
    fixed = any(options.get(key) in values for key, values in _FIXED_OPTIONS.items() if key != "preallocation")
    return sparse, fixed


def relink(child: str) -> None:
    """Record in `child` the identity (UUID, CID) of the file it already names as its backing file,
    after that file was replaced (rebase -u onto the same name)."""
    image = open_image(child, read_only=True, open_backing=False)
    name, fmt = image.backing_name, image.backing_format
    image.close()
    rebase(child, name, new_fmt=fmt, unsafe=True)


def _view(image: ImageBackend | None, offset: int, length: int) -> bytes:
    """What a guest of `image` reads (zeros without an image or past its end)."""
    if image is None or offset >= image.virtual_size:
        return zeros(length)
    inside = min(length, image.virtual_size - offset)
    data = image.read(offset, inside)
    return data if inside == length else data + zeros(length - inside)


def _write_zeroes(dest: ImageBackend, offset: int, length: int) -> None:
    """Zeros without data where the format can (whole units of its zero alignment), buffers elsewhere."""
    align = dest.limits.zero_alignment
    head = min(length, -offset % align)
    body = (length - head) // align * align
    if body and dest.supports_write_zeroes and dest.write_zeroes(offset + head, body, False):
        pieces = [(offset, head), (offset + head + body, length - head - body)]
    else:
        pieces = [(offset, length)]
    for start, n in pieces:
        for chunk in range(start, start + n, CHUNK):
            dest.write(chunk, zeros(min(CHUNK, start + n - chunk)))


def _copy(source: ImageBackend, dest: ImageBackend, offset: int, length: int, zero: bool, moved: Moved) -> None:
    """Make dest read what source reads over the range: write-zeroes for a zero run, data otherwise."""
    if zero:
        _write_zeroes(dest, offset, length)
        moved.zero_bytes += length
        return
    end = offset + length
    while offset < end:
        n = min(end - offset, CHUNK - offset % CHUNK)
        dest.write(offset, source.read(offset, n))
        moved.data_bytes += n
        offset += n


# -- commit ----------------------------------------------------------------------------------------
def commit(path: str, *, base: str | None = None, keep: bool = False, fmt: str | None = None,
           progress: Progress | None = None) -> Moved:
    """qemu-img commit: write what the layers above `base` hold into `base` (default: the immediate
    backing file), at the base's granularity; the cost is the committed layers' allocated data.

    Then the top is emptied where the format can (qemu's bdrv_make_empty: only qcow2 in QEMU 7.2;
    other formats keep their data, which now equals the base's). As in qemu-img, naming a deeper
    base implies keep: the layers in between are left stale and the top stays valid only because
    it still holds its own data.
    """
    top = open_image(path, fmt, read_only=True)
    try:
        layers = top.chain()
        if len(layers) == 1:
            raise UsageError(f"{path}: has no backing file to commit into")
        if base is None:
            depth = 1
        else:
            matches = [i for i, layer in enumerate(layers) if i and _same_file(layer.path, base)]
            if not matches:
                raise UsageError(f"'{base}' is not in the backing chain of '{path}'")
            depth = matches[0]
            keep = keep or depth > 1
        target = layers[depth]
        if top.virtual_size > target.virtual_size:
            raise UsageError(f"{target.path} ({target.virtual_size} bytes) is smaller than {path} "
                             f"({top.virtual_size} bytes); emu does not resize images")
        dest = open_image(target.path, target.format_name, read_only=False)
        try:
            moved = _commit_above(top, depth, dest, progress)
            dest.flush()
        finally:
            dest.close()
    finally:
        top.close()
    relink(layers[depth - 1].path)   # the base was written: a child linked by UUID or CID is renewed
    if keep:
        moved.note = "the top image keeps its data"
        return moved
    top = open_image(path, fmt, read_only=False, open_backing=False)
    try:
        top.make_empty()
        moved.note = "the top image was emptied"
    except UnsupportedFeature:
        moved.note = (f"the top image keeps its data: {top.format_name} cannot be emptied in place "
                      "(as in qemu-img, where only qcow2 can)")
    finally:
        top.close()
    return moved


def _commit_above(top: ImageBackend, depth: int, dest: ImageBackend, progress: Progress | None) -> Moved:
    moved = Moved()
    size = top.virtual_size
    offset = 0
    while offset < size:
        status, answered = top.status_above(offset, size - offset)
        n = status.length
        if answered < depth and status.flags & Status.ALLOCATED:
            _copy(top, dest, offset, n, bool(status.flags & Status.ZERO), moved)
        offset += n
        if progress is not None:
            progress(offset, size)
    return moved


# -- rebase and stream -----------------------------------------------------------------------------
def rebase(path: str, new_backing: str | None, *, new_fmt: str | None = None, unsafe: bool = False,
           fmt: str | None = None, progress: Progress | None = None) -> Moved:
    """qemu-img rebase: link the image to `new_backing` (None or "": no backing file).

    Safe mode keeps the guest view: wherever this layer holds nothing and the old chain reads
    differently from the new one, the old chain's data is copied into this layer first (only the
    ranges allocated above the new backing when it is part of the old chain, as qemu-img does).
    Unsafe mode (-u) rewrites the link only. Formats that link by identity (VDI, VHD, VHDX UUIDs,
    VMDK CID) record the new parent's, so the new backing file must exist.
    """
    new_backing = new_backing or None
    new_path = backing_path(path, new_backing) if new_backing else None
    if new_path is not None:
        if not os.path.exists(new_path):
            raise UsageError(f"new backing file '{new_backing}' not found (looked for {new_path})")
        new_fmt = new_fmt or detect_format(new_path)
    image = open_image(path, fmt, read_only=False, open_backing=not unsafe)
    parent = None
    try:
        parent = open_image(new_path, new_fmt, read_only=True) if new_path else None
        if parent is not None and any(_same_file(layer.path, path) for layer in parent.chain()):
            raise UsageError(f"'{new_backing}' has {path} in its own backing chain: that would be a loop")
        moved = Moved()
        if not unsafe:
            moved = _pull(image, parent, new_path, progress)
        old = image.backing
        image.set_backing(parent, new_backing, new_fmt if new_backing else None)
        parent = None   # owned by the image now
        if old is not None:
            old.close()
        image.flush()
    finally:
        if parent is not None:
            parent.close()
        image.close()
    return moved


def stream(path: str, *, base: str | None = None, fmt: str | None = None,
           progress: Progress | None = None) -> Moved:
    """Pull the data of every layer above `base` (default: all of them) into the image, then link it
    to `base` (QEMU's block-stream; with no base the image becomes standalone). The name recorded
    for the base is the one the chain already used for it."""
    image = open_image(path, fmt, read_only=True)
    try:
        layers = image.chain()
        if base is None:
            name = fmt_name = None
        else:
            matches = [i for i, layer in enumerate(layers) if i and _same_file(layer.path, base)]
            if not matches:
                raise UsageError(f"'{base}' is not in the backing chain of '{path}'")
            above = layers[matches[0] - 1]
            name, fmt_name = above.backing_name, layers[matches[0]].format_name
    finally:
        image.close()
    if len(layers) == 1:
        raise UsageError(f"{path}: has no backing file to stream from")
    if name is not None and not os.path.isabs(name):
        # The name was relative to the layer that recorded it; make it relative to this image.
        name = os.path.relpath(backing_path(above.path, name), os.path.dirname(os.path.abspath(path)))
    return rebase(path, name, new_fmt=fmt_name, fmt=fmt, progress=progress)


def _pull(image: ImageBackend, parent: ImageBackend | None, parent_path: str | None,
          progress: Progress | None) -> Moved:
    """Copy into `image` what its old chain reads where it differs from what `parent` will read."""
    moved = Moved()
    old = image.backing
    if old is None and parent is None:
        return moved
    old_layers = old.chain() if old is not None else []
    if parent_path is None:
        stop = len(old_layers)                 # everything the old chain holds
    else:
        found = [i for i, layer in enumerate(old_layers) if _same_file(layer.path, parent_path)]
        stop = found[0] if found else None     # None: an unrelated chain, compare sector by sector
    size = image.virtual_size
    offset = 0
    while offset < size:
        own = image.block_status(offset, size - offset)
        n = own.length
        if not own.flags & Status.ALLOCATED and old is not None and offset < old.virtual_size:
            n = min(n, old.virtual_size - offset)
            if stop is None:
                _pull_differences(image, parent, offset, n, moved)
            else:
                status, answered = old.status_above(offset, n)
                n = status.length
                zero = bool(status.flags & Status.ZERO)
                if answered < stop and status.flags & Status.ALLOCATED and not (zero and parent is None):
                    _copy(image, image, offset, n, zero, moved)
        elif not own.flags & Status.ALLOCATED and stop is None and parent is not None:
            _pull_differences(image, parent, offset, n, moved)   # zeros past the old end
        offset += n
        if progress is not None:
            progress(offset, size)
    image.flush()
    return moved


def _pull_differences(image: ImageBackend, parent: ImageBackend | None, offset: int, length: int,
                      moved: Moved) -> None:
    end = offset + length
    while offset < end:
        n = min(end - offset, CHUNK - offset % CHUNK)
        current, future = image.read(offset, n), _view(parent, offset, n)
        for start, run in differing_runs(current, future):
            image.write(offset + start, current[start:start + run])
            moved.data_bytes += run
        offset += n

