"""A real Prometheus server for the tests (Debian's `prometheus` package, as `make test`
installs it): started on a free loopback port with a temp config and storage dir, queried
through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventfleet.local.redisserver import free_port
from tests.helpers import wait_for
from tests.live_worker import http_status


@dataclass
class Prometheus:
    port: int
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of ``expr`` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` variable query lists."""
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name -> the label sets of its firing alerts."""
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def targets_up(self) -> dict[str, int]:
        """Scrape job -> how many of its targets are up."""
        up: dict[str, int] = {}
        for target in self.api("targets")["activeTargets"]:
            job = target["labels"]["job"]
            up[job] = up.get(job, 0) + (target["health"] == "up")
        return up


@contextmanager
def running_prometheus(
    workdir: Path, jobs: dict[str, list[int]], rules: dict[str, Any] | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping ``jobs`` (job name -> loopback ports) every second, evaluating
    ``rules`` every second; stopped (SIGTERM, then SIGKILL) afterwards."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed; install it with: apt-get install -y prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
            for job, ports in jobs.items()
        ],
    }
    if rules is not None:
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(workdir / "rules.yml")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or http_status(port, "/-/ready") == 200,
            60,
            "Prometheus to be ready",
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        yield Prometheus(port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
