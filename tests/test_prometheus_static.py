"""Static checks of deploy/prometheus/prometheus.yml: promtool accepts it, and it finds the
workers by DNS.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

from tests.deploy_files import PROMETHEUS_CONFIG, ROOT, compose, load_yaml, promtool_check


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool_check("config", str(PROMETHEUS_CONFIG))


def test_prometheus_finds_workers_by_dns() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["eventfleet-worker"]["dns_sd_configs"]
    assert sd == [{"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "5s"}]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}:/etc/prometheus/prometheus.yml:ro" in mounts
