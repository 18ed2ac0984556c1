"""The command line: qemu-img/qemu-io compatible output, exit codes, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from scenarios.machine import CONTROLLERS
from tests.conftest import run
from tests.support import qemu_part, without_reclaim

MiB = 1 << 20


def emu(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(["emu", *args], capture_output=True, text=True)
    if check and proc.returncode:
        pytest.fail(f"emu {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def qcow2(tmp_path, qemu_img, qemu_io):
    path = str(tmp_path / "d.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", path, "64M")
    run(qemu_io, "-c", "write -P 1 0 1M", "-c", "write -P 2 8M 64k", "-c", "discard 512k 64k", path)
    return path


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["img", "info", "/nonexistent/x.qcow2"], "/nonexistent/x.qcow2"),
    (["img", "create", "-f", "qcow2", "x.qcow2", "12q"], "invalid size"),
    (["img", "create", "-f", "qcow2", "-o", "cluster_size=3000", "x.qcow2", "1G"], "cluster size"),
    (["img", "create", "-f", "qcow2", "-o", "bogus=1", "x.qcow2", "1G"], "bogus"),
    (["img", "create", "-f", "qcow2", "-b", "base.qcow2", "x.qcow2"], "backing format"),
    (["img", "create", "-f", "qed", "x.img", "1G"], "unknown format"),
    (["img", "create", "-f", "qcow2", "-o", "cluster_size=1000", "x.qcow2", "1M"], "power of two"),
    (["img", "map", "--output=xml", "x"], "invalid choice"),
    (["img", "check", "-r", "everything", "x"], "invalid choice"),
    (["img", "frobnicate"], "unknown command"),
    (["io", "-c", "read 0 1k", "-d", "sometimes", "x"], "discard"),
    (["io", "--detect-zeroes", "unmap", "-d", "ignore", "-c", "read 0 1k", "x"], "detect-zeroes"),
    (["img", "bench", "--pattern", "300", "x"], "pattern"),
    (["nonsense"], "unknown command"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, args, needle):
    os.chdir(tmp_path)
    assert_one_line_error(emu(*args), needle)


def test_io_command_errors_are_one_line(qcow2):
    assert_one_line_error(emu("io", "-c", "frob 0 1", qcow2), "frob")
    assert_one_line_error(emu("io", "-c", "read 0", qcow2), "OFFSET LENGTH")
    assert_one_line_error(emu("io", "-c", "write -z -P 1 0 1k", qcow2), "-z")


def test_malformed_image_is_a_one_line_error_naming_file_and_field(tmp_path):
    path = str(tmp_path / "bad.qcow2")
    with open(path, "wb") as f:
        f.write(b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(12) + (30).to_bytes(4, "big") + bytes(100))
    assert_one_line_error(emu("img", "info", path), path, "cluster_bits")


def test_usage_without_arguments():
    proc = emu()
    assert proc.returncode == 1 and "usage: emu" in proc.stdout


# -- info, map, check ----------------------------------------------------------------------------------
def test_info_json_equals_qemu_img(qemu_img, qcow2, tmp_path):
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "d.qcow2", "-F", "qcow2", str(tmp_path / "top.qcow2"))
    for path in (qcow2, str(tmp_path / "top.qcow2")):
        ours = json.loads(emu("img", "info", "--output=json", path, check=True).stdout)
        theirs = json.loads(run(qemu_img, "info", "--output=json", path).stdout)
        assert without_reclaim(ours) == theirs


def test_info_human_equals_qemu_img(qemu_img, qcow2):
    assert qemu_part(emu("img", "info", qcow2, check=True).stdout) == run(qemu_img, "info", qcow2).stdout


@pytest.mark.parametrize("fmt,options,needle", [
    ("qcow2", "compat=0.10", "whole 64 KiB clusters are unallocated"),
    ("qcow2", "cluster_size=4k", "whole 4 KiB clusters"),
    ("vdi", "static=off", "ignored, as qemu's vdi driver"), ("vpc", "subformat=dynamic", "ignored"),
    ("vhdx", "block_size=1M", "whole 1 MiB blocks become PAYLOAD_BLOCK_UNMAPPED"),
    ("vmdk", "zeroed_grain=on", "whole 64 KiB grains are marked zeroed"), ("raw", "preallocation=off", "punched")])
def test_info_says_what_each_format_can_give_back(tmp_path, fmt, options, needle):
    path = str(tmp_path / f"d.{fmt}")
    emu("img", "create", "-q", "-f", fmt, "-o", options, path, "8M", check=True)
    info = json.loads(emu("img", "info", "--output=json", path, check=True).stdout)
    assert needle in " ".join(info["reclaim"].values())
    assert "Space reclaim (emu):" in emu("img", "info", path, check=True).stdout


def test_info_backing_chain_lists_every_layer(qemu_img, qcow2, tmp_path):
    top = str(tmp_path / "top.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", "d.qcow2", "-F", "qcow2", top)
    ours = json.loads(emu("img", "info", "--output=json", "--backing-chain", top, check=True).stdout)
    theirs = json.loads(run(qemu_img, "info", "--output=json", "--backing-chain", top).stdout)
    assert [without_reclaim(layer) for layer in ours] == theirs


def test_raw_info_equals_qemu_img(qemu_img, tmp_path):
    path = str(tmp_path / "r.img")
    run(qemu_img, "create", "-q", "-f", "raw", path, "10M")
    assert without_reclaim(json.loads(emu("img", "info", "--output=json", path).stdout)) == \
        json.loads(run(qemu_img, "info", "--output=json", path).stdout)


def test_map_human_and_json_equal_qemu_img(qemu_img, qcow2):
    assert emu("img", "map", qcow2, check=True).stdout == run(qemu_img, "map", qcow2).stdout
    assert emu("img", "map", "--output=json", qcow2, check=True).stdout == \
        run(qemu_img, "map", "--output=json", qcow2).stdout


def test_check_exit_codes(qemu_img, qcow2, tmp_path):
    assert emu("img", "check", qcow2).returncode == 0
    leaky = str(tmp_path / "leak.qcow2")
    with open(qcow2, "rb") as src, open(leaky, "wb") as dst:
        dst.write(src.read())
    with open(leaky, "r+b") as f:          # refcount of a cluster past the data: a leak
        f.seek(0x20000 + 2 * 30)
        f.write(b"\x00\x01")
        f.truncate(32 * 65536)
    proc = emu("img", "check", leaky)
    assert proc.returncode == 3 and "1 leaked clusters were found" in proc.stdout
    assert run(qemu_img, "check", leaky, check=False).returncode == 3
    assert emu("img", "check", "-r", "leaks", leaky).returncode == 0
    assert run(qemu_img, "check", leaky).returncode == 0
    broken = str(tmp_path / "broken.qcow2")
    with open(qcow2, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read())
    with open(broken, "r+b") as f:         # zero the refcount of a data cluster: corruption
        f.seek(0x20000 + 2 * 5)
        f.write(b"\x00\x00")
    assert emu("img", "check", broken).returncode == 2
    assert emu("img", "check", "-r", "all", broken).returncode == 0
    assert run(qemu_img, "check", broken).returncode == 0
    raw = str(tmp_path / "r.img")
    run(qemu_img, "create", "-q", "-f", "raw", raw, "1M")
    proc = emu("img", "check", raw)
    assert proc.returncode == 63 and "does not support checks" in proc.stderr


# -- compare, convert ----------------------------------------------------------------------------------
def test_compare_exit_codes_and_messages(qemu_img, qemu_io, qcow2, tmp_path):
    raw = str(tmp_path / "same.raw")
    run(qemu_img, "convert", "-O", "raw", qcow2, raw)
    proc = emu("img", "compare", qcow2, raw)
    assert (proc.returncode, proc.stdout) == (0, "Images are identical.\n")
    run(qemu_io, "-f", "raw", "-c", "write -P 9 8M 512", raw)
    theirs = run(qemu_img, "compare", qcow2, raw, check=False)
    ours = emu("img", "compare", qcow2, raw)
    mismatch = (1, "Content mismatch at offset 8388608!\n")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == mismatch
    longer = str(tmp_path / "longer.raw")
    run(qemu_img, "convert", "-O", "raw", qcow2, longer)
    run(qemu_img, "resize", "-q", "-f", "raw", longer, "80M")
    assert emu("img", "compare", qcow2, longer).stdout == run(qemu_img, "compare", qcow2, longer).stdout
    assert emu("img", "compare", "-s", qcow2, longer).returncode == 1
    assert emu("img", "compare", qcow2, str(tmp_path / "missing")).returncode == 2


@pytest.mark.parametrize("out_fmt,sparse", [("raw", "4k"), ("qcow2", "4k"), ("qcow2", "0"), ("qcow2", "64k")])
def test_convert_matches_qemu_img_convert(qemu_img, qemu_io, tmp_path, out_fmt, sparse):
    src = str(tmp_path / "src.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", src, "8M")
    run(qemu_io, "-c", "write -P 1 0 4k", "-c", "write -P 2 100k 200k", "-c", "write -z 1M 1M",
        "-c", "write -P 0 3M 1M", "-c", "write -P 3 5M 64k", src)
    ours, theirs = str(tmp_path / f"emu.{out_fmt}"), str(tmp_path / f"qemu.{out_fmt}")
    emu("img", "convert", "-O", out_fmt, "-S", sparse, src, ours, check=True)
    run(qemu_img, "convert", "-O", out_fmt, "-S", sparse, src, theirs)
    assert run(qemu_img, "compare", src, ours).returncode == 0
    if out_fmt == "qcow2":
        mine = json.loads(run(qemu_img, "check", "--output=json", ours).stdout)
        reference = json.loads(run(qemu_img, "check", "--output=json", theirs).stdout)
        assert mine.get("allocated-clusters") == reference.get("allocated-clusters")
    else:
        assert os.stat(ours).st_blocks == os.stat(theirs).st_blocks


def test_convert_with_backing_writes_only_differences(qemu_img, qemu_io, tmp_path):
    base, src, out = (str(tmp_path / n) for n in ("base.qcow2", "src.raw", "out.qcow2"))
    run(qemu_img, "create", "-q", "-f", "qcow2", base, "4M")
    run(qemu_io, "-c", "write -P 1 0 4M", base)
    run(qemu_img, "convert", "-O", "raw", base, src)
    run(qemu_io, "-f", "raw", "-c", "write -P 2 1M 64k", src)
    emu("img", "convert", "-f", "raw", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", src, out, check=True)
    assert run(qemu_img, "compare", "-F", "raw", out, src).returncode == 0
    assert json.loads(run(qemu_img, "check", "--output=json", out).stdout)["allocated-clusters"] == 1


# -- io ------------------------------------------------------------------------------------------------
def test_io_output_and_pattern_failure_exit_status(qcow2):
    proc = emu("io", "-c", "read -P 1 0 64k", "-c", "write -P 5 64k 4k", qcow2)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == "read 65536/65536 bytes at offset 0"
    assert re.match(r"64 KiB, 1 ops; \d\d\.\d\d sec \(.* ops/sec\)", proc.stdout.splitlines()[1])
    assert proc.stdout.splitlines()[2] == "wrote 4096/4096 bytes at offset 65536"
    proc = emu("io", "-c", "read -P 7 0 4k", qcow2)
    assert proc.returncode == 1 and "Pattern verification failed at offset 0, 4096 bytes" in proc.stdout


def test_io_map_equals_qemu_io(qemu_io, qcow2):
    assert emu("io", "-c", "map", qcow2).stdout == run(qemu_io, "-c", "map", qcow2).stdout


def test_io_discard_option_decides_whether_raw_gets_holes(tmp_path):
    path = str(tmp_path / "r.img")
    emu("img", "create", "-q", "-f", "raw", path, "4M", check=True)
    emu("io", "-f", "raw", "-c", "write -P 1 0 4M", path, check=True)
    emu("io", "-f", "raw", "-d", "ignore", "-c", "discard 0 4M", path, check=True)
    assert os.stat(path).st_blocks * 512 >= 4 * MiB
    emu("io", "-f", "raw", "-c", "discard 0 4M", path, check=True)   # default unmap, as qemu-io
    assert os.stat(path).st_blocks * 512 < MiB


def test_io_trace_explains_a_lost_discard(tmp_path):
    path = str(tmp_path / "d.qcow2")
    emu("img", "create", "-q", "-f", "qcow2", path, "4M", check=True)
    proc = emu("io", "--trace", "-c", "write 0 64k", "-c", "discard 4k 8k", path, check=True)
    assert "ignored" in proc.stdout and "partial cluster" in proc.stdout


# -- bench, demo ---------------------------------------------------------------------------------------
def test_bench_prints_qemu_img_bench_lines(tmp_path):
    path = str(tmp_path / "b.qcow2")
    emu("img", "create", "-q", "-f", "qcow2", path, "64M", check=True)
    proc = emu("img", "bench", "-c", "200", "-d", "1", "-w", "-s", "4k", "-S", "64k", path, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == ("Sending 200 write requests, 4096 bytes each, 1 in parallel (starting at offset 0, "
                        "step size 65536)")
    assert re.fullmatch(r"Run completed in \d+\.\d{3} seconds\.", lines[-1])
    assert json.loads(emu("img", "check", "--output=json", path).stdout)["allocated-clusters"] == 200


def test_bench_rejects_flush_interval_on_reads(tmp_path):
    path = str(tmp_path / "b.qcow2")
    emu("img", "create", "-q", "-f", "qcow2", path, "1M", check=True)
    assert_one_line_error(emu("img", "bench", "--flush-interval", "10", path), "write tests")


@pytest.fixture(scope="module")
def demo_stdout():
    """`emu demo --size 4M --disk 64M --profile P`'s output, made once per profile for the module: every run plays
    the guest's stories (some 15 s)."""
    outputs: dict[str, str] = {}

    def run_demo(profile: str = "qemu-7.2") -> str:
        if profile not in outputs:
            proc = emu("demo", "--size", "4M", "--disk", "64M", "--profile", profile)
            assert proc.returncode == 0, proc.stderr
            outputs[profile] = proc.stdout
        return outputs[profile]

    return run_demo


