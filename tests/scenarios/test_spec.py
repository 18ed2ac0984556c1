"""Scenario files: the catalog's example reads as its story says; every kind of mistake is one line naming the file,
the line (or the --set) and the key; the key locator on TOML's tricky corners; --set paths, short names and values;
settings round-trip; random damage to a valid file gives a Scenario or a ScenarioError, nothing else."""

from __future__ import annotations

import json
import pathlib
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.errors import UsageError
from images.probe import FORMATS
from scenarios.machine import CONTROLLERS
from scenarios.profiles import GUEST_NAMES, NAMES
from scenarios.spec import (
    CATALOG,
    DiskSpec,
    DriveSpec,
    FsSpec,
    MachineSpec,
    Scenario,
    ScenarioError,
    Step,
    catalog,
    load,
    steps_table,
)
from scenarios.spec.locate import key_lines, line_of
from scenarios.spec.overrides import value_of

ROOT = pathlib.Path(__file__).resolve().parents[2]
MiB = 1 << 20
TEST_FORMATS = ("raw", "qcow2")

# Lines: 1 name, 2 title, 4 [disk], 5 size, 7 [fs], 8 type, 10/12/14 [[steps]] headers of mkfs, mount, write.
BASE = """\
name = "t"
title = "T"

[disk]
size = "1G"

[fs]
type = "ext4"

[[steps]]
do = "mkfs"
[[steps]]
do = "mount"
[[steps]]
do = "write"
file = "a"
size = "64M"
content = "random"
"""

# Every table and every step kind, for the round trip and the mutations.
RICH = '''\
name = "rich"
title = "Every table"
story = """Multi-line,
with [brackets] and key = "value" inside"""
seed = 3

[machine]
profile = "qemu-8.2"
controller = "ahci"
guest = "linux-6.1"

[disk]
size = "256M"
format = "qcow2"
options = { cluster_size = "64k", lazy_refcounts = true }
payload = "synthetic"

[[disk.backing]]
format = "raw"
fill = [
  { offset = "0", size = "1M", content = "random" },   # the first MiB
  { offset = "4M", size = 4096, content = "pattern" },
]

[drive]
discard = "unmap"
detect_zeroes = "unmap"

[fs]
type = "ext4"
mount = "discard"

[[steps]]
do = "mkfs"
[[steps]]
do = "mount"
options = "nodiscard"
[[steps]]
do = "write"
file = "a.bin"
size = "8M"
content = "pattern"
offset = "1M"
[[steps]]
do = "truncate"
file = "a.bin"
size = 4096
[[steps]]
do = "snapshot"
action = "take"
name = "before"
[[steps]]
do = "zero-fill"
size = "1M"
[[steps]]
do = "fstrim"
minlen = "64k"
phase = "trimmed"
[[steps]]
do = "umount"
[[steps]]
do = "snapshot"
action = "revert"
name = "before"
[[steps]]
do = "commit"
[[steps]]
do = "compact"
[[steps]]
do = "power-cycle"
[[steps]]
do = "idle"
seconds = 1.5
[[steps]]
do = "blkdiscard"
offset = "1M"
length = "1M"
phase = "end"
'''


def edit(text: str = BASE, **lines: str) -> str:
    """`text` with line N replaced (keyword `lN`); a replacement may hold several lines, or none."""
    rows = text.splitlines()
    for key, new in lines.items():
        rows[int(key[1:]) - 1] = new
    return "\n".join(rows) + "\n"


def after(text: str) -> str:
    return BASE + text


def load_text(tmp_path, monkeypatch, text: str, overrides=(), formats=TEST_FORMATS) -> Scenario:
    monkeypatch.chdir(tmp_path)
    pathlib.Path("t.toml").write_text(text)
    return load("t.toml", overrides, formats=formats)


