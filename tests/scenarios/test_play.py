"""Scenarios played: every catalog story against its golden summary, the same seed giving the same result.json,
the record's shape, where freed bytes went (emu explain's reasons), snapshots and power cuts, and the guest's
files read back through the image chain equal to what was written (hypothesis)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from images import open_image
from images.inspect import compare_images
from scenarios.play import Player, play
from scenarios.report.tables import explanation, summary
from scenarios.run import load_scenario
from scenarios.spec import Step, catalog
from tests.conftest import run

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("EMU_UPDATE_GOLDEN") == "1"
MiB = 1 << 20


def played(tmp_path, name: str, *overrides: str):
    return play(load_scenario(name, list(overrides)), str(tmp_path / "run"))


def reasons(result: dict) -> dict[str, int]:
    return {entry["reason"]: entry["bytes"] for entry in result["explain"]["by_reason"]}


# The host's own file system counts its extent-tree blocks in st_blocks, and how many a file needs depends on how
# fragmented the host's free space was when it was written: a layer's host bytes may differ by a few 4 KiB blocks
# between runs of the same scenario (seen: 4 KiB on a 192 MiB qcow2). Everything emu decides is exact.
HOST_NOISE = 64 << 10


def same_run(a, b, path="result", host=False) -> None:
    """`a` equals `b`, host byte counts (a phase's or step's `host_bytes` and `layers`, any key naming host bytes,
    the timeline's host_bytes rows) within HOST_NOISE."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            same_run(a[key], b[key], f"{path}.{key}", host or "host_bytes" in key or key == "layers")
    elif isinstance(a, list) and len(a) == 4 and a[2:3] == ["host_bytes"] and path.startswith("result.timeline"):
        assert a[:3] == b[:3], f"{path}: {a} != {b}"
        same_run(a[3], b[3], f"{path}[3]", True)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} entries, expected {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_run(x, y, f"{path}[{i}]", host)
    elif host and isinstance(a, int) and isinstance(b, int):
        assert abs(a - b) <= HOST_NOISE, f"{path}: {a} host bytes, expected {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_same_run_tolerates_only_host_noise():
    base = {"phases": [{"host_bytes": 1 << 20, "layers": {"d": 1 << 20}, "guest_used_bytes": 5}],
            "timeline": [[0.0, "d", "host_bytes", 1 << 20]]}
    noisy = json.loads(json.dumps(base))
    noisy["phases"][0]["layers"]["d"] += 4096
    noisy["timeline"][0][3] += 4096
    same_run(noisy, base)
    for change in (lambda r: r["phases"][0].update(guest_used_bytes=6),
                   lambda r: r["phases"][0].update(host_bytes=2 << 20),
                   lambda r: r["timeline"][0].__setitem__(0, 0.5)):
        wrong = json.loads(json.dumps(base))
        change(wrong)
        with pytest.raises(AssertionError):
            same_run(wrong, base)


@pytest.mark.parametrize("name", [name for name, _ in catalog()])
def test_catalog_matches_its_golden_result(name, tmp_path):
    """A change in what a story records is a change someone must look at (`git diff` of the golden file shows
    it): EMU_UPDATE_GOLDEN=1 rewrites tests/scenarios/golden/NAME.json."""
    try:
        result = played(tmp_path, name).result
    finally:        # large-disk holds 8 GiB of host space: not left for pytest's kept temporary directories
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    assert path.exists(), f"no golden result for {name}: run with EMU_UPDATE_GOLDEN=1"
    same_run(json.loads(json.dumps(result)), json.loads(path.read_text()))
    assert summary(result) and explanation(result)


def test_same_seed_same_result_other_seed_other_bytes(tmp_path):
    a = played(tmp_path / "a", "fstrim-after-delete").result
    b = played(tmp_path / "b", "fstrim-after-delete").result
    same_run(a, b)
    c = played(tmp_path / "c", "fstrim-after-delete", "seed=7").result
    assert c["scenario"]["seed"] == 7
    assert [p["host_bytes"] for p in c["phases"]] == [p["host_bytes"] for p in a["phases"]]
    same = compare_images(open_image(str(tmp_path / "a/run/disk.qcow2")),
                          open_image(str(tmp_path / "c/run/disk.qcow2")))
    assert not same.identical, "the random file's bytes come from the seed"


def test_the_record_has_the_documented_shape(tmp_path):
    result = played(tmp_path, "fstrim-after-delete").result
    assert result["schema"] == 1
    assert [p["name"] for p in result["phases"]] == ["formatted", "written", "trimmed", "zeros_written",
                                                      "blkdiscarded"]
    for phase in result["phases"]:
        assert phase["host_bytes"] == phase["layers"]["disk.qcow2"]
    assert [s["index"] for s in result["steps"]] == list(range(13))
    times = [s["end"] for s in result["steps"]]
    assert times == sorted(times) and times[-1] > 0
    assert result["steps"][7]["output"]["trimmed_bytes"] == 1020678144       # what the real fstrim printed
    assert result["steps"][7]["discards"] == {"issued_bytes": 1020678144, "passed_bytes": 0,
                                              "dropped_bytes": 1020678144}
    assert result["maps"]["before"] == {"disk.qcow2": [[0, 1 << 30, "unallocated"]]}
    assert {kind for _, _, kind in result["maps"]["after"]["disk.qcow2"]} == {"data", "zero", "unallocated"}
    assert result["timeline"][0][:3] == [0.0, "disk.qcow2", "host_bytes"]


def test_images_left_behind_pass_qemu_img_check(tmp_path, qemu_img):
    played(tmp_path, "trim-over-backing")
    for name in ("base.qcow2", "disk.qcow2"):
        run(qemu_img, "check", str(tmp_path / "run" / name))


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), {"drive-ignore": 64 * MiB}),
    (("discard=unmap", "steps[12].do=idle", "steps[12].seconds=0"),
     {"reclaimed": 32 * MiB, "not-discarded": 32 * MiB}),
    (("format=vdi", "discard=unmap"), {"format-cannot-free": 64 * MiB}),
    (("format=raw", "discard=unmap", "controller=ahci", "steps[12].do=idle", "steps[12].seconds=0"),
     {"reclaimed": 32 * MiB - 4096, "not-discarded": 32 * MiB, "host-block": 4096}),
])
def test_explain_says_where_the_freed_bytes_went(tmp_path, overrides, expected):
    result = played(tmp_path, "fstrim-after-delete", *overrides).result
    assert result["explain"]["freed_bytes"] == 64 * MiB
    assert reasons(result) == expected


