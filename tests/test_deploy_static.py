"""Static checks of the deployment files: compose, Dockerfile, Prometheus, Grafana, Kubernetes.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses (the Compose JSON schema, promtool,
kubernetes-validate), and against the names fixed by docs/CONTRACTS.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
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

SERVICES = {"redis", "init", "worker", "producer", "prometheus", "grafana"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------- helpers


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
    """Metric name -> kind, from the CONTRACTS.md metrics table."""
    metrics = {}
    for row in contract_table("Metrics"):
        name = re.fullmatch(r"`(eventfleet_[a-z0-9_]+)`", row[0])
        if name:
            metrics[name.group(1)] = row[1]
    assert len(metrics) > 10, "could not read the metrics table of CONTRACTS.md"
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


def promtool_check(*args: str) -> None:
    """Run `promtool check ...`; promtool comes with Debian's prometheus package."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed; install it with: apt-get install -y prometheus")
    result = subprocess.run(
        [promtool, "check", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_validates_against_the_compose_spec() -> None:
    schema = json.loads(VENDORED_COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose())


def test_vendored_compose_schema_matches_the_shared_copy() -> None:
    if not SHARED_COMPOSE_SCHEMA.exists():
        pytest.skip(f"no shared copy at {SHARED_COMPOSE_SCHEMA} to compare the vendored one with")
    assert VENDORED_COMPOSE_SCHEMA.read_bytes() == SHARED_COMPOSE_SCHEMA.read_bytes()


def test_compose_services_are_exactly_the_contract_set() -> None:
    assert set(compose()["services"]) == SERVICES


def test_worker_service_is_scalable() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed container name forbids --scale worker=N"
    for port in worker.get("ports", []):
        published = port.get("published") if isinstance(port, dict) else None
        if isinstance(port, str | int):
            published = str(port).rpartition(":")[0] or None
        assert published is None, f"worker publishes a fixed host port: {port!r}"


def test_workers_and_producer_wait_for_init() -> None:
    services = compose()["services"]
    assert services["init"]["command"] == ["init"]
    for name in ("worker", "producer"):
        assert services[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }, name
    assert services["init"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["producer"]["command"] == [
        "produce",
        "load",
        "--events",
        "100000",
        "--rate",
        "2000",
        "--seed",
        "1",
    ]


def test_every_role_logs_in_as_its_own_acl_user() -> None:
    services = compose()["services"]
    expected = {"init": "admin", "worker": "worker", "producer": "producer"}
    for service, role in expected.items():
        env = services[service]["environment"]
        assert env["EVENTFLEET_REDIS_USERNAME"] == f"eventfleet-{role}", service
        secret = f"redis_{role}_password"
        assert services[service]["secrets"] == [secret], service
        assert env["REDIS_PASSWORD_FILE"] == f"/run/secrets/{secret}", service
        assert set(env) <= contract_settings(), f"{service} sets a variable not in CONTRACTS"


def test_redis_service_is_durable_and_locked_down() -> None:
    data = compose()
    redis = data["services"]["redis"]
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in redis["volumes"]}
    assert mounts[options["--aclfile"]] == "./deploy/redis/users.acl"
    assert mounts[options["--dir"]] in data["volumes"], "Redis data must be a named volume"
    assert "test" in redis["healthcheck"]


def test_compose_host_files_exist() -> None:
    data = compose()
    for name, service in data["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    for name, secret in data["secrets"].items():
        assert (ROOT / secret["file"]).is_file(), f"secret {name}: no file {secret['file']}"
    build = data["services"]["worker"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_ui_ports_bind_to_localhost_only() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} exposes {port} beyond localhost"
    for name in ("redis", "init", "worker", "producer"):
        assert "ports" not in services[name], f"{name} should not publish a host port"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(part, str) for part in value)
    return value


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert froms[-1].split()[0] == "python:3.11-slim"


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "use a numeric uid so that runAsNonRoot can verify it"
    assert int(uid) != 0


def test_dockerfile_entrypoint_cmd_healthcheck_and_stopsignal() -> None:
    instructions = dict(dockerfile_instructions())
    assert exec_form(instructions["ENTRYPOINT"]) == ["eventfleet"]
    assert exec_form(instructions["CMD"]) == ["worker"]
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    health = instructions["HEALTHCHECK"]
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options
    assert exec_form(command)[:2] == ["eventfleet", "health"]


def test_dockerfile_installs_no_dev_dependencies() -> None:
    for keyword, args in dockerfile_instructions():
        if keyword == "RUN":
            assert "[dev]" not in args, f"dev extra installed: {args}"
            assert not re.search(r"\b(pytest|mypy|ruff)\b", args), args
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any("pip wheel" in run for run in runs), "the build stage should build wheels"
    assert any("--no-index" in run for run in runs), "the runtime should install only wheels"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: `*` and `?` stay inside one path element, `**` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] in "*?":
            out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return excluded


def test_dockerignore_helper_follows_the_last_match() -> None:
    assert dockerignore_excludes(".venv/bin/python")
    assert dockerignore_excludes(".git/HEAD")
    assert dockerignore_excludes("tests/test_deploy_static.py")
    assert not dockerignore_excludes("worker/settings.py")
    assert dockerignore_excludes("worker/__pycache__/settings.cpython-311.pyc")


def test_dockerfile_copies_only_files_in_the_build_context() -> None:
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for args in copies:
        if "--from=" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            probe = source.rstrip("/")
            if path.is_dir():
                probe += "/__init__.py"
            assert not dockerignore_excludes(probe), f"COPY {source}: excluded by .dockerignore"


# ---------------------------------------------------------------- Prometheus


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool_check("config", str(PROMETHEUS_CONFIG))


def test_prometheus_finds_workers_by_dns() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["eventfleet-worker"]["dns_sd_configs"]
    assert sd == [{"names": ["worker"], "type": "A", "port": 9108, "refresh_interval": "5s"}]
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}:/etc/prometheus/prometheus.yml:ro" in mounts


