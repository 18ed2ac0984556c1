"""External snapshots kept as files next to the active image, and VirtualBox's immutable images.

A snapshot named NAME of `dir/disk.qcow2` is the file `dir/disk@NAME.qcow2`. Taking it renames the
active image (no data is copied, whatever the disk holds) and creates a new, empty active image on
top of it, so the path the guest uses never changes and the snapshot's file is only ever opened
read-only again, as a backing file. The snapshot tree is nothing but the links between the files of
the directory: the active image's chain, plus the branches that reverts leave behind.

Reverting throws the active image away and starts a new empty one on a snapshot. Deleting a
snapshot merges its one child into it (cost: what the child holds) and the merged file takes the
child's place; a snapshot with several children cannot be deleted, as in VirtualBox.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from emu.errors import EmuError, UsageError
from images.backend import backing_path
from images.chain import Moved, commit, relink, sparse_options
from images.probe import create_image, detect_format, open_image

SEPARATOR = "@"
RAW_CHILD_FORMAT = "qcow2"   # raw has no backing link; libvirt's external snapshots put qcow2 on it


def snapshot_file(active: str, name: str) -> str:
    """The file that holds snapshot `name` of the active image `active`."""
    if not name or os.sep in name or "\0" in name or name.startswith(".") or len(name) > 128:
        raise UsageError(f"invalid snapshot name {name!r}: use 1 to 128 characters, no '/', not "
                         "starting with '.'")
    stem, ext = os.path.splitext(active)
    return f"{stem}{SEPARATOR}{name}{ext}"


@dataclass
class Layer:
    """One file of a snapshot tree."""

    path: str
    format: str
    virtual_size: int
    disk_size: int          # host bytes allocated to the file
    mtime: float
    parent: str | None      # real path of the backing file
    tag: str | None = None  # the snapshot name when the file is named like one of the active's
    active: bool = False
    children: list[Layer] = field(default_factory=list)


def _describe(path: str) -> Layer:
    image = open_image(path, read_only=True, open_backing=False)
    try:
        parent = os.path.realpath(backing_path(path, image.backing_name)) if image.backing_name else None
        return Layer(path, image.format_name, image.virtual_size, image.host.allocated_bytes(),
                     os.stat(path).st_mtime, parent)
    finally:
        image.close()


def _scan(directory: str) -> dict[str, Layer]:
    """Every image file of a directory that has or could have a backing link, by real path."""
    layers: dict[str, Layer] = {}
    for entry in sorted(os.scandir(directory or "."), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        path = os.path.join(directory, entry.name)
        try:
            layers[os.path.realpath(path)] = _describe(path)
        except (EmuError, OSError):
            continue    # not an image emu can open: not part of any tree
    return layers


def children_of(path: str) -> list[str]:
    """The images in `path`'s directory whose backing file is `path`."""
    real = os.path.realpath(path)
    return [layer.path for layer in _scan(os.path.dirname(path)).values() if layer.parent == real]


def _refuse_children(path: str, what: str) -> None:
    children = children_of(path)
    if children:
        raise UsageError(f"cannot {what}: {', '.join(children)} uses {path} as its backing file")


def _new_child(path: str, parent: str, like: str) -> None:
    """Create `path` as an empty child of `parent`, laid out like the image `like` (which may be
    `path` itself, about to be replaced): written under a temporary name, then renamed over."""
    image = open_image(like, read_only=True, open_backing=False)
    try:
        fmt, options = (RAW_CHILD_FORMAT, {}) if image.format_name == "raw" else \
            (image.format_name, sparse_options(image)[0])
        size = image.virtual_size
    finally:
        image.close()
    directory = os.path.dirname(path)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.new")
    name = os.path.relpath(parent, directory or ".")
    try:
        create_image(temporary, fmt, size, options, backing=name, backing_fmt=detect_format(parent))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# -- the operations --------------------------------------------------------------------------------
