"""The two views of ``eventfleet up``: a live full-screen view with keys (rich), and plain
progress lines (or a progress bar) when there is no terminal."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import IO

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from eventfleet.cli.progress import bar
from eventfleet.local.up import FAULT_KINDS, KEYS_HELP, Session
from eventfleet.local.watch import OUTCOME_KINDS
from eventfleet.ops.status import ShardStatus

LINE_EVERY_S = 2.0
LOG_STYLES = {
    "fault": "bold yellow",
    "resume": "yellow",
    "takeover": "cyan",
    "handover": "green",
    "lease_lost": "bold red",
    "dead_letter": "magenta",
    "exited": "red",
    "fatal": "bold red",
    "output": "dim",
}


# ---- the live view ---------------------------------------------------------------------------
class LiveView:
    """Full screen, redrawn after every sample and key; keys read without echo, Ctrl-C = q."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.fd = sys.stdin.fileno()
        self._saved: list[int | list[bytes | int]] | None = None
        self.live = Live(console=self.console, screen=True, auto_refresh=False)
        self.session: Session | None = None
        self.step = ""

    def __enter__(self) -> LiveView:
        self._saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        lflag = mode[3]
        assert isinstance(lflag, int)
        # No line buffering, no echo, and Ctrl-C arrives as a key: quitting is ours to do
        # (the workers and redis-server must outlive the keypress to be stopped in order).
        mode[3] = lflag & ~(termios.ICANON | termios.ECHO | termios.ISIG)
        cc = mode[6]
        assert isinstance(cc, list)
        cc[termios.VMIN], cc[termios.VTIME] = 1, 0
        termios.tcsetattr(self.fd, termios.TCSADRAIN, mode)
        self.live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError, termios.error):  # the terminal may be gone (SIGHUP)
            self.live.__exit__(kind, exc, tb)
            if self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def keys(self, timeout: float) -> str:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        return os.read(self.fd, 64).decode("utf-8", "ignore")

    def show(self, session: Session) -> None:
        self.session = session
        # The terminal's size now: rich would prefer COLUMNS/LINES, which may be stale.
        with contextlib.suppress(OSError):
            self.console.size = os.get_terminal_size(sys.stdout.fileno())
        size = self.console.size
        self.live.update(render(session, size.height, self.step, size.width), refresh=True)

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        done = 0
        shown = 0.0

        def advance(n: int) -> None:
            nonlocal done, shown
            done += n
            self.step = f"{label} {done}/{total}"
            if self.session is not None and time.monotonic() - shown > 0.2:
                shown = time.monotonic()
                self.show(self.session)

        try:
            yield advance
        finally:
            self.step = ""


FULL_WIDTH = 120
"""Narrower than this, the compact view: the full one's four panels and six shard columns
need it."""
LOG_MIN_H = 5
"""The log panel: its two borders and at least three lines."""
COMPACT_KEYS = "k kill · a add · s stop · p pause · q quit"


def render(s: Session, height: int, step: str = "", width: int = 200) -> RenderableType:
    """The whole screen: the full view when everything fits (every shard, four panels, a log
    of a few lines), else ``compact`` (an 80x24 terminal: every line whole, nothing wrapped,
    the shards that need a look first and a summary of the others, keys and log shown)."""
    rows = s.sample.rows if s.sample else []
    users = [r for r in rows if r.shard.startswith("u")]
    items = [r for r in rows if r.shard.startswith("i")]
    shard_h = max(len(users), len(items), 1) + 4
    workers = s.stack.fleet.workers if s.stack.fleet else []
    middle_h = max(len(workers), 10) + 3
    if width < FULL_WIDTH or height < 2 + shard_h + middle_h + LOG_MIN_H:
        return compact(s, height, step, users, items)
    log_h = max(3, height - 2 - shard_h - middle_h)

    shards = Table.grid(expand=True, padding=(0, 1))
    shards.add_column(ratio=1)
    shards.add_column(ratio=1)
    shards.add_row(shard_table("user shards", users, s), shard_table("item shards", items, s))

    middle = Table.grid(expand=True, padding=(0, 1))
    for ratio in (3, 2, 2, 1):
        middle.add_column(ratio=ratio)
    middle.add_row(
        *(
            Panel(body, title=title, border_style="blue", height=middle_h)
            for title, body in (
                ("workers", workers_table(s)),
                ("fleet", totals_table(s)),
                ("order outcomes", outcomes_table(s)),
                ("faults", faults_table(s)),
            )
        )
    )

    layout = Layout()
    layout.split_column(
        Layout(header(s, step), size=1),
        Layout(shards, size=shard_h),
        Layout(middle, size=middle_h),
        Layout(Panel(rolling_log(s, log_h - 2), title="log", border_style="blue"), size=log_h),
        Layout(Text(" keys: " + KEYS_HELP, style="bold"), size=1),
    )
    return layout