# ---------------------------------------------------------------- Grafana

PROMQL_WORDS = {
    # aggregation operators and keywords
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    # functions
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_join",
    "ln",
    "log2",
    "log10",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "last_over_time",
    "present_over_time",
}


def promql_metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that are neither PromQL words, labels nor variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def contract_base_name(series: str, metrics: dict[str, str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and metrics.get(base) == "histogram":
            return base
    return series


def test_promql_name_extraction() -> None:
    names = promql_metric_names(
        'histogram_quantile(0.99, sum by (le, family) (rate(a_bucket{x="y"}[$__rate_interval])))'
        " / on (shard) group_left up"
    )
    assert names == {"a_bucket", "up"}


def test_dashboard_uses_only_contract_metrics() -> None:
    metrics = contract_metrics()
    for expr in dashboard_exprs():
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = {n for n in names if contract_base_name(n, metrics) not in metrics}
        assert not unknown, f"{expr!r} uses metrics not in CONTRACTS.md: {sorted(unknown)}"


def test_dashboard_covers_the_fleet() -> None:
    exprs = dashboard_exprs()
    joined = "\n".join(exprs)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert has(r"by \(type\) \(rate\(eventfleet_events_applied_total"), "throughput by type"
    assert has(r"by \(shard\) \(eventfleet_shard_lag\)"), "lag per shard"
    assert has(r"by \(shard\) \(eventfleet_shard_pending\)"), "pending per shard"
    for q in ("0.5", "0.99"):
        assert has(rf"histogram_quantile\({q}, .*eventfleet_end_to_end_latency_seconds_bucket")
    assert has(r"by \(instance\) \(eventfleet_shards_owned\)"), "shards per worker"
    for name in ("acquisitions", "handovers", "losses"):
        assert f"eventfleet_lease_{name}_total" in joined
    for name in ("snapshot_age_seconds", "dead_letters_total", "redis_errors_total"):
        assert f"eventfleet_{name}" in joined
    assert has(r"histogram_quantile\(.*eventfleet_recovery_duration_seconds_bucket")
    assert "sum(eventfleet_shard_lag)" in exprs, "the autoscaling signal should be on show"


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        concrete = expr
        for variable, value in substitutions.items():
            concrete = concrete.replace(variable, value)
        assert "$" not in concrete, f"unhandled Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:expr_{i}", "expr": concrete})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool_check("rules", str(rule_file))


