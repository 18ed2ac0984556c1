"""Record what a real Linux 6.1 guest sends to its disk when it runs a scenario's steps: the calibration oracle of
emu's guest models. Not part of CI (it boots a kernel under TCG: about 20 s per controller).

    python tests/oracle/linux_guest.py record SCENARIO [--controllers ide,ahci,virtio-blk,virtio-scsi]
                                       [--set KEY=VALUE ...] [--tag WORD] [--out tests/oracle/linux-6.1]
                                       [--cache DIR]

Debian's kernel (linux-image-amd64) and busybox-static are fetched with `apt-get download` and unpacked with
`dpkg-deb -x`; the initramfs holds busybox, the host's e2fsprogs (mkfs.ext4) and util-linux (fstrim,
blkdiscard) with their libraries, and the kernel's storage and ext4 modules. The guest boots under
`qemu-system-x86_64 -accel tcg` with the scenario's disk (one image of its format, its drive options) behind
QEMU's own controller; it runs the steps as shell commands while the tracepoint block:block_rq_issue records every
request its block layer hands the driver. At each phase the guest stops and waits over a second serial line
while the host samples the image's st_blocks. The trace is written as one fixture per controller:

    # header lines: the command, the software, the queue limits (/sys/block/X/queue)
    phase NAME HOST_BYTES
    request PHASE OP SECTOR SECTORS      (OP: read, write, write-zeroes, discard, flush)
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from scenarios.spec import load  # noqa: E402

IMAGE_FORMATS = ("raw", "qcow2", "vdi", "vpc", "vhdx", "vmdk")
MODULES = ("crc32c_generic libcrc32c crct10dif_generic crc64_rocksoft_generic t10-pi virtio_pci virtio_blk "
           "virtio_scsi sd_mod ata_piix ahci ext4 vfat nls_cp437 nls_ascii").split()
COPY_MODULES = MODULES[:1] + ("virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev scsi_mod scsi_common "
                              "libata libahci jbd2 mbcache crc16 fat crc64 crc64-rocksoft crc-t10dif "
                              "crct10dif_common").split() + MODULES[1:]
HOST_TOOLS = ("mke2fs", "fstrim", "blkdiscard")
QUEUE_FILES = ("max_sectors_kb max_hw_sectors_kb max_segments max_segment_size max_discard_segments "
               "discard_granularity discard_max_bytes discard_max_hw_bytes write_zeroes_max_bytes "
               "logical_block_size physical_block_size").split()
MACHINES = {
    "ide": ("pc", ["-device", "ide-hd,drive=d0,bus=ide.0"]),
    "ahci": ("q35", ["-device", "ide-hd,drive=d0,bus=ide.0"]),
    "virtio-blk": ("pc", ["-device", "virtio-blk-pci,drive=d0"]),
    "virtio-scsi": ("pc", ["-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=d0,bus=scsi0.0"]),
}
RWBS_OPS = {"R": "read", "W": "write", "D": "discard", "N": "write-zeroes"}

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
for m in MODULES; do modprobe $m 2>/dev/null; done
DISK=
for i in $(seq 1 600); do
  for d in /dev/vda /dev/sda; do [ -b $d ] && DISK=$d && break 2; done
  sleep 0.1
done
T=/sys/kernel/tracing
Q=/sys/block/${DISK#/dev/}/queue
for f in QUEUE; do echo "emu-queue $f $(cat $Q/$f)" > /dev/ttyS0; done
echo 0 > $T/tracing_on; echo 65536 > $T/buffer_size_kb; echo > $T/trace
echo 1 > $T/events/block/block_rq_issue/enable
# the handshake line stays open: a tty nobody holds open drops what arrives, and the host's answer may come first
exec 3<>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo
phase() { echo "emu-phase $1" > $T/trace_marker; echo "emu-phase $1" >&3; read ack <&3; }
echo 1 > $T/tracing_on
. /steps.sh > /dev/ttyS0 2>&1
echo 0 > $T/tracing_on
echo emu-trace-begin > /dev/ttyS0
cat $T/trace > /dev/ttyS0
echo emu-trace-end > /dev/ttyS0
poweroff -f
"""


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def fetch_guest(cache: str) -> tuple[str, str, str]:
    """The kernel, its module tree and busybox, from Debian's packages (unpacked once into `cache`)."""
    os.makedirs(cache, exist_ok=True)
    marker = os.path.join(cache, "unpacked")
    if not os.path.exists(marker):
        sh(f"cd {cache} && apt-get download linux-image-amd64 busybox-static >/dev/null 2>&1")
        depends = sh(f"cd {cache} && dpkg-deb -f linux-image-amd64_*.deb Depends")
        image = depends.split(",")[0].split()[0]
        sh(f"cd {cache} && apt-get download {image} >/dev/null 2>&1 && mkdir -p k bb && dpkg-deb -x {image}_*.deb k && "
           "dpkg-deb -x busybox-static_*.deb bb")
        open(marker, "w").write(image)
    release = os.listdir(os.path.join(cache, "k", "lib", "modules"))[0]
    return (os.path.join(cache, "k", "boot", f"vmlinuz-{release}"), os.path.join(cache, "k", "lib", "modules",
            release), os.path.join(cache, "bb", "bin", "busybox"))


