"""Who else is looking at a record, and record locks, on the workstation's ONE connection.

`PresenceService` (one per workstation process, built from the `Workstation` and the signed-in
clinician) makes this workstation ONE presence member of each record channel
(`record:<ResourceType>:<id>`, docs/architecture.md §3.3) that any of its windows shows. Windows ask
for a `PresenceHandle` with `join(...)` and close it when they stop showing the record; the
service counts handles, enters presence with the first and leaves `leave_grace_s` after the
last one closed (a chart closed and reopened does not flicker on other screens), then
releases its channel lease, which the connection detaches after its own grace period.

Who is who: each member is shown by its clientId (bound to the user by the realtime token),
named by the `StaffDirectory` (sync/staff.py), never by the name in its presence data; our
own member is the signed-in clinician (core/presence.py).

Record locks (component level): `handle.claim(component)` announces a claim in the member's
presence data and waits for the hub's echo of it (RTP17b: the echo comes after every change
the hub broadcast before ours), then a short settle time, and applies the pure lock rule
(core/locks.py) to what everyone sees: earliest claim wins, ties by clientId then
connectionId. "Earliest" is the hub's timestamp of the presence message in which this
workstation first saw the claim (`_Record.ranks`, our own claim by its echo), so a member
writing an early `claimedAt` into its data gains nothing; a claim keeps its place while its
user renews it or re-enters after a failed resume. The loser withdraws. Claims expire: the
holder announces an expiry `lock_idle_s` after the user's last input (renewed while they
type, at most every quarter of the idle time) and ends its own claim when it passes; other
workstations apply the same expiry to the announced time, capped at MAX_CLAIM_LEAD_MS after
the hub's timestamp of the announcement (core/locks.py); no workstation announces more than
MAX_CLAIM_IDLE_S ahead. A holder whose realtime link has been down for `lock_disconnect_s`
(default: the hub's presence grace, after which others no longer see the member at all) ends
its claim too. Every claim that ends without the user asking publishes `EditLockEnded` so the
editor can tell its user; the user's draft is not touched (sync/edits.py keeps it).

Without realtime (not configured or down) presence is unavailable: handles show nobody else,
claims are granted "offline" (nobody can be told) and the server's `If-Match` check remains
the authoritative guard (R4 http.html#concurrency).

Every task here belongs to the service's `TaskOwner` and is awaited by `aclose()`; every wait is
on the workstation's timer, so the claim, expiry and leave timelines run on fake time in tests
(docs/architecture.md §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from wardsync.core.connection_status import RealtimeState
from wardsync.core.locks import MAX_CLAIM_IDLE_S, LockClaim, lock_view
from wardsync.core.presence import (
    MAX_EPOCH_MS,
    Claim,
    ClaimKey,
    ClinicianIdentity,
    EditLockEnded,
    LockEndReason,
    Member,
    PresenceChanged,
    PresenceData,
    RecordPresence,
    members_from_wire,
    record_channel,
)
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import Timer, TimerHandle, wait_for
from wardsync.sync.realtime import CHANNEL_RELEASE_GRACE_S, ChannelLease, RealtimeError
from wardsync.sync.staff import StaffDirectory
from wardsync.sync.workstation import Workstation

log = logging.getLogger(__name__)

LOCK_IDLE_S = 120.0  # a claim lapses this long after the holder's last input
LOCK_DISCONNECT_S = 15.0  # the hub's presence grace (HubConfig.presence_grace_s, Ably ~15 s)
PRESENCE_LEAVE_GRACE_S = CHANNEL_RELEASE_GRACE_S
CLAIM_SETTLE_S = 0.3  # after our echo, time for a claim sent at the same moment to arrive
CLAIM_ECHO_TIMEOUT_S = 5.0  # = the realtime request timeout: no echo means no live link
LOCK_RENEW_FRACTION = 0.25  # renew the announced expiry at most every quarter of the idle time
PRESENCE_TICK_S = 0.25
PRESENCE_RETRY_S = 1.0
PRESENCE_RETRY_CAP_S = 10.0
LEAVE_TIMEOUT_S = 2.0
PENDING_RANK_MS = MAX_EPOCH_MS  # our claim before its echo: after everything already seen
MAX_RANKS_PER_RECORD = 512  # claims remembered per record (each member holds at most 8)

ClaimStatus = Literal["pending", "held", "offline"]
ClaimReason = Literal["granted", "offline", "taken", "elsewhere", "closed"]


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """The answer to `claim`: granted (live or "offline": nobody could be told) or not, and
    if not, who holds the component ("elsewhere": another window of this workstation)."""

    granted: bool
    reason: ClaimReason
    holder: Member | None = None


@dataclass(frozen=True, slots=True)
class ComponentLock:
    """One component's lock as a window shows it."""

    component: str
    holder: Member | None = None  # None: nobody is editing it
    by_me: bool = False  # this workstation holds it
    here: bool = False  # ...through this handle (window)
    status: ClaimStatus | None = None  # this workstation's claim state, when by_me
    claimed_at_ms: int | None = None
    expires_at_ms: int | None = None
    # The hub's timestamp that orders the claim (core/locks.py); None while ours is pending.
    ordered_at_ms: int | None = None

    @property
    def blocked(self) -> bool:
        """Editing here is not allowed: someone else, or another window here, holds it."""
        return self.holder is not None and not self.here


