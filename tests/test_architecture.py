"""The shape of the code, read statically with ``ast`` (nothing is imported):

- one import package: everything is ``eventfleet.*`` (``eventfleet/worker`` and
  ``eventfleet/producer`` are links to the repository's top-level folders), and nothing, in
  the package, the tests or the scripts, imports a top-level ``ledger``, ``store``, ``worker``
  or ``producer``;
- layers inside it: ``eventfleet.ledger`` imports nothing of ours; ``eventfleet.store`` only
  ``ledger``; ``eventfleet.worker`` and ``eventfleet.producer`` only ``ledger`` and ``store``;
  the rest of ``eventfleet`` (the tools) anything (each layer may import itself). Every
  import counts, including those inside functions;
- no import cycle between modules;
- no module over 500 lines (ours and the tests'), and a docstring on every package;
- no Lua source in a ``.py`` file of the packages (scripts are ``eventfleet/store/lua/*.lua`` files), and
  no ``.replace(`` on script text: a module that loads scripts (imports ``eventfleet.store.lua``) calls
  no ``.replace(`` at all, and nowhere is it called on Lua text or on ``lua.source``/``read``.
- one hand-written wire path: only ``eventfleet.store.wire`` calls redis-py's connection internals
  (``send_packed_command``, ``read_response``, ``pack_commands``, ...) or imports hiredis.

The checker itself is tested on synthetic trees and graphs in
``tests/test_architecture_checker.py``, so that it can be seen to fail.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eventfleet",)
"""The one import package."""
LAYERS = ("ledger", "store", "worker", "producer", "eventfleet")
"""``eventfleet.<layer>`` for the first four; every other module of the package is a tool."""
ALLOWED: dict[str, frozenset[str]] = {
    "ledger": frozenset({"ledger"}),
    "store": frozenset({"ledger", "store"}),
    "worker": frozenset({"ledger", "store", "worker"}),
    "producer": frozenset({"ledger", "store", "producer"}),
    "eventfleet": frozenset(LAYERS),
}
FORMER_TOP_LEVEL = frozenset({"ledger", "store", "worker", "producer"})
"""Names that were top-level packages once, and must not be imported as such."""


def layer(module: str) -> str:
    """``eventfleet.worker.loop`` -> ``worker``; ``eventfleet.cli.main`` -> ``eventfleet``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "eventfleet":
        return parts[1]
    return parts[0]


MAX_LINES = 500


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    """The module imported, as far as it is one of ours (``pkg.mod``, or ``pkg`` for a name
    of the package itself)."""
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py under ``packages`` (caches left out), following the
    links ``eventfleet/worker`` and ``eventfleet/producer`` as the wheel and mypy do."""
    found: dict[str, Path] = {}
    for pkg in packages:
        for dirpath, dirnames, filenames in os.walk(root / pkg, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    found[module_name(root, Path(dirpath) / name)] = Path(dirpath) / name
    return found


def resolve(name: str, modules: Iterable[str]) -> str:
    """The longest known module that ``name`` is or lies in (``pkg.mod.attr`` -> ``pkg.mod``)."""
    known = set(modules)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return name


def imports_of(module: str, path: Path, modules: Iterable[str]) -> list[Import]:
    """Every import of ours in ``path``, wherever it sits (module level, function, class)."""
    known = set(modules)
    ours = {m.split(".")[0] for m in known}
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".")
                package = package if is_package else package[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one
            names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
            names = names or [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ours:
                found.append(Import(module, resolve(name, known), node.lineno))
    return found


def all_imports(root: Path, packages: Iterable[str] = PACKAGES) -> list[Import]:
    files = source_files(root, packages)
    return [imp for module, path in files.items() for imp in imports_of(module, path, files)]


def layer_violations(imports: Iterable[Import]) -> list[str]:
    return [str(imp) for imp in imports if layer(imp.target) not in ALLOWED[layer(imp.importer)]]


def stray_imports(files: Iterable[Path], root: Path) -> list[str]:
    """Imports of a former top-level name (``import worker``, ``from store.keys import``)."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.split(".")[0] in FORMER_TOP_LEVEL:
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    return found


def import_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set())
        if imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None (iterative DFS)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def all_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Cycles found one at a time, each broken at its last edge before looking again."""
    g = {k: set(v) for k, v in graph.items()}
    cycles = []
    while (cycle := find_cycle(g)) is not None:
        cycles.append(cycle)
        g[cycle[-2]].discard(cycle[-1])
    return cycles


LUA_MARKERS = ("redis.call(", "redis.pcall(", "redis.error_reply(")
"""Text that only Lua source holds."""
LOADER = "eventfleet.store.lua"


def lua_in_python(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Lines of ``.py`` files (comments and docstrings included) that hold Lua source."""
    return [
        f"{path.relative_to(root)}:{n}"
        for path in source_files(root, packages).values()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(marker in line for marker in LUA_MARKERS)
    ]