def build_initramfs(cache: str) -> str:
    """busybox, the host's e2fsprogs and util-linux tools with their libraries, the modules, /init."""
    kernel, modules, busybox = fetch_guest(cache)
    out = os.path.join(cache, "initramfs.gz")
    if os.path.exists(out):
        return out
    root = tempfile.mkdtemp(prefix="emu-initramfs-")
    os.makedirs(os.path.join(root, "bin"))
    for d in ("dev", "proc", "sys", "mnt", "tmp"):
        os.makedirs(os.path.join(root, d))
    os.symlink("bin", os.path.join(root, "sbin"))
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    for applet in sh(f"{busybox} --list").split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    for tool in HOST_TOOLS:
        path = shutil.which(tool) or shutil.which(tool, path="/sbin:/usr/sbin")
        target = os.path.join(root, "bin", tool)
        if os.path.lexists(target):
            os.unlink(target)
        shutil.copy(path, target)
        for lib in re.findall(r"(/\S+) \(0x", sh(f"ldd {path}")):
            dest = root + lib
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(lib, dest)
    mkfs = os.path.join(root, "bin", "mkfs.ext4")
    if os.path.lexists(mkfs):
        os.unlink(mkfs)
    os.symlink("mke2fs", mkfs)
    release = os.path.basename(modules)
    for name in COPY_MODULES:
        found = sh(f"find {modules} -name '{name}.ko'").split()
        for path in found[:1]:
            dest = os.path.join(root, "lib", "modules", release, os.path.relpath(path, modules))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(path, dest)
    for f in ("modules.builtin", "modules.order"):
        shutil.copy(os.path.join(modules, f), os.path.join(root, "lib", "modules", release, f))
    sh(f"cd {root} && {busybox} depmod -b . {release}")
    with open(os.path.join(root, "init"), "w") as f:
        f.write(INIT.replace("MODULES", " ".join(MODULES)).replace("QUEUE", " ".join(QUEUE_FILES)))
    os.chmod(os.path.join(root, "init"), 0o755)
    sh(f"cd {root} && find . | {busybox} cpio -o -H newc 2>/dev/null | gzip -1 > {out}")
    shutil.rmtree(root)
    return out


def shell_steps(scenario) -> str:
    """The scenario's steps as the guest's shell runs them."""
    lines = []
    mounted = "/mnt"
    for step in scenario.steps:
        a = step.args
        do = step.do
        if do == "mkfs":
            lines.append(f"mkfs.ext4 -F -q {scenario.fs.mkfs} $DISK")
        elif do == "mount":
            opts = a.get("options", scenario.fs.mount)
            lines.append(f"mount -t ext4 {'-o ' + shlex.quote(opts) if opts else ''} $DISK {mounted}")
        elif do == "umount":
            lines.append(f"umount {mounted}")
        elif do == "write":
            if a.get("content", "random") == "pattern" or a["size"] % (1 << 20) or "offset" in a:
                raise SystemExit(f"step {do}: only whole MiB of random or zeros, appended, can be recorded")
            source = "/dev/zero" if a.get("content") == "zeros" else "/dev/urandom"
            lines.append(f"dd if={source} of={mounted}/{a['file']} bs=1M count={a['size'] >> 20} "
                         "oflag=append conv=notrunc 2>/dev/null")
        elif do == "delete":
            lines.append(f"rm {mounted}/{a['file']}")
        elif do == "truncate":
            lines.append(f"truncate -s {a['size']} {mounted}/{a['file']}")
        elif do == "sync":
            lines.append("sync")
        elif do == "fstrim":
            opts = "".join(f" -{flag} {a[key]}" for flag, key in (("o", "offset"), ("l", "length"), ("m", "minlen"))
                           if key in a)
            lines.append(f"fstrim -v{opts} {mounted}")
        elif do == "blkdiscard":
            opts = "".join(f" -{flag} {a[key]}" for flag, key in (("o", "offset"), ("l", "length")) if key in a)
            lines.append(f"blkdiscard{opts} $DISK")
        elif do == "zero-fill" and a.get("tool", "dd") == "dd":
            count = f" count={a['size'] >> 20}" if "size" in a else ""
            lines.append(f"dd if=/dev/zero of={mounted}/zero.fill bs=1M{count} 2>/dev/null; sync; "
                         f"rm {mounted}/zero.fill; sync")
        elif do == "idle":
            lines.append(f"sleep {a['seconds']}")
        else:
            raise SystemExit(f"step {do}: not something a Linux guest's shell does")
        if step.phase:
            lines.append(f"phase {step.phase}")
    return "\n".join(lines) + "\n"


