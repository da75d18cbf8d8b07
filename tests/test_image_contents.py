"""The production image drops the development tools (eventfleet.local, .bench, .chaos): the
rest must import and run without them, and their commands must say so in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRUNED = ("local", "bench", "chaos")
# The development install maps our packages onto the checkout with a meta-path finder; drop it
# so that only the copied (pruned) tree is importable, as in the image.
NO_CHECKOUT = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
    "if 'editable' not in getattr(f, '__module__', '')]; "
    "sys.path[:] = [p for p in sys.path if '__editable__' not in p]"
)


def _pruned_tree(tmp_path: Path) -> Path:
    # the links eventfleet/worker and eventfleet/producer are copied as the folders they name,
    # as the wheel stores them
    shutil.copytree(
        ROOT / "eventfleet", tmp_path / "eventfleet", ignore=shutil.ignore_patterns("__pycache__")
    )
    for sub in PRUNED:
        shutil.rmtree(tmp_path / "eventfleet" / sub)
    return tmp_path


def _run(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = f"{NO_CHECKOUT}; from eventfleet.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_commands_run_without_the_dev_tools(tmp_path: Path) -> None:
    tree = _pruned_tree(tmp_path)
    done = _run(tree, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("init", "worker", "produce", "state", "status", "dlq", "verify"):
        assert command in done.stdout
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{NO_CHECKOUT}; import runpy; runpy.run_module('eventfleet.worker')",
            "-h",
        ],
        check=False,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr


def test_dev_tool_commands_say_they_are_left_out(tmp_path: Path) -> None:
    tree = _pruned_tree(tmp_path)
    for args in (("up", "--events", "10", "--exit-when-idle"), ("bench", "--quick")):
        done = _run(tree, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "development tool" in done.stderr
        assert "Traceback" not in done.stderr
