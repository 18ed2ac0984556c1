"""A scenario played: its disk made (scenarios.run), the guest booted on the machine, the steps performed in
simulated time and measured after each one, and the run's record, `result.json` (its schema in docs/scenarios.md).

The guest's steps run as SimPy processes on the machine's simulation; the offline ones (snapshot, commit, compact)
change the image files while the guest waits, and take the time the latency model gives the bytes they move. After
every step the monitor samples each layer's host bytes and the guest's used bytes; a step's requests and discards
are read from the Drive's traces in the monitor, the guest's own requests from its block device's log.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from emu.block import DriveOptions
from emu.errors import UsageError
from emu.sim import LatencyModel, Monitor
from emu.trace import Act
from scenarios.explain import Discard, Explainer, Freed
from scenarios.guest.content import fresh_content, synthetic_content
from scenarios.guest.ext4.fs import Committed
from scenarios.guest.linux.block import Issued
from scenarios.guest.select import driver_profile, make_guest
from scenarios.machine import build
from scenarios.run import HOST_BYTES, ScenarioDisk
from scenarios.spec import Scenario, Step

SCHEMA = 1
GUEST = "guest"                     # the monitor's layer for what the guest's file system reports
GUEST_USED = "guest_used_bytes"
OPS = ("read", "write", "discard", "write-zeroes", "flush")

DURABLE = ("mkfs", "sync", "umount", "zero-fill")     # steps after which every write so far is committed
Progress = Callable[[int, int, Step], None]     # (index, steps, the step about to run)
IMMUTABLE = ("immutable", "")                   # the key of what an immutable disk's auto-reset gives back


@dataclass
class Played:
    """A finished run: its result document, and every request the guest issued with the phase it ended in
    (None after the last phase)."""

    result: dict
    issued: list[tuple[str | None, Issued]] = field(default_factory=list)


class Player:
    """One scenario's run in `directory`, open until `close()`: the disk, the machine, the guest, the record."""

    def __init__(self, scenario: Scenario, directory: str) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.monitor = Monitor()
        options = DriveOptions(discard=scenario.drive.discard, detect_zeroes=scenario.drive.detect_zeroes)
        self.disk = ScenarioDisk(directory, scenario.disk, options, self.monitor, self.rng)
        self.timing = LatencyModel()
        try:
            self.machine = build(scenario.machine.controller, self.disk.drive, scenario.machine.profile,
                                 guest=driver_profile(scenario.machine.guest), timing=self.timing)
        except BaseException:
            self.disk.close()
            raise
        self.monitor.clock = lambda: self.machine.sim.now
        self.guest = make_guest(scenario.machine.guest, self.machine, self.rng)
        self.monitor.probe(GUEST, GUEST_USED, lambda: self.guest.used_bytes)
        # what the disk held at a snapshot, a copy or the immutable base's making: (kind, name) -> (state, files)
        self.saved: dict[tuple[str, str], tuple[Committed | None, dict[str, bytearray]]] = {}
        self.expected: dict[str, bytearray] = {}       # what each file holds, by what was written (real payload)
        self.durable: dict[str, bytearray] = {}        # ... as of the last step that committed everything
        self.steps: list[dict] = []
        self.phases: list[dict] = []
        self.issued: list[tuple[str | None, Issued]] = []
        self.explainer = Explainer()
        self.machine.run(self.guest.boot())
        self.maps_before = self.disk.maps()
        self.monitor.sample()

    def close(self) -> None:
        self.machine.close()
        self.disk.close()

    # -- the steps ---------------------------------------------------------------------------------------------------
    def play(self, progress: Progress | None = None) -> Played:
        total = len(self.scenario.steps)
        for index, step in enumerate(self.scenario.steps):
            if progress is not None:
                progress(index, total, step)
            self.step(index, step)
        self.issued.extend((None, r) for r in self.guest.dev.issued)
        self.guest.dev.issued.clear()
        return Played(self.result(), self.issued)

    def step(self, index: int, step: Step) -> dict:
        """Perform one step and record it (and its phase, if it ends one)."""
        sim = self.machine.sim
        start, served = sim.now, len(self.monitor.requests)
        issued_from = len(self.guest.dev.issued)
        output = self._do(step)
        if step.do in DURABLE:
            self.durable = {k: bytearray(v) for k, v in self.expected.items()}
        self._follow(index, served, self.guest.dev.issued[issued_from:])
        rows = {(row.layer, row.metric): row.value for row in self.monitor.sample()}
        layers = {name: int(rows[(name, HOST_BYTES)]) for name in self.disk.layers()}
        record = {"index": index, "do": step.do, "args": dict(step.args), "start": start, "end": sim.now,
                  "duration": sim.now - start, "layers": layers, "guest_used_bytes": self.guest.used_bytes,
                  "requests": self._requests(served),
                  "discards": self._discards(served, self.guest.dev.issued[issued_from:])}
        if output:
            record["output"] = output
        self.steps.append(record)
        if step.phase:
            top = self.disk.layers()[-1]
            self.phases.append({"name": step.phase, "time": sim.now, "host_bytes": layers[top], "layers": layers,
                                "guest_used_bytes": self.guest.used_bytes})
            self.issued.extend((step.phase, r) for r in self.guest.dev.issued)
            self.guest.dev.issued.clear()
        return record

    def _do(self, step: Step) -> dict:
        a, guest, run = step.args, self.guest, self.machine.run
        do = step.do
        if do == "mkfs":
            run(guest.mkfs(self.scenario.fs.type, self.scenario.fs.mkfs))
            self.expected = {}
        elif do == "mount":
            run(guest.mount(a.get("options", self.scenario.fs.mount)))
        elif do == "umount":
            run(guest.umount())
        elif do == "write":
            if self.scenario.disk.payload == "synthetic":
                self._write_synthetic(a["file"], a["size"], a["content"], a.get("offset"))
            else:
                data = fresh_content(self.rng, a["size"], a["content"])
                run(guest.write(a["file"], data, a.get("offset")))
                self._remember(a["file"], data, a.get("offset"))
        elif do == "delete":
            run(guest.delete(a["file"]))
            self.expected.pop(a["file"], None)
        elif do == "truncate":
            run(guest.truncate(a["file"], a["size"]))
            content = self.expected.setdefault(a["file"], bytearray())
            del content[a["size"]:]
            content.extend(bytes(a["size"] - len(content)))
        elif do == "sync":
            run(guest.sync())
        elif do == "fstrim":
            return {"trimmed_bytes": run(guest.fstrim(a.get("offset", 0), a.get("length"), a.get("minlen", 0)))}
        elif do == "zero-fill":
            windows = hasattr(guest, "sdelete")
            if (a.get("tool", "dd") == "sdelete") != windows:
                raise UsageError("zero-fill: tool=sdelete runs on Windows guests, tool=dd on Linux guests")
            run(guest.zero_fill("zero.fill", a.get("size")))
        elif do == "blkdiscard":
            run(guest.blkdiscard(a.get("offset", 0), a.get("length")))
        elif do == "idle":
            run(guest.idle(a["seconds"]))
        elif do == "power-cycle":
            guest.power_cut()
            self._forget_unsynced()
            return self._power_on()
        else:
            return self._offline(step)
        return {}

    def _save(self, key: tuple[str, str]) -> None:
        """Remember what the guest's disk holds now, for a revert, a restore or an immutable disk's reset."""
        self.saved[key] = (self.guest.checkpoint(), {k: bytearray(v) for k, v in self.durable.items()})

    def _back_to(self, key: tuple[str, str]) -> None:
        """The disk was put back to what it held at `_save(key)`: so are the guest's file system and files."""
        state, expected = self.saved[key]
        self.guest.power_cut(state)
        self.expected = {k: bytearray(v) for k, v in expected.items()}
        self.durable = {k: bytearray(v) for k, v in expected.items()}

    def _power_on(self) -> dict:
        """An immutable disk's differencing image at power-on: reset (the guest finds the base's files) or kept."""
        done = self.disk.power_on()
        if done is None:
            return {}
        if done.action == "reset":
            self._back_to(IMMUTABLE)
        return {"differencing": done.action, "discarded_host_bytes": done.discarded_bytes}

    def _offline(self, step: Step) -> dict:
        """The steps that change image files while the guest waits; they take the time of the bytes they move
        (read once, written once)."""
        a, do = step.args, step.do
        if self.guest.fs is not None and self.guest.fs.mounted and not (do == "snapshot" and a["action"] != "revert"):
            raise UsageError(f"step {do}: the file system is mounted (umount it first)")
        moved = 0
        if do == "snapshot":
            if a["action"] == "take":
                self._save(("snapshot", a["name"]))
            moved = self.disk.snapshot(a["action"], a["name"])
            if a["action"] == "revert":
                self._back_to(("snapshot", a["name"]))
            output = {"merged_bytes": moved} if a["action"] == "delete" else {}
        elif do == "copy":
            if a["action"] == "take":
                self._save(("copy", a["name"]))
                done = self.disk.copy(a["name"], a["sparse"])
                output = {"copied_bytes": done.copied_bytes, "copy_host_bytes": done.host_bytes}
            else:
                done = self.disk.restore(a["name"])
                self._back_to(("copy", a["name"]))
                output = {"copied_bytes": done.copied_bytes}
            moved = done.copied_bytes
        elif do == "immutable":
            self.guest.power_cut()
            self._save(IMMUTABLE)
            output = {"differencing": self.disk.make_immutable(a["auto_reset"]).action}
        elif do == "commit":
            moved = self.disk.commit()
            output = {"committed_bytes": moved}
        else:
            output = {"host_bytes_freed": self.disk.compact()}
        cost = self.timing.cost("read", moved) + self.timing.cost("write", moved) if moved else 0.0
        self.machine.run(self.guest.idle(cost))
        return output

    def _write_synthetic(self, name: str, size: int, content: str, offset: int | None) -> None:
        """A write of the synthetic payload: whole blocks as a run the model never makes, the ends as real bytes;
        the file's content is no longer checkable."""
        fs = self.guest.fs
        if offset is None:
            f = fs.files.get(name) if fs is not None else None
            offset = 0 if f is None else f.size
        block = fs.bs if fs is not None else 4096
        for start, piece in synthetic_content(self.rng, size, content, block, offset):
            self.machine.run(self.guest.write(name, piece, start))
        self.expected.pop(name, None)

    def _remember(self, name: str, data: bytes, offset: int | None) -> None:
        content = self.expected.setdefault(name, bytearray())
        offset = len(content) if offset is None else offset
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset:offset + len(data)] = data

    def _forget_unsynced(self) -> None:
        """After a power cut the files are those the file system committed, holding what the last committing step
        left in them."""
        fs = self.guest.fs
        if fs is None:
            return
        self.expected = {name: bytearray(memoryview(self.durable[name])[:fs.files[name].size]) for name in fs.files
                         if name in self.durable}

    def _follow(self, index: int, served: int, issued: list[Issued]) -> None:
        """Hand the explainer what the step freed and discarded."""
        fs = self.guest.fs
        if fs is not None:
            self.explainer.freed += [Freed(start * fs.bs, count * fs.bs, index) for start, count in fs.freed]
            fs.freed.clear()
        self.explainer.guest_discards += [Discard(r.sector * 512, r.sectors * 512, index) for r in issued
                                          if r.op == "discard"]
        self.explainer.drive_discards += [Discard(t.offset, t.length, index, t)
                                          for t in self.monitor.traces("discard", served)]

    def explain(self) -> dict:
        """Where every byte the guest freed went, by reason (scenarios.explain)."""
        fs = self.guest.fs

        def is_used(offset: int, length: int) -> bool:
            return fs is not None and any(fs.used[offset // fs.bs:-(-(offset + length) // fs.bs)])

        dev = self.guest.dev
        return self.explainer.explain(self.disk.chain(), is_used, dev.limits.discard is not None,
                                      self.disk.drive.format_name)

    # -- the guest's view ------------------------------------------------------------------------------------------
    def read_file(self, name: str) -> bytes:
        """A file's content as the guest reads it now (its page cache, else the disk through the whole chain)."""
        return self.machine.run(self.guest.fs.read(name))

    # -- the record ------------------------------------------------------------------------------------------------
    def _requests(self, since: int) -> dict[str, int]:
        counts = dict.fromkeys(OPS, 0)
        for trace in self.monitor.traces(since=since):
            counts[trace.op] += 1
        return counts

    def _discards(self, since: int, issued: list[Issued]) -> dict[str, int]:
        """Bytes of discard the guest issued, and what the Drive passed to the image or dropped."""
        passed = dropped = 0
        for trace in self.monitor.traces("discard", since):
            if any(e.layer == "drive" and e.action == Act.DROPPED for e in trace.events):
                dropped += trace.length
            else:
                passed += trace.length
        return {"issued_bytes": sum(r.sectors * 512 for r in issued if r.op == "discard"),
                "passed_bytes": passed, "dropped_bytes": dropped}

    def _created(self) -> dict[str, dict]:
        """Every image file as its create left it, and the time writing what it wrote takes (the latency model):
        what preallocation costs before the guest boots."""
        return {name: {**dataclasses.asdict(made), "seconds": self.timing.cost("write", made.written_bytes)}
                for name, made in self.disk.created.items()}

    def result(self) -> dict:
        s = self.scenario
        return {"schema": SCHEMA,
                "scenario": {"name": s.name, "title": s.title, "story": s.story, "file": s.source, "seed": s.seed,
                             "settings": s.settings()},
                "created": self._created(), "phases": self.phases, "steps": self.steps,
                "timeline": [[r.time, r.layer, r.metric, r.value] for r in self.monitor.rows],
                "maps": {"before": self.maps_before, "after": self.disk.maps()}, "explain": self.explain()}


def play(scenario: Scenario, directory: str, progress: Progress | None = None) -> Played:
    """Run `scenario` with its image files in `directory`; the record."""
    player = Player(scenario, directory)
    try:
        return player.play(progress)
    finally:
        player.close()

