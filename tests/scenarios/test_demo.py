"""The demo's story as the simulated guest tells it (scenarios.demo): fstrim-after-delete through every controller
under each discard option, and the Windows install played by XP and by 7; what each cell says must be what the run
did."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from scenarios import demo
from scenarios.machine import CONTROLLERS
from scenarios.run import load_scenario

MiB = 1 << 20
STORY_FILE = 64 * MiB       # what fstrim-after-delete writes, deletes and trims
WINDOWS_DELETED = 150 * MiB  # the CD copy xp-install-never-shrinks deletes


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """The demo's plays under qemu-7.2, made once; their host space (about 1.5 GiB) given back after."""
    directory = str(tmp_path_factory.mktemp("demo"))
    yield demo.trim_cells(directory, "qemu-7.2"), demo.windows_cells(directory, "qemu-7.2")
    shutil.rmtree(directory, ignore_errors=True)


def hosts(outcome: demo.Outcome) -> dict[str, int]:
    return dict(outcome.phases)


def test_every_controller_plays_under_each_discard_option_with_the_catalog_s_phases(story):
    cells, _ = story
    assert [(c.controller, c.discard) for c in cells] == [(c, d) for c in CONTROLLERS for d in demo.DISCARD_OPTIONS]
    names = [step.phase for step in load_scenario(demo.STORY).steps if step.phase]
    for cell in cells:
        assert [name for name, _ in cell.outcome.phases] == names
        with open(os.path.join(cell.outcome.directory, "result.json")) as f:
            result = json.load(f)
        assert tuple((p["name"], p["host_bytes"]) for p in result["phases"]) == cell.outcome.phases
        assert result["scenario"]["settings"]["machine.controller"] == cell.controller


def test_discard_ignore_keeps_the_trimmed_file_on_every_controller(story):
    cells, _ = story
    for cell in (c for c in cells if c.discard == "ignore"):
        host = hosts(cell.outcome)
        assert host["trimmed"] >= host["written"] >= host["formatted"] + STORY_FILE, cell
        assert cell.trimmed >= STORY_FILE and not cell.refused     # fstrim still says it trimmed
        assert cell.outcome.reason == "drive-ignore" and cell.outcome.reclaimed == 0, cell
        assert host["blkdiscarded"] >= host["written"], cell


def test_discard_unmap_gives_the_trimmed_file_back_on_every_controller(story):
    cells, _ = story
    for cell in (c for c in cells if c.discard == "unmap"):
        host = hosts(cell.outcome)
        assert host["written"] - host["trimmed"] > STORY_FILE * 0.99, cell
        assert cell.outcome.reason == demo.RECLAIMED and cell.outcome.reclaimed > cell.outcome.freed * 0.99, cell
        assert host["blkdiscarded"] < host["formatted"], cell


def test_mkfs_zeroing_costs_host_space_only_where_no_write_zeroes_reached_the_drive(story):
    cells, _ = story
    zeroed = [hosts(c.outcome)["formatted"] for c in cells if c.outcome.mkfs_zeroes]
    written = [hosts(c.outcome)["formatted"] for c in cells if not c.outcome.mkfs_zeroes]
    assert {c.controller for c in cells if not c.outcome.mkfs_zeroes} == {"ide", "ahci"}
    assert min(written) > max(zeroed) + 32 * MiB


def test_windows_xp_never_sends_trim_while_windows_7_does(story):
    _, (xp, seven) = story
    assert (xp.guest, seven.guest) == (load_scenario(demo.WINDOWS_STORY).machine.guest, "windows-7")
    assert [name for name, _ in xp.outcome.phases] == [name for name, _ in seven.outcome.phases]
    assert hosts(xp.outcome)["deleted"] >= hosts(xp.outcome)["installed"]
    assert xp.outcome.reason == "not-discarded" and xp.outcome.reclaimed == 0
    assert hosts(seven.outcome)["installed"] - hosts(seven.outcome)["deleted"] > WINDOWS_DELETED - MiB
    assert seven.outcome.reason == demo.RECLAIMED and seven.outcome.freed == xp.outcome.freed


def test_a_device_without_discard_refuses_fstrim_and_the_story_goes_on(tmp_path):
    first = demo.trim_cell(str(tmp_path), "virtio-blk", "unmap", "qemu-1.4-pc", report=True)
    assert os.path.exists(os.path.join(first.outcome.directory, "report.html"))
    cell = demo.trim_cell(str(tmp_path), "virtio-blk", "unmap", "qemu-1.4-pc")
    assert cell.outcome.directory == first.outcome.directory     # the second run replaced the first, report and all
    assert not os.path.exists(os.path.join(cell.outcome.directory, "report.html"))
    host = hosts(cell.outcome)
    assert cell.trimmed is None and cell.refused.startswith("fstrim") and cell.refused == first.refused
    assert list(host) == [step.phase for step in load_scenario(demo.STORY).steps if step.phase]
    assert host["blkdiscarded"] >= host["trimmed"] >= host["written"]
    assert cell.outcome.reason == "no-device-discard" and cell.outcome.reclaimed == 0
