"""A real network partition for one process: a network namespace joined to the root namespace
by a veth pair with link-local addresses (a /30 of 169.254.0.0/16 of its own).

A process started with ``Link.command`` lives in the namespace and reaches the root
namespace only through the pair (a Redis there listens on ``host_addr``). ``cut`` takes the
root end of the pair down: from then on packets between the two sides are dropped, silently
(no RST, no FIN), so each side's TCP connections stay open as far as its own kernel knows,
exactly what a partitioned host looks like from Redis' side. ``abort_from_host`` then makes
Redis' side see its connections to the namespace close (``ss -K``: the kernel aborts those
sockets; the RST it sends is lost in the partition), as a middlebox or a keepalive expiry
would. ``heal`` brings the link back.

Needs root and iproute2 (``ip netns``, ``ss``); ``unavailable`` says why not. Every name is
unique per use (the pid and random hex), and ``veth_namespace`` deletes the namespace and
the pair even when the test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

SUBNET = ipaddress.ip_network("169.254.0.0/16")
AVOID = ipaddress.ip_network("169.254.169.0/24")  # cloud metadata services live here


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why a partition cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return f"network namespaces need root (this test runs as uid {os.geteuid()})"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = f"efprobe{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()[:200]}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Link:
    ns: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def cut(self) -> None:
        """Drop every packet between the namespace and the root namespace from now on."""
        _ip("link", "set", "dev", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", "dev", self.host_if, "up")

    def abort_from_host(self) -> int:
        """Abort the root namespace's TCP sockets to the namespace (Redis' side of each of
        its connections). Returns how many were aborted."""
        done = subprocess.run(
            ["ss", "-K", "-t", "-n", "dst", self.ns_addr],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return sum(1 for line in done.stdout.splitlines() if self.ns_addr in line)


def _free_pair() -> tuple[str, str]:
    """Two addresses of a /30 of 169.254.0.0/16 no interface of this host is on."""
    used = _ip("-4", "-o", "addr", "show").stdout
    taken = [
        ipaddress.ip_interface(word).network
        for line in used.splitlines()
        for word in line.split()
        if "/" in word and word[0].isdigit()
    ]
    rng = random.Random()
    for _ in range(1000):
        net = ipaddress.ip_network(f"169.254.{rng.randrange(1, 255)}.{4 * rng.randrange(64)}/30")
        if net.subnet_of(AVOID) or any(net.overlaps(t) for t in taken):  # type: ignore[arg-type]
            continue
        hosts = list(net.hosts())
        return str(hosts[0]), str(hosts[1])
    raise RuntimeError("no free /30 in 169.254.0.0/16")


PREFIX = "efpart"


def _sweep() -> None:
    """Remove what runs killed before their clean-up left (their pid is gone)."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split(" ")[0]
        pid, sep, _ = name.removeprefix(PREFIX).partition("x")
        if name.startswith(PREFIX) and sep and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("link", "del", "efh" + name.removeprefix(PREFIX), check=False)
            _ip("netns", "del", name, check=False)


@contextlib.contextmanager
def veth_namespace() -> Iterator[Link]:
    """A namespace with one veth pair to the root namespace; both removed on the way out
    (names carry this process's pid: ones whose process is gone are removed first)."""
    _sweep()
    tag = f"{os.getpid()}x{uuid.uuid4().hex[:4]}"  # interface names: at most 15 characters
    host_addr, ns_addr = _free_pair()
    link = Link(PREFIX + tag, f"efh{tag}", f"efn{tag}", host_addr, ns_addr)
    try:
        _ip("netns", "add", link.ns)
        _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
        _ip("link", "set", "dev", link.ns_if, "netns", link.ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", link.host_if)
        _ip("link", "set", "dev", link.host_if, "up")
        _ip("-n", link.ns, "addr", "add", f"{ns_addr}/30", "dev", link.ns_if)
        _ip("-n", link.ns, "link", "set", "dev", link.ns_if, "up")
        _ip("-n", link.ns, "link", "set", "dev", "lo", "up")
        yield link
    finally:
        _ip("link", "del", link.host_if, check=False)  # takes its peer with it
        _ip("netns", "del", link.ns, check=False)


def leftovers(link: Link) -> list[str]:
    """What of ``link`` still exists (for the test of the clean-up itself)."""
    out = []
    if link.ns in _ip("netns", "list").stdout.split():
        out.append(link.ns)
    if _ip("link", "show", "dev", link.host_if, check=False).returncode == 0:
        out.append(link.host_if)
    return out


__all__ = ["Link", "leftovers", "unavailable", "veth_namespace"]
