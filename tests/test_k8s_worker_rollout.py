"""The worker StatefulSet as rollouts and scaling need it: stable pod names as member ids,
static membership with a rejoin grace of a few lease TTLs, the scale-down check and the one
API permission it needs, parallel pod management, one-at-a-time rolling updates, a headless
governing Service, no `replicas` (KEDA owns it), and a PDB that never blocks a drain."""

from __future__ import annotations

from typing import Any

from tests.deploy_files import k8s_resource


def worker() -> dict[str, Any]:
    return k8s_resource("StatefulSet", "eventfleet-worker")


def worker_env() -> dict[str, Any]:
    (container,) = worker()["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pods_keep_their_names_and_are_static_members() -> None:
    spec = worker()["spec"]
    assert "replicas" not in spec, "KEDA owns the count (the no-keda overlay sets it)"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["updateStrategy"]["rollingUpdate"].get("partition", 0) == 0
    assert "maxUnavailable" not in spec["updateStrategy"]["rollingUpdate"], "one pod at a time"
    env = worker_env()
    assert env["EVENTFLEET_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = k8s_resource("ConfigMap", "eventfleet-config")["data"]
    ttl_ms = int(config["EVENTFLEET_LEASE_TTL_MS"])
    grace_ms = int(env["EVENTFLEET_REJOIN_GRACE_MS"])
    assert 3 * ttl_ms <= grace_ms <= 12 * ttl_ms, "a few lease TTLs"
    assert env["EVENTFLEET_REJOIN_CHECK"] == "kubernetes"
    pod = spec["template"]["spec"]
    # the stop (replica check, snapshots, lease extension or hand-over) fits the drain timeout,
    # which fits the termination grace
    assert pod["terminationGracePeriodSeconds"] > float(config["EVENTFLEET_DRAIN_TIMEOUT_S"])


def test_the_governing_service_is_headless_and_selects_the_workers() -> None:
    statefulset = worker()
    service = k8s_resource("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_service_account_may_read_only_its_statefulsets_scale() -> None:
    name = worker()["metadata"]["name"]
    account = worker()["spec"]["template"]["spec"]["serviceAccountName"]
    assert k8s_resource("ServiceAccount", account)["automountServiceAccountToken"] is False
    role = k8s_resource("Role", account)
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["statefulsets/scale"],
            "resourceNames": [name],
            "verbs": ["get"],
        }
    ]
    binding = k8s_resource("RoleBinding", account)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "eventfleet"}
    ]


def test_the_pdb_never_blocks_a_drain() -> None:
    pdb = k8s_resource("PodDisruptionBudget", "eventfleet-worker")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    labels = worker()["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
