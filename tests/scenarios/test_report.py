"""scenarios.report: the terminal tables, the two plots and the page of a run, from hand-made results of the
schema in docs/scenarios.md (a single qcow2 image, and a base + overlay chain)."""

from __future__ import annotations

import base64
import copy
import json
import pathlib
import re
import struct
import subprocess
import sys

import pytest
from matplotlib import image

from emu.errors import EmuError
from scenarios.report import plots
from scenarios.report.html import write_html
from scenarios.report.tables import summary
from scenarios.report.write import write_report
from tests.conftest import run

RESULTS = pathlib.Path(__file__).parent / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(params=["sample-result.json", "sample-chain-result.json"])
def result(request) -> dict:
    return load(request.param)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must begin with."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def not_blank(path) -> bool:
    pixels = image.imread(str(path))
    return bool((pixels[..., :3] < 0.9).any())


def test_the_plots_are_pngs_of_their_fixed_size_and_deterministic(tmp_path, result):
    for draw, size in ((plots.timeline, (1100, 650)), (plots.map, (1100, 500))):
        first, second = tmp_path / "a.png", tmp_path / "b.png"
        draw(result, str(first))
        draw(result, str(second))
        assert png_size(first.read_bytes()) == size
        assert first.read_bytes() == second.read_bytes()
        assert b"Software" not in first.read_bytes() and b"tIME" not in first.read_bytes()
        assert not_blank(first)


def test_the_same_result_gives_the_same_png_bytes_in_another_process(tmp_path):
    """No hash seed, font cache or configuration of this process leaks into the picture."""
    path = RESULTS / "sample-chain-result.json"
    script = ("import json, sys; from scenarios.report import plots; r = json.load(open(sys.argv[1])); "
              "plots.timeline(r, sys.argv[2]); plots.map(r, sys.argv[3])")
    here = [str(tmp_path / name) for name in ("t1.png", "m1.png")]
    there = [str(tmp_path / name) for name in ("t2.png", "m2.png")]
    result = load(path.name)
    plots.timeline(result, here[0])
    plots.map(result, here[1])
    run(sys.executable, "-c", script, str(path), *there)
    for mine, theirs in zip(here, there, strict=True):
        assert pathlib.Path(mine).read_bytes() == pathlib.Path(theirs).read_bytes()


def test_the_page_holds_every_phase_and_step_and_inlines_its_images(tmp_path, result):
    files = write_report(result, str(tmp_path / "report"))
    page = pathlib.Path(files.html).read_text()
    assert result["scenario"]["title"] in page and result["scenario"]["story"].split(":")[0] in page
    for phase in result["phases"]:
        assert f"<td>{phase['name']}</td>" in page
    for step in result["steps"]:
        assert f'<td class="num">{step["index"]}</td><td>{step["do"]}' in page
        for key, value in step["args"].items():
            assert f"{key}={value}" in page
    inlined = DATA_URI.findall(page)
    assert [base64.b64decode(data) for data in inlined] == [pathlib.Path(files.timeline).read_bytes(),
                                                         pathlib.Path(files.map).read_bytes()]
    assert ("Where the freed bytes went" in page) == ("explain" in result)


def test_the_page_refers_to_nothing_outside_itself_and_runs_no_script(tmp_path, result):
    files = write_report(result, str(tmp_path))
    page = pathlib.Path(files.html).read_text()
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    rest = DATA_URI.sub("", page).lower()
    for reference in ("http", "href", "url(", "@import", "<script", "<link", "<iframe", "<object", "//"):
        assert reference not in rest, reference


def test_every_text_of_the_result_is_escaped(tmp_path):
    result = load("sample-result.json")
    result["scenario"]["title"] = "Trim <b>now</b> & then"
    result["scenario"]["story"] = "<script>alert('x')</script> the guest's \"file\""
    result["steps"][3]["args"]["file"] = "<img src=x>"
    result["phases"][0]["name"] = "<i>formatted</i>"
    result["explain"]["by_reason"][0]["example"] = "discard </pre><script>"
    write_html(result, str(tmp_path / "page.html"), {})
    page = (tmp_path / "page.html").read_text()
    assert "<script" not in page.lower() and "<img" not in page and "<b>now" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Trim &lt;b&gt;now&lt;/b&gt; &amp; then" in page and "file=&lt;img src=x&gt;" in page