def test_partial_clusters_of_ata_ranges_are_explained(tmp_path):
    """libata's DSM ranges end 512 bytes short of 64 KiB boundaries: qcow2 keeps the partial clusters."""
    got = reasons(played(tmp_path, "fstrim-after-delete", "controller=ahci", "discard=unmap", "steps[12].do=idle",
                         "steps[12].seconds=0").result)
    assert got["partial-cluster"] == 64 << 10
    assert got["reclaimed"] + got["partial-cluster"] == 32 * MiB


def test_a_trim_in_an_overlay_keeps_the_base(tmp_path):
    got = reasons(played(tmp_path, "trim-over-backing", "steps[8].do=idle", "steps[8].seconds=0",
                         "steps[8].phase=committed").result)
    assert set(got) == {"backing-holds", "partial-cluster"}      # the file's ends are not on 64 KiB clusters
    assert got["backing-holds"] > 15 * MiB


def step(do: str, **args) -> Step:
    return Step(do, None, args)


def test_a_reverted_snapshot_gives_back_the_files_of_its_time(tmp_path):
    player = Player(load_scenario("snapshot-merge"), str(tmp_path / "run"))
    try:
        for i, s in enumerate(player.scenario.steps[:5]):
            player.step(i, s)
        before = player.read_file("base-data")
        for i, s in enumerate([step("write", file="base-data", size=MiB, content="pattern", offset=0),
                               step("write", file="late", size=MiB, content="random"), step("sync"),
                               step("umount"), step("snapshot", action="revert", name="clean"),
                               step("mount")], start=5):
            player.step(i, s)
        assert sorted(player.guest.fs.files) == ["base-data"]
        assert player.read_file("base-data") == before
        assert player.steps[9]["duration"] == 0.0
    finally:
        player.close()


