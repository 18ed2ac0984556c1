"""Hypothesis against virtio-scsi: random request headers (LUN fields, lengths), CDBs, data buffers and UNMAP
parameter lists through the ring, under each HBA profile. Every outcome is exact (the response the framing, LUN
and data-phase rules give; then GOOD, or CHECK CONDITION with sense; or a broken device), nothing raises, nothing
hangs, and a command that does not end GOOD leaves the image as it was."""

from __future__ import annotations

import struct
import tempfile

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controllers.scsi.command import Direction
from controllers.virtio import layouts as L
from scenarios.profiles.virtio_blk import virtio_pci_config
from scenarios.profiles.virtio_scsi import PROFILES, virtio_scsi_config
from tests.contract.frontend_inputs import DATA_LENS, LUN_FIELDS, scsi_cdbs, scsi_lbas
from tests.support import time_limit
from tests.virtio_support import close_scsi, make_virtio_scsi, pattern, run

DISK = 1 << 20
BLOCKS = DISK // 512
GOOD, CHECK = 0x00, 0x02


def expected_response(env, lun: bytes, cdb: bytes, out_len: int, in_len: int) -> int:
    """The response virtio_scsi_handle_cmd_req_prepare gives (QEMU 7.2 hw/scsi/virtio-scsi.c), from its rules."""
    if out_len and in_len:
        return L.SCSI_S_FAILURE
    spec = env.dev.config.addressing == "spec"
    if lun[0] != 1 or lun[1] != 0 or not (lun[2] == 0 or 0x40 <= lun[2] < 0x80) or (spec and any(lun[4:])):
        return L.SCSI_S_BAD_TARGET
    plan = env.disk.plan(cdb.ljust(32, b"\0"))
    mode = Direction.OUT if out_len else Direction.IN if in_len else Direction.NONE
    if plan.direction is not Direction.NONE and (plan.direction is not mode or plan.length > out_len + in_len):
        return L.SCSI_S_OVERRUN
    return L.SCSI_S_OK


@settings(max_examples=100, deadline=None)
@given(profile=st.sampled_from(list(PROFILES)), lun=LUN_FIELDS, cdb=scsi_cdbs(BLOCKS),
       header_cut=st.sampled_from([0] * 6 + [1, 20]),
       sides=st.sampled_from(["none", "out", "out", "in", "in", "in", "both"]), out_len=DATA_LENS, in_len=DATA_LENS,
       ua=st.booleans())
def test_random_commands_get_an_exact_answer_and_failures_touch_nothing(profile, lun, cdb, header_cut, sides, out_len,
                                                                        in_len, ua):
    # the LUs are strict SBC disks, so a failing command never changes the image; the HBA is the profile's
    env = make_virtio_scsi(tempfile.mkdtemp(), size=DISK, profile="strict", config=virtio_scsi_config(profile),
                           pci=virtio_pci_config(profile), clear_ua=not ua)
    before = env.drive.read(0, DISK).data
    out_len = out_len if sides in ("out", "both") and not header_cut else 0   # (data-out would complete a header)
    in_len = in_len if sides in ("in", "both") else 0
    header = (L.SCSI_CMD_REQ_FAST.pack(lun, 1, 0, 0, 0) + cdb[:32].ljust(32, b"\0"))[:51 - header_cut]
    expected = expected_response(env, lun, cdb[:32], out_len, in_len) if not header_cut else None
    with time_limit(10):
        out = run(env, env.drv.raw(header, [pattern(out_len)], in_len))
    event(f"{profile}: " + ("broken" if out.broken else f"response {out.response} status {out.status}"))
    if header_cut:
        assert out.broken and env.transport.broken_reason == "wrong size for virtio-scsi headers"
    else:
        assert out.response == expected and not env.transport.broken
        if out.response == L.SCSI_S_OK:
            assert out.status in (GOOD, CHECK)
            assert (out.sense_code is not None) == (out.status == CHECK)
        else:
            assert (out.status, out.sense) == (GOOD, b"")
    if out.broken or out.response != L.SCSI_S_OK or out.status != GOOD:
        assert env.drive.read(0, DISK).data == before
    run(env, env.drv.pci.reset())                       # whatever happened, a reset brings the device back
    assert run(env, env.drv.probe())
    env.disk.unit_attention = None
    assert run(env, env.drv.command(0, bytes(6))).ok
    close_scsi(env)


descriptors = st.lists(st.tuples(scsi_lbas(BLOCKS),
                                 st.sampled_from([0, 1, 8, 64, BLOCKS]) | st.integers(0, 2**32 - 1)), max_size=4)


@settings(max_examples=40, deadline=None)
@given(profile=st.sampled_from(list(PROFILES)), descs=descriptors, extra=st.binary(max_size=20),
       data_length_delta=st.sampled_from([0, 0, 0, -2, 16, 100]), desc_length_delta=st.sampled_from([0, 0, -16, 8]))
def test_random_unmap_lists_through_the_ring(profile, descs, extra, data_length_delta, desc_length_delta):
    env = make_virtio_scsi(tempfile.mkdtemp(), size=DISK, profile="strict", config=virtio_scsi_config(profile),
                           pci=virtio_pci_config(profile))
    assert run(env, env.drv.command(0, struct.pack(">BBQIBB", 0x8A, 0, 0, BLOCKS, 0, 0), b"\xa5" * DISK)).ok
    before = env.drive.read(0, DISK).data
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    plist = struct.pack(">HH4x", (6 + len(body) + data_length_delta) % 2**16,
                        (len(body) + desc_length_delta) % 2**16) + body + extra
    cdb = bytes([0x42, 0, 0, 0, 0, 0, 0]) + len(plist).to_bytes(2, "big") + b"\0"
    with time_limit(10):
        out = run(env, env.drv.command(0, cdb, plist))
    event(f"status {out.status} {out.sense_code}")
    assert out.response == L.SCSI_S_OK and out.status in (GOOD, CHECK)
    after = env.drive.read(0, DISK).data
    if out.status != GOOD:
        assert after == before and out.sense_code.key == 0x05
    else:
        declared = (len(body) + desc_length_delta) % 2**16
        listed = descs[:(min(declared, len(plist) - 8) & ~15) // 16]   # SBC-3: an incomplete last one is ignored
        for lba, n in listed:                        # raw with discard=unmap: every unmapped block reads zeros
            assert after[lba * 512:(lba + n) * 512] == bytes(n * 512)
    close_scsi(env)
