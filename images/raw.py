"""raw: the guest disk is the host file, byte for byte.

Discard punches a hole; write-zeroes uses FALLOC_FL_ZERO_RANGE, or punches when MAY_UNMAP is allowed
(QEMU block/file-posix.c). Block status comes from SEEK_DATA/SEEK_HOLE only, as QEMU does since it
dropped FIEMAP.
"""

from __future__ import annotations

from emu.block.backend import BlockStatus, Status
from emu.errors import ImageError, UsageError
from emu.trace import NULL_TRACE, Act, Trace
from images.backend import ImageBackend
from images.hostfile import HostFile

FORMAT = "raw"
PREALLOCATION = ("off", "falloc", "full")
CREATE_OPTIONS = ("size", "preallocation")
_FIRST_BLOCK = 4096  # file-posix allocate_first_block: zeros at the start so O_DIRECT probing works
_FILL_CHUNK = 1 << 20


class RawImage(ImageBackend):
    format_name = FORMAT
    supports_discard = True
    supports_write_zeroes = True
    takes_views = True

    def read(self, offset: int, length: int) -> bytes:
        return self.host.pread(offset, length)

    def read_into(self, offset: int, buffers: list[memoryview]) -> None:
        self.host.preadv(offset, buffers)

    def write(self, offset: int, data: bytes, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        self.host.pwrite(offset, data)
        trace.add("file", Act.WRITTEN, offset, len(data))

    def discard(self, offset: int, length: int, trace: Trace = NULL_TRACE) -> None:
        self.check_writable()
        freed = self.host.punch_hole(offset, length)
        if self.host.can_punch:
            trace.add("file", Act.PUNCHED, offset, length, host_bytes=freed)
        else:
            trace.add("file", Act.IGNORED, offset, length, "host file system cannot punch holes")

    def write_zeroes(self, offset: int, length: int, may_unmap: bool, trace: Trace = NULL_TRACE) -> bool:
        self.check_writable()
        if may_unmap and self.host_unmap and self.host.can_punch:
            freed = self.host.punch_hole(offset, length)
            trace.add("file", Act.PUNCHED, offset, length, "write-zeroes with MAY_UNMAP", freed)
            return True
        self.host.zero_range(offset, length)
        why = "MAY_UNMAP stripped: drive has discard=ignore" if may_unmap else "allocated zeros"
        trace.add("file", Act.ZEROED, offset, length, why)
        return True

    def reclaim(self) -> dict[str, str]:
        return {"discard": "the host range is punched (fallocate PUNCH_HOLE) where the host file system "
                           "can; reads zeros at once",
                "write-zeroes": "punched with MAY_UNMAP (and discard=unmap), else zeros allocated in place",
                "offline": "emu img compact rewrites it as a sparse file (qemu-img convert -S 4k)"}

    def layer_status(self, offset: int, length: int) -> BlockStatus:
        is_data, end = self.host.extent_at(offset)
        run = max(1, min(length, end - offset)) if end > offset else length
        return BlockStatus((Status.DATA if is_data else Status.ZERO) | Status.OFFSET_VALID, run, offset)


def open_raw(host: HostFile, *, read_only: bool) -> RawImage:
    return RawImage(host, host.size(), read_only=read_only)


def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    prealloc = f" preallocation={options['preallocation']}" if "preallocation" in options else ""
    return f"size={size}{prealloc}"


def create(path: str, size: int, options: dict[str, str]) -> None:
    mode = options.get("preallocation", "off")
    if mode not in PREALLOCATION:
        raise UsageError(f"raw: preallocation '{mode}' is not one of {', '.join(PREALLOCATION)}")
    host = HostFile(path, writable=True, create=True)
    try:
        host.truncate(size)
        if mode == "off":
            host.pwrite(0, bytes(min(_FIRST_BLOCK, size)))
        elif mode == "falloc":
            host.allocate(0, size)
        else:
            zeros = bytes(_FILL_CHUNK)
            for start in range(0, size, _FILL_CHUNK):
                host.pwrite(start, zeros[:min(_FILL_CHUNK, size - start)])
            host.sync_all()
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None
    finally:
        host.close()
