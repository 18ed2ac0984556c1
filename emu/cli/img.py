"""`emu img`: create, info, map, check, compare, convert, bench, with qemu-img's flags and output."""

from __future__ import annotations

import json
import os
import sys

from emu.block import Drive, DriveOptions
from emu.cli.chain import cmd_commit, cmd_compact, cmd_immutable, cmd_rebase, cmd_snapshot, cmd_stream, snapshot_table
from emu.cli.common import Parser, open_for_cli, parse_options
from emu.errors import EmuError, UnsupportedFeature, UsageError
from emu.units import human_size, parse_size
from images import create_image, describe_create, open_image
from images.backend import CheckResult
from images.convert import DEFAULT_MIN_SPARSE, convert
from images.inspect import backing_path, compare_images, image_info, map_extents

SUBCOMMANDS = ("create", "info", "map", "check", "compare", "convert", "bench", "snapshot", "commit", "rebase",
               "stream", "compact", "immutable")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: emu img {" + ",".join(SUBCOMMANDS) + "} ...\n\n"
              "Like qemu-img: 'emu img <command> --help' lists a command's options.")
        return 0 if argv else 1
    command = argv[0]
    handler = {"create": cmd_create, "info": cmd_info, "map": cmd_map, "check": cmd_check,
               "compare": cmd_compare, "convert": cmd_convert, "bench": cmd_bench,
               "snapshot": cmd_snapshot, "commit": cmd_commit, "rebase": cmd_rebase, "stream": cmd_stream,
               "compact": cmd_compact, "immutable": cmd_immutable}.get(command)
    if handler is None:
        raise UsageError(f"unknown command '{command}' (expected one of {', '.join(SUBCOMMANDS)})")
    return handler(argv[1:])


# -- create ----------------------------------------------------------------------------------------
def cmd_create(argv: list[str]) -> int:
    p = Parser("emu img create", "Create a new image (qemu-img create).")
    p.add_argument("-f", dest="fmt", default="raw", help="image format (raw, qcow2, vdi, vpc, vhdx, vmdk)")
    p.add_argument("-o", dest="options", action="append", default=[], help="format options k=v,...")
    p.add_argument("-b", dest="backing", help="backing file (qcow2, vdi, vpc, vhdx, vmdk)")
    p.add_argument("-F", dest="backing_fmt", help="backing file format (required with -b)")
    p.add_argument("-u", dest="unsafe", action="store_true", help="do not open the backing file")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("filename")
    p.add_argument("size", nargs="?")
    a = p.parse_args(argv)
    options = parse_options(a.options)
    size = parse_size(a.size) if a.size is not None else None
    create_image(a.filename, a.fmt, size, options, backing=a.backing, backing_fmt=a.backing_fmt)
    if not a.quiet:
        if size is None:                     # qemu-img prints the size asked for, else the backing file's
            image = open_image(a.filename, a.fmt, read_only=True, open_backing=False)
            size = image.virtual_size
            image.close()
        described = describe_create(a.fmt, options, size, a.backing, a.backing_fmt)
        print(f"Formatting '{a.filename}', fmt={a.fmt} {described}")
    return 0


# -- info ------------------------------------------------------------------------------------------
def cmd_info(argv: list[str]) -> int:
    p = Parser("emu img info", "Show an image's format, sizes and format-specific data (qemu-img info).")
    p.add_argument("-f", dest="fmt")
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("--backing-chain", action="store_true", help="describe every image of the chain")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("filename")
    a = p.parse_args(argv)
    image = open_for_cli(a.filename, a.fmt, read_only=True)
    try:
        layers = image.chain() if a.backing_chain else [image]
        infos = [image_info(layer) for layer in layers]
        if a.output == "json":
            print(json.dumps(infos if a.backing_chain else infos[0], indent=4))
        else:
            print("\n\n".join(_human_info(layer, info) for layer, info in zip(layers, infos)))
    finally:
        image.close()
    return 0


