"""Test support shared by the property and interop tests: image variants and the reference model.

The model states what a guest must read after each operation, written from the documented
semantics (formats.md 1.7, controllers.md 7), independently of the code under test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from images import create_image, open_image

MiB = 1 << 20


@dataclass(frozen=True)
class Variant:
    name: str
    fmt: str
    options: dict = field(default_factory=dict)
    backing: str | None = None     # format of a backing file, or None
    size: int = 4 * MiB
    backing_size: int = 3 * MiB    # a shorter backing file: the tail reads as zeros

    @property
    def cluster_size(self) -> int:
        return int(self.options.get("cluster_size", 65536)) if self.fmt == "qcow2" else 1

    @property
    def v2(self) -> bool:
        return self.options.get("compat") == "0.10"


VARIANTS = [
    Variant("raw", "raw"),
    Variant("qcow2-v3-64k", "qcow2"),
    Variant("qcow2-v3-512", "qcow2", {"cluster_size": "512"}),
    Variant("qcow2-v3-4k", "qcow2", {"cluster_size": "4096"}),
    Variant("qcow2-v3-2m", "qcow2", {"cluster_size": "2097152"}, size=8 * MiB),
    Variant("qcow2-v2-64k", "qcow2", {"compat": "0.10"}),
    Variant("qcow2-v3-lazy", "qcow2", {"lazy_refcounts": "on", "cluster_size": "4096"}),
    Variant("qcow2-v3-over-qcow2", "qcow2", {}, backing="qcow2"),
    Variant("qcow2-v3-4k-over-raw", "qcow2", {"cluster_size": "4096"}, backing="raw"),
    Variant("qcow2-v2-over-qcow2", "qcow2", {"compat": "0.10"}, backing="qcow2"),
]


def base_pattern(size: int) -> bytes:
    """Recognisable backing content: every 4 KiB block holds its index, with a hole in the middle."""
    blocks = bytearray()
    for i in range(size // 4096):
        blocks += bytes([(i % 250) + 1]) * 4096
    blocks[size // 3:size // 3 + 200000] = bytes(200000)
    return bytes(blocks)


def make_variant(tmp_dir: str, variant: Variant) -> tuple[str, bytearray]:
    """Create the image (and its backing file); return its path and the initial guest view."""
    path = os.path.join(tmp_dir, f"disk.{variant.fmt}")
    model = bytearray(variant.size)
    if variant.backing:
        base = os.path.join(tmp_dir, f"base.{variant.backing}")
        create_image(base, variant.backing, variant.backing_size, {})
        content = base_pattern(variant.backing_size)
        image = open_image(base, variant.backing)
        image.write(0, content)
        image.close()
        create_image(path, variant.fmt, variant.size, variant.options, backing=os.path.basename(base),
                     backing_fmt=variant.backing)
        model[:len(content)] = content
    else:
        create_image(path, variant.fmt, variant.size, variant.options)
    return path, model


def model_discard(variant: Variant, model: bytearray, offset: int, length: int, unmap: bool) -> None:
    """What a discard does to the guest view (discard=unmap on the drive)."""
    if not unmap or length == 0:
        return
    if variant.fmt == "raw":
        model[offset:offset + length] = bytes(length)   # punched: the whole range reads zeros
        return
    if variant.v2 and variant.backing:
        return                                           # v2 with backing: discard ignored
    cs = variant.cluster_size
    start = -(-offset // cs) * cs
    end = (offset + length) // cs * cs
    if offset + length == variant.size:
        end = offset + length                            # the last partial cluster at the image end
    if end > start:
        model[start:end] = bytes(end - start)
