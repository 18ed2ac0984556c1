"""Shared fixtures: the qemu-img/qemu-io oracle, hypothesis profiles, small helpers."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev"))


def _missing(message: str) -> None:
    """An absent oracle skips on a developer's machine and fails under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; with CI=true a missing oracle is a failure, not a skip")
    pytest.skip(message)


def _need(tool: str, package: str = "qemu-utils") -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/sbin:/usr/sbin")
    if path is None:
        _missing(f"{tool} is not installed (Debian package {package})")
    return path


def oracle_module(name: str, package: str):
    """Import an independent reader used as a test oracle (a test-only extra of pyproject.toml)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"{name} is not importable (pip install {package}, or the project's [test] extra)")


@pytest.fixture(scope="session")
def qemu_img() -> str:
    return _need("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    return _need("qemu-io")


@pytest.fixture(scope="session")
def e2fsprogs() -> dict[str, str]:
    """The real mke2fs, dumpe2fs and debugfs: the oracle of the ext4 model's layout."""
    return {tool: _need(tool, "e2fsprogs") for tool in ("mke2fs", "dumpe2fs", "debugfs")}


@pytest.fixture(scope="session")
def ntfs3g() -> dict[str, str]:
    """ntfs-3g's mkntfs and ntfsinfo: the oracle of the NTFS model's layout."""
    return {tool: _need(tool, "ntfs-3g") for tool in ("mkntfs", "ntfsinfo")}


@pytest.fixture(scope="session")
def mkfs_fat() -> str:
    """dosfstools' mkfs.fat: the oracle of the FAT32 model's layout."""
    return _need("mkfs.fat", "dosfstools")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium: a run report's page must render."""
    return _need("chromium", "chromium")


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; fail the test with its stderr when check is set."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
