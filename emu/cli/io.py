"""`emu io`: qemu-io's command set, run through the Drive so every request is traced.

    emu io [-f FMT] [-r] [-o OPEN_OPTIONS] [-d ignore|unmap] [--detect-zeroes off|on|unmap] [--trace]
           -c CMD ... FILE

Commands: read [-P pat] [-v] OFF LEN, write [-P pat] [-z [-u]] [-f] OFF LEN, discard OFF LEN, flush,
map. Output lines are qemu-io's. The exit status is 1 if any command failed (including a pattern
check), as qemu-io's.
"""

from __future__ import annotations

import shlex
import sys
import time

from emu.block import Completion, Drive, DriveOptions, Request
from emu.cli.common import Parser, open_for_cli, parse_options
from emu.errors import UsageError
from emu.units import parse_size


def qemu_io_size(value: float) -> str:
    """qemu-io's cvtstr: three decimals, '.000' dropped."""
    for unit, scale in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30),
                        ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            text = f"{value / scale:.3f}"
            return (text[:-4] if text.endswith(".000") else text) + " " + unit
    text = f"{value:f}"
    return (text[:-7] if text.endswith(".000000") else text) + " bytes"


class Session:
    """One open image and the commands run against it."""

    def __init__(self, drive: Drive, show_trace: bool) -> None:
        self.drive = drive
        self.show_trace = show_trace

    def run(self, line: str) -> bool:
        words = shlex.split(line)
        if not words:
            return True
        name, args = words[0], words[1:]
        handler = {"read": self.read, "write": self.write, "discard": self.discard, "flush": self.flush,
                   "map": self.map}.get(name)
        if handler is None:
            raise UsageError(f"command '{name}' not found (read, write, discard, flush, map)")
        return handler(args)

    def _submit(self, req: Request) -> tuple[Completion, float]:
        start = time.perf_counter()
        done = self.drive.execute(req)
        elapsed = time.perf_counter() - start
        if self.show_trace:
            print(done.trace)
        return done, elapsed

    def _report(self, verb: str, offset: int, length: int, elapsed: float) -> None:
        elapsed = max(elapsed, 1e-9)
        print(f"{verb} {length}/{length} bytes at offset {offset}")
        print(f"{qemu_io_size(length)}, 1 ops; {elapsed:05.2f} sec ({qemu_io_size(length / elapsed)}/sec and "
              f"{1 / elapsed:.4f} ops/sec)")

    @staticmethod
    def _range(args: list[str], command: str) -> tuple[int, int]:
        if len(args) != 2:
            raise UsageError(f"{command}: expected OFFSET LENGTH")
        return parse_size(args[0], what="offset"), parse_size(args[1], what="length")

    @staticmethod
    def _options(args: list[str], flags: str, command: str) -> tuple[dict[str, str | bool], list[str]]:
        """getopt for the per-command flags; flags with ':' take a value."""
        opts: dict[str, str | bool] = {}
        rest = list(args)
        while rest and rest[0].startswith("-") and len(rest[0]) > 1 and not rest[0][1].isdigit():
            flag = rest.pop(0)[1:]
            for i, ch in enumerate(flag):
                pos = flags.find(ch)
                if pos < 0:
                    raise UsageError(f"{command}: invalid option -- '{ch}'")
                if pos + 1 < len(flags) and flags[pos + 1] == ":":
                    value = flag[i + 1:] or (rest.pop(0) if rest else "")
                    if not value:
                        raise UsageError(f"{command}: option -{ch} needs a value")
                    opts[ch] = value
                    break
                opts[ch] = True
        return opts, rest

    @staticmethod
    def _pattern(value: str | bool) -> int:
        wrong = UsageError(f"invalid pattern '{value}': expected a byte value")
        try:
            pattern = int(str(value), 0)
        except ValueError:
            raise wrong from None
        if not 0 <= pattern <= 0xFF:
            raise wrong
        return pattern

    def read(self, args: list[str]) -> bool:
        opts, rest = self._options(args, "P:vq", "read")
        offset, length = self._range(rest, "read")
        done, elapsed = self._submit(Request.read(offset, length))
        if not done.ok:
            print(f"read failed: {done.error}")
            return False
        ok = True
        if "P" in opts:
            pattern = self._pattern(opts["P"])
            if done.data != bytes([pattern]) * length:
                print(f"Pattern verification failed at offset {offset}, {length} bytes")
                ok = False
        if opts.get("v"):
            self._dump(offset, done.data or b"")
        if not opts.get("q"):
            self._report("read", offset, length, elapsed)
        return ok

    def write(self, args: list[str]) -> bool:
        opts, rest = self._options(args, "P:zufq", "write")
        offset, length = self._range(rest, "write")
        if opts.get("u") and not opts.get("z"):
            raise UsageError("write: -u requires -z")
        if opts.get("z") and "P" in opts:
            raise UsageError("write: -z and -P cannot be specified at the same time")
        fua = bool(opts.get("f"))
        if opts.get("z"):
            req = Request.write_zeroes(offset, length, may_unmap=bool(opts.get("u")), fua=fua)
        else:
            pattern = self._pattern(opts.get("P", "0xcd"))
            req = Request.write(offset, bytes([pattern]) * length, fua=fua)
        done, elapsed = self._submit(req)
        if not done.ok:
            print(f"write failed: {done.error}")
            return False
        if not opts.get("q"):
            self._report("wrote", offset, length, elapsed)
        return True

    def discard(self, args: list[str]) -> bool:
        opts, rest = self._options(args, "q", "discard")
        offset, length = self._range(rest, "discard")
        done, elapsed = self._submit(Request.discard(offset, length))
        if not done.ok:
            print(f"discard failed: {done.error}")
            return False
        if not opts.get("q"):
            self._report("discard", offset, length, elapsed)
        return True

    def flush(self, args: list[str]) -> bool:
        done, _ = self._submit(Request.flush())
        if not done.ok:
            print(f"flush failed: {done.error}")
        return done.ok

    def map(self, args: list[str]) -> bool:
        """qemu-io map: runs allocated or not in this image alone (bdrv_is_allocated)."""
        offset, total = 0, self.drive.capacity
        while offset < total:
            allocated = None
            start = offset
            while offset < total:
                here, run = self.drive.allocated(offset, total - offset)
                if allocated is None:
                    allocated = here
                elif here != allocated:
                    break
                offset += run
            num = offset - start
            word = "    allocated" if allocated else "not allocated"
            print(f"{qemu_io_size(num)} (0x{num:x}) bytes {word} at offset {qemu_io_size(start)} (0x{start:x})")
        return True

    @staticmethod
    def _dump(offset: int, data: bytes) -> None:
        for pos in range(0, len(data), 16):
            chunk = data[pos:pos + 16]
            hexes = " ".join(f"{b:02x}" for b in chunk)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            print(f"{offset + pos:08x}:  {hexes:<47}  {text}")


