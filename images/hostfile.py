"""The host-file (protocol) layer: the only place that touches the host file system.

Formats never call `os` themselves: they read and write through a `HostFile`, so hole punching,
SEEK_DATA/SEEK_HOLE and st_blocks accounting happen here once, and tests can record every
mutation (`journal`) to simulate power loss at any write.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from emu.errors import ImageError

# linux/falloc.h
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int

CACHE_MODES = ("writeback", "unsafe", "writethrough")
_IOV_MAX = os.sysconf("SC_IOV_MAX")


class HostFile:
    """One open host file. Reads past EOF return zeros, as a format layer expects.

    `journal`, when a list, receives ``(op, args)`` for every mutation and ``("sync", ())`` for every
    durability barrier, in order; crash tests replay prefixes of it.
    """

    def __init__(self, path: str, *, writable: bool, create: bool = False, cache: str = "writeback") -> None:
        if cache not in CACHE_MODES:
            raise ImageError(f"unknown cache mode '{cache}' (expected one of {', '.join(CACHE_MODES)})",
                             path=path)
        flags = os.O_RDWR if writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | os.O_TRUNC
        if cache == "writethrough":
            flags |= os.O_DSYNC
        try:
            self.fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ImageError(f"cannot open: {exc.strerror}", path=path) from None
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise ImageError("not a regular file", path=path)
        self.path = path
        self.writable = writable
        self.cache = cache
        self.journal: list | None = None
        self.can_punch = True
        self._size = os.fstat(self.fd).st_size

    # -- reads -------------------------------------------------------------------------------------
    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def preadv(self, offset: int, buffers: list[memoryview]) -> None:
        """Read straight into `buffers` (os.preadv, no intermediate copy); past EOF they get zeros."""
        for first in range(0, len(buffers), _IOV_MAX):
            chunk = buffers[first:first + _IOV_MAX]
            done = os.preadv(self.fd, chunk, offset)
            for buf in chunk:
                n = len(buf)
                if done < n:
                    buf[max(done, 0):] = bytes(n - max(done, 0))
                done -= n
                offset += n

    def pread_exact(self, offset: int, length: int) -> bytes:
        """Read without zero padding (the caller checks for truncation)."""
        return os.pread(self.fd, length, offset)

    # -- mutations ---------------------------------------------------------------------------------
    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.journal is not None:
            self.journal.append(("pwrite", (offset, bytes(data))))
        done = os.pwrite(self.fd, data, offset)
        while done < len(data):  # short writes are legal; finish them
            done += os.pwrite(self.fd, memoryview(data)[done:], offset + done)
        end = offset + len(data)
        if end > self._size:
            self._size = end

    def punch_hole(self, offset: int, length: int) -> int:
        """Deallocate a range, keeping the file size. Returns the bytes of host allocation released."""
        if length <= 0 or not self.can_punch:
            return 0
        before = self.allocated_bytes()
        if not self._fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
            self.can_punch = False  # as file-posix: ENOTSUP disables discard for this node
            return 0
        if self.journal is not None:
            self.journal.append(("punch", (offset, length)))
        return max(0, before - self.allocated_bytes())

    def zero_range(self, offset: int, length: int) -> None:
        """Make a range read as zeros and stay allocated (FALLOC_FL_ZERO_RANGE, else written zeros)."""
        if length <= 0:
            return
        if not self._fallocate(FALLOC_FL_ZERO_RANGE, offset, length):
            self.pwrite(offset, bytes(length))
            return
        if self.journal is not None:
            self.journal.append(("zero", (offset, length)))
        end = offset + length
        if end > self._size:
            self._size = end

    def allocate(self, offset: int, length: int) -> None:
        """posix_fallocate: reserve blocks (unwritten extents read as zeros and look like holes)."""
        if length <= 0:
            return
        if self.journal is not None:
            self.journal.append(("falloc", (offset, length)))
        os.posix_fallocate(self.fd, offset, length)
        self._size = max(self._size, offset + length)

    def truncate(self, size: int) -> None:
        if self.journal is not None:
            self.journal.append(("truncate", (size,)))
        os.ftruncate(self.fd, size)
        self._size = size

    def sync(self) -> None:
        """Durability barrier (fdatasync), skipped in cache=unsafe."""
        if self.journal is not None:
            self.journal.append(("sync", ()))
        if self.cache != "unsafe" and self.writable:
            os.fdatasync(self.fd)

    def sync_all(self) -> None:
        """Make data and file metadata durable (fsync), whatever the cache mode: what creating a
        preallocated file ends with (file-posix's full preallocation), so its size and blocks are kept."""
        if self.journal is not None:
            self.journal.append(("sync", ()))
        os.fsync(self.fd)

    # -- allocation status -------------------------------------------------------------------------
    def size(self) -> int:
        return self._size

    def allocated_bytes(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def extent_at(self, offset: int) -> tuple[bool, int]:
        """(is_data, end) for the data or hole run containing `offset`, from SEEK_DATA/SEEK_HOLE.

        A trailing hole (ENXIO) ends at the file size; failures are reported as data, as QEMU does.
        """
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False, max(self._size, offset)
            return True, max(self._size, offset)
        if data > offset:
            return False, data
        try:
            return True, os.lseek(self.fd, offset, os.SEEK_HOLE)
        except OSError:
            return True, self._size

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _fallocate(self, mode: int, offset: int, length: int) -> bool:
        if _fallocate(self.fd, mode, offset, length) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(err, os.strerror(err), self.path)