def table_rows(lines: list[str], *headers: str) -> tuple[int, list[list[str]]]:
    """Where the first table whose header begins with the words `headers` starts, and its rows split into words
    (after the header and its rule, up to a blank line)."""
    start = next(i for i, line in enumerate(lines) if line.split()[:len(headers)] == list(headers))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return start, rows


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-1.4-pc"])
def test_demo_tells_the_guest_s_story_through_every_controller_first(demo_stdout, profile):
    lines = demo_stdout(profile).splitlines()
    story, rows = table_rows(lines, "controller", "discard=")
    assert [row[:2] for row in rows] == [[c, d] for c in CONTROLLERS for d in ("ignore", "unmap")]
    windows, rows = table_rows(lines, "guest")
    assert [row[0] for row in rows] == ["windows-xp", "windows-7"]
    underneath, _ = table_rows(lines, "controller", "format", "discard=")
    assert story < windows < underneath


def test_demo_runs_and_shows_where_space_went(demo_stdout):
    stdout = demo_stdout()
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("format"))
    table = {line[:22].strip(): line[22:] for line in lines[start + 1:start + 10]}
    assert list(table) == ["raw         ignore", "raw         unmap", "qcow2       ignore", "qcow2       unmap",
                           "vdi         unmap", "vdi (VBox)  unmap", "vpc         unmap", "vhdx        unmap",
                           "vmdk        unmap"]
    reclaimed = {key: row.split()[6] + " " + row.split()[7] for key, row in table.items()}
    assert reclaimed["raw         unmap"] == "4 MiB" and reclaimed["vdi (VBox)  unmap"] == "4 MiB"
    assert reclaimed["raw         ignore"] == reclaimed["vpc         unmap"] == reclaimed["vmdk        unmap"] == "0 B"
    assert "partial cluster" in stdout and "vpc has no discard operation" in table["vpc         unmap"]
    assert "nothing copied" in stdout and "512 KiB merged" in stdout


