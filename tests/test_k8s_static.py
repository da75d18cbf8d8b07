"""Static checks of the Kubernetes manifests in k8s/: kubernetes-validate --strict, the
kustomization, the restricted pod security standard, probes, credentials, persistence, the
metrics Service, the PodDisruptionBudget and the KEDA ScaledObject.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from tests.deploy_files import (
    K8S,
    ROOT,
    contract_settings,
    k8s_docs,
    k8s_resource,
    k8s_resource_files,
    load_yaml,
    redis_bytes,
)


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
        elif doc["kind"] == "CronJob":
            job = doc["spec"]["jobTemplate"]["spec"]
            yield f"CronJob/{doc['metadata']['name']}", job["template"]["spec"]


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    templates = dict(pod_templates())
    assert set(templates) == {
        "StatefulSet/eventfleet-worker",
        "Deployment/eventfleet-exporter",
        "Deployment/eventfleet-api",
        "StatefulSet/redis",
        "Job/eventfleet-init",
        "CronJob/eventfleet-archive",
    }
    for name, spec in templates.items():
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, name
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        if name == "StatefulSet/eventfleet-worker":  # reads its own scale (worker-rbac.yaml)
            assert spec["automountServiceAccountToken"] is True, name
            assert spec["serviceAccountName"] == "eventfleet-worker", name
        else:
            assert spec.get("automountServiceAccountToken") is False, name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["runAsNonRoot"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_worker_statefulset_probes_and_grace_period() -> None:
    deployment = k8s_resource("StatefulSet", "eventfleet-worker")
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
        "StatefulSet/eventfleet-worker": ("eventfleet-worker", "worker-password"),
        "CronJob/eventfleet-archive": ("eventfleet-admin", "admin-password"),
        "Deployment/eventfleet-exporter": ("eventfleet-exporter", "exporter-password"),
        "Deployment/eventfleet-api": ("eventfleet-api", "api-password"),
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


def test_the_init_job_ensures_the_producer_identity_after_init() -> None:
    """`init` first (an init container), then `producers add app --password-file` as the
    admin with the Secret's producer-app-password: the identity the shipped users.acl declares
    (Redis loads it read-only from the Secret, so a Redis restart keeps the user)."""
    spec = dict(pod_templates())["Job/eventfleet-init"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    keys = [item["key"] for item in volume["secret"]["items"]]
    assert keys == ["admin-password", "producer-app-password"]
    (init,) = spec["initContainers"]
    (identities,) = spec["containers"]
    for container in (init, identities):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["EVENTFLEET_REDIS_USERNAME"] == "eventfleet-admin"
        assert env["REDIS_PASSWORD_FILE"] == "/var/run/secrets/eventfleet/admin-password"
    secret_file = "/var/run/secrets/eventfleet/producer-app-password"
    assert identities["args"] == ["producers", "add", "app", "--password-file", secret_file]
    acl = (ROOT / "deploy" / "redis" / "users.acl").read_text(encoding="utf-8")
    assert re.search(r"^user eventfleet-producer-app on #[0-9a-f]{64} ", acl, re.M)
    example = (ROOT / "k8s" / "redis-credentials.secret.example.yaml").read_text()
    assert "producer-app-password" in example and "eventfleet-producer-app" in example


def test_redis_statefulset_persists_with_aof() -> None:
    statefulset = k8s_resource("StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    limit = container["resources"]["limits"]["memory"]
    assert redis_bytes(options["--maxmemory"]) <= 0.65 * redis_bytes(limit), (
        "maxmemory must leave headroom below the memory limit for the AOF rewrite fork"
    )
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    data_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == options["--dir"])
    assert data_mount["name"] in claims
    assert statefulset["spec"]["serviceName"] == "redis"
    k8s_resource("Service", "redis")


def test_archive_cronjob_runs_one_archive_at_a_time_onto_a_volume() -> None:
    cron = k8s_resource("CronJob", "eventfleet-archive")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["archive", "/archive"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/archive"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert k8s_resource("PersistentVolumeClaim", claim)["spec"]["resources"]["requests"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_metrics_service_and_pdb_select_the_workers() -> None:
    labels = k8s_resource("StatefulSet", "eventfleet-worker")["spec"]["template"]["metadata"][
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
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "StatefulSet")
    k8s_resource("StatefulSet", target["name"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    config = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    namespace = config["EVENTFLEET_NAMESPACE"]
    query = f'sum(eventfleet_shard_lag{{eventfleet_namespace="{namespace}"}})'
    assert trigger["metadata"]["query"] == query
    # a query that returns nothing (exporter down) is an error, so `fallback` applies
    assert trigger["metadata"]["ignoreNullValues"] == "false"
    assert spec["fallback"]["replicas"] >= 1
    assert float(trigger["metadata"]["threshold"]) > 0
    assert trigger["metadata"]["serverAddress"].startswith("http")
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # the shard counts live in the ConfigMap alone: init reads them from there
    job = k8s_resource("Job", "eventfleet-init")["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    assert init["args"] == ["init"]
    assert init["envFrom"] == [{"configMapRef": {"name": "eventfleet-config"}}]
    shards = int(config["EVENTFLEET_USER_SHARDS"]) + int(config["EVENTFLEET_ITEM_SHARDS"])
    assert spec["maxReplicaCount"] <= shards, "workers beyond the shard count sit idle"


def test_one_exporter_serves_the_lag_that_keda_reads() -> None:
    deployment = k8s_resource("Deployment", "eventfleet-exporter")
    config = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    assert deployment["spec"]["replicas"] == 1, "one pass over Redis per interval, not two"
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["exporter"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(config["EVENTFLEET_EXPORTER_PORT"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_resource("Service", "eventfleet-exporter")
    assert selects(service["spec"]["selector"], labels)
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    workers = k8s_resource("StatefulSet", "eventfleet-worker")["spec"]["template"]["metadata"]
    assert not selects(service["spec"]["selector"], workers["labels"])
    worker_service = k8s_resource("Service", "eventfleet-worker-metrics")
    assert not selects(worker_service["spec"]["selector"], labels)
