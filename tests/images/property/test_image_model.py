"""Random write/discard/write-zeroes/read/flush/reopen sequences against the reference model.

Every format of the contract table (tests/contract/formats.py: raw; qcow2 v2 and v3 at several cluster sizes, lazy
refcounts; vdi with qemu's and VirtualBox's discard; vpc; vhdx; vmdk; qcow2 over vdi, raw and qcow2 backing files)
must read exactly what the model says after every step and after reopening, and pass its own check at the end.
"""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions
from tests.contract.formats import FORMATS, FormatCase, apply, open_case
from tests.support import make_variant


def ops_for(case: FormatCase):
    size = case.size
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


@pytest.mark.parametrize("case", FORMATS, ids=lambda case: case.name)
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_random_operations_match_the_model(case, discard):
    @given(ops=ops_for(case))
    def check(ops):
        with tempfile.TemporaryDirectory() as tmp:
            path, model = make_variant(tmp, case)
            options = DriveOptions(discard=discard)
            drive = Drive(open_case(path, case), options)
            try:
                for op in ops:
                    if op[0] == "reopen":
                        drive.close()
                        drive = Drive(open_case(path, case), options)
                    else:
                        apply(drive, case, model, op)
                assert drive.read(0, case.size).data == bytes(model)
            finally:
                drive.close()
            image = open_case(path, case, read_only=True)
            try:
                assert image.read(0, case.size) == bytes(model)
                if case.checks:
                    result = image.check()
                    assert (result.corruptions, result.leaks, result.check_errors) == (0, 0, 0), result.messages
            finally:
                image.close()

    check()