def _is_script_text(node: ast.expr) -> bool:
    """A Lua string literal, or the loader's text (``lua.source(...)``, ``lua.read(...)``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(marker in node.value for marker in LUA_MARKERS)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        return name in {"source", "read"} and "lua" in ast.unparse(node.func)
    return False


def replace_on_script_text(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """``.replace(`` calls on script text, or anywhere in a module that loads scripts."""
    files = source_files(root, packages)
    found = []
    for module, path in files.items():
        loads = module == LOADER or any(i.target == LOADER for i in imports_of(module, path, files))
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        texts = {  # names bound to script text, or to anything made from it
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and any(map(_is_script_text, ast.walk(node.value)))
            for target in node.targets
            if isinstance(target, ast.Name)
        }

        def is_text(expr: ast.AST, texts: set[str] = texts) -> bool:
            return (isinstance(expr, ast.Name) and expr.id in texts) or (
                isinstance(expr, ast.expr) and _is_script_text(expr)
            )

        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "replace"
                and (loads or any(map(is_text, ast.walk(node.func.value))))
            ):
                found.append(f"{module}:{node.lineno}")
    return found


# ---------------------------------------------------------------- the repository


def test_each_package_imports_only_the_layers_below_it() -> None:
    imports = all_imports(ROOT)
    assert {layer(imp.importer) for imp in imports} == set(LAYERS)
    violations = layer_violations(imports)
    assert not violations, "imports across the layers:\n" + "\n".join(violations)


def test_one_import_package() -> None:
    """``pip install`` puts ``eventfleet`` alone into site-packages: the repository's
    ``worker/`` and ``producer/`` are reached as ``eventfleet.worker`` and
    ``eventfleet.producer`` (links), and nothing imports them (or ``ledger``, ``store``) by a
    top-level name."""
    for name in ("worker", "producer"):
        link = ROOT / "eventfleet" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()
    for name in ("ledger", "store"):
        assert not (ROOT / name).exists(), f"{name}/ belongs under eventfleet/"
    files = [
        *source_files(ROOT).values(),
        *sorted((ROOT / "tests").rglob("*.py")),
        *sorted((ROOT / "scripts").rglob("*.py")),
    ]
    found = stray_imports(files, ROOT)
    assert not found, "imports of a top-level name (use eventfleet.*):\n" + "\n".join(found)


def test_no_import_cycle_between_modules() -> None:
    cycles = all_cycles(import_graph(all_imports(ROOT)))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_500_lines() -> None:
    files = [*source_files(ROOT).values(), *sorted((ROOT / "tests").glob("*.py"))]
    lengths = {f: len(f.read_text(encoding="utf-8").splitlines()) for f in files}
    over = [f"{f.relative_to(ROOT)}: {n}" for f, n in sorted(lengths.items()) if n > MAX_LINES]
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_no_lua_source_in_python_files() -> None:
    found = lua_in_python(ROOT)
    assert not found, (
        "Lua source in .py files (put it in eventfleet/store/lua/*.lua):\n" + "\n".join(found)
    )


def test_no_replace_on_script_text() -> None:
    found = replace_on_script_text(ROOT)
    assert not found, ".replace( on script text (pass values as ARGV):\n" + "\n".join(found)
    assert (ROOT / "eventfleet" / "store" / "lua" / "prelude.lua").is_file()


WIRE = "eventfleet.store.wire"
WIRE_INTERNALS = frozenset(
    {"send_packed_command", "send_command", "read_response", "pack_commands", "parse_response"}
)
"""redis-py's connection-level calls: only the wire helper speaks the protocol by hand."""


def wire_paths(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Uses of redis-py's connection internals (or hiredis' packer) outside ``eventfleet.store.wire``."""
    found = []
    for module, path in source_files(root, packages).items():
        if module == WIRE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in WIRE_INTERNALS:
                found.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                base = node.module if isinstance(node, ast.ImportFrom) else None
                if "hiredis" in (base, *names):
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports hiredis")
    return found


def test_only_the_wire_helper_speaks_the_protocol_by_hand() -> None:
    found = wire_paths(ROOT)
    assert not found, "hand-written wire paths (use store.wire):\n" + "\n".join(found)


def test_every_package_has_a_docstring() -> None:
    inits = [p for p in source_files(ROOT).values() if p.name == "__init__.py"]
    assert len(inits) >= len(LAYERS)
    bare = [
        str(p.relative_to(ROOT))
        for p in inits
        if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not bare, "packages without a docstring: " + ", ".join(bare)
