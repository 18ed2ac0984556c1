"""Hypothesis against virtio-blk-pci: random descriptor tables, available entries, request headers and
discard / write-zeroes segments. Every outcome is exact (a status, or a broken device with NEEDS_RESET and a named
reason), nothing raises, nothing hangs, and a request that fails leaves the image as it was."""

from __future__ import annotations

import tempfile

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controllers.drivers.virtio_blk import header, segment
from controllers.virtio import layouts as L
from tests.contract.frontend_inputs import (
    BLK_DATA_IN,
    BLK_TYPES,
    CHAIN_HEADS,
    blk_headers,
    blk_sectors,
    blk_segments,
    descriptor_tables,
)
from tests.support import time_limit
from tests.virtio_support import RAM, close, make_virtio_blk, run

DISK = 1 << 20
SECTORS = DISK // 512
BUF = 0x10000                     # below the driver's rings: a scratch area the descriptors may point into


def _fresh():
    return make_virtio_blk(tempfile.mkdtemp(), size=DISK)


@settings(max_examples=40, deadline=None)
@given(table=descriptor_tables(RAM, BUF), head=CHAIN_HEADS, fill=blk_headers(SECTORS))
def test_random_chains_complete_or_break_the_device_exactly(table, head, fill):
    env = _fresh()
    env.mem.write(BUF, fill + bytes(32 - len(fill)))
    before = env.drive.read(0, DISK).data
    with time_limit(10):
        out = run(env, env.drv.pci.raw_chain(0, table, head=head))
    assert out.completed or out.broken
    event(f"broken: {env.transport.broken_reason}" if out.broken else "completed")
    if out.broken:
        assert env.transport.broken_reason and env.transport.status & L.STATUS_NEEDS_RESET
        assert env.drive.read(0, DISK).data == before
    else:
        assert out.used_len is not None and not env.transport.broken
    run(env, env.drv.pci.reset())                       # whatever happened, a reset brings the device back
    assert run(env, env.drv.probe()) and run(env, env.drv.flush()).ok
    close(env)


@settings(max_examples=60, deadline=None)
@given(type_=BLK_TYPES, sector=blk_sectors(SECTORS), ioprio=st.integers(0, 2**32 - 1), segs=blk_segments(SECTORS),
       extra=st.binary(max_size=20), data_in_len=BLK_DATA_IN)
def test_random_requests_get_an_exact_status_and_failures_touch_nothing(type_, sector, ioprio, segs, extra,
                                                                         data_in_len):
    env = _fresh()
    before = env.drive.read(0, DISK).data
    payload = b"".join(segment(s, n, f) for s, n, f in segs) + extra
    hdr = header(type_, sector % 2**64, ioprio)
    with time_limit(10):
        out = run(env, env.drv.raw(hdr, [payload], data_in_len))
    event(f"status {out.status}" if out.completed else "broken")
    if out.completed:
        assert out.status in (L.BLK_S_OK, L.BLK_S_IOERR, L.BLK_S_UNSUPP)
        assert out.used_len == data_in_len + 1
        if out.status != L.BLK_S_OK:
            assert env.drive.read(0, DISK).data == before
    else:
        assert out.broken and "discard/write_zeroes header too short" in env.transport.broken_reason
        assert env.drive.read(0, DISK).data == before
    close(env)
