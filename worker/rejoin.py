"""Whether a static member that got SIGTERM will come back under its name
(``EVENTFLEET_REJOIN_CHECK``).

Static membership keeps a stopping member's shards on it for ``EVENTFLEET_REJOIN_GRACE_MS``:
right for a restart (a rollout, an eviction, a deleted pod, all recreated under the same
name), wrong for a removal, whose shards would then wait out the grace for nobody. On
Kubernetes a StatefulSet pod is named ``<statefulset>-<ordinal>`` and a scale-down removes
the highest ordinals after lowering ``spec.replicas``; so at SIGTERM a pod whose ordinal is at
or past the StatefulSet's replica count is going away for good, any other is coming back.

The answer comes from one GET of the StatefulSet's ``scale`` subresource with the pod's
service-account token (a Role allows exactly that, k8s/worker-rbac.yaml). When the answer
cannot be had (API unreachable, refused, a name that is no StatefulSet pod's) the member
leaves: one extra move of its shards on a restart costs less than shards waiting for a
grace on a removal.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

import structlog

from eventfleet.store.settings import Settings

log = structlog.get_logger("eventfleet.worker")
TIMEOUT_S = 2.0
"""The API call's bound: it runs inside the drain (EVENTFLEET_DRAIN_TIMEOUT_S)."""


class RejoinUnknown(Exception):
    """Whether this member comes back could not be found out."""


def pod_ordinal(worker_id: str) -> tuple[str, int]:
    """``("eventfleet-worker", 3)`` from the pod name ``eventfleet-worker-3``."""
    name, _, ordinal = worker_id.rpartition("-")
    if not name or not ordinal.isdigit():
        raise RejoinUnknown(f"worker id {worker_id!r} is no StatefulSet pod name (<name>-<n>)")
    return name, int(ordinal)


def statefulset_replicas(settings: Settings, statefulset: str) -> int:
    """``spec.replicas`` of the StatefulSet, read from its ``scale`` subresource."""
    base = settings.kube_api_url.rstrip("/")
    if not base.startswith("https://"):
        raise RejoinUnknown("EVENTFLEET_KUBE_API_URL must be https:// (a token is sent)")
    sa = settings.kube_sa_dir
    try:
        namespace = (sa / "namespace").read_text(encoding="utf-8").strip()
        token = (sa / "token").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RejoinUnknown(f"no service-account files in {sa} ({exc.strerror})") from None
    url = f"{base}/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}/scale"
    ca = sa / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca) if ca.exists() else None)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as reply:
            body: Any = json.loads(reply.read(1 << 20))
    except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts are OSErrors
        raise RejoinUnknown(f"GET {url}: {exc}") from None
    replicas = body.get("spec", {}).get("replicas", 0) if isinstance(body, dict) else None
    if not isinstance(replicas, int):
        raise RejoinUnknown(f"GET {url}: no spec.replicas in the reply")
    return replicas


def will_return(settings: Settings) -> bool:
    """True when this stopping member is expected back under its id (keep its shards)."""
    if settings.rejoin_check == "none":
        return True
    try:
        statefulset, ordinal = pod_ordinal(settings.worker_id)
        replicas = statefulset_replicas(settings, statefulset)
    except RejoinUnknown as exc:
        log.warning("rejoin_check_failed", error=str(exc)[:300], leaving=True)
        return False
    back = ordinal < replicas
    log.info(
        "rejoin_check",
        statefulset=statefulset,
        ordinal=ordinal,
        replicas=replicas,
        returns=back,
    )
    return back
