"""`emu profiles [NAME]`: every device profile, per device family, with each value and the source it was read from."""

from __future__ import annotations

from emu.cli.common import Parser
from scenarios.profiles import NAMES, describe


def main(argv: list[str]) -> int:
    p = Parser("emu profiles", "List the device profiles: what each models, every value and its source.")
    p.add_argument("name", nargs="?", help=f"one profile: {', '.join(NAMES)} (default: all)")
    a = p.parse_args(argv)
    print(describe(a.name))
    return 0