def test_a_power_cut_loses_what_was_not_committed(tmp_path):
    player = Player(load_scenario("fstrim-after-delete"), str(tmp_path / "run"))
    try:
        for i, s in enumerate([step("mkfs"), step("mount"), step("write", file="kept", size=MiB, content="random"),
                               step("sync")]):
            player.step(i, s)
        synced = player.read_file("kept")
        for i, s in enumerate([step("write", file="kept", size=MiB, content="pattern", offset=0),
                               step("write", file="lost", size=MiB, content="random"),
                               step("power-cycle"), step("mount")], start=4):
            player.step(i, s)
        assert sorted(player.guest.fs.files) == ["kept"]
        assert player.read_file("kept") == synced == bytes(player.expected["kept"])
    finally:
        player.close()


def step_args(op: tuple) -> dict:
    """A drawn operation's step keys."""
    name = op[0]
    if name == "write":
        return {"file": op[1], "size": op[2], "content": op[3], **({} if op[4] is None else {"offset": op[4]})}
    if name == "truncate":
        return {"file": op[1], "size": op[2]}
    if name == "idle":
        return {"seconds": op[1]}
    return {"file": op[1]} if name == "delete" else {}


OPS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from("abc"), st.integers(1, 3 * MiB), st.sampled_from(["random", "zeros"]),
              st.one_of(st.none(), st.integers(0, 2 * MiB))),
    st.tuples(st.just("truncate"), st.sampled_from("abc"), st.integers(0, 2 * MiB)),
    st.tuples(st.just("delete"), st.sampled_from("abc")),
    st.tuples(st.just("sync")),
    st.tuples(st.just("fstrim")),
    st.tuples(st.just("idle"), st.sampled_from([1.0, 6.0, 31.0])),     # the commit interval, the flusher's 30 s
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=10), fmt=st.sampled_from(["qcow2", "raw", "vdi"]),
       discard=st.sampled_from(["ignore", "unmap"]))
def test_files_read_back_through_the_chain_as_written(tmp_path_factory, ops, fmt, discard):
    """Whatever the guest does (idling too: background commits and writeback), its files read back (page cache
    dropped: from the image chain) as the model says,
    the block bitmap holds every extent and no two files share a block, and the host holds no more than the
    format allows."""
    directory = tmp_path_factory.mktemp("run")
    player = Player(load_scenario("fstrim-after-delete", [f"format={fmt}", f"discard={discard}", "disk.size=64M"]),
                    str(directory / "run"))
    try:
        player.step(0, step("mkfs"))
        player.step(1, step("mount"))
        for i, op in enumerate(ops, start=2):
            name = op[0]
            if name in ("truncate", "delete") and op[1] not in player.guest.fs.files:
                continue
            args = step_args(op)
            player.step(i, step(name, **args))
        player.step(len(ops) + 2, step("sync"))
        fs = player.guest.fs
        player.guest.dev.cache.drop(0, player.guest.dev.size // 4096)
        for name in fs.files:
            assert player.read_file(name) == bytes(player.expected[name]), name
        owners: dict[int, str] = {}
        for name, f in fs.files.items():
            for _logical, phys, n in f.extents:
                for b in range(phys, phys + n):
                    assert fs.used[b], f"{name} block {b} is not marked used"
                    assert b not in owners, f"{name} and {owners[b]} share block {b}"
                    owners[b] = name
        host = player.disk.host_bytes()["disk." + {"raw": "img"}.get(fmt, fmt)]
        assert host <= 64 * MiB + 4 * MiB, "no more than the disk and its metadata"
    finally:
        player.close()
