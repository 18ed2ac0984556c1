"""Replay-script lines for the ATA differential tests: valid and invalid commands for IDE and AHCI, in the shapes the
guest-driver models can send (tests/qtest/test_differential_ata.py).

A line here always gives the data phase the device will really run when it runs one (an exact PIO length, a DMA
buffer at least as long as the transfer): QEMU leaves a short PIO transfer with DRQ set, and a short PRD table
without an interrupt (7.2 hw/ide/core.c ide_dma_cb: "The PRDs were too short"), so the driver would wait out its
30-second command timer (linux-6.1 sd command_timeout) in real time against QEMU. Commands the device refuses
before any data moves (range errors, unknown opcodes) take any length. EXECUTE DEVICE DIAGNOSTIC behind AHCI never
completes on QEMU 7.2 (qemu-7.2 fact diagnostic_completes) and is not generated there.
"""

from __future__ import annotations

from hypothesis import strategies as st

from controllers.ata.dsm import encode_entries

CAPACITY = 131072               # sectors of the 64 MiB image (tests/qtest/differential.IMAGE_SIZE)
SECTOR = 512
HEADS, SECTORS = 16, 63         # QEMU's guessed geometry for a disk without MBR (guess_chs_for_size)
LBA_BIT = 0x40

PIO_IN = {0x20: False, 0x21: False, 0x24: True, 0x29: True, 0xC4: False}        # opcode -> LBA48
PIO_OUT = {0x30: False, 0x31: False, 0x34: True, 0x39: True, 0xC5: False, 0x3C: False}
DMA_IN = {0xC8: False, 0xC9: False, 0x25: True}
DMA_OUT = {0xCA: False, 0xCB: False, 0x35: True}
MULTIPLE = frozenset({0x29, 0x39, 0xC4, 0xC5})
NO_DATA = (0x40, 0x41, 0x42, 0x70, 0xE7, 0xEA, 0xF8, 0x27, 0xE5, 0x98, 0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0x94, 0x95,
           0x96, 0x97, 0x99, 0x10, 0x91, 0xF5)
UNKNOWN = (0x00, 0x03, 0x08, 0x0B, 0x3D, 0x3F, 0x57, 0x5C, 0x87, 0xA0, 0xA1, 0xB1, 0xC7, 0xD1, 0xDA, 0xF0,
           0xF1, 0xF6, 0xFF)
SET_FEATURES = (0x02, 0x82, 0x03, 0x66, 0xCC, 0xAA, 0x55, 0x05, 0x85, 0x00, 0x10, 0x90, 0x44, 0xFF)
XFER_MODES = (0x00, 0x01, 0x08, 0x0C, 0x0F, 0x10, 0x20, 0x22, 0x23, 0x40, 0x42, 0x45, 0x46, 0x47, 0x80, 0xFF)
SMART_PAGES = (0xD0, 0xD1, 0xD5)
SMART_OTHER = (0xD2, 0xD4, 0xD8, 0xD9, 0xDA, 0xDB, 0xD3, 0xD6, 0xD7, 0x00)
SMART_SIGNATURE = 0xC24F00      # LBA 23:8 = C2h 4Fh


def _hex(value: int) -> str:
    return f"{value:#04x}"


def effective(command: int, lba48: bool, lba: int, device: int, count: int) -> tuple[int, int]:
    """(first sector, sector count) as QEMU's ide_get_sector / ide_cmd_lba48_transform read the registers; a CHS
    sector number 0 gives a sector past any capacity (QEMU's uint64_t wraps)."""
    n = count or (65536 if lba48 else 256)
    if lba48:
        return lba, n
    if device & LBA_BIT:
        return (device & 0x0F) << 24 | lba & 0xFFFFFF, n
    cylinder, head, sector = lba >> 8 & 0xFFFF, device & 0x0F, lba & 0xFF
    start = (cylinder * HEADS + head) * SECTORS + sector - 1
    return (start if start >= 0 else 1 << 64), n


def in_range(start: int, n: int) -> bool:
    return start <= CAPACITY and n <= CAPACITY - start


# -- registers -----------------------------------------------------------------------------------------------

def _lba(lba48: bool) -> st.SearchStrategy[int]:
    edge = [0, 1, CAPACITY - 1, CAPACITY - 8, CAPACITY, CAPACITY + 1, (1 << 24) - 1]
    if lba48:
        edge += [(1 << 28) - 1, 1 << 32, (1 << 48) - 1]
    return st.one_of(st.sampled_from(edge), st.integers(0, 4096), st.integers(0, (1 << (48 if lba48 else 24)) - 1))


_DEVICE = st.sampled_from([0x40, 0x40, 0x40, 0xE0, 0x00, 0xA0, 0x41, 0x4F, 0x50])
_COUNT = st.one_of(st.integers(1, 8), st.sampled_from([0, 16, 17, 255]))


