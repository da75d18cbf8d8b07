"""Log output: JSON lines off a terminal, console output on one, and CLI commands that keep
retry warnings out of their output."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from eventfleet.local.redisserver import free_port
from tests.helpers import cli_process


def test_cli_commands_keep_retry_warnings_out_of_their_output(env: dict[str, str]) -> None:
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    res = cli_process("status", "--json", env=down, check=False)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith("error: cannot reach Redis") and res.stderr.count("\n") == 1


LOG_SNIPPET = (
    "from eventfleet.store.logs import configure; import structlog; configure('info', 'auto'); "
    "structlog.get_logger('t').info('hello', shard='u1'); "
    "structlog.get_logger('t').debug('hidden')"
)


def test_logs_are_json_lines_off_a_terminal_and_readable_on_one() -> None:
    off = subprocess.run(
        [sys.executable, "-c", LOG_SNIPPET], capture_output=True, text=True, check=True
    )
    [line] = off.stderr.splitlines()
    doc = json.loads(line)
    assert doc["event"] == "hello" and doc["shard"] == "u1" and doc["level"] == "info"
    assert "timestamp" in doc

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LOG_SNIPPET],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            check=True,
            timeout=30,
        )
        assert proc.returncode == 0
        text = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "hello" in text and "shard" in text and "u1" in text and "hidden" not in text
    assert not text.lstrip().startswith("{"), "a terminal should get console output"
