"""Static checks of deploy/prometheus/prometheus.yml: promtool accepts it, and it finds the
workers by DNS.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy_files import (
    DEPLOY,
    PROMETHEUS_CONFIG,
    ROOT,
    compose,
    load_yaml,
    promtool_check,
)


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """As compose mounts it: the rule file where prometheus.yml expects it (a copy here)."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    promtool_check("config", str(copy))


def test_prometheus_finds_workers_by_dns() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["eventfleet-worker"]["dns_sd_configs"]
    assert sd == [{"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "5s"}]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}:/etc/prometheus/prometheus.yml:ro" in mounts


def test_prometheus_loads_the_alert_rules_and_scrapes_the_exporter() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter = compose()["services"]["exporter"]
    port = exporter["environment"]["EVENTFLEET_EXPORTER_PORT"]
    assert jobs["eventfleet-exporter"]["static_configs"] == [{"targets": [f"exporter:{port}"]}]
    assert exporter["command"] == ["exporter"]
    assert exporter.get("deploy", {}).get("replicas", 1) == 1
    # each 5 s scrape gets a fresh pass: the exporter's interval is below the scrape interval
    scrape_s = float(config["global"]["scrape_interval"].removesuffix("s"))
    assert float(exporter["environment"]["EVENTFLEET_EXPORTER_INTERVAL_S"]) < scrape_s
