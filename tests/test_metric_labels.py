"""The bounded label sets that counters start at 0 with are complete: every dead-letter
reason the domain can give, every outcome reason, every operation the worker retries
(read from the source with ``ast``, so a new reason without its label fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

from eventfleet.ledger.rules import DEAD_LETTER_REASONS
from eventfleet.worker.metrics import OPERATIONS

ROOT = Path(__file__).resolve().parents[1]
REASON_CALLS = {"dead_letter": 3, "DecodeError": 0, "Refused": 0}
"""Calls that name a dead-letter reason, and the position of the reason argument."""


def reason_literals(path: Path) -> set[str]:
    """The reasons named in calls of ``REASON_CALLS``; an f-string gives its constant tail,
    prefixed by ``*`` (``f"{what}_overflow"`` gives ``*_overflow``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        if name not in REASON_CALLS or len(node.args) <= REASON_CALLS[name]:
            continue
        arg = node.args[REASON_CALLS[name]]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add(arg.value)
        elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[-1], ast.Constant):
            found.add("*" + str(arg.values[-1].value))
    return found


def test_every_dead_letter_reason_in_the_source_is_a_label() -> None:
    named: set[str] = set()
    for module in ("eventfleet/ledger/codec.py", "eventfleet/ledger/rules.py"):
        named |= reason_literals(ROOT / module)
    assert "bad_json" in named and "handler_error" in named, "the scan found nothing"
    for reason in named:
        if reason.startswith("*"):
            assert any(r.endswith(reason[1:]) for r in DEAD_LETTER_REASONS), reason
        else:
            assert reason in DEAD_LETTER_REASONS, f"{reason} is not in DEAD_LETTER_REASONS"
    assert "max_deliveries" in DEAD_LETTER_REASONS  # store.fold.POISON_REASON


def test_every_retried_operation_is_a_label() -> None:
    """The second argument of every ``call(..., "op")`` and ``conn.call(..., "op")``."""
    named: set[str] = set()
    for path in sorted((ROOT / "worker").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "call":
                ops = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
                named.update(op for op in ops if isinstance(op, str))
    assert {"renew", "read", "snapshot"} <= named, "the scan found nothing"
    assert named <= set(OPERATIONS), named - set(OPERATIONS)
