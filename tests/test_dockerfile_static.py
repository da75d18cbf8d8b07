"""Static checks of deploy/Dockerfile and .dockerignore: stages, user, entrypoint, no dev
dependencies, and COPY sources inside the build context.

No Docker engine or cluster runs where the tests run, so each file is checked against the
schema or tool that its consumer uses, and against the names fixed by docs/CONTRACTS.md."""

from __future__ import annotations

import json
import re

from tests.deploy_files import DEPLOY, ROOT


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(part, str) for part in value)
    return value


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    # an exact Python patch release on a named Debian release, never a floating tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", froms[-1].split()[0]), froms[-1]


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "use a numeric uid so that runAsNonRoot can verify it"
    assert int(uid) != 0


def test_dockerfile_entrypoint_cmd_healthcheck_and_stopsignal() -> None:
    instructions = dict(dockerfile_instructions())
    assert exec_form(instructions["ENTRYPOINT"]) == ["eventfleet"]
    assert exec_form(instructions["CMD"]) == ["worker"]
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    health = instructions["HEALTHCHECK"]
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options
    assert exec_form(command)[:2] == ["eventfleet", "health"]


def test_dockerfile_installs_no_dev_dependencies() -> None:
    for keyword, args in dockerfile_instructions():
        if keyword == "RUN":
            assert "[dev]" not in args, f"dev extra installed: {args}"
            assert not re.search(r"\b(pytest|mypy|ruff)\b", args), args
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any("pip wheel" in run for run in runs), "the build stage should build wheels"
    assert any("--no-index" in run for run in runs), "the runtime should install only wheels"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: `*` and `?` stay inside one path element, `**` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] in "*?":
            out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return excluded


def test_dockerignore_helper_follows_the_last_match() -> None:
    assert dockerignore_excludes(".venv/bin/python")
    assert dockerignore_excludes(".git/HEAD")
    assert dockerignore_excludes("tests/test_deploy_static.py")
    assert not dockerignore_excludes("worker/settings.py")
    assert dockerignore_excludes("worker/__pycache__/settings.cpython-311.pyc")


def test_dockerfile_copies_only_files_in_the_build_context() -> None:
    copies = [args for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for args in copies:
        if "--from=" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            probe = source.rstrip("/")
            if path.is_dir():
                probe += "/__init__.py"
            assert not dockerignore_excludes(probe), f"COPY {source}: excluded by .dockerignore"
