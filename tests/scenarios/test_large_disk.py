"""The `large-disk` scenario: 64 GiB, 16 GiB of files, half deleted, fstrim, in well under a minute, with the host's
allocation real and without 16 GiB written to the host's disk (the synthetic payload)."""

from __future__ import annotations

import shutil
import time

from scenarios.play import play
from scenarios.run import load_scenario

GiB = 1 << 30


def io_write_bytes() -> int:
    """What this process caused to be written to storage (/proc/self/io write_bytes)."""
    with open("/proc/self/io") as f:
        return int(next(line.split()[1] for line in f if line.startswith("write_bytes:")))


def test_large_disk_runs_fast_allocates_for_real_and_writes_little(tmp_path):
    before = io_write_bytes()
    start = time.perf_counter()
    try:
        result = play(load_scenario("large-disk"), str(tmp_path / "run")).result
        wall = time.perf_counter() - start
        written = io_write_bytes() - before
        image_bytes = (tmp_path / "run" / "disk.qcow2").stat().st_blocks * 512
    finally:        # 8 GiB of host space: not left for pytest's kept temporary directories
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    assert wall < 60, f"{wall:.1f} s"
    phases = {p["name"]: p["host_bytes"] for p in result["phases"]}
    assert 16 * GiB < phases["written"] < 16 * GiB + 64 << 20
    assert phases["deleted"] >= phases["written"]                     # a delete alone gives nothing back
    assert 8 * GiB < phases["trimmed"] < 8 * GiB + 64 << 20           # fstrim through discard=unmap does
    assert image_bytes == phases["trimmed"]
    assert written < 2 * GiB, f"{written >> 20} MiB written to the host's disk"
    assert result["steps"][-1]["output"]["trimmed_bytes"] > 50 * GiB
