"""``eventfleet chaos``: run a fleet, publish a seeded workload, inject faults while events
flow, wait until the fleet is idle, then recompute everything with ``verify``.

Faults, one at a time, each chosen while a worker holds shards and the producer publishes
(see ``faults``): ``kill``, ``pause``, ``scale``, ``redis_restart``, ``producer_rerun`` and
``client_kill`` (not in the default set).

After each fault the run waits until every affected shard applies again (a new lease holder
for worker faults, then its group's delivered id advances or it is idle) and records how
long that took. The producer paces itself so that publishing spans the fault schedule.

``--reshard 8x8,16x16`` grows the namespace's counts online, one step after the other, spread
through the fault schedule, with faults striking while each step runs (``chaos.reshard``);
the producer and the clients learn the counts as they grow, and the end adds the checks of
``chaos.grown`` and the order waiters' (``chaos.waiters``).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventfleet.chaos.config import GUESS_S, POLL_S, PRODUCER_NAME, ChaosConfig, ChaosError
from eventfleet.chaos.faults import FaultInjector, FaultRecord
from eventfleet.chaos.grown import (
    follow_receipts,
    follow_sends,
    forward_counts,
    reads_across,
    unowned_within,
    verify_command,
)
from eventfleet.chaos.observe import Observer
from eventfleet.chaos.paced import PacedProducer
from eventfleet.chaos.readers import Readers, check_reads
from eventfleet.chaos.report import add_growth, add_reads, add_verify_command, build_report
from eventfleet.chaos.reshard import ReshardRunner, ReshardStep, run_step
from eventfleet.chaos.waiters import OrderWaiters, check_orders
from eventfleet.client import Client
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import wait_idle
from eventfleet.ops.verify import verify
from eventfleet.producer.workload import mixed
from eventfleet.store.connection import connect
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace, read_counts
from eventfleet.store.reload_safety import guard_init, record
from eventfleet.store.settings import Settings


class Chaos:
    """One run: a throwaway redis-server (unless given a URL), the fleet, the paced producer,
    the planned faults one after the other, then ``verify`` and the report."""

    def __init__(self, cfg: ChaosConfig, log: Callable[[str], None] = lambda s: None) -> None:
        self.cfg = cfg
        self.say = log
        self.rng = random.Random(cfg.seed)
        self.keys = Keys(cfg.namespace or f"chaos-{uuid.uuid4().hex[:8]}")
        self.counts = ShardCounts(cfg.user_shards, cfg.item_shards)
        self.local: LocalRedis | None = None
        self.url = cfg.redis_url or ""
        self.plan: list[str] = []
        self.records: list[FaultRecord] = []
        self.steps: list[ReshardStep] = []
        self.plan_done = 0
        """Items of the plan done (a ``reshard`` step strikes several faults)."""
        self.t_start = time.monotonic()

    def login_env(self, role: str) -> dict[str, str]:
        """How a process logs in as ``role`` on the throwaway Redis (nothing for ``--redis``:
        the environment's own credentials)."""
        logins = self.local.logins if self.local is not None else None
        return {} if logins is None else logins.env(role)

    def reader_client(self) -> Client:
        """A client as the producer user (it may write and read the model), or as the
        environment's for ``--redis``."""
        env = self.login_env("producer")
        return Client.from_url(
            self.url,
            self.keys.ns,
            username=env.get("EVENTFLEET_REDIS_USERNAME"),
            password_file=env.get("REDIS_PASSWORD_FILE"),
        )

    def settings(self, role: str) -> Settings:
        env = self.login_env(role)
        if not env:
            return Settings(redis_url=self.url)
        return Settings(
            redis_url=self.url,
            redis_username=env["EVENTFLEET_REDIS_USERNAME"],
            redis_password_file=Path(env["REDIS_PASSWORD_FILE"]),
        )

    def remaining_s(self) -> float:
        """A guess of how long the faults still to come take (the producer's time budget)."""
        done = self.plan_done
        left = self.plan[done:]
        if not left:
            return 0.0

        def guessed(kinds: list[str]) -> float:
            return sum(GUESS_S[k] + self.cfg.fault_interval for k in kinds)

        guess = guessed(left)
        if done:  # as much slower or faster than guessed as the faults so far were
            guess *= (time.monotonic() - self.t_faults) / guessed(self.plan[:done])
        return 1.2 * guess

    def pace(self, published: int) -> float:
        """Events/s that spread what is left to publish over the remaining faults."""
        left = self.cfg.events - published
        budget = self.remaining_s()
        rate = self.cfg.max_rate if budget <= 0 else min(self.cfg.max_rate, left / budget)
        return max(rate, 10.0)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        own_logs = cfg.logdir is None
        logdir = cfg.logdir or Path(tempfile.mkdtemp(prefix="eventfleet-chaos-"))
        if cfg.redis_url is None:  # run (and restart) Redis as we ship it: flags, ACL, users
            (logdir / "redis").mkdir(parents=True, exist_ok=True)
            self.local = LocalRedis(workdir=logdir / "redis", shipped=True, namespace=self.keys.ns)
            self.local.start()
            self.url = self.local.url
        self.r = connect(self.settings("admin"), timeout=10)  # a cluster node works too
        self.observer = Observer(self.r, self.keys, self.counts)
        self.fleet = LocalFleet(self.url, self.keys.ns, logdir / "workers", env={
            "EVENTFLEET_LEASE_TTL_MS": str(cfg.lease_ttl_ms),
            "EVENTFLEET_SNAPSHOT_INTERVAL_S": str(cfg.snapshot_interval_s),
            "EVENTFLEET_LOG_LEVEL": "info",
            **self.login_env("worker"),
        })  # fmt: skip
        kinds = list(cfg.faults)
        self.plan = [k for _ in range(cfg.rounds) for k in self.rng.sample(kinds, len(kinds))]
        for n in range(len(cfg.reshard), 0, -1):  # spread through the faults, none last
            self.plan.insert(len(self.plan) * n // (len(cfg.reshard) + 1), "reshard")
        report: dict[str, Any] = {}
        try:
            report = self._run()
        finally:
            for w in self.fleet.workers:
                if w.alive:
                    self.fleet.resume(w)
            self.fleet.stop_all(timeout=30)
            self.r.close()
            if self.local is not None:
                self.local.stop()
        if own_logs and report.get("ok"):
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            report["logdir"] = str(logdir)
        return report

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        # as `eventfleet init` does: check that Redis keeps transactions across a restart
        # and record it (workers, whose user may not ask, refuse to start without it)
        checked = guard_init(self.r, self.keys) if self.local is not None else None
        init_namespace(self.r, self.keys, self.counts)
        if checked is not None:
            record(self.r, self.keys, checked)
        for _ in range(cfg.workers):
            self.fleet.start()
        self.observer.wait_all_owned()
        self.observer.growing = bool(cfg.reshard)
        prod_r = connect(self.settings("producer"), timeout=10, name=PRODUCER_NAME)
        self.t_faults = time.monotonic()
        events = mixed(cfg.events, seed=cfg.seed)
        producer = PacedProducer(
            prod_r, self.keys, self.counts, events, self.pace, name=PRODUCER_NAME,
            learn=bool(cfg.reshard), follow=bool(cfg.reshard),
        )  # fmt: skip
        # --reshard: a quarter as many events from a producer that never learns the counts:
        # every event for a key that moved is forwarded, on two hops after two steps
        stale = PacedProducer(
            prod_r, self.keys, self.counts, mixed(cfg.events // 4, cfg.seed + 1, prefix="stale"),
            lambda n: self.pace(4 * n) / 4, name="chaos-stale-producer", follow=True,
        )  # fmt: skip
        root = None
        if self.local is not None and self.local.logins is not None:
            root = connect(self.settings("root"), timeout=10)
        injector = FaultInjector(
            self.observer, self.fleet, producer, self.local, self.rng, self.t_start, self.say
        )
        injector.producer_env = self.login_env("producer")
        injector.producer_r = prod_r
        injector.root_r = root
        readers = Readers(self.reader_client, users=500, n=cfg.readers, seed=cfg.seed)
        if cfg.readers:
            readers.start()
        waiters = OrderWaiters(self.reader_client, 200, 50, cfg.order_waiters, cfg.seed)
        if cfg.order_waiters and cfg.reshard:
            waiters.start()
        producer.start()
        if cfg.reshard and cfg.events >= 4:
            stale.start()
        while producer.published == 0 and producer.is_alive():
            time.sleep(POLL_S)
        for i, kind in enumerate(self.plan):
            self.plan_done = i
            if kind == "reshard":
                self._reshard(injector)
                producer.stop.wait(cfg.fault_interval)
                continue
            rec = injector.inject(kind)
            self.records.append(rec)
            moved = rec.unowned_up_s + rec.unowned_down_s
            self.say(
                f"{kind:<13} on {','.join(rec.victims)[:40]:<40} shards {len(rec.shards):>2} "
                f"recovered in {max(rec.recovery_s, default=0):.2f}s  "
                f"published {producer.published}/{cfg.events}"
                + (f"  {len(moved)} moved, unowned max {max(moved):.2f}s" if moved else "")
            )
            producer.stop.wait(cfg.fault_interval)
        self.plan_done = len(self.plan)
        producer.join()
        if stale.ident is not None:
            stale.join()
        readers.stop.set()
        waiters.stop.set()
        if cfg.readers:
            readers.join(timeout=120)
        if waiters.is_alive():
            waiters.join(timeout=120)
        prod_r.close()
        if root is not None:
            root.close()
        injector.check_exits()
        if cfg.reshard:
            self.counts = read_counts(self.r, self.keys)
        idle = wait_idle(self.r, self.keys, self.counts, cfg.idle_timeout_s)
        unowned = unowned_within(self.r, self.keys, self.counts, 4 * cfg.lease_ttl_ms / 1000 + 5)
        live = injector.live()
        self.observer.wait_joined(w.worker_id for w in live)
        injector.stopped_on_purpose.update(w.worker_id for w in live)
        status_now = self._statuses(waiters)
        self.fleet.stop_all(timeout=30)
        stop_codes = {w.worker_id: int(w.proc.returncode or 0) for w in live}
        result = verify(self.r, self.keys, self.counts)
        if cfg.reshard:
            init = ShardCounts(cfg.user_shards, cfg.item_shards)
            reads = reads_across(
                self.r, self.keys, init, cfg.reshard, readers.reads, readers.errors
            )
        else:
            reads = check_reads(self.r, self.keys, self.counts, readers.reads, readers.errors)
        report = build_report(
            cfg,
            self.counts,
            result,
            idle=idle,
            stop_codes=stop_codes,
            records=self.records,
            producer=producer.producer,
            published=producer.published,
            producer_error=producer.error,
            unexpected=injector.unexpected,
            workers=self.fleet.workers,
            duration_s=time.monotonic() - self.t_start,
            files=injector.files,
            grown=bool(cfg.reshard),
        )
        add_reads(report, reads, readers.error, wanted=bool(cfg.readers))
        if cfg.reshard:
            sends = [
                follow_sends(result, p.producer.source, p.producer.wire_source, p.sent)
                for p in (producer, stale)
            ]
            clients = [rd.receipt for rd in readers.reads] + waiters.placed
            followed, lost, twice = follow_receipts(result, clients)
            sends.append((lost, twice))
            orders = check_orders(result, waiters.told, status_now, waiters.timed_out)
            add_growth(report, self.counts, self.steps, sends, unowned, orders, waiters)
            report["stale_published"] = stale.published
            report["forwarded"] = forward_counts(result)
            report["client_events_followed"] = followed
            if stale.error:
                report["problems"].append(f"the stale producer failed: {stale.error}")
                report["ok"] = False
            add_verify_command(report, verify_command(self.admin_env()))
        return report

    def _reshard(self, injector: FaultInjector) -> None:
        """The next ``--reshard`` step, run as the admin user, with its faults."""
        cfg = self.cfg
        users, items = cfg.reshard[len(self.steps)]
        last = self.steps[-1] if self.steps else None
        before = (last.users, last.items) if last else (cfg.user_shards, cfg.item_shards)
        step = ReshardStep(users, items, *before)
        step.began_s = round(time.monotonic() - self.t_start, 3)
        self.steps.append(step)
        runner = ReshardRunner(step, self.admin_env(), cfg.reshard_wait_s, injector.workdir)
        run_step(runner, injector, self.rng, self.records, self.say)

    def admin_env(self) -> dict[str, str]:
        """How a command of the operator's reaches the namespace: as the admin user."""
        return {"REDIS_URL": self.url, "EVENTFLEET_NAMESPACE": self.keys.ns,
                **self.login_env("admin")}  # fmt: skip

    def _statuses(self, waiters: OrderWaiters) -> dict[str, str | None]:
        """What the read model says now of each order a waiter was told the outcome of (read
        with the clients' library, routed with the counts it learns)."""
        with self.reader_client() as client:
            return {t.order_id: client.order_status(t.order_id, user=t.user) for t in waiters.told}


def run_chaos(cfg: ChaosConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    if cfg.redis_url and {"redis_restart"} & set(cfg.faults):
        raise ChaosError(
            "redis_restart needs the throwaway redis-server: with --redis, pass --faults "
            "without it (for example kill,pause,scale)"
        )
    if cfg.workers < 1 or cfg.events < 1 or cfg.rounds < 1:
        raise ChaosError("--workers, --events and --rounds must be at least 1")
    if cfg.reshard and cfg.redis_url:
        raise ChaosError(
            "--reshard strikes redis_restart while each step runs: it needs the throwaway "
            "redis-server (leave out --redis)"
        )
    return Chaos(cfg, log).run()
