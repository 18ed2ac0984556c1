"""`emu img bench`: qemu-img bench's request loop, run through the Drive (block layer + image).

Requests go to offset, offset+step, ... wrapping at the image size, as qemu-img bench does
(qemu-img.c bench_cb). emu executes them one at a time; `depth` is accepted for command
compatibility and only affects when a draining flush happens. Only the request loop is timed, as
qemu-img times it, so "Run completed in S seconds." lines are comparable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from emu.block import Drive, Op, Request
from emu.errors import BlockError


@dataclass(frozen=True, slots=True)
class BenchConfig:
    count: int = 75000
    depth: int = 64
    bufsize: int = 4096
    step: int = 0          # 0: the buffer size
    offset: int = 0
    write: bool = False
    pattern: int = 0
    flush_interval: int = 0


def run_bench(drive: Drive, cfg: BenchConfig) -> float:
    """Run the requests; returns the elapsed seconds. A failed request raises BlockError."""
    size = drive.capacity
    step = cfg.step or cfg.bufsize
    buf = bytes([cfg.pattern]) * cfg.bufsize
    execute = drive.execute
    op = Op.WRITE if cfg.write else Op.READ
    payload = buf if cfg.write else None
    bufsize = cfg.bufsize
    offset = cfg.offset
    flush_every = cfg.flush_interval
    flush_req = Request.flush()
    start = time.perf_counter()
    for n in range(1, cfg.count + 1):
        done = execute(Request(op, offset, bufsize, payload))
        if done.error is not None:
            raise BlockError(done.error.errno, f"Failed request: {done.error}")
        offset = (offset + step) % size
        if flush_every and n % flush_every == 0:
            done = execute(flush_req)
            if done.error is not None:
                raise BlockError(done.error.errno, f"Failed flush request: {done.error}")
    return time.perf_counter() - start
