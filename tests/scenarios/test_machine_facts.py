"""The guest-visible facts read from emu's own machines: two profiles whose machine types differ show exactly those
differences, named where they are (the real-QEMU comparison is tests/qtest/test_machine_types.py)."""

from __future__ import annotations

import pytest

import images
from scenarios.machine_facts import read_facts, report
from scenarios.run import guest_run


def facts(tmp_path, controller, profile):
    image = str(tmp_path / f"{profile}-{controller}.raw")
    images.create_image(image, "raw", 16 << 20, {})
    with guest_run(image, controller, profile, "raw") as run:
        return read_facts(run.machine)


@pytest.mark.parametrize("controller", ["ide", "ahci", "virtio-blk", "virtio-scsi"])
def test_a_profile_agrees_with_itself(tmp_path, controller):
    assert report(facts(tmp_path, controller, "qemu-7.2"), facts(tmp_path, controller, "qemu-7.2")) == []


def test_ide_on_pc_1_4_differs_in_the_firmware_and_trim_words(tmp_path):
    found = report(facts(tmp_path, "ide", "qemu-7.2"), facts(tmp_path, "ide", "qemu-1.4-pc"))
    assert len(found) == 1 and found[0].startswith("identify: data_in (emu / qemu) ")
    for word in ("word 23: 0x322e / 0x312e", "word 69: 0x4000 / 0x0", "word 169: 0x1 / 0x0"):   # "2.5+", "1.4.0"
        assert word in found[0]


def test_virtio_blk_on_pc_1_4_differs_in_features_config_queues_and_doorbells(tmp_path):
    found = report(facts(tmp_path, "virtio-blk", "qemu-7.2"), facts(tmp_path, "virtio-blk", "qemu-1.4-pc"))
    assert [line.split(" ")[0] for line in found] == ["features:", "config", "queue", "notify_off_multiplier:"]
    assert found[2] == "queue sizes: emu [256], qemu [128]" and found[3] == "notify_off_multiplier: emu 4, qemu 4096"
