"""Simulated time: the run kernel, interrupt lines, latency models and the device clock that times completions."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions, Op, Request
from emu.memory import GuestMemory
from emu.sim import DEFAULT_FIXED, DEFAULT_PER_BYTE, DeviceClock, InterruptLine, LatencyModel, Simulation
from images import create_image, open_image

MiB = 1 << 20
DISK = 1 * MiB

# Costs in powers of two, so sums of them are exact floats and timelines compare with ==.
MODEL = LatencyModel(fixed={"read": 2.0 ** -10, "write": 2.0 ** -9, "flush": 2.0 ** -6},
                     per_byte={"read": 2.0 ** -20, "write": 2.0 ** -19})


@pytest.fixture
def drive(tmp_path):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", DISK, {})
    d = Drive(open_image(path, "raw"), DriveOptions())
    yield d
    d.close()


# -- kernel ---------------------------------------------------------------------------------------------
def test_simulation_runs_processes_in_simulated_time():
    sim = Simulation()
    log = []

    def proc(name, delay):
        yield sim.timeout(delay)
        log.append((name, sim.now))
        return name

    a = sim.process(proc("a", 2))
    sim.process(proc("b", 1))
    assert sim.now == 0
    assert sim.run(until=a) == "a"
    assert log == [("b", 1), ("a", 2)]
    sim.process(proc("c", 5))
    sim.run(until=4)
    assert sim.now == 4 and log[-1] == ("a", 2)
    sim.run()
    assert log[-1] == ("c", 7)


def test_each_run_has_its_own_seeded_random():
    a, b, c = Simulation(seed=7), Simulation(seed=7), Simulation(seed=8)
    draws = [[s.random.random() for _ in range(5)] for s in (a, b, c)]
    assert draws[0] == draws[1] != draws[2]
    assert Simulation().seed == 0


# -- interrupt lines -------------------------------------------------------------------------------------
def test_a_waiter_wakes_when_the_line_is_raised():
    sim = Simulation()
    irq = InterruptLine(sim, "ahci0")
    log = []

    def driver():
        value = yield irq.wait()
        log.append(("woken", sim.now, value is irq))

    def device():
        yield sim.timeout(3)
        irq.raise_()

    sim.process(driver())
    sim.process(device())
    sim.run()
    assert log == [("woken", 3, True)]
    assert irq.level and irq.raises == 1 and irq.history == [(3, True)]


def test_waiting_on_a_raised_line_fires_at_once():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    irq.raise_()
    log = []

    def driver():
        yield sim.timeout(1)
        yield irq.wait()
        log.append(sim.now)

    sim.process(driver())
    sim.run()
    assert log == [1]


def test_the_line_rearms_after_lower():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    log = []

    def driver():
        for _ in range(3):
            yield irq.wait()
            log.append(sim.now)
            irq.lower()         # acknowledge: the next wait waits for the next raise

    def device():
        for t in (1, 2, 4):
            yield sim.timeout(t)
            irq.raise_()

    sim.process(driver())
    sim.process(device())
    sim.run()
    assert log == [1, 3, 7]
    assert irq.raises == 3 and not irq.level
    assert irq.history == [(1, True), (1, False), (3, True), (3, False), (7, True), (7, False)]


def test_raise_while_raised_wakes_nobody_twice_and_does_not_count():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    woken = []

    def driver(name):
        yield irq.wait()
        woken.append((name, sim.now))

    def device():
        yield sim.timeout(1)
        irq.raise_()
        yield sim.timeout(1)
        irq.raise_()            # still raised: a level-triggered guest cannot see this

    sim.process(driver("a"))
    sim.process(driver("b"))
    sim.process(device())
    sim.run()
    assert woken == [("a", 1), ("b", 1)]
    assert irq.raises == 1 and irq.history == [(1, True)]


def test_lower_after_a_wakeup_does_not_cancel_it_and_lower_when_low_is_a_no_op():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    irq.lower()
    woken = []

    def driver():
        yield irq.wait()
        woken.append(sim.now)

    def device():
        yield sim.timeout(2)
        irq.raise_()
        irq.lower()             # same instant: the waiter was already woken

    sim.process(driver())
    sim.process(device())
    sim.run()
    assert woken == [2] and irq.history == [(2, True), (2, False)]


def test_pulse_wakes_waiters_and_leaves_the_line_low():
    sim = Simulation()
    irq = InterruptLine(sim, "msi")
    woken = []

    def driver():
        yield irq.wait()
        woken.append(sim.now)

    sim.process(driver())
    sim.run(until=1)
    irq.pulse()
    sim.run()
    assert woken == [1] and not irq.level and irq.raises == 1
    irq.raise_()
    irq.pulse()                 # on a raised line: nothing
    assert irq.level and irq.raises == 2


def test_a_wait_that_timed_out_is_harmless_when_the_line_rises_later():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    log = []

    def driver():
        result = yield irq.wait() | sim.timeout(1, "timeout")
        log.append((sim.now, list(result.values())))

    def device():
        yield sim.timeout(2)
        irq.raise_()

    sim.process(driver())
    sim.process(device())
    sim.run()
    assert log == [(1, ["timeout"])] and irq.raises == 1



def test_wait_until_wakes_on_the_line_or_the_deadline_and_refuses_a_passed_deadline():
    sim = Simulation()
    irq = InterruptLine(sim, "irq")
    log = []

    def driver():
        log.append(((yield from irq.wait_until(5)), sim.now))      # raised at 2
        irq.lower()
        log.append(((yield from irq.wait_until(4)), sim.now))      # nothing comes: wakes at the deadline
        log.append(((yield from irq.wait_until(4)), sim.now))      # the deadline has passed

    def device():
        yield sim.timeout(2)
        irq.raise_()

    sim.process(driver())
    sim.process(device())
    sim.run()
    assert log == [(True, 2), (True, 4), (False, 4)]


# -- latency model ----------------------------------------------------------------------------------------
def test_cost_is_fixed_plus_per_byte():
    model = LatencyModel(fixed={"read": 50e-6}, per_byte={"read": 1 / 2e9})
    assert model.cost("read", 0) == 50e-6
    assert model.cost(Op.READ, 2_000_000) == pytest.approx(50e-6 + 1e-3)
    assert model.cost("write", 4096) == 0.0       # not in the given mappings: free in this model


def test_default_model_times_every_operation():
    model = LatencyModel()
    for op in Op:
        assert DEFAULT_FIXED[op] > 0 and DEFAULT_PER_BYTE[op] >= 0
        assert model.cost(op, 4096) == DEFAULT_FIXED[op] + DEFAULT_PER_BYTE[op] * 4096
    assert model.cost("read", 1 << 20) > model.cost("read", 4096)
    assert hash(model) == hash(LatencyModel()) and model == LatencyModel()


@pytest.mark.parametrize(("fixed", "per_byte", "match"), [
    ({"write_zeroes": 1e-6}, {}, "unknown operation 'write_zeroes'"),
    ({}, {"trim": 0.0}, "unknown operation 'trim'"),
    ({"read": -1.0}, {}, "non-negative"),
    ({}, {"read": float("nan")}, "non-negative"),
])
def test_model_refuses_unknown_operations_and_negative_costs(fixed, per_byte, match):
    with pytest.raises(ValueError, match=match):
        LatencyModel(fixed=fixed, per_byte=per_byte)


# -- device clock -----------------------------------------------------------------------------------------------
def test_cost_sums_the_requests_and_a_failed_one_costs_the_fixed_part_only(drive):
    clock = DeviceClock(Simulation(), MODEL)
    ok, failed = drive.execute(Request.read(0, 4096)), drive.execute(Request.read(DISK - 512, 4096))
    assert ok.ok and not failed.ok
    assert clock.cost([ok]) == MODEL.cost("read", 4096)
    assert clock.cost([failed]) == MODEL.fixed["read"]
    assert clock.cost([ok, failed, ok]) == 2 * MODEL.cost("read", 4096) + MODEL.fixed["read"]
    assert clock.cost([]) == 0.0
    assert DeviceClock(Simulation()).cost([ok]) == 0.0      # untimed


def test_default_model_and_flush(drive):
    clock = DeviceClock(Simulation(), LatencyModel())
    assert clock.cost([drive.execute(Request.flush())]) == DEFAULT_FIXED["flush"]


def test_timed_deliveries_overlap_and_come_in_order_of_their_time(drive):
    """Three commands started at once: each completes after its own cost, none waits for another; the data
    effect followed submission order (the fast read sees the slow write's bytes)."""
    sim = Simulation()
    clock = DeviceClock(sim, MODEL)
    log = []
    write = drive.execute(Request.write(8192, b"\x42" * 65536))
    read = drive.execute(Request.read(8192, 512))
    flush = drive.execute(Request.flush())
    for name, completion in (("write", write), ("read", read), ("flush", flush)):
        clock.later(clock.cost([completion]), lambda name=name: log.append((name, sim.now)))
    assert log == [] and clock.timed
    sim.run()
    costs = {"write": MODEL.cost("write", 65536), "read": MODEL.cost("read", 512), "flush": MODEL.fixed["flush"]}
    assert log == sorted(costs.items(), key=lambda item: item[1])
    assert read.data == b"\x42" * 512


def test_a_zero_delay_is_still_later_than_the_caller():
    sim = Simulation()
    clock = DeviceClock(sim, MODEL)
    log = []
    clock.later(clock.cost([]), log.append, "done")     # costs nothing, yet is delivered by the simulation
    assert log == []
    sim.run()
    assert log == ["done"] and sim.now == 0


def test_a_reset_drops_every_pending_delivery_and_later_ones_still_come():
    sim = Simulation()
    clock = DeviceClock(sim, MODEL)
    log = []
    pending = [clock.later(t, log.append, t) for t in (1.0, 2.0)]
    sim.run(until=0.5)
    clock.reset()
    after = clock.later(1.0, log.append, "after")
    assert not any(d.pending for d in pending) and after.pending
    sim.run()
    assert log == ["after"] and sim.now == 2.0 and not after.pending


def test_a_delivery_runs_once_cancelled_or_drained_early():
    """IDE's one pending completion: a newer one cancels it; stopping the bus master delivers it now."""
    sim = Simulation()
    clock = DeviceClock(sim, MODEL)
    log = []
    cancelled = clock.later(1.0, log.append, "cancelled")
    cancelled.cancel()
    drained = clock.later(2.0, lambda: log.append(("drained", sim.now)))
    sim.run(until=0.5)
    drained.deliver()
    drained.deliver()                                   # a second time: nothing
    sim.run()
    assert log == [("drained", 0.5)] and sim.now == 2.0
    assert not cancelled.pending and not drained.pending


@given(arrivals=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 16)), min_size=1, max_size=12))
def test_each_delivery_comes_its_cost_after_its_start(arrivals):
    """Commands start at integer times with integer costs: each is delivered at start + cost, ties in start order."""
    sim = Simulation()
    clock = DeviceClock(sim, LatencyModel(fixed={}, per_byte={"read": 1.0}))
    log = []

    def device():
        for n, (gap, cost) in enumerate(arrivals):
            yield sim.timeout(gap)
            clock.later(cost, lambda n=n: log.append((sim.now, n)))

    sim.process(device())
    sim.run()
    starts, now = [], 0
    for gap, _ in arrivals:
        now += gap
        starts.append(now)
    assert log == sorted((start + cost, n) for n, (start, (_, cost)) in enumerate(zip(starts, arrivals)))


