"""Starting a real QEMU for one controller, with emu on the other end of its qtest socket.

emu listens on a Unix socket and QEMU connects to it (``-qtest unix:PATH``), as QEMU's own libqtest does. QEMU
starts with ``-S``: Debian's build has no qtest accelerator, so the vCPUs would otherwise run SeaBIOS under TCG,
which probes and programs the very devices under test. Stopped, the machine has no firmware but emu: emu
enumerates PCI (emu.qtest.pci) and drives the device. `Qemu` is a context manager: leaving it kills QEMU and
removes the socket and its directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType

from emu.qtest.protocol import QtestConnection, QtestError

QEMU = "qemu-system-x86_64"
# The -drive id: emu's drive name, which scsi-hd reports as VPD 83h's designator (scsi_realize: blk_name()), as
# emu's disk does (ScsiDiskConfig.device_id)
DRIVE_ID = "drive0"


@dataclass(frozen=True)
class Controller:
    """How QEMU builds one of emu's controllers: its machine (and the other boards it may sit on), and the -device
    arguments for a drive id."""

    machine: str
    devices: tuple[str, ...]        # formatted with drive=<id>; extras are appended to the last one
    other_boards: tuple[str, ...] = ()


# The names are QEMU 7.2's (`qemu-system-x86_64 -device help`): the PIIX3 IDE function is built into pc, the ICH9
# AHCI function into q35 (its ports are bus ide.0..ide.5). emu's virtio driver speaks the modern interface, which
# machine types up to 2.6 switch off by default (hw_compat_2_6: disable-modern=on): it is asked for explicitly, with
# virtio-blk's SCSI passthrough off, which machine types up to 2.4 switch on and virtio 1.0 forbids.
CONTROLLERS = {
    "virtio-blk": Controller("pc", ("virtio-blk-pci,disable-modern=off,scsi=off,drive={drive}",), ("q35",)),
    "virtio-scsi": Controller("pc", ("virtio-scsi-pci,disable-modern=off,id=scsi0",
                                     "scsi-hd,bus=scsi0.0,drive={drive}"), ("q35",)),
    "ide": Controller("pc", ("ide-hd,bus=ide.0,unit=0,drive={drive}",)),
    "ahci": Controller("q35", ("ide-hd,bus=ide.0,drive={drive}",)),
}


def machine_family(machine_type: str) -> str:
    """The board a machine type builds, "pc" (i440FX + PIIX) or "q35" (Q35 + ICH9): what PCI set-up depends on."""
    if machine_type == "q35" or machine_type.startswith("pc-q35-"):
        return "q35"
    if machine_type == "pc" or machine_type.startswith("pc-i440fx-"):
        return "pc"
    raise QtestError(f"machine type {machine_type!r} is not a pc (pc-i440fx-*) or q35 (pc-q35-*) machine")


def qemu_binary(name: str = QEMU) -> str:
    """The QEMU binary's path, or a one-line QtestError naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        raise QtestError(f"{name} is not installed (Debian package qemu-system-x86)")
    return path


def _drive_options(options: dict[str, str] | None) -> str:
    return "".join(f",{key}={value}" for key, value in (options or {}).items())


class Qemu:
    """One QEMU process for `controller` over `image` (format `fmt`, -drive options such as discard=unmap or
    detect-zeroes=on), `ram_mib` of RAM, `device_options` appended to the disk's -device, on `machine_type` (by
    default the controller's board, pc or q35, at QEMU's newest version). `conn` is the qtest connection once
    entered."""

    def __init__(self, controller: str, image: str, fmt: str = "raw", *, drive: dict[str, str] | None = None,
                 device_options: dict[str, str] | None = None, ram_mib: int = 128, binary: str = QEMU,
                 machine_type: str | None = None, timeout: float = 10.0) -> None:
        if controller not in CONTROLLERS:
            raise QtestError(f"no QEMU setup for controller {controller!r} (known: {', '.join(CONTROLLERS)})")
        self.controller = CONTROLLERS[controller]
        self.machine_type = machine_type or self.controller.machine
        boards = (self.controller.machine, *self.controller.other_boards)
        if machine_family(self.machine_type) not in boards:
            raise QtestError(f"{controller} needs a {' or '.join(boards)} machine type, not {self.machine_type!r}")
        self.image = image
        self.fmt = fmt
        self.drive = drive
        self.device_options = device_options
        self.ram_mib = ram_mib
        self.binary = binary
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.conn: QtestConnection | None = None
        self._dir: str | None = None

    @property
    def machine(self) -> str:
        """The board (pc or q35), whatever its version."""
        return machine_family(self.machine_type)

    def argv(self, socket_path: str) -> list[str]:
        devices = [d.format(drive=DRIVE_ID) for d in self.controller.devices]
        devices[-1] += _drive_options(self.device_options)
        argv = [qemu_binary(self.binary), "-qtest", f"unix:{socket_path}", "-qtest-log", "/dev/null",
                "-machine", self.machine_type, "-nodefaults", "-display", "none", "-S", "-m", f"{self.ram_mib}M",
                "-drive", f"if=none,id={DRIVE_ID},file={self.image},format={self.fmt}{_drive_options(self.drive)}"]
        for device in devices:
            argv += ["-device", device]
        return argv

    def __enter__(self) -> Qemu:
        self._dir = tempfile.mkdtemp(prefix="emu-qtest-")
        path = os.path.join(self._dir, "qtest.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.1)
            argv = self.argv(path)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            sock = self._accept(listener)
        except BaseException:
            listener.close()
            self.close()
            raise
        listener.close()
        sock.setblocking(True)
        self.conn = QtestConnection(sock, timeout=self.timeout, who=f"QEMU (pid {self.proc.pid})")
        self.conn.alive = lambda: self.proc is not None and self.proc.poll() is None
        try:
            # QEMU connects before it builds the machine: the first answer says the devices were accepted
            self.conn.value("readb", 0)
        except QtestError:
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            error = self._first_error()
            self.close()
            raise QtestError(f"QEMU did not start: {error}") from None
        return self

    def exited(self) -> str | None:
        """Why QEMU is gone (its first error line, or its exit status), or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return self._first_error()

    def _first_error(self) -> str:
        if self.proc.poll() is None:
            return "it does not answer on its qtest socket"
        prefix = os.path.basename(self.binary) + ": "
        lines = [line.removeprefix(prefix) for line in self.proc.stderr.read().decode(errors="replace").splitlines()]
        errors = [line for line in lines if line.strip() and not line.startswith("warning: ")]
        return errors[0] if errors else f"exit status {self.proc.returncode}"

    def _accept(self, listener: socket.socket) -> socket.socket:
        """Wait for QEMU to connect; if it exits first, its first error line is the message."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                sock, _ = listener.accept()
                return sock
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise QtestError(f"QEMU did not start: {self._first_error()}")
        raise QtestError(f"QEMU did not connect to its qtest socket within {self.timeout:g} s")

    def close(self) -> None:
        """Stop QEMU with SIGTERM (its clean shutdown flushes the drive: qcow2 metadata caches included), SIGKILL
        if it lingers, reap it, remove the socket directory."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(self.timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