def test_the_catalog_example_reads_as_its_story_says():
    scenario = load("fstrim-after-delete", formats=FORMATS)
    assert scenario.source == "scenarios/catalog/fstrim-after-delete.toml"
    assert (scenario.name, scenario.title, scenario.seed) == ("fstrim-after-delete", "Delete a file, then fstrim", 1)
    assert scenario.machine == MachineSpec("qemu-7.2", "virtio-blk", "linux-6.1")
    assert scenario.disk == DiskSpec(1 << 30, "qcow2", {}, "real", ())
    assert scenario.drive == DriveSpec("ignore", "off")
    assert scenario.fs == FsSpec("ext4", "-E nodiscard,lazy_itable_init=0,lazy_journal_init=0", "noinit_itable")
    assert scenario.steps == (
        Step("mkfs", None, {}), Step("mount", None, {}), Step("sync", "formatted", {}),
        Step("write", None, {"file": "big", "size": 64 * MiB, "content": "random"}), Step("sync", "written", {}),
        Step("delete", None, {"file": "big"}), Step("sync", None, {}),
        Step("fstrim", "trimmed", {"offset": 0, "minlen": 0}),
        Step("write", None, {"file": "zeros", "size": 32 * MiB, "content": "zeros"}),
        Step("sync", "zeros_written", {}),
        Step("delete", None, {"file": "zeros"}), Step("umount", None, {}),
        Step("blkdiscard", "blkdiscarded", {"offset": 0}),
    )
    assert load(CATALOG / "fstrim-after-delete.toml", formats=FORMATS).steps == scenario.steps


def test_the_catalog_lists_every_file_by_name_and_each_loads_under_its_file_name():
    entries = catalog()
    assert ("fstrim-after-delete", "Delete a file, then fstrim") in entries
    assert entries == sorted(entries)
    for name, title in entries:
        scenario = load(name, formats=FORMATS)
        assert (scenario.name, scenario.title) == (name, title)


def test_the_docs_table_of_steps_is_the_one_the_code_reads_and_the_docs_example_loads(tmp_path, monkeypatch):
    docs = (ROOT / "docs" / "scenarios.md").read_text()
    assert steps_table() in docs
    example = load_text(tmp_path, monkeypatch, docs.split("```toml\n")[1].split("```")[0], formats=FORMATS)
    assert example.disk.backing[0].fill[0].size == 64 * MiB and example.steps[3].args["size"] == 64 * MiB


def known(values) -> str:
    return ", ".join(values)


TOP_KEYS = "name, title, story, seed, machine, disk, drive, fs, steps"
STEP_KINDS = ("mkfs, mount, umount, write, delete, truncate, sync, fstrim, zero-fill, blkdiscard, snapshot, copy, "
              "immutable, commit, compact, power-cycle, idle")
UMOUNT = '[[steps]]\ndo = "umount"\n'       # lines 19-20 after BASE

