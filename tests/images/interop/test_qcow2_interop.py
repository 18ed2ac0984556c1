"""qemu-img is the oracle, in both directions.

- Images qemu-img creates and qemu-io writes (discards, zero writes, compressed clusters, backing
  chains, every preallocation mode, internal snapshots, dirty lazy-refcount images) read here exactly
  as `qemu-img convert -O raw` reads them, and `emu img map` prints what `qemu-img map` prints.
- Images emu creates are byte-identical to qemu-img's; images emu writes through `emu io` pass
  `qemu-img check`, equal a raw reference under `qemu-img compare`, and map identically.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.cli import main as emu_main
from images import create_image, open_image
from tests.conftest import run
from tests.support import VARIANTS, emu_map, emu_read, make_variant, model_discard, qemu_part

MiB = 1 << 20


def qemu_map(qemu_img: str, path: str, *extra: str) -> list[dict]:
    return json.loads(run(qemu_img, "map", "--output=json", *extra, path).stdout)


def qemu_read(qemu_img: str, path: str, tmp_path, fmt: str = "qcow2") -> bytes:
    out = str(tmp_path / "qemu-view.raw")
    run(qemu_img, "convert", "-f", fmt, "-O", "raw", path, out)
    data = open(out, "rb").read()
    os.unlink(out)
    return data


def assert_same_view(qemu_img: str, path: str, tmp_path, fmt: str = "qcow2") -> None:
    assert emu_read(path) == qemu_read(qemu_img, path, tmp_path, fmt)
    assert emu_map(path) == qemu_map(qemu_img, path)


# -- create parity --------------------------------------------------------------------------------------
CREATE_CASES = [
    ("1G", {}), ("1G", {"compat": "0.10"}), ("16T", {}), ("1G", {"cluster_size": "512"}),
    ("20G", {"cluster_size": "512"}), ("1G", {"cluster_size": "4096"}), ("1G", {"cluster_size": "2M"}),
    ("3G", {"lazy_refcounts": "on"}), ("64M", {"preallocation": "metadata"}),
    ("64M", {"preallocation": "falloc"}), ("16M", {"preallocation": "full"}),
    ("1G", {"refcount_bits": "1"}), ("1G", {"refcount_bits": "64"}), ("1000M", {"cluster_size": "65536"}),
    ("8M", {"cluster_size": "512", "preallocation": "falloc"}), ("7M", {"compat": "0.10", "preallocation": "metadata"}),
]


@pytest.mark.parametrize("size,options", CREATE_CASES, ids=[f"{s}-{o}" for s, o in CREATE_CASES])
def test_fresh_images_are_byte_identical_to_qemu_img(qemu_img, tmp_path, size, options):
    ours, theirs = str(tmp_path / "emu.qcow2"), str(tmp_path / "qemu.qcow2")
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    run(qemu_img, "create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), theirs, size)
    assert emu_main(["img", "create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), ours, size]) == 0
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert run(qemu_img, "check", ours).returncode == 0


def test_fresh_1g_image_is_196624_bytes(tmp_path):
    path = str(tmp_path / "a.qcow2")
    create_image(path, "qcow2", 1 << 30, {})
    assert os.path.getsize(path) == 196624


def test_overlay_header_matches_qemu_img(qemu_img, tmp_path):
    run(qemu_img, "create", "-q", "-f", "qcow2", str(tmp_path / "base.qcow2"), "64M")
    theirs, ours = str(tmp_path / "q.qcow2"), str(tmp_path / "e.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", theirs)
    create_image(ours, "qcow2", None, {}, backing="base.qcow2", backing_fmt="qcow2")
    assert open(ours, "rb").read() == open(theirs, "rb").read()


# -- qemu writes, emu reads -----------------------------------------------------------------------------
QEMU_WRITES = ["write -P 0x11 0 1M", "write -P 0x22 3M 300k", "discard 512k 128k", "write -z 2M 256k",
               "write -P 0x33 5M 64k", "write -z -u 5M 64k", "write -P 0x44 6M 4k", "discard 6M 2k",
               "write -P 0x55 7M 130k", "write -z 7M 10k"]


def qemu_io_all(qemu_io: str, path: str, commands: list[str], *extra: str) -> None:
    args = [qemu_io, *extra]
    for c in commands:
        args += ["-c", c]
    run(*args, path)


@pytest.mark.parametrize("options", [{}, {"compat": "0.10"}, {"cluster_size": "512"}, {"cluster_size": "4096"},
                                     {"cluster_size": "2M"}, {"refcount_bits": "8"}, {"lazy_refcounts": "on"}],
                         ids=str)
def test_images_written_by_qemu_io_read_and_map_identically(qemu_img, qemu_io, tmp_path, options):
    path = str(tmp_path / "q.qcow2")
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    run(qemu_img, "create", "-q", "-f", "qcow2", *(["-o", opts] if opts else []), path, "8M")
    qemu_io_all(qemu_io, path, QEMU_WRITES)
    assert_same_view(qemu_img, path, tmp_path)


@pytest.mark.parametrize("mode", ["off", "metadata", "falloc", "full"])
def test_preallocated_images_read_and_map_identically(qemu_img, qemu_io, tmp_path, mode):
    path = str(tmp_path / "p.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", f"preallocation={mode}", path, "4M")
    assert_same_view(qemu_img, path, tmp_path)
    qemu_io_all(qemu_io, path, ["write -P 0x66 64k 100k", "write -z 1M 64k"])
    assert_same_view(qemu_img, path, tmp_path)


@pytest.mark.parametrize("mode", ["off", "falloc", "full"])
def test_raw_images_read_and_map_identically(qemu_img, qemu_io, tmp_path, mode):
    path = str(tmp_path / "r.img")
    run(qemu_img, "create", "-q", "-f", "raw", "-o", f"preallocation={mode}", path, "4M")
    qemu_io_all(qemu_io, path, ["write -P 0x66 64k 100k", "discard 80k 20k", "write -z 1M 64k"], "-f", "raw")
    assert emu_read(path) == qemu_read(qemu_img, path, tmp_path, "raw")
    assert emu_map(path) == qemu_map(qemu_img, path, "-f", "raw")


def test_compressed_clusters_read_identically(qemu_img, qemu_io, tmp_path):
    src, dst = str(tmp_path / "src.qcow2"), str(tmp_path / "c.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", src, "4M")
    qemu_io_all(qemu_io, src, ["write -P 0x77 0 1M", "write -P 0x78 2M 200k"])
    run(qemu_img, "convert", "-c", "-O", "qcow2", src, dst)
    qemu_io_all(qemu_io, dst, ["write -P 0x79 64k 4k", "discard 1M 64k"])   # COW out of a compressed cluster
    assert_same_view(qemu_img, dst, tmp_path)
    ours = open_image(dst, read_only=True).check()
    theirs = json.loads(run(qemu_img, "check", "--output=json", dst).stdout)
    assert ours.compressed_clusters == theirs.get("compressed-clusters", 0) > 0
    assert ours.allocated_clusters == theirs["allocated-clusters"]


def test_three_deep_chain_reads_and_maps_identically(qemu_img, qemu_io, tmp_path):
    files = [str(tmp_path / f"l{i}.qcow2") for i in range(3)]
    run(qemu_img, "create", "-q", "-f", "qcow2", files[0], "8M")
    qemu_io_all(qemu_io, files[0], ["write -P 1 0 4M", "write -P 9 7M 1M"])
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "l0.qcow2", "-F", "qcow2", files[1])
    qemu_io_all(qemu_io, files[1], ["write -P 2 1M 1M", "discard 2M 64k", "write -z 3M 64k"])
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", files[2], "10M")
    qemu_io_all(qemu_io, files[2], ["write -P 3 1536k 1M", "write -z -u 64k 64k"])
    assert_same_view(qemu_img, files[2], tmp_path)


def test_raw_backing_file_and_short_backing_read_identically(qemu_img, qemu_io, tmp_path):
    base, top = str(tmp_path / "base.raw"), str(tmp_path / "top.qcow2")
    with open(base, "wb") as f:
        f.write(b"\x5a" * (3 * MiB))
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "8M")
    qemu_io_all(qemu_io, top, ["write -P 0x21 2M 2M"])
    assert_same_view(qemu_img, top, tmp_path)


def test_internal_snapshots_are_listed_and_clusters_counted(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "s.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", path, "8M")
    qemu_io_all(qemu_io, path, ["write -P 1 0 1M"])
    run(qemu_img, "snapshot", "-c", "first", path)
    qemu_io_all(qemu_io, path, ["write -P 2 64k 64k", "discard 512k 64k"])
    run(qemu_img, "snapshot", "-c", "second", path)
    assert_same_view(qemu_img, path, tmp_path)
    image = open_image(path, read_only=True)
    assert [s.name for s in image.snapshots] == ["first", "second"]
    result = image.check()
    assert (result.corruptions, result.leaks) == (0, 0)
    image.close()
    info = json.loads(subprocess.run(["emu", "img", "info", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)
    theirs = json.loads(run(qemu_img, "info", "--output=json", path).stdout)
    assert info["snapshots"] == theirs["snapshots"]
    assert subprocess.run(["emu", "img", "snapshot", "-l", path], capture_output=True, text=True).stdout == \
        run(qemu_img, "snapshot", "-l", path).stdout


def test_writing_over_snapshot_shared_clusters_copies_them(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "s.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", path, "8M")
    qemu_io_all(qemu_io, path, ["write -P 1 0 2M"])
    run(qemu_img, "snapshot", "-c", "snap", path)
    assert emu_main(["io", "-c", "write -P 7 100k 8k", "-c", "discard 1M 64k", "-c", "write -z -u 1536k 64k",
                     path]) == 0
    assert run(qemu_img, "check", path).returncode == 0
    assert_same_view(qemu_img, path, tmp_path)
    run(qemu_img, "snapshot", "-a", "snap", path)          # the snapshot still holds the old data
    assert emu_read(path)[:2 * MiB] == b"\x01" * (2 * MiB)


def test_dirty_lazy_refcount_image_is_repaired_on_read_write_open(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "lazy.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "8M")
    subprocess.run([qemu_io, "-c", "write -P 3 0 1M", "-c", "abort", path], capture_output=True)
    info = json.loads(run(qemu_img, "info", "--output=json", path).stdout)
    assert info["dirty-flag"] is True
    assert qemu_part(subprocess.run(["emu", "img", "info", path], capture_output=True, text=True).stdout) == \
        run(qemu_img, "info", path).stdout          # "cleanly shut down: no"
    image = open_image(path)                # read-write open repairs and clears the bit
    assert not image.dirty
    image.close()
    assert json.loads(run(qemu_img, "info", "--output=json", path).stdout)["dirty-flag"] is False
    assert run(qemu_img, "check", path).returncode == 0
    assert emu_read(path)[:MiB] == b"\x03" * MiB


def test_check_counters_match_qemu_img(qemu_img, qemu_io, tmp_path):
    path = str(tmp_path / "f.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", path, "8M")
    qemu_io_all(qemu_io, path, ["write -P 1 64k 64k", "write -P 2 0 64k", "write -P 3 128k 64k",
                                "write -z 1M 64k", "write -P 4 2M 64k", "write -z 2M 64k"])
    theirs = json.loads(run(qemu_img, "check", "--output=json", path).stdout)
    ours = json.loads(subprocess.run(["emu", "img", "check", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)
    assert ours == theirs


# -- emu writes, qemu reads -----------------------------------------------------------------------------
def emu_ops():
    size = 4 * MiB
    offset = st.one_of(st.integers(0, size // 512 - 1).map(lambda s: s * 512), st.integers(0, size - 1))
    def cmd(kind):
        return offset.flatmap(lambda o: st.tuples(st.just(kind), st.just(o), st.integers(1, min(size - o, 200000))))
    return st.lists(st.one_of(cmd("write"), cmd("discard"), cmd("zero"), cmd("zero-u")), min_size=1, max_size=12)


INTEROP_VARIANTS = [v for v in VARIANTS if v.name in ("qcow2-v3-64k", "qcow2-v3-512", "qcow2-v2-64k",
                                                     "qcow2-v3-over-qcow2", "qcow2-v3-lazy", "raw")]


@pytest.mark.parametrize("variant", INTEROP_VARIANTS, ids=lambda v: v.name)
def test_sequences_written_by_emu_io_pass_qemu_check_and_compare(qemu_img, tmp_path, variant):
    counter = iter(range(10**6))

    @settings(max_examples=12)
    @given(ops=emu_ops())
    def check(ops):
        work = tmp_path / f"case{next(counter)}"
        work.mkdir()
        path, model = make_variant(str(work), variant)
        commands = []
        for i, (kind, offset, length) in enumerate(ops):
            if kind == "write":
                pattern = i % 250 + 1
                commands.append(f"write -P {pattern} {offset} {length}")
                model[offset:offset + length] = bytes([pattern]) * length
            elif kind == "discard":
                commands.append(f"discard {offset} {length}")
                model_discard(variant, model, offset, length, True)
            else:
                commands.append(f"write -z {'-u ' if kind == 'zero-u' else ''}{offset} {length}")
                model[offset:offset + length] = bytes(length)
        args = ["io", "-f", variant.fmt]
        for c in commands:
            args += ["-c", c]
        assert emu_main(args + [path]) == 0
        reference = str(work / "reference.raw")
        with open(reference, "wb") as f:
            f.write(model)
        assert run(qemu_img, "compare", "-f", variant.fmt, "-F", "raw", path, reference, check=False).returncode == 0
        if variant.fmt == "qcow2":
            proc = run(qemu_img, "check", "--output=json", path, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        assert emu_map(path) == qemu_map(qemu_img, path, "-f", variant.fmt)

    check()
