"""Fast codecs for the per-I/O tables, and the bounded table cache.

L1/L2/refcount tables are arrays of big-endian integers (layout.u64_table / layout.refcount_block);
here they are decoded into native `array`s once per load, so a lookup is an index, not a parse.
Tests check these codecs byte for byte against the construct definitions.
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable

_SWAP = sys.byteorder == "little"
_TYPECODE = {8: "B", 16: "H", 32: "I", 64: "Q"}
assert array("I").itemsize == 4 and array("Q").itemsize == 8


def decode_u64(data: bytes) -> array:
    table = array("Q")
    table.frombytes(data)
    if _SWAP:
        table.byteswap()
    return table


def encode_u64(table: array) -> bytes:
    if not _SWAP:
        return table.tobytes()
    out = array("Q", table)
    out.byteswap()
    return out.tobytes()


class RefcountCodec:
    """Refcount blocks of 1..64-bit entries; sub-byte entries are packed LSB first (qcow2.txt)."""

    def __init__(self, refcount_order: int, cluster_size: int) -> None:
        self.bits = 1 << refcount_order
        self.entries = cluster_size * 8 // self.bits
        self.max = (1 << self.bits) - 1
        self._per_byte = 8 // self.bits if self.bits < 8 else 0
        self._typecode = _TYPECODE.get(self.bits, "B")

    def empty(self) -> array:
        return array(self._typecode, bytes(self.entries * array(self._typecode).itemsize))

    def decode(self, data: bytes) -> array:
        if self._per_byte:
            mask, bits = self.max, self.bits
            return array("B", [(byte >> (k * bits)) & mask for byte in data for k in range(self._per_byte)])
        block = array(self._typecode)
        block.frombytes(data)
        if _SWAP and self.bits > 8:
            block.byteswap()
        return block

    def encode(self, block: array) -> bytes:
        if self._per_byte:
            per, bits = self._per_byte, self.bits
            out = bytearray(len(block) // per)
            for i in range(len(out)):
                value = 0
                for k in range(per):
                    value |= block[i * per + k] << (k * bits)
                out[i] = value
            return bytes(out)
        if _SWAP and self.bits > 8:
            block = array(self._typecode, block)
            block.byteswap()
        return block.tobytes()


class TableCache:
    """A bounded LRU of decoded tables keyed by host offset, with write-back of dirty entries.

    `load(offset)` reads a table; `store(offset, table)` writes one. `before_store()` runs before a
    dirty table is written out by eviction: it is how the L2 cache makes refcounts durable first.
    Memory is bounded by `capacity` tables whatever the virtual size.
    """

    def __init__(self, capacity: int, load: Callable[[int], array], store: Callable[[int, array], None],
                 before_store: Callable[[], None] | None = None) -> None:
        self.capacity = max(2, capacity)
        self._load = load
        self._store = store
        self._before_store = before_store
        self._tables: OrderedDict[int, array] = OrderedDict()
        self.dirty: set[int] = set()

    def get(self, offset: int) -> array:
        tables = self._tables
        table = tables.get(offset)
        if table is None:
            table = self._load(offset)
            self._insert(offset, table)
        else:
            tables.move_to_end(offset)
        return table

    def put_new(self, offset: int, table: array) -> None:
        """Install a table created in memory (new allocation) as dirty."""
        self._insert(offset, table)
        self.dirty.add(offset)

    def mark_dirty(self, offset: int, table: array) -> None:
        """Record a change; re-adopts the table if it was evicted while the caller held it."""
        if offset not in self._tables:
            self._insert(offset, table)
        self.dirty.add(offset)

    def drop(self, offset: int) -> None:
        """Forget a table whose cluster was freed (its content no longer matters)."""
        self._tables.pop(offset, None)
        self.dirty.discard(offset)

    def write(self, offset: int) -> None:
        """Write one cached table now (if dirty)."""
        if offset in self.dirty:
            self._store(offset, self._tables[offset])
            self.dirty.discard(offset)

    def write_dirty(self) -> bool:
        """Write every dirty table; True if anything was written."""
        if not self.dirty:
            return False
        for offset in sorted(self.dirty):
            self._store(offset, self._tables[offset])
        self.dirty.clear()
        return True

    def cached(self, offset: int) -> array | None:
        return self._tables.get(offset)

    def clear(self) -> None:
        self._tables.clear()
        self.dirty.clear()

    def _insert(self, offset: int, table: array) -> None:
        tables = self._tables
        tables[offset] = table
        while len(tables) > self.capacity:
            victim, victim_table = next(iter(tables.items()))
            if victim in self.dirty:
                if self._before_store is not None:
                    self._before_store()
                self._store(victim, victim_table)
                self.dirty.discard(victim)
            del tables[victim]