# (text, overrides, the error after 't.toml:': a line, or the --set)
BAD = [
    # TOML syntax: tomllib's message, its line and column
    (edit(l5='size = "1G" x'), (),
     "5: syntax: Expected newline or end of document after a statement (column 13)"),
    (edit(l6="[disk]"), (), "6: syntax: Cannot declare ('disk',) twice (column 6)"),
    (after('story = """never closed'), (), "19: syntax: Unterminated string (at the end)"),
    (edit(l3="seed = "), (), "3: syntax: Invalid value (column 8)"),
    # unknown keys, at every level
    (edit(l3="colour = 1"), (), f"3: colour: unknown key (known: {TOP_KEYS})"),
    (edit(l3="[machine]\nram = 1"), (), "4: machine.ram: unknown key (known: profile, controller, guest)"),
    (edit(l5='sise = "1G"'), (), "5: disk.sise: unknown key (known: size, format, options, payload, backing)"),
    (edit(l6='options = { "a b" = 1 }'), (), "6: disk.options.\"a b\": 'a b' is not an option name"),
    (edit(l6='[[disk.backing]]\nfromat = "raw"'), (),
     "7: disk.backing[0].fromat: unknown key (known: format, options, fill)"),
    (edit(l6='[[disk.backing]]\nfill = [\n  { offset = 0, sise = 1 },\n]'), (),
     "8: disk.backing[0].fill[0].sise: unknown key (known: offset, size, content)"),
    (edit(l9='[drive]\ncache = "none"'), (), "10: drive.cache: unknown key (known: discard, detect_zeroes)"),
    (edit(l8='type = "ext4"\nmkfs_options = ""'), (), "9: fs.mkfs_options: unknown key (known: type, mkfs, mount)"),
    (edit(l17='sise = "64M"'), (),
     "17: steps[2].sise: unknown key (known: do, phase, file, size, content, offset)"),
    # missing keys: the table's header line, or the first line for the top level
    (edit(l1=""), (), "1: name: required key missing"),
    (edit(l5=""), (), "4: disk.size: required key missing"),
    (edit(l4="", l5=""), (), "1: disk: required key missing"),
    (edit(l18=""), (), "14: steps[2].content: required key missing"),
    (edit(l15=""), (), "14: steps[2].do: required key missing"),
    (edit(l10="", l11="", l12="", l13="", l14="", l15="", l16="", l17="", l18=""), (),
     "1: steps: required key missing"),
    # types
    (edit(l3='seed = "1"'), (), "3: seed: expected an integer, got a string ('1')"),
    (edit(l3="seed = -1"), (), "3: seed: -1 is not from 0 to 2**64 - 1"),
    (edit(l5="size = true"), (), '5: disk.size: expected a size (bytes, or a string such as "64M"), got a boolean '
                                 "(true)"),
    (edit(l3="machine = 3"), (), "3: machine: expected a table, got an integer (3)"),
    (edit(l6='options = "cluster_size=64k"'), (),
     "6: disk.options: expected a table of options, got a string ('cluster_size=64k')"),
    (edit(l6="options = { compat = 1.1 }"), (),
     "6: disk.options.compat: expected a string, an integer or a boolean (quote it), got a float (1.1)"),
    (edit(l2='title = """two\nlines"""'), (), "2: title: 'two\\nlines' is not one line, not empty"),
    (edit(l16="file = 7"), (), "16: steps[2].file: expected a string, got an integer (7)"),
    (edit(l16='file = "a/b"'), (), "16: steps[2].file: 'a/b' is not a file name (letters, digits, '.', '_', '-')"),
    (after('[[steps]]\ndo = "idle"\nseconds = "5"'), (),
     "21: steps[3].seconds: expected a number of seconds, got a string ('5')"),
    (after('[[steps]]\ndo = "idle"\nseconds = nan'), (), "21: steps[3].seconds: nan is not a number of seconds "
                                                          "(finite, 0 or more)"),
    (edit(l13="do = 2024-01-01"), (), "13: steps[1].do: expected a string, got a date (\"2024-01-01\")"),
    (after("[[steps]]\n"), (), "19: steps[3].do: required key missing"),
    # names from their tables: profiles, controllers, formats (the caller's), fs types, steps, contents, drive modes
    (edit(l3='[machine]\nprofile = "qemu-9"'), (),
     f"4: machine.profile: unknown profile 'qemu-9' (known: {known(NAMES)})"),
    (edit(l3='[machine]\ncontroller = "nvme"'), (),
     f"4: machine.controller: unknown controller 'nvme' (known: {known(CONTROLLERS)})"),
    (edit(l3='[machine]\nguest = "win-11"'), (),
     f"4: machine.guest: unknown guest profile 'win-11' (known: {known(GUEST_NAMES)})"),
    (edit(l6='format = "qed"'), (), "6: disk.format: unknown format 'qed' (known: raw, qcow2)"),
    (edit(l6='[[disk.backing]]\nformat = "vdi"'), (), "7: disk.backing[0].format: unknown format 'vdi' (known: raw, "
                                                      "qcow2)"),
    (edit(l6='payload = "fake"'), (), "6: disk.payload: unknown payload 'fake' (known: real, synthetic)"),
    (edit(l8='type = "xfs"'), (), "8: fs.type: unknown file system 'xfs' (known: ext4, ntfs, fat32)"),
    (edit(l15='do = "wrte"'), (), f"15: steps[2].do: unknown step 'wrte' (known: {STEP_KINDS})"),
    (edit(l18='content = "ones"'), (), "18: steps[2].content: unknown content 'ones' (known: random, pattern, zeros)"),
    (edit(l9='[drive]\ndiscard = "maybe"'), (),
     "10: drive.discard: unknown discard mode 'maybe' (known: ignore, off, unmap, on)"),
    (edit(l9='[drive]\ndetect_zeroes = "yes"'), (),
     "10: drive.detect_zeroes: unknown detect_zeroes mode 'yes' (known: off, on, unmap)"),
    (edit(l9='[drive]\ndetect_zeroes = "unmap"'), (), "10: drive.detect_zeroes: setting detect-zeroes to unmap is "
                                                      "not allowed without setting discard operation to unmap"),
    (after('[[steps]]\ndo = "snapshot"\naction = "undo"\nname = "s"'), (),
     "21: steps[3].action: unknown snapshot action 'undo' (known: take, revert, delete)"),
    # sizes
    (edit(l17='size = "64Q"'), (), "17: steps[2].size: '64Q' is not a size (k/M/G/T suffixes)"),
    (edit(l17="size = -1"), (), "17: steps[2].size: -1 is not a size (from 0 to 2**63 - 1 bytes)"),
    (edit(l17="size = 1.5"), (),
     '17: steps[2].size: expected a size (bytes, or a string such as "64M"), got a float (1.5)'),
    (edit(l17='size = "2G"'), (), "17: steps[2].size: 2147483648 bytes (2 GiB) is beyond the 1 GiB disk"),
    (edit(l18='content = "random"\noffset = "1G"'), (),
     "17: steps[2].size: offset + size = 1140850688 bytes (1.06 GiB) ends beyond the 1 GiB disk (1073741824 bytes)"),
    (edit(l5='size = "1000"'), (), "5: disk.size: 1000 bytes is not a whole number of 512-byte sectors, at least one"),
    (edit(l5="size = 0"), (), "5: disk.size: 0 bytes is not a whole number of 512-byte sectors, at least one"),
    (edit(l6='[[disk.backing]]\nfill = [{ offset = "1G", size = 1, content = "zeros" }]'), (),
     "7: disk.backing[0].fill[0].size: offset + size = 1073741825 bytes (1 GiB) ends beyond the 1 GiB disk "
     "(1073741824 bytes)"),
    (after('[[steps]]\ndo = "umount"\n[[steps]]\ndo = "blkdiscard"\nlength = "2G"'), (),
     "23: steps[4].length: 2147483648 bytes (2 GiB) is beyond the 1 GiB disk"),
    # the walk over the steps
    (edit(l13='do = "sync"'), (), "15: steps[2].do: write needs a mounted file system (mount it before)"),
    (edit(l11='do = "sync"'), (), "13: steps[1].do: mount needs a file system (mkfs before)"),
    (edit(l7="", l8=""), (), "11: steps[0].do: mkfs needs an [fs] table (the file system to make)"),
    (after('[[steps]]\ndo = "blkdiscard"'), (),
     "20: steps[3].do: blkdiscard needs the file system unmounted (umount it before)"),
    (after('[[steps]]\ndo = "mkfs"'), (), "20: steps[3].do: mkfs needs the file system unmounted (umount it before)"),
    (after('[[steps]]\ndo = "mount"'), (), "20: steps[3].do: mount needs the file system unmounted (umount it before)"),
    (after('[[steps]]\ndo = "umount"\n[[steps]]\ndo = "fstrim"'), (),
     "22: steps[4].do: fstrim needs a mounted file system (mount it before)"),
    (after('[[steps]]\ndo = "delete"\nfile = "b"'), (), "21: steps[3].file: no file 'b' at this step (files: a)"),
    (after('[[steps]]\ndo = "delete"\nfile = "a"\n[[steps]]\ndo = "truncate"\nfile = "a"\nsize = 0'), (),
     "24: steps[4].file: no file 'a' at this step (files: none)"),
    (after('[[steps]]\ndo = "umount"\n[[steps]]\ndo = "commit"'), (),
     "22: steps[4].do: commit needs a layer under the top (disk.backing, or a snapshot taken)"),
    (after('[[steps]]\ndo = "snapshot"\naction = "revert"\nname = "s"'), (),
     "22: steps[3].name: no snapshot 's' at this step (taken: none)"),
    (after('[[steps]]\ndo = "snapshot"\naction = "take"\nname = "s"\n[[steps]]\ndo = "snapshot"\naction = "revert"\n'
           'name = "s"'), (), "25: steps[4].action: revert needs the file system unmounted (umount it before)"),
    (after('[[steps]]\ndo = "snapshot"\naction = "take"\nname = "s"\n[[steps]]\ndo = "snapshot"\naction = "take"\n'
           'name = "s"'), (), "26: steps[4].name: snapshot 's' is already taken"),
    (after('[[steps]]\ndo = "zero-fill"\ntool = "sdelete"\nsize = "1M"'), (),
     "22: steps[3].size: only tool 'dd' takes a size (sdelete fills the free space)"),
    (after('[[steps]]\ndo = "power-cycle"\n[[steps]]\ndo = "delete"\nfile = "a"'), (),
     "22: steps[4].do: delete needs a mounted file system (mount it before)"),
    # phases
    (edit(l13='do = "mount"\nphase = "x"', l15='do = "write"\nphase = "x"'), (),
     "17: steps[2].phase: phase 'x' already ends steps[1]"),
    (edit(l13='do = "mount"\nphase = "Mounted!"'), (),
     "14: steps[1].phase: 'Mounted!' is not a phase name (lower-case letters, digits, '_', '-')"),
    (edit(l1='name = "Not A Name"'), (), "1: name: 'Not A Name' is not lower-case words joined by '-'"),
    # overrides: the --set instead of a line
    (BASE, ("format=qed",), " --set format: unknown format 'qed' (known: raw, qcow2)"),
    (BASE, ("steps[2].size=64Q",), " --set steps[2].size: '64Q' is not a size (k/M/G/T suffixes)"),
    (BASE, ("steps[2].size=4G",), " --set steps[2].size: 4294967296 bytes (4 GiB) is beyond the 1 GiB disk"),
    (BASE, ("seed=true",), " --set seed: expected an integer, got a boolean (true)"),
    (BASE, ("steps[9].size=1",), " --set steps[9].size: steps has 3 entries"),
    (BASE, ("nothing",), " --set: 'nothing' is not KEY=VALUE"),
    (BASE, ("steps[x]=1",), " --set steps[x]: not a key path (keys joined by '.', array entries as [N]; short names: "
                            "profile, controller, format, discard, detect_zeroes, seed)"),
    (BASE, ("disk.size.x=1",), " --set disk.size.x: disk.size is not a table"),
    (BASE, ("name[0]=1",), " --set name[0]: name is not an array"),
    (BASE, ("colour=1",), f" --set colour: unknown key (known: {TOP_KEYS})"),
    (BASE, ("disk.backing[0].format=raw",), " --set disk.backing[0].format: disk.backing has no entries"),
    (BASE, ("drive.discard=on", "drive.cache=none"),
     " --set drive.cache: unknown key (known: discard, detect_zeroes)"),
    (BASE, ("machine={ profile = 'x' }",),
     f" --set machine: machine.profile: unknown profile 'x' (known: {known(NAMES)})"),
    (edit(l7="", l8=""), ("fs.mount=discard",), " --set fs.mount: fs.type: required key missing"),
    (BASE, ("detect_zeroes=unmap",), " --set detect_zeroes: setting detect-zeroes to unmap is not allowed without "
                                     "setting discard operation to unmap"),
    (BASE, ("steps[1].do=sync",), "15: steps[2].do: write needs a mounted file system (mount it before)"),
    # copies and the immutable disk
    (after(UMOUNT + '[[steps]]\ndo = "copy"\naction = "restore"\nname = "c"'), (),
     "24: steps[4].name: no copy 'c' at this step (taken: none)"),
    (after(UMOUNT + '[[steps]]\ndo = "copy"\naction = "take"\nname = "c"\nsparse = "no"'), (),
     "25: steps[4].sparse: expected true or false, got a string ('no')"),
    (after(UMOUNT + '[[steps]]\ndo = "copy"\naction = "take"\nname = "c"\n[[steps]]\ndo = "copy"\n'
                    'action = "take"\nname = "c"'), (), "28: steps[5].name: copy 'c' is already taken"),
    (after(UMOUNT + '[[steps]]\ndo = "copy"\naction = "take"\nname = "c"\n[[steps]]\ndo = "snapshot"\n'
                    'action = "take"\nname = "s"\n[[steps]]\ndo = "copy"\naction = "restore"\nname = "c"'), (),
     "32: steps[6].name: copy 'c' is of a disk of 1 layers, this one has 2: restore it where it was taken"),
    (after(UMOUNT + '[[steps]]\ndo = "copy"\naction = "take"\nname = "c"'), ("disk.payload=synthetic",),
     '22: steps[4].do: copy needs disk.payload = "real" (a copy writes the content)'),
    (after('[[steps]]\ndo = "copy"\naction = "take"\nname = "c"'), (),
     "20: steps[3].do: copy needs the file system unmounted (umount it before)"),
    (after(UMOUNT + '[[steps]]\ndo = "immutable"\n[[steps]]\ndo = "immutable"'), (),
     "24: steps[5].do: the disk is immutable already"),
    (after(UMOUNT + '[[steps]]\ndo = "immutable"\n[[steps]]\ndo = "snapshot"\naction = "take"\nname = "s"'), (),
     "24: steps[5].do: snapshot on an immutable disk's differencing image is not modelled"),
    (after(UMOUNT + '[[steps]]\ndo = "snapshot"\naction = "take"\nname = "s"\n[[steps]]\ndo = "immutable"'),
     (), "26: steps[5].do: immutable needs a base image, without a backing file (VirtualBox makes only base media "
         "immutable)"),
]


