"""One benchmark script of this tree and of an older commit, in one invocation, rounds interleaved: is a change
within noise?

The machine is shared and noisy, so figures of two separate runs cannot be compared; here each round runs the old
tree's script, then this tree's, with `--repeat 1`, and each row keeps its best figure per tree over the rounds.
The old tree is `git archive REV` in a temporary directory, run with its own modules (PYTHONPATH).

    python benchmarks/against.py REV controllers [--rounds 3] [-- ARGS...]   # benchmarks/controllers.py
    python benchmarks/against.py REV run [--rounds 2] [-- ARGS...]           # benchmarks/run.py

Prints, per row, the old and new figure and new/old: for `controllers` requests per second (higher is better),
for `run` emu's microseconds per request and emu/qemu-img of each tree (the anchor measured in the same round).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# controllers.py: "ide         write      4K      5000       27000       250000     0.11x"
CONTROLLER_ROW = re.compile(r"^(\S+)\s+(write|read)\s+(\d+K)\s+\d+\s+(\d+)\s+(\d+)\s+([\d.]+)x\s*$")
# run.py: "qcow2       write  4k sequential fresh ... qemu-img   0.123s  emu   0.456s  bare ..."
RUN_ROW = re.compile(r"^(.+?)\s+(\d+)\s+qemu-img\s+([\d.]+)s\s+emu\s+([\d.]+)s")


def rows(script: str, output: str) -> dict[str, tuple[float, float]]:
    """Row label -> (emu figure, anchor figure) from one run's output."""
    found = {}
    for line in output.splitlines():
        if script == "controllers":
            m = CONTROLLER_ROW.match(line)
            if m:
                found[" ".join(m.group(1, 2, 3))] = (float(m.group(4)), float(m.group(5)))
        else:
            m = RUN_ROW.match(line)
            if m:
                requests = int(m.group(2))      # calibrated per run: compare time per request
                found[" ".join(m.group(1).split())] = (float(m.group(4)) / requests, float(m.group(3)) / requests)
    return found


def run_once(tree: str, script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = [sys.executable, os.path.join(tree, "benchmarks", f"{script}.py"), "--repeat", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the older commit (anything git rev-parse takes)")
    p.add_argument("script", choices=("controllers", "run"))
    p.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, args = p.parse_args(argv[:cut]), argv[cut + 1:]       # after --: the benchmark script's own arguments
    higher_is_better = a.script == "controllers"
    best: dict[str, dict[str, tuple[float, float]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="emu-against-") as old:
        archive = subprocess.run(["git", "-C", ROOT, "archive", a.rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        for n in range(a.rounds):
            for name, tree in (("old", old), ("new", ROOT)):
                print(f"round {n + 1}/{a.rounds}: {name}", file=sys.stderr, flush=True)
                for label, (figure, anchor) in rows(a.script, run_once(tree, a.script, args)).items():
                    kept = best[name].get(label)
                    if kept is None or (figure > kept[0] if higher_is_better else figure < kept[0]):
                        best[name][label] = (figure, anchor)
    labels = [label for label in best["new"] if label in best["old"]]
    if a.script == "controllers":
        print(f"{'row':<28}{'old req/s':>12}{'new req/s':>12}{'new/old':>9}")
        for label in labels:
            (o, _), (n, _) = best["old"][label], best["new"][label]
            print(f"{label:<28}{o:>12.0f}{n:>12.0f}{n / o:>8.2f}x")
    else:
        print(f"{'row':<44}{'old us':>9}{'new us':>9}{'old/new':>9}{'old emu/q':>11}{'new emu/q':>11}")
        for label in labels:
            (o, oq), (n, nq) = best["old"][label], best["new"][label]
            print(f"{label:<44}{o * 1e6:>9.2f}{n * 1e6:>9.2f}{o / n:>8.2f}x{oq / o:>10.2f}x{nq / n:>10.2f}x")
    ratios = [(best["new"][x][0] / best["old"][x][0]) if higher_is_better else best["old"][x][0] / best["new"][x][0]
              for x in labels]
    if ratios:
        ratios.sort()
        print(f"\n{len(ratios)} rows; new/old speed: min {ratios[0]:.2f}x, median {ratios[len(ratios) // 2]:.2f}x, "
              f"max {ratios[-1]:.2f}x")


if __name__ == "__main__":
    main()
