"""`emu replay --diff`: one script on emu's device and on Debian's QEMU 7.2, each on its own copy of the image; the
lines whose outcomes differ, key by key, `qemu-img compare` of the copies, exit status 1 on any difference, and a
QEMU that dies part-way reported as the outcome of the line it died on."""

from __future__ import annotations

import hashlib
import os
import re
import stat

import pytest

from emu.cli import main as emu_main
from tests.qtest.test_replay_target import SCRIPTS, disk

pytestmark = pytest.mark.qemu
DIFFERS = re.compile(r"^line \d+: [a-z_]+: emu .+, qemu .+$")


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def diff(tmp_path, capsys, controller: str, script, *extra: str) -> tuple[int, list[str], str]:
    image = disk(tmp_path)
    before = digest(image)
    code = emu_main(["replay", "--controller", controller, "--image", image, "-f", "raw", "-d", "unmap", "--diff",
                     *extra, str(script)])
    out, err = capsys.readouterr()
    assert digest(image) == before, "--diff runs on copies: the image itself is untouched"
    assert os.listdir(tmp_path) == ["disk.raw"], "the copies are removed"
    return code, out.splitlines(), err


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_the_qemu_7_2_profile_agrees_with_qemu_7_2_on_every_checked_in_script(script, qemu_system, tmp_path,
                                                                              capsys):
    controller = script.stem.removesuffix("-qemu-7.2")
    code, out, err = diff(tmp_path, capsys, controller, script, "--qemu", qemu_system)
    lines = sum(1 for line in script.read_text().splitlines() if line.startswith("{"))
    assert (code, err) == (0, "")
    assert out == ["images: identical", f"emu and QEMU agree on all {lines} lines"]


def test_a_profile_that_is_not_the_qemus_differs_key_by_key(qemu_system, tmp_path, capsys):
    # pc-1.4's IDENTIFY (firmware "1.4.0", no TRIM) against QEMU 7.2's newest pc ("2.5+", TRIM); both trim alike
    script = next(s for s in SCRIPTS if s.stem == "ide-qemu-7.2")
    code, out, _ = diff(tmp_path, capsys, "ide", script, "--profile", "qemu-1.4-pc")
    assert code == 1
    assert out[0].startswith("line 3: data_in: emu 512 bytes, byte ")
    assert all(DIFFERS.match(line) for line in out[:-2])
    assert out[-2] == "images: identical"
    assert re.fullmatch(r"emu and QEMU differ: \d+ of 17 lines", out[-1])


def test_images_that_differ_are_named_with_the_first_offset(qemu_system, tmp_path, capsys):
    # the departure dma-moves-the-whole-buffer: QEMU writes the whole 1024-byte buffer of a one-block WRITE(10)
    script = tmp_path.parent / f"{tmp_path.name}-write.jsonl"
    script.write_text('{"cdb": "000000000000"}\n'
                      '{"cdb": "2a000000000000000100", "data_out": {"pattern": 7, "len": 1024}}\n')
    code, out, _ = diff(tmp_path, capsys, "virtio-scsi", script, "--qemu", qemu_system)
    assert code == 1
    assert out == ["line 2: residual: emu 512, qemu 4294966784", "images: Content mismatch at offset 512!",
                   "emu and QEMU differ: 1 of 2 lines"]


def test_a_qemu_that_dies_part_way_is_the_outcome_of_its_line(qemu_system, tmp_path, capsys):
    script = tmp_path.parent / f"{tmp_path.name}-identify.jsonl"
    script.write_text('{"ata": {"command": "0xec"}, "data_in_len": 512}\n' * 2000)
    wrapper = tmp_path.parent / f"{tmp_path.name}-qemu"
    wrapper.write_text(f"#!/bin/sh\nexec timeout --preserve-status -s KILL 1 {qemu_system} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    code, out, _ = diff(tmp_path, capsys, "ide", script, "--qemu", str(wrapper))
    assert code == 1
    died = [line for line in out if "QEMU exited" in line]
    assert len(died) == 1 and re.fullmatch(r"line \d+: QEMU exited: exit status (137|-9)", died[0]), out[-3:]
    assert out[-1].startswith("emu and QEMU differ: 0 of 2000 lines")


@pytest.mark.parametrize("flags, message", [
    (["--diff", "--check"], "--diff runs the script on both emu and QEMU: it takes neither --check nor --target"),
    (["--diff", "--target", "qemu"], "--diff runs the script on both emu and QEMU: it takes neither --check nor "
                                     "--target"),
    (["--machine", "pc"], "--machine is QEMU's: it goes with --target qemu or --diff"),
    (["--diff", "--controller", "ahci", "--machine", "pc"], "ahci needs a q35 machine type, not 'pc'"),
    (["--diff", "--machine", "pc-i440fx-0.1"], "QEMU did not start: unsupported machine type"),
])
def test_bad_uses_are_one_line(flags, message, qemu_system, tmp_path, capsys):
    script = next(s for s in SCRIPTS if s.stem == "ide-qemu-7.2")
    argv = ["replay", "--controller", "ide", "--image", disk(tmp_path), *flags, str(script)]
    assert emu_main(argv) == 1
    assert capsys.readouterr().err.strip() == f"emu replay: {message}"
