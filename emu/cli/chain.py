"""`emu img` commands on backing chains: snapshot, commit, rebase, stream, compact, immutable."""

from __future__ import annotations

import json
import os
import time

from emu.cli.common import Parser, open_for_cli
from emu.errors import UsageError
from emu.units import human_size
from images import chain, compact, snapshots


def snapshot_table(internal: list[dict]) -> list[str]:
    """qcow2 internal snapshots in qemu's bdrv_snapshot_dump layout."""
    lines = ["Snapshot list:", f"{'ID':<10}{'TAG':<17}{'VM SIZE':>8}{'DATE':>20}{'VM CLOCK':>13}{'ICOUNT':>11}"]
    for s in internal:
        date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["date-sec"]))
        secs = s["vm-clock-sec"]
        clock = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{s['vm-clock-nsec'] // 10**6:03d}"
        icount = s.get("icount")
        lines.append(f"{s['id']:<9} {s['name']:<16} {human_size(s['vm-state-size']):>8}{date:>20}{clock:>13}"
                     f"{'' if icount is None else icount:>11}")
    return lines


def _moved(moved: chain.Moved) -> str:
    text = f"{human_size(moved.data_bytes)} of data"
    if moved.zero_bytes:
        text += f" and {human_size(moved.zero_bytes)} of zeros"
    return text


# -- snapshot --------------------------------------------------------------------------------------
def cmd_snapshot(argv: list[str]) -> int:
    p = Parser("emu img snapshot", "External snapshots: each is a file next to the image, named "
               "IMAGE-STEM@NAME.EXT; the image's path always holds the active layer. -l also lists a "
               "qcow2 image's internal snapshots, as qemu-img snapshot -l.")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("-l", dest="list", action="store_true", help="list the snapshot tree")
    action.add_argument("-c", dest="create", metavar="NAME", help="take a snapshot (no data is copied)")
    action.add_argument("-a", dest="apply", metavar="NAME",
                        help="revert: discard the active layer and start an empty one on snapshot NAME")
    action.add_argument("-d", dest="delete", metavar="NAME",
                        help="delete a snapshot: merge its one child into it")
    p.add_argument("-f", dest="fmt")
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("filename")
    a = p.parse_args(argv)
    if a.list:
        return _list(a.filename, a.fmt, a.output)
    if a.fmt is not None:
        open_for_cli(a.filename, a.fmt, read_only=True, open_backing=False).close()   # -f must match
    path = a.filename
    if a.create is not None:
        made = snapshots.create(path, a.create)
        message = (f"Snapshot '{a.create}' taken: {made} holds the disk as it is now and is only read "
                   f"from now on; {path} is a new, empty image on top of it (no data copied)")
    elif a.apply is not None:
        parent = snapshots.revert(path, a.apply)
        message = (f"Reverted to snapshot '{a.apply}': the active layer's data was discarded; {path} is "
                   f"a new, empty image on {os.path.basename(parent)}")
    else:
        moved = snapshots.delete(path, a.delete)
        merged = f"merged {_moved(moved)}; " if moved.data_bytes or moved.zero_bytes else ""
        message = f"Deleted snapshot '{a.delete}': {merged}{moved.note}"
    if not a.quiet:
        print(message)
    return 0


def _list(path: str, fmt: str | None, output: str) -> int:
    image = open_for_cli(path, fmt, read_only=True, open_backing=False)
    try:
        internal = image.info_fields().get("snapshots", [])
    finally:
        image.close()
    root = snapshots.tree(path)
    if output == "json":
        print(json.dumps({"internal": internal, "tree": _tree_json(root)}, indent=4))
        return 0
    lines = snapshot_table(internal) if internal else []
    if root.children or root.active is False:
        rows = _tree_rows(root, "", "")
        widths = [max(len(row[i]) for row in rows + [HEADER]) for i in range(4)]
        if lines:
            lines.append("")
        lines.append("Snapshot tree (external: one file per layer, children below their parent):")
        for row in [HEADER] + rows:
            lines.append("  ".join(f"{cell:>{w}}" if i == 3 else f"{cell:<{w}}"
                                   for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[4])
    if lines:
        print("\n".join(line.rstrip() for line in lines))
    return 0


HEADER = ("FILE", "SNAPSHOT", "FORMAT", "DISK SIZE", "DATE")


def _tree_rows(layer: snapshots.Layer, lead: str, child_lead: str) -> list[tuple[str, ...]]:
    tag = "(active)" if layer.active else (layer.tag or "-")
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(layer.mtime))
    rows = [(lead + os.path.basename(layer.path), tag, layer.format, human_size(layer.disk_size), date)]
    for i, child in enumerate(layer.children):
        last = i == len(layer.children) - 1
        rows += _tree_rows(child, child_lead + ("└── " if last else "├── "),
                           child_lead + ("    " if last else "│   "))
    return rows


def _tree_json(layer: snapshots.Layer) -> dict:
    return {"filename": layer.path, "snapshot": layer.tag, "active": layer.active, "format": layer.format,
            "virtual-size": layer.virtual_size, "actual-size": layer.disk_size,
            "children": [_tree_json(child) for child in layer.children]}


# -- commit, rebase, stream ------------------------------------------------------------------------
def cmd_commit(argv: list[str]) -> int:
    p = Parser("emu img commit", "Write an image's data into its backing file (qemu-img commit); the "
               "image is emptied afterwards where the format allows (qcow2).")
    p.add_argument("-f", dest="fmt")
    p.add_argument("-b", dest="base", help="commit into this image of the chain (implies -d)")
    p.add_argument("-d", dest="keep", action="store_true", help="do not empty the image afterwards")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("filename")
    a = p.parse_args(argv)
    moved = chain.commit(a.filename, base=a.base, keep=a.keep, fmt=a.fmt)
    if not a.quiet:
        print("Image committed.")
        print(f"({_moved(moved)} written into the base; {moved.note})")
    return 0


def cmd_rebase(argv: list[str]) -> int:
    p = Parser("emu img rebase", "Change an image's backing file (qemu-img rebase). Safe mode copies what "
               "the old chain holds and the new one does not, so the guest view stays the same.")
    p.add_argument("-f", dest="fmt")
    p.add_argument("-b", dest="backing", required=True, help="the new backing file ('' for none)")
    p.add_argument("-F", dest="backing_fmt", help="the new backing file's format")
    p.add_argument("-u", dest="unsafe", action="store_true", help="only rewrite the link")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("filename")
    a = p.parse_args(argv)
    chain.rebase(a.filename, a.backing, new_fmt=a.backing_fmt, unsafe=a.unsafe, fmt=a.fmt)
    return 0


def cmd_stream(argv: list[str]) -> int:
    p = Parser("emu img stream", "Pull the data of the backing chain into an image (QEMU's block-stream); "
               "with -b the image keeps that base, without it the image becomes standalone.")
    p.add_argument("-f", dest="fmt")
    p.add_argument("-b", dest="base", help="stop at this image of the chain and keep it as the backing file")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("filename")
    a = p.parse_args(argv)
    moved = chain.stream(a.filename, base=a.base, fmt=a.fmt)
    if not a.quiet:
        after = f"its backing file is now {a.base}" if a.base else "it has no backing file now"
        print(f"Streamed {_moved(moved)} into {a.filename}; {after}")
    return 0


# -- compact, immutable ----------------------------------------------------------------------------
def cmd_compact(argv: list[str]) -> int:
    p = Parser("emu img compact", "Give the host back the space of blocks that hold only zeros, offline "
               "(VDI in place like VBoxManage; other formats rewritten like qemu-img convert -S).")
    p.add_argument("-f", dest="fmt")
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("filename")
    a = p.parse_args(argv)
    result = compact.compact(a.filename, a.fmt)
    if a.output == "json":
        print(json.dumps({"filename": result.path, "method": result.method,
                          "file-size-before": result.file_before, "file-size-after": result.file_after,
                          "actual-size-before": result.host_before, "actual-size-after": result.host_after,
                          "blocks-freed": result.blocks_freed}, indent=4))
        return 0
    print(f"{result.path}: compacted ({result.method})")
    print(f"  host space: {human_size(result.host_before)} -> {human_size(result.host_after)} "
          f"({human_size(max(0, result.host_before - result.host_after))} given back)")
    print(f"  file size:  {human_size(result.file_before)} -> {human_size(result.file_after)}")
    if result.blocks_freed:
        print(f"  {result.blocks_freed} block(s) of zeros freed")
    return 0


def cmd_immutable(argv: list[str]) -> int:
    p = Parser("emu img immutable", "Power on an attachment of an immutable base image, as VirtualBox "
               "does: the base is never written; the guest writes into CHILD, a differencing image that "
               "is emptied at each power-on unless --no-auto-reset is given.")
    p.add_argument("--no-auto-reset", dest="auto_reset", action="store_false",
                   help="keep the child's data from the last run")
    p.add_argument("base")
    p.add_argument("child")
    a = p.parse_args(argv)
    if os.path.realpath(a.base) == os.path.realpath(a.child):
        raise UsageError("the child must be another file than the immutable base")
    result = snapshots.power_on_immutable(a.base, a.child, auto_reset=a.auto_reset)
    if result.action == "created":
        print(f"{a.child}: created, a differencing image of the immutable base {a.base}")
    elif result.action == "reset":
        print(f"{a.child}: reset (auto-reset on): {human_size(result.discarded_bytes)} of writes from the "
              f"last run discarded; reads come from {a.base} again")
    else:
        print(f"{a.child}: kept (auto-reset off): the last run's writes stay visible")
    return 0
