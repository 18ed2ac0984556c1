"""The per-request trace: what each layer did with one request.

A `Trace` travels down with a request (Drive -> format -> host file); each layer appends events. It is
the record `emu explain` and the reports read to say where a discard went and why it stopped.
Layers are named by what they are: "drive", the format name ("qcow2", "raw"), and "file".
"""

from __future__ import annotations

from dataclasses import dataclass


class Act:
    """Event vocabulary (plain strings so traces print and serialise as they are)."""

    PASSED = "passed"                # handed to the next layer unchanged
    SPLIT = "split"                  # cut into aligned head / bulk / tail chunks
    DROPPED = "dropped"              # deliberately not done (detail says which option or rule)
    IGNORED = "ignored"              # the layer cannot do it and skips it silently (ENOTSUP)
    DEFERRED = "deferred"            # remembered, done once a later request completes it (VDI partial blocks)
    REJECTED = "rejected"            # failed with an error
    ZERO_DETECTED = "zero-detected"  # an all-zero write became a write-zeroes
    FALLBACK = "fallback"            # write-zeroes done by writing a zero buffer
    ALLOCATED = "allocated"          # clusters/blocks allocated (host grows)
    COW = "copy-on-write"            # data copied from a backing file or a shared cluster
    ZEROED = "zeroed"                # marked as reading zeros (qcow2 zero flag)
    UNMAPPED = "unmapped"            # made unallocated so the backing file shows again
    FREED = "freed"                  # clusters whose refcount dropped to zero
    KEPT = "kept"                    # freed in metadata but host space kept (no passthrough)
    PUNCHED = "punched"              # host range deallocated (fallocate PUNCH_HOLE)
    WRITTEN = "written"              # data written to the host file
    READ = "read"                    # data read (detail: from which layer)
    FLUSHED = "flushed"


@dataclass(slots=True)
class TraceEvent:
    layer: str
    action: str
    offset: int
    length: int
    detail: str = ""
    host_bytes: int = 0  # host bytes allocated or released by this step

    def __str__(self) -> str:
        text = f"{self.layer:>6}  {self.action:<14} {self.offset:#x}+{self.length:#x}"
        if self.host_bytes:
            text += f"  host {self.host_bytes} B"
        if self.detail:
            text += f"  {self.detail}"
        return text


class Trace:
    """Events for one request, in the order the layers produced them. (A plain slotted class: one
    is made for every request, so it must be cheap.)"""

    __slots__ = ("op", "offset", "length", "events")

    def __init__(self, op: str, offset: int, length: int) -> None:
        self.op = op            # the request's operation ("read", "write", "discard", "write-zeroes", "flush")
        self.offset = offset
        self.length = length
        self.events: list[TraceEvent] = []

    def add(self, layer: str, action: str, offset: int, length: int, detail: str = "",
            host_bytes: int = 0) -> None:
        self.events.append(TraceEvent(layer, action, offset, length, detail, host_bytes))

    def bytes_with(self, action: str, layer: str | None = None) -> int:
        """Sum of host_bytes (or lengths, when no host bytes) of events with this action."""
        return sum(e.host_bytes or e.length for e in self.events
                   if e.action == action and (layer is None or e.layer == layer))

    def has(self, action: str) -> bool:
        return any(e.action == action for e in self.events)

    def to_dict(self) -> dict:
        return {"op": self.op, "offset": self.offset, "length": self.length,
                "events": [{"layer": e.layer, "action": e.action, "offset": e.offset, "length": e.length,
                            "detail": e.detail, "host-bytes": e.host_bytes} for e in self.events]}

    def __str__(self) -> str:
        head = f"{self.op} {self.offset:#x}+{self.length:#x}"
        return "\n".join([head] + ["  " + str(e) for e in self.events])


class _NullTrace(Trace):
    """A trace that keeps nothing: what a layer is handed when nobody asked what it did (a chain operation,
    a test calling a backend directly), so layers record unconditionally instead of testing for None."""

    __slots__ = ()

    def add(self, layer: str, action: str, offset: int, length: int, detail: str = "",
            host_bytes: int = 0) -> None:
        pass


NULL_TRACE: Trace = _NullTrace("none", 0, 0)
