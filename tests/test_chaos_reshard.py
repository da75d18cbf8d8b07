"""``eventfleet chaos --reshard``: a namespace grown online 4+4 -> 8+8 -> 16+16 under the paced
load, with the reshard command SIGKILLed and a worker SIGKILL, a worker pause and a Redis
restart while each step runs (the command re-run until it completes), then every event held
to a recomputation (eventfleet/chaos/reshard.py, eventfleet/chaos/grown.py,
eventfleet/chaos/waiters.py).

- the run, as the shipped ACL users with the shipped Redis flags: nothing lost, applied twice
  or mismatched, the producer's every event followed across the splits, every read held to
  its user's history across them, every order a waiter was told is confirmed still
  confirmed, the final counts 16+16 with every shard owned, and each step's duration,
  re-runs and faults in the report;
- the option's checks: steps that are not a multiple of the step before, that grow nothing,
  or do not parse, and ``--redis`` (no Redis restart possible), refused with exit 2.
"""

from __future__ import annotations

import json
import re

import pytest

from eventfleet.chaos.config import ChaosError, parse_reshard
from tests.helpers import cli_process

RESHARD_FAULTS = {"command_kill", "kill", "pause", "redis_restart"}


@pytest.mark.timeout(900)
def test_chaos_run_grows_4_to_16_under_faults_and_loses_nothing() -> None:
    proc = cli_process(
        "chaos", "--workers", "3", "--events", "3000", "--seed", "7", "--rounds", "1",
        "--faults", "kill", "--user-shards", "4", "--item-shards", "4",
        "--reshard", "8x8,16x16", "--json", check=False, timeout=840,
    )  # fmt: skip
    assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    shown = json.dumps(doc, indent=1)[:6000]
    assert proc.returncode == 0 and doc["ok"], shown
    assert (doc["lost"], doc["duplicates_applied"], doc["mismatches"]) == (0, 0, 0), shown
    assert doc["invariant_violations"] == 0 and doc["verify"]["findings"] == []
    assert doc["verify"]["quiescent"] and doc["published"] == doc["events"] == 3000
    assert doc["final_counts"] == "16x16" and doc["unowned_shards"] == []
    steps = doc["reshards"]
    assert [(s["from"], s["to"]) for s in steps] == [("4x4", "8x8"), ("8x8", "16x16")]
    for s in steps:
        assert s["error"] is None and s["duration_s"] > 0, s
        # the command SIGKILLed once its run began, re-run until one exited 0
        assert s["reruns"] >= 1 and s["attempts"][-1]["exit"] == 0, s
        assert any(a["killed"] for a in s["attempts"]), s
        struck = {f["kind"] for f in s["faults"] if f["while_running"]}
        assert struck == RESHARD_FAULTS, s["faults"]
    # the faults a step struck are in the fault log too: 2 steps x 3, and the plan's kill
    assert doc["faults"]["kill"] == 3 and doc["faults"]["pause"] == 2
    assert doc["faults"]["redis_restart"] == 2
    waited = doc["orders_waited"]
    assert waited["confirmed"] > 0 and waited["not_confirmed_now"] == 0, waited
    assert doc["reads"]["checked"] > 0 and doc["reads"]["wrong"] == 0, doc["reads_wrong"]
    assert not doc["unexpected_exits"] and not doc["problems"]


@pytest.mark.fast
@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ("8x6", "item shards can only grow by a multiple of 4, not to 6"),
        ("8x8,12x16", "step 12x16 after 8x8: user shards can only grow by a multiple of 8"),
        ("4x4", "grows nothing after 4x4"),
        ("8x8,16", "each step is USERSxITEMS"),
        ("2x4", "user shards cannot shrink from 4 to 2"),
        ("0x8", "0 user shards"),
        ("8x8192", "at most 4096 item shards"),
    ],
)
def test_reshard_steps_that_do_not_grow_by_a_multiple_are_refused(steps: str, says: str) -> None:
    with pytest.raises(ChaosError, match=re.escape(says)):
        parse_reshard(steps, 4, 4)


@pytest.mark.fast
def test_reshard_steps_parse() -> None:
    assert parse_reshard("8x8,16x16", 4, 4) == ((8, 8), (16, 16))
    assert parse_reshard(" 8X4 , 8x8 ", 4, 4) == ((8, 4), (8, 8))


@pytest.mark.fast
def test_the_command_refuses_bad_steps_and_another_redis_with_exit_2() -> None:
    proc = cli_process(
        "chaos", "--user-shards", "4", "--item-shards", "4", "--reshard", "8x8,12x16", check=False
    )
    assert proc.returncode == 2 and "multiple of 8, not to 12" in proc.stderr, proc.stderr
    proc = cli_process(
        "chaos", "--user-shards", "4", "--item-shards", "4", "--reshard", "8x8",
        "--redis", "redis://127.0.0.1:1/0", "--faults", "kill", check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--reshard strikes redis_restart" in proc.stderr, proc.stderr