def _human_info(image, info: dict) -> str:
    lines = [f"image: {info['filename']}", f"file format: {info['format']}",
             f"virtual size: {human_size(info['virtual-size'])} ({info['virtual-size']} bytes)",
             f"disk size: {human_size(info['actual-size'])}"]
    if "cluster-size" in info:
        lines.append(f"cluster_size: {info['cluster-size']}")
    if info.get("dirty-flag"):
        lines.append("cleanly shut down: no")
    if image.backing_name:
        full = backing_path(image)
        line = f"backing file: {image.backing_name}"
        if full != image.backing_name:
            line += f" (actual path: {full})"
        lines.append(line)
        if image.backing_format:
            lines.append(f"backing file format: {image.backing_format}")
    if info.get("snapshots"):
        lines += snapshot_table(info["snapshots"])
    specific = info.get("format-specific")
    if specific:
        lines.append("Format specific information:")
        for key, value in specific["data"].items():
            text = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"    {key.replace('-', ' ')}: {text}")
    lines.append("Space reclaim (emu):")
    lines += [f"    {key.replace('-', ' ')}: {text}" for key, text in info["reclaim"].items()]
    return "\n".join(lines)


# -- map -------------------------------------------------------------------------------------------
def cmd_map(argv: list[str]) -> int:
    p = Parser("emu img map", "List the image's extents and where their data lives (qemu-img map).")
    p.add_argument("-f", dest="fmt")
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("--start-offset", default="0")
    p.add_argument("--max-length")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("filename")
    a = p.parse_args(argv)
    start = parse_size(a.start_offset, what="start offset")
    length = parse_size(a.max_length, what="max length") if a.max_length else None
    image = open_for_cli(a.filename, a.fmt, read_only=True)
    try:
        entries = map_extents(image, start, length)
        if a.output == "json":
            print("[" + ",\n".join(_map_json_line(e.to_json()) for e in entries) + "]")
        else:
            print(f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File")
            for e in entries:
                if e.data and not e.zero:
                    if e.offset is None:
                        raise UnsupportedFeature("File contains external, encrypted or compressed clusters.",
                                                 path=a.filename)
                    print(f"{_c_hex(e.start):<16}{_c_hex(e.length):<16}{_c_hex(e.offset):<16}{e.filename}")
    finally:
        image.close()
    return 0


def _c_hex(value: int) -> str:
    """printf's %#x: no 0x prefix for zero."""
    return f"{value:#x}" if value else "0"


def _map_json_line(entry: dict) -> str:
    """qemu-img's own map JSON layout: '{ "start": 0, "length": ..., ...}' one per line."""
    return "{ " + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in entry.items()) + "}"


# -- check -----------------------------------------------------------------------------------------
def cmd_check(argv: list[str]) -> int:
    p = Parser("emu img check", "Check an image's metadata for consistency (qemu-img check). Exit status: "
                                "0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no checks for "
                                "this format.")
    p.add_argument("-f", dest="fmt")
    p.add_argument("--output", choices=("human", "json"), default="human")
    p.add_argument("-r", dest="repair", choices=("leaks", "all"))
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("filename")
    a = p.parse_args(argv)
    image = open_for_cli(a.filename, a.fmt, read_only=a.repair is None, open_backing=False, check_mode=True)
    try:
        try:
            result = image.check(a.repair)
        except UnsupportedFeature:
            print("emu img: This image format does not support checks", file=sys.stderr)
            return 63
        for message in result.messages:
            print(message, file=sys.stderr)
        if a.output == "json":
            print(json.dumps(_check_json(result, a.filename, image.format_name), indent=4))
        elif not a.quiet:
            if result.leaks_fixed or result.corruptions_fixed:
                print("The following inconsistencies were found and repaired:\n\n"
                      f"    {result.leaks_fixed} leaked clusters\n    {result.corruptions_fixed} corruptions\n\n"
                      "Double checking the fixed image now...")
            print(_check_human(result))
    finally:
        image.close()
    if result.check_errors:
        print("emu img: Check failed", file=sys.stderr)
        return 1
    return 2 if result.corruptions else 3 if result.leaks else 0


