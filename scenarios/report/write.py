"""A run's report files, written together into one directory: the two plots and the page that inlines them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from scenarios.report import plots
from scenarios.report.html import write_html

TIMELINE = "timeline.png"
MAP = "map.png"
PAGE = "report.html"


@dataclass(frozen=True)
class ReportFiles:
    timeline: str
    map: str
    html: str


def write_report(result: dict, directory: str) -> ReportFiles:
    """timeline.png, map.png and report.html of `result` in `directory` (made if missing)."""
    os.makedirs(directory, exist_ok=True)
    files = ReportFiles(*(os.path.join(directory, name) for name in (TIMELINE, MAP, PAGE)))
    plots.timeline(result, files.timeline)
    plots.map(result, files.map)
    write_html(result, files.html, {"Host allocation of every image layer over simulated time": files.timeline,
                                    "What each layer holds over the guest's address space, before and after":
                                        files.map})
    return files
