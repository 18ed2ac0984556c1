"""The run's two pictures, drawn with matplotlib's Agg canvas (no display): the host allocation of every image
layer over simulated time, and each layer's map of the guest's address space before and after the steps.

Both figures have a fixed size and resolution, use matplotlib's default style whatever the user's configuration,
and are saved without a Software stamp: the same result gives the same PNG, byte for byte."""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib import rc_context, style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from emu.units import GiB, KiB, MiB
from scenarios.report.rows import HOST_BYTES, check, headline, layers, size

DPI = 100
TIMELINE_INCHES = (11.0, 6.5)
MAP_INCHES = (11.0, 5.0)
TITLE_CHARS = 100
# Plain text everywhere: a '$' in a title or a file name is not the start of a formula.
RC = {"text.parse_math": False, "font.size": 9}
UNITS = ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"), (1, "bytes"))
KINDS = {  # map run kind -> (colour, legend text); drawn in this order, so data is never hidden under the others
    "unallocated": ("#e3e3e3", "unallocated here (the layer below shows, or zeros)"),
    "zero": ("#f2b134", "zero (reads as zeros, no data stored)"),
    "data": ("#2b6cb0", "data (stored in this layer)"),
}
PHASE_COLOURS = ("#dbeafe", "#fde2cf", "#dcfce7", "#f3e8ff", "#fef9c3", "#fce7f3")
STEP_LINE = "#b0b0b0"


def unit_for(largest: float) -> tuple[int, str]:
    """The binary unit an axis counts in: the largest one the axis spans at least four of (a 1 GiB disk in MiB,
    ticks at 0, 200, ... 1000 rather than 0.2 GiB)."""
    return next(((scale, name) for scale, name in UNITS if largest >= 4 * scale), UNITS[-1])


@dataclass(frozen=True)
class Label:
    x: float           # where the label is anchored (data units)
    text: str
    centre: bool       # centred on x, or starting at x


def place(ax: Axes, labels: list[Label], fontsize: float, *, bold: bool = False) -> None:
    """Write labels into horizontal lanes of `ax` (lane 0 at the top) so that no two overlap, each in the first
    lane where it fits, kept inside the axes, which grow as tall as the lanes. The axes' x limits must be final:
    widths are measured by the renderer. A plain label gets a white ground, so the marks it crosses stay behind
    it."""
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    left_edge, right_edge = ax.get_xlim()
    pad = (right_edge - left_edge) * 0.012
    lane_ends: list[float] = []
    texts = []
    for label in labels:
        text = ax.text(label.x, 0, label.text, fontsize=fontsize, fontweight="bold" if bold else "normal",
                       va="center", ha="center" if label.centre else "left", clip_on=False, zorder=3,
                       bbox=None if bold else {"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85})
        box = text.get_window_extent(renderer)
        width = to_data.transform((box.x1, 0))[0] - to_data.transform((box.x0, 0))[0]
        if label.centre:
            start = max(left_edge, min(label.x - width / 2, right_edge - width))
        else:       # just right of its mark, or just left of it where the axes end
            start = label.x + pad / 3 if label.x + pad / 3 + width <= right_edge else label.x - pad / 3 - width
        text.set_x(start)
        text.set_horizontalalignment("left")
        lane = next((i for i, end in enumerate(lane_ends) if end + pad < start), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(0.0)
        lane_ends[lane] = start + width
        texts.append((text, lane))
    for text, lane in texts:
        text.set_y(lane)
    ax.set_ylim(max(len(lane_ends), 1) - 0.4, -0.6)


def band(ax: Axes, name: str) -> None:
    """A strip of labels above or below a plot: no frame, no ticks, its name on the left."""
    ax.set_yticks([])
    ax.tick_params(axis="x", length=0, labelbottom=False)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontweight="bold")


def figure(inches: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend, no window."""
    fig = Figure(figsize=inches, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def titles(fig: Figure, result: dict, what: str, below: float) -> None:
    """The scenario's title and what the picture shows, and under it (at height `below`) the settings line."""
    text = f"{result['scenario']['title']}: {what}"
    # 13 pt holds about TITLE_CHARS characters across the figure; a longer title gets smaller, not cut off
    fig.suptitle(text, fontsize=min(13.0, 13.0 * TITLE_CHARS / len(text)), fontweight="bold")
    fig.text(0.5, below, f"{result['scenario']['name']}  ·  {headline(result)}", ha="center", fontsize=9,
             color="#444444")


def save(fig: Figure, path: str) -> None:
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def timeline(result: dict, path: str) -> None:
    """Host allocation of every layer over simulated time: a step line per layer, each step's start as a light
    vertical line labelled with its number and `do`, each phase shaded and named under the plot, and the value
    of every layer where a phase ended."""
    check(result)
    names = layers(result)
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for time, layer, metric, value in result["timeline"]:
        if metric == HOST_BYTES:
            series.setdefault(layer, []).append((time, value))
    end = max([step["end"] for step in result["steps"]] + [time for points in series.values() for time, _ in points]
              + [0.0])
    end = end or 1.0
    scale, unit = unit_for(max([value for points in series.values() for _, value in points] + [1]))
    with style.context("default", after_reset=True), rc_context(RC):
        fig = figure(TIMELINE_INCHES)
        fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.09)
        grid = fig.add_gridspec(3, 1, height_ratios=(1.4, 5.0, 0.6), hspace=0.06)
        steps_ax = fig.add_subplot(grid[0])
        ax = fig.add_subplot(grid[1], sharex=steps_ax)
        phases_ax = fig.add_subplot(grid[2], sharex=ax)
        ax.set_xlim(0, end * 1.04)      # room on the right for the last labels
        titles(fig, result, "host allocation over time", 0.925)

        begin = 0.0
        for i, phase in enumerate(result["phases"]):
            colour = PHASE_COLOURS[i % len(PHASE_COLOURS)]
            for target in (ax, phases_ax):
                target.axvspan(begin, phase["time"], color=colour, alpha=0.55 if target is ax else 1.0, lw=0)
            begin = phase["time"]
        for step in result["steps"]:
            for target in (steps_ax, ax):
                target.axvline(step["start"], color=STEP_LINE, lw=0.7, zorder=1)

        for name, points in series.items():
            points = points or [(0.0, 0.0)]
            times = [time for time, _ in points] + [end]
            values = [value / scale for _, value in points] + [points[-1][1] / scale]
            role = "the guest writes here" if name == names[-1] else "backing file"
            line, = ax.step(times, values, where="post", lw=2, zorder=3, label=f"{name} ({role})")
            for phase in result["phases"]:
                if name in phase["layers"]:
                    ax.plot(phase["time"], phase["layers"][name] / scale, "o", color=line.get_color(), ms=4,
                            zorder=4)
        ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.12)
        ax.set_ylabel(f"host allocation ({unit})")
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.tick_params(axis="x", labelbottom=False)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)

        band(steps_ax, "steps")
        place(steps_ax, [Label(step["start"], f"{step['index']} {step['do']}", False) for step in result["steps"]],
              7)
        band(phases_ax, "phases")
        phases_ax.tick_params(axis="x", length=3, labelbottom=True)
        phases_ax.spines["bottom"].set_visible(True)
        starts = [0.0] + [phase["time"] for phase in result["phases"]]
        place(phases_ax, [Label((begin + phase["time"]) / 2, phase["name"], True)
                          for begin, phase in zip(starts, result["phases"], strict=False)], 8, bold=True)
        phases_ax.set_xlabel("simulated time (s)")
        save(fig, path)


