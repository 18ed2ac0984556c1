"""SMART (ATA command 0xB0) as QEMU's cmd_smart answers it (hw/ide/core.c, identical in 7.2.0 and 8.2.1).

QEMU keeps a small SMART state per drive, set at drive creation (ide_init_drive: enabled, autosave on, no
errors, empty self-test log) and never reset by a device reset, and fills the data pages from a fixed table of
seven attributes. A guest's smartctl therefore sees the same values on every QEMU disk; the model here gives the
same bytes so a replay script can pin them. Layouts: `layouts.SMART_*` (SFF-8035i / ACS SMART pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controllers.ata.identify import identify_checksum
from controllers.ata.layouts import (
    SMART_ATTRIBUTES,
    SMART_DATA_PAGE,
    SMART_LBA_HIGH,
    SMART_LBA_MID,
    SMART_LOG_SELFTEST,
    SMART_LOG_SUMMARY_ERROR,
    SMART_SELFTEST_ENTRIES,
    SMART_SELFTEST_LOG,
    SMART_SUMMARY_ERROR_LOG,
    SMART_THRESHOLD_EXCEEDED,
    SMART_THRESHOLD_PAGE,
    SmartFeature,
)

F = SmartFeature

# QEMU's smart_attributes[]: (id, flags, value, worst, raw bytes 0-5, threshold). QEMU stores flags as two
# bytes (flags, hflags); every hflags is 0.
QEMU_ATTRIBUTES = (
    (0x01, 0x03, 0x64, 0x64, bytes(6), 0x06),                        # raw read error rate
    (0x03, 0x03, 0x64, 0x64, bytes([0x10, 0, 0, 0, 0, 0]), 0x00),    # spin-up time
    (0x04, 0x02, 0x64, 0x64, bytes([0x64, 0, 0, 0, 0, 0]), 0x14),    # start/stop count
    (0x05, 0x03, 0x64, 0x64, bytes(6), 0x24),                        # reallocated sectors
    (0x09, 0x03, 0x64, 0x64, bytes([0x01, 0, 0, 0, 0, 0]), 0x00),    # power-on hours
    (0x0C, 0x03, 0x64, 0x64, bytes(6), 0x00),                        # power cycle count
    (190, 0x03, 0x45, 0x45, bytes([0x1F, 0, 0x1F, 0x1F, 0, 0]), 0x32),   # airflow temperature (Celsius)
)
SELFTEST_HOURS = 0x1234             # cmd_smart SMART_EXECUTE_OFFLINE: the lifetime stamp of every self-test
OFFLINE_ROUTINES = frozenset({0x00, 0x01, 0x02})   # off-line routine, short and extended self-test (LBA 7:0)

# The subcommands that return a 512-byte page over PIO; the rest move no data.
PAGE_FEATURES = frozenset({F.READ_DATA, F.READ_THRESH, F.READ_LOG})


@dataclass
class SmartState:
    """What QEMU's IDEState keeps for SMART (smart_enabled, smart_autosave, smart_errors, the self-test log)."""

    enabled: bool = True
    autosave: bool = True
    errors: int = 0
    selftests: list[int] = field(default_factory=list)   # LBA 7:0 of each off-line command, oldest first
    count: int = 0                                       # smart_selftest_count: 1..21, wraps to 1

    def refusal(self, features: int, lba: int) -> bool:
        """True when cmd_smart aborts on the registers alone: wrong signature in LBA 23:8, SMART disabled for
        anything but ENABLE, an unknown subcommand, or an unknown log / autosave / off-line code."""
        sub, sector = features & 0xFF, lba & 0xFF
        if (lba >> 8) & 0xFF != SMART_LBA_MID or (lba >> 16) & 0xFF != SMART_LBA_HIGH:
            return True
        if not self.enabled and sub != F.ENABLE:
            return True
        if sub == F.ATTR_AUTOSAVE:
            return sector not in (0x00, 0xF1)
        if sub == F.READ_LOG:
            return sector not in (SMART_LOG_SUMMARY_ERROR, SMART_LOG_SELFTEST)
        if sub == F.EXECUTE_OFFLINE:
            return sector not in OFFLINE_ROUTINES
        return sub not in (F.READ_DATA, F.READ_THRESH, F.ENABLE, F.DISABLE, F.STATUS)

    def run(self, features: int, lba: int) -> tuple[bytes, int | None]:
        """Execute an accepted subcommand: (page or b"", LBA 23:8 output of RETURN STATUS or None)."""
        sub, sector = features & 0xFF, lba & 0xFF
        if sub == F.ENABLE or sub == F.DISABLE:
            self.enabled = sub == F.ENABLE
        elif sub == F.ATTR_AUTOSAVE:
            self.autosave = sector == 0xF1
        elif sub == F.STATUS:
            mid, high = (SMART_LBA_MID, SMART_LBA_HIGH) if not self.errors else SMART_THRESHOLD_EXCEEDED
            return b"", high << 8 | mid
        elif sub == F.EXECUTE_OFFLINE:
            self.count = self.count % SMART_SELFTEST_ENTRIES + 1
            if len(self.selftests) < self.count:
                self.selftests.append(sector)
            else:
                self.selftests[self.count - 1] = sector
        elif sub == F.READ_DATA:
            return self.data_page(), None
        elif sub == F.READ_THRESH:
            return threshold_page(), None
        elif sector == SMART_LOG_SUMMARY_ERROR:
            return _with_checksum(SMART_SUMMARY_ERROR_LOG, dict(
                revision=1, index=0, entries=bytes(450), error_count=self.errors & 0xFFFF, reserved=bytes(57))), None
        else:
            return self.selftest_log(), None
        return b"", None

    def data_page(self) -> bytes:
        """SMART_READ_DATA: attributes, off-line status (0x02 | autosave << 7), the last self-test's status
        (always 0 = completed without error), QEMU's fixed capability and polling-time bytes."""
        return _with_checksum(SMART_DATA_PAGE, dict(
            revision=1, attributes=_rows(lambda a: dict(id=a[0], flags=a[1], value=a[2], worst=a[3], raw=a[4],
                                                        reserved=0),
                                         dict(id=0, flags=0, value=0, worst=0, raw=bytes(6), reserved=0)),
            offline_status=0x02 | (0x80 if self.autosave else 0), selftest_status=0, offline_seconds=0x0120,
            vendor_366=0, offline_capability=0x19, smart_capability=0x0003, error_logging=0x01, vendor_371=0,
            short_test_minutes=0x02, extended_test_minutes=0x36, conveyance_test_minutes=0x01,
            extended_test_minutes_word=0, reserved=bytes(9), vendor=bytes(125)))

    def selftest_log(self) -> bytes:
        """Log 06h: one 24-byte descriptor per off-line command (status 0, lifetime 0x1234 h), index at 508."""
        empty = dict(test=0, status=0, lifetime_hours=0, checkpoint=0, failing_lba=0, vendor=bytes(15))
        descriptors = [dict(empty, test=t, lifetime_hours=SELFTEST_HOURS) for t in self.selftests]
        descriptors += [empty] * (SMART_SELFTEST_ENTRIES - len(descriptors))
        return _with_checksum(SMART_SELFTEST_LOG, dict(revision=1, descriptors=descriptors, vendor=bytes(2),
                                                       index=self.count, reserved=bytes(2)))


def threshold_page() -> bytes:
    """SMART_READ_THRESH: each attribute's id and threshold."""
    return _with_checksum(SMART_THRESHOLD_PAGE, dict(
        revision=1, thresholds=_rows(lambda a: dict(id=a[0], threshold=a[5], reserved=bytes(10)),
                                     dict(id=0, threshold=0, reserved=bytes(10))),
        reserved=bytes(149)))


def _rows(row, empty: dict) -> list[dict]:
    return [row(a) for a in QEMU_ATTRIBUTES] + [empty] * (SMART_ATTRIBUTES - len(QEMU_ATTRIBUTES))


def _with_checksum(layout, fields: dict) -> bytes:
    page = bytearray(layout.build(dict(fields, checksum=0)))
    page[511] = identify_checksum(page)
    return bytes(page)