@dataclass(eq=False)
class _OwnClaim:
    component: str
    handle: PresenceHandle
    claimed_at_ms: int
    expires_at_ms: int  # as announced
    last_input_ms: int
    status: ClaimStatus = "pending"
    echoed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Record:
    channel: str
    since_ms: int
    handles: set[PresenceHandle] = field(default_factory=set)
    claims: dict[str, _OwnClaim] = field(default_factory=dict)
    lease: ChannelLease | None = None
    unsubscribe: Callable[[], None] | None = None
    snapshot: RecordPresence | None = None
    sent: PresenceData | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    leave_timer: TimerHandle | None = None
    expiry_seen_ms: int | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # attached, SYNC complete
    # Each claim's place in the lock order: the hub's timestamp when we first saw it.
    ranks: dict[ClaimKey, int] = field(default_factory=dict)


class PresenceHandle:
    """One window's view of one record's presence; `close()` when the window stops showing it."""

    def __init__(self, service: PresenceService, record: _Record, *, enters: bool = True
                 ) -> None:
        self._service = service
        self._record = record
        self.channel = record.channel
        self.enters = enters  # False: only watches who is there (the ward overview's list)
        self.closed = False

    @property
    def presence(self) -> RecordPresence:
        """Everyone present, as this workstation sees them now."""
        return self._service._snapshot(self._record)

    def others(self) -> tuple[Member, ...]:
        """Members at other workstations (what the avatar stack shows)."""
        return self.presence.others()

    @property
    def checking(self) -> bool:
        """True while the link is up but who is here is not known yet (SYNC, RTP18)."""
        return self._service.live and not self.presence.synced

    def lock(self, component: str) -> ComponentLock:
        return self._service._component_lock(self._record, component, self)

    async def claim(self, component: str) -> ClaimOutcome:
        """Claim the lock on `component` (see the module docstring)."""
        if self.closed:
            return ClaimOutcome(False, "closed")
        return await self._service._claim(self._record, self, component)

    def release(self, component: str) -> None:
        """Stop editing `component` (the user saved or cancelled)."""
        if not self.closed:
            self._service._release(self._record, self, component)

    def touch(self, component: str) -> None:
        """The user typed or clicked in `component`'s editor: the claim is not idle."""
        if not self.closed:
            self._service._touch(self._record, self, component)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._service._close_handle(self._record, self)


