"""A catalog scenario's speed: wall time of the whole run, the guest's bytes written per wall second, against a bare
os.pwrite loop of the same request size measured in the same invocation, and where the time goes, by layer.

    python benchmarks/scenarios.py [large-disk ...] [--repeat 2] [--anchor-mib 256] [--profile]

The anchor writes (and deletes) `--anchor-mib` MiB to a file in the run's directory, in requests of the size
virtio-blk's queue gives ext4's writeback (1280 KiB): the host's own bytes per second. A scenario of synthetic
payload moves its bytes without writing them, so its ratio can exceed 1: it says how far the simulation runs ahead
of the host disk it would otherwise need. `--profile` runs the scenario once more under cProfile and sums its own
time per layer (the package of each function).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scenarios.play import play  # noqa: E402
from scenarios.run import load_scenario  # noqa: E402

REQUEST = 1280 << 10
LAYERS = (("scenarios/guest", "guest file system and block layer"), ("controllers/drivers", "guest drivers"),
          ("controllers", "emulated controllers"), ("emu/block", "block layer (Drive)"), ("images", "image formats"),
          ("emu", "emu core (memory, sim)"), ("scenarios", "player, machine"), ("simpy", "SimPy"))


def bare_pwrite(directory: str, mib: int) -> float:
    """Seconds to write `mib` MiB with os.pwrite in REQUEST pieces, fsync included."""
    path = os.path.join(directory, "anchor.bin")
    data = os.urandom(REQUEST)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    try:
        for offset in range(0, mib << 20, REQUEST):
            os.pwrite(fd, data, offset)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.remove(path)


def issued_bytes(played, *ops: str) -> int:
    """The bytes of the guest's requests of `ops`."""
    return sum(r.sectors * 512 for _, r in played.issued if r.op in ops)


def one_run(name: str, directory: str, profile: str | None = None):
    scenario = load_scenario(name)
    run_dir = tempfile.mkdtemp(dir=directory)
    try:
        start = time.perf_counter()
        if profile:
            holder = {}
            cProfile.runctx("holder['p'] = play(scenario, run_dir)", globals(), {"play": play, "scenario": scenario,
                                                                                "run_dir": run_dir,
                                                                                "holder": holder}, profile)
            played = holder["p"]
        else:
            played = play(scenario, run_dir)
        return time.perf_counter() - start, played
    finally:
        shutil.rmtree(run_dir)


def by_layer(profile: str) -> list[tuple[str, float]]:
    totals: dict[str, float] = {}
    for (filename, _line, _func), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profile).stats.items():
        label = next((text for prefix, text in LAYERS if f"/{prefix}/" in filename), "Python and the host (syscalls)")
        totals[label] = totals.get(label, 0.0) + tottime
    return sorted(totals.items(), key=lambda item: -item[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=["large-disk"])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--anchor-mib", type=int, default=256)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    directory = tempfile.mkdtemp(prefix="emu-bench-")
    try:
        anchor = min(bare_pwrite(directory, a.anchor_mib) for _ in range(a.repeat))
        anchor_rate = (a.anchor_mib << 20) / anchor
        print(f"anchor: os.pwrite of {a.anchor_mib} MiB in {REQUEST >> 10} KiB requests: {anchor:.2f} s, "
              f"{anchor_rate / (1 << 20):.0f} MiB/s")
        print(f"{'scenario':<24}{'wall s':>8}{'simulated s':>13}{'written MiB':>13}{'discarded MiB':>15}"
              f"{'written MiB/wall s':>20}{'vs pwrite':>11}")
        for name in a.names:
            wall, played = min((one_run(name, directory) for _ in range(a.repeat)), key=lambda r: r[0])
            written = issued_bytes(played, "write", "write-zeroes")
            discarded = issued_bytes(played, "discard")
            simulated = played.result["steps"][-1]["end"]
            rate = written / wall
            print(f"{name:<24}{wall:>8.2f}{simulated:>13.2f}{written / (1 << 20):>13.0f}{discarded / (1 << 20):>15.0f}"
                  f"{rate / (1 << 20):>20.0f}{rate / anchor_rate:>10.2f}x")
            if a.profile:
                path = os.path.join(directory, f"{name}.prof")
                one_run(name, directory, path)
                total = sum(t for _, t in by_layer(path))
                print(f"  where the time goes (cProfile, own time per layer, {total:.1f} s profiled):")
                for label, seconds in by_layer(path):
                    print(f"    {label:<34}{seconds:>7.2f} s {100 * seconds / total:>5.1f}%")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
