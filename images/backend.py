"""The base every image format builds on: the block layer's backend contract (`emu.block.backend`) with the
rules every format shares.

A backend answers for its own layer: `read`, `write`, `discard`, `write_zeroes`, `layer_status`.
What QEMU's generic block layer adds on top of a driver's answer (ALLOCATED, zeros for unallocated
areas without a backing file or past its end, asking the host file about preallocated clusters) is
done once here in `block_status`, so `emu img map` prints what `qemu-img map` prints.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from emu.block.backend import BlockLimits, BlockStatus, Status
from emu.errors import BlockError, UnsupportedFeature, UsageError
from emu.memory import scatter
from emu.trace import NULL_TRACE, Trace
from images.hostfile import HostFile

_ZEROS: dict[int, bytes] = {}


def backing_path(image_path: str, name: str) -> str:
    """Where a backing file named in an image lives: relative names are relative to the image's
    directory (qemu's path_combine, so "b.qcow2" next to "c.qcow2" stays "b.qcow2")."""
    return name if os.path.isabs(name) else os.path.join(os.path.dirname(image_path), name)


def zeros(length: int) -> bytes:
    """Zero bytes for a read of unallocated space; common sizes are shared (bytes are immutable)."""
    z = _ZEROS.get(length)
    if z is None:
        z = bytes(length)
        if length <= 2 << 20 and len(_ZEROS) < 64:
            _ZEROS[length] = z
    return z


@dataclass(slots=True)
class CheckResult:
    """What `check` found, with qemu-img's counters (block/qcow2-refcount.c, BdrvCheckResult)."""

    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int = 0
    total_clusters: int = 0
    allocated_clusters: int = 0
    fragmented_clusters: int = 0
    compressed_clusters: int = 0
    messages: list[str] = field(default_factory=list)

    def corruption(self, message: str) -> None:
        self.corruptions += 1
        self.messages.append(message)

    def leak(self, message: str) -> None:
        self.leaks += 1
        self.messages.append(message)


class ImageBackend:
    """Base of every format. Owns its `HostFile` and, if any, its backing backend.

    Offsets and lengths are guest bytes of this image's virtual disk. Subclasses set the class
    attributes that say what they can do; the Drive reads them (and `limits`) to decide.
    """

    format_name = "?"
    supports_backing = False      # unallocated areas read from `backing`
    supports_discard = False      # has a discard operation at all (else discards succeed, doing nothing)
    supports_write_zeroes = False  # has an efficient write-zeroes (else the Drive writes zero buffers)
    # write() takes a memoryview and is done with it on return (the Drive may then lend it guest RAM);
    # other formats get a bytes copy
    takes_views = False

    def __init__(self, host: HostFile, virtual_size: int, *, read_only: bool) -> None:
        self.host = host
        self.path = host.path
        self.virtual_size = virtual_size
        self.read_only = read_only
        self.backing: ImageBackend | None = None
        self.backing_name: str | None = None   # as stored in the image
        self.backing_format: str | None = None
        self.limits = BlockLimits()
        # The node's BDRV_O_UNMAP: may freed space be handed back to the host file? Set by the Drive
        # from its discard= option (qemu-io defaults to on).
        self.host_unmap = True

    # -- the contract ------------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def read_into(self, offset: int, buffers: list[memoryview]) -> None:
        """Read `sum(len(b) for b in buffers)` bytes at `offset` into the buffers, in order (scatter)."""
        scatter(self.read(offset, sum(len(b) for b in buffers)), buffers)

    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        raise NotImplementedError

    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        """Deallocate what the format can; silently ignore what it cannot (recorded in the trace)."""

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        """Make the range read as zeros efficiently; False means "cannot, write zero buffers instead"."""
        return False

    def layer_status(self, offset: int, length: int) -> BlockStatus:
        """This layer's own answer for a run starting at offset (no ALLOCATED, no backing logic)."""
        raise NotImplementedError

    def flush(self) -> None:
        self.host.sync()

    def close(self) -> None:
        if self.backing is not None:
            self.backing.close()
            self.backing = None
        self.host.close()

    def check(self, repair: str | None = None) -> CheckResult:
        raise UnsupportedFeature("this image format does not support checks", path=self.path)

    def reclaim(self) -> dict[str, str]:
        """What this image can give back to the host, in words, for `emu img info`: what a discard
        does ("discard"), what a write of zeros does ("write-zeroes"), and offline ("offline")."""
        return {"discard": "ignored: the format has no way to free space (the request still succeeds)",
                "write-zeroes": "written as zero data",
                "offline": "emu img compact rewrites the image without its zero blocks"}

    def info_fields(self) -> dict:
        """Format-specific `emu img info` keys (qemu-img's names): cluster-size, format-specific..."""
        return {}

    def check_parent(self, parent: ImageBackend) -> None:
        """Verify the link to an opened parent (UUID, content id...); formats that link by name only
        accept any parent."""

    # -- relinking (qemu-img rebase -u, commit) ----------------------------------------------------
    def set_backing(self, parent: ImageBackend | None, name: str | None, fmt: str | None) -> None:
        """Rewrite this image's link to its parent in place, as `qemu-img rebase -u` does: the stored
        name (exactly as given; relative names are relative to this image's directory), the recorded
        backing format where the format records one, and the parent's identity where the format
        links by one. parent=None with name=None makes the image standalone (same format, no parent).

        On success self.backing is the parent (an opened, read-only image the caller hands over; the
        old self.backing is not closed here, the caller owns it) and backing_name/backing_format say
        what the file now records. The guest data of this layer is not touched. Each format writes
        the link so that a crash leaves either the old or the new one. A name that does not fit the
        format's space raises UsageError, an image that cannot have a parent UnsupportedFeature, a
        read-only image BlockError."""
        raise UnsupportedFeature(f"{self.format_name} images cannot have a backing file", path=self.path)

    def creation_options(self) -> dict[str, str]:
        """The `create` options (-o k=v) that make a new, empty image laid out like this one: the same
        virtual size (given separately) and layout parameters. Only options the format's create takes."""
        return {}

    def make_empty(self) -> None:
        """Drop every allocation of this layer so it reads through to its backing file again (qemu's
        bdrv_make_empty, used by `qemu-img commit` to empty the committed top). Only qcow2 has it in
        qemu 7.2; `qemu-img commit` leaves the top of every other format as it was."""
        raise UnsupportedFeature(f"{self.format_name} images cannot be emptied (qemu-img commit leaves "
                                 "their data in place)", path=self.path)

    def check_relink(self, parent: ImageBackend | None, name: str | None, fmt: str | None,
                      own_format: str | None = None) -> None:
        """What every set_backing checks first: a writable image, parent and name given together, a
        parent of `own_format` (formats whose parent must be of their own kind), and a name that, if
        it names an existing file, names the parent handed over."""
        self.check_writable()
        if (parent is None) != (name is None) or (parent is None and fmt is not None):
            raise UsageError(f"{self.path}: set_backing needs a parent and its name together (or neither, "
                             "to make the image standalone)")
        if parent is None or name is None:
            return
        if not name:
            raise UsageError(f"{self.path}: the backing file name is empty")
        if fmt is not None and fmt != parent.format_name:
            raise UsageError(f"{self.path}: backing format '{fmt}' given, but {parent.path} is "
                             f"{parent.format_name}")
        if own_format is not None and parent.format_name != own_format:
            raise UsageError(f"{self.path}: the parent of a {own_format} image must be {own_format}, not "
                             f"{parent.format_name} ({parent.path})")
        target = backing_path(self.path, name)
        if os.path.exists(target) and os.path.exists(parent.path) and not os.path.samefile(target, parent.path):
            raise UsageError(f"{self.path}: backing file name '{name}' resolves to {target}, not to the parent "
                             f"handed over ({parent.path})")

    # -- shared helpers ----------------------------------------------------------------------------
    def chain(self) -> list[ImageBackend]:
        """This image and its backing files, top first."""
        layers: list[ImageBackend] = []
        node: ImageBackend | None = self
        while node is not None:
            layers.append(node)
            node = node.backing
        return layers

    def read_backing(self, offset: int, length: int) -> bytes:
        """What an unallocated range reads as: the backing file, zeros beyond its end or without one."""
        backing = self.backing
        if backing is None or offset >= backing.virtual_size:
            return zeros(length)
        inside = min(length, backing.virtual_size - offset)
        data = backing.read(offset, inside)
        return data if inside == length else data + zeros(length - inside)

    def check_writable(self) -> None:
        if self.read_only:
            raise BlockError(errno.EPERM, f"{self.path}: image is read-only")

    def block_status(self, offset: int, length: int) -> BlockStatus:
        """This layer's status with QEMU's generic rules applied (block/io.c bdrv_co_block_status)."""
        length = min(length, self.virtual_size - offset)
        st = self.layer_status(offset, length)
        flags = st.flags
        if flags & (Status.DATA | Status.ZERO):
            flags |= Status.ALLOCATED
        elif self.supports_backing:
            if self.backing is None or offset >= self.backing.virtual_size:
                flags |= Status.ZERO
        run = st.length
        if flags & Status.RECURSE and flags & Status.DATA and not flags & Status.ZERO \
                and flags & Status.OFFSET_VALID:
            is_data, end = self.host.extent_at(st.host_offset)
            if st.host_offset >= self.host.size() or not is_data:
                flags |= Status.ZERO
                if st.host_offset < self.host.size():
                    run = min(run, end - st.host_offset)
            else:
                run = min(run, end - st.host_offset)
        flags &= ~Status.RECURSE
        return BlockStatus(flags, run, st.host_offset)

    def status_above(self, offset: int, length: int) -> tuple[BlockStatus, int]:
        """Status through the backing chain and the depth of the layer that answered, exactly as
        `qemu-img map` walks it (get_block_status): stop at the first layer reporting DATA or ZERO."""
        node: ImageBackend | None = self
        depth = 0
        status = BlockStatus(Status.NONE, length)
        while node is not None:
            status = node.block_status(offset, length)
            if status.flags & (Status.DATA | Status.ZERO):
                return status, depth
            length = status.length
            node = node.backing
            depth += 1
        return BlockStatus(status.flags & ~Status.ALLOCATED, status.length, status.host_offset), depth - 1
