"""The virtio-pci modern transport (QEMU virtio-pci.c / virtio.c): BAR layout, feature negotiation, the status
machine, reset, queues, notification, ISR and interrupts, the broken state, and completions in simulated time."""

from __future__ import annotations

import pytest

from controllers.drivers.virtio_blk import header
from controllers.virtio import layouts as L
from controllers.virtio.pci import VirtioPciConfig
from emu.sim import LatencyModel
from tests.virtio_support import RAM, close, make_virtio_blk, pattern, run

OFFSET = L.common_cfg_offset


@pytest.fixture
def env(tmp_path):
    e = make_virtio_blk(tmp_path)
    yield e
    close(e)


@pytest.fixture
def bare(tmp_path):
    e = make_virtio_blk(tmp_path, probe=False)
    yield e
    close(e)


def rd(env, name, size=None):
    return env.transport.mmio_read(OFFSET(name), size or L.COMMON_CFG_FIELDS[name][1])


def wr(env, name, value, size=None):
    env.transport.mmio_write(OFFSET(name), value, size or L.COMMON_CFG_FIELDS[name][1])


def test_bar_layout_and_reset_values(bare):
    t = bare.transport
    offered = t.offered()
    assert offered & L.bit(L.F_VERSION_1) and offered & L.bit(L.BLK_F_DISCARD)
    for word in (0, 1):
        wr(bare, "device_feature_select", word)
        assert rd(bare, "device_feature") == offered >> (32 * word) & 0xFFFFFFFF
    wr(bare, "device_feature_select", 2)
    assert rd(bare, "device_feature") == 0
    assert rd(bare, "num_queues") == 1 and rd(bare, "device_status") == 0 and rd(bare, "queue_size") == 256
    assert rd(bare, "config_msix_vector") == rd(bare, "queue_msix_vector") == L.VIRTIO_MSI_NO_VECTOR
    wr(bare, "queue_select", 5)
    assert rd(bare, "queue_notify_off") == 5 and rd(bare, "queue_size") == 0     # queue 5 does not exist
    assert t.mmio_read(OFFSET("device_status"), 4) == 0                          # a field read at its offset only
    assert t.mmio_read(L.PCI_DEVICE_CFG_OFFSET, 8) == 16 * 1024 * 1024 // 512   # capacity
    assert t.mmio_read(L.PCI_DEVICE_CFG_OFFSET + 56, 1) == 1                     # write_zeroes_may_unmap
    assert t.mmio_read(L.PCI_DEVICE_CFG_OFFSET + 57, 1) == 0xFF                  # beyond the exposed 57 bytes
    assert t.mmio_read(L.PCI_DEVICE_CFG_OFFSET + 56, 4) == 0xFFFFFFFF
    assert t.mmio_read(L.PCI_NOTIFY_OFFSET, 2) == 0
    with pytest.raises(ValueError):
        t.mmio_read(0, 3)


@pytest.mark.parametrize("accept, ok", [
    ("offered", True),
    ("offered+unoffered", False),                  # bit 35 (IN_ORDER) was not offered
    ("offered-version1", False),
])
def test_features_ok_is_refused_as_the_spec_says(bare, accept, ok):
    offered = bare.transport.offered()
    bits = {"offered": offered, "offered+unoffered": offered | L.bit(L.F_IN_ORDER),
            "offered-version1": offered & ~L.bit(L.F_VERSION_1)}[accept]
    assert run(bare, bare.drv.pci.probe(0, accept=bits)) is ok
    status = rd(bare, "device_status")
    assert bool(status & L.STATUS_FEATURES_OK) is ok
    assert bool(status & L.STATUS_FAILED) is not ok                             # the driver gave up


def test_qemu_masks_unoffered_features_and_accepts_features_ok(tmp_path):
    env = make_virtio_blk(tmp_path, probe=False, pci=VirtioPciConfig(features_check="qemu"))
    offered = env.transport.offered()
    assert run(env, env.drv.pci.probe(0, accept=offered | L.bit(L.F_IN_ORDER))) is True
    assert env.transport.features == offered
    wr(env, "driver_feature_select", 1)
    assert rd(env, "driver_feature") == (offered | L.bit(L.F_IN_ORDER)) >> 32     # the raw word reads back
    close(env)


