"""k8s/monitoring/, the kustomize Component for the Prometheus Operator: kubernetes-validate on
what has a schema, a structural check of the custom resources (PodMonitor, ServiceMonitor,
PrometheusRule), and both generated files in step with their sources."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_files import K8S, ROOT, dashboard, k8s_resource, load_yaml

MONITORING = K8S / "monitoring"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
OPERATOR_API = "monitoring.coreos.com/v1"


def monitoring_files() -> list[Path]:
    return sorted(p for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")


API_MONITOR = "eventfleet-api"


def all_monitoring_docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in monitoring_files()
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
    ]


def monitoring_docs() -> dict[str, dict[str, Any]]:
    """Each kind's one document, the API's PodMonitor aside (``api_monitor``)."""
    return {d["kind"]: d for d in all_monitoring_docs() if d["metadata"]["name"] != API_MONITOR}


def api_monitor() -> dict[str, Any]:
    (monitor,) = [d for d in all_monitoring_docs() if d["metadata"]["name"] == API_MONITOR]
    return monitor


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_it_is_a_component_listing_every_file() -> None:
    component = load_yaml(MONITORING / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    assert sorted(component["resources"]) == [p.name for p in monitoring_files()]
    base = load_yaml(K8S / "kustomization.yaml")
    assert "monitoring" not in str(base.get("components", [])), "opt-in: the base leaves it out"
    for doc in all_monitoring_docs():
        assert doc["metadata"]["namespace"] == base["namespace"]


def test_kubernetes_validate_passes_and_skips_only_the_operator_resources() -> None:
    files = [str(p) for p in monitoring_files()]
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output, output
    warned = sorted(re.findall(r"^WARN .*?kind (\w+) ", output, re.M))
    assert warned == ["PodMonitor", "PodMonitor", "PrometheusRule", "ServiceMonitor"], output
    assert output.count("passed for resource") == 1, output  # the dashboard ConfigMap


def endpoint_check(endpoint: dict[str, Any]) -> None:
    assert endpoint["path"] == "/metrics"
    # Our series say `eventfleet_namespace`, so the Operator's `namespace` (the pod's Kubernetes
    # namespace) stays beside it: honorLabels would let a metric overwrite target labels.
    assert "honorLabels" not in endpoint
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    for key in ("interval", "scrapeTimeout"):
        assert re.fullmatch(r"[0-9]+s", endpoint[key]), key


def test_the_podmonitor_scrapes_every_worker_pod() -> None:
    monitor = monitoring_docs()["PodMonitor"]
    assert monitor["apiVersion"] == OPERATOR_API
    assert set(monitor["spec"]) == {"jobLabel", "selector", "podMetricsEndpoints"}
    template = k8s_resource("StatefulSet", "eventfleet-worker")["spec"]["template"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    redis_pods = k8s_resource("StatefulSet", "redis")["spec"]["template"]["metadata"]
    assert not selects(monitor["spec"]["selector"]["matchLabels"], redis_pods["labels"])
    exporter = k8s_resource("Deployment", "eventfleet-exporter")["spec"]["template"]
    assert not selects(monitor["spec"]["selector"]["matchLabels"], exporter["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    endpoint_check(endpoint)
    (container,) = template["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert monitor["spec"]["jobLabel"] in template["metadata"]["labels"]


def test_a_podmonitor_scrapes_every_api_pod() -> None:
    monitor = api_monitor()
    assert monitor["kind"] == "PodMonitor" and monitor["apiVersion"] == OPERATOR_API
    assert set(monitor["spec"]) == {"jobLabel", "selector", "podMetricsEndpoints"}
    template = k8s_resource("Deployment", "eventfleet-api")["spec"]["template"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    worker = k8s_resource("StatefulSet", "eventfleet-worker")["spec"]["template"]
    assert not selects(monitor["spec"]["selector"]["matchLabels"], worker["metadata"]["labels"])
    worker_monitor = monitoring_docs()["PodMonitor"]["spec"]["selector"]["matchLabels"]
    assert not selects(worker_monitor, template["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    endpoint_check(endpoint)
    (container,) = template["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert monitor["spec"]["jobLabel"] in template["metadata"]["labels"]


def test_the_servicemonitor_scrapes_the_exporter() -> None:
    monitor = monitoring_docs()["ServiceMonitor"]
    assert monitor["apiVersion"] == OPERATOR_API
    assert set(monitor["spec"]) == {"jobLabel", "selector", "endpoints"}
    service = k8s_resource("Service", "eventfleet-exporter")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    workers = k8s_resource("Service", "eventfleet-worker-metrics")
    assert not selects(monitor["spec"]["selector"]["matchLabels"], workers["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    endpoint_check(endpoint)
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["jobLabel"] in service["metadata"]["labels"]


def test_the_prometheusrule_holds_exactly_the_rules_file() -> None:
    rule = monitoring_docs()["PrometheusRule"]
    assert rule["apiVersion"] == OPERATOR_API
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == load_yaml(RULES)["groups"]
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
            assert all(isinstance(v, str) for v in r["annotations"].values()), r["alert"]


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard() -> None:
    configmap = monitoring_docs()["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = configmap["data"]
    assert name.endswith(".json")
    assert json.loads(configmap["data"][name]) == dashboard()


def test_the_generated_files_are_in_step_with_their_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync-k8s-monitoring.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_scrape_of_the_exporter_gets_a_fresh_pass() -> None:
    """The exporter reads Redis at most once per EVENTFLEET_EXPORTER_INTERVAL_S: below the
    monitor's interval, each scrape gets a new pass (above it, every other scrape would be
    served the previous one)."""
    config = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    (endpoint,) = monitoring_docs()["ServiceMonitor"]["spec"]["endpoints"]
    assert float(config["EVENTFLEET_EXPORTER_INTERVAL_S"]) < float(endpoint["interval"][:-1])


def test_an_overlay_with_the_component_renders(tmp_path: Path) -> None:
    """`kubectl kustomize` (kustomize v5) renders the base with the component: the monitors,
    the rule and the dashboard land in the base's namespace with its common labels."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here; the static checks above still ran")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S, overlay)],
                "components": [os.path.relpath(MONITORING, overlay)],
            }
        )
    )
    result = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, doc in monitoring_docs().items():
        assert (kind, doc["metadata"]["name"]) in kinds
    assert ("Deployment", "eventfleet-exporter") in kinds
    for d in docs:
        if d["kind"] in {"PodMonitor", "ServiceMonitor", "PrometheusRule"}:
            assert d["metadata"]["namespace"] == "eventfleet"
            assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "eventfleet"
