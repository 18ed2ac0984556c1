"""ScsiTarget: which logical unit answers, what a missing LUN gets, and the unit attentions a target keeps."""

from __future__ import annotations

import pytest

from controllers.scsi import sense as S
from controllers.scsi.disk import ScsiDisk
from controllers.scsi.target import CAPACITY_CHANGED, TYPE_NO_LUN, ScsiTarget
from emu.block import Drive, DriveOptions
from images import create_image, open_image
from scenarios.profiles.scsi import scsi_disk_config

SIZE = 4 << 20
TUR, INQUIRY_STD, REQUEST_SENSE = bytes(6), bytes([0x12, 0, 0, 0, 36, 0]), bytes([0x03, 0, 0, 0, 18, 0])


def disk(tmp_path, name):
    path = str(tmp_path / f"{name}.raw")
    create_image(path, "raw", SIZE)
    return ScsiDisk(Drive(open_image(path, "raw"), DriveOptions()), scsi_disk_config("qemu-7.2", SIZE // 512))


@pytest.fixture
def luns(tmp_path):
    disks = {0: disk(tmp_path, "lun0"), 3: disk(tmp_path, "lun3")}
    yield disks
    for d in disks.values():
        d.drive.close()


def test_each_lun_answers_for_itself_and_reports_the_others(luns):
    target = ScsiTarget(luns, qemu=True)
    assert target.has(3) and not target.has(1)
    assert target.execute(3, TUR, b"", 0).sense_code == S.POWER_ON_RESET      # LUN 3's own unit attention
    assert target.execute(3, TUR, b"", 0).status == 0
    assert luns[0].unit_attention == S.POWER_ON_RESET                          # LUN 0 untouched
    assert luns[0].luns == (3, 0)                                               # newest first, as QEMU's bus


@pytest.mark.parametrize("qemu", [True, False], ids=["qemu", "spc"])
def test_a_missing_lun_is_answered_for_the_target(luns, qemu):
    target = ScsiTarget(luns, qemu=qemu)
    first = target.execute(5, TUR, b"", 0)
    if qemu:        # the newest LU (3) lends its pending unit attention, then the target answers
        assert first.sense_code == S.POWER_ON_RESET and luns[3].unit_attention is None
        first = target.execute(5, TUR, b"", 0)
    assert first.status == 2 and first.sense_code == S.LUN_NOT_SUPPORTED
    inquiry = target.execute(5, INQUIRY_STD, b"", 36)
    assert inquiry.status == 0 and inquiry.data_in[0] == TYPE_NO_LUN and inquiry.residual == 0
    sense = target.execute(5, REQUEST_SENSE, b"", 18)
    assert sense.status == 0 and S.decode(sense.data_in) == S.LUN_NOT_SUPPORTED
    desc = target.execute(5, bytes([0x03, 0x01, 0, 0, 18, 0]), b"", 18)
    assert desc.data_in == S.descriptor(S.LUN_NOT_SUPPORTED)
    vpd = target.execute(5, bytes([0x12, 0x01, 0, 0, 255, 0]), b"", 255)
    # QEMU's page 00h lacks the peripheral byte (scsi_target_emulate_inquiry); SPC-4's starts with it
    assert vpd.data_in == (bytes([0, 0, 1, 0]) if qemu else bytes([TYPE_NO_LUN, 0, 0, 1, 0]))
    for bad in (bytes([0x12, 0x02, 0, 0, 36, 0]), bytes([0x12, 0x01, 0x80, 0, 36, 0])):   # CMDDT; page 80h
        assert target.execute(5, bad, b"", 36).sense_code == S.INVALID_FIELD
    assert target.execute(5, b"", b"", 0).sense_code == S.INVALID_OPCODE


def test_resets_and_capacity_changes_leave_unit_attentions_by_precedence(luns):
    target = ScsiTarget(luns, qemu=True)
    for lun in luns:
        target.execute(lun, TUR, b"", 0)                                        # take the power-on ones
    target.report_change(0)
    assert luns[0].unit_attention == CAPACITY_CHANGED and luns[3].unit_attention is None
    target.reset(0)
    assert luns[0].unit_attention == S.POWER_ON_RESET                           # a reset outranks it
    target.report_change(0)
    assert luns[0].unit_attention == S.POWER_ON_RESET                           # and is not replaced
    target.reset()
    assert luns[3].unit_attention == S.POWER_ON_RESET


def test_lun_zero_is_required(luns):
    with pytest.raises(ValueError, match="must include 0"):
        ScsiTarget({3: luns[3]}, qemu=True)