def controller_rows(stdout: str) -> dict[tuple[str, str, str], str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["controller", "format", "discard="])
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("The drivers"):
            break
        controller, fmt, discard = line.split()[:3]
        rows[controller, fmt, discard] = line
    return rows


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-1.4-pc"])
def test_demo_controller_table_says_which_layer_kept_the_space(demo_stdout, profile):
    rows = controller_rows(demo_stdout(profile))
    assert sorted({c for c, _, _ in rows}) == ["ahci", "ide", "virtio-blk", "virtio-scsi"] and len(rows) == 16
    for (_, _, discard), line in rows.items():
        if discard == "ignore":
            want = "drive: dropped (discard=ignore" if profile == "qemu-7.2" else "guest: the device does not"
        else:
            want = "reclaimed" if profile == "qemu-7.2" else "guest: the device does not offer discard"
        assert want in line, line


@pytest.mark.parametrize("args", [["-f", "qcow2", "a.qcow2", "1G"],
                                  ["-f", "qcow2", "-o", "compat=0.10,preallocation=metadata,cluster_size=4k",
                                   "a.qcow2", "10M"],
                                  ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "a.qcow2"],
                                  ["-f", "raw", "a.raw", "1G"],
                                  ["-f", "raw", "-o", "preallocation=falloc", "a.raw", "1M"],
                                  ["-f", "qcow2", "-o", "lazy_refcounts=on,refcount_bits=8", "a.qcow2", "1M"]])
