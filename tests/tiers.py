"""Test tiers: every test runs in exactly one, chosen here (the hook below, imported by
``tests/conftest.py``), and ``make`` runs them cheapest first:

* ``fast`` (``make test-fast``): pure tests, static checks of the shipped files, and tests
  against the session's one redis-server that start no worker process;
* ``redis``: Redis servers of their own (restarted, killed, TLS, the shipped ACL file, Redis
  Cluster), commands run as processes, and single-Redis tests that wait out a retry deadline;
* ``fleet``: worker processes (``LocalFleet``, ``eventfleet up``, a live worker), bench;
* ``chaos`` (``make chaos``): tests marked ``@pytest.mark.chaos``, the long runs.

A test's tier is the first that applies of: ``chaos`` if it is marked so; its own tier
marker (``@pytest.mark.redis``...), else its file's tier in ``FILES``; then raised to what
its fixtures need (``FIXTURE_TIER``: a test that asks for a fleet is never ``fast``). A file
missing from ``FILES`` still runs, in the tier its fixtures give, and
``tests/test_tiers.py`` fails until it is listed. Each tier has a per-test timeout
(``TIMEOUT_S``) unless the test sets its own (``@pytest.mark.timeout``). A test of the fast
or redis tier that starts a worker process (``LocalFleet.start``) fails: the table is wrong.

``--shard I/N`` keeps the I-th of N disjoint parts of what ``-m`` selected, split by file and
balanced by ``COST_S``: ``make test`` runs the redis and fleet tiers as three side by side,
``make test-fleet`` the fleet tier as two (scripts/test-shards.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventfleet.local.fleet import LocalFleet

TIERS = ("fast", "redis", "fleet", "chaos")
"""Cheapest first; a test is raised to a later tier, never lowered."""

TIMEOUT_S = {"fast": 60, "redis": 120, "fleet": 300}
"""Per test, in seconds (pytest-timeout): several times what the slowest test of the tier takes
on a busy machine, so only a hang trips it; chaos tests set their own."""

FIXTURE_TIER = {"own_redis": "redis", "fleet_factory": "fleet"}
"""Fixtures that need more than the fast tier gives: a Redis of the test's own (to stop, kill or
restart), worker processes. One redis-server per session or module is fast."""

FILES = {
    # no Redis: the domain, static checks of what ships, docs
    "test_alert_rules.py": "fast",
    "test_architecture.py": "fast",
    "test_architecture_checker.py": "fast",
    "test_bundle.py": "fast",
    "test_client_batch.py": "fast",
    "test_client_texts.py": "fast",
    "test_cli_help.py": "fast",
    "test_codec_fast.py": "fast",
    "test_compose_static.py": "fast",
    "test_dashboard.py": "fast",
    "test_dockerfile_static.py": "fast",
    "test_domain.py": "fast",
    "test_hostile_entries.py": "fast",
    "test_httpserver.py": "fast",
    "test_k8s_monitoring.py": "fast",
    "test_k8s_overlays.py": "fast",
    "test_k8s_static.py": "fast",
    "test_k8s_worker_rollout.py": "fast",
    "test_locks.py": "fast",
    "test_metric_labels.py": "fast",
    "test_observability_doc.py": "fast",
    "test_prometheus_static.py": "fast",
    "test_tiers.py": "fast",
    # the session's redis-server, no worker process
    "test_archive_trimmed.py": "fast",
    "test_bench_loop.py": "fast",
    "test_cli.py": "fast",
    "test_cli_global.py": "fast",
    "test_dedup_window.py": "fast",
    "test_split.py": "fast",
    "test_split_fleet.py": "fast",
    "test_split_worker.py": "fast",
    "test_split_standby.py": "fast",
    "test_read_split.py": "fast",
    "test_reshard_grow.py": "fast",
    "test_verify_split.py": "fast",
    "test_reshard_online.py": "fast",
    "test_reshard_clients.py": "fast",
    "test_reshard_command.py": "fleet",
    "test_verify_seeds_marks.py": "fast",
    "test_reshard_ride.py": "redis",
    "test_order_wait_growth.py": "fast",
    "test_counts_config.py": "fast",
    "test_exporter_reshard.py": "fast",
    "test_inbox_bounds.py": "fast",
    "test_perf_paths.py": "fast",
    "test_wire.py": "fast",
    "test_write_behind.py": "fast",
    "test_newcomer.py": "fast",
    "test_client.py": "fast",
    "test_api_fast.py": "fast",
    "test_lag.py": "fast",
    "test_liveview.py": "fast",
    # Redis servers of their own, the shipped ACL file, TLS, processes
    "test_acl.py": "redis",
    "test_acl_exporter.py": "redis",
    "test_client_bulk.py": "redis",
    "test_archive.py": "redis",
    "test_cluster.py": "redis",
    "test_cluster_acl.py": "redis",
    "test_image_contents.py": "redis",
    "test_logs.py": "redis",
    "test_lua_scripts.py": "redis",
    "test_lua_write_model.py": "redis",
    "test_lua_liveness.py": "redis",
    "test_worker_stop_early.py": "redis",
    "test_producer.py": "redis",
    "test_tls.py": "redis",
    "test_reload_guard.py": "redis",
    "test_not_redis.py": "redis",
    "test_shardio.py": "redis",
    # worker processes
    "test_acl_cli.py": "fleet",
    "test_bench.py": "fleet",
    "test_api_live.py": "fleet",
    "test_api_chaos.py": "fleet",
    "test_api_backlog.py": "fleet",
    "test_bounded_dedup.py": "fleet",
    "test_chaos.py": "fleet",
    "test_chaos_reshard.py": "fleet",
    "test_cluster_failover.py": "fleet",
    "test_reshard_cluster.py": "fleet",
    "test_reshard_retention.py": "fleet",
    "test_docs_commands.py": "fleet",
    "test_exporter.py": "fleet",
    "test_fast_failover.py": "fleet",
    "test_handover.py": "fleet",
    "test_health_probes.py": "fleet",
    "test_hostile_live.py": "fleet",
    "test_idempotency_keys.py": "fleet",
    "test_idempotent_files.py": "fleet",
    "test_memory_limit.py": "fleet",
    "test_metrics_endpoint.py": "fleet",
    "test_order_ids.py": "fleet",
    "test_damage.py": "fleet",
    "test_reshard_shipped.py": "fleet",
    "test_partition.py": "fleet",
    "test_prometheus_live.py": "fleet",
    "test_read_ahead.py": "fleet",
    "test_redrive_bundle.py": "fleet",
    "test_redrive_once.py": "fleet",
    "test_rejoin_check.py": "fleet",
    "test_restart_shipped.py": "fleet",
    "test_readme_python.py": "fleet",
    "test_model_defer.py": "fleet",
    "test_read_model.py": "fleet",
    "test_chaos_readers.py": "fast",
    "test_retention.py": "fleet",
    "test_soak.py": "fleet",
    "test_standby.py": "fleet",
    "test_static_membership.py": "fleet",
    "test_takeover_metrics.py": "fleet",
    "test_up.py": "fleet",
    "test_worker_faults.py": "fleet",
    "test_worker_startup.py": "fleet",
    "test_producer_acl.py": "fleet",
    "test_producer_identity.py": "fleet",
    "test_producer_flood.py": "fleet",
    "test_exporter_producers.py": "fleet",
    "test_producer_upgrade.py": "fleet",
    "test_verify.py": "fleet",
    "test_wheel_install.py": "fleet",
}
"""Each test file's tier (a test may raise its own with a marker)."""

