"""Create qcow2 images exactly as `qemu-img create` 7.2 does (block/qcow2.c qcow2_co_create).

qemu writes a bare header with a one-cluster refcount table and one refcount block, opens that,
allocates clusters 0-2 for itself, writes the full header, then grows the L1 table through the
ordinary allocator and preallocates. Doing the same steps through our allocator gives the same
layout: a fresh 1 GiB image at 64 KiB clusters is 196,624 bytes, ending 16 bytes into the L1 cluster.
"""

from __future__ import annotations

from collections.abc import Callable

from emu.errors import EmuError, ImageError, UsageError
from emu.trace import NULL_TRACE
from emu.units import parse_size
from images.backend import backing_path
from images.hostfile import HostFile
from images.qcow2 import layout as L
from images.qcow2.header import Qcow2Header
from images.qcow2.image import open_qcow2
from images.qcow2.metadata import Metadata

PREALLOCATION = ("off", "metadata", "falloc", "full")
CREATE_OPTIONS = ("size", "compat", "cluster_size", "preallocation", "lazy_refcounts", "refcount_bits",
                  "backing_file", "backing_fmt", "compression_type", "extended_l2", "encryption",
                  "encrypt.format", "data_file", "data_file_raw")


def _bool_option(name: str, value: str) -> bool:
    if value in ("on", "true", "yes"):
        return True
    if value in ("off", "false", "no"):
        return False
    raise UsageError(f"qcow2: option {name} expects on or off, not '{value}'")


def describe(options: dict[str, str], size: int, backing: str | None, backing_fmt: str | None) -> str:
    parts = [f"cluster_size={parse_size(options.get('cluster_size', str(L.DEFAULT_CLUSTER_SIZE)))}",
             "extended_l2=off"]
    if "preallocation" in options:
        parts.append(f"preallocation={options['preallocation']}")
    parts += ["compression_type=zlib", f"size={size}"]
    backing = options.get("backing_file", backing)
    if backing:
        parts += [f"backing_file={backing}", f"backing_fmt={options.get('backing_fmt', backing_fmt)}"]
    if "compat" in options:
        parts.append(f"compat={options['compat']}")
    parts += [f"lazy_refcounts={options.get('lazy_refcounts', 'off')}",
              f"refcount_bits={options.get('refcount_bits', '16')}"]
    return " ".join(parts)