def _check_json(r: CheckResult, filename: str, fmt: str) -> dict:
    out: dict = {}
    if r.image_end_offset:
        out["image-end-offset"] = r.image_end_offset
    if r.total_clusters:
        out["total-clusters"] = r.total_clusters
    for key, value in (("corruptions", r.corruptions), ("corruptions-fixed", r.corruptions_fixed)):
        if value:
            out[key] = value
    out["check-errors"] = r.check_errors
    for key, value in (("leaks", r.leaks), ("leaks-fixed", r.leaks_fixed),
                       ("allocated-clusters", r.allocated_clusters),
                       ("fragmented-clusters", r.fragmented_clusters),
                       ("compressed-clusters", r.compressed_clusters)):
        if value:
            out[key] = value
    out["filename"] = filename
    out["format"] = fmt
    return out


def _check_human(r: CheckResult) -> str:
    lines = []
    if not (r.corruptions or r.leaks or r.check_errors):
        lines.append("No errors were found on the image.")
    else:
        if r.corruptions:
            lines.append(f"\n{r.corruptions} errors were found on the image.\n"
                         "Data may be corrupted, or further writes to the image may corrupt it.")
        if r.leaks:
            lines.append(f"\n{r.leaks} leaked clusters were found on the image.\n"
                         "This means waste of disk space, but no harm to data.")
        if r.check_errors:
            lines.append(f"\n{r.check_errors} internal errors have occurred during the check.")
    if r.total_clusters and r.allocated_clusters:
        a = r.allocated_clusters
        lines.append(f"{a}/{r.total_clusters} = {a * 100.0 / r.total_clusters:0.2f}% allocated, "
                     f"{r.fragmented_clusters * 100.0 / a:0.2f}% fragmented, "
                     f"{r.compressed_clusters * 100.0 / a:0.2f}% compressed clusters")
    if r.image_end_offset:
        lines.append(f"Image end offset: {r.image_end_offset}")
    return "\n".join(lines)


# -- compare ---------------------------------------------------------------------------------------
def cmd_compare(argv: list[str]) -> int:
    p = Parser("emu img compare", "Compare the guest-visible content of two images (qemu-img compare). "
                                  "Exit status: 0 identical, 1 different, 2 error.")
    p.add_argument("-f", dest="fmt1")
    p.add_argument("-F", dest="fmt2")
    p.add_argument("-s", dest="strict", action="store_true", help="strict: sizes and allocation must match")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("filename1")
    p.add_argument("filename2")
    try:
        a = p.parse_args(argv)
        first = open_for_cli(a.filename1, a.fmt1, read_only=True)
        try:
            second = open_for_cli(a.filename2, a.fmt2, read_only=True)
        except EmuError:
            first.close()
            raise
    except EmuError as exc:
        print(f"emu img: {exc}", file=sys.stderr)
        return 2
    try:
        result = compare_images(first, second, strict=a.strict)
    except EmuError as exc:
        print(f"emu img: {exc}", file=sys.stderr)
        return 2
    finally:
        first.close()
        second.close()
    if not a.quiet:
        print(result.message)
    return 0 if result.identical else 1


