"""The relay heartbeat's strict schema (core/heartbeats.py) and what its seq does to a
channel's sequence tracking (core/seq.py: a tail gap, or the baseline)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wardsync.core.heartbeats import (
    MAX_HEARTBEAT_BYTES,
    Heartbeat,
    heartbeat_to_dict,
    parse_heartbeat,
)
from wardsync.core.pokes import PokeRejected
from wardsync.core.seq import Gap, SeqTracker

GOOD: dict[str, Any] = {"seq": 42, "at": 1_765_000_000_000, "every_s": 15}


def test_a_good_heartbeat_parses_from_every_form_and_round_trips() -> None:
    expected = Heartbeat(seq=42, at_ms=1_765_000_000_000, every_s=15.0)
    for form in (GOOD, json.dumps(GOOD), json.dumps(GOOD).encode()):
        assert parse_heartbeat(form) == expected
    assert heartbeat_to_dict(expected) == GOOD
    assert expected.silence_limit_s == 45.0
    assert parse_heartbeat({**GOOD, "every_s": 2.5}).every_s == 2.5
    assert parse_heartbeat({**GOOD, "seq": 0}).seq == 0  # a ward with no poke yet


@pytest.mark.parametrize(("data", "reason"), [
    ("[1, 2]", "heartbeat_not_object"),
    ("{not json", "heartbeat_bad_json"),
    ('{"seq": 1, "seq": 2, "at": 1, "every_s": 15}', "heartbeat_duplicate_field"),
    ('{"seq": 1, "at": 1, "every_s": NaN}', "heartbeat_bad_json"),
    (b"\xff\xfe", "heartbeat_bad_encoding"),
    (json.dumps({**GOOD, "note": "x" * (MAX_HEARTBEAT_BYTES + 1)}), "heartbeat_too_large"),
    ({**GOOD, "patient": "Zzsample Amber"}, "heartbeat_unknown_field"),
    ({"seq": 1, "at": 1}, "heartbeat_missing_field"),
    ({**GOOD, "seq": -1}, "heartbeat_bad_seq"),
    ({**GOOD, "seq": True}, "heartbeat_bad_seq"),
    ({**GOOD, "seq": "42"}, "heartbeat_bad_seq"),
    ({**GOOD, "seq": 2**53}, "heartbeat_bad_seq"),
    ({**GOOD, "at": 1.5}, "heartbeat_bad_at"),
    ({**GOOD, "at": "2026-12-08"}, "heartbeat_bad_at"),
    ({**GOOD, "every_s": 0}, "heartbeat_bad_every"),
    ({**GOOD, "every_s": 3601}, "heartbeat_bad_every"),
    ({**GOOD, "every_s": False}, "heartbeat_bad_every"),
    ({**GOOD, "every_s": "15"}, "heartbeat_bad_every"),
])
def test_anything_else_is_rejected_with_a_reason_code_and_no_content(
        data: Any, reason: str) -> None:
    with pytest.raises(PokeRejected) as caught:
        parse_heartbeat(data)
    assert caught.value.reason == reason
    assert "Zzsample" not in str(caught.value)


def test_the_relay_cannot_build_a_heartbeat_clients_refuse() -> None:
    with pytest.raises(PokeRejected):
        heartbeat_to_dict(Heartbeat(seq=-1, at_ms=0, every_s=15.0))


def test_a_heartbeat_above_the_highest_seq_opens_a_tail_gap() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(2, now=0.0)
    assert not t.announced(2, now=1.0)  # nothing missing
    assert t.announced(4, now=3.0)  # pokes 3 and 4 never arrived
    assert t.open_gaps == (Gap(3, 4, 3.0),)
    assert t.highest == 4
    assert not t.announced(4, now=4.0)  # said again: the same gap, not a new one
    assert t.observe(3, now=4.5) == "accept"  # a late arrival fills its hole
    assert t.due_gaps(now=5.0, grace_s=2.0) == [Gap(4, 4, 3.0)]


def test_before_any_poke_a_heartbeat_is_the_baseline() -> None:
    t = SeqTracker()
    assert not t.announced(7, now=0.0)
    assert t.highest == 7 and t.open_gaps == ()
    assert t.observe(7, now=0.1) == "duplicate"  # went out before the heartbeat
    assert t.observe(8, now=0.2) == "accept"
    assert t.observe(10, now=0.3) == "accept"
    assert t.open_gaps == (Gap(9, 9, 0.3),)
