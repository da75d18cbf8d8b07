"""The shape of the code, read statically with ``ast`` (nothing is imported):

- layers: ``ledger`` imports nothing of ours; ``store`` only ``ledger``; ``worker`` and
  ``producer`` only ``ledger`` and ``store``; ``eventfleet`` anything (each package may
  import itself). Every import counts, including those inside functions;
- no import cycle between modules;
- no module over 500 lines (ours and the tests'), and a docstring on every package;
- no Lua source in a ``.py`` file of the packages (scripts are ``store/lua/*.lua`` files), and
  no ``.replace(`` on script text: a module that loads scripts (imports ``store.lua``) calls
  no ``.replace(`` at all, and nowhere is it called on Lua text or on ``lua.source``/``read``.
- one hand-written wire path: only ``store.wire`` calls redis-py's connection internals
  (``send_packed_command``, ``read_response``, ``pack_commands``, ...) or imports hiredis.

The checker itself is tested on synthetic trees and graphs, so that it can be seen to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ledger", "store", "worker", "producer", "eventfleet")
ALLOWED: dict[str, frozenset[str]] = {
    "ledger": frozenset({"ledger"}),
    "store": frozenset({"ledger", "store"}),
    "worker": frozenset({"ledger", "store", "worker"}),
    "producer": frozenset({"ledger", "store", "producer"}),
    "eventfleet": frozenset(PACKAGES),
}
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
    """Module name -> file, for every .py under ``packages`` (caches left out)."""
    return {
        module_name(root, path): path
        for pkg in packages
        for path in sorted((root / pkg).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


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
    return [
        str(imp)
        for imp in imports
        if imp.target.split(".")[0] not in ALLOWED[imp.importer.split(".")[0]]
    ]


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
LOADER = "store.lua"


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
    assert {imp.importer.split(".")[0] for imp in imports} == set(PACKAGES)
    violations = layer_violations(imports)
    assert not violations, "imports across the layers:\n" + "\n".join(violations)


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
    assert not found, "Lua source in .py files (put it in store/lua/*.lua):\n" + "\n".join(found)


def test_no_replace_on_script_text() -> None:
    found = replace_on_script_text(ROOT)
    assert not found, ".replace( on script text (pass values as ARGV):\n" + "\n".join(found)
    assert (ROOT / "store" / "lua" / "prelude.lua").is_file()


WIRE = "store.wire"
WIRE_INTERNALS = frozenset(
    {"send_packed_command", "send_command", "read_response", "pack_commands", "parse_response"}
)
"""redis-py's connection-level calls: only the wire helper speaks the protocol by hand."""


def wire_paths(root: Path, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Uses of redis-py's connection internals (or hiredis' packer) outside ``store.wire``."""
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
    assert len(inits) >= len(PACKAGES)
    bare = [
        str(p.relative_to(ROOT))
        for p in inits
        if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not bare, "packages without a docstring: " + ", ".join(bare)


# ---------------------------------------------------------------- the checker can fail


def write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_sees_a_layer_violation_inside_a_function(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "ledger/__init__.py": '"""Domain."""\n',
            "ledger/rules.py": "import json\n\n\ndef f():\n    from store.keys import Keys\n",
            "store/__init__.py": '"""Redis."""\n',
            "store/keys.py": "from ledger import rules\nimport ledger.rules\n",
            "worker/__init__.py": "",
            "worker/loop.py": "from producer.client import Producer\nimport eventfleet\n",
            "producer/__init__.py": "",
            "producer/client.py": "from store.keys import Keys\n",
            "eventfleet/__init__.py": "from worker import loop\n",
        },
    )
    assert layer_violations(all_imports(root)) == [
        "ledger.rules:5 imports store.keys",
        "worker.loop:1 imports producer.client",
        "worker.loop:2 imports eventfleet",
    ]


def test_checker_resolves_from_imports_and_relative_imports(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "store/__init__.py": "",
            "store/a.py": "from . import b\nfrom .c import X\nfrom store import VALUE\n",
            "store/b.py": "",
            "store/c.py": "from .. import ledger\n",
        },
    )
    files = source_files(root, ["store"])
    got = {str(i) for m, p in files.items() for i in imports_of(m, p, files)}
    assert got == {
        "store.a:1 imports store.b",
        "store.a:2 imports store.c",
        "store.a:3 imports store",
    }


def test_checker_reports_a_cycle_through_modules(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "worker/__init__.py": "",
            "worker/a.py": "from worker import b\n",
            "worker/b.py": "def f():\n    import worker.c\n",
            "worker/c.py": "from worker.a import thing\n",
            "worker/d.py": "from worker import a\n",
        },
    )
    graph = import_graph(all_imports(root, ["worker"]))
    assert all_cycles(graph) == [["worker.a", "worker.b", "worker.c", "worker.a"]]


def test_checker_sees_lua_in_python_and_replace_on_script_text(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "store/__init__.py": "",
            "store/lua/__init__.py": "def source(name):\n    return name\n",
            "store/ok.py": "x = 'a b'.replace(' ', '')  # plain text\n",
            "worker/__init__.py": "",
            "worker/a.py": "X = 1\nS = \"return redis.call('GET', KEYS[1])\"\n",
            "worker/b.py": "T = \"redis.pcall('X')\".replace('X', 'Y')\n",
            "worker/e.py": "T = 'redis.call(1)' + 'x'\nU = T.replace('1', '2').replace('2', '3')\n",
            "worker/c.py": "from store import lua\n\nT = lua.source('a').replace('N', '1')\n",
            "worker/d.py": "from store.lua import source\n\nU = 'x'.replace('x', 'y')\n",
            "producer/__init__.py": "from store import lua\n\nV = lua.read('a').replace('a', 'b')\n",
        },
    )
    packages = ["store", "worker", "producer"]
    assert lua_in_python(root, packages) == ["worker/a.py:2", "worker/b.py:1", "worker/e.py:1"]
    assert replace_on_script_text(root, packages) == [
        "worker.b:1",
        "worker.c:3",
        "worker.d:3",
        "worker.e:2",
        "worker.e:2",
        "producer:3",
    ]


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, []),  # a diamond
        ({"a": {"a"}}, [["a", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x"}}, [["a", "b", "a"], ["x", "y", "x"]]),
    ],
)
def test_cycle_search_on_synthetic_graphs(
    graph: dict[str, set[str]], cycles: list[list[str]]
) -> None:
    assert all_cycles(graph) == cycles


def test_checker_sees_a_wire_path_outside_the_helper(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "store/__init__.py": "",
            "store/wire.py": "def send(conn, b):\n    conn.send_packed_command(b)\n",
            "worker/__init__.py": "",
            "worker/fast.py": "def go(conn):\n    return conn.read_response()\n",
            "producer/__init__.py": "",
            "producer/pack.py": "from hiredis import pack_command\n",
        },
    )
    found = sorted(wire_paths(root, ("store", "worker", "producer")))
    assert found == ["producer/pack.py:1 imports hiredis", "worker/fast.py:2 .read_response"]
