"""The image formats the contract and model suites run on, one entry each, with what each promises as data.

A new format (or chain) is one `FormatCase` in `FORMATS`: the backend contract (test_backend_contract.py) and the
random-operation model (tests/images/property/test_image_model.py) then run on it. The capabilities are written from the
documented semantics (docs/formats.md, "What a discard gives back, per format"), not read from the code under test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from emu.block import Drive
from images import open_image
from images.backend import ImageBackend
from tests.support import MiB, Variant


@dataclass(frozen=True)
class FormatCase(Variant):
    """How to make the image (the `Variant` fields: format, create options, a filled backing file) and what it
    promises.

    discard_unit: under discard=unmap a discard makes every whole, aligned unit of this many bytes it covers read
        zeros and leaves every other byte as it was; 0: a discard changes nothing (no discard, or ignored).
    deferred_discard: a unit only partly discarded may still turn to zeros, whole, at a later discard touching it
        (VirtualBox remembers the discarded sectors of a block until the whole block is discarded).
    discard_metadata: host bytes a discard may add where the image holds no data yet: metadata it fetches or
        writes (qcow2 allocates the L2 tables it visits, VHDX writes its metadata log of at most log_size, 1 MiB).
        Over data a discard never adds host bytes.
    zeroes_unmap: under discard=unmap, a write-zeroes with MAY_UNMAP over whole units hands their host space back.
    checks: the format has consistency checks (`qemu-img check`); raw and vpc have none.
    """

    open_options: dict = field(default_factory=dict)
    discard_unit: int = 0
    deferred_discard: bool = False
    discard_metadata: int = 0
    zeroes_unmap: bool = False
    checks: bool = True

    def __post_init__(self) -> None:
        # the discard model has no rule for a partial unit at the end of the disk
        assert not self.discard_unit or self.size % self.discard_unit == 0, self.name


CLUSTER = 65536


def qcow2(name: str, options: dict | None = None, *, size: int = 4 * MiB, backing: str | None = None) -> FormatCase:
    """A qcow2 entry whose discards zero whole clusters (v3, or v2 without a backing file) and free them, and
    may first allocate the L2 tables of the range: a cluster of cluster/8 entries each, as qcow2_cluster_discard
    fetches the L2 table of every slice it visits."""
    options = options or {}
    cluster = int(options.get("cluster_size", CLUSTER))
    l2_tables = -(-size // (cluster * cluster // 8))
    return FormatCase(name, "qcow2", options, backing, size, discard_unit=cluster, discard_metadata=l2_tables * cluster,
                      zeroes_unmap=True)


FORMATS = [
    FormatCase("raw", "raw", discard_unit=1, zeroes_unmap=True, checks=False),
    qcow2("qcow2-v2", {"compat": "0.10"}),
    qcow2("qcow2-v3"),
    qcow2("qcow2-v3-512", {"cluster_size": "512"}),
    qcow2("qcow2-v3-4k", {"cluster_size": "4096"}),
    qcow2("qcow2-v3-2m", {"cluster_size": str(2 * MiB)}, size=8 * MiB),
    qcow2("qcow2-v3-lazy", {"lazy_refcounts": "on", "cluster_size": "4096"}),
    FormatCase("vdi", "vdi"),
    FormatCase("vdi-virtualbox", "vdi", open_options={"discard": "virtualbox"}, discard_unit=MiB,
               deferred_discard=True),
    FormatCase("vpc", "vpc", {"subformat": "dynamic", "force_size": "on"}, checks=False),
    FormatCase("vhdx", "vhdx", {"block_size": str(MiB)}, discard_unit=MiB, discard_metadata=MiB, zeroes_unmap=True),
    FormatCase("vmdk", "vmdk"),
    FormatCase("vmdk-zeroed-grain", "vmdk", {"zeroed_grain": "on"}),
    # chains: an overlay on a filled base (the base's tail, past its shorter size, reads zeros)
    qcow2("qcow2-v3-over-qcow2", backing="qcow2"),
    qcow2("qcow2-v3-over-vdi", backing="vdi"),
    qcow2("qcow2-v3-4k-over-raw", {"cluster_size": "4096"}, backing="raw"),
    # v2 has no zero flag: a discard would expose the backing data, so it is ignored; zero writes write zeros
    FormatCase("qcow2-v2-over-qcow2", "qcow2", {"compat": "0.10"}, backing="qcow2"),
]


def open_case(path: str, case: FormatCase, *, read_only: bool = False) -> ImageBackend:
    return open_image(path, case.fmt, read_only=read_only, options=case.open_options)


def host_bytes(path: str) -> int:
    """Host space the file holds (st_blocks), as `emu img info` reports its disk size."""
    return os.stat(path).st_blocks * 512


def discard_model(case: FormatCase, model: bytearray, offset: int, length: int) -> list[tuple[int, int]]:
    """Apply a discard the Drive passed on (discard=unmap) to the guest view `model`: whole units read zeros.
    Returns the (offset, length) of the partly covered units that may also have turned to zeros, whole (deferred
    discards); the caller reads them and settles the model with `settle`."""
    unit = case.discard_unit
    if not unit or not length:
        return []
    start, end = -(-offset // unit) * unit, (offset + length) // unit * unit
    if end > start:
        model[start:end] = bytes(end - start)
    if not case.deferred_discard:
        return []
    partial = {offset // unit * unit} if offset % unit else set()
    if (offset + length) % unit:
        partial.add((offset + length) // unit * unit)
    return [(u, unit) for u in sorted(partial)]


def settle(model: bytearray, maybe: list[tuple[int, int]], read) -> None:
    """Each unit in `maybe` must read as the model says or as zeros, whole; the model takes what was read.
    `read(offset, length)` returns the guest data."""
    for offset, length in maybe:
        data = read(offset, length)
        assert data in (bytes(model[offset:offset + length]), bytes(length)), \
            f"unit {offset:#x}+{length:#x} is neither as it was nor all zeros after a discard"
        model[offset:offset + length] = data


def apply(drive: Drive, case: FormatCase, model: bytearray, op: tuple) -> None:
    """Send one guest operation through the Drive, check it succeeded (and a read's data), update the model.
    ("write", offset, length, byte), ("zero", offset, length, may_unmap), ("discard", offset, length),
    ("read", offset, length), ("flush",)."""
    kind = op[0]
    if kind == "write":
        _, offset, length, byte = op
        assert drive.write(offset, bytes([byte]) * length).ok
        model[offset:offset + length] = bytes([byte]) * length
    elif kind == "zero":
        _, offset, length, may_unmap = op
        assert drive.write_zeroes(offset, length, may_unmap=may_unmap).ok
        model[offset:offset + length] = bytes(length)
    elif kind == "discard":
        _, offset, length = op
        assert drive.discard(offset, length).ok
        if drive.options.unmap:
            settle(model, discard_model(case, model, offset, length), lambda o, n: drive.read(o, n).data)
    elif kind == "read":
        _, offset, length = op
        done = drive.read(offset, length)
        assert done.ok and done.data == bytes(model[offset:offset + length]), f"read {offset:#x}+{length:#x}"
    else:
        assert kind == "flush" and drive.flush().ok
