"""The `emu` command: `emu img ...` (qemu-img-like), `emu io ...` (qemu-io-like), `emu replay`, `emu profiles`,
`emu demo`.

Every deliberate failure is an EmuError and is printed as one line on stderr with a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from emu.errors import EmuError

USAGE = """usage: emu <command> [args...]

commands:
  img       create, inspect, check, compare, convert and benchmark images (like qemu-img)
  io        run guest I/O commands against an image through the block layer (like qemu-io)
  replay    run a JSON Lines script of guest commands through an emulated controller (ide, ahci, virtio-*)
  profiles  list the device profiles (QEMU versions, the standards): every value and its source
  demo      a short walk-through: a guest writes, deletes and discards; where does the space go?

Run 'emu <command> --help' for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 1
    command, rest = args[0], args[1:]
    try:
        if command == "img":
            from emu.cli.img import main as run
        elif command == "io":
            from emu.cli.io import main as run
        elif command == "demo":
            from emu.cli.demo import main as run
        elif command == "replay":
            from emu.cli.replay import main as run
        elif command == "profiles":
            from emu.cli.profiles import main as run
        else:
            print(f"emu: unknown command '{command}' (img, io, replay, profiles, demo; see 'emu --help')",
                  file=sys.stderr)
            return 1
        return run(rest)
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
