"""The checker of ``tests/test_architecture.py`` on synthetic trees and graphs, so that it can
be seen to fail."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.test_architecture import (
    all_cycles,
    all_imports,
    import_graph,
    imports_of,
    layer_violations,
    lua_in_python,
    replace_on_script_text,
    source_files,
    stray_imports,
    wire_paths,
)


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
            "eventfleet/__init__.py": "from eventfleet.worker import loop\n",
            "eventfleet/ledger/__init__.py": '"""Domain."""\n',
            "eventfleet/ledger/rules.py": (
                "import json\n\n\ndef f():\n    from eventfleet.store.keys import Keys\n"
            ),
            "eventfleet/store/__init__.py": '"""Redis."""\n',
            "eventfleet/store/keys.py": (
                "from eventfleet.ledger import rules\nimport eventfleet.ledger.rules\n"
            ),
            "eventfleet/worker/__init__.py": "",
            "eventfleet/worker/loop.py": (
                "from eventfleet.producer.client import Producer\nimport eventfleet.cli\n"
            ),
            "eventfleet/producer/__init__.py": "",
            "eventfleet/producer/client.py": "from eventfleet.store.keys import Keys\n",
            "eventfleet/cli/__init__.py": "from eventfleet.worker import loop\n",
        },
    )
    assert layer_violations(all_imports(root)) == [
        "eventfleet.ledger.rules:5 imports eventfleet.store.keys",
        "eventfleet.worker.loop:1 imports eventfleet.producer.client",
        "eventfleet.worker.loop:2 imports eventfleet.cli",
    ]


def test_checker_follows_the_linked_folders(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "eventfleet/__init__.py": "",
            "eventfleet/store/__init__.py": "",
            "eventfleet/cli/__init__.py": "",
            "worker/__init__.py": "",
            "worker/loop.py": "import eventfleet.cli\n",
        },
    )
    (root / "eventfleet" / "worker").symlink_to("../worker")
    files = source_files(root)
    assert "eventfleet.worker.loop" in files
    assert layer_violations(all_imports(root)) == [
        "eventfleet.worker.loop:1 imports eventfleet.cli"
    ]


def test_checker_resolves_from_imports_and_relative_imports(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "eventfleet/__init__.py": "",
            "eventfleet/store/__init__.py": "",
            "eventfleet/store/a.py": (
                "from . import b\nfrom .c import X\nfrom eventfleet.store import VALUE\n"
            ),
            "eventfleet/store/b.py": "",
            "eventfleet/store/c.py": "from .. import ledger\n",
            "eventfleet/ledger/__init__.py": "",
        },
    )
    files = source_files(root)
    got = {str(i) for m, p in files.items() for i in imports_of(m, p, files)}
    assert got == {
        "eventfleet.store.a:1 imports eventfleet.store.b",
        "eventfleet.store.a:2 imports eventfleet.store.c",
        "eventfleet.store.a:3 imports eventfleet.store",
        "eventfleet.store.c:1 imports eventfleet.ledger",
    }


def test_checker_reports_a_cycle_through_modules(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "eventfleet/worker/__init__.py": "",
            "eventfleet/worker/a.py": "from eventfleet.worker import b\n",
            "eventfleet/worker/b.py": "def f():\n    import eventfleet.worker.c\n",
            "eventfleet/worker/c.py": "from eventfleet.worker.a import thing\n",
            "eventfleet/worker/d.py": "from eventfleet.worker import a\n",
        },
    )
    graph = import_graph(all_imports(root))
    w = "eventfleet.worker."
    assert all_cycles(graph) == [[w + "a", w + "b", w + "c", w + "a"]]


def test_checker_sees_lua_in_python_and_replace_on_script_text(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "eventfleet/store/__init__.py": "",
            "eventfleet/store/lua/__init__.py": "def source(name):\n    return name\n",
            "eventfleet/store/ok.py": "x = 'a b'.replace(' ', '')  # plain text\n",
            "eventfleet/worker/__init__.py": "",
            "eventfleet/worker/a.py": "X = 1\nS = \"return redis.call('GET', KEYS[1])\"\n",
            "eventfleet/worker/b.py": "T = \"redis.pcall('X')\".replace('X', 'Y')\n",
            "eventfleet/worker/e.py": (
                "T = 'redis.call(1)' + 'x'\nU = T.replace('1', '2').replace('2', '3')\n"
            ),
            "eventfleet/worker/c.py": (
                "from eventfleet.store import lua\n\nT = lua.source('a').replace('N', '1')\n"
            ),
            "eventfleet/worker/d.py": (
                "from eventfleet.store.lua import source\n\nU = 'x'.replace('x', 'y')\n"
            ),
            "eventfleet/producer/__init__.py": (
                "from eventfleet.store import lua\n\nV = lua.read('a').replace('a', 'b')\n"
            ),
        },
    )
    w = "eventfleet/worker/"
    assert lua_in_python(root) == [w + "a.py:2", w + "b.py:1", w + "e.py:1"]
    assert replace_on_script_text(root) == [
        "eventfleet.producer:3",
        "eventfleet.worker.b:1",
        "eventfleet.worker.c:3",
        "eventfleet.worker.d:3",
        "eventfleet.worker.e:2",
        "eventfleet.worker.e:2",
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
            "eventfleet/store/__init__.py": "",
            "eventfleet/store/wire.py": "def send(conn, b):\n    conn.send_packed_command(b)\n",
            "eventfleet/worker/__init__.py": "",
            "eventfleet/worker/fast.py": "def go(conn):\n    return conn.read_response()\n",
            "eventfleet/producer/__init__.py": "",
            "eventfleet/producer/pack.py": "from hiredis import pack_command\n",
        },
    )
    assert sorted(wire_paths(root)) == [
        "eventfleet/producer/pack.py:1 imports hiredis",
        "eventfleet/worker/fast.py:2 .read_response",
    ]


def test_checker_sees_a_stray_top_level_import(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "a.py": "import worker\nfrom store.keys import Keys\nfrom . import ledger\n",
            "b.py": "import eventfleet.worker\nfrom eventfleet.store import keys\nimport storey\n",
        },
    )
    assert stray_imports([root / "a.py", root / "b.py"], root) == [
        "a.py:1 imports worker",
        "a.py:2 imports store.keys",
    ]
