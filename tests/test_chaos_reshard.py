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
  or do not parse, and ``--redis`` (no Redis restart possible), refused with exit 2;
- the long run behind ``-m chaos``: 2+2 -> 32+32 in four steps under 100,000 events;
- the end checks can fail: an event forwarded and never applied by the child is lost, one
  applied on two paths is taken twice; an order told confirmed that the logs decide twice,
  or reject, or that the read model does not hold, is named.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from eventfleet.chaos.config import ChaosError, parse_reshard
from eventfleet.chaos.grown import follow_sends, lineage
from eventfleet.chaos.waiters import Told, check_orders
from eventfleet.ledger.codec import encode, outcome_text
from eventfleet.ledger.events import Topup
from eventfleet.ledger.results import OutcomeRecord
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.ops.verify import Report, ShardFold
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
    shown = f"problems: {doc.get('problems')}\n" + json.dumps(doc, indent=1)[:6000]
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
    assert doc["verify_command"]["exit"] == 0 and doc["verify_command"]["shards"] == 32
    # the producer that never learns the counts: its events for moved keys were forwarded,
    # on a second hop too after the second step
    assert doc["stale_published"] == 750, doc["stale_published"]
    # and every top-up a reader read back and every order a waiter placed, followed too
    assert doc["client_events_followed"] > 0
    assert doc["forwarded"]["events"] > 0 and doc["forwarded"]["second_hop"] > 0, doc["forwarded"]
    waited = doc["orders_waited"]
    assert waited["confirmed"] > 0 and waited["changed"] == 0, waited
    assert doc["reads"]["checked"] > 0 and doc["reads"]["wrong"] == 0, doc["reads_wrong"]
    assert not doc["unexpected_exits"] and not doc["problems"]


@pytest.mark.chaos
@pytest.mark.timeout(4 * 3600)
def test_long_chaos_run_grows_2_to_32_in_four_steps() -> None:
    """100,000 events (and 25,000 from the producer that never learns the counts), every
    default fault kind twice, 2+2 -> 4+4 -> 8+8 -> 16+16 -> 32+32 (``make chaos``)."""
    proc = cli_process(
        "chaos", "--workers", "4", "--events", "100000", "--seed", "2026", "--rounds", "2",
        "--user-shards", "2", "--item-shards", "2", "--reshard", "4x4,8x8,16x16,32x32",
        "--json", check=False, timeout=4 * 3600 - 60,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"], json.dumps(doc, indent=1)[:6000]
    assert doc["final_counts"] == "32x32" and doc["verify_command"]["shards"] == 64
    assert [s["to"] for s in doc["reshards"]] == ["4x4", "8x8", "16x16", "32x32"]
    assert doc["forwarded"]["second_hop"] > 0 and doc["orders_waited"]["confirmed"] > 0


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


def _fold(shard: str, **fields: object) -> ShardFold:
    fold = ShardFold(shard, ShardState(shard), "0-0", {}, {})
    for name, value in fields.items():
        setattr(fold, name, value)
    return fold


@pytest.mark.fast
def test_each_sent_event_is_followed_to_where_it_was_applied() -> None:
    forwarded = encode(Topup(user_id=5, amount=1), "p:x", 3)
    parent = _fold(
        "u1",
        applied_seqs={"p:x": {1, 2}},
        dead_seqs={"p:x": {3, 4}},  # 3 forwarded to u5, 4 a dead letter
        forwards={"u5": Counter({("u1", "", forwarded): 1})},
    )
    child = _fold("u5", applied_seqs={"p:x@u1": {3}, "p:x": {5}})
    sent = {"u1": [1, 2, 3, 4], "u5": [5]}
    report = Report(ShardCounts(8, 8), folds={"u1": parent, "u5": child})
    assert follow_sends(report, "p:x", "p:x", sent) == (0, 0)
    child.applied_seqs["p:x@u1"] = set()  # the child dropped it (as a repeat, say)
    assert follow_sends(report, "p:x", "p:x", sent) == (1, 0)
    child.applied_seqs["p:x@u1"] = {3}
    report.folds["u13"] = _fold("u13", applied_seqs={"p:x@u1.u5": {3}})  # and one hop on
    assert follow_sends(report, "p:x", "p:x", sent) == (0, 1)
    assert follow_sends(report, "p:x", "p:x", {**sent, "u5": [5, 6]}) == (1, 1)


@pytest.mark.fast
def test_an_order_told_confirmed_must_stay_confirmed() -> None:
    def rec(seq: int, oid: str, status: str) -> OutcomeRecord:
        reason = None if status == "confirmed" else "out_of_stock"
        text = outcome_text(oid, 7, "sku-1", 1, 100, status, reason, None, None)
        return OutcomeRecord(seq, text, status, reason)

    outcomes = [rec(1, "a", "confirmed"), rec(2, "b", "confirmed"), rec(3, "b", "confirmed")]
    outcomes += [rec(4, "c", "rejected"), rec(5, "d", "confirmed"), rec(6, "e", "rejected")]
    report = Report(ShardCounts(8, 8), folds={"u3": _fold("u3", outcomes=outcomes)})
    told = [Told(7, oid, "confirmed") for oid in "abcd"] + [Told(7, "e", "rejected")]
    now: dict[str, str | None] = {"a": "confirmed", "b": "confirmed", "c": "confirmed"}
    got = check_orders(report, told, now | {"e": "rejected"}, [(7, "a"), (7, "x")])
    assert (got.told, got.confirmed, got.timed_out_decided) == (5, 4, 1)
    # b decided twice, c rejected in the log, d not confirmed in the read model
    assert [w.split(":")[0] for w in got.wrong] == ["order b of user 7", "order c of user 7",
                                                    "order d of user 7"]  # fmt: skip
    # a rejection must stay one too
    got = check_orders(report, [Told(7, "e", "rejected")], {"e": "confirmed"})
    assert got.wrong == ["order e of user 7: told rejected, read model 'confirmed'"]


@pytest.mark.fast
def test_a_users_lineage_lists_each_shard_it_moved_to() -> None:
    init = ShardCounts(4, 4)
    chains = {lineage(u, init, [(8, 8), (16, 16)]) for u in range(1, 400)}
    assert all(c[0] in {"u0", "u1", "u2", "u3"} and len(c) == len(set(c)) for c in chains)
    assert {len(c) for c in chains} == {1, 2, 3}
    assert ("u1", "u5", "u13") in chains and ("u1", "u9") in chains and ("u2",) in chains
