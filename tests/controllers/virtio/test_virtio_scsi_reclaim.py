"""End to end through virtio-scsi with Linux's sd on top: its discards (UNMAP, or WRITE SAME(16) with UNMAP when
the LU offers no UNMAP) give host space back on raw and qcow2 with discard=unmap and not with discard=ignore, and
GET LBA STATUS sent through the ring agrees with `qemu-img map` (the oracle) under the strict profile."""

from __future__ import annotations

import functools
import json
import os
import struct

import pytest

from controllers.drivers.sd import ProvisioningMode, SdDriver
from scenarios.profiles.virtio_blk import virtio_pci_config
from scenarios.profiles.virtio_scsi import virtio_scsi_config
from tests.conftest import run as run_cmd
from tests.virtio_support import GUEST, MiB, close_scsi, data_extents, make_virtio_scsi, run

SIZE = 16 * MiB
BLOCKS = SIZE // 512
DATA = 8 * MiB


def attach(tmp_path, fmt, discard, profile="qemu-7.2", **fields):
    env = make_virtio_scsi(tmp_path, fmt, SIZE, discard=discard, profile=profile, config=virtio_scsi_config(profile),
                           pci=virtio_pci_config(profile), clear_ua=False, **fields)
    env.sd = SdDriver(functools.partial(env.drv.command, 0), guest=GUEST, max_hw_sectors=env.drv.limits.max_sectors)
    env.info = run(env, env.sd.probe())
    return env


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("mode, fields", [(ProvisioningMode.UNMAP, {}), (ProvisioningMode.WS16, {"lbpu": False})])
@pytest.mark.parametrize("discard", ["unmap", "ignore"])
def test_sd_discards_reclaim_host_space_only_with_unmap(tmp_path, qemu_img, fmt, mode, fields, discard):
    env = attach(tmp_path, fmt, discard, **fields)
    assert env.info.mode is mode
    assert run(env, env.sd.write(0, b"\xa5" * DATA)) and run(env, env.sd.flush())
    full = os.stat(env.path).st_blocks * 512
    assert full >= DATA
    outcomes = run(env, env.sd.discard([(0, DATA // 512)]))
    assert outcomes and all(o.ok for o in outcomes)
    opcode = 0x42 if mode is ProvisioningMode.UNMAP else 0x93
    assert {cdb[0] for cdb, _ in env.sd.discard_commands([(0, DATA // 512)])} == {opcode}
    ok, data = run(env, env.sd.read(0, DATA // 512))
    # WRITE SAME writes zeros either way; a dropped UNMAP leaves the data
    assert ok and (data == bytes(DATA)) == (mode is ProvisioningMode.WS16 or discard == "unmap")
    assert run(env, env.sd.flush())
    close_scsi(env)
    after = os.stat(env.path).st_blocks * 512
    if discard == "unmap":
        assert after <= full - DATA + 64 * 1024, (full, after)
    else:
        assert after >= full, (full, after)
    run_cmd(qemu_img, "check", "-f", fmt, env.path, check=fmt == "qcow2")


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_get_lba_status_through_virtio_scsi_agrees_with_qemu_img_map(tmp_path, qemu_img, fmt):
    env = attach(tmp_path, fmt, "unmap", profile="strict")
    for lba, n in ((256, 512), (4096, 128), (9000, 1000), (BLOCKS - 64, 64)):
        assert run(env, env.sd.write(lba, b"\x5a" * n * 512))
    assert all(o.ok for o in run(env, env.sd.discard([(4096, 128)])))
    extents, lba = [], 0
    while lba < BLOCKS:
        alloc = 8 + 16 * 64
        out = run(env, env.drv.command(0, struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0), data_in_len=alloc))
        assert out.ok
        for off in range(8, 4 + int.from_bytes(out.data_in[:4], "big"), 16):
            start, count, status = struct.unpack(">QIB", out.data_in[off:off + 13])
            assert start == lba
            extents.append((start * 512, count * 512, status == 0))
            lba += count
    close_scsi(env)
    oracle = json.loads(run_cmd(qemu_img, "map", "-f", fmt, "--output=json", env.path).stdout)
    assert extents == data_extents(oracle)
