"""Fixtures of the fuzz tests: fresh qcow2 files made by qemu-img (the format's reference writer)."""

from __future__ import annotations

import os

import pytest
from qcow2_fuzz_support import qemu_img_run


@pytest.fixture
def make_qcow2(tmp_path, qemu_img):
    """make_qcow2(name="disk.qcow2", size="64M", *extra_create_args) -> absolute path, made by
    `qemu-img create -f qcow2` in tmp_path (so relative backing names resolve there)."""

    def make(name: str = "disk.qcow2", size: str = "64M", *args: str) -> str:
        qemu_img_run(qemu_img, "create", "-q", "-f", "qcow2", *args, name, size, cwd=str(tmp_path))
        return os.path.join(str(tmp_path), name)

    return make
