"""The `emu` command: `emu img ...` (qemu-img-like), `emu io ...` (qemu-io-like), `emu replay`, `emu profiles`,
`emu run`, `emu explain`, `emu demo`.

Every deliberate failure is an EmuError and is printed as one line on stderr with a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from emu.errors import EmuError

# (name, module, one line of help): the usage text and the dispatch both come from here, in this order
COMMANDS = (
    ("img", "emu.cli.img", "create, inspect, check, compare, convert and benchmark images (like qemu-img)"),
    ("io", "emu.cli.io", "run guest I/O commands against an image through the block layer (like qemu-io)"),
    ("replay", "emu.cli.replay",
     "run a JSON Lines script of guest commands through an emulated controller (ide, ahci, virtio-*)"),
    ("profiles", "emu.cli.profiles",
     "list the device profiles (QEMU versions, the standards): every value and its source"),
    ("run", "emu.cli.run", "play a scenario (emu run --list) on the simulated guest: tables, result.json, report"),
    ("explain", "emu.cli.explain", "play a scenario and say where every byte the guest freed went, and why"),
    ("demo", "emu.cli.demo", "a short walk-through: a guest writes, deletes and discards; where does the space go?"),
)
MODULES = {name: module for name, module, _ in COMMANDS}

USAGE = "\n".join(["usage: emu <command> [args...]", "", "commands:",
                   *(f"  {name:<10}{summary}" for name, _, summary in COMMANDS),
                   "", "Run 'emu <command> --help' for the options of a command."])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 1
    command, rest = args[0], args[1:]
    if command not in MODULES:
        print(f"emu: unknown command '{command}' ({', '.join(MODULES)}; see 'emu --help')", file=sys.stderr)
        return 1
    try:
        return importlib.import_module(MODULES[command]).main(rest)
    except EmuError as exc:
        print(f"emu {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:   # the host file system failed outside a block request (e.g. disk full)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"emu {command}: host I/O error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
