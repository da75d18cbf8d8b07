"""The kustomize base (k8s/) and its overlays (deploy/k8s-overlays/): each rendered and
validated with kubernetes-validate --strict, the way `kubectl apply -k` would receive it.

Rendering uses tests/kustomize_lite.py (the features these files use, nothing else); where
`kubectl` is installed, its built-in kustomize must render the very same objects."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kustomize_lite import render

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "k8s"
OVERLAYS = ROOT / "deploy" / "k8s-overlays"
ROOTS = [BASE, *sorted(p.parent for p in OVERLAYS.glob("*/kustomization.yaml"))]


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def names(root: Path) -> str:
    return str(root.relative_to(ROOT))


def test_the_overlays_exist() -> None:
    assert {p.name for p in ROOTS[1:]} >= {"no-keda", "external-redis"}


@pytest.mark.parametrize("root", ROOTS, ids=names)
def test_rendered_manifests_validate_strictly(root: Path, tmp_path: Path) -> None:
    docs = render(root)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ERROR" not in output, output
    warned = re.findall(r"^WARN .*?kind (\w+) ", output, re.M)
    assert warned == [d["kind"] for d in docs if d["kind"] == "ScaledObject"], output
    kinds = by_key(docs)
    deployment = kinds[("StatefulSet", "eventfleet-worker")]
    scaled = kinds.get(("ScaledObject", "eventfleet-worker"))
    # KEDA owns the size where it runs; without it the overlay must fix one
    assert ("replicas" in deployment["spec"]) == (scaled is None), names(root)
    config = kinds[("ConfigMap", "eventfleet-config")]["data"]
    shards = int(config["EVENTFLEET_USER_SHARDS"]) + int(config["EVENTFLEET_ITEM_SHARDS"])
    if scaled is not None:
        assert scaled["spec"]["maxReplicaCount"] <= shards, "workers past the shards sit idle"
    else:
        assert deployment["spec"]["replicas"] <= shards


def test_no_keda_overlay() -> None:
    kinds = by_key(render(OVERLAYS / "no-keda"))
    assert not [k for k in kinds if k[0] == "ScaledObject"]
    assert kinds[("StatefulSet", "eventfleet-worker")]["spec"]["replicas"] >= 1


def test_external_redis_overlay() -> None:
    kinds = by_key(render(OVERLAYS / "external-redis"))
    assert ("StatefulSet", "redis") not in kinds and ("Service", "redis") not in kinds
    url = kinds[("ConfigMap", "eventfleet-config")]["data"]["REDIS_URL"]
    assert url.startswith("rediss://") and "redis:6379" not in url
    base = by_key(render(BASE))
    assert set(base) - set(kinds) == {("StatefulSet", "redis"), ("Service", "redis")}


@pytest.mark.parametrize("root", ROOTS, ids=names)
def test_kubectl_kustomize_renders_the_same(root: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendered by tests/kustomize_lite.py only")
    result = subprocess.run(
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    theirs = by_key([d for d in yaml.safe_load_all(result.stdout) if d])
    assert theirs == by_key(render(root))
