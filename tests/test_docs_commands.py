"""Every `eventfleet ...` command line in README.md and docs/*.md is checked against the CLI
(every option must exist) and run, each the way it is used:

* quick, self-contained commands (`init`, `produce`, `state`, `status`, `verify`, `dlq`,
  `reshard`, `archive`) in-process against a throwaway Redis (the session's redis-server, a
  flushed database, a namespace of 2 + 2 shards);
* lines that wait for a worker (`produce order ... --wait`) against a live worker process on a
  Redis of its own, after a top-up and the stock they need: they must get their outcome;
* `eventfleet health` against that live worker;
* `worker` and `exporter` as processes: started, waited on until they serve (`/readyz`, the
  exporter's `/metrics`), stopped with SIGTERM, exit 0 required;
* `up` as a process (its own redis-server): with `--exit-when-idle` to its end, otherwise
  until its workers apply events, then SIGTERM; exit 0 (verify passed) required;
* `redis` as a process on a free port (never the machine's 6379): it must answer PING, run
  `init` and a top-up from the docs' own lines, then stop on SIGTERM with exit 0 and its data
  removed;
* `bench` lines whose scenarios are all cheap (`--only x`: seconds), in a temp directory;
* lines that take tens of seconds with little CPU (`produce load` at a `--rate`) in the
  background from the module's start, each checked by the last test.

Parsed only (click, every option checked), and why: synopsis lines (`[--json]`, `U`, `...`),
which are no runnable commands; `chaos` (a run is at least half a minute of fault injection:
`tests/test_chaos.py` runs it), and `bench` with any other scenario (minutes each:
`tests/test_bench.py` runs the quick suite). The docs speak to readers of the repository: no
internal planning numbers."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
from click.testing import CliRunner

from eventfleet.cli.main import cli
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.redisserver import LocalRedis, free_port
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import init_namespace
from tests.docs_runs import (
    LiveFleet,
    Run,
    clean_env,
    redis_run,
    serve_then_stop,
    start,
    start_live_fleet,
    up_run,
)
from tests.fleet_utils import FAST

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"init", "produce", "producers", "state", "status", "verify", "dlq", "reshard", "archive"}
"""Commands that finish by themselves within seconds on an empty namespace: run in-process."""
CHEAP_BENCH = {"x"}
"""Bench scenarios that take seconds (x: the exporter's pass over 1,024 shards)."""
BACKGROUND_AFTER_S = 10.0
"""A `produce load` whose --events / --rate is longer than this runs in the background."""
PLACEHOLDER = re.compile(r"[\[\]|<>]|\.\.\.|^[A-Z]{1,4}$")


def fenced_and_inline(text: str) -> Iterator[str]:
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            yield line.strip().removeprefix("$ ")
        else:
            yield from re.findall(r"`(eventfleet [^`]+)`", line)


def command_lines() -> list[tuple[str, str]]:
    """(where, command) for each `eventfleet` command in the docs, comments and pipes off."""
    found: dict[str, str] = {}
    for path in DOCS:
        for raw in fenced_and_inline(path.read_text(encoding="utf-8")):
            for part in raw.split(";"):
                line = part.split(" #")[0].strip()
                if not line.startswith("eventfleet "):
                    continue
                words = line.split()
                if not (words[1].startswith("-") or words[1] in cli.commands):
                    continue  # prose that starts with the name
                found.setdefault(line, path.name)
    return sorted((where, line) for line, where in found.items())


def resolve(args: list[str]) -> tuple[list[str], click.Command, list[click.Parameter]]:
    """The command path named by ``args`` (options of the group skipped) and every parameter
    the path accepts."""
    path: list[str] = []
    cmd: click.Command = cli
    params = list(cli.params)
    i = 0
    while i < len(args) and isinstance(cmd, click.Group):
        word = args[i]
        if PLACEHOLDER.search(word):
            break  # a synopsis: `produce ...`, `reshard export|compare`
        if word.startswith("-"):
            opt = next((p for p in cmd.params if word.split("=")[0] in p.opts), None)
            assert opt is not None, f"{word}: no such option of {' '.join(['eventfleet', *path])}"
            takes_value = isinstance(opt, click.Option) and not opt.is_flag and not opt.count
            i += 2 if takes_value and "=" not in word else 1
            continue
        sub = cmd.commands.get(word)
        assert sub is not None, f"{word}: no such command"
        cmd, path = sub, [*path, word]
        params += sub.params
        i += 1
    return path, cmd, params


def check_options(line: str, params: list[click.Parameter]) -> None:
    known = {o for p in params for o in p.opts} | {"--help", "-h", "--version"}
    for word in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
        assert word in known, f"{line}: {word} is no option"


def argv(line: str) -> list[str]:
    """The words after `eventfleet`, redirections and pipes off."""
    return shlex.split(
        line.split(" > ", maxsplit=1)[0].split(" < ", maxsplit=1)[0].split(" | ", maxsplit=1)[0]
    )[1:]


def option(words: list[str], name: str) -> str | None:
    """The value given to ``name`` on a command line (``--x v`` or ``--x=v``), else None."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def how(line: str) -> str:
    """How ``line`` is checked: parse, run, wait, health, serve, up, bench or background."""
    words = argv(line)
    path, cmd, _ = resolve(words)
    if any(PLACEHOLDER.search(w) for w in words) or isinstance(cmd, click.Group):
        return "parse"
    if path[0] == "api":  # the server is run by tests/test_api_live.py
        return "run" if "--print-openapi" in words else "parse"
    if path[0] == "produce" and "--wait" in words:
        return "wait"
    if path == ["produce", "load"]:
        events, rate = option(words, "--events"), option(words, "--rate")
        if events and rate and int(events) / float(rate) > BACKGROUND_AFTER_S:
            return "background"
    if path[0] in RUN:
        return "run"
    if path[0] in ("worker", "exporter"):
        return "serve"
    if path[0] in ("health", "up", "redis"):
        return path[0]
    only = option(words, "--only")
    if path[0] == "bench" and only and set(only.split(",")) <= CHEAP_BENCH:
        return "bench"
    return "parse"


COMMANDS = command_lines()
FOREGROUND = [(w, c) for w, c in COMMANDS if how(c) != "background"]
BACKGROUND = [(w, c) for w, c in COMMANDS if how(c) == "background"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    fleet = start_live_fleet(tmp_path_factory.mktemp("live"))
    yield fleet
    fleet.close()


@pytest.fixture(scope="module")
def background(
    live: LiveFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Run]]:
    """The background lines, started at the module's first test, in a namespace of their own
    that no worker reads (they publish; nothing needs to apply it here)."""
    env = clean_env(REDIS_URL=live.url, EVENTFLEET_NAMESPACE="docs-load")
    tmp = tmp_path_factory.mktemp("background")
    runs = {line: start(argv(line), env, tmp, f"bg{i}") for i, (_, line) in enumerate(BACKGROUND)}
    yield runs
    for run in runs.values():
        run.kill()


def test_the_docs_name_commands(background: dict[str, Run]) -> None:
    assert len(COMMANDS) > 30
    assert any("--namespace ledger2 init" in c for _, c in COMMANDS)
    assert BACKGROUND and set(background) == {c for _, c in BACKGROUND}


def test_only_synopses_chaos_and_long_benches_are_parsed_only() -> None:
    for _, line in COMMANDS:
        if how(line) != "parse":
            continue
        words = argv(line)
        path, cmd, _ = resolve(words)
        synopsis = any(PLACEHOLDER.search(w) for w in words) or isinstance(cmd, click.Group)
        assert synopsis or path[0] in ("chaos", "bench"), f"{line}: add a way to run it"


@pytest.mark.parametrize(("where", "line"), FOREGROUND, ids=[c for _, c in FOREGROUND])
def test_documented_command_line(
    where: str,
    line: str,
    redis_server: LocalRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    words = argv(line)
    path, cmd, params = resolve(words)
    check_options(line, params)
    kind = how(line)
    if kind == "parse":
        if not any(PLACEHOLDER.search(w) for w in words) and not isinstance(cmd, click.Group):
            cli.make_context("eventfleet", list(words), resilient_parsing=False).close()
        return
    for key in [k for k in os.environ if k.startswith("EVENTFLEET_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    if kind == "run":
        run_in_process(words, path, cmd, redis_server, tmp_path, where, line)
    elif kind in ("wait", "health", "serve"):
        live: LiveFleet = request.getfixturevalue("live")
        {"wait": wait_for_outcome, "health": health_of, "serve": serve}[kind](words, live, tmp_path)
    elif kind == "up":
        up_run(words, tmp_path)
    elif kind == "redis":
        redis_run(words, tmp_path)
    else:
        bench = start(words, clean_env(), tmp_path, "bench")
        try:
            assert bench.proc.wait(timeout=180) == 0, f"{where}: {line}\n{bench.output()}"
        finally:
            bench.kill()
        assert (tmp_path / (option(words, "--out") or "bench-results.json")).exists()


def run_in_process(
    words: list[str],
    path: list[str],
    cmd: click.Command,
    redis_server: LocalRedis,
    tmp_path: Path,
    where: str,
    line: str,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    ns = option(words, "--namespace") or "eventfleet"
    if path != ["init"]:
        init_namespace(r, Keys(ns), ShardCounts(2, 2))
    r.close()
    event = {"type": "topup", "user_id": 7, "amount": 1000}
    for name in ("events.jsonl", "seed.jsonl"):
        (tmp_path / name).write_text(json.dumps(event) + "\n")
    (tmp_path / "cut.json").write_text(json.dumps({"users": {}, "items": {}, "orders": {}}))
    bare = not [w for w in words if w not in path]  # `eventfleet dlq list` named in prose
    if bare and cmd.params and any(p.required for p in cmd.params):
        return  # a command named in prose; its options are checked above
    env = {"REDIS_URL": redis_server.url, "EVENTFLEET_LOG_FORMAT": "json"}
    if path == ["producers", "remove"]:  # an identity to remove: the doc adds it just before
        added = CliRunner().invoke(cli, ["producers", "add", words[-1]], env=env)
        assert added.exit_code == 0, added.output
    result = CliRunner().invoke(cli, words, env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"{where}: {line}\n{result.output}"


def wait_for_outcome(words: list[str], live: LiveFleet, tmp_path: Path) -> None:
    """Give the buyer the money and the item the stock, then the line must get its order
    confirmed by the live worker."""
    assert option(words, "--namespace") is None, "the live worker serves namespace eventfleet"
    user, item, qty = option(words, "--user"), option(words, "--item"), option(words, "--qty")
    assert user and item and qty, words
    env = {"REDIS_URL": live.url, "EVENTFLEET_LOG_FORMAT": "json"}
    runner = CliRunner()
    for seed in (
        ["produce", "topup", "--user", user, "--amount", "1000000"],
        ["produce", "add-item", "--item", item, "--count", qty, "--price", "1"],
    ):
        assert runner.invoke(cli, seed, env=env).exit_code == 0
    result = runner.invoke(cli, words, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if "--json" in words:
        assert json.loads(result.stdout.splitlines()[-1])["status"] == "confirmed"


def health_of(words: list[str], live: LiveFleet, tmp_path: Path) -> None:
    env = {"EVENTFLEET_METRICS_PORT": str(live.metrics_port)}
    result = CliRunner().invoke(cli, words, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def serve(words: list[str], live: LiveFleet, tmp_path: Path) -> None:
    """A worker joins the live one (serving once it holds its shards), an exporter serves
    the namespace's lag; each then stops on SIGTERM with exit 0."""
    port = str(free_port())
    if words[0] == "worker":
        env = clean_env(REDIS_URL=live.url, EVENTFLEET_METRICS_PORT=port, **FAST)
        output = serve_then_stop(words, env, f"http://127.0.0.1:{port}/readyz", "", tmp_path)
        assert '"worker_stopped"' in output, output
    else:
        env = clean_env(
            REDIS_URL=live.url, EVENTFLEET_EXPORTER_PORT=port, EVENTFLEET_EXPORTER_INTERVAL_S="1"
        )
        url = f"http://127.0.0.1:{port}/metrics"
        serve_then_stop(words, env, url, "eventfleet_shard_lag{", tmp_path)


def test_docs_have_no_internal_planning_numbers() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        hits = re.findall(r"\bissues? #?\d+|\bissue-\d+|\(#\d+\)", text, re.I)
        assert not hits, f"{path.name}: {hits}"


@pytest.mark.parametrize(("where", "line"), BACKGROUND, ids=[c for _, c in BACKGROUND])
def test_long_documented_command_line(where: str, line: str, background: dict[str, Run]) -> None:
    """Started at the module's first test; by now most of its time has passed."""
    run = background[line]
    assert run.proc.wait(timeout=180) == 0, f"{where}: {line}\n{run.output()}"
