"""The host-file (protocol) layer: the only place that touches the host file system.

Formats never call `os` themselves: they read and write through a `HostFile`, so hole punching,
SEEK_DATA/SEEK_HOLE and st_blocks accounting happen here once, and tests can record every
mutation (`journal`) to simulate power loss at any write.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import os
import stat

from emu.block.payload import is_payload
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


class _PayloadRuns:
    """Where a host file holds synthetic payload: sorted, disjoint [start, end) runs.

    The payload is allocated with fallocate, whose unwritten extents SEEK_DATA reports as holes; the host file
    system would know the range as data had it been written, so this remembers it for it, by file identity (device
    and inode, which survive the renames of a snapshot), for every HostFile of that file in this process."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)
        j = bisect.bisect_right(self.starts, end)
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [start], [end]

    def remove(self, start: int, end: int) -> None:
        i = bisect.bisect_right(self.ends, start)
        j = bisect.bisect_left(self.starts, end)
        if i >= j:
            return
        keep = [(s, e) for s, e in ((self.starts[i], start), (end, self.ends[j - 1])) if s < e]
        self.starts[i:j], self.ends[i:j] = [s for s, _ in keep], [e for _, e in keep]

    def at(self, offset: int) -> tuple[bool, int | None]:
        """Whether `offset` is in a run, and where that run ends (or where the next one starts, None: none)."""
        i = bisect.bisect_right(self.starts, offset) - 1
        if i >= 0 and offset < self.ends[i]:
            return True, self.ends[i]
        return False, self.starts[i + 1] if i + 1 < len(self.starts) else None


_PAYLOAD_RUNS: dict[tuple[int, int], _PayloadRuns] = {}


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
        st = os.fstat(self.fd)
        self._identity = (st.st_dev, st.st_ino)
        if create:
            _PAYLOAD_RUNS.pop(self._identity, None)     # a new file under an old inode number holds nothing
        self.writable = writable
        self.cache = cache
        self.journal: list | None = None
        self.synthetic = False          # writes of the synthetic payload allocate instead (emu.block.payload)
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
        if self.synthetic and is_payload(data):
            self.allocate(offset, len(data))
            _PAYLOAD_RUNS.setdefault(self._identity, _PayloadRuns()).add(offset, offset + len(data))
            return
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
        self._forget_payload(offset, length)
        if self.journal is not None:
            self.journal.append(("punch", (offset, length)))
        return max(0, before - self.allocated_bytes())

    def zero_range(self, offset: int, length: int) -> None:
        """Make a range read as zeros and stay allocated (FALLOC_FL_ZERO_RANGE, else written zeros)."""
        if length <= 0:
            return
        self._forget_payload(offset, length)
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

        A trailing hole (ENXIO) ends at the file size; failures are reported as data, as QEMU does. Synthetic
        payload counts as data.
        """
        is_data, end = self._seek(offset)
        runs = _PAYLOAD_RUNS.get(self._identity)
        if runs is None:
            return is_data, end
        inside, boundary = runs.at(offset)
        if inside:          # a page of it read into the host's cache shows as data too, up to where it ends
            return True, max(boundary, end) if is_data else boundary
        if is_data:
            return True, end
        return False, end if boundary is None else min(end, boundary)

    def _forget_payload(self, offset: int, length: int) -> None:
        runs = _PAYLOAD_RUNS.get(self._identity)
        if runs is not None:
            runs.remove(offset, offset + length)

    def _seek(self, offset: int) -> tuple[bool, int]:
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