LIBRARY_FILES = (
    # redis-py and hiredis: connections, pipelines, scripts, streams, Cluster, ACL users, TLS,
    # asyncio, the wire helper on redis-py's parser, errors from a server that is not Redis
    "test_wire.py",
    "test_write_behind.py",
    "test_shardio.py",
    "test_producer.py",
    "test_client.py",
    "test_client_batch.py",
    "test_lag.py",
    "test_inbox_bounds.py",
    "test_lua_scripts.py",
    "test_lua_liveness.py",
    "test_lua_write_model.py",
    "test_acl.py",
    "test_acl_exporter.py",
    "test_cluster.py",
    "test_cluster_acl.py",
    "test_tls.py",
    "test_not_redis.py",
    # pydantic and pydantic-settings: the events, the codec, hostile input, settings errors
    "test_domain.py",
    "test_codec_fast.py",
    "test_bundle.py",
    "test_hostile_entries.py",
    # click, tenacity (the CLI's retries), settings from the environment
    "test_cli.py",
    "test_cli_global.py",
    "test_cli_help.py",
    # structlog, prometheus-client, rich
    "test_logs.py",
    "test_httpserver.py",
    "test_metric_labels.py",
    "test_liveview.py",
)
"""The fast and redis tier files that exercise the runtime dependencies' API in this process:
``make test-min`` runs these at the dependency floors (locks/minimum.txt). Static checks of
the shipped files, the pure ledger rules and tests that run processes to check our own logic
are left out: they call no library API the files above do not."""


