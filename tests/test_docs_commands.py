"""Every `eventfleet ...` command line in README.md and docs/*.md is checked against the CLI:
run against a throwaway Redis (the session's redis-server, a flushed database) where it is
quick and self-contained, or, for the long-running tools (`worker`, `exporter`, `up`,
`chaos`, `bench`, `health`), lines that wait for a worker (`--wait`) and synopsis lines (`[--json]`, `U`, `...`), parsed by click with every option
checked. The docs speak to readers of the repository: no internal planning numbers."""

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
from eventfleet.local.redisserver import LocalRedis
from ledger.shards import ShardCounts
from store.keys import Keys
from store.namespace import init_namespace

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"init", "produce", "state", "status", "verify", "dlq", "reshard", "archive"}
"""Commands that finish by themselves within seconds on an empty namespace: run. Any other
(`worker`, `exporter`, `health`, `up`, `chaos`, `bench`, and commands added later) is
parsed only."""
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


COMMANDS = command_lines()


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


def test_the_docs_name_commands() -> None:
    assert len(COMMANDS) > 30
    assert any("--namespace ledger2 init" in c for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_line(
    where: str, line: str, redis_server: LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = shlex.split(
        line.split(" > ", maxsplit=1)[0].split(" < ", maxsplit=1)[0].split(" | ", maxsplit=1)[0]
    )[1:]
    path, cmd, params = resolve(words)
    check_options(line, params)
    # `--wait` waits for a worker to apply the event; no worker runs here: parsed only
    synopsis = any(PLACEHOLDER.search(w) for w in words) or "--wait" in words
    bare = not [w for w in words if w not in path]  # `eventfleet dlq list` named in prose
    if synopsis or path[0] not in RUN or isinstance(cmd, click.Group):
        if not synopsis and not isinstance(cmd, click.Group):
            cli.make_context("eventfleet", list(words), resilient_parsing=False).close()
        return
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    ns = words[words.index("--namespace") + 1] if "--namespace" in words else "eventfleet"
    if path != ["init"]:
        init_namespace(r, Keys(ns), ShardCounts(2, 2))
    monkeypatch.chdir(tmp_path)
    event = {"type": "topup", "user_id": 7, "amount": 1000}
    for name in ("events.jsonl", "seed.jsonl"):
        (tmp_path / name).write_text(json.dumps(event) + "\n")
    (tmp_path / "cut.json").write_text(json.dumps({"users": {}, "items": {}, "orders": {}}))
    if bare and cmd.params and any(p.required for p in cmd.params):
        return  # a command named in prose; its options are checked above
    env = {"REDIS_URL": redis_server.url, "EVENTFLEET_LOG_FORMAT": "json"}
    for key in [k for k in os.environ if k.startswith("EVENTFLEET_")]:
        monkeypatch.delenv(key)
    result = CliRunner().invoke(cli, words, env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"{where}: {line}\n{result.output}"
    r.close()


def test_docs_have_no_internal_planning_numbers() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        hits = re.findall(r"\bissues? #?\d+|\bissue-\d+|\(#\d+\)", text, re.I)
        assert not hits, f"{path.name}: {hits}"