# -- a guest driver, a toy controller and its clock together -----------------------------------------------------
CMD = struct.Struct("<BxxxIQQ")     # op (0 read, 1 write), length, disk offset, guest buffer address
STATUS_OFFSET = CMD.size            # one status byte after the command: 0 pending, 1 ok, 2 error


class ToyController:
    """Just enough of a device to show the pattern: fetch a command from guest memory, run it on the Drive at
    once, and deliver the status and the interrupt when the clock says so (untimed: inside the doorbell)."""

    def __init__(self, sim, mem, drive, clock, irq):
        self.sim, self.mem, self.drive, self.clock, self.irq = sim, mem, drive, clock, irq

    def doorbell(self, cmd_addr):
        op, length, offset, buf = self.mem.unpack(CMD, cmd_addr)
        if op == 1:
            with self.mem.view(buf, length) as payload:     # zero-copy: the Drive consumes it at once
                completion = self.drive.execute(Request.write(offset, payload))
        else:
            completion = self.drive.execute(Request.read(offset, length))
        if self.clock.timed:
            self.clock.later(self.clock.cost([completion]), self._complete, cmd_addr, buf, completion)
        else:
            self._complete(cmd_addr, buf, completion)

    def _complete(self, cmd_addr, buf, completion):
        if completion.ok and completion.data is not None:
            self.mem.write(buf, completion.data)             # DMA to the guest when the command completes
        self.mem.write_u8(cmd_addr + STATUS_OFFSET, 1 if completion.ok else 2)
        self.irq.raise_()

    def acknowledge(self):
        self.irq.lower()