def _later(a: str, b: str) -> str:
    return a if TIERS.index(a) >= TIERS.index(b) else b


def tier_of(item: pytest.Item) -> str:
    if item.get_closest_marker("chaos") is not None:
        return "chaos"
    own = [t for t in TIERS[:-1] if any(m.name == t for m in item.iter_markers())]
    if len(own) > 1:
        raise pytest.UsageError(f"{item.nodeid}: marked with more than one tier: {own}")
    tier = own[0] if own else FILES.get(Path(str(item.path)).name, "fast")
    for name in getattr(item, "fixturenames", ()):
        tier = _later(tier, FIXTURE_TIER.get(name, "fast"))
    if own and tier != own[0]:
        raise pytest.UsageError(f"{item.nodeid}: marked {own[0]}, but its fixtures need {tier}")
    return tier


COST_S = {
    "test_bench.py": 140,
    "test_cluster.py": 130,
    "test_chaos.py": 70,
    "test_chaos_reshard.py": 90,
    "test_restart_shipped.py": 65,
    "test_docs_commands.py": 55,
    "test_worker_faults.py": 45,
    "test_api_live.py": 40,
    "test_archive.py": 35,
    "test_reshard_command.py": 35,
    "test_cluster_acl.py": 35,
    "test_static_membership.py": 30,
    "test_cluster_failover.py": 25,
    "test_reshard_cluster.py": 140,
    "test_reshard_retention.py": 20,
    "test_api_chaos.py": 25,
    "test_standby.py": 25,
    "test_up.py": 20,
    "test_soak.py": 20,
    "test_partition.py": 20,
    "test_fast_failover.py": 20,
    "test_exporter.py": 20,
    "test_client.py": 20,
    "test_idempotent_files.py": 15,
    "test_retention.py": 15,
    "test_producer_identity.py": 15,
}
"""Rough seconds per file, for ``--shard`` to balance: what ``make test`` took for each file of
the redis and fleet tiers, which it shards together (load average 2 to 7); 10 else."""


def shard_of(files: list[str], n: int) -> dict[str, int]:
    """Each file's shard (0 to n - 1): the costliest first, each to the cheapest shard so far.
    The same files give the same split in every process."""
    load = [0] * n
    shard: dict[str, int] = {}
    for name in sorted(files, key=lambda f: (-COST_S.get(f, 10), f)):
        shard[name] = load.index(min(load))
        load[shard[name]] += COST_S.get(name, 10)
    return shard


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard",
        metavar="I/N",
        help="run the I-th of N disjoint parts of the selected tests, split by file "
        "(make test-fleet runs 1/2 and 2/2 side by side)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (``-m fast`` selects one) and that tier's timeout."""
    for item in items:
        tier = tier_of(item)
        if tier != "chaos":
            item.add_marker(getattr(pytest.mark, tier))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIMEOUT_S[tier]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """With ``--shard I/N``, keep the I-th part of the files that ``-m`` selected."""
    part = session.config.getoption("--shard")
    if not part:
        return
    i, _, n = str(part).partition("/")
    if not (i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise pytest.UsageError(f"--shard {part}: want I/N with 1 <= I <= N")
    items = session.items
    shards = shard_of(sorted({Path(str(it.path)).name for it in items}), int(n))
    keep = [it for it in items if shards[Path(str(it.path)).name] == int(i) - 1]
    session.config.hook.pytest_deselected(items=[it for it in items if it not in keep])
    items[:] = keep


_running: list[str] = []
"""The tier of the test running now (one at most)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running[:] = [t for t in TIERS if item.get_closest_marker(t) is not None][:1]
    try:
        return (yield)
    finally:
        _running.clear()


def _no_fleet_below_its_tier() -> None:
    start = LocalFleet.start

    def guarded(self: LocalFleet, *args: Any, **kwargs: Any) -> Any:
        if _running and _running[0] in ("fast", "redis"):
            pytest.fail(
                f"this {_running[0]}-tier test starts a worker process: give it the fleet tier "
                "(tests/tiers.py)",
                pytrace=False,
            )
        return start(self, *args, **kwargs)

    LocalFleet.start = guarded  # type: ignore[method-assign]


_no_fleet_below_its_tier()