def test_dashboard_model_is_sound() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 39
    assert data["uid"] and data["title"]
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat"}, panel["type"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, panel["title"]


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    providers = load_yaml(DEPLOY / "grafana/provisioning/dashboards/eventfleet.yml")
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts[path] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_manifests_validate_strictly() -> None:
    files = [str(p) for p in k8s_resource_files()]
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
    # kubernetes-validate ships no schema for custom resources and only warns about them:
    # the ScaledObject must be the only thing it skipped (test_scaledobject checks it).
    warned = re.findall(r"^WARN .*?kind (\w+) ", output, re.M)
    assert warned == ["ScaledObject"], output
    assert output.count("passed for resource") == len(list(k8s_docs())) - 1, output


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = kustomization["resources"]
    expected = sorted(p.name for p in k8s_resource_files() if ".example." not in p.name)
    assert sorted(listed) == expected
    assert len(listed) == len(set(listed))
    for path, doc in k8s_docs():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization["namespace"], path.name


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in k8s_docs():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    templates = dict(pod_templates())
    assert set(templates) == {
        "Deployment/eventfleet-worker",
        "StatefulSet/redis",
        "Job/eventfleet-init",
    }
    for name, spec in templates.items():
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, name
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["runAsNonRoot"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_worker_deployment_probes_and_grace_period() -> None:
    deployment = k8s_resource("Deployment", "eventfleet-worker")
    config = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    def probe_target(probe: str) -> tuple[str, int]:
        get = container[probe]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert probe_target("livenessProbe") == ("/healthz", 9108)
    assert probe_target("readinessProbe") == ("/readyz", 9108)
    assert config["EVENTFLEET_METRICS_PORT"] == "9108"
    assert spec["terminationGracePeriodSeconds"] > float(config["EVENTFLEET_DRAIN_TIMEOUT_S"])
    assert container["args"] == ["worker"]
    assert container["envFrom"] == [{"configMapRef": {"name": "eventfleet-config"}}]


def test_configmap_holds_only_contract_settings() -> None:
    data = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    assert set(data) <= contract_settings(), set(data) - contract_settings()
    assert all(isinstance(value, str) for value in data.values())


def test_pods_get_only_their_own_credentials() -> None:
    expected = {
        "Deployment/eventfleet-worker": ("eventfleet-worker", "worker-password"),
        "Job/eventfleet-init": ("eventfleet-admin", "admin-password"),
    }
    templates = dict(pod_templates())
    for name, (user, key) in expected.items():
        spec = templates[name]
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == "eventfleet-redis", name
        assert [item["key"] for item in volume["secret"]["items"]] == [key], name
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["EVENTFLEET_REDIS_USERNAME"] == user, name
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert env["REDIS_PASSWORD_FILE"] == f"{mount['mountPath']}/{key}", name


def test_redis_statefulset_persists_with_aof() -> None:
    statefulset = k8s_resource("StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == options["--dir"])
    assert data_mount["name"] in claims
    assert statefulset["spec"]["serviceName"] == "redis"
    k8s_resource("Service", "redis")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_metrics_service_and_pdb_select_the_workers() -> None:
    labels = k8s_resource("Deployment", "eventfleet-worker")["spec"]["template"]["metadata"][
        "labels"
    ]
    service = k8s_resource("Service", "eventfleet-worker-metrics")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9108"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert selects(service["spec"]["selector"], labels)
    pdb = k8s_resource("PodDisruptionBudget", "eventfleet-worker")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    redis_labels = k8s_resource("StatefulSet", "redis")["spec"]["template"]["metadata"]["labels"]
    assert not selects(service["spec"]["selector"], redis_labels)


def test_scaledobject_scales_the_workers_on_total_lag() -> None:
    scaled = k8s_resource("ScaledObject", "eventfleet-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    known = {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert set(spec) <= known, set(spec) - known
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    k8s_resource("Deployment", target["name"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == "sum(eventfleet_shard_lag)"
    assert float(trigger["metadata"]["threshold"]) > 0
    assert trigger["metadata"]["serverAddress"].startswith("http")
    # Scaling to zero would remove the only exporters of the lag gauge.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    init_args = k8s_resource("Job", "eventfleet-init")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    shards = int(init_args[init_args.index("--user-shards") + 1]) + int(
        init_args[init_args.index("--item-shards") + 1]
    )
    assert spec["maxReplicaCount"] <= shards, "workers beyond the shard count sit idle"
