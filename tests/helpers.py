"""Test helpers: wait on a condition with a deadline (never sleep), run the CLI (in this process
by default; as a process of its own where a real process matters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from click.testing import CliRunner

T = TypeVar("T")

IN_PROCESS_REFUSED = {"worker", "exporter", "up", "bench", "chaos"}
"""Commands that serve, start processes of their own or install signal handlers: `cli_process`."""


def wait_for(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = cond()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
        last = cond()
    return last


@dataclass
class CliResult:
    """What a command left: its exit code and its two streams (as ``subprocess`` names them)."""

    returncode: int
    stdout: str
    stderr: str


def _runner() -> CliRunner:
    try:
        kwargs: dict[str, Any] = {"mix_stderr": False}
        return CliRunner(**kwargs)  # click 8.1: stderr apart only when asked
    except TypeError:
        return CliRunner()  # click 8.2 and later: stderr is always apart


def cli(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> CliResult:
    """``eventfleet <args>`` in this process (click's runner: the environment given on top of
    this process's for the call's duration, a None value unsets one; its own stdin, stdout and
    stderr). An exception that is no exit (a bug: a subprocess would print a traceback) fails
    the test."""
    from eventfleet.cli.main import cli as group

    command = next((a for a in args if a in group.commands), None)
    assert command not in IN_PROCESS_REFUSED, f"`eventfleet {command}`: use cli_process"
    result = _runner().invoke(
        group, list(args), input=input, env=env, prog_name="eventfleet", catch_exceptions=False
    )
    done = CliResult(result.exit_code, result.stdout, result.stderr)
    if check and done.returncode != 0:
        raise AssertionError(
            f"eventfleet {' '.join(args)} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


def cli_process(
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m eventfleet <args>`` as a process of its own: for commands that serve or
    start processes, and where the process itself is tested (its log set-up, its exit)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "eventfleet", *args],
        check=False,
        env=full_env,
        capture_output=True,
        input=input.decode() if input is not None else None,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"eventfleet {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli(*args, env=env).stdout)
