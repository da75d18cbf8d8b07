"""README's "Use it from Python" examples, run as written against a real Redis and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from eventfleet.local.fleet import LocalFleet
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.ops.verify import verify
from eventfleet.store.keys import Keys
from tests.fleet_utils import make_fleet, setup_namespace
from tests.helpers import wait_for

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(# README example: [^\n]*\n.*?)```", re.S)


def examples() -> dict[str, str]:
    found = {
        m.group(1).splitlines()[0].split(": ", 1)[1]: m.group(1)
        for m in BLOCK.finditer(README.read_text())
    }
    assert set(found) == {"a script", "an asyncio handler"}, sorted(found)
    return found


@pytest.mark.parametrize("name", sorted(examples()))
def test_the_readme_python_examples_run(
    name: str, redis_server: LocalRedis, r: redis.Redis, namespace: str, tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:  # fmt: skip
    counts = setup_namespace(r, namespace)
    make_fleet(redis_server.url, namespace, tmp_path, fleet_factory).start()
    script = tmp_path / "example.py"
    script.write_text(examples()[name])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTFLEET_", "REDIS_"))}
    env.update(REDIS_URL=redis_server.url, EVENTFLEET_NAMESPACE=namespace)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    if name == "a script":
        lines = done.stdout.splitlines()
        assert lines[0] == "balance 1000", lines
        assert lines[1] == "confirmed 450", lines
        assert lines[2].startswith("now 550 Item(item_id='apple', remain=7, price=150)"), lines
        assert lines[3] == "confirmed", lines
    else:
        assert done.stdout.count("'status': 'confirmed'") == 3, done.stdout
        assert "'balance': 100" in done.stdout and "'status': 'invalid'" in done.stdout
    wait_for(lambda: is_idle(r, Keys(namespace), counts), 60, "idle")
    assert verify(r, Keys(namespace), counts).ok
