"""A throwaway Redis Cluster on loopback ports in a temp dir (tests, ``up --cluster``, bench).

Three masters by default (``redis-cli --cluster create``), optionally one replica each. Every
node runs like ``LocalRedis``: ``appendonly yes`` and ``appendfsync always``, so a node can be
killed and started again on its data. ``kill`` SIGKILLs a node, ``wait_ok`` waits until every
live node reports ``cluster_state:ok`` and every slot has a live master (after a failover: the
replica has been promoted). With logins (``shipped``), replicas log in to their masters as
the helper's own user.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from eventfleet.local.redisserver import LocalRedis, RedisNotInstalled
from eventfleet.local.shipped import SHIPPED_FLAGS, Logins, write_acl

SLOTS = 16384
BUS_OFFSET = 10000
"""A node also listens on its port + 10000 (the cluster bus), so ports stay below 55536."""
NODE_TIMEOUT_MS = 2000
"""How long a master may be unreachable before its replica takes over (cluster-node-timeout)."""


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(rng: random.Random | None = None) -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    rng = rng or random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 65536 - BUS_OFFSET)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass(frozen=True)
class NodeInfo:
    """One line of ``CLUSTER NODES``, as much of it as we use."""

    node_id: str
    port: int
    role: str
    """``master`` or ``replica``."""
    master_id: str | None
    failed: bool
    slots: int


class LocalCluster:
    """``masters`` redis-server processes in cluster mode, plus ``replicas`` per master."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        workdir: Path | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        extra_args: list[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        shipped: bool = False,
        namespace: str = "eventfleet",
    ) -> None:
        """``username``/``password``: what this helper logs in with (nodes started with an
        ``--aclfile`` in ``extra_args`` whose default user is off). ``shipped``: every node
        with the shipped flags and one copy of the shipped ACL file with the cluster rights
        (``logins`` says how each role logs in; this helper logs in as the local root)."""
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.cli = shutil.which("redis-cli")
        if shutil.which("redis-server") is None or self.cli is None:
            raise RedisNotInstalled(
                "redis-server and redis-cli were not found on PATH. Install Redis 7 "
                "(Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: "
                "`brew install redis`) and try again."
            )
        self.masters = masters
        self.replicas = replicas
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="eventfleet-cluster-"))
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = extra_args or []
        self.username = username
        self.password = password
        self.logins: Logins | None = None
        if shipped:
            self.dir.mkdir(parents=True, exist_ok=True)
            acl, self.logins = write_acl(self.dir, cluster=True, namespace=namespace)
            self.extra_args = [*SHIPPED_FLAGS, "--aclfile", str(acl), *self.extra_args]
            self.username, self.password = self.logins.user("root"), self.logins.password("root")
        self.nodes: list[LocalRedis] = []

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """A URL of one live node: any node will do, the client discovers the others."""
        return self.live()[0].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def live(self) -> list[LocalRedis]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def start(self, timeout: float = 60.0) -> LocalCluster:
        count = self.masters * (1 + self.replicas)
        try:
            for _ in range(count):
                self.nodes.append(self._node().start())
                self._replicate_as_helper(self.nodes[-1])
            self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _node(self, port: int | None = None) -> LocalRedis:
        port = port or free_cluster_port()
        workdir = self.dir / f"node-{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        return LocalRedis(
            port=port,
            workdir=workdir,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                # a replica that lost its master promotes itself however stale it is:
                # a local cluster should always recover (real ones may prefer the default)
                "--cluster-replica-validity-factor",
                "0",
                # replicas sync at once instead of waiting 5 s for more replicas to join
                "--repl-diskless-sync-delay",
                "0",
                *self.extra_args,
            ],
        )

    def _replicate_as_helper(self, node: LocalRedis) -> None:
        """With logins (``shipped``, or nodes whose default user is off), a replica logs in
        to its master as this helper's user: set on each node at start (``CONFIG SET``, not
        on its command line, where ``ps`` would show the password)."""
        if not self.username or self.password is None:
            return
        c = self._client(node)
        try:
            c.config_set("masteruser", self.username)
            c.config_set("masterauth", self.password)
        finally:
            c.close()

    def _create(self, timeout: float) -> None:
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        self._redis_cli(
            ["create", *addrs, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            timeout,
        )

    def _redis_cli(self, args: list[str], timeout: float) -> str:
        """``redis-cli --cluster <args>``, logged in as this helper's user if it has one."""
        auth = ["--user", self.username] if self.username else []
        env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password else None
        proc = subprocess.run(
            [self.cli or "redis-cli", *auth, "--cluster", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster {args[0]} failed ({proc.returncode}): "
                f"{(proc.stdout + proc.stderr)[-800:]}"
            )
        return proc.stdout

    def close(self) -> None:
        for n in self.nodes:
            n.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- looking at it -----------------------------------------------------------------
    def _client(self, node: LocalRedis) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=node.port,
            username=self.username,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=1,
        )

    def topology(self) -> list[NodeInfo]:
        """``CLUSTER NODES`` as seen by the first live node that answers."""
        nodes: dict[str, dict[str, object]] = {}
        for n in self.live():
            c = self._client(n)
            try:
                nodes = c.cluster("NODES")  # parsed by redis-py into a dict
                break
            except redis.RedisError:
                continue
            finally:
                c.close()
        out = []
        for addr, d in nodes.items():
            flags = str(d["flags"]).split(",")
            ranges: list[list[str]] = d["slots"]  # type: ignore[assignment]
            master = str(d["master_id"])
            out.append(
                NodeInfo(
                    node_id=str(d["node_id"]),
                    port=int(addr.split("@")[0].rsplit(":", 1)[1]),
                    role="master" if "master" in flags else "replica",
                    master_id=None if master == "-" else master,
                    failed="fail" in flags or "fail?" in flags,
                    slots=sum(int(r[-1]) - int(r[0]) + 1 for r in ranges),
                )
            )
        return out

    def node(self, port: int) -> LocalRedis:
        return next(n for n in self.nodes if n.port == port)

    def master_nodes(self) -> list[LocalRedis]:
        ports = {i.port for i in self.topology() if i.role == "master" and not i.failed}
        return [n for n in self.live() if n.port in ports]

    def master_of(self, key: str) -> LocalRedis:
        """The live node that serves ``key``'s slot now."""
        for n in self.live():
            c = self._client(n)
            try:
                slot = int(c.cluster("KEYSLOT", key))
                for lo, hi, master, *_ in c.cluster("SLOTS"):
                    if int(lo) <= slot <= int(hi):
                        return self.node(int(master[1]))
            except redis.RedisError:
                continue
            finally:
                c.close()
        raise LookupError(f"no live node serves {key!r}")

    def is_ok(self) -> bool:
        """Every live node says ``cluster_state:ok`` and agrees that every slot is served by a
        live master; every other live node is a replica in sync with its master (so a WAIT
        can be answered)."""
        return not self.not_ok()

    def not_ok(self) -> str:
        """Why the cluster is not ok yet ('' when it is)."""
        live_ports = {n.port for n in self.live()}
        for n in self.live():
            c = self._client(n)
            try:
                info = c.cluster("INFO")  # parsed by redis-py into a dict
                if info.get("cluster_state") != "ok":
                    return f"{n.port}: cluster_state {info.get('cluster_state')}"
                served = 0
                masters = set()
                for lo, hi, master, *_ in c.cluster("SLOTS"):
                    masters.add(int(master[1]))
                    served += int(hi) - int(lo) + 1
                if served != SLOTS or not masters <= live_ports:
                    return f"{n.port}: {served} slots served, masters {sorted(masters)}"
                repl = c.info("replication")
                role, link = repl.get("role"), repl.get("master_link_status")
                if n.port not in masters and (role != "slave" or link != "up"):
                    return f"{n.port}: role {role}, replication link {link}"
            except redis.RedisError as exc:
                return f"{n.port}: {type(exc).__name__}: {exc}"
            finally:
                c.close()
        return ""

    def wait_ok(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while why := self.not_ok():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the cluster did not reach cluster_state:ok in {timeout}s ({why})"
                )
            time.sleep(0.05)

    # ---- faults and changes ------------------------------------------------------------
    def move_slots(
        self, source: LocalRedis, target: LocalRedis, count: int, timeout: float = 120.0
    ) -> None:
        """Move ``count`` slots, with their keys, from one master to another while clients
        run (``redis-cli --cluster reshard``: clients see ASK and MOVED redirections)."""
        ids = {i.port: i.node_id for i in self.topology()}
        self._redis_cli(
            [
                "reshard",
                f"127.0.0.1:{source.port}",
                "--cluster-from",
                ids[source.port],
                "--cluster-to",
                ids[target.port],
                "--cluster-slots",
                str(count),
                "--cluster-yes",
            ],
            timeout,
        )

    def kill(self, node: LocalRedis) -> None:
        """SIGKILL one node (its data stays in its directory)."""
        node.stop(kill=True)

    def restart(self, node: LocalRedis, timeout: float = 30.0) -> None:
        """Start a stopped node again on its port and data; it rejoins the cluster (a former
        master whose replica took over comes back as a replica)."""
        node.start(timeout)
        self._replicate_as_helper(node)
