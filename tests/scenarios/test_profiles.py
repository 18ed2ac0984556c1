"""Profiles: one shape for every family, every fact sourced and every field stated; the ATA profiles build valid
IDENTIFY pages; the guest profile gives the drivers the Linux 6.1 values they always used; the listing."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from controllers.ahci_config import AhciConfig
from controllers.ata import AtaDevice, AtaRegisters, build_identify, parse_identify
from controllers.ata import layouts as L
from controllers.drivers.config import GuestConfig, feature_bits
from controllers.drivers.libata import discard_dsms, lba_28_ok, max_write_same_blocks
from controllers.drivers.sd import ProvisioningMode, discard_limits
from controllers.virtio import layouts as V
from emu.block import Drive, DriveOptions
from emu.errors import EmuError, UsageError
from images import create_image, open_image
from scenarios.profiles import (
    DEFAULT_GUEST,
    FROM_DRIVE,
    GUEST_NAMES,
    Fact,
    FamilyProfile,
    Profile,
    ProfileError,
    UnknownProfile,
    describe,
    get_profile,
    guest_config,
)
from scenarios.profiles.ata import ahci_config, ata_config
from scenarios.profiles.families import AHCI, ATA, GUEST, HYPERVISOR, SD
from scenarios.profiles.registry import GUESTS, HYPERVISORS, listings

SECTORS = 32768                                     # 16 MiB
NAMES = ("qemu-7.2", "qemu-8.2", "qemu-1.4-pc", "strict")
ALL = [*HYPERVISORS.values(), *GUESTS.values()]


def words(page: bytes) -> tuple[int, ...]:
    return struct.unpack("<256H", page)


def identify(name, controller="ide", rzat=None, sectors=SECTORS):
    config = ata_config(name, sectors, controller, read_zeroes_after_trim=rzat)
    page = build_identify(config)
    return config, page, words(page), parse_identify(page)


def test_registry_ships_the_hypervisor_profiles_and_the_guest():
    assert tuple(HYPERVISORS) == NAMES and GUEST_NAMES[0] == DEFAULT_GUEST == "linux-6.1"
    assert {n for n in GUEST_NAMES if n.startswith("windows-")} == {"windows-xp", "windows-7", "windows-8",
                                                                      "windows-2012", "windows-10"}
    assert all(p.shape is HYPERVISOR for p in HYPERVISORS.values())
    assert all(p.shape is GUEST for name, p in GUESTS.items() if name.startswith("linux-"))
    assert all(get_profile(name) is HYPERVISORS[name] for name in NAMES)
    assert {f.name for f in GUEST.families} == {f.name for f in dataclasses.fields(GuestConfig)}


# -- the one shape: every family profile states every field, with a source ------------------------------------------

@pytest.mark.parametrize("profile", ALL, ids=lambda p: p.name)
def test_every_family_profile_states_every_field_and_every_fact_has_a_source(profile):
    assert [p.family for p in profile.families] == list(profile.shape.families)
    for part in profile.families:
        assert set(part.facts) == set(part.family.fields), (profile.name, part.family.name)
        assert part.description.strip()
        for label, fact in part.items():
            assert isinstance(fact, Fact) and fact.source.strip(), (profile.name, label)


def test_the_ata_facts_list_the_device_then_the_ncq_depth_per_controller():
    for name in NAMES:
        labels = [label for label, _ in get_profile(name)[ATA].items()]
        device = [f for f in ATA.fields if f != "ncq_depth"]
        assert labels == [*device, "ncq_depth[ide]", "ncq_depth[ahci]"]
        assert [label for label, _ in get_profile(name)[AHCI].items()] == [f.name for f in
                                                                          dataclasses.fields(AhciConfig)]


def test_a_fact_without_source_is_refused():
    with pytest.raises(ProfileError, match="no source"):
        Fact(1, "  ")
    assert issubclass(ProfileError, EmuError)


def test_a_family_profile_with_a_missing_or_unknown_field_is_refused():
    base = get_profile("qemu-7.2")[ATA]
    facts = dict(base.facts)
    del facts["trim"]
    with pytest.raises(ProfileError, match="trim"):
        FamilyProfile(ATA, "missing trim", facts)
    with pytest.raises(ProfileError, match="bogus"):
        FamilyProfile(ATA, "unknown field", {**base.facts, "bogus": Fact(1, "x")})
    with pytest.raises(ProfileError, match="capacity_sectors"):      # a given field is the creator's, not a fact
        FamilyProfile(ATA, "states a given field", {**base.facts, "capacity_sectors": Fact(1, "x")})
    with pytest.raises(ProfileError, match="ide, ahci"):
        FamilyProfile(ATA, "one controller only", {**base.facts, "ncq_depth": {"ahci": Fact(32, "x")}})
    ahci = dict(get_profile("qemu-7.2")[AHCI].facts)
    del ahci["error_irq"]
    with pytest.raises(ProfileError, match="error_irq"):
        FamilyProfile(AHCI, "missing an HBA fact", ahci)
    sd = dict(GUESTS["linux-6.1"][SD].facts)
    del sd["spinup_tries"]
    with pytest.raises(ProfileError, match="spinup_tries"):
        FamilyProfile(SD, "missing a guest fact", sd)


def test_a_profile_needs_exactly_one_family_profile_per_family():
    q72 = get_profile("qemu-7.2")
    with pytest.raises(ProfileError, match="ahci"):
        Profile("partial", HYPERVISOR, tuple(p for p in q72.families if p.family is not AHCI))
    with pytest.raises(ProfileError, match="sd"):
        Profile("mixed", HYPERVISOR, (*q72.families, GUESTS["linux-6.1"][SD]))


def test_a_configuration_needs_exactly_the_creators_values():
    with pytest.raises(ProfileError, match="chs"):
        get_profile("qemu-7.2")[ATA].config("ide", capacity_sectors=SECTORS)
    with pytest.raises(ProfileError, match="read_only"):
        get_profile("qemu-7.2")[AHCI].config(read_only=True)


# -- ATA device profiles ------------------------------------------------------------------------------------------

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
    assert info["write_cache_enabled"] and config.chs is None


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
        device = AtaDevice(drive, ata_config(name, SECTORS, "ahci"))
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
        ata_config("qemu-7.2", SECTORS, "virtio-blk")


def test_only_strict_takes_rzat_from_the_drive():
    assert get_profile("strict")[ATA].facts["rzat"].value == FROM_DRIVE
    assert all(fact.value != FROM_DRIVE for name in ("qemu-7.2", "qemu-1.4-pc")
               for part in get_profile(name).families for _, fact in part.items())


def test_unknown_profile_is_one_clear_error_naming_the_known_ones():
    with pytest.raises(UnknownProfile) as info:
        get_profile("qemu-9.9")
    message = str(info.value)
    assert "\n" not in message and "qemu-9.9" in message
    assert all(name in message for name in NAMES)
    assert isinstance(info.value, UsageError)       # the CLI prints it as one line
    with pytest.raises(UnknownProfile, match="linux-6.1"):
        guest_config("linux-2.4")
    with pytest.raises(UnknownProfile):
        get_profile("linux-6.1")                    # a guest profile is no hypervisor profile


def test_derived_rzat_feeds_the_strict_profile():
    raw, qcow2 = True, False     # Drive.zeroes_after_discard(512) of raw and 64 KiB-cluster qcow2 with unmap
    assert words(build_identify(ata_config("strict", SECTORS, "ahci", raw)))[69] == 0x4020
    assert words(build_identify(ata_config("strict", SECTORS, "ahci", qcow2)))[69] == 0x4000


def test_qemu_8_2_is_the_7_2_device_behind_the_reworked_hba():
    """The AHCI series of QEMU 8.2 is AhciConfig's default (the standard's rules); the ide-hd facts are 7.2's."""
    assert ahci_config("qemu-8.2") == AhciConfig() != ahci_config("qemu-7.2")
    assert ata_config("qemu-8.2", 1000, "ahci") == ata_config("qemu-7.2", 1000, "ahci")
    assert all("QEMU 8.2.1" in fact.source for _, fact in get_profile("qemu-8.2")[AHCI].items())


