"""`eventfleet up`'s live view, rendered to a console of a given size (no terminal, no
processes): readable at 80x24 (no header cut, no row wrapped, every shard shown or summed up,
keys and log on screen), and everything shown at 200x50."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from eventfleet.local.liveview import render
from eventfleet.local.up import FAULT_KINDS, Session
from eventfleet.local.watch import Sample
from eventfleet.ops.status import ShardStatus


def row(shard: str, owner: str | None, lag: int) -> ShardStatus:
    return ShardStatus(
        shard=shard,
        owner=owner,
        epoch=3 if owner else None,
        length=12_000,
        last_id="1-0",
        delivered_id="1-0",
        lag=lag,
        pending=lag // 2,
        snapshot_age_s=4.0,
        snapshot_id="1-0",
        to_replay=0,
        undelivered=lag - lag // 2,
    )


def session(users: int = 16, items: int = 16, workers: int = 3) -> Any:
    """What ``render`` reads of a ``Session``: a fleet of ``workers``, the shards of a
    namespace (u3 without an owner and lagging, i9 the most lagging of the owned)."""
    names = [f"w{n + 1}-{os.getpid()}" for n in range(workers)]  # as `up` names them
    rows = []
    for family, count in (("u", users), ("i", items)):
        for n in range(count):
            shard = f"{family}{n}"
            owner = None if shard == "u3" else names[n % workers]
            lag = {"u3": 4200, "i9": 1500}.get(shard, n)
            rows.append(row(shard, owner, lag))
    procs = [
        SimpleNamespace(worker_id=name, proc=SimpleNamespace(pid=1000 + i), alive=True)
        for i, name in enumerate(names)
    ]
    events = [
        SimpleNamespace(at=time.time(), who="w1", kind="takeover", text=f"took over u{n} " * 9)
        for n in range(30)
    ]
    return SimpleNamespace(
        sample=Sample(time.monotonic(), rows, {r.shard: 10.0 for r in rows}, 2),
        stack=SimpleNamespace(
            fleet=SimpleNamespace(workers=procs),
            url="redis://127.0.0.1:40123/0",
            namespace="eventfleet",
        ),
        cfg=SimpleNamespace(lease_ttl_ms=2000, snapshot_interval_s=5.0),
        elapsed=75.0,
        phase="running",
        short=Session.short,
        worker_state=lambda w: "running",
        tail=SimpleNamespace(counts=Counter(), recent=lambda n: events[-n:]),
        sampler=SimpleNamespace(outcomes=Counter(confirmed=40), settled=40),
        expected_orders=100,
        faults=Counter(dict.fromkeys(FAULT_KINDS, 1)),
        producer_done=False,
    )


def screen(s: Any, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(render(s, height, "", width))
    return console.export_text().splitlines()


SHARD_ROW = re.compile(r"\b([ui]\d+)\s+(w\d+|none)\s+\d+\s+\d+\s+\S+")


def shards_on(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines for m in SHARD_ROW.finditer(line)}


def test_at_80x24_every_line_is_whole_and_every_shard_accounted_for() -> None:
    lines = screen(session(), 80, 24)
    assert len(lines) <= 24
    text = "\n".join(lines)
    assert "…" not in text.split("log")[0], "a cut header or cell above the log"
    heads = [line for line in lines if re.search(r"\bshard\b.*\bowner\b", line)]
    assert heads and all(re.search(r"shard\s+owner\s+lag\s+pend\s+snap", h) for h in heads)
    shown = shards_on(lines)
    assert {"u3", "i9"} <= shown, "the unowned and the most lagging shards come first"
    more = [int(n) for n in re.findall(r"\+(\d+) more: all owned", text)]
    assert len(more) == 2 and len(shown) + sum(more) == 32, (shown, more)
    assert re.search(r"user shards \(\d+ of 16\)", text)
    assert "keys: k kill · a add · s stop · p pause · q quit" in text
    assert re.search(r"─ log ─", text) and "took over" in text
    for name in ("w1", "w2", "w3"):
        assert re.search(rf"{name}\s+\d+\s+running\s+\d+", text), name
    assert "00:01:15" not in text and "01:15" in text and "running" in lines[0]


def test_at_200x50_everything_is_shown() -> None:
    lines = screen(session(), 200, 50)
    text = "\n".join(lines)
    assert len(shards_on(lines)) == 32
    assert "more:" not in text
    for title in ("workers", "fleet", "order outcomes", "faults", "log"):
        assert f" {title} " in text, title
    assert "applied/s" in text and "k kill a worker (SIGKILL)" in text


def test_many_workers_on_a_small_screen_are_summed_up() -> None:
    lines = screen(session(workers=12), 80, 24)
    assert len(lines) <= 24
    assert "+7 more" in "\n".join(lines)
