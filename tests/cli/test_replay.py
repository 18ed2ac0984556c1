"""`emu replay`: scripts of guest commands through a controller onto a real image, checked byte for byte."""

from __future__ import annotations

import json
import os

import pytest

from controllers.ata.identify import ata_string
from emu.cli import main as emu_main
from images import create_image

MiB = 1 << 20
TRIM_8 = "0800000000000100" + "00" * 504          # one range entry: LBA 8, one sector; padded to a block


def script(tmp_path, *lines: dict) -> str:
    path = str(tmp_path / "s.jsonl")
    with open(path, "w") as f:
        f.write("# a comment line\n\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
def disk(tmp_path):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", 64 * MiB)
    return path


def run(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = emu_main(["replay", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


CONTROLLERS = ["ide", "ahci"]


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_write_read_trim_and_errors_come_out_as_the_protocol_says(controller, disk, tmp_path, capsys):
    path = script(tmp_path,
                  {"ata": {"command": "0xec"}, "data_in_len": 512, "expect": {"status": "0x50", "error": 0}},
                  {"ata": {"command": "0x35", "lba": 8, "count": 1, "device": "0x40"},
                   "data_out": {"pattern": 165, "len": 512}, "expect": {"status": "0x50"}},
                  {"ata": {"command": "0x25", "lba": 8, "count": 1, "device": "0x40"}, "data_in_len": 512,
                   "expect": {"data_in": "a5" * 512}},
                  {"ata": {"command": "0x06", "features": 1, "count": 1, "device": "0x40"}, "data_out": TRIM_8,
                   "expect": {"status": "0x50"}},
                  {"ata": {"command": "0x25", "lba": 8, "count": 1, "device": "0x40"}, "data_in_len": 512,
                   "expect": {"data_in": "00" * 512}},
                  {"ata": {"command": "0x25", "lba": 131072, "count": 1, "device": "0x40"}, "data_in_len": 512,
                   "expect": {"status": "0x41", "error": "0x04"}})
    code, outcomes, err = run(capsys, "--controller", controller, "--image", disk, "-d", "unmap", "--check", path)
    assert code == 0, err
    assert [o["line"] for o in outcomes] == [3, 4, 5, 6, 7, 8]
    identify = bytes.fromhex(outcomes[0]["data_in"])
    assert len(identify) == 512 and identify[54:94] == ata_string("QEMU HARDDISK", 40)
    assert outcomes[-1] == {"line": 8, "status": "0x41", "error": "0x04", "data_in": "", "lba": outcomes[-1]["lba"]}


def test_check_stops_at_the_first_mismatch_naming_the_line(disk, tmp_path, capsys):
    path = script(tmp_path, {"ata": {"command": "0xe7"}, "expect": {"status": "0x50"}},
                  {"ata": {"command": "0x25", "lba": 0, "count": 1, "device": "0x40"}, "data_in_len": 512,
                   "expect": {"data_in": "ff" * 512}},
                  {"ata": {"command": "0xe7"}})
    code, outcomes, err = run(capsys, "--controller", "ahci", "--image", disk, "--check", path)
    assert code == 1 and len(outcomes) == 2
    assert err.startswith(f"emu replay: {path}:4: data_in: expected ffff")


def test_the_strict_profile_answers_idnf_where_qemu_answers_abrt(disk, tmp_path, capsys):
    line = {"ata": {"command": "0x25", "lba": 131072, "count": 1, "device": "0x40"}, "data_in_len": 512}
    path = script(tmp_path, line)
    errors = {}
    for profile in ("qemu-7.2", "strict"):
        code, outcomes, err = run(capsys, "--controller", "ide", "--image", disk, "--profile", profile, path)
        assert code == 0, err
        errors[profile] = outcomes[0]["error"]
    assert errors == {"qemu-7.2": "0x04", "strict": "0x10"}


def test_trim_on_the_old_machine_type_profile_is_not_offered_but_still_runs(disk, tmp_path, capsys):
    # QEMU 7.2 on pc-i440fx-1.4 offers no TRIM (IDENTIFY word 169 is 0) yet runs a DSM TRIM a guest sends anyway,
    # as Debian's QEMU 7.2.22 does (tests/qtest/test_machine_types.py)
    with open(disk, "r+b") as f:
        f.write(b"\x01" * MiB)
    before = os.stat(disk).st_blocks
    identify = {"ata": {"command": "0xec"}, "data_in_len": 512}
    trim = {"ata": {"command": "0x06", "features": 1, "count": 1, "device": "0x40"},
            "data_out": "0000000000000008" + "00" * 504}
    path = script(tmp_path, identify, trim)
    code, outcomes, err = run(capsys, "--controller", "ide", "--image", disk, "--profile", "qemu-1.4-pc",
                              "-d", "unmap", path)
    assert code == 0, err
    word169 = int.from_bytes(bytes.fromhex(outcomes[0]["data_in"])[338:340], "little")
    assert word169 & 1 == 0
    assert (outcomes[1]["status"], outcomes[1]["error"]) == ("0x50", "0x00")
    assert os.stat(disk).st_blocks < before


@pytest.mark.parametrize("args,needle", [
    (["--controller", "virtio-blk"], "'ata' lines are for --controller ide or ahci"),
    (["--controller", "virtio-scsi"], "'ata' lines are for --controller ide or ahci"),
    (["--controller", "ahci", "--profile", "qemu-9"], "known profiles are"),
    (["--controller", "scsi"], "invalid choice"),
])
def test_bad_arguments_are_one_line_errors(args, needle, disk, tmp_path, capsys):
    path = script(tmp_path, {"ata": {"command": "0xe7"}})
    code = emu_main(["replay", *args, "--image", disk, path])
    err = capsys.readouterr().err
    assert code == 1 and needle in err and err.count("\n") == 1


def test_a_bad_script_line_is_reported_before_anything_runs(disk, tmp_path, capsys):
    path = str(tmp_path / "bad.jsonl")
    with open(path, "w") as f:
        f.write('{"ata": {"command": "0x35", "lba": 0, "count": 1}, "data_out": {"pattern": 1, "len": 512}}\n'
                '{"ata": {"command": "0xzz"}}\n')
    before = open(disk, "rb").read(512)
    code = emu_main(["replay", "--controller", "ahci", "--image", disk, path])
    err = capsys.readouterr().err
    assert code == 1 and f"{path}:2: ata.command" in err
    assert open(disk, "rb").read(512) == before


def test_ide_lines_may_choose_pio_or_dma_and_ahci_lines_may_not(disk, tmp_path, capsys):
    write = {"ata": {"command": "0x30", "lba": 3, "count": 1, "device": "0x40"}, "dma": False,
             "data_out": {"pattern": 7, "len": 512}, "expect": {"status": "0x50"}}
    read = {"ata": {"command": "0x20", "lba": 3, "count": 1, "device": "0x40"}, "data_in_len": 512,
            "expect": {"data_in": "07" * 512}}
    path = script(tmp_path, write, read)
    code, outcomes, err = run(capsys, "--controller", "ide", "--image", disk, "--check", path)
    assert code == 0 and len(outcomes) == 2, err
    assert emu_main(["replay", "--controller", "ahci", "--image", disk, path]) == 1
    assert f"{path}:3: dma: chooses PIO or DMA on IDE only" in capsys.readouterr().err


def test_a_transfer_the_piix_driver_cannot_lay_out_is_a_one_line_error(disk, tmp_path, capsys):
    path = script(tmp_path, {"ata": {"command": "0x25", "lba": 0, "count": 1, "device": "0x40"},
                             "data_in_len": 32 << 20})
    code = emu_main(["replay", "--controller", "ide", "--image", disk, path])
    err = capsys.readouterr().err
    assert code == 1 and f"{path}:3: " in err and "PRD" in err and err.count("\n") == 1


REPLAY_DIR = os.path.join(os.path.dirname(__file__), "..", "scenarios", "replay")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(REPLAY_DIR) if n.endswith(".jsonl")))
def test_the_checked_in_regression_scripts_pass(name, disk, capsys):
    """tests/scenarios/replay/<controller>-<profile>.jsonl: QEMU-qtest-style scenarios, on a 64 MiB raw image with
    -d unmap."""
    controller = next(c for c in ("virtio-blk", "virtio-scsi", "ide", "ahci") if name.startswith(c + "-"))
    profile = name.removesuffix(".jsonl").removeprefix(controller + "-")
    code, outcomes, err = run(capsys, "--controller", controller, "--profile", profile, "--image", disk,
                              "-d", "unmap", "--check", os.path.join(REPLAY_DIR, name))
    assert code == 0, err
    assert len(outcomes) >= 14


@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_virtio_blk_discard_through_replay_frees_host_space_only_with_unmap(discard, disk, tmp_path, capsys):
    write = {"virtio_blk": {"type": "OUT", "sector": 0}, "data_out": {"pattern": 7, "len": 1 << 20},
             "expect": {"status": "OK"}}
    assert emu_main(["replay", "--controller", "virtio-blk", "--image", disk, script(tmp_path, write)]) == 0
    written = os.stat(disk).st_blocks
    trim = {"virtio_blk": {"type": "DISCARD", "segments": [{"sector": 0, "num_sectors": 2048}]},
            "expect": {"status": "OK"}}
    code, outcomes, err = run(capsys, "--controller", "virtio-blk", "--image", disk, "-d", discard, "--check",
                              script(tmp_path, trim))
    assert code == 0, err
    assert (os.stat(disk).st_blocks < written) == (discard == "unmap")


def test_virtio_blk_profiles_differ_on_multi_segment_discard(disk, tmp_path, capsys):
    two = {"virtio_blk": {"type": "DISCARD", "segments": [{"sector": 0, "num_sectors": 8},
                                                          {"sector": 64, "num_sectors": 8}]}}
    path = script(tmp_path, two)
    for profile, status in (("qemu-7.2", "UNSUPP"), ("strict", "OK")):
        code, outcomes, err = run(capsys, "--controller", "virtio-blk", "--profile", profile, "--image", disk, path)
        assert code == 0 and outcomes[0]["status"] == status, (profile, err)


@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_virtio_scsi_unmap_through_replay_frees_host_space_only_with_unmap(discard, disk, tmp_path, capsys):
    write = {"cdb": "2a00 00000000 00 0800 00", "data_out": {"pattern": 7, "len": 1 << 20},
             "expect": {"status": "GOOD"}}
    assert emu_main(["replay", "--controller", "virtio-scsi", "--image", disk, "--check",
                     script(tmp_path, {"cdb": "000000000000"}, write)]) == 0
    written = os.stat(disk).st_blocks
    unmap = {"cdb": "4200 00000000 00 0018 00", "data_out": "0016 0010 00000000 0000000000000000 00000800 00000000"}
    code, outcomes, err = run(capsys, "--controller", "virtio-scsi", "--image", disk, "-d", discard,
                              script(tmp_path, {"cdb": "000000000000"}, unmap))
    assert code == 0, err
    assert outcomes[0]["sense"] == {"key": 6, "asc": 0x29, "ascq": 0}            # the power-on unit attention
    assert outcomes[1]["status"] == "GOOD"
    assert (os.stat(disk).st_blocks < written) == (discard == "unmap")