class PresenceService:
    """Presence and record locks of one workstation (see the module docstring)."""

    def __init__(
        self,
        workstation: Workstation,
        clinician: ClinicianIdentity,
        *,
        lock_idle_s: float = LOCK_IDLE_S,
        lock_disconnect_s: float = LOCK_DISCONNECT_S,
        leave_grace_s: float = PRESENCE_LEAVE_GRACE_S,
        claim_settle_s: float = CLAIM_SETTLE_S,
        claim_timeout_s: float = CLAIM_ECHO_TIMEOUT_S,
        tick_s: float = PRESENCE_TICK_S,
        directory: StaffDirectory | None = None,
    ) -> None:
        if lock_idle_s <= 0 or lock_disconnect_s <= 0 or leave_grace_s < 0:
            raise ValueError("lock and presence timings must be positive")
        if lock_idle_s > MAX_CLAIM_IDLE_S:
            raise ValueError("the lock idle time may be at most an hour (core/locks.py)")
        self._ws = workstation
        self._timer: Timer = workstation.timer
        self.clinician = clinician
        self.lock_idle_s = lock_idle_s
        self.lock_disconnect_s = lock_disconnect_s
        self.leave_grace_s = leave_grace_s
        self._settle_s = claim_settle_s
        self._claim_timeout_s = claim_timeout_s
        self._tick_s = tick_s
        self._records: dict[str, _Record] = {}
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskOwner("presence", logger=log, timer=self._timer)
        self._own_connections: set[str] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self.directory = directory or StaffDirectory(workstation.fhir, self._timer,
                                                     self._names_changed)

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Start the timer that expires idle claims and notices others' expiries."""
        self._ticker = self._tasks.spawn(self._tick_loop(), name="presence lock timer")

    async def aclose(self) -> None:
        """Leave every record at once (a user switch or shutdown) and stop every task."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        records = list(self._records.values())
        self._records.clear()
        for rec in records:
            for handle in list(rec.handles):
                handle.closed = True
            rec.handles.clear()
            rec.claims.clear()
            self._leave_now(rec)
        # The leaves run to their end (each bounded by LEAVE_TIMEOUT_S); they end the records'
        # own tasks, so nothing is left to cancel after them.
        await self._tasks.wait()
        await self._tasks.aclose()
        await self.directory.aclose()

    async def __aenter__(self) -> PresenceService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ clocks and links
    def _now_ms(self) -> int:
        return int(self._timer.wall() * 1000)

    @property
    def live(self) -> bool:
        """True while the realtime link is up: presence can be seen and claims announced."""
        return self._ws.realtime is not None and self._ws.status.realtime is RealtimeState.CONNECTED

    def _connection_id(self) -> str:
        rt = self._ws.realtime
        conn = rt.connection_id if rt is not None else None
        if conn:
            self._own_connections.add(conn)
        return conn or ""

    def _client_id(self) -> str:
        rt = self._ws.realtime
        return (rt.client_id if rt is not None else None) or self.clinician.practitioner_id

    # ------------------------------------------------------------------ joining and leaving
    def join(self, resource_type: str, id: str) -> PresenceHandle:
        """A handle on the presence of `ResourceType/id` (ValueError on a malformed id)."""
        return self.join_channel(record_channel(resource_type, id))

    def watch(self, resource_type: str, id: str) -> PresenceHandle:
        """See who is on `ResourceType/id` without being shown there yourself: a ward list
        is not "viewing" each of its patients' records."""
        return self.join_channel(record_channel(resource_type, id), enter=False)

    def join_channel(self, channel: str, *, enter: bool = True) -> PresenceHandle:
        if self._closed:
            raise RuntimeError("the presence service is closed")
        rec = self._records.get(channel)
        if rec is None:
            rec = _Record(channel, self._now_ms())
            self._records[channel] = rec
            rec.task = self._tasks.spawn(self._run_record(rec), name="record presence")
        elif rec.leave_timer is not None:
            rec.leave_timer.cancel()
            rec.leave_timer = None
        handle = PresenceHandle(self, rec, enters=enter)
        rec.handles.add(handle)
        rec.dirty.set()  # entering (or not) follows the open handles
        return handle

    @property
    def channels(self) -> list[str]:
        """Record channels this workstation is present on (or about to leave)."""
        return list(self._records)

    def handle_count(self, channel: str) -> int:
        rec = self._records.get(channel)
        return len(rec.handles) if rec else 0

    def _close_handle(self, rec: _Record, handle: PresenceHandle) -> None:
        rec.handles.discard(handle)
        rec.dirty.set()
        for claim in [c for c in rec.claims.values() if c.handle is handle]:
            self._drop_claim(rec, claim)
        if rec.handles or self._records.get(rec.channel) is not rec:
            return
        rec.leave_timer = self._timer.call_later(self.leave_grace_s,
                                                 lambda: self._on_leave_timer(rec))

    def _on_leave_timer(self, rec: _Record) -> None:
        rec.leave_timer = None
        if rec.handles or self._records.get(rec.channel) is not rec:
            return
        del self._records[rec.channel]
        self._leave_now(rec)

    def _leave_now(self, rec: _Record) -> None:
        if rec.leave_timer is not None:
            rec.leave_timer.cancel()
            rec.leave_timer = None
        previous = self._leaving.get(rec.channel)
        task = self._tasks.spawn(self._leave(rec, previous), name="record presence leave")
        self._leaving[rec.channel] = task
        task.add_done_callback(functools.partial(self._forget_leaving, rec.channel))

    def _forget_leaving(self, channel: str, task: asyncio.Task[None]) -> None:
        if self._leaving.get(channel) is task:
            del self._leaving[channel]

    async def _leave(self, rec: _Record, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if rec.task is not None:
            rec.task.cancel()
            await asyncio.gather(rec.task, return_exceptions=True)
        if rec.unsubscribe is not None:
            rec.unsubscribe()
            rec.unsubscribe = None
        lease, rec.lease = rec.lease, None
        if lease is None:
            return
        try:
            if rec.sent is not None:
                # RTP10: an explicit LEAVE reaches others now; detaching would too, but only
                # after the connection's own channel grace.
                await wait_for(self._timer, lease.leave_presence(), LEAVE_TIMEOUT_S)
        except (RealtimeError, TimeoutError) as exc:
            log.info("presence leave not confirmed (%s); detaching ends it", type(exc).__name__)
        finally:
            lease.close()

    async def _run_record(self, rec: _Record) -> None:
        """Attach, follow presence events, and keep our member's data as desired."""
        leaving = self._leaving.get(rec.channel)
        if leaving is not None:
            # A leave of an earlier visit of this record must land before our enter.
            await asyncio.gather(asyncio.shield(leaving), return_exceptions=True)
        rt = self._ws.realtime
        if rt is None:
            return  # realtime not configured: nobody can be seen or told
        delay = PRESENCE_RETRY_S
        while rec.lease is None:
            lease: ChannelLease | None = None
            try:
                lease = await rt.acquire(rec.channel)
                rec.unsubscribe = await lease.subscribe_presence(lambda: self._refresh(rec))
                rec.lease = lease
            except (RealtimeError, RuntimeError) as exc:
                if lease is not None:
                    lease.close()
                log.warning("record presence unavailable (%s): retrying in %.0f s", exc, delay)
                await self._timer.sleep(delay)
                delay = min(delay * 2, PRESENCE_RETRY_CAP_S)
            except Exception:
                # The SDK's own errors from attaching (refused, timed out): presence is a
                # courtesy, so keep trying rather than lose the record's task.
                if lease is not None:
                    lease.close()
                log.exception("attaching a record channel failed: retrying in %.0f s", delay)
                await self._timer.sleep(delay)
                delay = min(delay * 2, PRESENCE_RETRY_CAP_S)
        self._refresh(rec)
        delay = PRESENCE_RETRY_S
        while True:
            rec.dirty.clear()
            desired = self._desired(rec)
            if desired == rec.sent:
                await rec.dirty.wait()
                continue
            try:
                if desired is None:
                    await rec.lease.leave_presence()  # only watchers are left
                elif rec.sent is None:
                    await rec.lease.enter_presence(desired.to_wire())
                else:
                    await rec.lease.update_presence(desired.to_wire())
                rec.sent = desired
                delay = PRESENCE_RETRY_S
            except RealtimeError as exc:
                log.warning("presence update not sent (%s): retrying in %.0f s", exc, delay)
                await self._timer.sleep(delay)
                delay = min(delay * 2, PRESENCE_RETRY_CAP_S)

    # ------------------------------------------------------------------ what others see
    def _desired(self, rec: _Record) -> PresenceData | None:
        # The last window closed moments ago: stay present until the leave grace ends, so a
        # record closed and reopened does not flicker on other screens (its claims are gone).
        closing = not rec.handles and rec.leave_timer is not None and rec.sent is not None
        if not closing and not any(h.enters for h in rec.handles):
            return None  # nobody here is viewing the record: watch without being seen
        claims = tuple(Claim(c.component, c.claimed_at_ms, c.expires_at_ms)
                       for c in sorted(rec.claims.values(), key=lambda c: c.component))
        return PresenceData(self.clinician, rec.since_ms, claims, self._connection_id())

    def _snapshot(self, rec: _Record) -> RecordPresence:
        if rec.snapshot is None:
            self._connection_id()
            rec.snapshot = RecordPresence(rec.channel, (), frozenset(self._own_connections))
        return rec.snapshot

    def _refresh(self, rec: _Record) -> None:
        """After every presence event: re-read the members, settle our claims, tell windows."""
        if rec.lease is None and rec.unsubscribe is None:
            return
        conn = self._connection_id()
        lease = rec.lease
        entries = lease.presence_members() if lease is not None else []
        members = members_from_wire((e.client_id, e.connection_id, e.data, e.timestamp_ms)
                                    for e in entries)
        self._rank_claims(rec, members)
        members = tuple(self._with_person(m) for m in members)
        rec.snapshot = RecordPresence(rec.channel, members, frozenset(self._own_connections),
                                      synced=lease.presence_synced if lease else False,
                                      claim_ranks=dict(rec.ranks))
        if rec.snapshot.synced:
            rec.synced.set()
        if rec.sent is not None and conn and rec.sent.connection_id != conn:
            # A new connection (failed resume): the SDK re-entered us with old data; send
            # the current data, written for this connection.
            rec.dirty.set()
        own = next((m for m in members if m.connection_id == conn and conn), None)
        for claim in rec.claims.values():
            echoed = own.data.claim(claim.component) if own and own.data else None
            if echoed is not None and echoed.claimed_at_ms == claim.claimed_at_ms:
                claim.echoed.set()
        self._check_taken(rec)
        self._ws.bus.publish(PresenceChanged(rec.channel))

    def _rank_claims(self, rec: _Record, members: tuple[Member, ...]) -> None:
        """Give every claim seen for the first time its place: the hub's timestamp of the
        message that carries it (core/locks.py). Claims no member carries any more are
        forgotten, after a re-entry on a new connection has inherited theirs."""
        present: set[ClaimKey] = set()
        for member in members:
            for key in member.claim_keys():
                present.add(key)
                if key not in rec.ranks:
                    rec.ranks[key] = member.timestamp_ms or self._now_ms()
        for key in [k for k in rec.ranks if k not in present]:
            del rec.ranks[key]
        while len(rec.ranks) > MAX_RANKS_PER_RECORD:  # only a member flooding claims
            del rec.ranks[max(rec.ranks, key=rec.ranks.__getitem__)]

    def _with_person(self, member: Member) -> Member:
        if member.connection_id in self._own_connections:
            person: ClinicianIdentity | None = self.clinician
        else:
            person = self.directory.lookup(member.client_id)
        return dataclasses.replace(member, person=person)

    def _names_changed(self) -> None:
        """The directory read a name: repaint every record's members with it."""
        for rec in list(self._records.values()):
            self._refresh(rec)

    def _own_rank(self, rec: _Record, claim: _OwnClaim) -> int:
        return rec.ranks.get((self._client_id(), claim.component, claim.claimed_at_ms),
                             PENDING_RANK_MS)

    def _effective_claims(self, rec: _Record) -> list[LockClaim]:
        """Others' claims as the hub ordered them, ours as we announce them (the echo may
        lag: until it comes, ours ranks after everything seen)."""
        snap = self._snapshot(rec)
        claims = [c for m in snap.members if not snap.is_own(m)
                  for c in m.lock_claims(rec.ranks)]
        conn, client = self._connection_id(), self._client_id()
        claims += [LockClaim(c.component, client, conn, self._own_rank(rec, c), c.expires_at_ms)
                   for c in rec.claims.values()]
        return claims

    def _holder(self, rec: _Record, component: str) -> tuple[LockClaim | None, bool]:
        """(holding claim, True if it is ours)."""
        view = lock_view(self._effective_claims(rec), component, self._now_ms())
        own = rec.claims.get(component)
        holder = view.holder
        mine = (holder is not None and own is not None
                and holder.connection_id == self._connection_id()
                and holder.client_id == self._client_id()
                and holder.claimed_at_ms == self._own_rank(rec, own))
        return holder, mine

    def _own_member(self, rec: _Record) -> Member:
        return Member(self._client_id(), self._connection_id(), self._desired(rec),
                      person=self.clinician)

    def _component_lock(self, rec: _Record, component: str,
                        handle: PresenceHandle) -> ComponentLock:
        holder, mine = self._holder(rec, component)
        if holder is None:
            return ComponentLock(component)
        own = rec.claims.get(component)
        if mine and own is not None:
            rank = self._own_rank(rec, own)
            return ComponentLock(component, self._own_member(rec), True, own.handle is handle,
                                 own.status, own.claimed_at_ms, own.expires_at_ms,
                                 None if rank == PENDING_RANK_MS else rank)
        # Another member's claim is shown from when the hub first carried it, whatever time
        # it wrote into its data.
        return ComponentLock(component, self._snapshot(rec).member_of(holder), False, False,
                             None, holder.claimed_at_ms, holder.expires_at_ms,
                             holder.claimed_at_ms)

    # ------------------------------------------------------------------ claims
    async def _claim(self, rec: _Record, handle: PresenceHandle,
                     component: str) -> ClaimOutcome:
        existing = rec.claims.get(component)
        if existing is not None:
            if existing.handle is handle:
                return ClaimOutcome(True, "offline" if existing.status == "offline"
                                    else "granted")
            return ClaimOutcome(False, "elsewhere", self._own_member(rec))
        if self.live and not rec.synced.is_set():
            # Just joined: learn who is here (and what they claim) before claiming.
            with contextlib.suppress(TimeoutError):
                await wait_for(self._timer, rec.synced.wait(), self._claim_timeout_s)
            if handle.closed:
                return ClaimOutcome(False, "closed")
            if rec.claims.get(component) is not None:
                return await self._claim(rec, handle, component)  # another window was quicker
        holder, _ = self._holder(rec, component)
        if holder is not None:
            return ClaimOutcome(False, "taken", self._snapshot(rec).member_of(holder))
        now = self._now_ms()
        idle_ms = int(self.lock_idle_s * 1000)
        claim = _OwnClaim(component, handle, now, now + idle_ms, now)
        # The claim's format is checked before anything is sent (PresenceDataError).
        Claim(component, claim.claimed_at_ms, claim.expires_at_ms)
        rec.claims[component] = claim
        rec.dirty.set()
        self._ws.bus.publish(PresenceChanged(rec.channel))
        if not self.live or rec.lease is None:
            claim.status = "offline"
            return ClaimOutcome(True, "offline")
        try:
            await wait_for(self._timer, claim.echoed.wait(), self._claim_timeout_s)
            # A claim the hub broadcast just after ours may already be on its way.
            await self._timer.sleep(self._settle_s)
        except TimeoutError:
            if rec.claims.get(component) is claim:
                claim.status = "offline"
                return ClaimOutcome(True, "offline")
        except asyncio.CancelledError:
            if rec.claims.get(component) is claim:
                self._drop_claim(rec, claim)
            raise
        if rec.claims.get(component) is not claim:
            return ClaimOutcome(False, "closed")
        holder, mine = self._holder(rec, component)
        if mine:
            claim.status = "held"
            self._ws.bus.publish(PresenceChanged(rec.channel))
            return ClaimOutcome(True, "granted")
        self._drop_claim(rec, claim)
        return ClaimOutcome(False, "taken", self._snapshot(rec).member_of(holder))

    def _release(self, rec: _Record, handle: PresenceHandle, component: str) -> None:
        claim = rec.claims.get(component)
        if claim is not None and claim.handle is handle:
            self._drop_claim(rec, claim)

    def _touch(self, rec: _Record, handle: PresenceHandle, component: str) -> None:
        claim = rec.claims.get(component)
        if claim is not None and claim.handle is handle:
            claim.last_input_ms = self._now_ms()

    def _drop_claim(self, rec: _Record, claim: _OwnClaim) -> None:
        if rec.claims.get(claim.component) is claim:
            del rec.claims[claim.component]
            rec.dirty.set()
            self._ws.bus.publish(PresenceChanged(rec.channel))

    def _end_claim(self, rec: _Record, claim: _OwnClaim, reason: LockEndReason) -> None:
        """A claim ends without the user asking: withdraw it and tell the editor."""
        log.info("edit lock ended: %s", reason)
        self._drop_claim(rec, claim)
        self._ws.bus.publish(EditLockEnded(rec.channel, claim.component, reason))

    def _check_taken(self, rec: _Record) -> None:
        for claim in list(rec.claims.values()):
            if claim.status == "pending":
                continue  # `_claim` decides once the echo and the settle time are in
            _, mine = self._holder(rec, claim.component)
            if not mine:
                self._end_claim(rec, claim, "taken")

    # ------------------------------------------------------------------ time
    async def _tick_loop(self) -> None:
        while True:
            await self._timer.sleep(self._tick_s)
            self._tick()

    def _tick(self) -> None:
        now = self._now_ms()
        idle_ms = int(self.lock_idle_s * 1000)
        status = self._ws.status
        down_since = status.realtime_down_since
        link_gone = (status.realtime is not RealtimeState.CONNECTED and down_since is not None
                     and self._timer.monotonic() - down_since >= self.lock_disconnect_s)
        for rec in list(self._records.values()):
            for claim in list(rec.claims.values()):
                if link_gone and claim.status == "held":
                    self._end_claim(rec, claim, "disconnected")
                elif now >= claim.expires_at_ms:
                    self._end_claim(rec, claim, "idle")
                elif (claim.last_input_ms + idle_ms > claim.expires_at_ms
                      and claim.expires_at_ms - now <= idle_ms * (1 - LOCK_RENEW_FRACTION)):
                    # Renew the announced expiry from the last input (both sides expire the
                    # claim at the same announced time).
                    claim.expires_at_ms = claim.last_input_ms + idle_ms
                    rec.dirty.set()
            # Another workstation's claim reaching its announced expiry changes the lock
            # without any presence event: windows must repaint.
            snap = self._snapshot(rec)
            expiry = snap.next_expiry_ms(rec.expiry_seen_ms or 0)
            if expiry is not None and now >= expiry:
                rec.expiry_seen_ms = expiry
                self._ws.bus.publish(PresenceChanged(rec.channel))


def identity_from_tokens(tokens: Any, role: str | None = None) -> ClinicianIdentity:
    """The presence identity of a signed-in `TokenSet`: `practitioner_id` (from `fhirUser`)
    and the display name; the role is `role`, else `tokens.extra["role"]`, else the name's
    title (SMART 2.0 token responses carry no role claim)."""
    extra = getattr(tokens, "extra", None) or {}
    given = role or (extra.get("role") if isinstance(extra.get("role"), str) else None)
    return ClinicianIdentity.for_user(getattr(tokens, "practitioner_id", None),
                                      str(getattr(tokens, "display_name", "") or ""), given)


__all__ = [
    "ClaimOutcome", "ComponentLock", "PresenceHandle", "PresenceService",
    "identity_from_tokens",
]
