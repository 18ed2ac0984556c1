"""`emu run` and `emu explain`: a scenario (a catalog name or a TOML file) played by the simulated guest.

`emu run` prints the steps and phases, and leaves in its directory the image files, result.json and the report
(timeline.png, map.png, report.html); `--output=json` prints result.json instead. `emu explain` (emu.cli.explain)
plays it the same way.
"""

from __future__ import annotations

import json
import os
import sys

from emu.cli.common import Parser
from emu.errors import UsageError
from scenarios.play import Player
from scenarios.report.tables import summary
from scenarios.report.write import write_report
from scenarios.run import load_scenario
from scenarios.spec import catalog

RUNS_DIR = "emu-runs"       # where a run's directory is made when --out is not given


def parser(prog: str, description: str) -> Parser:
    p = Parser(prog, description)
    p.add_argument("scenario", nargs="?", help="a catalog name (see --list) or a scenario .toml file")
    p.add_argument("--list", action="store_true", help="list the catalog's scenarios and exit")
    p.add_argument("--seed", type=int, help="the run's random seed (the scenario's seed by default)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a scenario key: a path (disk.size, steps[3].size) or a short name (profile, "
                        "controller, format, discard, detect_zeroes, seed); repeatable")
    p.add_argument("--out", metavar="DIR", help=f"the run's directory (default: a new one under ./{RUNS_DIR})")
    return p


def _fresh_directory(name: str) -> str:
    for n in range(1, 10000):
        path = os.path.join(RUNS_DIR, f"{name}-{n}")
        if not os.path.exists(path):
            return path
    raise UsageError(f"./{RUNS_DIR} holds 9999 runs of '{name}': give --out")


def list_catalog() -> int:
    entries = catalog()
    width = max(len(name) for name, _ in entries)
    for name, title in entries:
        print(f"{name:<{width}}  {title}")
    return 0


class _Progress:
    """A rich progress bar on stderr for runs of many steps, when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.bar = None
        if sys.stderr.isatty() and total > 1:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.task = self.bar.add_task("steps", total=total)
            self.bar.start()

    def __call__(self, index: int, total: int, step) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=index, description=f"step {index} {step.do}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def play(args):
    """Load the scenario the arguments name and play it in its directory: (the Played run, the directory)."""
    if args.scenario is None:
        raise UsageError("give a scenario: a catalog name (emu run --list) or a .toml file")
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    scenario = load_scenario(args.scenario, overrides)
    directory = args.out or _fresh_directory(scenario.name)
    if os.path.isdir(directory) and os.listdir(directory):
        raise UsageError(f"--out {directory}: the directory is not empty")
    progress = _Progress(len(scenario.steps))
    try:
        player = Player(scenario, directory)
        try:
            played = player.play(progress)
        finally:
            player.close()
    finally:
        progress.close()
    return played, directory


def main(argv: list[str]) -> int:
    p = parser("emu run", "play a scenario on the simulated guest and write its result and report")
    p.add_argument("--output", choices=("text", "json"), default="text",
                   help="text: the tables (default); json: result.json on stdout")
    args = p.parse_args(argv)
    if args.list:
        return list_catalog()
    played, directory = play(args)
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump(played.result, f, indent=1)
        f.write("\n")
    files = write_report(played.result, directory)
    if args.output == "json":
        json.dump(played.result, sys.stdout, indent=1)
        print()
        return 0
    print(summary(played.result), end="")
    print(f"\nresult: {os.path.join(directory, 'result.json')}\nreport: {files.html}")
    return 0
