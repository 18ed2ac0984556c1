"""Hypothesis against virtio-blk-pci: random descriptor tables, available entries, request headers and
discard / write-zeroes segments. Every outcome is exact (a status, or a broken device with NEEDS_RESET and a named
reason), nothing raises, nothing hangs, and a request that fails leaves the image as it was."""

from __future__ import annotations

import tempfile

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controllers.drivers.virtio_blk import header, segment
from controllers.virtio import layouts as L
from tests.support import time_limit
from tests.virtio_support import RAM, close, make_virtio_blk, run

DISK = 1 << 20
SECTORS = DISK // 512
BUF = 0x10000                     # below the driver's rings: a scratch area the descriptors may point into

addresses = st.sampled_from([BUF, BUF, BUF + 512, RAM - 16, RAM, 0, 2**64 - 8]) | st.integers(0, RAM + 4096)
lengths = st.sampled_from([1, 16, 16, 17, 512, 513, 32, 0, 1 << 31]) | st.integers(0, 70000)
flags = st.sampled_from([0, 1, 2, 3, 3, 2, 4, 5, 6]) | st.integers(0, 0xFFFF)
nexts = st.integers(0, 6) | st.sampled_from([255, 256, 300])
random_tables = st.lists(st.tuples(addresses, lengths, flags, nexts), min_size=1, max_size=6)
# a well-formed header + status chain with one descriptor replaced by a random one
valid = [(BUF, 16, L.VIRTQ_DESC_F_NEXT, 1), (BUF + 512, 513, L.VIRTQ_DESC_F_WRITE, 0)]
mutated = st.builds(lambda i, d: [d if n == i else v for n, v in enumerate(valid)], st.integers(0, 2),
                    st.tuples(addresses, lengths, flags, nexts))
descriptors = random_tables | mutated
headers = st.sampled_from([header(L.BLK_T_FLUSH), header(L.BLK_T_IN), header(L.BLK_T_OUT), header(L.BLK_T_GET_ID),
                           header(L.BLK_T_DISCARD) + segment(0, 1), header(L.BLK_T_IN, SECTORS)])
types = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 11, 13, 14, 0x80000001]) | st.integers(0, 2**32 - 1)
sectors = st.sampled_from([0, 1, SECTORS - 1, SECTORS, 2**63]) | st.integers(0, 2**64 - 1)
segments = st.lists(st.tuples(sectors, st.sampled_from([0, 1, 8, SECTORS, 4194304]) | st.integers(0, 2**32 - 1),
                              st.sampled_from([0, 1, 2, 3]) | st.integers(0, 2**32 - 1)), max_size=3)


def _fresh():
    return make_virtio_blk(tempfile.mkdtemp(), size=DISK)


@settings(max_examples=40, deadline=None)
@given(table=descriptors, head=st.sampled_from([0, 0, 0, 1, 255, 256]), fill=headers | st.binary(max_size=32))
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
@given(type_=types, sector=sectors, ioprio=st.integers(0, 2**32 - 1), segs=segments,
       extra=st.binary(max_size=20), data_in_len=st.sampled_from([0, 1, 511, 512, 1024]))
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
