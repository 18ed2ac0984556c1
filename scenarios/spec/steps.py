"""The steps a guest performs: one table of kinds (`STEPS`: each kind's keys, what it needs of the file system,
what it does) drives reading them, the walk that checks their order, and the table in docs/scenarios.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scenarios.spec.locate import Path
from scenarios.spec.model import Scenario, Step
from scenarios.spec.reader import Reader, expected
from scenarios.spec.values import (
    MISSING,
    OPTIONAL,
    REQUIRED,
    Choice,
    Flag,
    Key,
    Kind,
    Seconds,
    Size,
    Text,
    check_within,
    read_table,
)

CONTENTS = ("random", "pattern", "zeros")
MOUNTED, UNMOUNTED = "mounted", "unmounted"
PHASE = re.compile(r"[a-z][a-z0-9_-]*")
FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class StepKind:
    do: str
    keys: tuple[Key, ...]
    what: str                   # what the guest does, for the documentation
    needs: str | None = None    # MOUNTED or UNMOUNTED: the file system's state the step needs


_FILE = Key("file", Text(FILE_NAME, "a file name (letters, digits, '.', '_', '-')"))
_NAME = Text(FILE_NAME, "a name (letters, digits, '.', '_', '-')")
_OFFSET = Key("offset", Size(), 0)
_LENGTH = Key("length", Size(), OPTIONAL, "to the end")
CONTENT = Choice(CONTENTS, "content")

STEPS: dict[str, StepKind] = {kind.do: kind for kind in (
    StepKind("mkfs", (), "makes the file system of `[fs]` with its `mkfs` options", UNMOUNTED),
    StepKind("mount", (Key("options", Text(), OPTIONAL, "`[fs].mount`"),), "mounts the file system", UNMOUNTED),
    StepKind("umount", (), "unmounts it", MOUNTED),
    StepKind("write", (_FILE, Key("size", Size()), Key("content", CONTENT),
                       Key("offset", Size(), OPTIONAL, "append at the end")),
             "writes into the file (created if new) through the page cache", MOUNTED),
    StepKind("delete", (_FILE,), "removes the file", MOUNTED),
    StepKind("truncate", (_FILE, Key("size", Size())), "sets the file's size", MOUNTED),
    StepKind("sync", (), "`sync`: writeback of everything dirty, journal commit, cache flush"),
    StepKind("fstrim", (_OFFSET, _LENGTH, Key("minlen", Size(), 0)), "FITRIM on the mounted file system", MOUNTED),
    StepKind("zero-fill", (Key("tool", Choice(("dd", "sdelete"), "tool"), "dd"),
                           Key("size", Size(), OPTIONAL, "the free space; dd only")),
             "dd: a file of zeros, then rm; sdelete -z: zeros over the free space", MOUNTED),
    StepKind("blkdiscard", (_OFFSET, _LENGTH), "BLKDISCARD on the whole device or a range", UNMOUNTED),
    StepKind("snapshot", (Key("action", Choice(("take", "revert", "delete"), "snapshot action")), Key("name", _NAME)),
             "an external snapshot of the disk image, as `emu img snapshot` (revert: file system unmounted)"),
    StepKind("copy", (Key("action", Choice(("take", "restore"), "copy action")), Key("name", _NAME),
                      Key("sparse", Flag(), True)),
             "a full copy of the disk's image file, `copy-NAME.EXT`, as `cp --sparse=always` (`never` with sparse = "
             "false) makes it; restore copies it back over the disk (the files of its time)", UNMOUNTED),
    StepKind("immutable", (Key("auto_reset", Flag(), True),),
             "VirtualBox's `modifymedium --type immutable --autoreset on|off` and a power-on: the disk becomes a "
             "write-protected base, the guest writes into `diff.EXT`, reset at every power-on with auto_reset",
             UNMOUNTED),
    StepKind("commit", (), "`emu img commit` of the top layer into the one below", UNMOUNTED),
    StepKind("compact", (), "`emu img compact` of the image, offline", UNMOUNTED),
    StepKind("power-cycle", (), "the VM is powered off and on: unmounted after, the page cache lost (an "
                                "immutable base's differencing image is reset)"),
    StepKind("idle", (Key("seconds", Seconds()),), "nothing happens for a while (background work, e.g. lazy "
                                                   "init, runs)"),
)}
_DO = Key("do", Choice(tuple(STEPS), "step"))
_PHASE = Key("phase", Text(PHASE, "a phase name (lower-case letters, digits, '_', '-')"), OPTIONAL)


class StepEntry(Kind):
    """One `[[steps]]` table: `do` says which keys the rest may have."""

    def read(self, reader: Reader, path: Path, value: Any) -> Step:
        if not isinstance(value, dict):
            raise reader.fail(path, expected("a table", value))
        if "do" not in value:
            raise reader.fail(path + ("do",), MISSING)
        do = _DO.kind.read(reader, path + ("do",), value["do"])
        args = read_table(reader, path, value, (_DO, _PHASE) + STEPS[do].keys)
        return Step(args.pop("do"), args.pop("phase", None), args)


@dataclass
class _State:
    """What the walk knows before a step: the file system made / mounted, the files on it, the image layers."""

    made: bool = False
    mounted: bool = False
    files: frozenset[str] = frozenset()
    layers: int = 1
    snapshots: dict[str, tuple[bool, frozenset[str]]] = field(default_factory=dict)   # name -> (made, files)
    copies: dict[str, tuple[bool, frozenset[str], int]] = field(default_factory=dict)  # ... and the layers
    reset_to: tuple[bool, frozenset[str]] | None = None     # what an immutable disk's auto-reset gives back
    immutable: bool = False


def walk(reader: Reader, path: Path, scenario: Scenario) -> None:
    """The steps make sense in their order: sizes fit on the disk, the file system is made before it is mounted
    and mounted (or not) as each step needs, files exist before they are changed, snapshots before they are
    reverted, a layer exists under the top before a commit, and phase names are unique."""
    state = _State(layers=1 + len(scenario.disk.backing))
    phases: dict[str, int] = {}
    for i, step in enumerate(scenario.steps):
        at = path + ("steps", i)
        kind = STEPS[step.do]
        check_within(reader, at, {key.name: step.args[key.name] for key in kind.keys
                                  if isinstance(key.kind, Size) and key.name in step.args}, scenario.disk.size)
        if kind.needs == MOUNTED and not state.mounted:
            raise reader.fail(at + ("do",), f"{step.do} needs a mounted file system (mount it before)")
        if kind.needs == UNMOUNTED and state.mounted:
            raise reader.fail(at + ("do",), f"{step.do} needs the file system unmounted (umount it before)")
        _effect(reader, at, step, state, scenario)
        if step.phase is not None:
            if step.phase in phases:
                raise reader.fail(at + ("phase",), f"phase {step.phase!r} already ends steps[{phases[step.phase]}]")
            phases[step.phase] = i


def _effect(reader: Reader, at: Path, step: Step, state: _State, scenario: Scenario) -> None:
    args = step.args
    if step.do == "mkfs":
        if scenario.fs is None:
            raise reader.fail(at + ("do",), "mkfs needs an [fs] table (the file system to make)")
        state.made, state.files = True, frozenset()
    elif step.do == "mount":
        if not state.made:
            raise reader.fail(at + ("do",), "mount needs a file system (mkfs before)")
        state.mounted = True
    elif step.do == "umount":
        state.mounted = False
    elif step.do == "power-cycle":
        state.mounted = False
        if state.reset_to is not None:
            state.made, state.files = state.reset_to
    elif step.do == "write":
        state.files |= {args["file"]}
    elif step.do in ("delete", "truncate"):
        if args["file"] not in state.files:
            known = ", ".join(sorted(state.files)) or "none"
            raise reader.fail(at + ("file",), f"no file {args['file']!r} at this step (files: {known})")
        if step.do == "delete":
            state.files -= {args["file"]}
    elif step.do == "zero-fill" and args["tool"] != "dd" and "size" in args:
        raise reader.fail(at + ("size",), f"only tool 'dd' takes a size ({args['tool']} fills the free space)")
    elif step.do in ("snapshot", "commit") and state.immutable:
        raise reader.fail(at + ("do",), f"{step.do} on an immutable disk's differencing image is not modelled")
    elif step.do == "snapshot":
        _snapshot(reader, at, args, state)
    elif step.do == "commit" and state.layers < 2:
        raise reader.fail(at + ("do",), "commit needs a layer under the top (disk.backing, or a snapshot taken)")
    elif step.do == "copy":
        _copy(reader, at, args, state, scenario)
    elif step.do == "immutable":
        if state.immutable:
            raise reader.fail(at + ("do",), "the disk is immutable already")
        if state.layers > 1:
            raise reader.fail(at + ("do",), "immutable needs a base image, without a backing file (VirtualBox "
                                            "makes only base media immutable)")
        state.immutable, state.layers = True, 2
        state.reset_to = (state.made, state.files) if args["auto_reset"] else None


def _copy(reader: Reader, at: Path, args: dict[str, Any], state: _State, scenario: Scenario) -> None:
    name, copies = args["name"], state.copies
    if scenario.disk.payload != "real":
        raise reader.fail(at + ("do",), 'copy needs disk.payload = "real" (a copy writes the content)')
    if args["action"] == "take":
        if name in copies:
            raise reader.fail(at + ("name",), f"copy {name!r} is already taken")
        copies[name] = (state.made, state.files, state.layers)
        return
    if name not in copies:
        raise reader.fail(at + ("name",), f"no copy {name!r} at this step (taken: {', '.join(copies) or 'none'})")
    made, files, layers = copies[name]
    if layers != state.layers:
        raise reader.fail(at + ("name",), f"copy {name!r} is of a disk of {layers} layers, this one has "
                                          f"{state.layers}: restore it where it was taken")
    state.made, state.files = made, files


def _snapshot(reader: Reader, at: Path, args: dict[str, Any], state: _State) -> None:
    name, action, taken = args["name"], args["action"], state.snapshots
    if action == "take":
        if name in taken:
            raise reader.fail(at + ("name",), f"snapshot {name!r} is already taken")
        taken[name] = (state.made, state.files)
        state.layers += 1
        return
    if name not in taken:
        raise reader.fail(at + ("name",), f"no snapshot {name!r} at this step (taken: {', '.join(taken) or 'none'})")
    if action == "revert":
        if state.mounted:
            raise reader.fail(at + ("action",), "revert needs the file system unmounted (umount it before)")
        state.made, state.files = taken[name]
    else:
        del taken[name]
        state.layers -= 1


def steps_table() -> str:
    """The table of steps in docs/scenarios.md, made from `STEPS`."""
    rows = ["| do | keys | file system | what the guest does |", "|---|---|---|---|"]
    for kind in STEPS.values():
        rows.append(f"| `{kind.do}` | {', '.join(_describe(key) for key in kind.keys)} | {kind.needs or 'any'} | "
                    f"{kind.what} |")
    return "\n".join(rows)


def _describe(key: Key) -> str:
    notes = [key.kind.describe()] if key.kind.describe() else []
    if key.default is OPTIONAL:
        notes.append(f"default: {key.note}")
    elif key.default is not REQUIRED:
        notes.append(f"default {key.default}")
    return f"`{key.name}`" + (f" ({'; '.join(notes)})" if notes else "")