def main(argv: list[str]) -> int:
    p = Parser("emu io", "Run qemu-io style commands against an image through emu's block layer.")
    p.add_argument("-c", dest="commands", action="append", default=[], help="a command; repeatable")
    p.add_argument("-f", dest="fmt", help="image format (default: probe by magic)")
    p.add_argument("-r", dest="read_only", action="store_true", help="open read-only")
    p.add_argument("-d", "--discard", dest="discard", default="unmap",
                   help="drive discard option: ignore or unmap (default unmap, as qemu-io)")
    p.add_argument("--detect-zeroes", default="off", help="drive detect-zeroes option: off, on or unmap")
    p.add_argument("-t", dest="cache", default="writeback", choices=("writeback", "unsafe", "writethrough"))
    p.add_argument("-o", dest="open_options", action="append", default=[],
                   help="format open options k=v,... (e.g. discard=virtualbox for vdi)")
    p.add_argument("--trace", action="store_true", help="print what each layer did with every request")
    p.add_argument("filename")
    a = p.parse_args(argv)
    options = DriveOptions(discard=a.discard, detect_zeroes=a.detect_zeroes, read_only=a.read_only)
    image = open_for_cli(a.filename, a.fmt, read_only=a.read_only, cache=a.cache,
                         options=parse_options(a.open_options))
    drive = Drive(image, options)
    ok = True
    try:
        session = Session(drive, a.trace)
        for command in a.commands:
            ok = session.run(command) and ok
    finally:
        drive.close()
    sys.stdout.flush()
    return 0 if ok else 1
