"""Publishes numbered pokes on `ward:<id>` through the real Ably REST API (`ably` SDK).

Per ward, one publish is in flight at a time and pokes go out in seq order. A publish carries
every poke that queued while the previous one was in flight (up to MAX_POKES_PER_PUBLISH), so
a burst costs a couple of round trips instead of one per poke and reaches workstations in
one frame (their pulls coalesce), while a lone poke goes out at once. Ably's rules for ids in
a multi-message publish (`<base>:<index>`, one base) would tie a version's id to its
neighbours', so the ids of each publish are recorded with its pokes before it is sent
(`RelayStore.assign_wire_ids`): a publish repeated after a failure, a crash or a takeover
carries the same ids, and Ably and the sandbox hub acknowledge a repeated id within two
minutes without delivering it again (idempotent publishing). At most `max_per_s` messages go
out in any one-second window (under Ably's 50 messages/s per channel limit), and a publish
the hub could not take is retried with capped backoff until it is acknowledged: pokes are
only ever skipped when the hub refuses them for good (a 4xx other than auth or rate
limiting), which leaves a seq gap clients catch up on.

Heartbeats (`heartbeat_s`, core/heartbeats.py): every ward channel the relay serves (every
ward in the store's `ward_seq`, the configured `wards`, any ward a poke is queued for, any
ward a workstation asked this relay a realtime token for: `watch_ward`) gets
a `heartbeat` message every `heartbeat_s`, the first as soon as the relay starts leading,
idle wards included. It goes out from the ward's own publish loop once the pokes queued
before it are out (a poke never waits for a heartbeat), so its `seq` (the highest seq
settled on the ward: acknowledged, or refused for good) never names a poke before the hub
acknowledged it; it counts against the per-channel rate like a
poke, is sent only through the fence and only while `vouch()` says the relay's view of the
FHIR server is current (a relay cut off from it goes quiet, and workstations say so), and a
failed heartbeat is not retried: the next is due `heartbeat_s` later.

`fence` (the leader lease, lease.py) is asked before every publish: a relay that is not
certainly the leader publishes nothing; `suspend` drops the queues when the lease is lost
(what they held stays pending in the store for whoever leads next).

The REST client uses token auth with the key (`use_token_auth`), so the key's secret never
crosses the network (docs/realtime-protocol.md §1: over plain HTTP the SDK refuses Basic auth).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from ably import AblyRest
from ably.types.message import Message
from ably.util.exceptions import AblyException

from wardsync.core.backoff import Backoff
from wardsync.core.heartbeats import (
    HEARTBEAT_MESSAGE_NAME,
    POKE_MESSAGE_NAME,
    Heartbeat,
    heartbeat_to_dict,
)
from wardsync.core.pokes import Poke, poke_to_dict
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.state import ABANDONED, PUBLISHED, RelayStore, StoredPoke

log = logging.getLogger(__name__)

# Ably limits a channel to 50 messages/s; stay well under it.
MAX_POKES_PER_S_PER_CHANNEL = 40.0
# Pokes in one publish: what queued while the previous publish was in flight, up to this many
# (a poke is ~250 bytes of JSON; Ably's limit is 64 KiB per publish).
MAX_POKES_PER_PUBLISH = 20
RETRY_INITIAL_S = 0.25
RETRY_CAP_S = 5.0
RELAY_CLIENT_ID = "wardsync-relay"
FENCE_RECHECK_S = 0.5
# A heartbeat held back because the relay cannot vouch for the channel is tried again this
# soon (so heartbeats resume promptly once it can).
VOUCH_RECHECK_S = 1.0
# Wards learnt from token exchanges are remembered up to this many (memory bound).
MAX_WATCHED_WARDS = 10_000


@dataclass(frozen=True, slots=True)
class HubAddress:
    """Where the Ably REST API is: Ably itself, or a compatible hub on loopback."""

    host: str
    port: int | None = None
    tls: bool = True

    @classmethod
    def parse(cls, endpoint: str, *, tls: bool | None = None) -> HubAddress:
        """`HOST[:PORT]`; without TLS only when asked or on loopback."""
        host, colon, port = endpoint.rpartition(":")
        if not colon or not port.isdigit():
            host, port = endpoint, ""
        if not host:
            raise ValueError(f"not an Ably endpoint (HOST[:PORT]): {endpoint!r}")
        if tls is None:
            tls = host not in ("127.0.0.1", "::1", "localhost")
        return cls(host=host, port=int(port) if port else None, tls=tls)


def _retryable(exc: AblyException) -> bool:
    """Worth retrying: the hub is down or busy, or our token needs renewing (RSA4b)."""
    status = exc.status_code or 0
    code = exc.code or 0
    return status >= 500 or status in (408, 429) or 40140 <= code < 40150 or status == 0


class _WardQueue:
    def __init__(self, window: int, *, acked: int, heartbeat_at: float) -> None:
        self.items: deque[StoredPoke] = deque()
        self.wake = asyncio.Event()
        self.sent: deque[float] = deque(maxlen=window)  # the last `window` publish times
        self.acked = acked  # highest seq settled on the ward (acknowledged or refused)
        self.heartbeat_at = heartbeat_at  # monotonic time the next heartbeat is due


class PokePublisher:
    """Numbers pokes durably (`RelayState`) and publishes them per ward, in order."""

    def __init__(
        self,
        *,
        state: RelayStore,
        key: str,
        hub: HubAddress,
        metrics: RelayMetrics,
        timer: Timer = SYSTEM_TIMER,
        backoff: Backoff | None = None,
        max_per_s: float = MAX_POKES_PER_S_PER_CHANNEL,
        use_binary_protocol: bool = True,
        fence: Callable[[], bool] | None = None,
        heartbeat_s: float | None = None,
        wards: Iterable[str] = (),
        vouch: Callable[[], bool] | None = None,
    ) -> None:
        if max_per_s <= 0:
            raise ValueError("max_per_s must be positive")
        if heartbeat_s is not None and heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive (None: no heartbeats)")
        self._heartbeat_s = heartbeat_s
        self._wards = set(wards)
        self._vouch = vouch
        self._started = False
        self._state = state
        self._metrics = metrics
        self._timer = timer
        self._backoff = backoff or Backoff(RETRY_INITIAL_S, cap_s=RETRY_CAP_S)
        self._max_per_window = max(1, int(max_per_s))
        self._fence = fence
        # REST-only client: the host alone as endpoint, the port separately
        # (docs/realtime-protocol.md §1).
        kwargs: dict[str, Any] = {}
        if hub.port is not None:
            kwargs["tls_port" if hub.tls else "port"] = hub.port
        self.ably = AblyRest(
            key=key, use_token_auth=True, endpoint=hub.host, tls=hub.tls,
            client_id=RELAY_CLIENT_ID, use_binary_protocol=use_binary_protocol, **kwargs,
        )
        self._queues: dict[str, _WardQueue] = {}
        self._tasks = TaskOwner("poke publisher", logger=log)
        self._idle = asyncio.Event()
        self._idle.set()
        self._changed_at: dict[str, float] = {}
        self.published = 0
        self.heartbeats_sent = 0

    # ------------------------------------------------------------------ intake
    def start(self) -> int:
        """Queue what a previous run numbered but never saw acknowledged; returns how many."""
        self._started = True
        pending = self._state.pending()
        for stored in pending:
            self._enqueue(stored)
        if pending:
            log.info("republishing %d poke(s) left pending by the previous run", len(pending))
        if self._heartbeat_s is not None:
            # Idle wards get heartbeats too: every ward ever numbered, and the configured ones.
            known = {ward: 0 for ward in self._wards}
            known.update(self._state.wards())
            for ward, last_seq in sorted(known.items()):
                if ward not in self._queues:
                    self._open_queue(ward, acked=last_seq)
        return len(pending)

    def submit(self, ward: str, draft: Poke, *, changed_at: float | None = None) -> StoredPoke:
        """Number `draft` on `ward` (durably) and queue it; a version already numbered is
        returned as it was and not queued again."""
        stored, new = self._state.number(ward, draft)
        if new:
            if changed_at is not None:
                self._changed_at[stored.message_id] = changed_at
            self._enqueue(stored)
        return stored

    def watch_ward(self, ward: str) -> None:
        """A workstation of `ward` is about to listen (its realtime token was issued): give
        the ward's channel heartbeats from now on, even before its first poke."""
        if self._heartbeat_s is None or ward in self._wards:
            return
        if len(self._wards) >= MAX_WATCHED_WARDS:
            return
        self._wards.add(ward)
        try:
            self._state.remember_ward(ward)  # so the next start (or leader) knows it too
        except (sqlite3.Error, ConnectionError) as exc:
            log.warning("could not record ward %s for heartbeats (%s)", ward,
                        type(exc).__name__)
        if self._started and ward not in self._queues:
            # No queue means nothing pending here: the ward's last seq is settled.
            self._open_queue(ward, acked=self._state.last_seq(ward))

    def _open_queue(self, ward: str, *, acked: int) -> _WardQueue:
        queue = self._queues[ward] = _WardQueue(
            self._max_per_window, acked=acked, heartbeat_at=self._timer.monotonic())
        self._tasks.spawn(self._run(ward, queue), name=f"publish ward:{ward}")
        return queue

    def _enqueue(self, stored: StoredPoke) -> None:
        queue = self._queues.get(stored.ward)
        if queue is None:
            # Every pending poke of the ward is queued in seq order (start(), or nothing
            # was pending): everything below the first one is settled.
            queue = self._open_queue(stored.ward, acked=stored.poke.seq - 1)
        queue.items.append(stored)
        queue.wake.set()
        self._idle.clear()
        self._metrics.pokes_pending.set(self.pending)

    @property
    def pending(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    # ------------------------------------------------------------------ lifetime
    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued poke is acknowledged; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def suspend(self) -> None:
        """Stop publishing and forget the queues (the lease was lost); the pokes stay
        pending in the store. `start()` resumes from the store."""
        await self._tasks.cancel_all()
        self._started = False
        self._queues.clear()
        self._changed_at.clear()
        self._idle.set()
        self._metrics.pokes_pending.set(0)

    async def aclose(self) -> None:
        await self._tasks.aclose()
        await self.ably.close()

    # ------------------------------------------------------------------ publishing
    async def _run(self, ward: str, queue: _WardQueue) -> None:
        channel = self.ably.channels.get(f"ward:{ward}")
        attempt = 0
        while True:
            # A due heartbeat waits for the pokes queued before it (they are signs of life
            # themselves, and a poke is never held up by a heartbeat's round trip).
            if (self._heartbeat_s is not None and not queue.items
                    and self._timer.monotonic() >= queue.heartbeat_at):
                await self._heartbeat(ward, queue, channel, self._heartbeat_s)
                continue
            if not queue.items:
                queue.wake.clear()
                if not any(q.items for q in self._queues.values()):
                    self._idle.set()
                alarm = None
                if self._heartbeat_s is not None:
                    alarm = self._timer.call_later(
                        queue.heartbeat_at - self._timer.monotonic(), queue.wake.set)
                try:
                    await queue.wake.wait()
                finally:
                    if alarm is not None:
                        alarm.cancel()
                continue
            # At most `max_per_s` messages in any one-second window (Ably counts messages
            # per channel per second): a burst goes out at once, a flood at the limit.
            allowance = await self._allowance(queue)
            if self._fence is not None and not self._fence():
                # Not certainly the leader: publish nothing until the lease is confirmed
                # (or the relay suspends this publisher).
                await self._timer.sleep(FENCE_RECHECK_S)
                continue
            batch = self._next_publish(ward, queue, allowance)
            if not batch:
                continue
            now = self._timer.monotonic()
            queue.sent.extend([now] * len(batch))
            try:
                await channel.publish(messages=[
                    Message(name=POKE_MESSAGE_NAME, data=poke_to_dict(s.poke), id=s.wire_id)
                    for s in batch
                ])
            except AblyException as exc:
                if not _retryable(exc):
                    log.error("hub refused pokes seq %d-%d on ward:%s for good (%s %s); "
                              "skipped", batch[0].poke.seq, batch[-1].poke.seq, ward,
                              exc.status_code, exc.code)
                    self._state.mark_many([s.message_id for s in batch], ABANDONED)
                    self._metrics.pokes_abandoned.inc(len(batch))
                    self._done(queue, len(batch))
                    attempt = 0
                    continue
                attempt = await self._retry_later(ward, attempt, f"{exc.status_code} {exc.code}")
                continue
            except (httpx.HTTPError, OSError) as exc:
                attempt = await self._retry_later(ward, attempt, type(exc).__name__)
                continue
            attempt = 0
            self._state.mark_many([s.message_id for s in batch], PUBLISHED)
            self.published += len(batch)
            acked_at = self._timer.wall()
            for stored in batch:
                self._metrics.pokes_published.labels(stored.poke.type).inc()
                changed_at = self._changed_at.pop(stored.message_id, None)
                if changed_at is not None:
                    self._metrics.lag.observe(max(0.0, acked_at - changed_at))
            self._done(queue, len(batch))

    async def _heartbeat(self, ward: str, queue: _WardQueue, channel: Any,
                         every_s: float) -> None:
        """Publish the ward's heartbeat now (between two publishes of its loop), or put it
        off while this relay is not certainly the leader or cannot vouch for the channel."""
        await self._allowance(queue)  # it counts against the channel's rate like a poke
        if self._fence is not None and not self._fence():
            await self._timer.sleep(FENCE_RECHECK_S)
            return
        now = self._timer.monotonic()
        if self._vouch is not None and not self._vouch():
            queue.heartbeat_at = now + VOUCH_RECHECK_S
            return
        queue.heartbeat_at += every_s
        if queue.heartbeat_at <= now:
            queue.heartbeat_at = now + every_s
        beat = Heartbeat(seq=queue.acked, at_ms=int(self._timer.wall() * 1000), every_s=every_s)
        queue.sent.append(now)
        try:
            await channel.publish(messages=[
                Message(name=HEARTBEAT_MESSAGE_NAME, data=heartbeat_to_dict(beat))])
        except AblyException as exc:
            self._metrics.ward_heartbeats.labels("failed").inc()
            log.warning("heartbeat on ward:%s failed (%s %s); the next is due in %.0f s",
                        ward, exc.status_code, exc.code, every_s)
            return
        except (httpx.HTTPError, OSError) as exc:
            self._metrics.ward_heartbeats.labels("failed").inc()
            log.warning("heartbeat on ward:%s failed (%s); the next is due in %.0f s",
                        ward, type(exc).__name__, every_s)
            return
        self.heartbeats_sent += 1
        self._metrics.ward_heartbeats.labels("sent").inc()

    async def _allowance(self, queue: _WardQueue) -> int:
        """How many messages may go now under the per-second limit, waiting for one at least."""
        sent = queue.sent
        while True:
            now = self._timer.monotonic()
            while sent and sent[0] <= now - 1.0:
                sent.popleft()
            allowance = self._max_per_window - len(sent)
            if allowance > 0:
                return allowance
            await self._timer.sleep(sent[0] + 1.0 - now)

    def _next_publish(self, ward: str, queue: _WardQueue, allowance: int) -> list[StoredPoke]:
        """The pokes of the next publish, from the head of the queue, with their Ably ids.

        A poke already given to a publish (one that failed, or was sent by a relay that
        stopped before the acknowledgement was recorded) goes out again in exactly that
        publish. Otherwise the publish takes the queue's head run of new pokes, as many as
        the limit allows (at most MAX_POKES_PER_PUBLISH), recorded before it is sent.
        """
        items = queue.items
        head = items[0]
        if head.wire_base is not None:
            base = head.wire_base
            return list(itertools.takewhile(lambda s: s.wire_base == base, items))
        fresh = list(itertools.islice(
            itertools.takewhile(lambda s: s.wire_id is None, items),
            min(allowance, MAX_POKES_PER_PUBLISH)))
        try:
            wire_ids = self._state.assign_wire_ids([s.message_id for s in fresh])
        except ValueError:
            # Another relay gave these pokes to a publish (the lease's overlap window):
            # take the ward's queue as the store has it now.
            log.warning("pokes on ward:%s were given to a publish elsewhere; reloading", ward)
            items.clear()
            items.extend(s for s in self._state.pending() if s.ward == ward)
            return []
        batch = [replace(s, wire_id=w) for s, w in zip(fresh, wire_ids, strict=True)]
        for _ in batch:
            items.popleft()
        items.extendleft(reversed(batch))
        return batch

    def _done(self, queue: _WardQueue, count: int) -> None:
        for _ in range(count):
            stored = queue.items.popleft()
            queue.acked = max(queue.acked, stored.poke.seq)
            self._changed_at.pop(stored.message_id, None)
        self._metrics.pokes_pending.set(self.pending)

    async def _retry_later(self, ward: str, attempt: int, why: str) -> int:
        delay = self._backoff.delay(attempt)
        self._metrics.publish_failures.inc()
        log.warning("publish on ward:%s failed (%s); retrying in %.2f s", ward, why, delay)
        await self._timer.sleep(delay)
        return attempt + 1