# -- the linux-6.1 guest profile: what the drivers used before it was one ------------------------------------------

def test_the_guest_gives_the_linux_6_1_constants():
    guest = guest_config()
    assert guest == guest_config("linux-6.1")
    assert (guest.block.max_sectors, guest.block.request_timeout, guest.block.zero_pages_bytes) == (2560, 30.0, 1 << 20)
    assert (guest.libata.max_trim_rnum, guest.libata.max_sectors) == (64, 256)
    assert max_write_same_blocks(guest.libata) == 65535 * 64
    sd = guest.sd
    assert (sd.command_timeout, sd.spinup_tries, sd.max_xfer_blocks) == (30.0, 3, 0xFFFFFFFF)
    assert (sd.max_ws10_blocks, sd.max_ws16_blocks) == (0xFFFF, 0x7FFFFF)
    assert sd.vpd_len == {0x00: 255, 0xB0: 64, 0xB2: 8}
    blk_bits = [V.BLK_F_SIZE_MAX, V.BLK_F_SEG_MAX, V.BLK_F_GEOMETRY, V.BLK_F_RO, V.BLK_F_BLK_SIZE, V.BLK_F_FLUSH,
                V.BLK_F_TOPOLOGY, V.BLK_F_CONFIG_WCE, V.BLK_F_MQ, V.BLK_F_DISCARD, V.BLK_F_WRITE_ZEROES,
                V.BLK_F_SECURE_ERASE, V.F_INDIRECT_DESC, V.F_EVENT_IDX, V.F_VERSION_1]
    assert feature_bits(guest.virtio_blk.features) == sum(V.bit(b) for b in blk_bits)
    assert guest.virtio_blk.max_discard_segments == 256
    scsi_bits = [V.SCSI_F_HOTPLUG, V.SCSI_F_CHANGE, V.F_INDIRECT_DESC, V.F_EVENT_IDX, V.F_VERSION_1]
    assert feature_bits(guest.virtio_scsi.features) == sum(V.bit(b) for b in scsi_bits)
    assert guest.virtio_scsi.event_buffers == 8


