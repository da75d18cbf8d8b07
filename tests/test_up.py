"""``eventfleet up`` and ``python -m eventfleet.local.demo``: the first five minutes, end to end.

Each test runs the real command as a user would, with its own TMPDIR so that we can check
that nothing is left behind: no temp dir, no redis-server, no worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import cli_process, wait_for

REPO = Path(__file__).resolve().parent.parent
COLS, ROWS = 160, 50
OUTCOMES = ("confirmed", "out_of_stock", "unknown_item", "insufficient_funds")


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR of the test's own, and an environment without a Redis of the caller's."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "EVENTFLEET_LOG_FORMAT": "json"}
    return tmp, env


def test_up_exit_when_idle_json(tmpdir_env: tuple[Path, dict[str, str]]) -> None:
    tmp, env = tmpdir_env
    # Without --redis, up runs its own redis-server even when REDIS_URL names another.
    env = {**env, "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = cli_process(
        "up", "--workers", "3", "--events", "5000", "--exit-when-idle", "--json", env=env
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints exactly one line: {done.stdout!r}"
    doc = json.loads(lines[0])
    assert doc["verified"] is True, doc
    assert doc["events"] == 5000
    assert doc["workers"] == 3
    assert doc["faults"] == {"kill": 0, "add": 0, "stop": 0, "pause": 0}
    assert doc["idle"] is True
    assert doc["duration_seconds"] > 0
    assert set(doc["outcomes"]) == set(OUTCOMES)
    assert list(tmp.iterdir()) == [], "the temp dir is removed"


def test_up_refuses_exit_when_idle_without_events() -> None:
    done = cli_process("up", "--exit-when-idle", check=False)
    assert done.returncode == 2
    assert "needs --events" in done.stderr


def test_demo_prints_state_and_cleans_up(tmpdir_env: tuple[Path, dict[str, str]]) -> None:
    tmp, env = tmpdir_env
    done = subprocess.run(
        [sys.executable, "-m", "eventfleet.local.demo"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^users \(\d+\):", out, re.M)
    assert re.search(r"^items \(\d+\):", out, re.M)
    assert re.search(r"^orders \(\d+\):", out, re.M)
    for status in ("confirmed", *(f"rejected ({r})" for r in OUTCOMES[1:])):
        assert status in out, f"the demo reaches the outcome {status}"
    assert "OK: state, snapshots, outcomes" in out
    assert "`eventfleet redis` keeps a Redis on localhost:6379" in out  # where the next comes from
    assert list(tmp.iterdir()) == []


# ---- the live view, driven under tmux ------------------------------------------------------
class Tmux:
    """A private tmux server (its own socket) whose panes stay after their command exits."""

    def __init__(self, tmp: Path) -> None:
        self.socket = f"eventfleet-test-{uuid.uuid4().hex[:8]}"
        self.conf = tmp.parent / "tmux.conf"
        # Detached, a window would shrink to the 80x24 default when tmux recalculates sizes.
        self.conf.write_text(f"set -g remain-on-exit on\nset -g default-size {COLS}x{ROWS}\n")

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "up")

    def history(self) -> str:
        return self("capture-pane", "-p", "-S", "-", "-t", "up")

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", "up", fmt).strip()

    def close(self) -> None:
        """Quit ``up`` with q if it still runs (so it cleans up), then end the server."""
        with contextlib.suppress(subprocess.SubprocessError, AssertionError):
            if self.pane("#{pane_dead}") == "0":
                self("send-keys", "-t", "up", "q")
                wait_for(lambda: self.pane("#{pane_dead}") == "1", 60, "up to quit")
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux(tmpdir_env: tuple[Path, dict[str, str]]) -> Iterator[Tmux]:
    t = Tmux(tmpdir_env[0])
    yield t
    t.close()


def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:  # exited (or a zombie) since it was listed
        return []


def log_panel(screen: str) -> list[str]:
    """The rolling log's lines, top to bottom."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^╭─+ log ─+╮$", line))
    return [line.strip("│ ") for line in lines[start + 1 :] if line.startswith("│")]


def test_live_view_keys_under_tmux(tmux: Tmux, tmpdir_env: tuple[Path, dict[str, str]]) -> None:
    tmp, env = tmpdir_env
    up_args = ["up", "--workers", "3", "--rate", "400"]
    # the shell records up's exit status: tmux 3.3 marks a pane dead when its terminal closes
    # and may leave the process unreaped (no pane_dead_status) for a while
    status_file = tmp.parent / "up.status"
    command = shlex.join(
        ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "eventfleet", *up_args]
    )
    command = shlex.join(["sh", "-c", f"{command}; echo $? > {shlex.quote(str(status_file))}"])
    size = ["-x", str(COLS), "-y", str(ROWS)]
    tmux("new-session", "-d", "-s", "up", *size, "-c", str(REPO), command)

    def running() -> str:
        s = tmux.screen()  # running, with every shard owned by one of the workers
        return s if "running" in s and re.search(r"\bu15 +w\d", s) else ""

    try:
        screen = wait_for(running, 60, "the live view to show the fleet running")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the screen:\n{tmux.history()}") from None
    assert "user shards" in screen and "item shards" in screen
    assert "order outcomes" in screen
    up = psutil.Process(int(tmux.pane("#{pane_pid}")))
    started = up.children(recursive=True)
    assert sum("redis-server" in " ".join(cmdline(p)) for p in started) == 1
    workers = wait_for(
        lambda: [
            p for p in up.children(recursive=True) if cmdline(p)[-2:] == ["-m", "eventfleet.worker"]
        ],
        10,
        "three worker processes",
    )
    assert len(workers) == 3

    tmux("send-keys", "-t", "up", "k")

    def killed_and_taken_over() -> bool:
        s = tmux.screen()
        log = log_panel(s)
        kill = [i for i, line in enumerate(log) if "SIGKILL (held" in line]
        return bool(
            kill
            and any("took over" in line for line in log[kill[-1] :])
            and re.search(r"│ kill +1 │", s)
            and " killed " in s
        )

    wait_for(killed_and_taken_over, 30, "the kill, and its shards taken over, in the view")
    assert sum(1 for p in workers if not p.is_running()) == 1

    tmux("send-keys", "-t", "up", "q")
    wait_for(lambda: tmux.pane("#{pane_dead}") == "1", 90, "up to exit after q")
    status = wait_for(
        lambda: status_file.exists() and status_file.read_text().strip(), 10, "up's exit status"
    )
    assert status == "0", f"exit status {status}\n{tmux.history()}"
    summary = tmux.history()
    assert re.search(r"faults: +kill 1\b", summary), summary
    assert "verify:         ok" in summary, summary
    assert "redis-server stopped, temp dir removed" in summary
    left = [p for p in started if p.is_running()]
    assert left == [], f"still running after q: {[cmdline(p) for p in left]}"
    assert list(tmp.iterdir()) == [], "the temp dir is removed"