@st.composite
def rw(draw) -> dict:
    """A READ/WRITE SECTORS/MULTIPLE/DMA (EXT) or WRITE VERIFY with its data phase: exact when the range is good,
    any length (small) when QEMU refuses it before moving data."""
    table = draw(st.sampled_from([PIO_IN, PIO_OUT, DMA_IN, DMA_OUT]))
    command = draw(st.sampled_from(sorted(table)))
    lba48 = table[command]
    lba, device, count = draw(_lba(lba48)), draw(_DEVICE), draw(_COUNT)
    start, n = effective(command, lba48, lba, device, count)
    pio = table in (PIO_IN, PIO_OUT)
    good = in_range(start, n)
    if good and n * SECTOR > (8 << 10 if pio else 256 << 10):
        count, n = 1 + count % 8, 1 + count % 8      # keep the transfer small: register-level PIO is slow
        start, n = effective(command, lba48, lba, device, count)
        good = in_range(start, n)
    line: dict = {"ata": {"command": _hex(command), "lba": lba, "count": count, "device": _hex(device)}}
    nbytes = n * SECTOR
    if not pio:
        if n > 256:                 # LBA48 COUNT 0: 32 MiB of PRDs, too much to fill over qtest
            count, n, nbytes = 1, 1, SECTOR
            line["ata"]["count"] = 1
        if draw(st.booleans()):
            nbytes += draw(st.sampled_from([SECTOR, 4096]))      # a PRD table longer than the transfer is fine
    elif not good:
        nbytes = draw(st.sampled_from([0, SECTOR, min(nbytes, 4 * SECTOR)]))
        if table is PIO_OUT:
            # QEMU takes a PIO write's first block before it checks the range (cmd_write_pio, ide_sector_write)
            nbytes = min(n, 16 if command in MULTIPLE else 1) * SECTOR
    if table in (PIO_OUT, DMA_OUT):
        line["data_out"] = {"pattern": draw(st.integers(0, 255)), "len": max(nbytes, SECTOR)}
    elif nbytes:
        line["data_in_len"] = nbytes
    return line


@st.composite
def ncq(draw) -> dict:
    """READ/WRITE FPDMA QUEUED (AHCI): sector count in FEATURES (0 = 65536), tag in COUNT 7:3, FUA in DEVICE 7."""
    write = draw(st.booleans())
    lba = draw(_lba(True))
    sectors = n = draw(st.one_of(st.integers(1, 8), st.sampled_from([16, 255, 256])))
    tag = draw(st.integers(0, 31))
    device = draw(st.sampled_from([0x40, 0xC0, 0x00, 0x80]))
    line: dict = {"ata": {"command": "0x61" if write else "0x60", "features": sectors, "count": tag << 3
                          | draw(st.sampled_from([0, 0, 1, 7])), "lba": lba, "device": _hex(device)}}
    nbytes = n * SECTOR + draw(st.sampled_from([0, 0, SECTOR]))
    if write:
        line["data_out"] = {"pattern": draw(st.integers(0, 255)), "len": nbytes}
    else:
        line["data_in_len"] = nbytes
    return line


