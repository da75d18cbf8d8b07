"""The API's Prometheus metrics, in a registry of its own, served at ``/metrics``.

Labels are bounded: ``route`` is the route's template (``/v1/users/{user}/balance``, or
``other`` for a path no route matches), ``method`` one of a fixed few, ``code`` the status
(a small set: the API answers the statuses docs/API.md lists) and ``class`` its first digit.
Every series also carries ``eventfleet_namespace``, as the workers' and the exporter's do, so
one Prometheus keeps two namespaces' APIs apart and the dashboard selects them alike.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

NAMESPACE_LABEL = "eventfleet_namespace"

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """One set per app (tests build several apps in one process)."""

    def __init__(self, namespace: str = "eventfleet") -> None:
        self.registry = CollectorRegistry()
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_Labelled(self.registry, namespace))
        self.requests = Counter(
            "eventfleet_api_requests",
            "HTTP requests answered, by route template, method, status code and class",
            ["route", "method", "code", "class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "eventfleet_api_request_duration_seconds",
            "Time from the request's start to its answer, by route template, method and class",
            ["route", "method", "class"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "eventfleet_api_requests_in_flight",
            "Requests being answered now",
            registry=self.registry,
        )
        self.replays = Counter(
            "eventfleet_api_idempotent_replays",
            "Requests answered from a kept Idempotency-Key record",
            registry=self.registry,
        )
        self.identities = Gauge(
            "eventfleet_api_identities",
            "Identities with verified tokens and open clients in this process",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        """Count and time one request (its series looked up once per route, method and code)."""
        key = (route, method, code)
        children = self._children.get(key)
        if children is None:
            verb = method if method in METHODS else "other"
            klass = f"{code // 100}xx"
            children = (
                self.requests.labels(route, verb, str(code), klass),
                self.latency.labels(route, verb, klass),
            )
            if verb == method:  # another method's name is not kept: the keys stay bounded
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self._exposed)


class _Labelled(Collector):
    """``registry``'s metrics, each sample with ``eventfleet_namespace``."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._registry = registry
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            labelled = copy.copy(family)
            labelled.samples = [
                s._replace(labels={**s.labels, NAMESPACE_LABEL: self._namespace})
                for s in family.samples
            ]
            yield labelled


__all__ = ["ApiMetrics"]