def test_features_are_frozen_after_features_ok(env):
    before = env.transport.features
    wr(env, "driver_feature_select", 0)
    wr(env, "driver_feature", 0)
    assert env.transport.features == before


def test_writing_zero_resets_status_features_and_queues(env):
    assert run(env, env.drv.write(0, pattern(512))).ok
    wr(env, "queue_select", 0)
    assert rd(env, "queue_enable") == 1 and rd(env, "queue_desc", 4) != 0
    wr(env, "device_status", 0)
    assert rd(env, "device_status") == 0 and env.transport.features == 0
    assert rd(env, "queue_enable") == 0 and rd(env, "queue_desc", 4) == 0 and rd(env, "queue_size") == 256
    assert not env.irq.level
    run(env, env.drv.pci.reset())                   # a new bring-up works
    assert run(env, env.drv.probe()) and run(env, env.drv.read(0, 1)).data_in == pattern(512)


@pytest.mark.parametrize("offered", [True, False])
def test_queue_reset_disables_the_queue_and_restores_its_size_whatever_was_offered(tmp_path, offered):
    """As Debian's QEMU 7.2.22 does on machine types 7.2 (RING_RESET offered) and 7.1 (not): the ring addresses
    stay, a re-enabled queue starts from fresh indices."""
    env = make_virtio_blk(tmp_path, pci=VirtioPciConfig(ring_reset=offered))
    assert bool(env.transport.offered() & L.bit(L.F_RING_RESET)) is offered
    assert run(env, env.drv.write(0, pattern(512))).ok
    wr(env, "queue_select", 0)
    desc = rd(env, "queue_desc")
    wr(env, "queue_size", 64)
    wr(env, "queue_reset", 1)
    assert (rd(env, "queue_enable"), rd(env, "queue_size"), rd(env, "queue_desc"), rd(env, "queue_reset")) == \
        (0, 256, desc, 0)
    close(env)


def test_queue_size_can_be_reduced_but_never_zero(bare):
    wr(bare, "queue_size", 0)
    assert rd(bare, "queue_size") == 256
    wr(bare, "queue_size", 1025)
    assert rd(bare, "queue_size") == 256
    wr(bare, "queue_size", 16)
    assert rd(bare, "queue_size") == 16


def test_isr_is_cleared_by_reading_and_lowers_the_line(env):
    env.transport.mmio_write(L.PCI_NOTIFY_OFFSET, 0, 2)        # a kick of an empty queue: nothing
    assert not env.irq.level
    q = env.drv.pci.queues[0]
    q.add([header(L.BLK_T_FLUSH)], [1])
    env.transport.mmio_write(L.PCI_NOTIFY_OFFSET, 0, 2)
    assert env.irq.level
    assert env.transport.mmio_read(L.PCI_ISR_OFFSET, 1) == L.PCI_ISR_QUEUE
    assert not env.irq.level and env.transport.mmio_read(L.PCI_ISR_OFFSET, 1) == 0


@pytest.mark.parametrize("config_isr", [0x3, 0x2])
def test_a_configuration_change_bumps_the_generation_and_interrupts(tmp_path, config_isr):
    env = make_virtio_blk(tmp_path, pci=VirtioPciConfig(config_isr=config_isr))
    generation = rd(env, "config_generation")
    env.transport.notify_config()
    assert rd(env, "config_generation") == generation + 1 and env.irq.level
    assert env.transport.mmio_read(L.PCI_ISR_OFFSET, 1) == config_isr
    wr(env, "device_status", 0)
    env.transport.notify_config()                            # not before DRIVER_OK (virtio_notify_config)
    assert not env.irq.level and rd(env, "config_generation") == generation + 1
    close(env)


def test_notifying_a_queue_that_does_not_exist_does_nothing(env):
    """qtest nxvirtq: a kick of a nonexistent queue must not crash; the device keeps working."""
    for index in (1, 7, 1023, 5000):
        env.transport.mmio_write(L.PCI_NOTIFY_OFFSET + 4 * index, index, 2)
    env.transport.mmio_write(L.PCI_NOTIFY_OFFSET + 0x2000, 0, 2)    # outside the notify region: nothing
    assert not env.transport.broken and run(env, env.drv.flush()).ok


