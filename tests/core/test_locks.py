"""The record lock rule: earliest claim wins, ties by clientId then connectionId, expired claims
never hold, and every workstation (any order of members) picks the same holder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.locks import (
    LockClaim,
    live_claims,
    lock_holder,
    lock_view,
    next_expiry_ms,
)

NOW = 1_767_225_600_000


def claim(client: str, conn: str = "c1", at: int = NOW, component: str = "task",
          expires: int | None = NOW + 120_000) -> LockClaim:
    return LockClaim(component, client, conn, at, expires)


def test_the_earliest_claim_wins_whoever_lists_it_first() -> None:
    early, late = claim("demo-nurse", at=NOW - 5), claim("demo-clinician", at=NOW)
    assert lock_holder([late, early], "task", NOW) == early
    assert lock_holder([early, late], "task", NOW) == early


def test_ties_are_broken_by_client_id_then_connection_id() -> None:
    a, b = claim("alpha", "zz"), claim("beta", "aa")
    assert lock_holder([b, a], "task", NOW) == a
    same_client = [claim("alpha", "conn-b"), claim("alpha", "conn-a")]
    assert lock_holder(same_client, "task", NOW).connection_id == "conn-a"


def test_expired_claims_and_other_components_never_hold() -> None:
    expired = claim("alpha", at=NOW - 200_000, expires=NOW - 1)
    other = claim("beta", at=NOW - 100_000, component="note")
    current = claim("gamma", at=NOW - 10)
    assert lock_holder([expired, other, current], "task", NOW) == current
    assert lock_holder([expired, other], "task", NOW) is None
    # Expiry is inclusive: at the announced instant the claim is gone everywhere.
    assert lock_holder([claim("a", expires=NOW)], "task", NOW) is None
    assert lock_holder([claim("a", expires=NOW + 1)], "task", NOW) is not None
    # A claim without expiry lapses only when its member leaves.
    assert lock_holder([claim("a", at=0, expires=None)], "task", NOW) is not None


def test_the_view_lists_losing_contenders_in_rule_order() -> None:
    first, second, third = claim("c", at=NOW - 3), claim("a", at=NOW - 2), claim("b", at=NOW - 2)
    view = lock_view([second, third, first], "task", NOW)
    assert view.held and view.holder == first
    assert view.contenders == (second, third)
    assert not lock_view([], "task", NOW).held
    assert live_claims([third, first], "task", NOW) == [first, third]


def test_next_expiry_is_the_earliest_future_one() -> None:
    claims = [claim("a", expires=NOW + 50), claim("b", expires=NOW + 10),
              claim("c", expires=NOW - 10), claim("d", expires=None)]
    assert next_expiry_ms(claims, NOW) == NOW + 10
    assert next_expiry_ms(claims, NOW + 10) == NOW + 50
    assert next_expiry_ms([], NOW) is None


_ids = st.sampled_from(["demo-clinician", "demo-nurse", "prac-registrar", "a", "b"])
_claims = st.builds(
    LockClaim,
    component=st.sampled_from(["task", "note"]),
    client_id=_ids,
    connection_id=st.sampled_from(["conn1", "conn2", "x", "y"]),
    claimed_at_ms=st.integers(NOW - 5, NOW + 5),  # narrow: many exact ties
    expires_at_ms=st.one_of(st.none(), st.integers(NOW - 3, NOW + 8)),
)


@given(st.lists(_claims, max_size=8), st.randoms(use_true_random=False),
       st.integers(NOW - 5, NOW + 10))
def test_every_order_of_the_same_members_gives_the_same_holder(claims, rnd, now) -> None:
    shuffled = list(claims)
    rnd.shuffle(shuffled)
    for component in ("task", "note"):
        assert lock_holder(claims, component, now) == lock_holder(shuffled, component, now)
        assert lock_view(claims, component, now) == lock_view(shuffled, component, now)


@given(st.lists(_claims, min_size=1, max_size=8), st.integers(NOW - 5, NOW + 10))
def test_the_holder_is_a_live_claim_no_live_claim_beats(claims, now) -> None:
    holder = lock_holder(claims, "task", now)
    live = [c for c in claims if c.component == "task" and not c.expired(now)]
    if not live:
        assert holder is None
        return
    assert holder in live
    for other in live:
        assert (holder.claimed_at_ms, holder.client_id, holder.connection_id) <= (
            other.claimed_at_ms, other.client_id, other.connection_id)
