"""Every test file is in exactly one tier (tests/tiers.py), each tier is a declared marker,
and `make test` runs every tier but chaos, so no test is left out of the default run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.tiers import COST_S, FILES, LIBRARY_FILES, TIERS, TIMEOUT_S, shard_of

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_file_is_in_a_tier_and_every_listed_file_exists() -> None:
    on_disk = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert sorted(on_disk - set(FILES)) == [], "add these to FILES in tests/tiers.py"
    assert sorted(set(FILES) - on_disk) == [], "listed in tests/tiers.py, but gone"
    assert set(FILES.values()) <= set(TIERS) - {"chaos"}, "chaos is a per-test marker"


def test_make_test_min_runs_library_files_of_the_fast_and_redis_tiers() -> None:
    assert len(set(LIBRARY_FILES)) == len(LIBRARY_FILES)
    wrong = [f for f in LIBRARY_FILES if FILES.get(f) not in ("fast", "redis")]
    assert wrong == [], "LIBRARY_FILES: not a file of the fast or redis tier"
    assert "LIBRARY_FILES" in (ROOT / "scripts" / "test-min.sh").read_text()


def test_each_tier_is_a_declared_marker_with_a_timeout() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {m.split(":")[0] for m in ini["markers"]}
    assert set(TIERS) <= declared
    assert "--strict-markers" in ini["addopts"]
    assert set(TIMEOUT_S) == set(TIERS) - {"chaos"}


def test_make_test_runs_every_tier_but_chaos() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test:(.*)\n((?:\t.*\n)*)", makefile, re.M)
    assert test_target is not None
    prerequisites, recipe = test_target.group(1), test_target.group(2)
    selected = re.findall(r'-m "([^"]*)"', recipe)
    for tier in TIERS[:-1]:
        runs = f"test-{tier}" in prerequisites + recipe or any(
            tier in expr.split(" or ") for expr in selected
        )
        assert runs, f"make test runs no {tier} tests"
        assert re.search(rf"^test-{tier}:", makefile, re.M), tier
        assert f"-m {tier}" in makefile, tier
    assert "chaos" not in recipe


def test_shards_split_the_files_into_balanced_parts() -> None:
    files = sorted(FILES)
    for n in (1, 2, 3):
        parts = shard_of(files, n)
        assert set(parts) == set(files) and set(parts.values()) == set(range(n))
        assert shard_of(list(reversed(files)), n) == parts  # the same in every process
        cost = [sum(COST_S.get(f, 10) for f in files if parts[f] == k) for k in range(n)]
        assert max(cost) - min(cost) <= max(COST_S.values())
