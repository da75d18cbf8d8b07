#!/usr/bin/env python3
"""Regenerate k8s/monitoring/prometheusrule.yaml and grafana-dashboard.yaml from
deploy/prometheus/rules.yml and deploy/grafana/dashboards/eventfleet.json (one source each).

    python3 scripts/sync-k8s-monitoring.py          # write them
    python3 scripts/sync-k8s-monitoring.py --check  # exit 1 when they are out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventfleet.json"
OUT = ROOT / "k8s" / "monitoring"
LABELS = {"app.kubernetes.io/name": "eventfleet", "app.kubernetes.io/component": "monitoring"}


class _Literal(str):
    """A string dumped as a YAML literal block."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def prometheus_rule() -> str:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "eventfleet", "namespace": "eventfleet", "labels": LABELS},
        "spec": {"groups": rules["groups"]},
    }
    head = "# GENERATED from deploy/prometheus/rules.yml by scripts/sync-k8s-monitoring.py.\n"
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def dashboard_configmap() -> str:
    text = json.dumps(json.loads(DASHBOARD.read_text(encoding="utf-8")), indent=2) + "\n"
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "eventfleet-grafana-dashboard",
            "namespace": "eventfleet",
            # Grafana's dashboard sidecar (kube-prometheus-stack) loads ConfigMaps with this
            # label; the dashboard picks its data source through its `datasource` variable.
            "labels": {**LABELS, "grafana_dashboard": "1"},
        },
        "data": {"eventfleet.json": _Literal(text)},
    }
    head = (
        "# GENERATED from deploy/grafana/dashboards/eventfleet.json by "
        "scripts/sync-k8s-monitoring.py.\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def main() -> int:
    wanted = {
        "prometheusrule.yaml": prometheus_rule(),
        "grafana-dashboard.yaml": dashboard_configmap(),
    }
    if "--check" in sys.argv:
        stale = [n for n, text in wanted.items() if (OUT / n).read_text(encoding="utf-8") != text]
        for name in stale:
            sys.stderr.write(f"k8s/monitoring/{name} is out of date: run {sys.argv[0]}\n")
        return 1 if stale else 0
    for name, text in wanted.items():
        (OUT / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
