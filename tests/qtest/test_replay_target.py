"""`emu replay --target qemu`: the checked-in QEMU 7.2 replay scripts, sent by emu's own driver models to Debian's
real QEMU 7.2 over qtest, get every outcome their lines expect (the same expectations emu's qemu-7.2 profile
meets in tests/cli/test_replay.py), and the bad uses of the flags are one line."""

from __future__ import annotations

import json
import pathlib

import pytest

from emu.cli import main as emu_main

pytestmark = pytest.mark.qemu

REPLAY = pathlib.Path(__file__).resolve().parents[1] / "scenarios" / "replay"
SCRIPTS = sorted(REPLAY.glob("*-qemu-7.2.jsonl"))


def disk(tmp_path) -> str:
    path = tmp_path / "disk.raw"
    path.write_bytes(b"")
    with open(path, "r+b") as f:
        f.truncate(64 << 20)
    return str(path)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_qemu_answers_every_line_as_the_script_expects(script, qemu_system, tmp_path, capsys):
    controller = script.stem.removesuffix("-qemu-7.2")
    code = emu_main(["replay", "--controller", controller, "--image", disk(tmp_path), "-f", "raw", "-d", "unmap",
                     "--check", "--target", "qemu", "--qemu", qemu_system, str(script)])
    out, err = capsys.readouterr()
    assert code == 0, err
    outcomes = [json.loads(line) for line in out.splitlines()]
    expected = [n for n, line in enumerate(script.read_text().splitlines(), 1) if line.startswith("{")]
    assert [o["line"] for o in outcomes] == expected, "every line sent, in order"


def test_the_flags_bad_uses_are_one_line(tmp_path, capsys):
    script = REPLAY / "virtio-blk-qemu-7.2.jsonl"
    image = disk(tmp_path)
    assert emu_main(["replay", "--controller", "virtio-blk", "--image", image, "--qemu", "/x", str(script)]) == 1
    assert capsys.readouterr().err.strip() == "emu replay: --qemu is QEMU's: it goes with --target qemu or --diff"
    assert emu_main(["replay", "--controller", "virtio-blk", "--image", image, "--target", "qemu",
                     "--qemu", str(tmp_path / "no-qemu"), str(script)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no-qemu" in err
