"""The error rule, kept: every exception the project defines is an EmuError, or a private signal its own module
raises and catches (a protocol outcome carried out of deep validation), so only EmuErrors cross a module."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def exception_classes():
    """(module path, class name, base names) of every class deriving from a builtin exception."""
    builtin = {"Exception", "BaseException", "ValueError", "RuntimeError", "KeyError", "TypeError", "OSError",
               "LookupError", "ArithmeticError"}
    for package in ("emu", "images", "controllers", "scenarios"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                    if bases & builtin:
                        yield path, node.name, tree


def test_only_emu_error_derives_from_a_builtin_exception_or_the_signal_stays_in_its_module():
    outside = []
    for path, name, tree in exception_classes():
        if name == "EmuError":
            continue
        caught_here = any(isinstance(n, ast.ExceptHandler) and isinstance(n.type, ast.Name) and n.type.id == name
                          for n in ast.walk(tree))
        if not (name.startswith("_") and caught_here):
            outside.append(f"{path.relative_to(ROOT)}: {name}")
    assert outside == []


def test_driver_failures_are_emu_errors():
    from controllers.drivers.ahci import AhciDriverError
    from controllers.drivers.sd import SdError
    from controllers.drivers.virtio_pci import VirtioDriverError
    from emu.errors import DriverError, DriverLayoutError, EmuError

    assert all(issubclass(e, DriverError) for e in (AhciDriverError, SdError, VirtioDriverError, DriverLayoutError))
    assert issubclass(DriverError, EmuError)
