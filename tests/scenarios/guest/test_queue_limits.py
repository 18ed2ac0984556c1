"""Each controller's guest driver sets up the queue a real Linux 6.1 guest sets up on QEMU 7.2's device: the limits
/sys/block/X/queue showed in a real guest (tests/oracle/linux-6.1/queue-limits.txt) are the model's."""

from __future__ import annotations

import os

import pytest

from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.machine import CONTROLLERS, build

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "oracle", "linux-6.1", "queue-limits.txt")


def recorded() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for line in open(FIXTURE):
        if line.startswith("#") or not line.strip():
            continue
        controller, key, *value = line.split()
        out.setdefault(controller, {})[key] = " ".join(value)
    return out


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_the_queue_is_the_real_guests(tmp_path, controller):
    real = recorded()[controller]
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", 1 << 30, {})
    drive = Drive(open_image(path, "raw"), DriveOptions(discard="unmap"))
    machine = build(controller, drive, "qemu-7.2")
    try:
        q = machine.run(machine.disk.queue_limits())
    finally:
        machine.close()
        drive.close()
    discard = q.discard
    model = {
        "max_sectors_kb": q.max_sectors // 2,
        "max_hw_sectors_kb": min(q.max_hw_sectors // 2, 2147483647),
        "max_segments": q.max_segments,
        "max_segment_size": q.max_segment_size,
        "max_discard_segments": discard.max_segments if discard else 1,
        "discard_granularity": discard.granularity * 512 if discard else 0,
        "discard_max_bytes": discard.max_sectors * 512 if discard else 0,
        "write_zeroes_max_bytes": q.max_write_zeroes * 512,
        "logical_block_size": q.logical_block,
    }
    assert {k: str(v) for k, v in model.items()} == {k: real[k] for k in model}
