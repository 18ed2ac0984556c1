"""Fixtures shared by the crash-consistency tests."""

from __future__ import annotations

import pytest
from crash_support import Tools


@pytest.fixture
def tools(qemu_img, qemu_io) -> Tools:
    return Tools(qemu_img, qemu_io)