def test_a_dollar_sign_is_plain_text_in_a_plot(tmp_path):
    result = load("sample-result.json")
    result["scenario"]["title"] = r"file $\bad{x}$ name"      # mathtext would refuse it: unknown symbol
    plots.timeline(result, str(tmp_path / "t.png"))
    assert png_size((tmp_path / "t.png").read_bytes()) == (1100, 650)


def test_the_page_renders_in_headless_chromium(tmp_path, chromium):
    result = load("sample-chain-result.json")
    files = write_report(result, str(tmp_path / "report"))
    url = pathlib.Path(files.html).resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000"]
    shot = tmp_path / "page.png"
    browse(chromium, *flags, f"--screenshot={shot}", url)
    assert png_size(shot.read_bytes()) == (1200, 2000)
    assert not_blank(shot)
    assert f"<h1>{result['scenario']['title']}</h1>" in browse(chromium, *flags, "--dump-dom", url)


def browse(*cmd: str) -> str:
    """Run headless Chromium, bounded in time; its standard output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_terminal_tables_hold_every_step_and_phase_in_aligned_columns():
    result = load("sample-chain-result.json")
    before = copy.deepcopy(result)
    text = summary(result)
    assert result == before and summary(result) == text
    assert text.splitlines()[:2] == ["trim-over-backing: fstrim on an overlay over a backing file",
                                     "qcow2 256M, virtio-scsi, discard=unmap, detect-zeroes=off, ext4"]
    steps, phases = text.split("\n\nPhases\n")
    step_lines = steps.split("Steps\n")[1].splitlines()
    assert step_lines[0].split() == ["#", "step", "duration", "base.qcow2", "disk.qcow2", "guest", "used",
                                     "discard", "issued", "passed", "dropped", "output"]
    assert step_lines[5].split() == ["3", "fstrim", "offset=0", "length=128M", "70", "ms", "64.3", "MiB", "21.8",
                                     "MiB", "2.11", "MiB", "124", "MiB", "124", "MiB", "0", "B", "-"]
    start = step_lines[0].index("output")       # numbers right-aligned up to it, the outputs from it on
    assert {line[start - 3:start] for line in step_lines[2:]} == {line[start - 3] + "  " for line in step_lines[2:]}
    assert all(line[start - 3] != " " and line[start] != " " for line in step_lines[2:])
    phase_lines = phases.splitlines()
    assert [line.split()[0] for line in phase_lines[2:]] == ["(start)", "formatted", "trimmed"]
    assert "21.8 MiB (+21.6 MiB)" in phase_lines[3] and phase_lines[4].endswith("2.11 MiB")


def test_a_single_image_run_shows_its_rise_and_fall_in_the_phases():
    text = summary(load("sample-result.json"))
    for phase, host in (("formatted", "48.6 MiB (+48.4 MiB)"), ("written", "113 MiB (+64 MiB)"),
                        ("trimmed", "48.6 MiB (-64 MiB)"), ("zeros_written", "80.6 MiB (+32 MiB)"),
                        ("blkdiscarded", "324 KiB (-80.3 MiB)")):
        assert re.search(rf"^{phase} .*{re.escape(host)}", text, re.M), phase
    assert re.search(r"^ 7  fstrim .* 975 MiB  975 MiB  280 KiB  -$", text, re.M)


def test_a_result_of_another_schema_is_refused(tmp_path):
    result = load("sample-result.json")
    result["schema"] = 2
    for read in (summary, lambda r: plots.timeline(r, str(tmp_path / "t.png")),
                 lambda r: write_html(r, str(tmp_path / "p.html"), {})):
        with pytest.raises(EmuError, match="schema 2 is not 1"):
            read(result)


@pytest.mark.parametrize("length", [20, 240])
def test_a_title_of_any_length_stays_inside_the_figure(length):
    result = load("sample-result.json")
    result["scenario"]["title"] = ("a long title " * 30)[:length]
    fig = plots.figure(plots.TIMELINE_INCHES)
    plots.titles(fig, result, "host allocation over time", 0.925)
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width
