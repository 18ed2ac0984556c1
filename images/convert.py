"""Copy a guest disk into a new image of any format (qemu-img convert), driven by block status.

Ranges the source reports as zeros are skipped (the new image reads zeros there). Inside data,
runs of at least `min_sparse` zero bytes, aligned to min_sparse, are not written either (-S, default
4 KiB as qemu-img); `min_sparse=0` writes everything. When the target has a backing file (-B), only
the 512-byte sectors that differ from what the target already reads are written.
"""

from __future__ import annotations

from collections.abc import Callable

from emu.block.backend import Status
from emu.errors import UsageError
from images.backend import ImageBackend

CHUNK = 2 << 20   # qemu-img convert's default buffer (IO_BUF_SIZE)
DEFAULT_MIN_SPARSE = 4096


def convert(source: ImageBackend, target: ImageBackend, *, min_sparse: int = DEFAULT_MIN_SPARSE,
            progress: Callable[[int, int], None] | None = None) -> int:
    """Copy source's guest view into target; returns the bytes written."""
    if min_sparse and (min_sparse % 512 or min_sparse & (min_sparse - 1)):
        raise UsageError("-S: the sparse size must be 0 or a power-of-two multiple of 512")
    size = min(source.virtual_size, target.virtual_size)
    written = 0
    offset = 0
    overlay = target.backing is not None
    while offset < size:
        status, _depth = source.status_above(offset, size - offset)
        n = min(status.length, CHUNK - offset % CHUNK)
        if status.flags & Status.ZERO and min_sparse and not overlay:
            offset += n
            continue
        data = source.read(offset, n)
        runs = differing_runs(data, target.read(offset, n)) if overlay else _data_runs(data, min_sparse, offset)
        for start, length in runs:
            target.write(offset + start, data[start:start + length])
            written += length
        offset += n
        if progress is not None:
            progress(offset, size)
    target.flush()
    return written


def differing_runs(data: bytes, current: bytes) -> list[tuple[int, int]]:
    """Runs of 512-byte sectors where data differs from what is there now (qemu-img compares by
    sector in convert -B and rebase)."""
    runs: list[tuple[int, int]] = []
    for pos in range(0, len(data), 512):
        if data[pos:pos + 512] != current[pos:pos + 512]:
            if runs and runs[-1][0] + runs[-1][1] == pos:
                runs[-1] = (runs[-1][0], runs[-1][1] + min(512, len(data) - pos))
            else:
                runs.append((pos, min(512, len(data) - pos)))
    return runs


def _data_runs(data: bytes, min_sparse: int, base: int) -> list[tuple[int, int]]:
    """Pieces of data to write: everything except aligned zero blocks of min_sparse bytes."""
    if not min_sparse:
        return [(0, len(data))]
    runs: list[tuple[int, int]] = []
    zero_block = bytes(min_sparse)
    pos = 0
    n = len(data)
    run_start = None
    while pos < n:
        block_end = min(n, (base + pos) // min_sparse * min_sparse + min_sparse - base)
        block = data[pos:block_end]
        if block == zero_block[:len(block)]:
            if run_start is not None:
                runs.append((run_start, pos - run_start))
                run_start = None
        elif run_start is None:
            run_start = pos
        pos = block_end
    if run_start is not None:
        runs.append((run_start, n - run_start))
    return runs
