"""emu's speed against its anchors, measured in one invocation on one file system.

For every format emu implements and `qemu-img bench` can run (raw; qcow2; vdi; vpc, a dynamic VHD;
vhdx, dynamic; vmdk, monolithicSparse; and qcow2-chain, a three-deep qcow2 chain benched through its
top), 4 KiB and 64 KiB requests, reads and writes, sequential and "random" (a large prime stride, so
consecutive requests land in different clusters/blocks and tables; qemu-img bench has no random mode,
but its -S step does this), on fresh images (allocating writes, reads of unallocated space) and on
filled ones (overwrites, reads of data), it times:

  qemu-img  qemu-img bench -d 1 -t writeback        (the anchor the goal is stated against)
  emu       emu img bench  -d 1 -t writeback        (emu's whole path: Drive, format, host file)
  bare      a plain os.pread/os.pwrite loop on a raw file with the same offsets (the ceiling)

and, for sequential reads of a filled qcow2, dissect.hypervisor's QCow2 reader (the best Python peer;
`pip install '.[bench]'`). Each tool runs `--repeat` times, interleaved; the fastest run counts.
Ratios > 1.0 mean emu is faster. Only the request loop is timed, as qemu-img bench times it.

Every format runs the full matrix (2 ops x 2 sizes x 2 orders x 2 states = 16 cells), 112 cells in
all. Two things keep the default run under 15 minutes on the project's noisy 2-core VM (11 minutes
with other jobs running, 2026-11-23):
- Images are prepared once, not once per run. A filled image is written whole by `qemu-io` and fsynced
  once; read cells bench that very file with every tool (reads do not change it). Overwrites leave the
  allocation as it was, so one copy of the filled image serves every overwrite run of a format; only
  fresh images (created anew for every write run) and the chain's top (whose writes allocate) are
  made per run. Filling is the slow part (qemu's vmdk driver takes ~7 s for 512 MiB): per-run fills
  and copies made the full matrix take over 25 minutes.
- A cell whose round of runs (all tools once) takes longer than LONG_ROUND seconds is not repeated:
  such runs are long enough that start-up and short bursts of load do not decide them. They are the
  writes that sync metadata to the disk per request: vmdk's allocating writes (a grain table entry
  synced for every new grain, by qemu and emu alike) and qemu's vpc random writes (qemu rewrites and
  syncs a block's bitmap whenever a write goes to another block than the last): 2-16 s a run.
  The table marks such cells "(1 run)".

The images: 512 MiB, made by `qemu-img create` with the default options except vpc, made with
`force_size=on` so that it is exactly 512 MiB (the default CHS rounding gives 537255936 bytes, not a
multiple of 64 KiB, and a request that qemu-img bench wraps onto the last partial 64 KiB would cross
the end). The qcow2-chain cells use base.qcow2 <- mid.qcow2 <- top.qcow2 (`qemu-img create -f qcow2
-b X -F qcow2`); filled, cluster i (64 KiB) holds data in top if i % 3 == 0, in mid if i % 3 == 1 and
in base if i % 3 == 2, each layer with its own pattern, so sequential and random reads of top fall
through to every depth; a write to top overwrites a third of the time and otherwise allocates a
cluster whose rest is copied from mid or base. Fresh, all three layers are empty: reads fall through
three layers to nothing, writes allocate in top. Writes change top only; mid and base are shared.

    python benchmarks/run.py [--count 20000] [--repeat 3] [--dir DIR]
                             [--cells raw,qcow2,vdi,vpc,vhdx,vmdk,qcow2-chain]
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
import time

IMAGE_SIZE = 512 << 20
PRIME = 7919
FILL_PATTERN = 0x5A
CHAIN_CLUSTER = 64 << 10
CHAIN_LAYERS = (("base", 2, 0x5A), ("mid", 1, 0xA5), ("top", 0, 0x3C))   # name, cluster index % 3, pattern
MIN_SECONDS = 0.3
MAX_SCALE = 20
LONG_ROUND = 10.0   # seconds: a cell whose round of runs takes longer is not repeated

# cell name -> (qemu-img format, create options)
CELLS = {
    "raw": ("raw", []),
    "qcow2": ("qcow2", []),
    "vdi": ("vdi", []),                                                # dynamic (static=off), 1 MiB blocks
    "vpc": ("vpc", ["-o", "subformat=dynamic,force_size=on"]),        # dynamic VHD, 2 MiB blocks
    "vhdx": ("vhdx", []),                                              # dynamic, 8 MiB blocks at this size
    "vmdk": ("vmdk", ["-o", "subformat=monolithicSparse"]),           # 64 KiB grains
    "qcow2-chain": ("qcow2", []),
}

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


def settle(path: str) -> None:
    """fsync: no writeback of a preparation or of the previous run in flight while a tool is timed
    (per file: os.sync() would also wait for whatever else the machine is writing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(fmt: str, path: str, options: list[str], backing: str | None = None) -> None:
    if os.path.exists(path):
        os.unlink(path)
    cmd = ["qemu-img", "create", "-q", "-f", fmt] + options
    if backing:
        cmd += ["-b", os.path.basename(backing), "-F", fmt]   # relative: resolved next to the image
    subprocess.run(cmd + [path] + ([] if backing else [str(IMAGE_SIZE)]), check=True)
    settle(path)


def _qemu_io(fmt: str, path: str, commands: list[str]) -> None:
    args = []
    for command in commands:
        args += ["-c", command]
    subprocess.run(["qemu-io", "-f", fmt] + args + [path], check=True, capture_output=True)
    settle(path)


def _copy(src: str, dst: str) -> None:
    """cp keeps the holes of the source (SEEK_DATA), so a copy is allocated on the host as the source is."""
    if os.path.exists(dst):
        os.unlink(dst)
    subprocess.run(["cp", src, dst], check=True)
    settle(dst)


class Images:
    """The images of one cell name (format): built once per state, benched (reads) or copied (writes)."""

    def __init__(self, work: str, cell: str) -> None:
        self.fmt, self.options = CELLS[cell]
        self.chain = cell == "qcow2-chain"
        self.dir = os.path.join(work, cell)
        os.makedirs(self.dir, exist_ok=True)
        self.templates: dict[str, str] = {}

    def template(self, state: str) -> str:
        """The image a read cell benches (the top of the chain for qcow2-chain); never written to."""
        if state not in self.templates:
            filled = state == "filled"
            if self.chain:
                backing = None
                for name, residue, pattern in CHAIN_LAYERS:
                    path = os.path.join(self.dir, f"{state}-{name}.qcow2")
                    _create("qcow2", path, self.options, backing)
                    if filled:
                        _qemu_io("qcow2", path, [f"write -P {pattern} {i * CHAIN_CLUSTER} {CHAIN_CLUSTER}"
                                                 for i in range(residue, IMAGE_SIZE // CHAIN_CLUSTER, 3)])
                    backing = path
            else:
                path = os.path.join(self.dir, f"{state}.{self.fmt}")
                _create(self.fmt, path, self.options)
                if filled:
                    _qemu_io(self.fmt, path, [f"write -P {FILL_PATTERN} 0 {IMAGE_SIZE}"])
            self.templates[state] = path
        return self.templates[state]

    def writable(self, state: str, tool: str) -> tuple[str, bool]:
        """The image for one write run and whether to delete it after the run: a fresh image is created
        for every run. Filled, every write is an overwrite that leaves the allocation as it was, so one
        copy of the template serves every run and every cell of the format; but a write to the top of
        the filled chain allocates (copy-on-write), so the chain's top is copied for every run."""
        template = self.template(state)
        path = os.path.join(self.dir, f"{tool}.{self.fmt}")
        if state == "filled":
            if self.chain:
                _copy(template, path)
                return path, True
            shared = os.path.join(self.dir, f"overwrite.{self.fmt}")
            if not os.path.exists(shared):
                _copy(template, shared)
            return shared, False
        if self.chain:
            _create("qcow2", path, self.options, backing=template.replace("-top.", "-mid."))
        else:
            _create(self.fmt, path, self.options)
        return path, True


class BareFiles:
    """The raw files of the bare loop: a sparse one (fresh) and a filled one, as for Images."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.templates: dict[str, str] = {}

    def template(self, state: str) -> str:
        if state not in self.templates:
            path = os.path.join(self.work, f"bare-{state}.raw")
            _create("raw", path, [])
            if state == "filled":
                _qemu_io("raw", path, [f"write -P {FILL_PATTERN} 0 {IMAGE_SIZE}"])
            self.templates[state] = path
        return self.templates[state]

    def writable(self, state: str) -> tuple[str, bool]:
        if state == "filled":
            shared = os.path.join(self.work, "bare-overwrite.raw")
            if not os.path.exists(shared):
                _copy(self.template(state), shared)
            return shared, False
        path = os.path.join(self.work, "bare.raw")
        _create("raw", path, [])
        return path, True


def bench_args(size: int, step: int, count: int, write: bool) -> list[str]:
    args = ["-c", str(count), "-d", "1", "-s", str(size), "-S", str(step), "-t", "writeback"]
    return args + (["-w"] if write else [])


def calibrate(fmt: str, path: str, size: int, step: int, count: int, write: bool) -> int:
    """More requests for read cells qemu-img finishes in under MIN_SECONDS (reads of unallocated space
    take ~2 us a request), so that start-up and warm-up do not decide the ratio. Never for writes: more
    writes would wrap around and overwrite."""
    if write:
        return count
    took = seconds(["qemu-img", "bench", "-f", fmt] + bench_args(size, step, count, write) + [path])
    if took >= MIN_SECONDS:
        return count
    return int(count * min(MAX_SCALE, MIN_SECONDS / max(took, 1e-3)))


def run_cell(images: Images, bare: BareFiles, op: str, size: int, order: str, state: str, count: int,
             repeat: int, peer: bool) -> dict:
    write = op == "write"
    step = size * (PRIME if order == "random" else 1)
    fmt = images.fmt
    count = calibrate(fmt, images.template(state), size, step, count, write)
    best: dict[str, float] = {"count": count, "runs": 0}
    for _ in range(repeat):
        spent = 0.0
        for tool in ("qemu-img", "emu", "bare") + (("dissect",) if peer else ()):
            delete = False
            if tool == "bare":
                path, delete = bare.writable(state) if write else (bare.template(state), False)
                cmd = [sys.executable, "-c", BARE, path, "w" if write else "r", str(size), str(step), str(count),
                       str(IMAGE_SIZE)]
            else:
                path, delete = images.writable(state, tool) if write else (images.template(state), False)
                if tool == "dissect":
                    cmd = [sys.executable, "-c", DISSECT, path, str(size), str(step), str(count), str(IMAGE_SIZE)]
                else:
                    exe = ["qemu-img", "bench"] if tool == "qemu-img" else ["emu", "img", "bench"]
                    cmd = exe + ["-f", fmt] + bench_args(size, step, count, write) + [path]
            took = seconds(cmd)
            best[tool] = min(best.get(tool, float("inf")), took)
            spent += took
            if delete:
                os.unlink(path)
            elif write:
                settle(path)
        best["runs"] += 1
        if spent > LONG_ROUND:
            break
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20000, help="requests per 4 KiB run (64 KiB runs use a quarter)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", help="directory for the images (default: a temporary one)")
    p.add_argument("--cells", default=",".join(CELLS), help="formats to run, comma-separated, of: " + ", ".join(CELLS))
    a = p.parse_args()
    cells = a.cells.split(",")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise SystemExit(f"unknown --cells value(s) {', '.join(unknown)}: choose from {', '.join(CELLS)}")
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
    started = time.monotonic()
    bare = BareFiles(work)
    try:
        for cell in cells:
            images = Images(work, cell)
            for op in ("write", "read"):
                for size in (4096, 65536):
                    for order in ("sequential", "random"):
                        for state in ("fresh", "filled"):
                            count = a.count if size == 4096 else a.count // 4
                            peer = have_dissect and cell == "qcow2" and op == "read" and order == "sequential" \
                                and state == "filled"
                            best = run_cell(images, bare, op, size, order, state, count, a.repeat, peer)
                            count, runs = best.pop("count"), best.pop("runs")
                            requests = f"{count}" + (f" ({runs} run{'s' * (runs > 1)})" if runs < a.repeat else "")
                            rows.append((cell, op, size, order, _kind(cell, op, state), requests, best))
                            print(_row(rows[-1]), flush=True)
            shutil.rmtree(images.dir, ignore_errors=True)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(rows)} cells in {time.monotonic() - started:.0f} s\n")
    print(_markdown(rows))
    worst = min(rows, key=lambda r: r[-1]["qemu-img"] / r[-1]["emu"])
    print(f"\nworst emu/qemu-img ratio: {worst[-1]['qemu-img'] / worst[-1]['emu']:.2f}x "
          f"({' '.join(map(str, worst[:5]))}; goal >= 1.0x in every cell)")
    slower = [r for r in rows if r[-1]["qemu-img"] < r[-1]["emu"]]
    if slower:
        print("cells where emu is slower than qemu-img:")
        for r in slower:
            print("  " + _row(r))
    peers = [r[-1]["dissect"] / r[-1]["emu"] for r in rows if "dissect" in r[-1]]
    if peers:
        print(f"worst emu/dissect.hypervisor ratio on sequential reads: {min(peers):.2f}x (goal >= 1.0x)")


def _kind(cell: str, op: str, state: str) -> str:
    if cell == "qcow2-chain" and state == "filled":
        return "cow/overwrite" if op == "write" else "data 3 depths"
    return {("write", "fresh"): "allocating", ("write", "filled"): "overwrite",
            ("read", "fresh"): "unallocated", ("read", "filled"): "data"}[op, state]


def _row(row) -> str:
    cell, op, size, order, kind, requests, best = row
    text = (f"{cell:<12}{op:<6}{size // 1024:>3}k {order:<11}{kind:<14}{requests:>7}  qemu-img {best['qemu-img']:7.3f}s"
            f"  emu {best['emu']:7.3f}s  bare {best['bare']:7.3f}s  emu/qemu-img {best['qemu-img'] / best['emu']:5.2f}x"
            f"  emu/bare {best['bare'] / best['emu']:5.2f}x")
    if "dissect" in best:
        text += f"  dissect {best['dissect']:7.3f}s  emu/dissect {best['dissect'] / best['emu']:5.2f}x"
    return text


def _markdown(rows) -> str:
    lines = ["| format | op | size | order | kind | requests | qemu-img s | emu s | bare s | emu/qemu-img | emu/bare "
             "| dissect s | emu/dissect |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell, op, size, order, kind, requests, best in rows:
        q, e, b = best["qemu-img"], best["emu"], best["bare"]
        peer = f" {best['dissect']:.3f} | {best['dissect'] / e:.2f}x |" if "dissect" in best else " | |"
        lines.append(f"| {cell} | {op} | {size // 1024}k | {order} | {kind} | {requests} | {q:.3f} | {e:.3f} | {b:.3f} "
                     f"| {q / e:.2f}x | {b / e:.2f}x |{peer}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
