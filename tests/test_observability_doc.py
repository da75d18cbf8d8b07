"""docs/OBSERVABILITY.md: a row per contract metric (workers', exporter's and API's), a row per
shipped alert, and PromQL examples that promtool accepts and that use only series we expose."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from eventfleet.exporter.gauges import NAMESPACE_LABEL as EXPORTER_NAMESPACE_LABEL
from eventfleet.worker.metrics import NAMESPACE_LABEL
from tests.deploy_files import (
    contract_api_metrics,
    contract_exporter_metrics,
    contract_metrics,
    promtool_check,
)
from tests.promql import (
    DOC,
    KIND_SUFFIXES,
    PROMETHEUS_OWN,
    doc_queries,
    doc_rules,
    promql_metric_names,
)

RENAMED = {
    "eventfleet_shards_owned": "eventfleet_worker_shards_owned",
    "eventfleet_shard_owned": "eventfleet_shard_has_owner",
}
"""Metric names before and after the rename (docs/OBSERVABILITY.md, "Migrating")."""


def test_the_observability_doc_covers_every_metric_and_its_promql_is_valid(
    tmp_path: Path,
) -> None:
    metrics = contract_metrics() | contract_exporter_metrics() | contract_api_metrics()
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`(eventfleet_[a-z][a-z_]*)`", text))
    assert named - {NAMESPACE_LABEL} - set(RENAMED) == set(metrics)
    for name in metrics:
        assert re.search(rf"^\| `{name}` \|", text, re.M), f"{name} has no row in {DOC.name}"
    series = set(PROMETHEUS_OWN)
    for name, kind in metrics.items():
        suffixes = KIND_SUFFIXES["histogram"] if kind == "histogram" else ("",)
        series.update(name + suffix for suffix in suffixes)
    for expr in doc_queries():
        unknown = promql_metric_names(expr) - series - {"process_cpu_seconds_total"}
        assert not unknown, f"{expr!r} uses {sorted(unknown)}"
    alerts = tmp_path / "alerts.yml"
    alerts.write_text(yaml.safe_dump(doc_rules()))
    promtool_check("rules", str(alerts))
    examples = [
        {"record": f"doc:example_{i}", "expr": expr} for i, expr in enumerate(doc_queries())
    ]
    recorded = tmp_path / "examples.yml"
    recorded.write_text(yaml.safe_dump({"groups": [{"name": "doc", "rules": examples}]}))
    promtool_check("rules", str(recorded))


def test_the_doc_says_how_to_migrate_from_the_earlier_names() -> None:
    """Each renamed metric and the label: a row of the migration table, old name to new; the
    old names nowhere else in the doc (test_dashboard, test_alert_rules and test_exporter
    check the shipped files and the served metrics)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Migrating from the earlier names", 1)[1]
    metrics = contract_metrics() | contract_exporter_metrics()
    for old, new in RENAMED.items():
        assert re.search(rf"^\| `{old}` \| `{new}`", section, re.M), old
        assert new in metrics and old not in metrics
        assert text.count(f"`{old}`") == 1, f"{old} outside the migration table"
    assert "| label `namespace` | label `eventfleet_namespace` |" in section
    assert NAMESPACE_LABEL == EXPORTER_NAMESPACE_LABEL == "eventfleet_namespace"


def test_the_observability_doc_lists_every_shipped_alert_with_its_runbook() -> None:
    text = DOC.read_text(encoding="utf-8")
    for group in doc_rules()["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            row = re.search(rf"^\| `{name}` \|.*$", text, re.M)
            assert row, f"{name} has no row in the alerts table of {DOC.name}"
            assert f"(OPERATIONS.md#{name.lower()})" in row.group(0), f"{name}: runbook link"