def test_queue_enable_with_a_value_other_than_one_breaks_the_device(env):
    wr(env, "queue_select", 0)
    wr(env, "queue_enable", 0)
    assert env.transport.broken and rd(env, "device_status") & L.STATUS_NEEDS_RESET
    assert "queue_enable" in env.transport.broken_reason
    assert env.irq.level and env.transport.mmio_read(L.PCI_ISR_OFFSET, 1) & L.PCI_ISR_CONFIG


def test_rings_outside_ram_break_the_device_when_the_queue_is_enabled(bare):
    assert run(bare, bare.drv.pci.probe(bare.drv.supported))
    wr(bare, "queue_select", 0)
    wr(bare, "queue_desc", RAM - 16, 8)
    wr(bare, "queue_enable", 1)
    assert bare.transport.broken and "Cannot map desc" in bare.transport.broken_reason
    assert rd(bare, "device_status") & L.STATUS_NEEDS_RESET


def test_a_broken_device_processes_nothing_until_reset(env):
    out = run(env, env.drv.pci.raw_chain(0, [(0x10000, 16, L.VIRTQ_DESC_F_NEXT, 0)]))   # a looped chain
    assert not out.completed and out.broken and out.isr & L.PCI_ISR_CONFIG
    assert env.transport.broken_reason == "Looped descriptor"
    status = rd(env, "device_status")
    assert status & L.STATUS_NEEDS_RESET and status & L.STATUS_DRIVER_OK
    records = len(env.transport.records)
    env.transport.mmio_write(L.PCI_NOTIFY_OFFSET, 0, 2)
    assert len(env.transport.records) == records            # kicks are ignored while broken
    run(env, env.drv.pci.reset())
    assert not env.transport.broken and run(env, env.drv.probe()) and run(env, env.drv.flush()).ok


def test_two_queues_complete_on_their_own_used_rings(tmp_path):
    env = make_virtio_blk(tmp_path, num_queues=2)
    assert env.drv.has(L.BLK_F_MQ) and len(env.drv.pci.queues) == 2
    assert run(env, env.drv.write(16, pattern(1024), queue=1)).ok
    assert run(env, env.drv.read(16, 2, queue=0)).data_in == pattern(1024)
    assert [r.queue for r in env.transport.records] == [1, 0]
    assert [q.last_used_idx for q in env.drv.pci.queues] == [1, 1]
    close(env)


def test_completions_arrive_after_their_simulated_cost_and_overlap(tmp_path):
    model = LatencyModel(fixed={"read": 1.0, "write": 2.0, "flush": 0.5}, per_byte={})
    env = make_virtio_blk(tmp_path, timing=model)
    t0 = env.sim.now
    outs = run(env, env.drv.pci.submit_batch(0, [([header(L.BLK_T_OUT, 0), pattern(512)], [1]),
                                                  ([header(L.BLK_T_IN, 0)], [512, 1]),
                                                  ([header(L.BLK_T_FLUSH)], [1])]))
    assert all(o.completed for o in outs)
    assert [o.time - t0 for o in outs] == [2.0, 1.0, 0.5]   # all three in flight at once
    assert outs[1].data_in[:512] == pattern(512)             # the read ran after the write: submission order
    assert [r.done_time - r.issue_time for r in env.transport.records] == [2.0, 1.0, 0.5]
    close(env)


def test_a_reset_drops_completions_still_in_flight(tmp_path):
    env = make_virtio_blk(tmp_path, timing=LatencyModel(fixed={"flush": 1.0}, per_byte={}))
    q = env.drv.pci.queues[0]
    q.add([header(L.BLK_T_FLUSH)], [1])
    env.transport.mmio_write(L.PCI_NOTIFY_OFFSET, 0, 2)
    wr(env, "device_status", 0)
    env.sim.run()
    assert env.mem.read_u16(q.used + L.USED_IDX) == 0 and env.transport.records[-1].done_time is None
    close(env)