def compact(
    s: Session, height: int, step: str, users: list[ShardStatus], items: list[ShardStatus]
) -> RenderableType:
    """The view for a small terminal (80x24 and up): a one-line header, the shards that need
    a look (no owner, then the most lag) with a line summing up the others, the workers and
    the fleet's totals, the log and the keys; every line cut to the width, none wrapped."""
    workers = s.stack.fleet.workers if s.stack.fleet else []
    worker_rows = min(len(workers), 6)
    middle_h = max(worker_rows + 1, 4) + 2
    shard_h = max(5, height - 2 - middle_h - LOG_MIN_H)
    shown = max(1, shard_h - 4)  # title, column heads, their rule and the summary line
    log_h = max(3, height - 2 - middle_h - shard_h)

    shards = Table.grid(expand=True, padding=(0, 1))
    shards.add_column(ratio=1)
    shards.add_column(ratio=1)
    shards.add_row(
        compact_shards("user shards", users, shown, s),
        compact_shards("item shards", items, shown, s),
    )
    middle = Table.grid(expand=True, padding=(0, 1))
    middle.add_column(ratio=1)
    middle.add_column(ratio=1)
    middle.add_row(
        Panel(workers_table(s, limit=worker_rows), title="workers", border_style="blue"),
        Panel(compact_totals(s), title="fleet", border_style="blue"),
    )
    layout = Layout()
    layout.split_column(
        Layout(compact_header(s, step), size=1),
        Layout(shards, size=shard_h),
        Layout(middle, size=middle_h),
        Layout(Panel(rolling_log(s, log_h - 2), title="log", border_style="blue"), size=log_h),
        Layout(Text(" keys: " + COMPACT_KEYS, style="bold", no_wrap=True), size=1),
    )
    return layout


def attention(r: ShardStatus) -> tuple[bool, int]:
    """Sort key: shards without an owner first, then the most lag."""
    return (r.owner is not None, -(r.lag or 0))


def compact_shards(title: str, rows: list[ShardStatus], shown: int, s: Session) -> Table:
    """Up to ``shown`` rows, those that need a look, in shard order; a caption sums up the
    rest (how many, whether all are owned, their lag)."""
    picked = {r.shard for r in sorted(rows, key=attention)[:shown]} if len(rows) > shown else None
    visible = [r for r in rows if picked is None or r.shard in picked]
    rest = [r for r in rows if picked is not None and r.shard not in picked]
    t = Table(
        title=f"{title} ({len(visible)} of {len(rows)})" if rest else title,
        title_style="bold",
        expand=True,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        border_style="blue",
        caption=summary(rest) if rest else None,
        caption_style="dim",
        caption_justify="left",
    )
    t.add_column("shard", no_wrap=True)
    t.add_column("owner", no_wrap=True, overflow="ellipsis", ratio=1)
    for name in ("lag", "pend", "snap"):
        t.add_column(name, justify="right", no_wrap=True)
    stale = 2 * s.cfg.snapshot_interval_s
    for r in visible:
        owner = (
            Text(s.short(r.owner), style=owner_style(s.short(r.owner)))
            if r.owner
            else Text("none", style="bold red")
        )
        age = Text("-" if r.snapshot_age_s is None else f"{r.snapshot_age_s:.0f}s")
        if r.snapshot_age_s is not None and r.snapshot_age_s > stale:
            age.stylize("yellow")
        t.add_row(
            r.shard,
            owner,
            Text(
                "?" if r.lag is None else str(r.lag), style="yellow" if (r.lag or 0) > 1000 else ""
            ),
            Text(str(r.pending), style="yellow" if r.pending > 1000 else ""),
            age,
        )
    return t


