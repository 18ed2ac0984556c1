import pytest

from emu.errors import UsageError
from emu.units import human_size, parse_size


@pytest.mark.parametrize("text,value", [("512", 512), ("64k", 65536), ("64K", 65536), ("1M", 1 << 20),
                                        ("1.5G", 3 << 29), ("2T", 2 << 40), ("100b", 100), ("0", 0)])
def test_parse_size_accepts_qemu_suffixes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5", "12q", "k", "1e5", "0x10", "9E"])
def test_parse_size_rejects_bad_input_with_usage_error(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("value,text", [(0, "0 B"), (65536, "64 KiB"), (200704, "196 KiB"),
                                        (1073741824, "1 GiB"), (1024 * 1000, "0.977 MiB"),
                                        (67436544, "64.3 MiB")])
def test_human_size_matches_qemu_size_to_str(value, text):
    assert human_size(value) == text