def test_the_guest_limits_shape_what_the_drivers_send():
    guest = guest_config()
    # libata: one DSM per WRITE SAME of at most 64 x 65535 sectors, LBA28 up to 256 sectors
    assert len(discard_dsms([(0, 65535 * 64 + 1)], guest.libata)) == 2
    assert lba_28_ok(0, 256, guest.libata) and not lba_28_ok(0, 257, guest.libata)
    # sd: WRITE SAME(16) discards capped at SD_MAX_WS16_BLOCKS, WRITE SAME(10) at SD_MAX_WS10_BLOCKS
    assert discard_limits(ProvisioningMode.WS16, 512, 512, None, guest.sd).max_blocks == 0x7FFFFF
    assert discard_limits(ProvisioningMode.WS10, 512, 512, None, guest.sd).max_blocks == 0xFFFF


# -- the listing ---------------------------------------------------------------------------------------------------

def test_describe_lists_every_family_field_value_and_source():
    text = describe()
    lines = text.splitlines()
    for name in NAMES:
        assert any(line.startswith(name) for line in lines)
        for listing in listings(get_profile(name)):
            assert f"[{listing.title}] {listing.description}" in text
            for label, fact in listing.facts:
                assert any(label in line and fact.source in line for line in lines), (name, label)
    assert [line.split("]")[0] for line in lines if line.startswith("  [")] == [
        f"  [{title}" for _ in NAMES for title in ("ata", "virtio-blk", "scsi", "virtio-scsi")]
    assert lines[-1].startswith("guest profiles") and "linux-6.1 (default)" in lines[-1]
    assert "from the drive" in describe("strict")
    one = describe("qemu-1.4-pc").splitlines()
    assert one[0] == "qemu-1.4-pc" and [line for line in one if line.startswith("  [")] == [
        f"  [{s.title}] {s.description}" for s in listings(get_profile("qemu-1.4-pc"))]
    assert describe("qemu-7.2").splitlines()[0] == "qemu-7.2 (default)"
    with pytest.raises(UnknownProfile):
        describe("nope")


def test_describe_shows_the_guest_profile_with_every_source():
    guest = describe("linux-6.1")
    lines = guest.splitlines()
    assert lines[0] == "linux-6.1 (default)"
    assert [line.split("]")[0] for line in lines if line.startswith("  [")] == [
        "  [block", "  [libata", "  [sd", "  [virtio_blk", "  [virtio_scsi"]
    for part in GUESTS["linux-6.1"].families:
        for label, fact in part.items():
            assert any(line.split()[0] == label and fact.source in line for line in lines[1:]
                       if not line.startswith("  [")), label
    assert "BLK_DEF_MAX_SECTORS" in guest and "ATA_MAX_TRIM_RNUM" in guest and "SD_MAX_WS16_BLOCKS" in guest
