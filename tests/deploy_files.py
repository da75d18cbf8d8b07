"""The deployment files and docs/CONTRACTS.md, read for the static checks: paths, loaders,
the contract's tables, the Kubernetes documents, the dashboard's queries, promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


DEPLOY = ROOT / "deploy"


K8S = ROOT / "k8s"


COMPOSE_FILE = ROOT / "docker-compose.yml"


CONTRACTS = ROOT / "docs" / "CONTRACTS.md"


VENDORED_COMPOSE_SCHEMA = DEPLOY / "schemas" / "compose-spec.json"


SHARED_COMPOSE_SCHEMA = Path(__file__).resolve().parents[2] / "shared/schemas/compose-spec.json"


DASHBOARD = DEPLOY / "grafana" / "dashboards" / "eventfleet.json"


PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def contract_table(heading: str) -> list[list[str]]:
    """Rows (cells stripped) of the first markdown table under `## <heading>` in CONTRACTS.md."""
    text = CONTRACTS.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r} in {CONTRACTS}"
    rows = []
    for line in match.group(1).splitlines():
        if not line.startswith("|") or re.fullmatch(r"\|[-| ]+\|", line.strip()):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # drop the header row


def contract_metrics() -> dict[str, str]:
    """Metric name -> kind, from the CONTRACTS.md table of the workers' metrics."""
    metrics = {}
    for row in contract_table("Metrics"):
        name = re.fullmatch(r"`(eventfleet_[a-z0-9_]+)`", row[0])
        if name:
            metrics[name.group(1)] = row[1]
    assert len(metrics) > 10, "could not read the metrics table of CONTRACTS.md"
    return metrics


def contract_exporter_metrics() -> dict[str, str]:
    """Metric name -> kind, from the CONTRACTS.md table of `eventfleet exporter`'s metrics."""
    metrics = {}
    for row in contract_table("Exporter metrics"):
        name = re.fullmatch(r"`(eventfleet_[a-z0-9_]+)`", row[0])
        if name:
            metrics[name.group(1)] = row[1]
    assert "eventfleet_shard_lag" in metrics, "could not read the exporter's metrics table"
    return metrics


def contract_api_metrics() -> dict[str, str]:
    """Metric name -> kind, from the CONTRACTS.md table of `eventfleet api`'s metrics."""
    metrics = {}
    for row in contract_table("API metrics"):
        name = re.fullmatch(r"`(eventfleet_[a-z0-9_]+)`", row[0])
        if name:
            metrics[name.group(1)] = row[1]
    assert "eventfleet_api_requests_total" in metrics, "could not read the API's metrics table"
    return metrics


def contract_settings() -> set[str]:
    names: set[str] = set()
    for row in contract_table("Settings"):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", row[0]))
    assert "REDIS_URL" in names, "could not read the settings table of CONTRACTS.md"
    return names


def k8s_resource_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in k8s_resource_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in k8s/, found {len(found)}"
    return found[0]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[str]:
    exprs = [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]
    assert exprs, "the dashboard has no queries"
    return exprs


DASHBOARD_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$__interval": "15s",
    "$namespace": "eventfleet",
    "$job": ".*",
    "$instance": ".*",
}
"""Values for the dashboard's variables (Grafana's and its own) where a test runs its queries."""


def fill_variables(expr: str, values: dict[str, str]) -> str:
    """``expr`` with each ``$variable`` replaced (longest names first)."""
    for variable in sorted(values, key=len, reverse=True):
        expr = expr.replace(variable, values[variable])
    assert "$" not in expr, f"unhandled Grafana variable in {expr!r}"
    return expr


def promtool_check(*args: str) -> None:
    """Run `promtool check ...`; promtool comes with Debian's prometheus package."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; install it with: apt-get install -y prometheus")
    result = subprocess.run(
        [promtool, "check", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def redis_bytes(size: str) -> int:
    """A memory size as Redis (``600mb``), Compose (``1g``) or Kubernetes (``1Gi``) write it."""
    m = re.fullmatch(r"(\d+)\s*([kmg]?)(i?)b?", size.strip().lower())
    assert m, f"not a memory size: {size!r}"
    unit = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2)]
    return int(m.group(1)) * unit
