"""Simulated time: the run kernel, interrupt lines, latency models and the queued, timed Drive."""

from __future__ import annotations

import errno
import heapq
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.block import Drive, DriveOptions, Op, Request
from emu.memory import GuestMemory
from emu.sim import DEFAULT_FIXED, DEFAULT_PER_BYTE, InterruptLine, LatencyModel, Simulation, TimedDrive
from images import create_image, open_image

MiB = 1 << 20
DISK = 1 * MiB

# Costs in powers of two, so sums of them are exact floats and timelines compare with ==.
MODEL = LatencyModel(fixed={"read": 2.0 ** -10, "write": 2.0 ** -9, "flush": 2.0 ** -6},
                     per_byte={"read": 2.0 ** -20, "write": 2.0 ** -19})


def _drive(path) -> Drive:
    create_image(str(path), "raw", DISK, {})
    return Drive(open_image(str(path), "raw"), DriveOptions())


@pytest.fixture
def drive(tmp_path):
    d = _drive(tmp_path / "disk.raw")
    yield d
    d.close()


@pytest.fixture(scope="module")
def shared_drive(tmp_path_factory):
    """One drive for hypothesis tests that only read (function-scoped fixtures do not mix with @given)."""
    d = _drive(tmp_path_factory.mktemp("sim") / "disk.raw")
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


# -- timed drive --------------------------------------------------------------------------------------------
def run_all(sim, timed, requests):
    procs = [timed.submit(r) for r in requests]
    sim.run()
    return [p.value for p in procs]


def test_queue_depth_one_serialises_requests(drive):
    sim = Simulation()
    timed = TimedDrive(sim, drive, MODEL, queue_depth=1)
    a, b = Request.read(0, 4096), Request.write(4096, b"x" * 1024)
    ca, cb = MODEL.cost("read", 4096), MODEL.cost("write", 1024)
    completions = run_all(sim, timed, [a, b])
    assert [c.request for c in completions] == [a, b] and all(c.ok for c in completions)
    times = [(r.submit_time, r.start_time, r.end_time) for r in timed.records]
    assert times == [(0, 0, ca), (0, ca, ca + cb)]
    assert sim.now == ca + cb


def test_queue_depth_two_overlaps_requests(drive):
    sim = Simulation()
    timed = TimedDrive(sim, drive, MODEL, queue_depth=2)
    ca, cb = MODEL.cost("read", 65536), MODEL.cost("write", 512)
    run_all(sim, timed, [Request.read(0, 65536), Request.write(0, b"y" * 512)])
    assert [(r.start_time, r.end_time) for r in timed.records] == [(0, ca), (0, cb)]
    assert sim.now == max(ca, cb)


def test_a_third_request_waits_for_the_first_free_slot(drive):
    sim = Simulation()
    timed = TimedDrive(sim, drive, LatencyModel(fixed={"read": 1.0}, per_byte={"read": 1 / 4096}), queue_depth=2)
    procs = [timed.submit(Request.read(0, n)) for n in (8192, 4096, 4096)]   # costs 3, 2, 2
    sim.run(until=0.5)
    assert (timed.in_flight, timed.waiting) == (2, 1)
    sim.run()
    assert [(r.start_time, r.end_time) for r in timed.records] == [(0, 3), (0, 2), (2, 4)]
    assert all(p.value.ok for p in procs)


def test_data_effect_follows_submission_order_not_completion_order(drive):
    """The write is slow and the read fast; the read was submitted after it and must see its data."""
    sim = Simulation()
    timed = TimedDrive(sim, drive, MODEL, queue_depth=32)
    write, read = run_all(sim, timed, [Request.write(8192, b"\x42" * 65536), Request.read(8192, 512)])
    assert read.data == b"\x42" * 512
    w, r = timed.records
    assert r.end_time < w.end_time