def map(result: dict, path: str) -> None:     # the picture of `emu img map`; shadows the builtin in this module
    """Each layer's runs of data, zero and unallocated over the guest's address space, before the first step and
    after the last: one bar per layer, the top of the chain on top, its totals beside its name."""
    check(result)
    names = layers(result)
    maps = result["maps"]
    disk = max([offset + length for layer_map in maps.values() for runs in layer_map.values()
                for offset, length, _kind in runs] + [1])
    scale, unit = unit_for(disk)
    with style.context("default", after_reset=True), rc_context(RC):
        fig = figure(MAP_INCHES)
        fig.subplots_adjust(left=0.2, right=0.97, top=0.83, bottom=0.2, hspace=0.55)
        titles(fig, result, "what each layer holds", 0.9)
        panels = fig.subplots(2, 1, sharex=True)
        for ax, (moment, title) in zip(panels, (("before", "before the first step"), ("after", "after the last step")),
                                       strict=True):
            runs_of = maps.get(moment, {})
            ticks = []
            for y, name in enumerate(names):
                runs = runs_of.get(name, [])
                for kind, (colour, _legend) in KINDS.items():
                    bars = [(offset / scale, length / scale) for offset, length, run_kind in runs if run_kind == kind]
                    # an edge of the fill colour keeps runs narrower than a pixel visible
                    ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=colour, edgecolors=colour, linewidth=0.6)
                totals = ", ".join(f"{size(sum(r[1] for r in runs if r[2] == kind))} {kind}"
                                   for kind in ("data", "zero"))
                ticks.append(f"{name}\n{totals}" if runs else f"{name}\n(no map)")
            ax.set_yticks(range(len(names)), ticks, fontsize=8)
            ax.set_ylim(-0.6, len(names) - 0.4)
            ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
            ax.set_xlim(0, disk / scale)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        panels[-1].set_xlabel(f"guest offset ({unit})")
        fig.legend(handles=[Patch(facecolor=colour, label=legend) for colour, legend in reversed(KINDS.values())],
                   loc="lower center", ncol=3, frameon=False, fontsize=9)
        save(fig, path)
