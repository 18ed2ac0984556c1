"""A layer talks only to its neighbours (../shared/DESIGN.md): checked on every module's imports."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

# package prefix -> imports it must not use
FORBIDDEN = {
    "images": ("emu.block", "emu.cli", "emu.bench", "controllers", "scenarios"),
    "emu.block": ("images.raw", "images.qcow2", "images.probe", "emu.cli", "controllers", "scenarios"),
    "emu.trace": ("images", "emu.block", "controllers", "scenarios"),
    "emu.errors": ("images", "emu.block", "controllers", "scenarios"),
    "emu.memory": ("images", "emu.block", "emu.sim", "emu.cli", "controllers", "scenarios"),
    "emu.sim": ("images", "emu.cli", "controllers", "scenarios"),
    "controllers": ("images", "emu.cli", "scenarios"),
    "scenarios": ("images", "emu.block"),
}


def modules():
    for package in ("emu", "images", "controllers", "scenarios"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, ast.parse(path.read_text(), str(path))


def imported(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_layer_reaches_past_its_neighbours():
    violations = []
    for name, tree in modules():
        for prefix, banned in FORBIDDEN.items():
            if name == prefix or name.startswith(prefix + "."):
                for target in imported(tree):
                    if any(target == b or target.startswith(b + ".") for b in banned):
                        violations.append(f"{name} imports {target}")
    assert violations == []
