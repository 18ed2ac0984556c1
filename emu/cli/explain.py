"""`emu explain`: play a scenario, then say for every byte the guest freed where it went: reclaimed, or the layer
that kept it and why, by reason, with an example trace for each."""

from __future__ import annotations

from emu.cli.run import list_catalog, parser, play
from scenarios.report.tables import explanation


def main(argv: list[str]) -> int:
    p = parser("emu explain", "for every byte the guest freed in a scenario, where it went, and why")
    args = p.parse_args(argv)
    if args.list:
        return list_catalog()
    played, directory = play(args)
    print(explanation(played.result), end="")
    print(f"\nthe run's files: {directory}")
    return 0
