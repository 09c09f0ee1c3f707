"""Pull loops: one single-flight loop per open query key (Replicache's ConnectionLoop pattern).

A poke only marks a key dirty. The key's loop waits a short debounce so a burst coalesces, then
pulls; pokes that arrive during a pull schedule exactly one more pull. Errors back off
exponentially up to a cap. Urgent keys (critical results) skip the debounce and go to the front
of the queue for the limited pull slots. Pulls are incremental: each search remembers the newest
`meta.lastUpdated` it has seen and asks only for resources updated after it (R4 search.html
`_lastUpdated`), so a catch-up after a reconnect is the same operation as a normal pull.
Results are applied to the ResourceStore, which keeps only newer versions, so late or reordered
replies are harmless.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from wardsync.core.backoff import Backoff
from wardsync.core.clock import Clock, SystemClock
from wardsync.core.events import QueryStateChanged
from wardsync.core.metrics import MetricsSink, NullMetrics
from wardsync.core.queries import QueryKey
from wardsync.core.store import ResourceStore
from wardsync.fhir.client import InvalidEntry, SearchResult
from wardsync.fhir.errors import FhirError

log = logging.getLogger(__name__)

PULL_DEBOUNCE_S = 0.05
MAX_CONCURRENT_PULLS = 4
SEARCH_PAGE_SIZE = 200
# Servers may make a write visible a little after stamping its lastUpdated; asking again for
# this much before the cursor costs a few repeated resources, which the store ignores.
CURSOR_OVERLAP_S = 1.0


class Fetcher(Protocol):
    async def search(self, resource_type: str, params: Any) -> SearchResult: ...


Sleep = Callable[[float], Awaitable[None]]


class PriorityGate:
    """At most `limit` pulls run at once; waiting urgent pulls are admitted first."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._active = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, urgent: bool) -> None:
        if self._active < self._limit and not self._waiters:
            self._active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (0 if urgent else 1, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # admitted just as we were cancelled: pass the slot on
            raise

    def release(self) -> None:
        self._active -= 1
        while self._waiters and self._active < self._limit:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self._active += 1
                fut.set_result(None)


@dataclass
class QueryState:
    """What the Diagnostics inspector and the panels know about one open query."""

    key: QueryKey
    status: str = "loading"  # loading | ok | error
    pulls: int = 0
    failures: int = 0
    last_ok_wall: float | None = None
    last_error: str = ""
    user_message: str = ""
    loading_since: float | None = None
    invalid: list[InvalidEntry] = field(default_factory=list)
    cursors: dict[int, datetime] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)


