"""Each machine type a hypervisor profile names, booted on the real QEMU: every guest-visible fact of the disk
(scenarios.machine_facts: IDENTIFY, virtio features, configuration space and queues, INQUIRY, VPD pages, READ
CAPACITY, mode pages) must be the profile's, as emu's device built from the profile shows them.

A profile of another QEMU release than the installed binary (qemu-8.2 on Debian's 7.2) is skipped, saying so; a
standard (strict) names no machine."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

import images
from emu.qtest.qemu import CONTROLLERS
from scenarios.machine_facts import read_facts, report
from scenarios.profiles import NAMES, get_profile
from scenarios.run import guest_run, qemu_run, two_copies

pytestmark = pytest.mark.qemu

CASES = [(name, machine_type, controller)
         for name in NAMES if get_profile(name).machines is not None
         for board, types in get_profile(name).machines.boards.items() for machine_type in types
         for controller, setup in CONTROLLERS.items() if board in (setup.machine, *setup.other_boards)]


def _version(binary: str) -> str:
    """The binary's QEMU release, "7.2" of "QEMU emulator version 7.2.22 (...)"."""
    words = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.split()
    return ".".join(words[words.index("version") + 1].split(".")[:2])


@pytest.mark.parametrize("profile, machine_type, controller", CASES)
def test_machine_type_shows_the_profiles_facts(qemu_system, profile, machine_type, controller):
    machines = get_profile(profile).machines
    if _version(qemu_system) != machines.qemu:
        pytest.skip(f"{profile} describes QEMU {machines.qemu}'s machine types; the installed binary is QEMU "
                    f"{_version(qemu_system)}")
    with tempfile.TemporaryDirectory(prefix="emu-machine-types-") as directory:
        image = os.path.join(directory, "disk.raw")
        images.create_image(image, "raw", 64 << 20, {})
        with two_copies(image, ("emu", "qemu")) as (ours, theirs):
            with guest_run(ours, controller, profile, "raw") as run:
                emu_facts = read_facts(run.machine)
            with qemu_run(theirs, controller, "raw", machine_type=machine_type, binary=qemu_system) as machine:
                qemu_facts = read_facts(machine)
    found = report(emu_facts, qemu_facts)
    assert not found, "\n".join(
        [f"{profile} against QEMU {machine_type}, {controller} (emu / qemu):", *found])


def test_every_hypervisor_profile_but_the_standard_names_machine_types():
    named = {name for name in NAMES if get_profile(name).machines is not None}
    assert named == set(NAMES) - {"strict"}
    assert {case[0] for case in CASES} == named