def create(path: str, size: int | None, options: dict[str, str], *, backing: str | None,
           backing_fmt: str | None, opener: Callable) -> None:
    for key in options:
        if key not in CREATE_OPTIONS:
            raise UsageError(f"qcow2: invalid parameter '{key}'")
    if "size" in options:
        size = parse_size(options["size"])
    backing = options.get("backing_file", backing)
    backing_fmt = options.get("backing_fmt", backing_fmt)
    compat = options.get("compat", "1.1")
    if compat in ("0.10", "v2"):
        version = 2
    elif compat in ("1.1", "v3"):
        version = 3
    else:
        raise UsageError(f"qcow2: compat '{compat}' is not 0.10 (v2) or 1.1 (v3)")
    cluster_size = parse_size(options.get("cluster_size", str(L.DEFAULT_CLUSTER_SIZE)), what="cluster_size")
    if cluster_size & (cluster_size - 1) or not (1 << L.MIN_CLUSTER_BITS) <= cluster_size <= (1 << L.MAX_CLUSTER_BITS):
        raise UsageError("qcow2: cluster size must be a power of two between 512 and 2048k")
    prealloc = options.get("preallocation", "off")
    if prealloc not in PREALLOCATION:
        raise UsageError(f"qcow2: preallocation '{prealloc}' is not one of {', '.join(PREALLOCATION)}")
    lazy = _bool_option("lazy_refcounts", options.get("lazy_refcounts", "off"))
    refcount_bits = int(options.get("refcount_bits", "16")) if options.get("refcount_bits", "16").isdigit() else 0
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64):
        raise UsageError("qcow2: refcount width must be a power of two and may not exceed 64 bits")
    if _bool_option("extended_l2", options.get("extended_l2", "off")):
        raise UsageError("qcow2: extended L2 entries (subclusters) are not supported by emu")
    if options.get("compression_type", "zlib") != "zlib":
        raise UsageError("qcow2: only compression_type=zlib is supported by emu")
    for key in ("encryption", "encrypt.format", "data_file"):
        if key in options:
            raise UsageError(f"qcow2: {key} is not supported by emu")
    if version < 3 and lazy:
        raise UsageError("qcow2: lazy refcounts only supported with compatibility level 1.1 and above "
                         "(use compat=1.1)")
    if version < 3 and refcount_bits != 16:
        raise UsageError("qcow2: different refcount widths than 16 bits require compatibility level 1.1 "
                         "or above (use compat=1.1)")
    if backing_fmt and not backing:
        raise UsageError("qcow2: backing format cannot be used without backing file")
    if backing and not backing_fmt:
        raise UsageError("backing file specified without backing format (use -F, as qemu-img 7.2 requires)")
    if backing and prealloc != "off":
        raise UsageError("qcow2: backing file and preallocation can only be used at the same time if "
                         "extended_l2 is on")
    if backing and size is None:
        size = _backing_size(path, backing, backing_fmt, opener)
    if size is None:
        raise UsageError("qcow2: image creation needs a size parameter")
    if size % 512:
        raise UsageError("qcow2: image size must be a multiple of 512 bytes")
    cluster_bits = cluster_size.bit_length() - 1
    if -(-size // (cluster_size * cluster_size // 8)) * 8 > L.MAX_L1_BYTES:
        raise UsageError(f"qcow2: virtual size {size} is too large for {cluster_size}-byte clusters")
    try:
        _write(path, size, version, cluster_bits, refcount_bits.bit_length() - 1, lazy, prealloc, backing,
               backing_fmt)
    except OSError as exc:
        raise ImageError(f"cannot create: {exc.strerror}", path=path) from None


def _backing_size(path: str, backing: str, backing_fmt: str, opener: Callable) -> int:
    full = backing_path(path, backing)
    try:
        image = opener(full, backing_fmt, read_only=True)
    except EmuError as exc:
        raise ImageError(f"could not open backing file to determine the size: {exc}", path=path) from None
    size = image.virtual_size
    image.close()
    return size


def _write(path: str, size: int, version: int, cluster_bits: int, refcount_order: int, lazy: bool,
           prealloc: str, backing: str | None, backing_fmt: str | None) -> None:
    cs = 1 << cluster_bits
    bare = Qcow2Header(version=version, cluster_bits=cluster_bits, refcount_table_offset=cs,
                       refcount_table_clusters=1, refcount_order=refcount_order,
                       compatible_features=L.COMPAT_LAZY_REFCOUNTS if lazy else 0)
    host = HostFile(path, writable=True, create=True)
    try:
        host.pwrite(0, bare.build().ljust(cs, b"\0"))
        table = bytearray(2 * cs)
        table[:8] = (2 * cs).to_bytes(8, "big")
        host.pwrite(cs, table)
    finally:
        host.close()
    host = HostFile(path, writable=True)
    image = open_qcow2(host, read_only=False)
    meta = image.meta
    try:
        # The bare image does not count its own three clusters yet (qemu: "we'll fix the
        # inconsistency later"), so this one allocation must not trip the overlap check.
        check, meta.refs.check_overlap = meta.refs.check_overlap, None
        if meta.refs.alloc(3) != 0:
            raise ImageError("first cluster of an empty image already in use", path=path)
        meta.refs.check_overlap = check
        meta.write_header()
        image.virtual_size = size
        _grow(meta, size, prealloc)
        if backing:
            meta.header.backing_file = backing
            meta.header.backing_format = backing_fmt
            image.backing_name, image.backing_format = backing, backing_fmt
            meta.write_header()
    finally:
        image.close()


def _grow(meta: Metadata, size: int, prealloc: str) -> None:
    """qcow2_co_truncate for a fresh image: grow the L1 table (exact size), preallocate, set the size."""
    cs = meta.cluster_size
    host = meta.host
    l1_size = -(-size // (cs << meta.l2_bits))
    if l1_size:
        meta.new_l1_table(l1_size)
    clusters = -(-size // cs)
    if prealloc == "metadata":
        data_end = _link_data(meta, 0, clusters, None)
        if data_end > host.size():   # so reads of the preallocated clusters do not hit EOF
            host.truncate(data_end)
    elif prealloc in ("falloc", "full"):
        last_cluster = _last_used_cluster(meta)
        old_end = (last_cluster + 1) * cs if last_cluster >= 0 else -(-host.size() // cs) * cs
        l2_tables = -(-clusters // meta.l2_entries) + 1
        start = meta.refs.refcount_area(old_end, clusters + l2_tables, True)
        meta.refs.alloc_at(start, clusters)
        new_end = start + clusters * cs
        old_size = host.size()
        if prealloc == "falloc":
            host.allocate(old_size, new_end - old_size)
        else:
            zeros = bytes(1 << 20)
            for pos in range(old_size, new_end, len(zeros)):
                host.pwrite(pos, zeros[:min(len(zeros), new_end - pos)])
        _link_data(meta, 0, clusters, start)
    if prealloc != "off":
        meta.flush()
    meta.write_virtual_size(size)


def _link_data(meta: Metadata, first: int, count: int, host_start: int | None) -> int:
    """Point L2 entries of guest clusters [first, first+count) at data clusters: freshly allocated per
    L2 table (metadata preallocation) or the contiguous area at host_start. Returns the data end."""
    cs = meta.cluster_size
    data_end = 0
    ci = first
    end = first + count
    while ci < end:
        table = meta.l2_for_write(ci >> meta.l2_bits, NULL_TRACE)
        index = ci & meta.l2_mask
        n = min(end - ci, meta.l2_entries - index)
        base = meta.refs.alloc(n) if host_start is None else host_start + (ci - first) * cs
        for k in range(n):
            table[index + k] = (base + k * cs) | L.OFLAG_COPIED
        meta.l2_cache.mark_dirty(meta.l2_offset(ci >> meta.l2_bits), table)
        data_end = base + n * cs
        ci += n
    return data_end


def _last_used_cluster(meta: Metadata) -> int:
    last = -(-meta.host.size() // meta.cluster_size) - 1
    while last >= 0 and meta.refs.get(last) == 0:
        last -= 1
    return last