def test_create_prints_qemu_img_s_formatting_line(qemu_img, tmp_path, args):
    os.chdir(tmp_path)
    run(qemu_img, "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
    ours = emu("img", "create", *args, check=True).stdout
    os.unlink(next(arg for arg in args if arg.startswith("a.")))
    assert ours == run(qemu_img, "create", *args).stdout


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vdi", "vpc", "vhdx", "vmdk"])
def test_sizes_are_rounded_up_to_sectors_as_qemu_img_rounds_them(qemu_img, tmp_path, fmt):
    ours, theirs = str(tmp_path / f"e.{fmt}"), str(tmp_path / f"q.{fmt}")
    run(qemu_img, "create", "-q", "-f", fmt, theirs, "3000001")
    emu("img", "create", "-q", "-f", fmt, ours, "3000001", check=True)
    size = json.loads(run(qemu_img, "info", "-f", fmt, "--output=json", theirs).stdout)["virtual-size"]
    assert json.loads(emu("img", "info", "--output=json", ours).stdout)["virtual-size"] == size


def test_profiles_lists_every_family_with_sources():
    out = emu("profiles", check=True).stdout
    assert out.splitlines()[0] == "qemu-7.2 (default)"
    for family in ("[ata]", "[virtio-blk]", "[scsi]", "[virtio-scsi]"):
        assert out.count(family) == 4
    assert "hw_compat_3_1" in emu("profiles", "qemu-1.4-pc", check=True).stdout
    assert "13d9f6dca0" in emu("profiles", "qemu-8.2", check=True).stdout
    proc = emu("profiles", "qemu-9")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "known profiles are" in proc.stderr
