"""The offline steps that copy or freeze a disk: full copies (sparse and not) and their restore, an external snapshot
beside them, VirtualBox's immutable base with auto-reset on and off; and every image as its create left it
(preallocation), checked against qemu-img."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from images import open_image
from scenarios.play import Player
from scenarios.report.tables import summary
from scenarios.run import load_scenario
from tests.conftest import oracle_module, run
from tests.images.interop.test_relink import dissect_read

MiB = 1 << 20
DISK = 256 * MiB             # full-copy-vs-snapshot's raw disk
HOST_NOISE = 64 << 10        # the host's own extent-tree blocks in st_blocks (test_play.HOST_NOISE)


def player(tmp_path, name: str, *overrides: str) -> Player:
    return Player(load_scenario(name, list(overrides)), str(tmp_path / "run"))


def play_through(p: Player, until: int | None = None) -> list[dict]:
    """Steps [0, until) of the player's scenario; their records."""
    return [p.step(i, step) for i, step in enumerate(p.scenario.steps[:until])]


def files_read_back(p: Player) -> None:
    """Every file the guest has reads back, through the chain, as the scenario wrote it."""
    p.machine.run(p.guest.mount(""))
    assert set(p.guest.fs.files) == set(p.expected)
    for name, content in p.expected.items():
        assert p.read_file(name) == content, name
    p.machine.run(p.guest.umount())


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """full-copy-vs-snapshot played to its end, with the guest's files checked after the restore and the revert."""
    tmp_path = tmp_path_factory.mktemp("copies")
    p = player(tmp_path, "full-copy-vs-snapshot")
    try:
        index = {step.phase: i for i, step in enumerate(p.scenario.steps) if step.phase}
        records = play_through(p, index["restored"] + 1)
        files_read_back(p)
        assert set(p.expected) == {"system"}, "the restored copy holds the files of its time"
        records += [p.step(i, step) for i, step in enumerate(p.scenario.steps) if i > index["restored"]]
        files_read_back(p)
        assert set(p.expected) == {"system"}, "the reverted snapshot holds the files of its time"
        result = p.result()
    finally:
        p.close()
    return tmp_path / "run", records, result


def test_a_full_copy_costs_the_whole_file_and_a_sparse_one_what_it_holds(copies):
    directory, records, result = copies
    by_phase = {":".join((step["do"], step["args"].get("action", ""), step["args"].get("name", ""))): step
                for step in records}
    full, sparse = by_phase["copy:take:full"], by_phase["copy:take:sparse"]
    held = full["layers"]["disk.img"]
    assert full["output"]["copied_bytes"] == DISK
    assert abs(full["output"]["copy_host_bytes"] - DISK) <= HOST_NOISE
    assert sparse["output"]["copied_bytes"] <= held <= sparse["output"]["copied_bytes"] + HOST_NOISE
    assert abs(sparse["output"]["copy_host_bytes"] - held) <= HOST_NOISE
    # the latency model's time for the bytes moved: the full copy takes its size's time, a snapshot none
    assert full["duration"] / sparse["duration"] == pytest.approx(DISK / sparse["output"]["copied_bytes"], rel=0.01)
    assert by_phase["snapshot:take:clean"]["duration"] == 0 and records[-1]["duration"] == 0
    assert result["created"]["disk.img"]["virtual_size"] == DISK


def test_qemu_img_finds_the_copies_identical_and_the_sparse_one_sparse(copies, qemu_img):
    directory = copies[0]
    assert "identical" in run(qemu_img, "compare", "-f", "raw", "-F", "raw", str(directory / "copy-full.img"),
                              str(directory / "copy-sparse.img")).stdout
    holes = [e for e in json.loads(run(qemu_img, "map", "--output=json", "-f", "raw",
                                       str(directory / "copy-sparse.img")).stdout) if not e["data"]]
    assert sum(e["length"] for e in holes) > DISK // 2


def test_the_report_shows_what_the_copies_did(copies):
    text = summary(copies[2])
    assert re.search(r"copy action=take name=full sparse=false .* copied 256 MiB, copy host 256 MiB$", text, re.M)
    assert re.search(r"^disk\.img +256 MiB +256 MiB +4 KiB", text, re.M), "the images as created"
    assert re.search(r"^\(start\) .* 4 KiB +- +-$", text, re.M), "a snapshot's layer did not exist at the start"


def test_the_immutable_base_is_never_written_and_auto_reset_empties_the_differencing_image(tmp_path):
    p = player(tmp_path, "immutable-auto-reset")
    try:
        steps = p.scenario.steps
        index = {step.phase: i for i, step in enumerate(steps) if step.phase}
        records = play_through(p, index["made-immutable"] + 1)
        base = str(tmp_path / "run" / "disk.vdi")
        frozen = digest(base)
        assert records[-1]["output"] == {"differencing": "created"}
        assert not os.stat(base).st_mode & 0o222
        for i in range(index["made-immutable"] + 1, len(steps)):
            records.append(p.step(i, steps[i]))
        session, reset = records[index["session"]], records[index["next-power-on"]]
        assert session["layers"]["diff.vdi"] > 48 * MiB
        assert reset["output"] == {"differencing": "reset", "discarded_host_bytes": session["layers"]["diff.vdi"]}
        assert reset["layers"]["diff.vdi"] < MiB and reset["layers"]["disk.vdi"] == session["layers"]["disk.vdi"]
        assert digest(base) == frozen
        files_read_back(p)
        assert set(p.expected) == {"windows"}, "the session's files are gone with the reset"
    finally:
        p.close()


def test_with_auto_reset_off_the_differencing_image_is_kept(tmp_path):
    p = player(tmp_path, "immutable-auto-reset", "steps[5].auto_reset=false")
    try:
        records = play_through(p)
        kept = [r for r in records if r["do"] == "power-cycle"]
        assert [r["output"]["differencing"] for r in kept] == ["kept", "kept"]
        assert kept[-1]["layers"]["diff.vdi"] > (48 + 16) * MiB
        files_read_back(p)
        assert set(p.expected) == {"windows", "session", "session2"}
        ours = open_image(str(tmp_path / "run" / "diff.vdi"), read_only=True)
        try:
            through_emu = ours.read(0, ours.virtual_size)
        finally:
            ours.close()
    finally:
        p.close()
    # an independent VDI reader finds the same disk in the differencing image over its immutable base
    vdi = oracle_module("dissect.hypervisor.disk.vdi", "dissect.hypervisor")
    assert dissect_read(vdi, str(tmp_path / "run" / "diff.vdi"), str(tmp_path / "run" / "disk.vdi"),
                        len(through_emu)) == through_emu


@pytest.mark.parametrize("mode", ["off", "metadata", "falloc", "full"])
def test_images_as_created_are_what_qemu_img_creates(tmp_path, qemu_img, mode):
    """qemu-img create of the same image gives the same file size and host bytes; only `full` writes the disk."""
    p = player(tmp_path, "preallocation", f"disk.options.preallocation={mode}")
    try:
        created = p.result()["created"]["disk.qcow2"]
    finally:
        p.close()
    theirs = str(tmp_path / "qemu.qcow2")
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", f"preallocation={mode}", theirs, "256M")
    st = os.stat(theirs)
    assert (created["file_size"], created["host_bytes"]) == (st.st_size, st.st_blocks * 512)
    assert (created["written_bytes"] > 200 * MiB) == (mode == "full")
    assert (created["seconds"] > 0.1) == (mode == "full")
