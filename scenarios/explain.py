"""Where the guest's freed bytes went: for every byte a file system freed during a run, whether the host got its
space back, or which layer kept it and why.

The answer is read from the run itself, never predicted: what the image layers hold at the end (block status of
each layer) says whether space was reclaimed; the guest's discard requests and the Drive's per-request traces say
why it was not. A byte freed twice counts once; a byte the file system wrote again after freeing it is reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.trace import Act, Trace
from scenarios.run import layer_kind

SECTOR = 512

# (key, what it means): the reasons in the order a report lists them
REASONS = {
    "reclaimed": "reclaimed: the image no longer holds it and no layer below does",
    "reused": "reused: the file system wrote new data there after freeing it",
    "not-discarded": "the file system never discarded it (not mounted with -o discard, and no fstrim after the delete)",
    "no-device-discard": "the device does not offer discard: the guest's queue has none",
    "driver-dropped": "the guest discarded it, but its driver sent nothing to the device",
    "drive-ignore": "the drive dropped the discard (discard=ignore: the request succeeds and nothing is freed)",
    "format-cannot-free": "the image format cannot free space on discard",
    "partial-cluster": "partial cluster or block: the discard did not cover a whole unit the format can free",
    "host-block": "host block partly covered: the host file system frees whole blocks only",
    "backing-holds": "a backing layer still holds data there: the top reads zeros, the space below is kept",
}


@dataclass
class Freed:
    """A guest byte range the file system freed, and the step that freed it."""

    offset: int
    length: int
    step: int


@dataclass
class Discard:
    """A discard the guest issued (`trace` None) or the Drive served, with the step it happened in."""

    offset: int
    length: int
    step: int
    trace: Trace | None = None


def union(ranges: list[Freed]) -> list[Freed]:
    """The ranges merged, each byte once, with the earliest step that freed any of it."""
    out: list[Freed] = []
    for r in sorted(ranges, key=lambda r: r.offset):
        if out and r.offset <= out[-1].offset + out[-1].length:
            last = out[-1]
            last.length = max(last.length, r.offset + r.length - last.offset)
            last.step = min(last.step, r.step)
        else:
            out.append(Freed(r.offset, r.length, r.step))
    return out


def _covering(discards: list[Discard], offset: int, end: int, step: int) -> list[Discard]:
    return [d for d in discards if d.step >= step and d.offset < end and offset < d.offset + d.length]


def _trace_reason(trace: Trace, top_format: str) -> str:
    """Why a discard the Drive served left the space in place, from its trace."""
    for event in trace.events:
        if event.layer == "drive" and event.action == Act.DROPPED:
            return "drive-ignore" if "discard=ignore" in event.detail else "format-cannot-free"
        if event.action in (Act.IGNORED, Act.KEPT):
            return "format-cannot-free"
    return "host-block" if top_format == "raw" else "partial-cluster"


class Explainer:
    """Follows a run: the freed ranges, the guest's discards, the Drive's discard traces (fed by the player), then
    `explain(layers, used)` with the image layers as they are at the end."""

    def __init__(self) -> None:
        self.freed: list[Freed] = []
        self.guest_discards: list[Discard] = []
        self.drive_discards: list[Discard] = []

    def explain(self, layers: list, is_used, device_discards: bool, top_format: str) -> dict:
        """`layers`: the open image backends, base first; `is_used(offset, length)`: whether the file system holds
        any of the range now; `device_discards`: whether the guest's queue had discard."""
        totals: dict[str, int] = {}
        examples: dict[str, str] = {}
        top, below = layers[-1], layers[:-1]
        freed = union(self.freed)
        for r in freed:
            for offset, length, kind in _runs(top, r.offset, r.length):
                reason, example = self._why(r, offset, offset + length, kind, below, is_used, device_discards,
                                            top_format)
                totals[reason] = totals.get(reason, 0) + length
                examples.setdefault(reason, example)
        by_reason = [{"reason": key, "text": REASONS[key], "bytes": totals[key], "example": examples[key]}
                     for key in REASONS if key in totals]
        return {"freed_bytes": sum(r.length for r in freed), "by_reason": by_reason}

    def _why(self, r: Freed, offset: int, end: int, kind: str, below: list, is_used, device_discards: bool,
             top_format: str) -> tuple[str, str]:
        where = f"guest bytes {offset:#x}+{end - offset:#x}"
        if is_used(offset, end - offset):
            return "reused", f"{where}: in use by a file again"
        if kind != "data":
            for layer in reversed(below):
                if any(k == "data" for _o, _n, k in _runs(layer, offset, end - offset)):
                    return "backing-holds", f"{where}: the top layer reads zeros; {layer.path} still holds data"
            return "reclaimed", f"{where}: {kind} in the top layer"
        served = _covering(self.drive_discards, offset, end, r.step)
        if served:
            trace = served[-1].trace
            return _trace_reason(trace, top_format), str(trace)
        if not device_discards:
            return "no-device-discard", f"{where}: the guest's queue has discard_max_bytes 0"
        if _covering(self.guest_discards, offset, end, r.step):
            return "driver-dropped", f"{where}: discarded by the guest, no discard reached the drive"
        return "not-discarded", f"{where}: freed at step {r.step}, no discard covered it afterwards"


def _runs(layer, offset: int, length: int) -> list[tuple[int, int, str]]:
    """The layer's own content over a range: (offset, length, kind) with kind data, zero or unallocated."""
    out = []
    end = offset + length
    while offset < end:
        status = layer.block_status(offset, end - offset)
        n = min(status.length, end - offset)
        out.append((offset, n, layer_kind(status.flags)))
        offset += n
    return out
