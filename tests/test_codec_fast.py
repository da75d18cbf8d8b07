"""The saga's internal events are written without pydantic (``eventfleet.ledger.codec.*_text``): the text
must be what ``encode`` gives for the same model, byte for byte, for any valid fields, or
replay, dedup and ``verify`` would see two different entries for one (source, seq)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventfleet.ledger.codec import (
    charge_text,
    decode,
    decode_outcome,
    encode,
    encode_outcome,
    outcome_text,
    reject_text,
    release_text,
)
from eventfleet.ledger.events import MAX_INT, Charge, OrderOutcome, Reject, Release

keys = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
positive = st.integers(1, MAX_INT)
non_negative = st.integers(0, MAX_INT)
shards = st.from_regex(r"[ui][0-9]{1,4}", fullmatch=True)
seqs = st.integers(1, MAX_INT)
reasons = st.sampled_from(["out_of_stock", "unknown_item", "amount_too_large"])
refs = st.none() | st.builds(
    lambda src, n: f"{src}/{n}", st.from_regex(r"p:[A-Za-z0-9_.:-]{1,64}", fullmatch=True), seqs
)


@given(keys, positive, keys, positive, non_negative, refs, shards, seqs)
def test_charge_text_is_encode(
    order_id: str,
    user_id: int,
    item_id: str,
    qty: int,
    amount: int,
    ref: str | None,
    source: str,
    seq: int,
) -> None:
    model = Charge(
        order_id=order_id, user_id=user_id, item_id=item_id, qty=qty, amount=amount, ref=ref
    )
    text = charge_text(order_id, user_id, item_id, qty, amount, ref, source, seq)
    assert text == encode(model, source, seq)
    assert decode(text).model_dump() == {**model.model_dump(), "source": source, "seq": seq}


@given(keys, keys, positive, shards, seqs)
def test_release_text_is_encode(
    order_id: str, item_id: str, qty: int, source: str, seq: int
) -> None:
    model = Release(order_id=order_id, item_id=item_id, qty=qty)
    assert release_text(order_id, item_id, qty, source, seq) == encode(model, source, seq)


@given(keys, positive, keys, positive, reasons, st.none() | non_negative, refs, shards, seqs)
def test_reject_text_is_encode(
    order_id: str,
    user_id: int,
    item_id: str,
    qty: int,
    reason: str,
    amount: int | None,
    ref: str | None,
    source: str,
    seq: int,
) -> None:
    model = Reject.model_validate(
        dict(
            order_id=order_id,
            user_id=user_id,
            item_id=item_id,
            qty=qty,
            reason=reason,
            amount=amount,
            ref=ref,
        )
    )
    text = reject_text(order_id, user_id, item_id, qty, reason, amount, ref, source, seq)
    assert text == encode(model, source, seq)


outcome_reasons = st.sampled_from(
    [None, "out_of_stock", "unknown_item", "amount_too_large", "insufficient_funds"]
)


outcome_fields = st.fixed_dictionaries(
    {
        "order_id": keys,
        "user_id": positive,
        "item_id": keys,
        "qty": positive,
        "amount": st.none() | non_negative,
        "status": st.sampled_from(["confirmed", "rejected", "duplicate"]),
        "reason": outcome_reasons,
        "first": st.none() | st.sampled_from(["confirmed", "rejected"]),
        "ref": refs,
    }
)


@given(outcome_fields)
def test_outcome_text_is_pydantics(fields: dict[str, Any]) -> None:
    outcome = OrderOutcome.model_validate(fields)
    text = encode_outcome(outcome)
    unset = {k for k in ("first", "ref") if getattr(outcome, k) is None}
    assert text == outcome.model_dump_json(exclude=unset)
    assert decode_outcome(text) == outcome
    # the rules' text, built from the fields without the model (ledger.rules._outcome)
    assert outcome_text(**fields) == text
