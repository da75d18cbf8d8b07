"""The Redis set-up we ship (docker-compose.yml, k8s/redis-statefulset.yaml), for local runs:
the same server flags, the shipped ACL file with a fresh password per user, and each role's
login, so that chaos runs and fault tests restart Redis exactly as a deployment would.

The ACL file is read from the checkout (``deploy/redis/users.acl``): the development tools
that use it (``eventfleet chaos``, the tests) run from one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

SHIPPED_FLAGS = (
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--maxmemory-policy",
    "noeviction",
    "--maxmemory",
    "600mb",
)
"""The server flags of the compose file's and the StatefulSet's redis-server, besides
``--aclfile`` and ``--dir`` (tests/test_shipped_redis.py holds both files to this list)."""

ROLES = ("admin", "worker", "producer", "exporter", "reader", "api")

ROOT = "local-root"
"""A superuser added to the local copy only, for fault injection that needs more than any
shipped user may do (``CLIENT KILL``); nothing of the system under test logs in as it."""

CLUSTER_RIGHTS = "+cluster|slots +cluster|shards +command +command|getkeys +asking"
"""What docs/SECURITY.md says each user needs on top of the shipped file on a Redis Cluster."""

CHECKOUT = Path(__file__).resolve().parents[2]
ACL_FILE = CHECKOUT / "deploy" / "redis" / "users.acl"


class NotACheckout(RuntimeError):
    """The shipped ACL file is not beside this installation."""


def shipped_acl() -> str:
    if not ACL_FILE.is_file():
        raise NotACheckout(
            f"{ACL_FILE} is missing: the shipped Redis set-up is used from a checkout of "
            "eventfleet (pip install -e .)"
        )
    return ACL_FILE.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Logins:
    """Where each role's password is, and the settings that log in as that role."""

    dir: Path

    def user(self, role: str) -> str:
        return ROOT if role == "root" else f"eventfleet-{role}"

    def password_file(self, role: str) -> Path:
        return self.dir / f"{role}.password"

    def password(self, role: str) -> str:
        return self.password_file(role).read_text(encoding="utf-8").strip()

    def env(self, role: str) -> dict[str, str]:
        """The environment variables of a process that logs in as ``role``."""
        return {
            "EVENTFLEET_REDIS_USERNAME": self.user(role),
            "REDIS_PASSWORD_FILE": str(self.password_file(role)),
        }


def write_acl(
    workdir: Path, *, cluster: bool = False, namespace: str = "eventfleet"
) -> tuple[Path, Logins]:
    """A copy of the shipped ACL file in ``workdir`` with a new random password per user (and
    the cluster rights when ``cluster``; key patterns of ``namespace`` instead of the shipped
    ``eventfleet``, as docs/SECURITY.md tells operators of another namespace to do), plus the
    local root user; returns it and the logins."""
    text = shipped_acl().replace("eventfleet:", f"{namespace}:")
    secret_dir = workdir / "secrets"
    secret_dir.mkdir(parents=True, exist_ok=True)
    logins = Logins(secret_dir)
    lines: list[str] = []
    for shipped_line in text.splitlines():
        line = shipped_line
        role = next((r for r in ROLES if line.startswith(f"user eventfleet-{r} ")), None)
        if role is not None:
            line = _with_new_password(line, logins, role)
            if cluster:
                line = f"{line} {CLUSTER_RIGHTS}"
        lines.append(line)
    root_hash = _new_password(logins, "root")
    lines.append(f"user {ROOT} on #{root_hash} ~* &* +@all")
    acl = workdir / "users.acl"
    acl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return acl, logins


def _new_password(logins: Logins, role: str) -> str:
    password = secrets.token_hex(16)
    path = logins.password_file(role)
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return hashlib.sha256(password.encode()).hexdigest()


def _with_new_password(line: str, logins: Logins, role: str) -> str:
    digest = _new_password(logins, role)
    new, n = re.subn(r" #[0-9a-f]{64}( |$)", rf" #{digest}\1", line, count=1)
    if n != 1:
        raise ValueError(f"the shipped ACL line of eventfleet-{role} has no #<sha256> password")
    return new