@pytest.mark.parametrize(("text", "overrides", "message"), BAD, ids=[case[2][:70] for case in BAD])
def test_every_mistake_is_one_line_naming_the_file_the_line_and_the_key(tmp_path, monkeypatch, text, overrides,
                                                                       message):
    with pytest.raises(ScenarioError) as caught:
        load_text(tmp_path, monkeypatch, text, overrides)
    assert str(caught.value) == "t.toml:" + message
    assert isinstance(caught.value, UsageError) and "\n" not in str(caught.value)


def test_the_file_itself_missing_unreadable_or_not_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"^gone\.toml: cannot read: No such file or directory$"):
        load("gone.toml", formats=TEST_FORMATS)
    pathlib.Path("bin.toml").write_bytes(b'name = "x"\ntitle = "\xff"\n')
    with pytest.raises(ScenarioError, match=r"^bin\.toml:2: not UTF-8 text$"):
        load("bin.toml", formats=TEST_FORMATS)
    with pytest.raises(ScenarioError, match=r"^no-such-story: not a \.toml file nor a scenario of the catalog "
                                            r"\(known: .*fstrim-after-delete"):
        load("no-such-story", formats=TEST_FORMATS)


def test_overrides_change_values_and_short_names_reach_their_keys(tmp_path, monkeypatch):
    plain = load("fstrim-after-delete", formats=FORMATS)
    changed = load("fstrim-after-delete", ["profile=qemu-8.2", "controller=ahci", "format=raw", "discard=on",
                                           "detect_zeroes=unmap", "seed=7", "steps[3].size=32M",
                                           "disk.options.cluster_size=4k", 'fs.mkfs="-O ^has_journal"',
                                           "machine.guest=linux-6.1", "steps[7].minlen=4096"], formats=FORMATS)
    assert changed.machine == MachineSpec("qemu-8.2", "ahci", "linux-6.1")
    assert (changed.disk.format, changed.disk.options) == ("raw", {"cluster_size": "4k"})
    assert changed.drive == DriveSpec("unmap", "unmap") and changed.seed == 7
    assert changed.fs.mkfs == "-O ^has_journal"
    assert changed.steps[3].args["size"] == 32 * MiB and changed.steps[7].args["minlen"] == 4096
    assert (changed.name, changed.steps[4:7]) == (plain.name, plain.steps[4:7])
    later = load("fstrim-after-delete", ["format=raw", "disk.format=vmdk"], formats=FORMATS)
    assert later.disk.format == "vmdk"
    whole = load_text(tmp_path, monkeypatch, BASE, ['steps[2]={ do = "sync", phase = "end" }'])
    assert whole.steps[2] == Step("sync", "end", {})


