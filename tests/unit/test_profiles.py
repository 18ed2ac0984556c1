"""ATA device profiles: each builds a valid IDENTIFY page with its sourced values; the drive-facts helper."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from controllers.ahci_config import AhciConfig
from controllers.ata import AtaDevice, AtaRegisters, build_identify, parse_identify
from controllers.ata import layouts as L
from emu.block import Drive, DriveOptions
from emu.errors import UsageError
from images import create_image, open_image
from scenarios.profiles import (
    FROM_DRIVE,
    Fact,
    Profile,
    UnknownProfile,
    describe,
    get_profile,
)
from scenarios.profiles.ata import PROFILE_FIELDS, PROFILES
from scenarios.profiles.registry import FAMILY_NAMES, sections

SECTORS = 32768                                     # 16 MiB
NAMES = ("qemu-7.2", "qemu-8.2", "qemu-1.4-pc", "strict")


def words(page: bytes) -> tuple[int, ...]:
    return struct.unpack("<256H", page)


def identify(name, controller="ide", rzat=None, sectors=SECTORS):
    config = get_profile(name).ata_config(sectors, controller, read_zeroes_after_trim=rzat)
    page = build_identify(config)
    return config, page, words(page), parse_identify(page)


def test_registry_ships_the_three_profiles():
    assert tuple(PROFILES) == NAMES
    assert all(get_profile(name) is PROFILES[name] for name in NAMES)


# name, controller, rzat -> words 169, 69, 105, whether word 255 carries the integrity signature
@pytest.mark.parametrize("name, rzat, w169, w69, w105, integrity", [
    ("qemu-7.2", None, 1, 0x4000, 0, False),
    ("qemu-7.2", True, 1, 0x4000, 0, False),        # QEMU never sets RZAT, whatever the drive does
    ("qemu-1.4-pc", None, 0, 0x0000, 0, False),
    ("qemu-1.4-pc", True, 0, 0x0000, 0, False),
    ("strict", None, 1, 0x4000, 1, True),           # unknown drive: no promise of zeros
    ("strict", False, 1, 0x4000, 1, True),
    ("strict", True, 1, 0x4020, 1, True),
])
@pytest.mark.parametrize("controller", ["ide", "ahci"])
def test_identify_words(name, controller, rzat, w169, w69, w105, integrity):
    config, page, w, info = identify(name, controller, rzat)
    assert (w[169], w[69], w[105]) == (w169, w69, w105)
    assert info["capacity_sectors"] == SECTORS
    assert info["model"] == "QEMU HARDDISK"
    assert info["trim"] is bool(w169)
    assert info["zero_after_trim"] is (w69 == 0x4020)
    if integrity:
        assert page[510] == 0xA5 and sum(page) % 256 == 0
        assert info["integrity_signature"] and info["integrity_valid"]
    else:
        assert w[255] == 0 and not info["integrity_signature"]


def test_qemu_72_identity_and_word_106():
    config, _, w, info = identify("qemu-7.2")
    assert (info["firmware"], info["serial"]) == ("2.5+", "QM00001")
    assert w[106] == 0x6000 and config.out_of_range_error == "abrt"
    assert info["write_cache_enabled"]


def test_qemu_14_has_no_trim_and_its_own_firmware():
    config, _, _, info = identify("qemu-1.4-pc", "ahci")
    assert not config.trim and not config.drat and not config.rzat
    assert not info["trim"] and info["firmware"] == "1.4.0"
    assert config.out_of_range_error == "abrt"


def test_strict_answers_idnf_for_an_out_of_range_read(tmp_path):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", SECTORS * 512)
    with open(path, "rb") as f:
        before = f.read()
    for name, error in (("strict", L.ERROR_IDNF), ("qemu-7.2", L.ERROR_ABRT)):
        drive = Drive(open_image(path, "raw"), DriveOptions(discard="unmap"))
        device = AtaDevice(drive, get_profile(name).ata_config(SECTORS, "ahci"))
        result = device.execute(AtaRegisters(L.AtaCommand.READ_DMA_EXT, lba=SECTORS - 1, count=2,
                                             device=L.DEVICE_LBA))
        assert (result.status, result.error) == (0x41, error)
        assert result.completions == []
    with open(path, "rb") as f:
        assert f.read() == before


def test_strict_word_106_is_not_reported():
    _, _, w, info = identify("strict")
    assert w[106] == 0 and info["physical_sector_exp"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_ncq_depth_per_controller_kind(name):
    _, _, w_ide, ide = identify(name, "ide")
    _, _, w_ahci, ahci = identify(name, "ahci")
    assert not ide["ncq"] and (w_ide[75], w_ide[76]) == (0, 0)
    assert ahci["ncq"] and ahci["queue_depth"] == 32 and w_ahci[75] == 31


def test_unknown_controller_is_a_usage_error():
    with pytest.raises(UsageError, match="ide, ahci"):
        get_profile("qemu-7.2").ata_config(SECTORS, "virtio-blk")


@pytest.mark.parametrize("name", NAMES)
def test_every_fact_has_a_source(name):
    profile = get_profile(name)
    facts = list(profile.facts())
    assert [label for label, _ in facts[:len(PROFILE_FIELDS)]] == list(PROFILE_FIELDS)
    ahci = [f"ahci.{f.name}" for f in dataclasses.fields(AhciConfig)]
    assert [label for label, _ in facts[len(PROFILE_FIELDS):]] == ["ncq_depth[ide]", "ncq_depth[ahci]", *ahci]
    for label, fact in facts:
        assert isinstance(fact, Fact) and fact.source.strip(), label


def test_a_fact_without_source_is_refused():
    with pytest.raises(ValueError, match="no source"):
        Fact(1, "  ")


def test_a_profile_must_state_every_field():
    base = get_profile("qemu-7.2")
    fields = dict(base.fields)
    del fields["trim"]
    with pytest.raises(ValueError, match="trim"):
        Profile("partial", "missing trim", fields, base.ncq_depth, base.ahci)
    with pytest.raises(ValueError, match="bogus"):
        Profile("typo", "unknown field", {**base.fields, "bogus": Fact(1, "x")}, base.ncq_depth, base.ahci)
    ahci = dict(base.ahci)
    del ahci["error_irq"]
    with pytest.raises(ValueError, match="error_irq"):
        Profile("partial", "missing an HBA fact", base.fields, base.ncq_depth, ahci)


def test_only_strict_takes_rzat_from_the_drive():
    assert get_profile("strict").fields["rzat"].value == FROM_DRIVE
    assert all(fact.value != FROM_DRIVE for name in ("qemu-7.2", "qemu-1.4-pc")
               for _, fact in get_profile(name).facts())


def test_unknown_profile_is_one_clear_error_naming_the_known_ones():
    with pytest.raises(UnknownProfile) as info:
        get_profile("qemu-9.9")
    message = str(info.value)
    assert "\n" not in message and "qemu-9.9" in message
    assert all(name in message for name in NAMES)
    assert isinstance(info.value, UsageError)       # the CLI prints it as one line


def test_every_family_knows_every_profile_name():
    assert {family: names for family, names in FAMILY_NAMES.items()} == {family: NAMES for family in FAMILY_NAMES}


def test_describe_lists_every_family_field_value_and_source():
    text = describe()
    lines = text.splitlines()
    for name in NAMES:
        assert any(line.startswith(name) for line in lines)
        for section in sections(name):
            assert f"[{section.family}] {section.description}" in text
            for label, fact in section.facts:
                assert isinstance(fact, Fact) and fact.source.strip(), (name, section.family, label)
                assert any(label in line and fact.source in line for line in lines), (name, label)
    assert "from the drive" in describe("strict")
    one = describe("qemu-1.4-pc").splitlines()
    assert one[0] == "qemu-1.4-pc" and [line for line in one if line.startswith("  [")] == [
        f"  [{s.family}] {s.description}" for s in sections("qemu-1.4-pc")]
    assert describe("qemu-7.2").splitlines()[0] == "qemu-7.2 (default)"
    with pytest.raises(UnknownProfile):
        describe("nope")


def test_derived_rzat_feeds_the_strict_profile():
    raw, qcow2 = True, False     # Drive.zeroes_after_discard(512) of raw and 64 KiB-cluster qcow2 with unmap
    assert words(build_identify(get_profile("strict").ata_config(SECTORS, "ahci", raw)))[69] == 0x4020
    assert words(build_identify(get_profile("strict").ata_config(SECTORS, "ahci", qcow2)))[69] == 0x4000


def test_qemu_8_2_is_the_7_2_device_behind_the_reworked_hba():
    """The AHCI series of QEMU 8.2 is AhciConfig's default (the standard's rules); the ide-hd facts are 7.2's."""
    q72, q82 = get_profile("qemu-7.2"), get_profile("qemu-8.2")
    assert q82.ahci_config() == AhciConfig() != q72.ahci_config()
    assert q82.ata_config(1000, "ahci") == q72.ata_config(1000, "ahci")
    assert all("QEMU 8.2.1" in fact.source for fact in q82.ahci.values())
