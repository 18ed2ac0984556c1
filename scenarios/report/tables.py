"""The terminal view of a run: its steps and phases as monospace tables, a pure function of the result that
`emu run` prints."""

from __future__ import annotations

from emu.units import human_size
from scenarios.report.rows import Table, check, created_table, headline, phases_table, steps_table

GAP = "  "


def layout(table: Table) -> list[str]:
    """The table as lines: columns as wide as their widest cell, numbers right-aligned, a rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(table.headers, *table.rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return GAP.join(cell.rjust(width) if numeric else cell.ljust(width)
                        for cell, width, numeric in zip(cells, widths, table.numeric, strict=True)).rstrip()

    return [line(table.headers), GAP.join("-" * width for width in widths)] + [line(row) for row in table.rows]


def summary(result: dict) -> str:
    """The run's title and settings, its images as created, its steps, then its phases (host bytes of every image
    layer), as text."""
    check(result)
    scenario = result["scenario"]
    lines = [f"{scenario['name']}: {scenario['title']}", headline(result), ""]
    created = created_table(result)
    if created.rows:
        lines += ["Images as created"] + layout(created) + [""]
    lines += ["Steps"] + layout(steps_table(result)) + ["", "Phases"] + layout(phases_table(result))
    return "\n".join(lines) + "\n"


def explanation(result: dict) -> str:
    """Where the freed bytes went: the total, then each reason with its bytes and an example trace."""
    check(result)
    explained = result["explain"]
    lines = [f"{result['scenario']['name']}: {headline(result)}",
             f"The guest freed {human_size(explained['freed_bytes'])}."]
    for entry in explained["by_reason"]:
        lines.append(f"\n{human_size(entry['bytes']):>10}  {entry['text']}")
        lines += ["            " + line for line in entry["example"].splitlines()]
    return "\n".join(lines) + "\n"
