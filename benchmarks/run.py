"""emu's speed against its anchors, measured in one invocation on one file system.

For raw and qcow2, 4 KiB and 64 KiB requests, reads and writes, sequential and "random" (a large
prime stride, so consecutive requests land in different clusters and L2 tables; qemu-img bench has no
random mode, but its -S step does this), on fresh images (allocating writes, reads of unallocated
space) and on filled ones (overwrites, reads of data), it times:

  qemu-img  qemu-img bench -d 1 -t writeback        (the anchor the goal is stated against)
  emu       emu img bench  -d 1 -t writeback        (emu's whole path: Drive, format, host file)
  bare      a plain os.pread/os.pwrite loop on a raw file with the same offsets (the ceiling)

and, for sequential reads of a filled qcow2, dissect.hypervisor's QCow2 reader (the best Python peer;
`pip install '.[bench]'`). Each tool runs `--repeat` times, interleaved; the fastest run counts.
Ratios > 1.0 mean emu is faster. Only the request loop is timed, as qemu-img bench times it.

    python benchmarks/run.py [--count 20000] [--repeat 3] [--dir DIR] [--cells qcow2,raw]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

IMAGE_SIZE = 512 << 20
PRIME = 7919
FILL_PATTERN = 0x5A
MIN_SECONDS = 0.3
MAX_SCALE = 20

BARE = textwrap.dedent("""
    import os, sys, time
    path, write, size, step, count, image = sys.argv[1], sys.argv[2] == "w", *map(int, sys.argv[3:])
    fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
    buf = bytes([0]) * size
    offset = 0
    start = time.perf_counter()
    if write:
        for _ in range(count):
            os.pwrite(fd, buf, offset)
            offset = (offset + step) % image
    else:
        for _ in range(count):
            os.pread(fd, size, offset)
            offset = (offset + step) % image
    print(f"Run completed in {time.perf_counter() - start:.3f} seconds.")
""")

DISSECT = textwrap.dedent("""
    import sys, time
    from dissect.hypervisor.disk.qcow2 import QCow2
    path, size, step, count, image = sys.argv[1], *map(int, sys.argv[2:])
    with open(path, "rb") as fh:
        stream = QCow2(fh).open()
        offset = 0
        start = time.perf_counter()
        for _ in range(count):
            stream.seek(offset)
            stream.read(size)
            offset = (offset + step) % image
        print(f"Run completed in {time.perf_counter() - start:.3f} seconds.")
