"""The qtest connection: the reply parser (fuzzed), IRQ lines folded into state, and every failure one
QtestError, against a fake peer and against the real QEMU."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.errors import EmuError
from emu.qtest.protocol import COMMANDS, QtestConnection, QtestError, parse_int, parse_line
from emu.qtest.qemu import Qemu


# -- the parser -------------------------------------------------------------------------------------------------------
def test_lines_parse_to_replies_and_irq_events():
    assert parse_line("IRQ raise 10") == ("irq", (True, 10))
    assert parse_line("IRQ lower 0x3") == ("irq", (False, 3))
    kind, reply = parse_line("OK 0x0000000000001234")
    assert kind == "reply" and reply.ok and parse_int(reply, "readl") == 0x1234
    kind, reply = parse_line("FAIL Unknown command 'x'")
    assert kind == "reply" and not reply.ok


@pytest.mark.parametrize("line", ["", "IRQ", "IRQ raise", "IRQ up 3", "IRQ raise x", "IRQ raise -1", "HELLO"])
def test_malformed_lines_are_qtest_errors(line):
    with pytest.raises(QtestError):
        parse_line(line)


@given(st.text(max_size=80))
def test_any_line_parses_or_is_one_qtest_error(line):
    try:
        kind, value = parse_line(line)
    except QtestError as exc:
        assert str(exc).startswith("qtest: ")
        return
    assert kind in ("irq", "reply")
    if kind == "reply":
        try:
            parse_int(value, "readl")
        except QtestError:
            pass


def test_the_table_names_the_commands_and_qtest_error_is_an_emu_error():
    assert {"readb", "readq", "writel", "inb", "outl", "read", "write", "b64read", "b64write", "memset",
            "irq_intercept_in", "irq_intercept_out", "clock_step", "clock_set"} <= set(COMMANDS)
    assert issubclass(QtestError, EmuError)


# -- a fake QEMU on a socket pair --------------------------------------------------------------------------------------
def _peer(script):
    """A connection whose other end answers each line from `script` (a list of byte strings, one per command)."""
    ours, theirs = socket.socketpair()

    def serve():
        f = theirs.makefile("rb")
        for answer in script:
            if not f.readline():
                return
            if answer is None:          # hang up
                break
            theirs.sendall(answer)
        theirs.close()

    threading.Thread(target=serve, daemon=True).start()
    return QtestConnection(ours, timeout=0.5, who="fake")


def test_irq_lines_before_a_reply_are_events_with_levels_and_raise_counts():
    conn = _peer([b"IRQ raise 10\nIRQ lower 10\nIRQ raise 10\nOK 0x5\n", b"IRQ raise 10\nOK\n"])
    assert conn.value("readl", 0x1000) == 5
    assert conn.irqs[10].level and conn.irqs[10].raises == 2
    conn.command("writel", 0, 0)
    assert conn.irqs[10].raises == 2        # a raise of a raised line is no new edge


def test_a_fail_reply_a_malformed_reply_a_hang_up_and_silence_are_qtest_errors():
    conn = _peer([b"FAIL nope\n", b"WHAT\n", b"", None])
    with pytest.raises(QtestError, match="refused 'readl 0x0': FAIL nope"):
        conn.command("readl", 0)
    with pytest.raises(QtestError, match="unexpected line"):
        conn.command("readl", 0)
    start = time.monotonic()
    with pytest.raises(QtestError, match="did not answer"):
        conn.command("readl", 0)
    assert time.monotonic() - start < 2
    with pytest.raises(QtestError, match="closed the connection"):
        conn.command("readl", 0)
    with pytest.raises(QtestError, match="unknown command"):
        conn.command("reboot")


# -- the real QEMU ----------------------------------------------------------------------------------------------------
@pytest.mark.qemu
def test_real_qemu_answers_unmapped_reads_with_all_ones_or_zero_and_bad_commands_with_fail(qemu_system, tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    with Qemu("virtio-blk", str(image)) as qemu:
        conn = qemu.conn
        assert conn.value("readl", 0xE0000000) in (0, 0xFFFFFFFF)      # nothing mapped there yet
        reply = conn.raw("no_such_command 1")
        assert not reply.ok and reply.words[:2] == ["Unknown", "command"]
        with pytest.raises(QtestError, match="FAIL"):
            conn.command("clock_step")          # Debian's QEMU has no qtest accelerator, so no clock commands
        conn.command("write", 0x100000, 4, "0x01020304")
        assert conn.value("readl", 0x100000) == 0x04030201
        start, n = time.perf_counter(), 200
        for _ in range(n):
            conn.value("readl", 0x100000)
        assert (time.perf_counter() - start) / n < 0.01     # a round trip is tens of microseconds


@pytest.mark.qemu
def test_qemu_dying_is_one_qtest_error(qemu_system, tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    with Qemu("virtio-blk", str(image)) as qemu:
        qemu.proc.kill()
        qemu.proc.wait()
        with pytest.raises(QtestError):
            qemu.conn.value("readl", 0)


@pytest.mark.qemu
def test_a_missing_binary_or_a_bad_device_option_is_one_line(qemu_system, tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    with pytest.raises(QtestError, match="not installed"):
        with Qemu("virtio-blk", str(image), binary="qemu-system-nonesuch"):
            pass
    with pytest.raises(QtestError, match="QEMU did not start") as info:
        with Qemu("virtio-blk", str(image), device_options={"no-such-property": "1"}):
            pass
    assert "\n" not in str(info.value)
    with pytest.raises(QtestError, match="no QEMU setup"):
        Qemu("floppy", str(image))


@given(st.lists(st.sampled_from([b"IRQ raise 3\n", b"IRQ lower 3\n", b"IRQ raise 11\n"]), max_size=6),
       st.integers(0, 2**64 - 1), st.integers(1, 7))
def test_replies_split_anywhere_across_reads_still_parse_with_irq_lines_interleaved(irqs, value, chunk):
    """QEMU's bytes may arrive in any pieces: the connection reassembles lines and keeps IRQ state exact."""
    stream = b"".join(irqs) + f"OK 0x{value:016x}\n".encode()
    ours, theirs = socket.socketpair()

    def serve():
        theirs.makefile("rb").readline()
        for i in range(0, len(stream), chunk):
            theirs.sendall(stream[i:i + chunk])
        theirs.close()

    threading.Thread(target=serve, daemon=True).start()
    conn = QtestConnection(ours, timeout=2.0, who="fake")
    assert conn.value("readq", 0) == value
    for n in (3, 11):
        events = [line.split()[1] for line in b"".join(irqs).decode().splitlines() if line.endswith(f" {n}")]
        level, raises = False, 0
        for event in events:
            raises += event == "raise" and not level
            level = event == "raise"
        state = conn.irqs.get(n)
        assert (state.level, state.raises) == (level, raises) if state else not events
    conn.close()