def _last_updated(resource: Mapping[str, Any]) -> datetime | None:
    raw = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _instant(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


class PullLoop:
    """The single-flight loop of one key."""

    def __init__(
        self, key: QueryKey, owner: QueryCache, *, incremental: bool = True
    ) -> None:
        self.key = key
        self.state = QueryState(key)
        self._owner = owner
        self._incremental = incremental
        self._dirty = asyncio.Event()
        self._urgent = False
        self.leases = 0

    def request(self, *, urgent: bool = False) -> None:
        self._urgent = self._urgent or urgent
        self._dirty.set()

    async def run(self) -> None:
        o = self._owner
        attempt = 0
        while True:
            await self._dirty.wait()
            if not self._urgent and o.debounce_s > 0:
                await o.sleep(o.debounce_s)  # let a burst of pokes coalesce into one pull
            urgent, self._urgent = self._urgent, False
            self._dirty.clear()
            await o.gate.acquire(urgent)
            try:
                await self._pull_once(urgent)
            except FhirError as exc:
                attempt += 1
                self._failed(exc)
                o.report(exc)
                self._urgent = self._urgent or urgent
                self._dirty.set()  # the data is still stale: try again after the backoff
                delay = o.backoff.delay(attempt - 1)
            except Exception as exc:
                # A bug must not end this key's freshness for good: log it, back off, retry.
                log.exception("pull %s failed unexpectedly", self.key.label())
                attempt += 1
                self._failed(FhirError(f"unexpected {type(exc).__name__}"))
                self._dirty.set()
                delay = o.backoff.delay(attempt - 1)
            else:
                attempt = 0
                delay = 0.0
                o.report(None)
            finally:
                o.gate.release()
            if delay:
                await o.sleep(delay)

    async def _pull_once(self, urgent: bool) -> None:
        o = self._owner
        st = self.state
        st.pulls += 1
        if st.loading_since is None:
            st.loading_since = o.clock.monotonic()
            o.publish_state(self)
        collected: list[dict] = []
        invalid: list[InvalidEntry] = []
        new_cursors: dict[int, datetime] = {}
        for i, search in enumerate(self.key.searches()):
            params = search.with_params(("_count", str(SEARCH_PAGE_SIZE)))
            cursor = st.cursors.get(i) if self._incremental else None
            if cursor is not None:
                since = cursor - timedelta(seconds=o.overlap_s)
                params.append(("_lastUpdated", f"gt{_instant(since)}"))
            result = await o.fetcher.search(search.resource_type, params)
            collected.extend(result.resources)
            invalid.extend(result.invalid)
            stamps = [t for t in map(_last_updated, result.matches) if t is not None]
            if stamps:
                new_cursors[i] = max(stamps + ([cursor] if cursor else []))
        # Re-check after the awaits: a key closed meanwhile must not touch shared state.
        if self._owner.closed or self.leases <= 0:
            return
        st.cursors.update(new_cursors)
        changed = o.store.apply(collected, urgent=urgent)
        st.refs.update(f"{r.get('resourceType')}/{r.get('id')}" for r in collected)
        st.invalid = [*(e for e in st.invalid if e.ref not in {i.ref for i in invalid}), *invalid]
        for ref in changed:
            o.metrics.emit(
                "pull_done", ref=ref, versionId=o.store.version(ref), key=self.key.label(),
                urgent=urgent,
            )
        st.status = "ok"
        st.last_ok_wall = o.clock.wall()
        st.last_error = st.user_message = ""
        st.loading_since = None
        o.publish_state(self)

    def _failed(self, exc: FhirError) -> None:
        st = self.state
        st.failures += 1
        st.status = "error"
        st.last_error = str(exc)
        st.user_message = exc.user_message
        st.loading_since = None
        log.warning("pull %s failed: %s", self.key.label(), exc)
        self._owner.publish_state(self)


class QueryLease:
    """A panel's claim on a query key; closing the last lease stops its pull loop."""

    def __init__(self, cache: QueryCache, key: QueryKey) -> None:
        self._cache = cache
        self.key = key
        self._closed = False

    @property
    def state(self) -> QueryState:
        return self._cache.state(self.key)

    def refresh(self, *, urgent: bool = False) -> None:
        self._cache.invalidate([self.key], urgent=urgent)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cache.release(self.key)


class QueryCache:
    """Open queries and their pull loops. Every loop task is owned here and cancelled on close."""

    def __init__(
        self,
        fetcher: Fetcher,
        store: ResourceStore,
        *,
        publish: Callable[[object], None] | None = None,
        on_pull_result: Callable[[FhirError | None], None] | None = None,
        clock: Clock | None = None,
        metrics: MetricsSink | None = None,
        backoff: Backoff | None = None,
        debounce_s: float = PULL_DEBOUNCE_S,
        max_concurrent: int = MAX_CONCURRENT_PULLS,
        overlap_s: float = CURSOR_OVERLAP_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.fetcher = fetcher
        self.store = store
        self._publish = publish
        self._on_pull_result = on_pull_result
        self.clock = clock or SystemClock()
        self.metrics = metrics or NullMetrics()
        self.backoff = backoff or Backoff(initial_s=0.5, factor=2.0, cap_s=30.0)
        self.debounce_s = debounce_s
        self.overlap_s = overlap_s
        self.sleep = sleep
        self.gate = PriorityGate(max_concurrent)
        self._loops: dict[QueryKey, PullLoop] = {}
        self._tasks: dict[QueryKey, asyncio.Task[None]] = {}
        self.closed = False

    # ------------------------------------------------------------------ leases
    def open(self, key: QueryKey, *, urgent: bool = False) -> QueryLease:
        """Open (or share) `key`; the first lease triggers the initial full pull."""
        if self.closed:
            raise RuntimeError("query cache is closed")
        loop = self._loops.get(key)
        if loop is None:
            loop = PullLoop(key, self, incremental=getattr(key, "incremental", True))
            self._loops[key] = loop
            self._tasks[key] = asyncio.get_running_loop().create_task(
                loop.run(), name=f"pull {key.label()}"
            )
            loop.request(urgent=urgent)
        loop.leases += 1
        return QueryLease(self, key)

    def release(self, key: QueryKey) -> None:
        loop = self._loops.get(key)
        if loop is None:
            return
        loop.leases -= 1
        if loop.leases <= 0:
            del self._loops[key]
            self._tasks.pop(key).cancel()

    # ------------------------------------------------------------------ invalidation
    def invalidate(self, keys: Iterable[QueryKey], *, urgent: bool = False) -> int:
        n = 0
        for key in keys:
            loop = self._loops.get(key)
            if loop is not None:
                loop.request(urgent=urgent)
                n += 1
        return n

    def invalidate_matching(self, poke: Any, *, urgent: bool = False) -> int:
        """Mark every open key that `poke` touches dirty; returns how many."""
        return self.invalidate((k for k in self._loops if k.touched_by(poke)), urgent=urgent)

    def invalidate_all(self) -> int:
        """Catch-up: pull every open key (incrementally) now."""
        return self.invalidate(list(self._loops))

    # ------------------------------------------------------------------ inspection
    def state(self, key: QueryKey) -> QueryState:
        return self._loops[key].state

    def states(self) -> Sequence[QueryState]:
        return [loop.state for loop in self._loops.values()]

    @property
    def keys(self) -> list[QueryKey]:
        return list(self._loops)

    def report(self, error: FhirError | None) -> None:
        if self._on_pull_result is not None:
            self._on_pull_result(error)

    def publish_state(self, loop: PullLoop) -> None:
        if self._publish is not None:
            st = loop.state
            self._publish(
                QueryStateChanged(key=loop.key.label(), state=st.status, error=st.user_message)
            )

    async def aclose(self) -> None:
        self.closed = True
        tasks = list(self._tasks.values())
        self._loops.clear()
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
