"""Where the guest's freed bytes went: for every byte a file system freed during a run, whether the host got its
space back, or which layer kept it and why.

The answer is read from the run itself, never predicted: what the image layers hold at the end (block status of
each layer) says whether space was reclaimed; the guest's discard requests and the Drive's per-request traces say
why it was not. A byte freed twice counts once, as of its last freeing; a byte the file system wrote again after
freeing it is reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from emu.block.backend import Status
from emu.trace import Act, Trace
from scenarios.run import layer_kind

SECTOR = 512

# (key, what it means): the reasons in the order a report lists them
REASONS = {
    "reclaimed": "reclaimed: the image no longer holds it and no layer below does",
    "reused": "reused: the file system wrote new data there after freeing it",
    "not-discarded": "the guest never discarded it (Linux: not mounted with -o discard and no fstrim after the delete; "
                     "Windows: no delete notification, no retrim)",
    "no-device-discard": "the device does not offer discard: the guest's queue has none",
    "driver-dropped": "the guest discarded it, but its driver sent nothing to the device",
    "drive-ignore": "the drive dropped the discard (discard=ignore: the request succeeds and nothing is freed)",
    "format-cannot-free": "the image format cannot free space on discard",
    "partial-cluster": "partial cluster or block: the discard did not cover a whole unit the format can free",
    "host-block": "host block partly covered: the host file system frees whole blocks only",
    "backing-holds": "a backing layer still holds data there: the top reads zeros, the space below is kept",
    "zero-allocated": "a layer reads zeros there but keeps the host space (an allocated zero cluster)",
}
ZERO_ALLOCATED = "zero-allocated"       # a layer's kind: zeros, with a host offset (QCOW2_CLUSTER_ZERO_ALLOC)


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


def latest(ranges: list[Freed]) -> list[Freed]:
    """The ranges painted in step order, each byte once with the last step that freed it (what a discard must
    come after to count), in offset order."""
    painted: list[Freed] = []
    for r in sorted(ranges, key=lambda r: r.step):
        end = r.offset + r.length
        kept = []
        for p in painted:
            p_end = p.offset + p.length
            if p_end <= r.offset or end <= p.offset:
                kept.append(p)
                continue
            if p.offset < r.offset:
                kept.append(Freed(p.offset, r.offset - p.offset, p.step))
            if end < p_end:
                kept.append(Freed(end, p_end - end, p.step))
        painted = kept + [Freed(r.offset, r.length, r.step)]
    return sorted(painted, key=lambda r: r.offset)


def _covering(discards: list[Discard], offset: int, end: int, step: int) -> list[Discard]:
    return [d for d in discards if d.step >= step and d.offset < end and offset < d.offset + d.length]


def _trace_reason(trace: Trace, offset: int, end: int, top_format: str) -> str:
    """Why a discard the Drive served left [offset, end) in place, from the events of its trace over that range."""
    for event in trace.events:
        if event.layer == "drive" and event.action == Act.DROPPED:
            return "drive-ignore" if "discard=ignore" in event.detail else "format-cannot-free"
    for event in trace.events:
        if event.action in (Act.IGNORED, Act.KEPT) and event.offset < end and offset < event.offset + event.length:
            return "partial-cluster" if "partial" in event.detail else "format-cannot-free"
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
        freed = latest(self.freed)
        for r in freed:
            for offset, length, kind in _runs(top, r.offset, r.length):
                pieces = [(offset, length, None)] if kind in ("data", ZERO_ALLOCATED) else \
                    _shown_below(below, offset, length)
                for start, n, holder in pieces:
                    reason, example = self._why(r, start, start + n, kind, holder, is_used, device_discards,
                                                top_format)
                    totals[reason] = totals.get(reason, 0) + n
                    examples.setdefault(reason, example)
        by_reason = [{"reason": key, "text": REASONS[key], "bytes": totals[key], "example": examples[key]}
                     for key in REASONS if key in totals]
        return {"freed_bytes": sum(r.length for r in freed), "by_reason": by_reason}

    def _why(self, r: Freed, offset: int, end: int, kind: str, holder, is_used, device_discards: bool,
             top_format: str) -> tuple[str, str]:
        where = f"guest bytes {offset:#x}+{end - offset:#x}"
        if is_used(offset, end - offset):
            return "reused", f"{where}: in use by a file again"
        if kind == ZERO_ALLOCATED:
            return "zero-allocated", f"{where}: zeros in the top layer, its host clusters kept"
        if kind != "data":
            if isinstance(holder, str):
                return "zero-allocated", f"{where}: unallocated in the top layer; {os.path.basename(holder)} reads " \
                                     "zeros, host kept"
            if holder is not None:
                return "backing-holds", f"{where}: {kind} in the top layer; {os.path.basename(holder.path)} still " \
                                        "holds data"
            return "reclaimed", f"{where}: {kind} in the top layer"
        served = _covering(self.drive_discards, offset, end, r.step)
        if served:
            trace = served[-1].trace
            return _trace_reason(trace, offset, end, top_format), str(trace)
        if not device_discards:
            return "no-device-discard", f"{where}: the guest's queue has discard_max_bytes 0"
        if _covering(self.guest_discards, offset, end, r.step):
            return "driver-dropped", f"{where}: discarded by the guest, no discard reached the drive"
        return "not-discarded", f"{where}: freed at step {r.step}, no discard covered it afterwards"


def _shown_below(below: list, offset: int, length: int) -> list[tuple[int, int, object]]:
    """Pieces of a range the top layer does not store, each with the lower layer that holds data for it, or the path
    of one that reads zeros but keeps host space (None: no layer holds anything). A zero layer hides those under
    it; an unallocated one lets the next show through."""
    if not below:
        return [(offset, length, None)]
    layer, rest = below[-1], below[:-1]
    out = []
    for start, n, kind in _runs(layer, offset, length):
        if kind == "unallocated":
            out += _shown_below(rest, start, n)
        else:
            out.append((start, n, layer if kind == "data" else layer.path if kind == ZERO_ALLOCATED else None))
    return out


def _runs(layer, offset: int, length: int) -> list[tuple[int, int, str]]:
    """The layer's own content over a range: (offset, length, kind) with kind data, zero or unallocated."""
    out = []
    end = offset + length
    while offset < end:
        status = layer.block_status(offset, end - offset)
        n = min(status.length, end - offset)
        kind = layer_kind(status.flags)
        if kind == "zero" and status.flags & Status.OFFSET_VALID:
            # zeros with a host offset: kept space only if the host file holds that range (raw's holes and a
            # punched qcow2 zero cluster have an offset too)
            held, held_end = layer.host.extent_at(status.host_offset)
            if held and status.host_offset < layer.host.size():
                kind = ZERO_ALLOCATED
                n = min(n, held_end - status.host_offset)
        out.append((offset, n, kind))
        offset += n
    return out
