"""What the report's tables say, as rows of text cells: one definition of each table, which the terminal view lays
out in monospace columns and the page as HTML tables."""

from __future__ import annotations

from dataclasses import dataclass

from emu.errors import EmuError
from emu.units import human_size

SCHEMA = 1                  # the result.json schema this report reads (docs/scenarios.md)
HOST_BYTES = "host_bytes"   # the timeline's metric of an image layer's host allocation
SIZE_ARGS = ("size", "offset", "length", "minlen")   # a step's keys that hold bytes
OPS = ("read", "write", "discard", "write-zeroes", "flush")


@dataclass(frozen=True)
class Table:
    """Header cells, rows of cells, and which columns hold numbers (right-aligned)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]


def check(result: dict) -> None:
    """Refuse a result written to another schema, before any of it is read."""
    if result.get("schema") != SCHEMA:
        raise EmuError(f"result schema {result.get('schema')!r} is not {SCHEMA}: written by another version of emu")


def layers(result: dict) -> list[str]:
    """The image layers in chain order, base first: the guest writes to the last one."""
    names: dict[str, None] = {}
    for layer_map in (result.get("maps") or {}).values():
        names.update(dict.fromkeys(layer_map))
    for record in result["steps"] + result["phases"]:
        names.update(dict.fromkeys(record["layers"]))
    return list(names)


def size(value: int | None) -> str:
    return "-" if value is None else human_size(int(value))


def change(value: int, before: int | None) -> str:
    """A size and, when it moved, by how much: `113 MiB (+64 MiB)`."""
    if before is None or value == before:
        return size(value)
    delta = int(value) - int(before)
    return f"{size(value)} ({'+' if delta > 0 else '-'}{human_size(abs(delta))})"


def seconds(value: float) -> str:
    """Simulated time with three significant digits, in s, ms or µs."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms")):
        if value == 0 or abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e6:.3g} µs"


def step_name(step: dict) -> str:
    """A step as the scenario file wrote it: `write file=big size=64M content=random`."""
    return " ".join([step["do"]] + [f"{key}={_arg(key, value)}" for key, value in step["args"].items()])


def _arg(key: str, value) -> str:
    """A step's argument as a person writes it: sizes with their suffix (`64M`), the rest as they are."""
    if isinstance(value, bool):
        return str(value).lower()
    if key in SIZE_ARGS and isinstance(value, int) and value:
        for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
            if value % unit == 0:
                return f"{value // unit}{suffix}"
    return str(value)


def requests(step: dict) -> str:
    """Requests per operation the Drive served during the step, those that happened: `73 write, 2 flush`."""
    counts = step.get("requests") or {}
    return ", ".join(f"{counts[op]} {op}" for op in OPS if counts.get(op)) or "-"


def headline(result: dict) -> str:
    """One line of the settings a reader compares runs by: format and size, controller, drive options, fs."""
    settings = result["scenario"].get("settings", {})
    parts = [" ".join(size(value) if isinstance(value, int) else str(value)
                      for value in (settings.get(key) for key in ("disk.format", "disk.size")) if value is not None),
             settings.get("machine.controller", ""),
             *(f"{label}={settings[key]}" for key, label in (("drive.discard", "discard"),
                                                             ("drive.detect_zeroes", "detect-zeroes"))
               if key in settings),
             settings.get("fs.type", "")]
    return ", ".join(str(part) for part in parts if part)


def start_bytes(result: dict) -> dict[str, int]:
    """Each layer's host bytes at the timeline's first sample: the images as created, before the first step (a
    layer made later, a snapshot's, has none)."""
    samples = [(time, layer, int(value)) for time, layer, metric, value in result["timeline"] if metric == HOST_BYTES]
    return {layer: value for time, layer, value in samples if time == samples[0][0]}


def phases_table(result: dict) -> Table:
    """Per phase: when it ended, each layer's host bytes with the change since the phase before (the first row is
    the start of the run), and the guest's used bytes."""
    names = layers(result)
    before = start_bytes(result)
    rows = [("(start)", seconds(0.0), *(size(before.get(name)) for name in names), "-")] if before else []
    for phase in result["phases"]:
        rows.append((phase["name"], seconds(phase["time"]),
                     *(change(phase["layers"][name], before.get(name)) if name in phase["layers"] else "-"
                       for name in names),
                     size(phase.get("guest_used_bytes"))))
        before = phase["layers"]
    return Table(("phase", "time", *names, "guest used"), tuple(rows), (False, True, *[True] * len(names), True))


def created_table(result: dict) -> Table:
    """Per image file as its create left it (before the guest boots): the size the guest sees, the file's length,
    its host bytes, what the create wrote and how long writing that takes in the latency model (preallocation's
    cost). Results without the record give no rows."""
    rows = tuple((name, size(made["virtual_size"]), size(made["file_size"]), size(made["host_bytes"]),
                  size(made["written_bytes"]), seconds(made["seconds"]))
                 for name, made in (result.get("created") or {}).items())
    return Table(("image", "virtual size", "file size", "host bytes", "written", "time"), rows,
                 (False, True, True, True, True, True))


def output(step: dict) -> str:
    """What a step reported, as a person reads it: `trimmed 973 MiB`, `differencing reset, discarded 64 MiB`."""
    parts = []
    for key, value in (step.get("output") or {}).items():
        if key.endswith("_bytes") and isinstance(value, int):
            parts.append(f"{key[:-len('_bytes')].replace('_', ' ')} {size(value)}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts) or "-"


def steps_table(result: dict, *, with_requests: bool = False) -> Table:
    """Per step: what it did, its simulated duration, each layer's host bytes when it ended, the guest's used
    bytes, the discards issued by the guest and passed to or dropped by the Drive (and, on request, the requests
    per operation), and what the step reported (fstrim's bytes, a merge's, a copy's)."""
    names = layers(result)
    rows = []
    for step in result["steps"]:
        discards = step.get("discards") or {}
        issued = discards.get("issued_bytes", 0)
        moved = [size(discards.get(key, 0)) if issued else "-"
                 for key in ("issued_bytes", "passed_bytes", "dropped_bytes")]
        rows.append((str(step["index"]), step_name(step), seconds(step["duration"]),
                     *(size(step["layers"].get(name)) for name in names), size(step.get("guest_used_bytes")),
                     *((requests(step),) if with_requests else ()), *moved, output(step)))
    headers = ("#", "step", "duration", *names, "guest used", *(("requests",) if with_requests else ()),
               "discard issued", "passed", "dropped", "output")
    numeric = (True, False, True, *[True] * len(names), True, *((False,) if with_requests else ()), True, True, True,
               False)
    return Table(headers, tuple(rows), numeric)
