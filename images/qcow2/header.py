"""The qcow2 header (cluster 0): parse and validate it before anything is allocated, and build it.

Validation follows qemu 7.2's qcow2_do_open: every check names the field it rejects, and table sizes
are compared with the file size before any table is read. `build` lays cluster 0 out in
qcow2_update_header's order, so a header we write is byte-identical to the one qemu-img writes for
the same image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from construct import ConstructError

from emu.errors import InvalidImage, UnsupportedFeature
from images.qcow2 import layout as L


@dataclass
class Qcow2Header:
    version: int = 3
    cluster_bits: int = 16
    size: int = 0
    crypt_method: int = 0
    l1_size: int = 0
    l1_table_offset: int = 0
    refcount_table_offset: int = 0
    refcount_table_clusters: int = 0
    nb_snapshots: int = 0
    snapshots_offset: int = 0
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    compression_type: int = 0
    backing_file: str | None = None
    backing_format: str | None = None
    unknown_fields: bytes = b""                       # header bytes beyond 112 (preserved)
    unknown_extensions: list[tuple[int, bytes]] = field(default_factory=list)
    bitmaps_extension: bytes | None = None
    feature_names: dict[tuple[int, int], str] = field(default_factory=dict)  # from the file's table

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    def header_length(self) -> int:
        if self.version == 2:
            return L.V2_HEADER_LENGTH
        return L.V3_HEADER_LENGTH + len(self.unknown_fields)

    # -- parsing -----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes, file_size: int) -> Qcow2Header:
        """Parse cluster 0 (`data` may be shorter than a cluster if the file is) and validate it."""
        if len(data) < L.V2_HEADER_LENGTH:
            raise InvalidImage(f"file too short for a qcow2 header ({len(data)} bytes)", field="header")
        if data[:4] != L.MAGIC:
            raise InvalidImage(f"bad magic {data[:4].hex()} (expected {L.MAGIC.hex()})", field="magic")
        version = int.from_bytes(data[4:8], "big")
        if version not in (2, 3):
            raise InvalidImage(f"unsupported qcow2 version {version} (2 and 3 exist)", field="version")
        if version == 3 and len(data) < L.V3_MIN_HEADER_LENGTH:
            raise InvalidImage("file too short for a version 3 header", field="header")
        try:
            raw = L.HEADER.parse(data)
        except ConstructError as exc:
            raise InvalidImage(f"truncated header ({exc.__class__.__name__})", field="header") from None
        h = cls(version=version, cluster_bits=raw.cluster_bits, size=raw.size, crypt_method=raw.crypt_method,
                l1_size=raw.l1_size, l1_table_offset=raw.l1_table_offset,
                refcount_table_offset=raw.refcount_table_offset,
                refcount_table_clusters=raw.refcount_table_clusters, nb_snapshots=raw.nb_snapshots,
                snapshots_offset=raw.snapshots_offset)
        if not L.MIN_CLUSTER_BITS <= h.cluster_bits <= L.MAX_CLUSTER_BITS:
            raise InvalidImage(f"cluster_bits {h.cluster_bits} outside {L.MIN_CLUSTER_BITS}.."
                               f"{L.MAX_CLUSTER_BITS}", field="cluster_bits")
        cs = h.cluster_size
        header_length = L.V2_HEADER_LENGTH
        if version == 3:
            header_length = raw.header_length
            if header_length < L.V3_MIN_HEADER_LENGTH:
                raise InvalidImage(f"header_length {header_length} < 104", field="header_length")
            if header_length > cs:
                raise InvalidImage(f"header_length {header_length} exceeds the cluster size",
                                   field="header_length")
            if header_length > L.V3_HEADER_LENGTH:
                h.unknown_fields = bytes(data[L.V3_HEADER_LENGTH:header_length])
            h.incompatible_features = raw.incompatible_features
            h.compatible_features = raw.compatible_features
            h.autoclear_features = raw.autoclear_features
            h.refcount_order = raw.refcount_order
            h.compression_type = raw.compression_type or 0
            if h.refcount_order > L.MAX_REFCOUNT_ORDER:
                raise InvalidImage(f"refcount_order {h.refcount_order} > {L.MAX_REFCOUNT_ORDER}",
                                   field="refcount_order")
        h._parse_extensions(data, header_length)
        h._check_features()
        h._check_tables(file_size)
        h._parse_backing_name(data)
        return h

    def _parse_extensions(self, data: bytes, start: int) -> None:
        cs = self.cluster_size
        # Extensions end at the backing file name, or at the end of cluster 0 (qcow2_read_extensions).
        backing_offset = int.from_bytes(data[8:16], "big")
        ext_end = min(cs, backing_offset) if backing_offset else cs
        offset = start
        while offset + 8 <= min(ext_end, len(data)):
            ext = L.EXTENSION_HEADER.parse(data[offset:offset + 8])
            if ext.type == L.EXT_END:
                return
            body_start = offset + 8
            if body_start + ext.length > min(ext_end, len(data)):
                raise InvalidImage(f"header extension {ext.type:#x} of {ext.length} bytes runs past the "
                                   "end of the extension area", field="header_extension", offset=offset)
            body = bytes(data[body_start:body_start + ext.length])
            if ext.type == L.EXT_BACKING_FORMAT:
                if ext.length > L.MAX_BACKING_FORMAT:
                    raise InvalidImage(f"backing format name of {ext.length} bytes is too long",
                                       field="backing_format", offset=offset)
                self.backing_format = body.decode("ascii", "replace")
            elif ext.type == L.EXT_FEATURE_TABLE:
                for i in range(0, len(body) - 47, 48):
                    entry = L.FEATURE_NAME.parse(body[i:i + 48])
                    name = entry.name.rstrip(b"\0").decode("ascii", "replace")
                    self.feature_names[(entry.type, entry.bit)] = name
            elif ext.type == L.EXT_BITMAPS:
                self.bitmaps_extension = body
            elif ext.type == L.EXT_DATA_FILE:
                raise UnsupportedFeature("external data files are not supported by emu", field="data_file")
            elif ext.type == L.EXT_CRYPTO:
                raise UnsupportedFeature("encrypted images are not supported by emu", field="crypto")
            else:
                self.unknown_extensions.append((ext.type, body))
            offset = body_start + ((ext.length + 7) & ~7)

    def _check_features(self) -> None:
        unknown = self.incompatible_features & ~L.INCOMPAT_KNOWN
        if unknown:
            names = []
            for bit in range(64):
                if unknown >> bit & 1:
                    names.append(self.feature_names.get((0, bit), f"Unknown incompatible feature: {1 << bit:x}"))
            raise UnsupportedFeature("unsupported qcow2 feature(s): " + ", ".join(names),
                                     field="incompatible_features")
        if self.incompatible_features & L.INCOMPAT_DATA_FILE:
            raise UnsupportedFeature("external data files are not supported by emu",
                                     field="incompatible_features")
        if self.incompatible_features & L.INCOMPAT_EXTL2:
            raise UnsupportedFeature("extended L2 entries (subclusters) are not supported by emu",
                                     field="incompatible_features")
        if bool(self.incompatible_features & L.INCOMPAT_COMPRESSION) != (self.compression_type != 0):
            raise InvalidImage("compression type bit and compression_type field disagree",
                               field="compression_type")
        if self.compression_type not in (0, 1):
            raise InvalidImage(f"unknown compression_type {self.compression_type}", field="compression_type")
        if self.compression_type == 1:
            raise UnsupportedFeature("zstd-compressed images are not supported by emu (zlib is)",
                                     field="compression_type")
        if self.crypt_method:
            raise UnsupportedFeature(f"encryption (crypt_method {self.crypt_method}) is not supported by emu",
                                     field="crypt_method")

    def _check_tables(self, file_size: int) -> None:
        cs = self.cluster_size
        l2_entries = cs // 8
        need_l1 = -(-self.size // (cs * l2_entries)) if self.size else 0
        if self.size >= 1 << 63 or need_l1 > L.MAX_L1_BYTES // 8:
            raise InvalidImage(f"virtual size {self.size} is too large for {cs}-byte clusters", field="size")
        if self.l1_size < need_l1:
            raise InvalidImage(f"L1 table too small: {self.l1_size} entries, {need_l1} needed",
                               field="l1_size")
        if self.l1_size * 8 > L.MAX_L1_BYTES:
            raise InvalidImage(f"L1 table too large: {self.l1_size} entries", field="l1_size")
        _table_in_file("l1_table_offset", self.l1_table_offset, self.l1_size * 8, cs, file_size)
        if self.refcount_table_clusters == 0:
            raise InvalidImage("image does not contain a reference count table",
                               field="refcount_table_clusters")
        if self.refcount_table_clusters * cs > L.MAX_REFTABLE_BYTES:
            raise InvalidImage(f"reference count table too large: {self.refcount_table_clusters} clusters",
                               field="refcount_table_clusters")
        _table_in_file("refcount_table_offset", self.refcount_table_offset,
                       self.refcount_table_clusters * cs, cs, file_size)
        if self.nb_snapshots > L.MAX_SNAPSHOTS:
            raise InvalidImage(f"too many snapshots: {self.nb_snapshots}", field="nb_snapshots")
        if self.nb_snapshots:
            _table_in_file("snapshots_offset", self.snapshots_offset, 40 * self.nb_snapshots, cs, file_size)
        ranges = [("header", 0, cs), ("l1_table_offset", self.l1_table_offset, self.l1_size * 8),
                  ("refcount_table_offset", self.refcount_table_offset, self.refcount_table_clusters * cs)]
        if self.nb_snapshots:
            ranges.append(("snapshots_offset", self.snapshots_offset, 40 * self.nb_snapshots))
        for i, (name_a, start_a, len_a) in enumerate(ranges):
            for name_b, start_b, len_b in ranges[i + 1:]:
                if len_a and len_b and start_a < start_b + len_b and start_b < start_a + len_a:
                    raise InvalidImage(f"overlaps {name_a.removesuffix('_offset')}", field=name_b,
                                       offset=start_b)

    def _parse_backing_name(self, data: bytes) -> None:
        offset = int.from_bytes(data[8:16], "big")
        size = int.from_bytes(data[16:20], "big")
        if not offset:
            return
        cs = self.cluster_size
        if offset > cs or offset + size > cs:
            raise InvalidImage("backing file name does not fit in the first cluster",
                               field="backing_file_offset", offset=offset)
        if size > L.MAX_BACKING_NAME:
            raise InvalidImage(f"backing file name too long ({size} bytes)", field="backing_file_size")
        if offset + size > len(data):
            raise InvalidImage("backing file name runs past the end of the file", field="backing_file_offset")
        try:
            self.backing_file = bytes(data[offset:offset + size]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidImage("backing file name is not UTF-8", field="backing_file_offset") from None
        if not self.backing_file:
            self.backing_file = None

    # -- building ----------------------------------------------------------------------------------
    def build(self) -> bytes:
        """Cluster 0 up to the end of the backing file name (the rest of the cluster is zero)."""
        fields = dict(magic=L.MAGIC, version=self.version, backing_file_offset=0, backing_file_size=0,
                      cluster_bits=self.cluster_bits, size=self.size, crypt_method=self.crypt_method,
                      l1_size=self.l1_size, l1_table_offset=self.l1_table_offset,
                      refcount_table_offset=self.refcount_table_offset,
                      refcount_table_clusters=self.refcount_table_clusters, nb_snapshots=self.nb_snapshots,
                      snapshots_offset=self.snapshots_offset, incompatible_features=None,
                      compatible_features=None, autoclear_features=None, refcount_order=None,
                      header_length=None, compression_type=None)
        if self.version >= 3:
            fields.update(incompatible_features=self.incompatible_features,
                          compatible_features=self.compatible_features,
                          autoclear_features=self.autoclear_features, refcount_order=self.refcount_order,
                          header_length=self.header_length(), compression_type=self.compression_type)
        out = bytearray(L.HEADER.build(fields))
        out += self.unknown_fields
        if self.backing_format:
            out += _extension(L.EXT_BACKING_FORMAT, self.backing_format.encode("ascii"))
        if self.version >= 3 and self.cluster_size > 4096:
            table = b"".join(L.FEATURE_NAME.build(dict(type=t, bit=b, name=n.encode().ljust(46, b"\0")))
                             for t, b, n in L.FEATURE_NAMES)
            out += _extension(L.EXT_FEATURE_TABLE, table)
        if self.bitmaps_extension is not None:
            out += _extension(L.EXT_BITMAPS, self.bitmaps_extension)
        for ext_type, body in self.unknown_extensions:
            out += _extension(ext_type, body)
        out += _extension(L.EXT_END, b"")
        if self.backing_file:
            name = self.backing_file.encode("utf-8")
            if len(name) > L.MAX_BACKING_NAME or len(out) + len(name) > self.cluster_size:
                raise InvalidImage("backing file name does not fit in the header cluster",
                                   field="backing_file")
            out[8:16] = len(out).to_bytes(8, "big")
            out[16:20] = len(name).to_bytes(4, "big")
            out += name
        if len(out) > self.cluster_size:
            raise InvalidImage("header extensions do not fit in the first cluster", field="header")
        return bytes(out)


def _extension(ext_type: int, body: bytes) -> bytes:
    head = L.EXTENSION_HEADER.build(dict(type=ext_type, length=len(body)))
    return head + body + bytes(-len(body) % 8)


def _table_in_file(name: str, offset: int, length: int, cluster_size: int, file_size: int) -> None:
    if offset % cluster_size:
        raise InvalidImage("table offset is not cluster aligned", field=name, offset=offset)
    if length and offset + length > file_size:
        raise InvalidImage(f"table of {length} bytes runs past the end of the file ({file_size} bytes)",
                           field=name, offset=offset)