@pytest.mark.parametrize(("text", "value"), [
    ("32M", "32M"), ("32", 32), ('"32"', "32"), ("true", True), ("1.5", 1.5), ("unmap", "unmap"), ("", ""),
    ("{ a = 1 }", {"a": 1}), ("[1, 2]", [1, 2]), ("-O ^has_journal", "-O ^has_journal"), ("a\nb = 1", "a\nb = 1"),
])
def test_a_set_value_is_toml_when_it_parses_and_a_string_otherwise(text, value):
    assert value_of(text) == value


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def as_overrides(settings: dict) -> list[str]:
    return [f"{key}={toml_value(value)}" for key, value in settings.items()]


@pytest.mark.parametrize("text", [BASE, RICH, (CATALOG / "fstrim-after-delete.toml").read_text(),
                                  (CATALOG / "full-copy-vs-snapshot.toml").read_text()],
                         ids=["base", "rich", "catalog", "copies"])
def test_settings_round_trip(tmp_path, monkeypatch, text):
    scenario = load_text(tmp_path, monkeypatch, text)
    assert load_text(tmp_path, monkeypatch, text, as_overrides(scenario.settings())) == scenario
    changed = load_text(tmp_path, monkeypatch, text, ["format=raw", "seed=99", "steps[0].phase=p0"])
    assert changed != scenario
    assert load_text(tmp_path, monkeypatch, text, as_overrides(changed.settings())) == changed


