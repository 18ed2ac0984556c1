"""`emu run` and `emu explain` as a user meets them: the catalog, the tables, the files a run leaves, json on
stdout, and one-line errors for bad scenarios and arguments."""

from __future__ import annotations

import json
import re
import subprocess

from tests.cli.test_cli import assert_one_line_error, emu


def test_list_shows_the_catalog():
    out = emu("run", "--list", check=True).stdout
    assert re.search(r"^fstrim-after-delete +Delete a file, then fstrim$", out, re.M)
    assert len(out.splitlines()) >= 6
    assert emu("explain", "--list", check=True).stdout == out


def test_run_prints_the_tables_and_leaves_its_files(tmp_path):
    out = emu("run", "fstrim-after-delete", "--out", str(tmp_path / "r"), "--set", "discard=unmap",
              check=True).stdout
    assert out.startswith("fstrim-after-delete: Delete a file, then fstrim\nqcow2 1 GiB, virtio-blk, discard=unmap")
    assert "\nPhases\n" in out and "trimmed" in out
    assert out.rstrip().endswith(f"report: {tmp_path / 'r' / 'report.html'}")
    for name in ("disk.qcow2", "result.json", "timeline.png", "map.png", "report.html"):
        assert (tmp_path / "r" / name).exists(), name
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["scenario"]["settings"]["drive.discard"] == "unmap"


def test_run_json_is_the_result_file(tmp_path):
    proc = emu("run", "online-discard", "--out", str(tmp_path / "r"), "--output=json", "--seed", "3", check=True)
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "r" / "result.json").read_text())
    assert printed["scenario"]["seed"] == 3


def test_default_directory_is_new_and_named(tmp_path):
    for n in (1, 2):
        proc = subprocess_in(tmp_path, "run", "preallocation")
        assert f"emu-runs/preallocation-{n}/report.html" in proc.stdout


def subprocess_in(cwd, *args):
    proc = subprocess.run(["emu", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_explain_says_why(tmp_path):
    out = emu("explain", "fstrim-after-delete", "--out", str(tmp_path / "r"), check=True).stdout
    assert "The guest freed 64 MiB." in out
    assert "64 MiB  the drive dropped the discard (discard=ignore" in out
    assert "drive  dropped" in out            # the example trace


def test_bad_input_is_one_line(tmp_path):
    assert_one_line_error(emu("run", "no-such-story"), "no-such-story")
    assert_one_line_error(emu("run"), "give a scenario")
    assert_one_line_error(emu("run", "fstrim-after-delete", "--set", "format=qed", "--out", str(tmp_path / "a")),
                          "--set format", "qed")
    assert_one_line_error(emu("run", "fstrim-after-delete", "--seed", "x"), "--seed")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert_one_line_error(emu("run", "fstrim-after-delete", "--out", str(tmp_path / "full")), "not empty")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ntitle = "t"\n[disk]\nsize = "64Q"\n[[steps]]\ndo = "sync"\n')
    assert_one_line_error(emu("run", str(bad)), "bad.toml:4", "disk.size")
    windows = tmp_path / "w.toml"
    windows.write_text('name = "w"\ntitle = "t"\n[disk]\nsize = "64M"\n[fs]\ntype = "ntfs"\n[[steps]]\ndo = "mkfs"\n')
    assert_one_line_error(emu("run", str(windows), "--out", str(tmp_path / "w")), "ntfs")
