"""The layers of docs/architecture.md, checked on every module's imports.

Every module of the project (benchmarks included) belongs to exactly one layer. A layer imports only from itself
and from the lower layers it names (its neighbours: a controller never touches an image file, a guest driver never
calls the block layer, the shell imports no controller). One module, the run assembler, builds a whole machine and
may import any lower layer. No module-level import cycle exists anywhere, type-only imports included.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("emu", "images", "controllers", "scenarios", "benchmarks")


@dataclass(frozen=True)
class Layer:
    name: str
    prefixes: tuple[str, ...]      # modules named so, or below them (the longest matching prefix wins)
    uses: tuple[str, ...]          # the lower layers it may import


# What is made of whole runs: the assembler, the differential run (emu against QEMU), the player of a scenario's
# steps, and what reads or retells a run (the demo's story, explain, matrix and report). Everything else in
# scenarios/ is the guest: machine, replay, file systems, workloads.
RUNS = ("scenarios.run", "scenarios.differential", "scenarios.play", "scenarios.demo", "scenarios.explain",
        "scenarios.matrix", "scenarios.report")

# Bottom first; `uses` names only layers earlier in the list.
LAYERS = (
    Layer("ground", ("emu", "emu.errors", "emu.units", "emu.trace", "emu.memory", "emu.crc32c"), ()),
    Layer("block", ("emu.block",), ("ground",)),
    Layer("sim", ("emu.sim",), ("ground", "block")),
    # real QEMU over qtest: adapters with the interfaces guest drivers use (RAM, BAR, interrupt line)
    Layer("qtest", ("emu.qtest",), ("ground", "sim")),
    Layer("images", ("images",), ("ground", "block")),
    Layer("devices", ("controllers",), ("ground", "block", "sim")),
    Layer("drivers", ("controllers.drivers",), ("ground", "sim", "devices")),
    Layer("profiles", ("scenarios.profiles",), ("ground", "devices", "drivers")),
    Layer("guest", ("scenarios",), ("ground", "block", "sim", "devices", "drivers", "profiles")),
    Layer("runs", RUNS, ("ground", "block", "sim", "profiles", "guest")),
    Layer("shell", ("emu.cli",), ("ground", "block", "sim", "images", "profiles", "guest", "runs")),
    Layer("benchmarks", ("benchmarks",),
          ("ground", "block", "sim", "images", "devices", "drivers", "profiles", "guest", "runs", "shell")),
)
ORDER = {layer.name: i for i, layer in enumerate(LAYERS)}
BY_NAME = {layer.name: layer for layer in LAYERS}
# The one module that assembles a machine from every layer below it (scenario spec -> images -> Drive ->
# controllers -> drivers -> guest); it may import any lower layer.
ASSEMBLER = "scenarios.run"


def module_files():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, path


MODULES = dict(module_files())


def layer_of(module: str) -> Layer | None:
    best, best_len = None, -1
    for layer in LAYERS:
        for prefix in layer.prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> list[tuple[str, bool]]:
    """(imported project module, at module level) for every import in `module`; `from a import b` names a.b
    when that is a module, and `a` only for names `a` defines (a package's parent is always loaded first, so it
    is no edge). Type-only imports (under `if TYPE_CHECKING:`) count as module level."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(module, child)
                submodules = [f"{base}.{alias.name}" for alias in child.names if f"{base}.{alias.name}" in MODULES]
                if len(submodules) < len(child.names):      # names defined by `base` itself
                    found.append((base, top))
                found.extend((name, top) for name in submodules)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            else:
                visit(child, top)

    visit(tree, True)
    return [(name, top) for name, top in found if name in MODULES]


def test_every_module_is_in_exactly_one_layer_and_uses_name_only_lower_layers():
    assert [m for m in MODULES if layer_of(m) is None] == []
    for layer in LAYERS:
        assert all(ORDER[used] < ORDER[layer.name] for used in layer.uses), layer.name
    assert layer_of(ASSEMBLER) is BY_NAME["runs"]


def allowed(module: str, target: str) -> bool:
    own, theirs = layer_of(module), layer_of(target)
    if theirs is own:
        return True
    if module == ASSEMBLER:
        return ORDER[theirs.name] < ORDER[own.name]
    return theirs.name in own.uses


def test_every_import_goes_down_to_a_neighbour():
    violations = [f"{module} ({layer_of(module).name}) imports {target} ({layer_of(target).name})"
                  for module in MODULES for target, _top in imports(module) if not allowed(module, target)]
    assert violations == []


def test_no_module_level_import_cycles():
    graph = {m: sorted({t for t, top in imports(m) if top and t != m}) for m in MODULES}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def strongconnect(v: str) -> None:     # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert cycles == []


def test_the_rules_bite():
    """A controller importing an image format, a driver the Drive, the shell a controller layout or a layer
    importing upward is a violation; the assembler may reach any lower layer but not the shell."""
    assert not allowed("controllers.ide", "images.raw")
    assert not allowed("controllers.drivers.ahci", "emu.block.drive")
    assert not allowed("emu.cli.replay", "controllers.ata.layouts")
    assert not allowed("emu.block.drive", "emu.sim.monitor") and not allowed("images.raw", "emu.sim")
    assert not allowed("scenarios.machine", "images.probe") and not allowed("scenarios.demo", "images.probe")
    assert not allowed("scenarios.machine", "scenarios.run")
    assert allowed(ASSEMBLER, "images.probe") and not allowed(ASSEMBLER, "emu.cli")
    assert allowed("controllers.drivers.ahci", "controllers.ata.layouts")