def test_rich_file_values(tmp_path, monkeypatch):
    scenario = load_text(tmp_path, monkeypatch, RICH)
    assert scenario.disk.options == {"cluster_size": "64k", "lazy_refcounts": "on"}
    assert [f.offset for f in scenario.disk.backing[0].fill] == [0, 4 * MiB]
    assert scenario.steps[1].args == {"options": "nodiscard"}
    assert scenario.steps[5].args == {"tool": "dd", "size": MiB}
    assert scenario.steps[12].args == {"seconds": 1.5}
    settings = scenario.settings()
    assert settings["disk.backing[0].fill[1].size"] == 4096 and settings["steps[6].minlen"] == 64 << 10
    assert "name" not in settings and "story" not in settings and settings["seed"] == 3


def paths(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from paths(item, prefix + (key,))


def unlocated(text: str) -> list:
    """The key paths of `text` that tomllib sees and the locator does not."""
    document = tomllib.loads(text)
    lines = key_lines(text)
    return [path for path in paths(document) if path and path not in lines]


TRICKY = '''\
# a comment with [brackets] and key = 1
"quoted key" = 1
'literal'.dotted . key = 2
story = """
[not.a.table]
fake = 1
"""
ends = """a"""""
raw = \'\'\'C:\\path\\\'\'\'
[ spaced . 'header' ]   # comment
x = [
  1,   # one
  { a = 1, b = { c = [2, 3] } },
  [4,
   5],
]
[[arr]]
k = 1
[[arr]]
[arr.sub]
deep = "v"
[[arr.inner]]
m = 1
[[arr.inner]]
m = 2
[next]
when = 1979-05-27 07:32:00Z
after = 3
'''


def test_the_locator_on_tricky_toml():
    lines = key_lines(TRICKY)
    expect = {
        ("quoted key",): 2, ("literal", "dotted", "key"): 3, ("story",): 4, ("ends",): 8, ("raw",): 9,
        ("spaced", "header"): 10, ("spaced", "header", "x"): 11, ("spaced", "header", "x", 0): 12,
        ("spaced", "header", "x", 1, "b", "c", 1): 13, ("spaced", "header", "x", 2, 1): 15,
        ("arr", 0): 17, ("arr", 0, "k"): 18, ("arr", 1): 19, ("arr", 1, "sub", "deep"): 21,
        ("arr", 1, "inner", 0, "m"): 23, ("arr", 1, "inner", 1): 24, ("next",): 26, ("next", "after"): 28,
    }
    assert {path: lines.get(path) for path in expect} == expect
    assert ("not", "a", "table") not in lines and ("fake",) not in lines
    assert line_of(lines, ("arr", 1, "inner", 1, "missing")) == 24 and line_of(lines, ("nowhere",)) == 1

    assert unlocated(TRICKY) == []
    assert key_lines(TRICKY.replace("\n", "\r\n")) == lines


LINE = st.integers(min_value=0, max_value=200)
VALUES = st.sampled_from(["1", "-3", "1.5", "true", '"x"', "[]", '[1, "a"]', "{}", "{ a = 1 }", "1979-05-27",
                          '"64Q"', "inf", "nan", '"1G"', '"raw"', '"take"', '""', '"a\\nb"', "0", "9e99"])
GARBAGE = st.text(alphabet='[]{}="\'#.,=\n abc1-_', max_size=12)


@st.composite
def mutated(draw):
    rows = RICH.splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(LINE) % len(rows)
        action = draw(st.sampled_from(["drop", "retype", "garbage"]))
        if action == "drop":
            del rows[i]
        elif action == "retype" and " = " in rows[i]:
            rows[i] = rows[i].split(" = ")[0] + " = " + draw(VALUES)
        else:
            rows.insert(i, draw(GARBAGE))
    overrides = draw(st.lists(st.tuples(st.sampled_from(["format", "seed", "steps[2].size", "disk.options.x",
                                                          "steps[30].do", "drive.discard", "fs", "steps[4].name"]),
                                        VALUES), max_size=2))
    return "\n".join(rows) + "\n", [f"{key}={value}" for key, value in overrides]


@given(mutated())
def test_random_damage_gives_a_scenario_or_a_one_line_scenario_error(tmp_path_factory, case):
    text, overrides = case
    try:
        assert unlocated(text) == []
    except tomllib.TOMLDecodeError:
        pass
    folder = tmp_path_factory.mktemp("damage")
    (folder / "t.toml").write_text(text)
    try:
        scenario = load(folder / "t.toml", overrides, formats=TEST_FORMATS)
    except ScenarioError as err:
        assert str(err).startswith(f"{folder / 't.toml'}") and "\n" not in str(err)
    else:
        assert isinstance(scenario, Scenario)
