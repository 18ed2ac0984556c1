"""A real QEMU 7.2 for the qtest tests: skipped without qemu-system-x86_64 on a developer's machine, a failure
under CI=true (the oracle rule of tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import _missing


@pytest.fixture(scope="session")
def qemu_system() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        _missing("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    return path


def run(sim, generator):
    """Run one guest-driver generator on `sim` to its end; its value."""
    return sim.run(sim.process(generator))
