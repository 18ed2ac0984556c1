"""What a run measures, in one place: rows of (simulated time, layer, metric, value) and every request's trace.

Timelines, tables and reports read a run from its Monitor only. The Drive hands it each request's `Trace` (it is
the Drive's `DriveMonitor`); the assembler of a run registers probes (host st_blocks of each image layer, the
guest's used bytes) and samples them when something worth plotting happened. The monitor knows neither images
nor controllers: a probe is a function returning a number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from emu.trace import Trace


@dataclass(frozen=True, slots=True)
class Row:
    """One measurement: `metric` of `layer` was `value` at simulated second `time`."""

    time: float
    layer: str
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class Served:
    """One block-layer request the Drive served, and when (simulated seconds)."""

    time: float
    trace: Trace


class Monitor:
    """Rows and request traces of one run, stamped with the run's simulated time (`clock`, seconds)."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.clock = clock
        self.rows: list[Row] = []
        self.requests: list[Served] = []
        self._probes: dict[tuple[str, str], Callable[[], float]] = {}

    # -- what the Drive calls ------------------------------------------------------------------------------------
    def request(self, trace: Trace) -> None:
        """The Drive served a request (the DriveMonitor protocol)."""
        self.requests.append(Served(self.clock(), trace))

    # -- what a run records --------------------------------------------------------------------------------------
    def record(self, layer: str, metric: str, value: float) -> Row:
        row = Row(self.clock(), layer, metric, value)
        self.rows.append(row)
        return row

    def probe(self, layer: str, metric: str, read: Callable[[], float]) -> None:
        """Sample `read()` as `metric` of `layer` at every `sample()`; a second probe of the same pair replaces
        the first (an image layer reopened)."""
        self._probes[(layer, metric)] = read

    def unprobe(self, layer: str, metric: str) -> None:
        """Stop sampling a pair (an image layer that is gone); its rows stay."""
        self._probes.pop((layer, metric), None)

    def probed(self, metric: str) -> list[str]:
        """The layers with a probe of `metric`, in the order they were registered."""
        return [layer for layer, m in self._probes if m == metric]

    def sample(self) -> list[Row]:
        """Record every probe now, in the order they were registered."""
        return [self.record(layer, metric, read()) for (layer, metric), read in self._probes.items()]

    # -- what readers ask ----------------------------------------------------------------------------------------
    def series(self, layer: str, metric: str) -> list[tuple[float, float]]:
        """(time, value) of every row of one layer and metric, in recording order."""
        return [(r.time, r.value) for r in self.rows if r.layer == layer and r.metric == metric]

    def latest(self, layer: str, metric: str) -> float | None:
        """The last value recorded for a layer and metric, or None."""
        for row in reversed(self.rows):
            if row.layer == layer and row.metric == metric:
                return row.value
        return None

    def layers(self, metric: str) -> list[str]:
        """Layers that have rows of `metric`, in order of first appearance."""
        return list(dict.fromkeys(r.layer for r in self.rows if r.metric == metric))

    def traces(self, op: str | None = None, since: int = 0) -> Iterator[Trace]:
        """Traces of served requests from index `since` on, of one operation or all."""
        for served in self.requests[since:]:
            if op is None or served.trace.op == op:
                yield served.trace
