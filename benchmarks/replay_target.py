"""The same replay script answered by emu's device and by a real QEMU's over qtest, timed in one invocation.

    python benchmarks/replay_target.py [--repeat 3]

For each checked-in tests/scenarios/replay/*-qemu-7.2.jsonl: the seconds the script's commands take through emu's
driver models on emu's device (profile qemu-7.2) and on QEMU 7.2's (`emu replay --target qemu`), the setup (the
machine built, or QEMU started and PCI programmed) timed apart; the best of --repeat runs; the ratio QEMU / emu.
Issue 14's goal is emu at least 20x faster than QEMU-over-qtest on these scripts.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emu.block import DriveOptions  # noqa: E402
from scenarios.replay.runner import replay  # noqa: E402
from scenarios.replay.script import parse_script  # noqa: E402
from scenarios.run import guest_run, qemu_run  # noqa: E402

REPLAY = pathlib.Path(__file__).resolve().parents[1] / "tests" / "scenarios" / "replay"
OPTIONS = DriveOptions(discard="unmap")


def timed(target: str, controller: str, script: pathlib.Path, directory: str) -> tuple[float, float]:
    """(setup seconds, command seconds) of one run of `script` on a fresh 64 MiB raw image."""
    image = os.path.join(directory, f"{target}.raw")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    steps = parse_script(script.read_text(), str(script), controller)
    start = time.perf_counter()
    if target == "qemu":
        context = qemu_run(image, controller, "raw", options=OPTIONS)
    else:
        context = guest_run(image, controller, "qemu-7.2", "raw", options=OPTIONS)
    with context as machine:
        machine = getattr(machine, "machine", machine)      # emu's Run holds its machine
        ready = time.perf_counter()
        for _ in replay(machine, steps, str(script)):
            pass
        done = time.perf_counter()
    os.remove(image)
    return ready - start, done - ready


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    print(f"{'script':<24}{'lines':>6}{'emu setup':>11}{'emu cmds':>10}{'qemu setup':>12}{'qemu cmds':>11}"
          f"{'cmds ratio':>12}")
    with tempfile.TemporaryDirectory() as directory:
        for script in sorted(REPLAY.glob("*-qemu-7.2.jsonl")):
            controller = script.stem.removesuffix("-qemu-7.2")
            lines = sum(1 for line in script.read_text().splitlines() if line.startswith("{"))
            best = {}
            for target in ("emu", "qemu"):
                runs = [timed(target, controller, script, directory) for _ in range(a.repeat)]
                best[target] = (min(r[0] for r in runs), min(r[1] for r in runs))
            (es, ec), (qs, qc) = best["emu"], best["qemu"]
            print(f"{script.stem:<24}{lines:>6}{es * 1e3:>9.1f}ms{ec * 1e3:>8.1f}ms{qs * 1e3:>10.1f}ms"
                  f"{qc * 1e3:>9.1f}ms{qc / ec:>11.1f}x")


if __name__ == "__main__":
    main()
