"""`eventfleet bench --quick`: a smoke run so the benchmark never rots.

No thresholds: the machine running the tests is shared and its speed is not ours to assert.
It checks that one run measures every figure and that each is a positive number; that the
online resharding scenario (n) grows a loaded namespace with every order decided once and no
push refused; and how n reads its pushes and outcome times.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from eventfleet.bench.reshard import WINDOW_S, Push, longest_unaccepted, per_window
from eventfleet.bench.suite import FIGURES
from tests.helpers import cli_process


@pytest.mark.timeout(480)
def test_quick_bench_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = cli_process("bench", "--quick", "--json", "--out", str(out), timeout=420)
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert doc["quick"] is True
    missing = [f.key for f in FIGURES if f.key not in doc["figures"]]
    assert not missing, f"figures not measured: {missing}"
    counts = {f.key for f in FIGURES if f.unit == "entries"}  # may well be 0 (s: replayed)
    for key, value in doc["figures"].items():
        assert isinstance(value, int | float) and math.isfinite(value), key
        assert value > 0 or (key in counts and value == 0), f"{key} = {value}"
    for key, t in doc["targets"].items():
        assert key in doc["figures"] and isinstance(t["met"], bool)
    for field in ("cpus", "python", "redis_server", "redis_py", "hiredis"):
        assert doc["machine"][field], field
    reshard_scenario_grew_a_loaded_namespace_without_refusing_a_push(doc)


def reshard_scenario_grew_a_loaded_namespace_without_refusing_a_push(doc: dict[str, Any]) -> None:
    """Scenario n (run by the quick bench above, not again on its own: it costs a minute):
    4+4 -> 8+8 under worker processes and two producers, on a single Redis and on a 3-master
    cluster; the bench itself fails unless every order published has exactly one outcome."""
    n = doc["scenarios"]["n"]
    assert (n["from"], n["to"], n["refused_pushes"]) == ("4+4", "8+8", 0), n["refused"]
    assert n["cluster_refused_pushes"] == 0, n["runs"][1]["refused"]
    assert [r["backend"] for r in n["runs"]] == ["single", "cluster"]
    assert n["orders"] > 0 and n["cluster_orders"] > 0
    assert n["windows_during_per_s"] and n["windows_after_per_s"], "throughput windows"
    keys = sorted(f.key for f in FIGURES if f.scenario == "n")
    assert sorted(k for k in doc["figures"] if k.startswith("n.")) == keys
    assert all(doc["figures"][k] > 0 for k in keys), doc["figures"]


def test_bench_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    proc = cli_process("bench", "--only", "a,z", "--out", str(tmp_path / "x.json"), check=False)
    assert proc.returncode == 2
    assert "--only" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_a_refused_push_leaves_its_shards_without_writes_until_the_next_one_is_accepted() -> None:
    pushes = [
        Push(0.0, 0.01, frozenset({"u0", "u1"}), True),
        Push(1.0, 1.02, frozenset({"u0", "u1"}), False),
        Push(1.5, 1.51, frozenset({"u1"}), True),
        Push(2.0, 2.03, frozenset({"u0"}), True),
        Push(9.0, 9.5, frozenset({"u2"}), True),
    ]
    got = longest_unaccepted(pushes, 0.5, 5.0)
    assert {s: round(v, 3) for s, v in got.items()} == {"u0": 1.03, "u1": 0.51}
    assert longest_unaccepted(pushes, 5.0, 10.0) == {"u2": 0.5}


def test_throughput_windows_count_whole_windows_only() -> None:
    times = [10.1, 10.2, 10.6, 11.4, 11.6]
    assert per_window(times, 10.0, 11.7) == [2 / WINDOW_S, 1 / WINDOW_S, 1 / WINDOW_S]
