"""Every command and every option of ``eventfleet`` says what it does (``--help``), and the
group's own options are documented."""

from __future__ import annotations

from collections.abc import Iterator

import click

from eventfleet.cli.main import cli


def walk(cmd: click.Command, path: str = "eventfleet") -> Iterator[tuple[str, click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help_text() -> None:
    missing = []
    for path, cmd in walk(cli):
        if not (cmd.help or "").strip():
            missing.append(path)
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip():
                missing.append(f"{path} {p.opts[-1]}")
    assert not missing, missing


def test_json_flags_where_scripts_need_them() -> None:
    wanted = [
        "init",
        "produce topup",
        "produce add-item",
        "produce order",
        "produce file",
        "produce load",
        "dlq list",
        "dlq redrive",
        "reshard compare",
        "status",
        "verify",
        "state all",
    ]
    commands = dict(walk(cli))
    for name in wanted:
        opts = {o for p in commands[f"eventfleet {name}"].params for o in p.opts}
        assert "--json" in opts, name
