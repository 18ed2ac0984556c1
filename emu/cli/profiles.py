"""`emu profiles [NAME]`: every device profile, per device family, with each value and the source it was read from;
a guest profile (the Linux drivers' own limits) by name."""

from __future__ import annotations

from emu.cli.common import Parser
from scenarios.profiles import GUEST_NAMES, NAMES, describe


def main(argv: list[str]) -> int:
    p = Parser("emu profiles", "List the device profiles: what each models, every value and its source.")
    p.add_argument("name", nargs="?", help=f"one profile: {', '.join(NAMES + GUEST_NAMES)} (default: all device "
                                           "profiles, and the guest profiles' names)")
    a = p.parse_args(argv)
    print(describe(a.name))
    return 0
