"""The synthetic payload: guest data that costs the host its space but not its bytes.

Large scenarios (tens of GiB written) cannot afford to make, copy and write real content. In synthetic mode the
guest writes this recognisable page over and over; its requests travel the whole real path (driver, controller,
Drive, format), and the host file of an image opened for synthetic payload, seeing a write made only of it,
allocates the range (fallocate) instead of writing it. Host allocation stays real (st_blocks); what the range
reads back is zeros, so content is not checkable in this mode. A real-payload run never meets the page: it is
text no random or pattern write produces, and only a host file told to look for it looks.
"""

from __future__ import annotations

PAGE_SIZE = 4096
PAGE = (b"emu synthetic payload: this page stands for guest data that was never stored\n" * 54)[:PAGE_SIZE]
_BUFFER = PAGE * 2048               # 8 MiB: ext4's largest writeback chunk, and more than any request
_VIEW = memoryview(_BUFFER)


def payload(length: int) -> memoryview:
    """`length` bytes of the payload, starting on a page boundary (no copy for lengths up to 8 MiB)."""
    if length <= len(_BUFFER):
        return _VIEW[:length]
    return memoryview(PAGE * -(-length // PAGE_SIZE))[:length]


def is_payload(data: bytes | bytearray | memoryview) -> bool:
    """Whether `data` is the payload from its first byte (bytes.startswith: one memcmp per 8 MiB)."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n < PAGE_SIZE or not _BUFFER.startswith(view[:PAGE_SIZE]):
        return False
    return all(_BUFFER.startswith(view[start:start + len(_BUFFER)]) for start in range(0, n, len(_BUFFER)))
