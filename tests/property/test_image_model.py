"""Random write/discard/write-zeroes/read/flush/reopen sequences against the reference model.

Each variant (raw; qcow2 v2 and v3 at several cluster sizes; lazy refcounts; over qcow2 and raw
backing files) must read exactly what the model says after every step and after reopening.
"""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions
from images import open_image
from tests.support import VARIANTS, Variant, make_variant, model_discard


def ops_for(variant: Variant):
    size = variant.size
    sector = st.integers(0, size // 512 - 1).map(lambda s: s * 512)
    anywhere = st.integers(0, size - 1)

    def ranged(kind):
        start = st.one_of(sector, anywhere)
        return start.flatmap(lambda off: st.tuples(
            st.just(kind), st.just(off), st.integers(1, min(size - off, 3 * 65536 + 1000))))

    write = ranged("write").flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]),
                                                        st.integers(1, 255)))
    zeroes = ranged("zero").flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]),
                                                        st.booleans()))
    return st.lists(st.one_of(write, ranged("discard"), zeroes, ranged("read"),
                              st.tuples(st.just("flush")), st.tuples(st.just("reopen"))), max_size=20)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_random_operations_match_the_model(variant, discard):
    @given(ops=ops_for(variant))
    def check(ops):
        with tempfile.TemporaryDirectory() as tmp:
            path, model = make_variant(tmp, variant)
            options = DriveOptions(discard=discard)
            drive = Drive(open_image(path, variant.fmt), options)
            try:
                for op in ops:
                    kind = op[0]
                    if kind == "write":
                        _, offset, length, byte = op
                        assert drive.write(offset, bytes([byte]) * length).ok
                        model[offset:offset + length] = bytes([byte]) * length
                    elif kind == "discard":
                        _, offset, length = op
                        assert drive.discard(offset, length).ok
                        model_discard(variant, model, offset, length, discard == "unmap")
                    elif kind == "zero":
                        _, offset, length, may_unmap = op
                        assert drive.write_zeroes(offset, length, may_unmap=may_unmap).ok
                        model[offset:offset + length] = bytes(length)
                    elif kind == "read":
                        _, offset, length = op
                        done = drive.read(offset, length)
                        assert done.ok and done.data == bytes(model[offset:offset + length])
                    elif kind == "flush":
                        assert drive.flush().ok
                    else:
                        drive.close()
                        drive = Drive(open_image(path, variant.fmt), options)
                assert drive.read(0, variant.size).data == bytes(model)
            finally:
                drive.close()
            image = open_image(path, variant.fmt, read_only=True)
            try:
                assert image.read(0, variant.size) == bytes(model)
                if variant.fmt == "qcow2":
                    result = image.check()
                    assert (result.corruptions, result.leaks, result.check_errors) == (0, 0, 0), result.messages
            finally:
                image.close()

    check()