# -- convert ---------------------------------------------------------------------------------------
def cmd_convert(argv: list[str]) -> int:
    p = Parser("emu img convert", "Copy an image's guest view into a new image (qemu-img convert).")
    p.add_argument("-f", dest="fmt")
    p.add_argument("-O", dest="out_fmt", default="raw")
    p.add_argument("-o", dest="options", action="append", default=[])
    p.add_argument("-S", dest="sparse", default=str(DEFAULT_MIN_SPARSE),
                   help="minimum run of zeros left unallocated (0: write everything)")
    p.add_argument("-B", dest="backing", help="make the output an overlay of this backing file")
    p.add_argument("-F", dest="backing_fmt")
    p.add_argument("-c", dest="compress", action="store_true")
    p.add_argument("-p", dest="progress", action="store_true")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("source")
    p.add_argument("target")
    a = p.parse_args(argv)
    if a.compress:
        raise UsageError("-c: writing compressed clusters is not supported by emu (reading them is)")
    min_sparse = parse_size(a.sparse, what="sparse size", default_suffix="b")
    source = open_for_cli(a.source, a.fmt, read_only=True)
    try:
        if os.path.realpath(a.source) == os.path.realpath(a.target):
            raise UsageError("the source and the target are the same file")
        create_image(a.target, a.out_fmt, source.virtual_size, parse_options(a.options), backing=a.backing,
                     backing_fmt=a.backing_fmt)
        target = open_image(a.target, a.out_fmt)
        try:
            convert(source, target, min_sparse=min_sparse, progress=_progress if a.progress else None)
        finally:
            target.close()
    finally:
        source.close()
    if a.progress:
        print("    (100.00/100%)")
    return 0


def _progress(done: int, total: int) -> None:
    print(f"    ({done * 100.0 / total:.2f}/100%)", end="\r", flush=True)


# -- bench -----------------------------------------------------------------------------------------
def cmd_bench(argv: list[str]) -> int:
    from emu.block.bench import BenchConfig, run_bench
    p = Parser("emu img bench", "Time a stream of reads or writes through the block layer (qemu-img bench). "
                                "The last line is qemu-img bench's own 'Run completed in S seconds.'")
    p.add_argument("-c", dest="count", type=int, default=75000)
    p.add_argument("-d", dest="depth", type=int, default=64)
    p.add_argument("-f", dest="fmt")
    p.add_argument("-o", dest="offset", default="0")
    p.add_argument("-s", dest="bufsize", default="4096")
    p.add_argument("-S", dest="step", default="0")
    p.add_argument("-t", dest="cache", default="writeback", choices=("writeback", "unsafe", "writethrough"))
    p.add_argument("-w", dest="write", action="store_true")
    p.add_argument("-q", dest="quiet", action="store_true")
    p.add_argument("-n", dest="native", action="store_true", help="accepted for compatibility")
    p.add_argument("-i", dest="aio", help="accepted for compatibility")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted for compatibility")
    p.add_argument("--pattern", default="0")
    p.add_argument("--flush-interval", type=int, default=0)
    p.add_argument("--no-drain", action="store_true")
    p.add_argument("filename")
    a = p.parse_args(argv)
    pattern = int(a.pattern, 0) if a.pattern.lstrip("-").isalnum() else -1
    if not 0 <= pattern <= 0xFF:
        raise UsageError("Invalid pattern byte specified")
    if a.count < 1 or a.depth < 1:
        raise UsageError("-c and -d must be at least 1")
    if a.flush_interval and not a.write:
        raise UsageError("--flush-interval is only available in write tests")
    if a.flush_interval and a.flush_interval < a.depth:
        raise UsageError("Flush interval can't be smaller than depth")
    cfg = BenchConfig(count=a.count, depth=a.depth, bufsize=parse_size(a.bufsize, what="buffer size"),
                      step=parse_size(a.step, what="step size"), offset=parse_size(a.offset, what="offset"),
                      write=a.write, pattern=pattern, flush_interval=a.flush_interval)
    if cfg.bufsize < 1:
        raise UsageError("Invalid buffer size specified")
    image = open_for_cli(a.filename, a.fmt, read_only=not a.write, cache=a.cache)
    drive = Drive(image, DriveOptions(read_only=not a.write))
    try:
        print(f"Sending {cfg.count} {'write' if cfg.write else 'read'} requests, {cfg.bufsize} bytes each, "
              f"{cfg.depth} in parallel (starting at offset {cfg.offset}, step size {cfg.step or cfg.bufsize})")
        if cfg.flush_interval:
            print(f"Sending flush every {cfg.flush_interval} requests")
        elapsed = run_bench(drive, cfg)
    finally:
        drive.close()
    print(f"Run completed in {elapsed:3.3f} seconds.")
    return 0