def summary(rest: list[ShardStatus]) -> str:
    """One line for the shards not shown: ``+9 more: all owned, lag 0``."""
    unowned = sum(1 for r in rest if r.owner is None)
    lag = sum(r.lag or 0 for r in rest)
    owned = "all owned" if not unowned else f"{unowned} without owner"
    return f"+{len(rest)} more: {owned}, lag {lag}"


def compact_header(s: Session, step: str) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" eventfleet up ", style="bold white on blue")
    t.append(f" {fmt_duration(s.elapsed)} ", style="bold")
    t.append(step or s.phase, style="green" if s.phase == "running" else "yellow")
    t.append(f"  {s.stack.url or '...'}  ns {s.stack.namespace}")
    t.append(f"  TTL {s.cfg.lease_ttl_ms / 1000:g}s")
    return t


def compact_totals(s: Session) -> Table:
    smp = s.sample
    settled = s.sampler.settled if s.sampler else 0
    of = f"/{s.expected_orders}" if s.expected_orders is not None else ""
    faults = "/".join(str(s.faults[k]) for k in FAULT_KINDS)
    return _kv(
        [
            ("applied", f"{smp.applied} ({smp.rate:.0f}/s)" if smp else "0"),
            ("lag / pending", f"{smp.lag} / {smp.pending}" if smp else "0 / 0"),
            ("orders settled", f"{settled}{of}"),
            ("faults " + "/".join(k[0] for k in FAULT_KINDS), faults),
        ]
    )


def header(s: Session, step: str) -> Text:
    t = Text()
    t.append(" eventfleet up ", style="bold white on blue")
    t.append(f"  {s.stack.url or '...'}  namespace {s.stack.namespace}  ")
    t.append(f"lease TTL {s.cfg.lease_ttl_ms} ms  ")
    t.append(f"{fmt_duration(s.elapsed)}  ", style="bold")
    t.append(step or s.phase, style="green" if s.phase == "running" else "yellow")
    return t


def fmt_duration(seconds: float) -> str:
    m, sec = divmod(int(seconds), 60)
    return f"{m:02d}:{sec:02d}"


def shard_table(title: str, rows: list[ShardStatus], s: Session) -> Table:
    t = Table(
        title=title,
        title_style="bold",
        expand=True,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        border_style="blue",
    )
    t.add_column("shard")
    t.add_column("owner")
    for name in ("lag", "pending", "applied/s", "snapshot"):
        t.add_column(name, justify="right")
    rates = s.sample.rates if s.sample else {}
    stale = 2 * s.cfg.snapshot_interval_s
    for r in rows:
        owner = (
            Text(s.short(r.owner), style=owner_style(s.short(r.owner)))
            if r.owner
            else Text("none", style="bold red")
        )
        lag = "?" if r.lag is None else str(r.lag)
        age = Text("-" if r.snapshot_age_s is None else f"{r.snapshot_age_s:.0f}s ago")
        if r.snapshot_age_s is not None and r.snapshot_age_s > stale:
            age.stylize("yellow")
        t.add_row(
            r.shard,
            owner,
            Text(lag, style="yellow" if (r.lag or 0) > 1000 else ""),
            Text(str(r.pending), style="yellow" if r.pending > 1000 else ""),
            f"{rates.get(r.shard, 0.0):.0f}",
            age,
        )
    return t


OWNER_STYLES = ("cyan", "magenta", "green", "blue", "bright_yellow", "bright_cyan", "red")


def owner_style(name: str) -> str:
    """A colour per worker, so a shard changing hands shows at a glance."""
    digits = "".join(c for c in name if c.isdigit())
    return OWNER_STYLES[int(digits or 0) % len(OWNER_STYLES)]


