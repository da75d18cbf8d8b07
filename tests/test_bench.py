"""`eventfleet bench --quick`: a smoke run so the benchmark never rots.

No thresholds: the machine running the tests is shared and its speed is not ours to assert.
It checks that one run measures every figure and that each is a positive number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

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


def test_bench_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    proc = cli_process("bench", "--only", "a,z", "--out", str(tmp_path / "x.json"), check=False)
    assert proc.returncode == 2
    assert "--only" in proc.stderr
    assert not (tmp_path / "x.json").exists()