def test_a_failed_request_completes_with_its_error_after_the_fixed_cost_only(drive):
    sim = Simulation()
    timed = TimedDrive(sim, drive, MODEL)
    (completion,) = run_all(sim, timed, [Request.read(DISK - 512, 4096)])
    assert not completion.ok and completion.errno == errno.EIO
    assert timed.records[0].end_time == MODEL.fixed["read"]


def test_default_model_and_flush(drive):
    sim = Simulation()
    timed = TimedDrive(sim, drive)
    (completion,) = run_all(sim, timed, [Request.flush()])
    assert completion.ok and sim.now == DEFAULT_FIXED["flush"]


def test_queue_depth_must_be_positive(drive):
    with pytest.raises(ValueError):
        TimedDrive(Simulation(), drive, MODEL, queue_depth=0)


@given(depth=st.integers(1, 4),
       arrivals=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 16)), min_size=1, max_size=12))
def test_schedule_matches_a_fifo_slot_model(shared_drive, depth, arrivals):
    """Requests arrive at integer times with integer costs; each starts at max(arrival, first free slot)."""
    sim = Simulation()
    timed = TimedDrive(sim, shared_drive, LatencyModel(fixed={}, per_byte={"read": 1 / 512}), queue_depth=depth)

    def submitter():
        for gap, sectors in arrivals:
            yield sim.timeout(gap)
            timed.submit(Request.read(0, sectors * 512))

    sim.process(submitter())
    sim.run()
    slots = [0] * depth
    expected, now = [], 0
    for gap, cost in arrivals:
        now += gap
        start = max(now, heapq.heappop(slots))
        heapq.heappush(slots, start + cost)
        expected.append((now, start, start + cost))
    assert [(r.submit_time, r.start_time, r.end_time) for r in timed.records] == expected


# -- a guest driver, a toy controller and the timed drive together ---------------------------------------------
CMD = struct.Struct("<BxxxIQQ")     # op (0 read, 1 write), length, disk offset, guest buffer address
STATUS_OFFSET = CMD.size            # one status byte after the command: 0 pending, 1 ok, 2 error


class ToyController:
    """Just enough of a device to show the pattern: fetch a command from guest memory, submit, DMA, interrupt."""

    def __init__(self, sim, mem, timed, irq):
        self.sim, self.mem, self.timed, self.irq = sim, mem, timed, irq

    def doorbell(self, cmd_addr):
        self.sim.process(self._execute(cmd_addr))

    def _execute(self, cmd_addr):
        op, length, offset, buf = self.mem.unpack(CMD, cmd_addr)
        if op == 1:
            with self.mem.view(buf, length) as payload:     # zero-copy: the Drive consumes it during submit
                done = self.timed.submit(Request.write(offset, payload))
        else:
            done = self.timed.submit(Request.read(offset, length))
        completion = yield done
        if completion.ok and completion.data is not None:
            self.mem.write(buf, completion.data)             # DMA to the guest when the command completes
        self.mem.write_u8(cmd_addr + STATUS_OFFSET, 1 if completion.ok else 2)
        self.irq.raise_()

    def acknowledge(self):
        self.irq.lower()


def test_guest_driver_writes_memory_submits_waits_for_the_interrupt_and_reads_back(drive):
    sim = Simulation(seed=1)
    irq = InterruptLine(sim, "toy")
    log = []
    with GuestMemory(MiB) as mem:
        ctrl = ToyController(sim, mem, TimedDrive(sim, drive, MODEL, queue_depth=1), irq)

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
    t_write, t_read = MODEL.cost("write", 4096), MODEL.cost("read", 4096)
    assert log == [(t_write, "write", 1), (t_write + t_read, "read", 1)]
    assert irq.raises == 2 and not irq.level
    assert drive.read(65536, 4096).data == driver_pattern(1)


def driver_pattern(seed):
    """The pattern the driver drew from its run's random generator (the seed makes it reproducible)."""
    sim = Simulation(seed=seed)
    return bytes(sim.random.randrange(256) for _ in range(4096))
