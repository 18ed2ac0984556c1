"""Each departure the qemu-7.2 profile names is pinned: its example line, run on emu's profile and on Debian's QEMU
7.2, differs in exactly the keys the departure says, and the departure covers its own example (so the differential
property tests leave such lines out). When QEMU or emu changes, the departure's record must change with it."""

from __future__ import annotations

import json

import pytest

from emu.block import DriveOptions
from scenarios.profiles import get_profile
from tests.qtest.differential import run

pytestmark = pytest.mark.qemu
DEPARTURES = get_profile("qemu-7.2").departures
# a virtio-scsi example would meet the power-on unit attention: a TEST UNIT READY takes it first
PROLOGUE = {"virtio-scsi": [{"cdb": "000000000000"}]}


def test_every_departure_is_what_its_record_says(qemu_system):
    # one test over all of them (none is skipped in CI when the profile names none)
    for departure in DEPARTURES:
        line = json.loads(departure.example)
        assert departure.covers(line), departure.name
        found = run([*PROLOGUE.get(departure.controller, []), line], departure.controller,
                     options=DriveOptions(discard="unmap"), qemu=qemu_system)
        if "qemu" in departure.keys:
            assert found.qemu_failure is not None, (departure.name, list(found.report()))
        differing = {key for diff in found.differences for key in diff.keys}
        assert differing == set(departure.keys) - {"qemu"}, (departure.name, list(found.report()))
