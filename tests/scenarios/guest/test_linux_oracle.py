"""The simulated Linux guest against the real one: a scenario played by emu sends the requests a real Linux 6.1
guest sent on QEMU 7.2 for the same steps, phase by phase, and leaves the image holding the bytes the real QEMU's
image held (st_blocks), exactly.

The fixtures in tests/oracle/linux-6.1 were recorded by tests/oracle/linux_guest.py (the command is each file's
first line): the kernel's block:block_rq_issue trace and the image's host bytes after each phase. Tolerances, each
with its reason:
- reads are left out: they move no host space, and which metadata a real mkfs or mount reads depends on e2fsprogs'
  and the kernel's caches, which the model does not keep;
- consecutive flushes count once: blk-flush merges or splits a flush sequence by timing;
- a journal write may differ by one block in size, and its position in the journal with it: which metadata blocks
  join a transaction depends on when the kernel's writeback ran (seen on virtio-blk: one more block in the first
  transaction after mount). At most two such differences per fixture.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from scenarios.guest.ext4.layout import Layout
from scenarios.play import play
from scenarios.run import load_scenario

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "oracle" / "linux-6.1"
FILES = sorted(FIXTURES.glob("fstrim-after-delete*.txt")) + sorted(FIXTURES.glob("lazy-init-*.txt"))
JOURNAL_TOLERANCE = 2


def read_fixture(path: pathlib.Path):
    """(scenario, overrides, phases, requests) of a fixture, the overrides from its recording command."""
    lines = path.read_text().splitlines()
    command = lines[0].removeprefix("# recorded by: ").split()
    scenario = command[command.index("record") + 1]
    overrides = [f"controller={command[command.index('--controllers') + 1]}"]
    overrides += [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    phases = {name: int(host) for _, name, host in (line.split() for line in lines if line.startswith("phase "))}
    requests = [(phase, op, int(sector), int(sectors)) for _, phase, op, sector, sectors in
                (line.split() for line in lines if line.startswith("request "))]
    return scenario, overrides, phases, requests


def normal(requests):
    out = []
    for r in requests:
        if r[1] == "read" or (r[1] == "flush" and out and out[-1][:2] == r[:2]):
            continue
        out.append(r)
    return out


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_model_sends_what_linux_sent(path, tmp_path):
    name, overrides, real_phases, real_requests = read_fixture(path)
    scenario = load_scenario(name, overrides)
    played = play(scenario, str(tmp_path))
    model_phases = {p["name"]: p["host_bytes"] for p in played.result["phases"]}
    assert model_phases == real_phases

    first, count = Layout(scenario.disk.size).journal[0]
    journal = range(first * 8, (first + count) * 8)
    model = normal([(phase, r.op, r.sector, r.sectors) for phase, r in played.issued if phase])
    real = normal(real_requests)
    assert [r[:2] for r in model] == [r[:2] for r in real], "the same operations in the same phases, in order"
    tolerated = []
    for m, k in zip(model, real, strict=True):
        if m == k:
            continue
        in_journal = m[2] in journal and k[2] in journal and m[1] == "write"
        assert in_journal and abs(m[3] - k[3]) <= 8, (m, k)
        tolerated.append((m, k))
    assert sum(1 for m, k in tolerated if m[3] != k[3]) <= JOURNAL_TOLERANCE, tolerated


def test_fixtures_are_there():
    """Every controller has its recording of the catalog's fstrim-after-delete, of it on raw with discard=unmap,
    and of lazy-init."""
    stems = {p.stem for p in FILES}
    for controller in ("ide", "ahci", "virtio-blk", "virtio-scsi"):
        assert f"fstrim-after-delete-{controller}" in stems
        assert f"fstrim-after-delete-raw-unmap-{controller}" in stems
        assert f"lazy-init-{controller}" in stems
    assert all(re.match(r"# recorded by: python tests/oracle/linux_guest.py record ", p.read_text()) for p in FILES)
