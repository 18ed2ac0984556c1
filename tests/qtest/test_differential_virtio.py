"""Differential property tests of virtio-blk and virtio-scsi: random short scripts of valid and invalid requests
(tests/qtest/virtio_strategies.py) on emu's qemu-7.2 profile and on Debian's QEMU 7.2, under every discard and
detect-zeroes option; every line's outcome and the two images must agree. Lines a qemu-7.2 departure covers are
left out (tests/qtest/test_departures.py pins those). PINNED holds the scripts on which the two once disagreed,
each run as it is.

Under CI=true each test runs a fixed, derandomized set of examples; EMU_DIFF_EXAMPLES sets how many (default 100;
locally the examples are random, so a longer run explores further: EMU_DIFF_EXAMPLES=1500)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from emu.block import DriveOptions
from tests.qtest.differential import assert_agree, departed, run
from tests.qtest.virtio_strategies import BLK_LINE, SCSI_LINE

pytestmark = pytest.mark.qemu

CI = os.environ.get("CI") == "true"
EXAMPLES = int(os.environ.get("EMU_DIFF_EXAMPLES", "100"))
# CI reports the failing example as found: shrinking re-runs QEMU many times
SETTINGS = settings(derandomize=CI, max_examples=EXAMPLES, deadline=None, database=None,
                    phases=[p for p in Phase if not (CI and p is Phase.shrink)],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OPTIONS = st.sampled_from([DriveOptions(), DriveOptions(discard="unmap"), DriveOptions(detect_zeroes="on"),
                           DriveOptions(discard="unmap", detect_zeroes="unmap")])


def _agree(lines: list[dict], controller: str, options: DriveOptions, qemu: str) -> None:
    lines = departed(lines, controller)
    if not lines:
        return
    found = run(lines, controller, options=options, qemu=qemu)
    assert_agree(found, lines)
    # A request QEMU leaves pending costs the guest driver's timeout (the linux-6.1 profile's request_timeout or
    # command_timeout, 30 s) in real time: none of the lines drawn may be one; cover such a line deliberately.
    pending = [o["line"] for o in found.qemu if o.get("status") is None and not o.get("broken")]
    assert not pending, f"QEMU never completed lines {pending}: {lines}"


@SETTINGS
@given(lines=st.lists(BLK_LINE, min_size=1, max_size=8), options=OPTIONS)
def test_virtio_blk_agrees_with_qemu_7_2(lines, options, qemu_system):
    _agree(lines, "virtio-blk", options, qemu_system)


@SETTINGS
@given(lines=st.lists(SCSI_LINE, min_size=1, max_size=8), options=OPTIONS)
def test_virtio_scsi_agrees_with_qemu_7_2(lines, options, qemu_system):
    _agree(lines, "virtio-scsi", options, qemu_system)


TUR = {"cdb": "000000000000"}
# (controller, script) where emu once answered otherwise than Debian's QEMU 7.2.22
PINNED = [
    # a request answered OVERRUN was made first, and took the power-on unit attention with it
    ("virtio-scsi", [{"cdb": "28000000000000000100"}, TUR]),
    ("virtio-scsi", [{"cdb": "28000000000000000100", "lun": 3}, TUR]),
    # ... unless its transfer is over INT32_MAX bytes: QEMU makes that an INVALID FIELD request, which takes none
    ("virtio-scsi", [{"cdb": "8a10000000000001fff8ffffffff0000", "data_out": {"pattern": 0, "len": 421}}, TUR]),
    # the bus's data phase of opcodes the disk refuses: WRITE LONG(10) has none, MAINTENANCE OUT goes to the
    # device, SEND DIAGNOSTIC's length is in bytes 3-4
    ("virtio-scsi", [TUR, {"cdb": "3f58f3113e20b362679f3c5da6c648ad"}]),
    ("virtio-scsi", [TUR, {"cdb": "a4000000000000000008000000000000", "data_out": "0000000000000000"}]),
    ("virtio-scsi", [TUR, {"cdb": "1d0000000400", "data_out": "00000000"}, {"cdb": "1d0000000400"}]),
    # FORMAT UNIT moves a parameter list header with FMTDATA only (and completes GOOD with one on 7.2.22)
    ("virtio-scsi", [TUR, {"cdb": "040000000400"}, {"cdb": "041000000000", "data_out": "00000000"}]),
    # the unit attention a CHECK CONDITION reported went with it as autosense: REQUEST SENSE finds none
    ("virtio-scsi", [TUR, {"cdb": "030000001200", "data_in_len": 18}]),
    ("virtio-scsi", [{"cdb": "151000000400", "data_out": "00000000"}, {"cdb": "030000000800", "data_in_len": 8}]),
    # READ TOC: a disk answers a one-track CD's table of contents (formats 0, 1, 2; MSF; lead-out start track)
    ("virtio-scsi", [TUR, {"cdb": "43000000000000000c00", "data_in_len": 12},
                     {"cdb": "43020000000000003000", "data_in_len": 48},
                     {"cdb": "430000000000aa003000", "data_in_len": 48},
                     {"cdb": "43000000000002003000", "data_in_len": 48},
                     {"cdb": "43000100000000003000", "data_in_len": 48},
                     {"cdb": "43020200000000004000", "data_in_len": 64},
                     {"cdb": "43000300000000004000", "data_in_len": 64}]),
    # an INQUIRY answered for a missing LUN completes GOOD and so empties LUN 0's sense
    ("virtio-scsi", [{"cdb": "080000000000", "data_in_len": 131072}, {"cdb": "120000000000", "lun": 1},
                     {"cdb": "030000000800", "data_in_len": 8}]),
]


@pytest.mark.parametrize("controller, lines", PINNED, ids=[json.dumps(lines)[:60] for _, lines in PINNED])
def test_a_script_they_once_disagreed_on_agrees(controller, lines, qemu_system):
    assert departed(lines, controller) == lines
    assert_agree(run(lines, controller, options=DriveOptions(discard="unmap"), qemu=qemu_system), lines)