@pytest.mark.parametrize("model", [MODEL, None], ids=["timed", "untimed"])
def test_guest_driver_writes_memory_submits_waits_for_the_interrupt_and_reads_back(drive, model):
    sim = Simulation(seed=1)
    irq = InterruptLine(sim, "toy")
    log = []
    with GuestMemory(MiB) as mem:
        ctrl = ToyController(sim, mem, drive, DeviceClock(sim, model), irq)

        def driver():
            cmd = mem.alloc(CMD.size + 1)
            buf = mem.alloc(4096, align=4096)
            pattern = bytes(sim.random.randrange(256) for _ in range(4096))
            for op, offset in ((1, 65536), (0, 65536)):
                if op == 0:
                    mem.fill(buf, 4096, 0)
                else:
                    mem.write(buf, pattern)
                mem.pack(CMD, cmd, op, 4096, offset, buf)
                mem.write_u8(cmd + STATUS_OFFSET, 0)
                ctrl.doorbell(cmd)
                if model is None:           # untimed: done inside the doorbell, nothing left to simulate
                    assert irq.level and mem.read_u8(cmd + STATUS_OFFSET) == 1
                    assert sim.env.peek() == float("inf")
                yield irq.wait()
                log.append((sim.now, "write" if op else "read", mem.read_u8(cmd + STATUS_OFFSET)))
                ctrl.acknowledge()
            assert mem.read(buf, 4096) == pattern
            mem.free(buf)
            mem.free(cmd)
            return "done"

        proc = sim.process(driver())
        sim.run()
        assert proc.value == "done" and mem.allocated() == {}
    t_write, t_read = (MODEL.cost("write", 4096), MODEL.cost("read", 4096)) if model else (0, 0)
    assert log == [(t_write, "write", 1), (t_write + t_read, "read", 1)]
    assert irq.raises == 2 and not irq.level
    assert drive.read(65536, 4096).data == driver_pattern(1)


def driver_pattern(seed):
    """The pattern the driver drew from its run's random generator (the seed makes it reproducible)."""
    sim = Simulation(seed=seed)
    return bytes(sim.random.randrange(256) for _ in range(4096))
