"""Random guest I/O mixed with snapshot, revert, delete, commit and stream, on every format with a
parent link, against a reference model of the guest view and of every snapshot's view.

The model: a snapshot freezes the active view; revert makes the active view a snapshot's; deleting a
snapshot, committing and streaming change no view (commit changes the parent's view to the active's,
so it is only drawn when the active image is the parent's only child). A discard may leave each byte
as it was or make it zero, whatever the format does, but must never let a parent's data show through.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions
from images import chain, create_image, open_image, snapshots

MiB = 1 << 20
SIZE = 4 * MiB
FORMATS = {"qcow2": ("qcow2", {}), "qcow2-v2": ("qcow2", {"compat": "0.10"}), "vdi": ("vdi", {}),
           "vpc": ("vhd", {"force_size": "on"}), "vhdx": ("vhdx", {"block_size": str(MiB)}),
           "vmdk": ("vmdk", {})}

ranges = st.integers(0, SIZE - 1).flatmap(
    lambda off: st.tuples(st.just(off), st.integers(1, min(SIZE - off, 3 * MiB))))
ops = st.lists(st.one_of(
    st.tuples(st.just("write"), ranges, st.integers(1, 255)),
    st.tuples(st.just("discard"), ranges),
    st.tuples(st.just("zero"), ranges, st.booleans()),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("revert"), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 7)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("stream")),
), min_size=4, max_size=16)


class Model:
    """Guest views, and the tree: which snapshot each snapshot and the active image are based on."""

    def __init__(self) -> None:
        self.active = bytearray(SIZE)
        self.views: dict[str, bytes] = {}
        self.parent: dict[str, str | None] = {}     # snapshot -> its parent snapshot
        self.active_parent: str | None = None
        self.counter = 0

    def children(self, name: str) -> int:
        return sum(p == name for p in self.parent.values()) + (self.active_parent == name)


@pytest.mark.parametrize("name", list(FORMATS))
def test_random_chain_operations_match_the_model(name):
    fmt_ext, options = FORMATS[name]
    fmt = "qcow2" if name.startswith("qcow2") else name

    @settings(max_examples=40)
    @given(sequence=ops)
    def check(sequence):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"disk.{fmt_ext}")
            create_image(path, fmt, SIZE, options)
            model = Model()
            drive = Drive(open_image(path), DriveOptions(discard="unmap"))
            try:
                for op in sequence:
                    drive = apply(op, path, drive, model)
                    assert drive.read(0, SIZE).data == bytes(model.active), op
            finally:
                drive.close()
            for tag, expected in model.views.items():
                image = open_image(snapshots.snapshot_file(path, tag), read_only=True)
                try:
                    assert image.read(0, SIZE) == expected, f"snapshot {tag}"
                finally:
                    image.close()

    check()


def apply(op, path: str, drive: Drive, model: Model) -> Drive:
    kind = op[0]
    if kind == "write":
        (offset, length), byte = op[1], op[2]
        assert drive.write(offset, bytes([byte]) * length).ok
        model.active[offset:offset + length] = bytes([byte]) * length
        return drive
    if kind == "zero":
        (offset, length), may_unmap = op[1], op[2]
        assert drive.write_zeroes(offset, length, may_unmap=may_unmap).ok
        model.active[offset:offset + length] = bytes(length)
        return drive
    if kind == "discard":
        offset, length = op[1]
        assert drive.discard(offset, length).ok
        got = drive.read(offset, length).data
        before = model.active[offset:offset + length]
        sector = offset - offset % 512
        while sector < offset + length:   # each sector as it was, or zeros: never the parent's data
            lo, hi = max(sector, offset) - offset, min(sector + 512, offset + length) - offset
            piece = got[lo:hi]
            assert piece == before[lo:hi] or piece.count(0) == len(piece), f"discard {offset}+{length} at +{lo}"
            sector += 512
        model.active[offset:offset + length] = got
        return drive
    drive.close()
    chain_op(kind, op, path, model)
    return Drive(open_image(path), DriveOptions(discard="unmap"))


def chain_op(kind: str, op, path: str, model: Model) -> None:
    names = sorted(model.views)
    if kind == "snapshot":
        model.counter += 1
        tag = f"s{model.counter}"
        snapshots.create(path, tag)
        model.views[tag] = bytes(model.active)
        model.parent[tag] = model.active_parent
        model.active_parent = tag
    elif kind == "revert" and names:
        tag = names[op[1] % len(names)]
        snapshots.revert(path, tag)
        model.active = bytearray(model.views[tag])
        model.active_parent = tag
    elif kind == "delete" and names:
        tag = names[op[1] % len(names)]
        if model.children(tag) > 1:
            with pytest.raises(Exception, match="children"):
                snapshots.delete(path, tag)
            return
        snapshots.delete(path, tag)
        # the merged file takes the child's place: a child snapshot keeps its name and view
        for child, parent in model.parent.items():
            if parent == tag:
                model.parent[child] = model.parent[tag]
        if model.active_parent == tag:
            model.active_parent = model.parent[tag]
        del model.views[tag], model.parent[tag]
    elif kind == "commit" and model.active_parent is not None and model.children(model.active_parent) == 1:
        chain.commit(path)
        model.views[model.active_parent] = bytes(model.active)
    elif kind == "stream" and model.active_parent is not None:
        chain.stream(path)
        model.active_parent = None
