"""The run's page: one self-contained HTML file (images inlined as data URIs, CSS inline, no script, no reference
to anything outside it), readable without its CSS too. Every text from the result is escaped."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from html import escape

from emu.units import human_size
from scenarios.report.rows import Table, check, created_table, headline, phases_table, steps_table

NUM = ' class="num"'
SECTIONS = {"machine": "Machine", "disk": "Disk", "drive": "Drive", "fs": "File system"}
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #1a1a1a;
       line-height: 1.45; }
h1 { margin-bottom: 0.1em; }
.sub { color: #555; margin-top: 0; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d4d4d4; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f1f5f9; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.settings { display: flex; flex-wrap: wrap; gap: 0 2em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e2e2e2; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def cells(table: Table) -> str:
    """A Table as an HTML table, numbers right-aligned by class."""
    def row(tag: str, values: tuple[str, ...]) -> str:
        return "<tr>" + "".join(f"<{tag}{NUM if numeric else ''}>{escape(value)}</{tag}>"
                                for value, numeric in zip(values, table.numeric, strict=True)) + "</tr>"

    body = "\n".join(row("td", values) for values in table.rows)
    return f"<table>\n<thead>{row('th', table.headers)}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def settings(result: dict) -> str:
    """The run's settings, a table per section (machine, disk, drive, file system, the rest); step keys are left
    to the steps table."""
    groups: dict[str, list[tuple[str, str]]] = {title: [] for title in SECTIONS.values()}
    for key, value in result["scenario"].get("settings", {}).items():
        section, _, name = key.partition(".")
        if section == "steps" or section.startswith("steps["):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        groups.setdefault(SECTIONS.get(section, "Run"), []).append((name if section in SECTIONS else key, text))
    tables = []
    for title, pairs in groups.items():
        if pairs:
            rows = "\n".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in pairs)
            tables.append(f"<div><h3>{escape(title)}</h3>\n<table>\n{rows}\n</table></div>")
    return '<div class="settings">\n' + "\n".join(tables) + "\n</div>"


def figures(images: Mapping[str, str]) -> str:
    """Each PNG inlined as a data URI, its caption as alt text and under it."""
    parts = []
    for caption, path in images.items():
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    return "\n".join(parts)


def explanation(explain: dict) -> str:
    """Where the bytes the guest freed went, by reason, each with the trace of one request as an example."""
    freed = explain.get("freed_bytes", 0)
    rows, examples = [], []
    for item in explain.get("by_reason", []):
        share = f"{100 * item['bytes'] / freed:.1f} %" if freed else "-"
        rows.append(f'<tr><td>{escape(item["reason"])}</td><td class="num">{escape(human_size(item["bytes"]))}</td>'
                    f'<td class="num">{escape(share)}</td></tr>')
        if item.get("example"):
            examples.append(f"<h3>Example: {escape(item['reason'])}</h3>\n<pre>{escape(item['example'])}</pre>")
    return (f"<p>The guest freed {escape(human_size(freed))}. Where it went:</p>\n<table>\n"
            '<thead><tr><th>reason</th><th class="num">bytes</th><th class="num">share</th></tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>\n" + "\n".join(examples))


def page(result: dict, images: Mapping[str, str]) -> str:
    check(result)
    scenario = result["scenario"]
    about = (scenario["name"], headline(result), f"seed {scenario.get('seed', 1)}", scenario.get("file"))
    story = "".join(f"<p>{escape(paragraph.strip())}</p>\n"
                    for paragraph in (scenario.get("story") or "").split("\n\n") if paragraph.strip())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="utf-8">\n<title>{escape(scenario["title"])}</title>\n<style>{CSS}</style>\n</head>',
        "<body>",
        f"<h1>{escape(scenario['title'])}</h1>",
        f'<p class="sub">{escape(" · ".join(str(part) for part in about if part))}</p>',
        story,
        "<h2>Settings</h2>", settings(result),
        "<h2>Images as created</h2>",
        "<p>Each image file before the guest boots: the size the guest sees, the file's length, its host bytes, "
        "what creating it wrote (preallocation) and the time that takes in the latency model.</p>",
        cells(created_table(result)),
        "<h2>Phases</h2>",
        "<p>The host bytes of every image layer (base first; the guest writes to the last) when each phase ended, "
        "with the change since the phase before, and the bytes the guest's file system had in use.</p>",
        cells(phases_table(result)),
        "<h2>Pictures</h2>", figures(images),
        "<h2>Steps</h2>",
        "<p>Each step's simulated duration, the host bytes of every layer when it ended, the requests the Drive "
        "served during it, the discards the guest issued and the Drive passed on or dropped, and what the step "
        "reported.</p>",
        cells(steps_table(result, with_requests=True)),
    ]
    if result.get("explain"):
        parts += ["<h2>Where the freed bytes went</h2>", explanation(result["explain"])]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(result: dict, path: str, images: Mapping[str, str]) -> None:
    """Write the page of `result` to `path`, with `images` (caption -> PNG file) inlined."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page(result, images))
