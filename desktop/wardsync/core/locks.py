"""Record locks: which workstation may edit one component of a record (a pure rule).

A lock is advisory, claimed through presence data on the record's channel (core/presence.py):
a member that starts editing a component announces a claim with the time it claimed and the
time the claim expires unless renewed. Every workstation sees the same presence members (the
hub broadcasts every change to every attached connection, Ably RTP2), so every workstation
that applies this rule to them picks the same holder:

- only claims for the component that have not expired count;
- the earliest claim wins;
- ties are broken by clientId, then connectionId (both assigned by the hub, unique per
  member: the presence member key is `connectionId:clientId`, RTP2), then expiry.

The order is total over every field of a claim, so the winner does not depend on the order in
which members were listed or events arrived (tests/core/test_locks.py checks permutations).
The authoritative guard against lost writes is still the server's `If-Match` check
(R4 http.html#concurrency): a lock only stops two people typing over each other.

A claim's place in the order is the hub's timestamp of the presence message that first carried
it (RTP2: the hub stamps every presence message), never the time the claimant wrote into its
own data: a member cannot date its claim before the claims the hub had already broadcast
(core/presence.py, sync/presence.py). Expiry times are the claimant's wall clock in epoch
milliseconds, capped at `MAX_CLAIM_LEAD_MS` after the hub's timestamp of the message announcing
them, so no claim outlives its member's last renewal by more than that. Workstations in a
hospital are NTP-synchronised; a skewed clock changes when a claim lapses, never who holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# A claim without an expiry never lapses by time (it still ends when its member leaves).
NO_EXPIRY_MS = 2**63 - 1
# The furthest ahead of the hub's timestamp a claim's announced expiry counts: the longest
# idle limit a workstation may be configured with (`security.edit_lock_idle_min` <= 60) plus
# a minute for clock skew. A claim announced further ahead lapses at this cap.
MAX_CLAIM_IDLE_S = 3600.0
MAX_CLAIM_LEAD_MS = int((MAX_CLAIM_IDLE_S + 60.0) * 1000)


@dataclass(frozen=True, slots=True)
class LockClaim:
    """One member's claim on one component of a record; `claimed_at_ms` is its place in the
    order (the hub's timestamp when the claim first appeared)."""

    component: str
    client_id: str
    connection_id: str
    claimed_at_ms: int
    expires_at_ms: int | None = None

    def order_key(self) -> tuple[int, str, str, int]:
        """Earliest claim first; then clientId, connectionId and expiry (a total order)."""
        expiry = NO_EXPIRY_MS if self.expires_at_ms is None else self.expires_at_ms
        return (self.claimed_at_ms, self.client_id, self.connection_id, expiry)

    def expired(self, now_ms: int) -> bool:
        """True once `now_ms` has reached the claim's expiry."""
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms


@dataclass(frozen=True, slots=True)
class LockView:
    """The state of one component's lock: who holds it and who else is waiting for it."""

    component: str
    holder: LockClaim | None
    contenders: tuple[LockClaim, ...] = ()  # live claims that lost, in rule order

    @property
    def held(self) -> bool:
        return self.holder is not None


def live_claims(claims: Iterable[LockClaim], component: str, now_ms: int) -> list[LockClaim]:
    """The unexpired claims on `component`, in rule order (the holder first)."""
    live = [c for c in claims if c.component == component and not c.expired(now_ms)]
    live.sort(key=LockClaim.order_key)
    return live


def lock_holder(claims: Iterable[LockClaim], component: str, now_ms: int) -> LockClaim | None:
    """The claim that holds `component` at `now_ms`, or None if nobody does."""
    live = live_claims(claims, component, now_ms)
    return live[0] if live else None


def lock_view(claims: Iterable[LockClaim], component: str, now_ms: int) -> LockView:
    """Holder and losing contenders of `component` at `now_ms`."""
    live = live_claims(claims, component, now_ms)
    if not live:
        return LockView(component, None)
    return LockView(component, live[0], tuple(live[1:]))


def next_expiry_ms(claims: Iterable[LockClaim], now_ms: int) -> int | None:
    """The earliest future expiry among `claims` (when a lock may change hands by time)."""
    future = [c.expires_at_ms for c in claims
              if c.expires_at_ms is not None and c.expires_at_ms > now_ms]
    return min(future, default=None)
