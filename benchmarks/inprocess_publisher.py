"""The sandbox's former in-process poke publisher, kept as a benchmark baseline only.

Before the WardSync relay (docs/relay.md), the sandbox published pokes from a hook on its own
FHIR store: every committed write became one poke on `ward:<id>`, numbered with a per-channel
`seq` and published in batches through the real Ably REST client, all inside the sandbox's
process and event loop — no Subscription notification, no FHIR read, no ward lookup, no
durable numbering per version. The product no longer has it; `benchmarks.relay_path` runs it
(`benchmarks.baseline_sandbox`) beside the relay so the relay's share of the commit → poke
time is measured against it in the same run.

This is that publisher as it was (same batching, same retry), minus nothing that changes
timing. It is not part of the `wardsync` package and must not become one: the relay is the
only publisher the product ships. Type rules come from `core.poke_rules`, shared with the
relay, so both announce a change the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from ably import AblyRest
from ably.types.message import Message
from ably.util.exceptions import AblyException

from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit
from wardsync.core.poke_rules import (
    classify_change,
    is_released_report,
    patient_id_of,
    report_result_refs,
)
from wardsync.core.pokes import POKE_RESOURCE_TYPES, RESOURCE_CHANGED, ROUTINE, Poke, poke_to_dict
from wardsync.core.tasks import TaskOwner
from wardsync.sandbox.fhir.store import FhirStore, ResourceChange

log = logging.getLogger(__name__)

POKE_MESSAGE_NAME = "poke"
PUBLISH_BATCH_MAX = 100  # pokes per REST publish
QUEUE_LIMIT = 20_000  # pokes waiting for the hub; older ones are dropped beyond this
RETRY_INITIAL_S = 0.25
RETRY_CAP_S = 2.0  # a restarted hub gets pokes again within 2 s


class PokeClassifier:
    """Decides a change's poke type and priority (reads report results from the store)."""

    def __init__(self, store: FhirStore,
                 limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS) -> None:
        self._store = store
        self._limits = limits

    def __call__(self, change: ResourceChange) -> tuple[str, str]:
        if change.deleted:  # the body is the last version's: a delete releases nothing
            return RESOURCE_CHANGED, ROUTINE
        results: dict[str, dict[str, Any]] = {}
        if is_released_report(change.resource):
            for ref in report_result_refs(change.resource):
                with contextlib.suppress(LookupError):
                    results[ref] = self._store.read("Observation", ref.split("/", 1)[1])
        return classify_change(change.resource, results, self._limits)


class SeqFile:
    """The channel's sequence high-water mark, kept in the data dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.saved = int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            self.saved = 0

    def save(self, seq: int) -> None:
        if seq > self.saved:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(str(seq))
            tmp.replace(self.path)
            self.saved = seq


class InProcessPokePublisher:
    """Listens to FHIR commits and publishes pokes in order, retrying while the hub is down.

    Sequence numbers are assigned when a write commits and the high-water mark is saved before
    a batch is published; pokes dropped because the queue overflowed leave a gap that clients
    detect and catch up on.
    """

    def __init__(
        self,
        *,
        store: FhirStore,
        ward: str,
        key: str,
        hub_host: str,
        hub_port: Callable[[], int],
        seq_file: Path,
        use_binary_protocol: bool = True,
    ) -> None:
        self.channel_name = f"ward:{ward}"
        self._key = key
        self._hub_host = hub_host
        self._hub_port = hub_port
        self._use_binary = use_binary_protocol
        self._classify = PokeClassifier(store)
        self._seq = SeqFile(seq_file)
        self._next_seq = self._seq.saved + 1
        self._queue: deque[Poke] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = TaskOwner("in-process poke publisher", logger=log)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._rest: AblyRest | None = None
        self._rest_port: int | None = None
        self.published = 0
        self.dropped = 0
        self.failures = 0
        self._remove_listener = store.add_listener(self.on_change)

    # ------------------------------------------------------------------ intake
    def on_change(self, change: ResourceChange) -> None:
        """FhirStore listener, called right after commit in the writer's thread (the
        sandbox's FHIR API writes on the event loop; anything else hops onto it)."""
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.on_change, change)
            return
        if change.resource_type not in POKE_RESOURCE_TYPES:
            return
        ptype, priority = self._classify(change)
        poke = Poke(
            type=ptype, resource_type=change.resource_type, id=change.id,
            version_id=change.version_id, patient_id=patient_id_of(change.resource),
            seq=self._next_seq, priority=priority,
        )
        self._next_seq += 1
        self._queue.append(poke)
        if len(self._queue) > QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._idle.clear()
        self._wake.set()

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        self._tasks.spawn(self._run(), name="in-process poke publisher")

    async def stop(self) -> None:
        self._remove_listener()
        await self._tasks.aclose()
        await self._close_rest()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued poke was published; raises TimeoutError."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    # ------------------------------------------------------------------ publishing
    def _client(self) -> AblyRest:
        port = self._hub_port()
        if self._rest is None or self._rest_port != port:
            # REST-only client: host without the port, port separately
            # (docs/realtime-protocol.md §1).
            self._rest = AblyRest(
                key=self._key, use_token_auth=True, endpoint=self._hub_host, port=port,
                tls=False, use_binary_protocol=self._use_binary,
            )
            self._rest_port = port
        return self._rest

    async def _close_rest(self) -> None:
        if self._rest is not None:
            await self._rest.close()
            self._rest = None

    async def _run(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue[i] for i in range(min(PUBLISH_BATCH_MAX, len(self._queue)))]
            self._seq.save(batch[-1].seq)
            try:
                channel = self._client().channels.get(self.channel_name)
                await channel.publish(
                    [Message(name=POKE_MESSAGE_NAME, data=poke_to_dict(p)) for p in batch]
                )
            except (AblyException, httpx.HTTPError, OSError) as exc:
                # Hub down or restarting: keep the batch, in order, and retry with backoff.
                self.failures += 1
                log.warning("poke publish failed (%s); retrying in %.2f s",
                            type(exc).__name__, delay)
                await self._close_rest()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_S)
                continue
            delay = RETRY_INITIAL_S
            for _ in batch:
                if self._queue and self._queue[0].seq <= batch[-1].seq:
                    self._queue.popleft()
            self.published += len(batch)
            if not self._queue:
                self._idle.set()
