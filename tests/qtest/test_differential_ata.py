"""Differential property test of the ATA controllers: random scripts of valid and invalid ATA commands (1-8 lines:
reads and writes at and past the capacity, COUNT 0, DSM TRIM range lists, NCQ, SMART, SET FEATURES, unknown
opcodes, raw H2D FIS variants, mismatched data phases QEMU still completes) run on emu's qemu-7.2 profile and on
Debian's QEMU 7.2 over qtest, IDE (PIIX on pc) and AHCI (ICH9 on q35), under drawn drive options; both must give
the same outcome on every line and leave the same image. Lines the profile's departures cover are left out.

CI runs a fixed, derandomized set (EMU_DIFF_EXAMPLES examples per controller, default 40); set it higher locally.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.block import DriveOptions
from tests.qtest.ata_strategies import scripts
from tests.qtest.differential import assert_agree, departed, run

pytestmark = pytest.mark.qemu
EXAMPLES = int(os.environ.get("EMU_DIFF_EXAMPLES", "40"))
CI = os.environ.get("CI") == "true"

OPTIONS = st.sampled_from([DriveOptions(discard="ignore"), DriveOptions(discard="unmap"),
                           DriveOptions(discard="ignore", detect_zeroes="on"),
                           DriveOptions(discard="unmap", detect_zeroes="unmap")])
SETTINGS = settings(max_examples=EXAMPLES, derandomize=CI, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def check(controller: str, lines: list[dict], options: DriveOptions, qemu: str) -> None:
    lines = departed(lines, controller)
    if lines:
        assert_agree(run(lines, controller, options=options, qemu=qemu), lines)


@SETTINGS
@given(lines=scripts("ide"), options=OPTIONS)
def test_emu_ide_answers_as_qemu_7_2(lines, options, qemu_system):
    check("ide", lines, options, qemu_system)


# Open (issue 14): QEMU's process_ncq_command runs with the previous command's status still in the task file, so an
# NCQ command after an error keeps PxCI, repeats the ERR in its D2H FIS and raises TFES before the command completes
# in the background; emu completes it at once and reports the Set Device Bits status. Found by this test, e.g.
# SET FEATURES 00h (aborted) then WRITE FPDMA QUEUED: QEMU 0x41, emu 0x50.
@pytest.mark.xfail(reason="an NCQ command after an error: QEMU 7.2 repeats the error (open, issue 14)", strict=False)
@SETTINGS
@given(lines=scripts("ahci"), options=OPTIONS)
def test_emu_ahci_answers_as_qemu_7_2(lines, options, qemu_system):
    check("ahci", lines, options, qemu_system)
