"""What a mounted ext4 does while the guest idles: the lazy-init thread (its start, its pause, init_itable=N,
noinit_itable, an umount in the middle), jbd2's commit interval and the flusher's thirty seconds. The request
stream itself is checked against the real kernel in test_linux_oracle (lazy-init fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from scenarios.guest.ext4.background import MAX_START_DELAY
from scenarios.guest.ext4.layout import Layout
from scenarios.play import Player
from scenarios.run import load_scenario

MiB = 1 << 20


@contextmanager
def player(tmp_path, *overrides: str, name: str = "lazy-init") -> Iterator[Player]:
    p = Player(load_scenario(name, list(overrides)), str(tmp_path / "run"))
    try:
        yield p
    finally:
        p.close()


def issued(p: Player) -> list:
    """Every request the guest sent so far (those of ended phases are the player's)."""
    return [r for _, r in p.issued] + p.guest.dev.issued


def zeroouts(p: Player, since: int = 0):
    """(time, first sector, sectors) of the zero writes the guest sent: the inode tables' zeroing."""
    layout = Layout(p.scenario.disk.size)
    tables = range(layout.groups[0].inode_table * 8, layout.journal[0][0] * 8)
    return [(r.time, r.sector, r.sectors) for r in issued(p)[since:] if r.op in ("write-zeroes", "write")
            and r.sector in tables and r.sectors >= 1024]


def play(p: Player, steps):
    for i, step in steps:
        p.step(i, step)


def groups_started(p: Player, since: int = 0) -> list[float]:
    """When each group's zeroing began (its first request)."""
    starts = {g.inode_table * 8: g.index for g in Layout(p.scenario.disk.size).groups}
    seen, times = set(), []
    for time, sector, _ in zeroouts(p, since):
        group = max(g for s, g in starts.items() if s <= sector)
        if group not in seen:
            seen.add(group)
            times.append(time)
    return times


@pytest.mark.parametrize("mult", [10, 20])
def test_every_group_is_zeroed_once_within_the_start_delay_then_paced_by_the_multiplier(tmp_path, mult):
    with player(tmp_path, f"fs.mount=init_itable={mult}") as p:
        play(p, enumerate(p.scenario.steps[:3]))
        mounted = p.machine.sim.now
        play(p, [(3, p.scenario.steps[3])])
        times = groups_started(p)
        assert len(times) == Layout(p.scenario.disk.size).groups_count
        assert mounted <= times[0] < mounted + MAX_START_DELAY
        gaps = [b - a for a, b in zip(times[1:], times[2:])]
        assert len(set(round(g, 9) for g in gaps)) == 1, "one pause, measured on the first group"
        assert p.guest.fs.lazyinit is None and len(p.guest.fs.zeroed) == len(times)


def test_the_pause_grows_with_init_itable(tmp_path):
    def pause(mult):
        with player(tmp_path / str(mult), f"fs.mount=init_itable={mult}") as p:
            play(p, enumerate(p.scenario.steps[:4]))
            times = groups_started(p)
            return times[2] - times[1]
    assert pause(20) == pytest.approx(2 * pause(10), abs=0.004)     # one jiffy of rounding


def test_noinit_itable_zeroes_nothing(tmp_path):
    with player(tmp_path, "fs.mount=noinit_itable") as p:
        play(p, enumerate(p.scenario.steps))
        assert zeroouts(p) == [] and p.guest.fs.zeroed == set()


def test_an_umount_stops_the_thread_and_the_next_mount_goes_on_where_it_stopped(tmp_path):
    with player(tmp_path, "steps[3].seconds=0.2") as p:
        play(p, enumerate(p.scenario.steps[:4]))
        done = set(p.guest.fs.zeroed)
        play(p, [(4, p.scenario.steps[4])])
        assert p.guest.fs.lazyinit is None
        since = len(issued(p))
        p.machine.run(p.guest.mount(""))
        p.machine.run(p.guest.idle(60))
        again = groups_started(p, since)
        assert len(done) + len(again) == Layout(p.scenario.disk.size).groups_count


def test_a_mkfs_that_zeroed_the_tables_leaves_nothing_to_do(tmp_path):
    with player(tmp_path, "fs.mkfs=-E lazy_itable_init=0,lazy_journal_init=1,nodiscard") as p:
        play(p, enumerate(p.scenario.steps[:3]))
        assert p.guest.fs.lazyinit is None


@pytest.mark.parametrize(("seconds", "written"), [(29, False), (31, True)])
def test_the_flusher_writes_back_what_has_been_dirty_for_thirty_seconds(tmp_path, seconds, written):
    with player(tmp_path, "steps[4].do=idle", f"steps[4].seconds={seconds}", name="fstrim-after-delete") as p:
        play(p, enumerate(p.scenario.steps[:5]))
        host = p.disk.host_bytes()["disk.qcow2"]
        assert (host > 64 * MiB) == written
        if written:
            assert p.guest.fs.journal.running, "the allocation's metadata waits for the commit interval"
            p.machine.run(p.guest.idle(5))
            assert not p.guest.fs.journal.running