def workers_table(s: Session, limit: int | None = None) -> Table:
    """One row a worker; with ``limit``, that many rows at most, the last saying how many
    more there are."""
    t = Table(box=None, expand=True, pad_edge=False, show_edge=False)
    for name in ("worker", "pid", "state", "shards"):
        t.add_column(
            name,
            justify="right" if name in ("pid", "shards") else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    owners = s.sample.owners() if s.sample else None
    every = s.stack.fleet.workers if s.stack.fleet else []
    listed = every if limit is None or len(every) <= limit else every[: limit - 1]
    if len(listed) < len(every):
        t.caption = f"+{len(every) - len(listed)} more"
    for w in listed:
        state = s.worker_state(w)
        style = "green" if state == "running" else "yellow" if w.alive else "red"
        held = owners[w.worker_id] if owners else 0
        name = s.short(w.worker_id)
        t.add_row(
            Text(name, style=owner_style(name)),
            str(w.proc.pid),
            Text(state, style=style),
            str(held),
        )
    return t


def _kv(rows: list[tuple[str, str]]) -> Table:
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column()
    t.add_column(justify="right", style="bold")
    for k, v in rows:
        t.add_row(k, v)
    return t


def totals_table(s: Session) -> Table:
    smp = s.sample
    c = s.tail.counts
    producer = "done" if s.producer_done else "publishing"
    return _kv(
        [
            ("entries in streams", str(smp.entries if smp else 0)),
            ("applied", str(smp.applied if smp else 0)),
            ("applied/s", f"{smp.rate:.0f}" if smp else "0"),
            ("lag", str(smp.lag if smp else 0)),
            ("pending", str(smp.pending if smp else 0)),
            ("dead letters", str(smp.dead_letters if smp else 0)),
            ("hand-overs", str(c["handover"])),
            ("take-overs", str(c["takeover"])),
            ("leases lost", str(c["lease_lost"])),
            ("snapshots", str(c["snapshot"])),
            ("producer", producer),
        ]
    )


def outcomes_table(s: Session) -> Table:
    got = s.sampler.outcomes if s.sampler else None
    rows = [(kind.replace("_", " "), str(got[kind] if got else 0)) for kind in OUTCOME_KINDS]
    settled = s.sampler.settled if s.sampler else 0
    of = f" / {s.expected_orders}" if s.expected_orders is not None else ""
    rows.append(("settled", f"{settled}{of}"))
    return _kv(rows)


def faults_table(s: Session) -> Table:
    return _kv([(k, str(s.faults[k])) for k in FAULT_KINDS])


def rolling_log(s: Session, n: int) -> RenderableType:
    lines = []
    for e in s.tail.recent(max(1, n)):
        t = Text(no_wrap=True, overflow="ellipsis")  # one event, one line: none wraps
        t.append(time.strftime("%H:%M:%S ", time.localtime(e.at)), style="dim")
        t.append(f"{e.who:<9} ", style="bold")
        t.append(e.text, style=LOG_STYLES.get(e.kind, ""))
        lines.append(t)
    return Group(*lines) if lines else Text("(hand-overs, take-overs and dead letters show here)")


# ---- without a terminal ------------------------------------------------------------------
class PlainView:
    """A progress bar of settled orders on a terminal's stderr; otherwise a line every 2 s
    (and at every phase) on ``out``."""

    def __init__(self, out: IO[str], expected_orders: int | None) -> None:
        self.out = out
        self.expected = expected_orders
        self.lines = not sys.stderr.isatty()
        self._bar: AbstractContextManager[Callable[[int], None]] | None = None
        self._advance: Callable[[int], None] = lambda n: None
        self._shown = 0
        self._next_line = 0.0
        self._phase = ""

    def __enter__(self) -> PlainView:
        if not self.lines:
            self._bar = bar("orders settled", self.expected)
            self._advance = self._bar.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)

    def keys(self, timeout: float) -> str:
        time.sleep(timeout)
        return ""

    def progress(self, label: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        if self._bar is not None:  # one bar at a time: the orders are settled by now
            self._bar.__exit__(None, None, None)
            self._bar = None
        return bar(label, total)

    def show(self, session: Session) -> None:
        settled = session.sampler.settled if session.sampler else 0
        self._advance(settled - self._shown)
        self._shown = settled
        if not self.lines:
            return
        now = time.monotonic()
        if session.phase != self._phase or now >= self._next_line:
            self._phase = session.phase
            self._next_line = now + LINE_EVERY_S
            click.echo(progress_line(session), file=self.out)


def progress_line(s: Session) -> str:
    smp = s.sample
    parts = [f"up {s.elapsed:6.1f}s", s.phase]
    if smp is not None:
        live = len(s.live_workers()) if s.stack.fleet else 0
        of = f"/{s.expected_orders}" if s.expected_orders is not None else ""
        parts += [
            f"workers {live}",
            f"entries {smp.entries}",
            f"applied {smp.applied} ({smp.rate:.0f}/s)",
            f"lag {smp.lag}",
            f"pending {smp.pending}",
            f"settled {s.sampler.settled if s.sampler else 0}{of}",
            f"dead {smp.dead_letters}",
        ]
    return "  ".join(parts)