""")

_DONE = re.compile(r"Run completed in ([0-9.]+) seconds\.")


def seconds(cmd: list[str]) -> float:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    match = _DONE.search(proc.stdout)
    if proc.returncode or not match:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return float(match.group(1))


def prepare(path: str, fmt: str, filled: bool) -> None:
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, str(IMAGE_SIZE)], check=True)
    if filled:
        subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {FILL_PATTERN} 0 {IMAGE_SIZE}", path],
                       check=True, capture_output=True)
    os.sync()   # no writeback of the preparation in flight while a tool is timed


def bench_args(size: int, step: int, count: int, write: bool) -> list[str]:
    args = ["-c", str(count), "-d", "1", "-s", str(size), "-S", str(step), "-t", "writeback"]
    return args + (["-w"] if write else [])


def calibrate(work: str, fmt: str, size: int, step: int, count: int, write: bool, filled: bool) -> int:
    """More requests for cells qemu-img finishes in under MIN_SECONDS (reads of unallocated space take
    ~2 us a request), so that start-up and warm-up do not decide the ratio."""
    path = os.path.join(work, f"calibrate.{fmt}")
    prepare(path, fmt, filled)
    took = seconds(["qemu-img", "bench", "-f", fmt] + bench_args(size, step, count, write) + [path])
    os.unlink(path)
    if took >= MIN_SECONDS or write:   # more writes would wrap around and overwrite
        return count
    return int(count * min(MAX_SCALE, MIN_SECONDS / max(took, 1e-3)))


def run_cell(work: str, fmt: str, op: str, size: int, order: str, state: str, count: int, repeat: int,
             peer: bool) -> dict:
    write = op == "write"
    step = size * (PRIME if order == "random" else 1)
    filled = state == "filled"
    count = calibrate(work, fmt, size, step, count, write, filled)
    best: dict[str, float] = {"count": count}
    for _ in range(repeat):
        for tool in ("qemu-img", "emu", "bare") + (("dissect",) if peer else ()):
            path = os.path.join(work, f"{tool}.{fmt}")
            if tool == "bare":
                path = os.path.join(work, "bare.raw")
                prepare(path, "raw", filled)
                cmd = [sys.executable, "-c", BARE, path, "w" if write else "r", str(size), str(step), str(count),
                       str(IMAGE_SIZE)]
            elif tool == "dissect":
                prepare(path, fmt, filled)
                cmd = [sys.executable, "-c", DISSECT, path, str(size), str(step), str(count), str(IMAGE_SIZE)]
            else:
                prepare(path, fmt, filled)
                exe = ["qemu-img", "bench"] if tool == "qemu-img" else ["emu", "img", "bench"]
                cmd = exe + ["-f", fmt] + bench_args(size, step, count, write) + [path]
            best[tool] = min(best.get(tool, float("inf")), seconds(cmd))
            os.unlink(path)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20000, help="requests per 4 KiB run (64 KiB runs use a quarter)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="directory for the images (default: a temporary one)")
    p.add_argument("--cells", default="raw,qcow2", help="formats to run")
    a = p.parse_args()
    for tool in ("qemu-img", "qemu-io", "emu"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: install qemu-utils and this project (pip install -e '.[bench]')")
    try:
        import dissect.hypervisor  # noqa: F401
        have_dissect = True
    except ImportError:
        have_dissect = False
        print("dissect.hypervisor not installed: peer column skipped (pip install -e '.[bench]')")
    work = a.dir or tempfile.mkdtemp(prefix="emu-bench-", dir=os.getcwd())
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for fmt in a.cells.split(","):
            for op in ("write", "read"):
                for size in (4096, 65536):
                    for order in ("sequential", "random"):
                        for state in ("fresh", "filled"):
                            count = a.count if size == 4096 else a.count // 4
                            peer = have_dissect and fmt == "qcow2" and op == "read" and order == "sequential" \
                                and state == "filled"
                            best = run_cell(work, fmt, op, size, order, state, count, a.repeat, peer)
                            kind = {("write", "fresh"): "allocating", ("write", "filled"): "overwrite",
                                    ("read", "fresh"): "unallocated", ("read", "filled"): "data"}[op, state]
                            rows.append((fmt, op, size, order, kind, best.pop("count"), best))
                            print(_row(rows[-1]), flush=True)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    worst = min(r[6]["qemu-img"] / r[6]["emu"] for r in rows)
    print(f"\nworst emu/qemu-img ratio: {worst:.2f}x (goal >= 1.0x in every cell)")
    peers = [r[6]["dissect"] / r[6]["emu"] for r in rows if "dissect" in r[6]]
    if peers:
        print(f"worst emu/dissect.hypervisor ratio on sequential reads: {min(peers):.2f}x (goal >= 1.0x)")


def _row(row) -> str:
    fmt, op, size, order, kind, count, best = row
    text = (f"{fmt:<6}{op:<6}{size // 1024:>3}k {order:<11}{kind:<12}{count:>6}  qemu-img {best['qemu-img']:7.3f}s"
            f"  emu {best['emu']:7.3f}s  bare {best['bare']:7.3f}s  emu/qemu-img {best['qemu-img'] / best['emu']:5.2f}x"
            f"  emu/bare {best['bare'] / best['emu']:5.2f}x")
    if "dissect" in best:
        text += f"  dissect {best['dissect']:7.3f}s  emu/dissect {best['dissect'] / best['emu']:5.2f}x"
    return text


if __name__ == "__main__":
    main()
