"""QEMU's qtest wire protocol (softmmu/qtest.c): one text command per line, one reply line per command.

A reply is ``OK`` with an optional value or ``FAIL`` with a reason. Lines ``IRQ raise N`` / ``IRQ lower N``
arrive asynchronously, between replies, once interrupts are intercepted; they are folded into `IrqState` so a
caller asks "is line N up, how often did it rise" instead of seeing them in a reply. Every failure (a FAIL, a
malformed or missing reply, a closed socket, a timeout) is one `QtestError`, never a hang or a traceback.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

from emu.errors import EmuError


class QtestError(EmuError):
    """QEMU refused a qtest command, answered something unexpected, went silent or went away."""


@dataclass(frozen=True)
class Command:
    """One qtest command: its arguments and what its OK carries ("" nothing, "int" a hex number, "b64" base64,
    "text" anything)."""

    name: str
    args: tuple[str, ...]
    returns: str = ""


# The command set of QEMU 7.2 softmmu/qtest.c that emu uses, as one table. clock_step/clock_set exist only under
# the qtest accelerator, which Debian's build lacks (they answer FAIL there).
COMMANDS = {c.name: c for c in (
    *(Command(f"read{w}", ("addr",), "int") for w in "bwlq"),
    *(Command(f"write{w}", ("addr", "value")) for w in "bwlq"),
    *(Command(f"in{w}", ("port",), "int") for w in "bwl"),
    *(Command(f"out{w}", ("port", "value")) for w in "bwl"),
    Command("read", ("addr", "size"), "int"),
    Command("write", ("addr", "size", "data")),
    Command("b64read", ("addr", "size"), "b64"),
    Command("b64write", ("addr", "size", "b64data")),
    Command("memset", ("addr", "size", "byte")),
    Command("irq_intercept_in", ("qom_path",)),
    Command("irq_intercept_out", ("qom_path",)),
    Command("set_irq_in", ("qom_path", "name", "num", "level")),
    Command("clock_step", (), "int"),            # the optional nanoseconds argument is passed as an extra
    Command("clock_set", ("ns",), "int"),
    Command("endianness", (), "text"),
)}


@dataclass
class IrqState:
    """What the asynchronous IRQ lines said about one interrupt-controller input: its level and how many raises."""

    level: bool = False
    raises: int = 0


@dataclass
class Reply:
    """A parsed reply line: ok, and the words after OK / FAIL."""

    ok: bool
    words: list[str] = field(default_factory=list)


def parse_line(line: str) -> tuple[str, object]:
    """One line from QEMU: ("irq", (raised, n)) or ("reply", Reply); anything else is a QtestError."""
    words = line.split()
    if not words:
        raise QtestError(f"qtest: empty line from QEMU (expected OK, FAIL or IRQ): {line!r}")
    head = words[0]
    if head == "IRQ":
        if len(words) != 3 or words[1] not in ("raise", "lower"):
            raise QtestError(f"qtest: malformed IRQ line from QEMU: {line!r}")
        try:
            n = int(words[2], 0)
        except ValueError:
            raise QtestError(f"qtest: malformed IRQ number from QEMU: {line!r}") from None
        if n < 0:
            raise QtestError(f"qtest: negative IRQ number from QEMU: {line!r}")
        return "irq", (words[1] == "raise", n)
    if head in ("OK", "FAIL"):
        return "reply", Reply(head == "OK", words[1:])
    raise QtestError(f"qtest: unexpected line from QEMU (expected OK, FAIL or IRQ): {line[:200]!r}")


def parse_int(reply: Reply, command: str) -> int:
    """The hex value of an OK reply (readl & co., read, clock_step)."""
    if len(reply.words) != 1:
        raise QtestError(f"qtest: {command}: expected one value after OK, got {' '.join(reply.words)!r}")
    try:
        return int(reply.words[0], 16) if reply.words[0].lower().startswith("0x") else int(reply.words[0], 10)
    except ValueError:
        raise QtestError(f"qtest: {command}: not a number after OK: {reply.words[0]!r}") from None


class QtestConnection:
    """The qtest chardev socket QEMU connected to: `command()` sends one line and returns its reply, folding IRQ
    lines into `irqs` on the way. `timeout` (real seconds) bounds every wait for QEMU."""

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0, who: str = "QEMU") -> None:
        self.sock = sock
        self.timeout = timeout
        self.who = who
        self.irqs: dict[int, IrqState] = {}
        self.round_trips = 0
        self._buf = b""
        self._closed = False
        self.alive = lambda: True       # the launcher installs a check that QEMU's process still runs

    # -- lines ------------------------------------------------------------------------------------------------------
    def _fill(self, wait: float) -> bool:
        """Read what QEMU sent within `wait` seconds; False when nothing came."""
        if self._closed:
            raise QtestError(f"qtest: the connection to {self.who} is closed")
        try:
            ready, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
            if not ready:
                return False
            data = self.sock.recv(65536)
        except OSError as exc:
            raise QtestError(f"qtest: reading from {self.who} failed: {exc}") from None
        if not data:
            self._closed = True
            raise QtestError(f"qtest: {self.who} closed the connection (did it exit?)")
        self._buf += data
        return True

    def _next_line(self, deadline: float | None) -> str | None:
        """The next complete line; None when `deadline` (monotonic) passes first (None deadline: do not wait)."""
        while b"\n" not in self._buf:
            wait = 0.0 if deadline is None else deadline - time.monotonic()
            if not self._fill(min(wait, 0.5)) and (deadline is None or time.monotonic() >= deadline):
                return None
            if deadline is not None and not self.alive():
                raise QtestError(f"qtest: {self.who} exited")
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return line.decode("ascii")
        except UnicodeDecodeError:
            raise QtestError(f"qtest: non-ASCII line from {self.who}: {line[:200]!r}") from None

    def _irq(self, raised: bool, n: int) -> None:
        state = self.irqs.setdefault(n, IrqState())
        if raised and not state.level:
            state.raises += 1
        state.level = raised

    def poll(self, wait: float = 0.0) -> bool:
        """Take in IRQ lines that arrived (waiting up to `wait` real seconds for the first); True if any came.
        Between commands only IRQ lines may arrive: anything else is a protocol error."""
        deadline = time.monotonic() + wait
        got = False
        while True:
            line = self._next_line(deadline if not got and wait > 0 else None)
            if line is None:
                return got
            kind, value = parse_line(line)
            if kind != "irq":
                raise QtestError(f"qtest: {self.who} sent a reply nobody asked for: {line!r}")
            self._irq(*value)
            got = True

    # -- commands ---------------------------------------------------------------------------------------------------
    def command(self, name: str, *args: int | str) -> Reply:
        """Send `name args...`; the OK reply, or QtestError for FAIL / silence / a dead QEMU."""
        if name not in COMMANDS:
            raise QtestError(f"qtest: unknown command {name!r} (known: {', '.join(sorted(COMMANDS))})")
        return self.raw(" ".join([name, *(hex(a) if isinstance(a, int) else a for a in args)]), check=True)

    def raw(self, line: str, *, check: bool = False) -> Reply:
        """Send one line verbatim and return its reply (FAIL included unless `check`)."""
        if "\n" in line:
            raise QtestError(f"qtest: a command is one line: {line!r}")
        try:
            self.sock.sendall(line.encode("ascii") + b"\n")
        except OSError as exc:
            raise QtestError(f"qtest: sending {line.split()[0]!r} to {self.who} failed: {exc}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            text = self._next_line(deadline)
            if text is None:
                raise QtestError(f"qtest: {self.who} did not answer {line[:80]!r} within {self.timeout:g} s")
            kind, value = parse_line(text)
            if kind == "irq":
                self._irq(*value)
                continue
            self.round_trips += 1
            if check and not value.ok:
                raise QtestError(f"qtest: {self.who} refused {line[:80]!r}: FAIL {' '.join(value.words)}")
            return value

    def value(self, name: str, *args: int | str) -> int:
        return parse_int(self.command(name, *args), name)

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
