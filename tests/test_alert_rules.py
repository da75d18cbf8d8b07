"""deploy/prometheus/rules.yml: promtool accepts it and its unit tests (rules.test.yml) pass;
every alert is tested firing and quiet, has a summary, a description, a severity and a
runbook_url to a section of docs/OPERATIONS.md, and uses only series we expose."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.deploy_files import (
    DEPLOY,
    ROOT,
    contract_api_metrics,
    contract_exporter_metrics,
    contract_metrics,
    load_yaml,
    promtool_check,
)
from tests.promql import PROMETHEUS_OWN, contract_base_name, promql_metric_names

RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules.test.yml"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"


def alerts() -> list[dict[str, Any]]:
    found = [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    assert all("alert" in rule for rule in found), "rules.yml holds alerts only"
    return found


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown page."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool_check("rules", str(RULES))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; install it with: apt-get install -y prometheus")
    result = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == ["rules.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) <= names


def test_every_alert_says_what_it_is_and_links_its_runbook() -> None:
    anchors = heading_anchors(OPERATIONS.read_text(encoding="utf-8"))
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    required = {
        "EventfleetFleetAbsent",
        "EventfleetShardWithoutOwner",
        "EventfleetLagHigh",
        "EventfleetDeadLetters",
        "EventfleetTakeoversFlapping",
        "EventfleetSnapshotsStale",
        "EventfleetRedisErrors",
        "EventfleetReshardStuck",
    }
    assert required <= set(names)
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/OPERATIONS.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/OPERATIONS.md"
        assert anchor == name.lower(), f"{name}: its runbook section is named after it"


def test_alerts_use_only_series_we_expose_and_need_no_shard_count() -> None:
    metrics = contract_metrics() | contract_exporter_metrics() | contract_api_metrics()
    expressions = {rule["alert"]: rule["expr"] for rule in alerts()}
    for name, expr in expressions.items():
        used = promql_metric_names(expr)
        assert used, name
        unknown = {
            n for n in used if contract_base_name(n, metrics) not in metrics
        } - PROMETHEUS_OWN
        assert not unknown, f"{name} uses {sorted(unknown)}, not in CONTRACTS.md"
    assert "absent(" in expressions["EventfleetFleetAbsent"]
    assert "eventfleet_shard_has_owner" in expressions["EventfleetShardWithoutOwner"]
    assert not re.search(r"\b(16|32|64)\b", expressions["EventfleetShardWithoutOwner"])
    assert "eventfleet_shard_lag_seconds" in expressions["EventfleetLagHigh"]
    stuck = expressions["EventfleetReshardStuck"]
    assert "changes(eventfleet_reshard_state[" in stuck, "a state that does not move"
    assert 'changes(eventfleet_reshard_parents{status="waiting"}[' in stuck, "nor its waiting"