def create(active: str, name: str) -> str:
    """Take snapshot `name`: the active image becomes the snapshot's file, unchanged, and a new empty
    active image is created on it. O(1): no guest data is read or copied."""
    snapshot = snapshot_file(active, name)
    if os.path.exists(snapshot):
        raise UsageError(f"snapshot '{name}' already exists ({snapshot})")
    _describe(active)
    _refuse_children(active, "take a snapshot")
    os.rename(active, snapshot)
    try:
        _new_child(active, snapshot, like=snapshot)
    except BaseException:
        os.rename(snapshot, active)
        raise
    return snapshot


def revert(active: str, name: str | None = None) -> str:
    """Throw the active image's data away and start a new empty one on snapshot `name` (default:
    the snapshot it is based on). Returns the snapshot file now below the active image."""
    if name is not None:
        parent = snapshot_file(active, name)
        if not os.path.exists(parent):
            raise UsageError(f"no snapshot '{name}' ({parent} does not exist)")
    else:
        parent_real = _describe(active).parent
        if parent_real is None:
            raise UsageError(f"{active} has no backing file to revert to")
        parent = parent_real
    _refuse_children(active, "revert")
    _new_child(active, parent, like=active)
    return parent


def delete(active: str, name: str) -> Moved:
    """Delete snapshot `name`: merge its child into it (cost: the child's data), and let the merged
    file take the child's place, relinking the child's own children to it."""
    snapshot = snapshot_file(active, name)
    if not os.path.exists(snapshot):
        raise UsageError(f"no snapshot '{name}' ({snapshot} does not exist)")
    children = children_of(snapshot)
    if len(children) > 1:
        raise UsageError(f"snapshot '{name}' has {len(children)} children ({', '.join(children)}); "
                         "like VirtualBox, emu deletes only snapshots with at most one child: revert "
                         "or delete the other branches first")
    if not children:
        os.remove(snapshot)
        return Moved(note=f"it had no child, so {snapshot} was simply removed")
    child = children[0]
    grandchildren = children_of(child)
    moved = commit(child, keep=True)
    os.replace(snapshot, child)
    for grandchild in grandchildren:
        relink(grandchild)
    moved.note = f"{child} was merged into the snapshot, which now takes its place"
    return moved


def tree(active: str) -> Layer:
    """The snapshot tree that holds the active image: its chain's bottom as the root, with every
    image of the directory that descends from a member of the chain."""
    layers = _scan(os.path.dirname(active))
    real = os.path.realpath(active)
    if real not in layers:
        layers[real] = _describe(active)
    layers[real].active = True
    node = layers[real]
    seen = {real}
    while node.parent is not None and node.parent not in seen:   # chain members outside the directory
        seen.add(node.parent)
        if node.parent not in layers:
            layers[node.parent] = _describe(node.parent)
        node = layers[node.parent]
    stem, ext = os.path.splitext(os.path.basename(active))
    for layer in layers.values():
        base = os.path.basename(layer.path)
        if base.startswith(stem + SEPARATOR) and base.endswith(ext):
            layer.tag = base[len(stem) + 1:len(base) - len(ext)]
        if layer.parent in layers and layer.parent != os.path.realpath(layer.path):
            layers[layer.parent].children.append(layer)
    return node


# -- VirtualBox immutable images -------------------------------------------------------------------
@dataclass
class PowerOn:
    child: str
    action: str             # "created", "reset" or "kept"
    discarded_bytes: int = 0


def power_on_immutable(base: str, child: str, *, auto_reset: bool = True) -> PowerOn:
    """Attach an immutable base as VirtualBox does at power-on: the base is never written (its
    write permission bits are cleared, and emu refuses to open such a file for writing, even as
    root); the guest writes into a differencing child of its own, which is reset (emptied) at every
    power-on unless auto-reset is off (VirtualBox's IMedium::autoReset, on by default)."""
    base_real = os.path.realpath(base)
    _describe(base)
    mode = os.stat(base).st_mode
    os.chmod(base, mode & ~0o222)     # write-protected: no one opens it for writing again
    if not os.path.exists(child):
        _new_child(child, base, like=base)
        return PowerOn(child, "created")
    layer = _describe(child)
    if layer.parent != base_real:
        raise UsageError(f"{child} is not a differencing image of {base}; refusing to reset it")
    if not auto_reset:
        return PowerOn(child, "kept")
    _new_child(child, base, like=child)
    return PowerOn(child, "reset", layer.disk_size)