def _phase_server(path: str, image: str, phases: list) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        with conn:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode(errors="replace").strip()
                    if text.startswith("emu-phase "):
                        phases.append((text.split()[1], os.stat(image).st_blocks * 512))
                        conn.sendall(b"go\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


def record(scenario, controller: str, cache: str) -> tuple[list[str], list[tuple], dict[str, str]]:
    """Boot the guest on `controller`, run the steps: (console lines, requests, queue limits) and the phases."""
    initramfs = build_initramfs(cache)
    kernel = fetch_guest(cache)[0]
    busybox = fetch_guest(cache)[2]
    work = tempfile.mkdtemp(prefix="emu-guest-")
    try:
        os.mkdir(os.path.join(work, "s"))
        with open(os.path.join(work, "s", "steps.sh"), "w") as f:
            f.write(shell_steps(scenario))
        sh(f"cd {work}/s && echo steps.sh | {busybox} cpio -o -H newc 2>/dev/null | gzip -1 > ../steps.gz")
        with open(os.path.join(work, "initrd.gz"), "wb") as out:
            for part in (initramfs, os.path.join(work, "steps.gz")):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        if scenario.disk.backing:
            raise SystemExit("a backing chain cannot be recorded yet: give the scenario a single image")
        fmt = scenario.disk.format
        options = ",".join(f"{k}={v}" for k, v in scenario.disk.options.items())
        image = os.path.join(work, f"disk.{fmt}")
        sh(f"qemu-img create -q -f {fmt}{' -o ' + options if options else ''} {image} {scenario.disk.size}")
        phases: list = []
        sock = os.path.join(work, "phase.sock")
        server = _phase_server(sock, image, phases)
        serial = os.path.join(work, "serial.txt")
        machine, device = MACHINES[controller]
        subprocess.run(["qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-m", "512", "-nodefaults",
                        "-display", "none", "-no-reboot", "-kernel", kernel, "-initrd",
                        os.path.join(work, "initrd.gz"), "-append", "console=ttyS0 quiet loglevel=1 panic=-1",
                        "-serial", f"file:{serial}", "-chardev", f"socket,id=ph,path={sock}", "-serial",
                        "chardev:ph", "-drive", f"file={image},format={fmt},if=none,id=d0,"
                        f"discard={scenario.drive.discard},detect-zeroes={scenario.drive.detect_zeroes}", *device],
                       check=True, timeout=1800)
        server.close()
        console = open(serial, errors="replace").read().splitlines()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    queue = dict(line.split(None, 2)[1:] for line in console if line.startswith("emu-queue ") and
                 len(line.split()) >= 3)
    requests, pending = [], []
    for line in console:
        m = re.search(r"block_rq_issue: \S+ (\S+) (\d+) \(([^)]*)\) (\d+) \+ (\d+)", line)
        if m:
            rwbs = m.group(1)
            op = "flush" if rwbs.startswith("FF") else RWBS_OPS[rwbs[0]]
            pending.append((op, int(m.group(4)), int(m.group(5))))
            continue
        m = re.search(r"tracing_mark_write: emu-phase (\S+)", line)
        if m:
            requests.extend((m.group(1), *r) for r in pending)
            pending = []
    return phases, requests, queue


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("scenario")
    r.add_argument("--controllers", default=",".join(MACHINES))
    r.add_argument("--set", action="append", default=[], dest="overrides")
    r.add_argument("--tag", default="", help="a word in the fixtures' names for the settings (raw-unmap)")
    r.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "linux-6.1"))
    r.add_argument("--cache", default=os.path.expanduser("~/.cache/emu-oracle"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    qemu = sh("qemu-system-x86_64 --version").splitlines()[0]
    for controller in a.controllers.split(","):
        scenario = load(a.scenario, [*a.overrides, f"controller={controller}"], formats=IMAGE_FORMATS)
        phases, requests, queue = record(scenario, controller, a.cache)
        kernel = open(os.path.join(a.cache, "unpacked")).read().strip()
        tag = f"-{a.tag}" if a.tag else ""
        path = os.path.join(a.out, f"{scenario.name}{tag}-{controller}.txt")
        with open(path, "w") as f:
            f.write(f"# recorded by: python tests/oracle/linux_guest.py record {a.scenario} --controllers "
                    f"{controller}" + "".join(f" --set {o}" for o in a.overrides) + "\n")
            f.write(f"# guest: Debian {kernel}, busybox-static, host e2fsprogs/util-linux; host: {qemu}; "
                    f"disk: {scenario.disk.format}, discard={scenario.drive.discard}, "
                    f"detect-zeroes={scenario.drive.detect_zeroes}\n")
            for key in QUEUE_FILES:
                f.write(f"# queue {key} {queue.get(key, '?')}\n")
            for name, host in phases:
                f.write(f"phase {name} {host}\n")
            for phase, op, sector, sectors in requests:
                f.write(f"request {phase} {op} {sector} {sectors}\n")
        print(f"{path}: {len(requests)} requests, phases {phases}")


if __name__ == "__main__":
    main()