@st.composite
def dsm(draw) -> dict:
    """DATA SET MANAGEMENT: TRIM range lists (zero-length, past the capacity, crossing it, unaligned, many, several
    blocks), COUNT 0, or a feature other than TRIM."""
    features = draw(st.sampled_from([1, 1, 1, 0, 2, 3, 0x101]))
    entry = st.tuples(st.one_of(st.integers(0, CAPACITY - 1), st.sampled_from([0, CAPACITY - 1, CAPACITY,
                                                                                 CAPACITY + 7, (1 << 48) - 1])),
                      st.one_of(st.integers(0, 64), st.sampled_from([0, 1, 7, 8, 4096, 65535])))
    entries = draw(st.lists(entry, max_size=80))
    blocks = -(-len(entries) * 8 // SECTOR)
    count = draw(st.sampled_from([blocks, blocks, blocks + 1, 0])) if blocks else draw(st.sampled_from([0, 1, 2]))
    payload = encode_entries(entries).ljust(count * SECTOR, b"\0")[:count * SECTOR]
    line: dict = {"ata": {"command": "0x06", "features": features, "count": count, "device": "0x40"}}
    if count:
        line["data_out"] = payload.hex()
    return line


@st.composite
def no_data(draw) -> dict:
    command = draw(st.sampled_from(NO_DATA))
    regs = {"command": _hex(command)}
    if draw(st.booleans()):
        regs.update(lba=draw(_lba(command in (0x42, 0xEA, 0x27))), count=draw(_COUNT), device=_hex(draw(_DEVICE)))
    return {"ata": regs}


@st.composite
def set_features(draw) -> dict:
    sub = draw(st.sampled_from(SET_FEATURES))
    count = draw(st.sampled_from(XFER_MODES)) if sub == 0x03 else draw(st.integers(0, 255))
    return {"ata": {"command": "0xef", "features": sub, "count": count}}


@st.composite
def set_multiple(draw) -> dict:
    return {"ata": {"command": "0xc6", "count": draw(st.sampled_from([0, 1, 2, 4, 8, 16, 3, 32, 0x110]))}}


@st.composite
def multiple_rw(draw) -> dict:
    """READ/WRITE MULTIPLE of whole blocks in range, to follow a SET MULTIPLE MODE: 16 sectors is a whole number
    of every block size the device accepts; aborted (mode 0) it moves nothing."""
    command = draw(st.sampled_from([0xC4, 0xC5, 0x29, 0x39]))
    line: dict = {"ata": {"command": _hex(command), "lba": draw(st.integers(0, 1024)), "count": 16,
                          "device": "0x40"}}
    if command in (0xC5, 0x39):
        line["data_out"] = {"pattern": draw(st.integers(0, 255)), "len": 16 * SECTOR}
    else:
        line["data_in_len"] = 16 * SECTOR
    return line


@st.composite
def page(draw) -> dict:
    """IDENTIFY DEVICE, SMART with and without a data page (right or wrong signature)."""
    if draw(st.booleans()):
        return {"ata": {"command": "0xec"}, "data_in_len": SECTOR}
    sub = draw(st.sampled_from(SMART_PAGES + SMART_OTHER))
    signature = draw(st.sampled_from([SMART_SIGNATURE, SMART_SIGNATURE, 0, 0x4FC200]))
    low = draw(st.sampled_from([0, 1, 6, 0x7F, 0x81, 0xF1]))
    line: dict = {"ata": {"command": "0xb0", "features": sub, "lba": signature | low}}
    if sub in SMART_PAGES:
        line["data_in_len"] = SECTOR
    return line


@st.composite
def unknown(draw, ahci: bool) -> dict:
    pool = UNKNOWN + ((0x63, 0x64, 0x65) if ahci else (0x60, 0x61, 0x90))
    line: dict = {"ata": {"command": _hex(draw(st.sampled_from(pool))), "lba": draw(st.integers(0, 64)),
                          "count": draw(st.integers(0, 4)), "device": "0x40"}}
    shape = draw(st.sampled_from(["none", "in", "out"]))
    if shape == "in":
        line["data_in_len"] = SECTOR
    elif shape == "out":
        line["data_out"] = {"pattern": 0xA5, "len": SECTOR}
    return line


@st.composite
def ide_mismatch(draw) -> dict:
    """IDE lines whose data shape does not match the command but which QEMU still completes: data for a command
    without data, bus-master DMA around a command without data, a PIO write longer than its transfer."""
    base = draw(st.one_of(no_data(), set_features(), set_multiple()))
    choice = draw(st.sampled_from(["in", "out", "dma", "dma-in"]))
    if choice == "in":
        base["data_in_len"] = SECTOR
    elif choice == "out":
        base["data_out"] = {"pattern": 0x3C, "len": SECTOR}
    elif choice == "dma":
        base["dma"] = True
    else:
        base.update(dma=True, data_in_len=SECTOR)
    return base


def _fis(command: int, *, features: int = 0, lba: int = 0, count: int = 0, device: int = 0x40, icc: int = 0,
         control: int = 0, auxiliary: bytes = bytes(4)) -> str:
    fis = bytes([0x27, 0x80, command, features & 0xFF, lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF, device,
                 lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF, features >> 8, count & 0xFF, count >> 8, icc,
                 control]) + auxiliary
    return fis.hex()


@st.composite
def raw_fis(draw) -> dict:
    """A raw Register H2D FIS with bytes the register form does not reach: ICC, control (nIEN, HOB) and the
    auxiliary field. FISes QEMU 7.2.22 ignores (another type, the C bit clear, a PM port, reserved bits) leave
    PxCI set, so the driver waits out its 30-second timer against QEMU: tests/controllers/ata/test_ahci.py pins
    them on emu's side instead."""
    command = draw(st.sampled_from([0x25, 0xEC, 0xE7, 0x35, 0xC8]))
    line: dict = {"fis": _fis(command, lba=draw(st.integers(0, 64)), count=1, device=draw(_DEVICE),
                              icc=draw(st.sampled_from([0, 0xFF])), control=draw(st.sampled_from([0, 0x02, 0x80])),
                              auxiliary=draw(st.sampled_from([bytes(4), b"\xff" * 4])))}
    if command == 0x35:
        line["data_out"] = {"pattern": 0x77, "len": SECTOR}
    elif command != 0xE7:
        line["data_in_len"] = SECTOR
    return line


def lines(controller: str) -> st.SearchStrategy[dict]:
    """One script line for `controller` ("ide" or "ahci")."""
    ahci = controller == "ahci"
    kinds = [rw(), rw(), dsm(), dsm(), no_data(), set_features(), set_multiple(), multiple_rw(), page(),
             unknown(ahci)]
    kinds += [ncq(), ncq(), raw_fis()] if ahci else [ide_mismatch()]
    return st.one_of(kinds)


def scripts(controller: str) -> st.SearchStrategy[list[dict]]:
    return st.lists(lines(controller), min_size=1, max_size=8)
