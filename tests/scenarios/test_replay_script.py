"""The replay script format: what parses, and a one-line error naming the line and key for what does not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenarios.replay.runner import SENDERS
from scenarios.replay.script import (
    CONTROLLERS,
    FAMILIES,
    FAMILY_OF,
    ScriptError,
    differences,
    mismatch,
    parse_line,
    parse_script,
)


def test_a_script_parses_registers_data_and_expectations():
    steps = parse_script('''
# identify, then a write and a read
{"ata": {"command": "0xec"}, "data_in_len": 512, "expect": {"status": "0x50", "error": 0}}
{"ata": {"command": 202, "count": 1, "lba": "0x10"}, "data_out": {"pattern": 165, "len": 512}}

{"fis": "2780250000000040000000000800000000000000", "data_in_len": 4096, "dma": true, "expect": {"data_in": "00 01"}}
''', "s.jsonl", "ide")
    assert [s.line for s in steps] == [3, 4, 6]
    assert steps[0].ata == {"command": 0xEC} and steps[0].expect == {"status": 0x50, "error": 0}
    assert steps[1].ata == {"command": 0xCA, "count": 1, "lba": 0x10} and steps[1].data_out == b"\xa5" * 512
    assert len(steps[2].fis) == 20 and steps[2].dma is True and steps[2].expect == {"data_in": "0001"}


@pytest.mark.parametrize("line,needle", [
    ('{"ata": {"command": "0xzz"}}', "ata.command"),
    ('{"ata": {"command": 256}}', "ata.command: 256 is out of range"),
    ('{"ata": {"lba": 0}}', '"command" is required'),
    ('{"ata": {"command": 1, "sector": 0}}', "unknown register 'sector'"),
    ('{"ata": {"command": 1}, "fis": "00"}', 'exactly one of "ata" and "fis"'),
    ('{"fis": "27 80"}', "20 bytes, not 2"),
    ('{"fis": "xyz"}', "fis: not a hex string"),
    ('{"ata": {"command": 1}, "data_out": {"pattern": 300, "len": 1}}', "data_out.pattern"),
    ('{"ata": {"command": 1}, "data_out": {"len": 1}}', "a pattern is"),
    ('{"ata": {"command": 1}, "data_in_len": -1}', "data_in_len"),
    ('{"ata": {"command": 1}, "data_in_len": true}', "data_in_len: expected an integer"),
    ('{"ata": {"command": 1}, "expect": {"sense": 1}}', "unknown key 'sense'"),
    ('{"ata": {"command": 1}, "dma": "yes"}', "dma: expected true or false"),
    ('{"ata": {"command": 1}, "data_out": "00", "data_in_len": 512}', "data_out or data_in_len, not both"),
    ('{"ata": {"command": 1}, "expect": {"count": 1}}', "unknown key 'count'"),
    ('{"ata": {"command": 1}, "wat": 1}', "unknown key 'wat'"),
    ('[1, 2]', "a line is a JSON object"),
    ('{"ata": ', "not JSON"),
])
def test_bad_lines_are_one_line_errors_naming_the_line_and_key(line, needle):
    with pytest.raises(ScriptError) as info:
        parse_script("\n" + line, "bad.jsonl", "ide")
    message = str(info.value)
    assert message.startswith("bad.jsonl:2: ") and needle in message and "\n" not in message


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_script_error(text):
    try:
        parse_line(text, "fuzz.jsonl", 1, FAMILY_OF["ide"])
    except ScriptError:
        pass


def test_mismatch_names_the_first_differing_key():
    assert mismatch({"status": 0x50, "error": 0}, {"status": 0x50, "error": 0, "data_in": ""}) is None
    assert mismatch({"status": 0x50}, {"status": 0x41, "error": 4}) == "status: expected 0x50, got 0x41"
    assert mismatch({"data_in": "00"}, {"data_in": "01"}) == "data_in: expected 00, got 01"
    assert mismatch({"lba": 5}, {"status": 0x50}) == "lba: expected 0x5, got null"


def test_differences_name_every_key_two_outcomes_disagree_on_and_data_by_its_first_differing_byte():
    emu = {"line": 3, "status": 0x41, "error": 4, "data_in": "00aa11", "lba": 0}
    qemu = {"line": 3, "status": 0x50, "error": 4, "data_in": "00bb"}
    assert differences(emu, qemu) == {"status": ("0x41", "0x50"), "lba": ("0x0", "null"),
                                      "data_in": ("3 bytes, byte 1 = 0xaa", "2 bytes, byte 1 = 0xbb")}
    assert differences({"data_in": "0011"}, {"data_in": "00"})["data_in"] == ("2 bytes, byte 1 = 0x11", "1 byte")
    assert differences(emu, dict(emu)) == {}


# -- virtio-blk lines ------------------------------------------------------------------------------------------
def test_virtio_blk_lines_build_the_header_and_the_segment_payload():
    steps = parse_script('''
{"virtio_blk": {"type": "discard", "segments": [{"sector": 8, "num_sectors": 2, "flags": 1}, {"num_sectors": 0}]}}
{"virtio_blk": {"type": 1, "sector": "0x10", "ioprio": 3}, "data_out": "00ff", "expect": {"status": 2}}
{"header": "0b00000000000000", "expect": {"status": null, "used_len": null, "broken": true}}
''', "v.jsonl", "virtio-blk")
    assert steps[0].header == bytes.fromhex("0b000000" "00000000" "0000000000000000")
    assert steps[0].data_out == bytes.fromhex("0800000000000000" "02000000" "01000000") + bytes(16)
    assert steps[1].header == bytes.fromhex("01000000" "03000000" "1000000000000000")
    assert steps[1].data_out == b"\x00\xff" and steps[1].expect == {"status": "UNSUPP"}
    assert len(steps[2].header) == 8 and steps[2].expect == {"status": None, "used_len": None, "broken": True}


@pytest.mark.parametrize("line,needle", [
    ('{"virtio_blk": {"type": "READ"}}', "unknown name 'READ'"),
    ('{"virtio_blk": {"sector": 1}}', '"type" is required'),
    ('{"virtio_blk": {"type": "IN", "lba": 1}}', "unknown field 'lba'"),
    ('{"virtio_blk": {"type": "DISCARD", "segments": [{"sector": 1}]}}', '"num_sectors" is required'),
    ('{"virtio_blk": {"type": "DISCARD", "segments": {}}}', "expected a list of segment objects"),
    ('{"virtio_blk": {"type": "DISCARD", "segments": []}, "data_out": "00"}', "use one"),
    ('{"virtio_blk": {"type": "IN"}, "header": "00"}', 'exactly one of "virtio_blk" and "header"'),
    ('{"ata": {"command": 1}}', "'ata' lines are for --controller ide or ahci"),
    ('{"virtio_blk": {"type": "IN"}, "dma": true}', "'dma' lines are for --controller ide or ahci"),
    ('{"virtio_blk": {"type": "IN"}, "expect": {"error": 0}}', "unknown key 'error'"),
    ('{"virtio_blk": {"type": "IN"}, "expect": {"status": "FINE"}}', "unknown name 'FINE'"),
    ('{"virtio_blk": {"type": "IN"}, "expect": {"broken": 1}}', "expected true or false"),
])
def test_bad_virtio_blk_lines_are_one_line_errors(line, needle):
    with pytest.raises(ScriptError) as info:
        parse_script(line, "bad.jsonl", "virtio-blk")
    assert str(info.value).startswith("bad.jsonl:1: ") and needle in str(info.value)


def test_an_ata_script_rejects_virtio_blk_lines():
    with pytest.raises(ScriptError, match="'virtio_blk' lines are for --controller virtio-blk"):
        parse_script('{"virtio_blk": {"type": "IN"}}', "a.jsonl", "ahci")


# -- virtio-scsi lines -----------------------------------------------------------------------------------------
def test_virtio_scsi_lines_carry_a_cdb_and_lun_or_a_raw_request():
    steps = parse_script('''
{"cdb": "28 00 00000010 00 0001 00", "lun": 3, "data_in_len": 512, "expect": {"status": "good", "response": 0}}
{"request": "0001", "expect": {"response": null, "broken": true}}
{"cdb": "00", "expect": {"status": 2, "sense": {"key": 6, "asc": "0x29", "ascq": 0}, "residual": 4}}
''', "s.jsonl", "virtio-scsi")
    assert steps[0].cdb == bytes.fromhex("28000000001000000100") and steps[0].lun == 3
    assert steps[0].expect == {"status": "GOOD", "response": "OK"}
    assert steps[1].header == b"\x00\x01" and steps[1].expect == {"response": None, "broken": True}
    assert steps[2].expect == {"status": "CHECK_CONDITION", "sense": {"key": 6, "asc": 0x29, "ascq": 0},
                               "residual": 4}


@pytest.mark.parametrize("line,needle", [
    ('{"cdb": ""}', "a CDB is 1 to 32 bytes"),
    ('{"cdb": "00", "lun": 16384}', "lun: 16384 is out of range"),
    ('{"request": "00", "lun": 1}', "a raw request carries its own LUN field"),
    ('{"cdb": "00", "request": "00"}', 'exactly one of "cdb" and "request"'),
    ('{"cdb": "00", "expect": {"status": "FINE"}}', "unknown name 'FINE'"),
    ('{"cdb": "00", "expect": {"response": "MAYBE"}}', "unknown name 'MAYBE'"),
    ('{"cdb": "00", "expect": {"sense": {"key": 5}}}', "give all of key, asc and ascq"),
    ('{"cdb": "00", "expect": {"sense": {"key": 16, "asc": 0, "ascq": 0}}}', "sense.key: 16 is out of range"),
    ('{"cdb": "00", "expect": {"error": 0}}', "unknown key 'error'"),
    ('{"virtio_blk": {"type": "IN"}}', "'virtio_blk' lines are for --controller virtio-blk"),
])
def test_bad_virtio_scsi_lines_are_one_line_errors(line, needle):
    with pytest.raises(ScriptError) as info:
        parse_script(line, "bad.jsonl", "virtio-scsi")
    assert str(info.value).startswith("bad.jsonl:1: ") and needle in str(info.value)


def test_every_family_of_lines_has_a_sender_and_every_controller_a_family():
    assert set(SENDERS) == {family.name for family in FAMILIES}
    assert CONTROLLERS == ("ide", "ahci", "virtio-blk", "virtio-scsi")


def test_only_ide_lines_choose_pio_or_dma_and_the_whole_script_is_read_first():
    text = '{"ata": {"command": "0x20"}, "dma": false}\n{"ata": {"command": "0x20"}, "dma": true}'
    assert [step.dma for step in parse_script(text, "d.jsonl", "ide")] == [False, True]
    with pytest.raises(ScriptError, match="^d.jsonl:1: dma: chooses PIO or DMA on IDE only; ahci moves"):
        parse_script(text, "d.jsonl", "ahci")
    with pytest.raises(ScriptError, match="^d.jsonl:3: ata.command"):
        parse_script(text + '\n{"ata": {"command": "0xzz"}}', "d.jsonl", "ahci")
