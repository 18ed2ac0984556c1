"""Random guest input for each front end, as the hypothesis strategies the fuzz tests share.

ATA command FISes (an AHCI command FIS, or the task file an IDE channel carries) and AHCI PRD tables; virtio split
ring descriptor tables, virtio-blk request types, sectors and discard / write-zeroes segments; virtio-scsi LUN
fields and CDBs. Addresses and sizes are drawn around the edges of the guest RAM, the scratch buffer and the disk
the caller names, plus anything at all.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from controllers.drivers.virtio_blk import header, segment
from controllers.virtio import layouts as L

# -- ATA -----------------------------------------------------------------------------------------------------------
ATA_OPCODES = [0x06, 0x20, 0x24, 0x25, 0x27, 0x30, 0x35, 0x60, 0x61, 0x63, 0x64, 0xC8, 0xCA, 0xE7, 0xEA, 0xEC, 0xEF,
               0xF8, 0x00, 0xFF]


def h2d_fises():
    """Register H2D FISes: the FIS type, the C bit mostly set, a known or any opcode, any other field; or any
    bytes at all."""
    return st.builds(lambda head, cmd, rest: bytes([0x27, head, cmd]) + rest,
                     st.sampled_from([0x80, 0x80, 0x80, 0x00, 0x81, 0x90]),
                     st.sampled_from(ATA_OPCODES) | st.integers(0, 255),
                     st.binary(min_size=17, max_size=17)) | st.binary(min_size=0, max_size=24)


def prd_tables(ram: int, scratch: int):
    """AHCI PRDTs as (address, byte count) entries; None keeps the driver's own table."""
    return st.none() | st.lists(st.tuples(
        st.sampled_from([scratch, scratch + 0x10000, ram - 512, ram, ram + 4096, 1 << 40, 0]) | st.integers(0, ram * 2),
        st.sampled_from([1, 512, 4096, 1 << 22]) | st.integers(1, 1 << 22)), max_size=4)


# -- virtio split rings --------------------------------------------------------------------------------------------
def descriptor_tables(ram: int, scratch: int):
    """Descriptor tables of up to 6 (addr, len, flags, next) entries, or a well-formed header + status chain in
    `scratch` with one descriptor replaced by a random one."""
    addresses = st.sampled_from([scratch, scratch, scratch + 512, ram - 16, ram, 0, 2**64 - 8]) \
        | st.integers(0, ram + 4096)
    lengths = st.sampled_from([1, 16, 16, 17, 512, 513, 32, 0, 1 << 31]) | st.integers(0, 70000)
    flags = st.sampled_from([0, 1, 2, 3, 3, 2, 4, 5, 6]) | st.integers(0, 0xFFFF)
    nexts = st.integers(0, 6) | st.sampled_from([255, 256, 300])
    random_tables = st.lists(st.tuples(addresses, lengths, flags, nexts), min_size=1, max_size=6)
    valid = [(scratch, 16, L.VIRTQ_DESC_F_NEXT, 1), (scratch + 512, 513, L.VIRTQ_DESC_F_WRITE, 0)]
    mutated = st.builds(lambda i, d: [d if n == i else v for n, v in enumerate(valid)], st.integers(0, 2),
                        st.tuples(addresses, lengths, flags, nexts))
    return random_tables | mutated


CHAIN_HEADS = st.sampled_from([0, 0, 0, 1, 255, 256])


def blk_headers(sectors: int):
    """What the scratch buffer of a descriptor chain holds: a request header (and segment), or any bytes."""
    return st.sampled_from([header(L.BLK_T_FLUSH), header(L.BLK_T_IN), header(L.BLK_T_OUT), header(L.BLK_T_GET_ID),
                            header(L.BLK_T_DISCARD) + segment(0, 1), header(L.BLK_T_IN, sectors)]) \
        | st.binary(max_size=32)


# -- virtio-blk requests -------------------------------------------------------------------------------------------
BLK_TYPES = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 11, 13, 14, 0x80000001]) | st.integers(0, 2**32 - 1)


def blk_sectors(sectors: int):
    return st.sampled_from([0, 1, sectors - 1, sectors, 2**63]) | st.integers(0, 2**64 - 1)


def blk_segments(sectors: int):
    """Discard / write-zeroes segments as (sector, num_sectors, flags)."""
    return st.lists(st.tuples(blk_sectors(sectors), st.sampled_from([0, 1, 8, sectors, 4194304])
                              | st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 3]) | st.integers(0, 2**32 - 1)),
                    max_size=3)


BLK_DATA_IN = st.sampled_from([0, 1, 511, 512, 1024])

# -- virtio-scsi ---------------------------------------------------------------------------------------------------
LUN0 = bytes([1, 0, 0x40, 0]) + bytes(4)
LUN_FIELDS = st.one_of(st.just(LUN0), st.just(LUN0), st.just(LUN0), st.sampled_from([
    bytes([1, 0, 0, 0]) + bytes(4), bytes([1, 0, 0x40, 3]) + bytes(4),
    bytes([1, 0, 0, 0, 0, 0, 0, 1]), bytes([0, 0, 0, 0]) + bytes(4), bytes([1, 5, 0, 0]) + bytes(4),
    bytes([1, 0, 0x80, 0]) + bytes(4), bytes([0xC1, 1]) + bytes(6),
]), st.binary(min_size=8, max_size=8))


def scsi_lbas(blocks: int):
    return st.sampled_from([0, 1, 8, blocks - 8, blocks - 1, blocks, 2**32 - 1]) | st.integers(0, 2**64 - 1)


def scsi_cdbs(blocks: int):
    """READ/WRITE/VERIFY/WRITE SAME/SYNCHRONIZE CACHE (10) and (16), UNMAP, INQUIRY, a few fixed CDBs, at LBAs
    and counts around the disk's end; or any bytes."""
    lbas = scsi_lbas(blocks)
    counts = st.sampled_from([0, 1, 8, 255, 256, blocks]) | st.integers(0, 2**32 - 1)
    known = st.one_of(
        st.builds(lambda op, lba, n: struct.pack(">BBIBHB", op, 0, lba % 2**32, 0, n % 2**16, 0),
                  st.sampled_from([0x28, 0x2A, 0x2F, 0x35, 0x41]), lbas, counts),
        st.builds(lambda op, f, lba, n: struct.pack(">BBQIBB", op, f, lba, n, 0, 0),
                  st.sampled_from([0x88, 0x8A, 0x93, 0x9E, 0x91]), st.sampled_from([0, 0x08, 0x10, 0x12, 0x01]),
                  lbas, counts),
        st.builds(lambda n, a: bytes([0x42, a, 0, 0, 0, 0, 0, n >> 8, n & 0xFF, 0]),
                  st.sampled_from([0, 8, 24, 40, 7, 4096]), st.sampled_from([0, 1])),
        st.builds(lambda evpd, page, n: bytes([0x12, evpd, page, 0, n, 0]), st.integers(0, 3),
                  st.sampled_from([0, 0x80, 0x83, 0xB0, 0xB2, 0x42]), st.integers(0, 255)),
        st.sampled_from([bytes(6), bytes([0x03, 0, 0, 0, 18, 0]), bytes([0xA0]) + bytes(8) + b"\x40\0\0",
                         bytes([0x25]) + bytes(9), bytes([0x1A, 0, 0x3F, 0, 255, 0])]),
    )
    return known | st.binary(max_size=20)


DATA_LENS = st.sampled_from([0, 0, 8, 24, 36, 255, 512, 1024, 4096]) | st.integers(0, 5000)
