"""Pull loops: one single-flight loop per open query key (Replicache's ConnectionLoop pattern).

A poke only marks a key dirty. The key's loop waits a short debounce so a burst coalesces, then
pulls; pokes that arrive before the pull is admitted are answered by it, and pokes that arrive
during it schedule exactly one more. Errors back off exponentially up to a cap and the key keeps
retrying, each retry after exactly the backoff delay. Urgent requests (critical results) skip or
cut short the debounce and go to the front of the queue for the limited pull slots, even if the
key was already waiting there. Behind them, incremental pulls of keys already loaded go before
the cold first loads of other keys, so a change to what is on screen is not held up by the
start-up queue (docs/architecture.md §6). Pulls are incremental: each search remembers the newest
`meta.lastUpdated` of its matches and asks only for resources updated after it (R4 search.html
`_lastUpdated`), so a catch-up after a reconnect is the same operation as a normal pull; a
search marked `incremental=False` is pulled in full. A search never returns a deleted resource,
so a `RESOURCE_DELETED` poke makes the key's next pull ask for the named resource by id
(R4 search.html#_id): nothing back means it is gone, and it leaves the store. Results are
applied to the ResourceStore, which keeps only newer versions, so late or reordered replies are
harmless. Every wait (debounce, backoff) is on the cache's `Timer`, so the timeline tests
(tests/sync/test_pull_loop.py) run on fake time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from wardsync.core.backoff import Backoff
from wardsync.core.defaults import PULL_DEBOUNCE_S
from wardsync.core.events import Event, QueryStateChanged
from wardsync.core.fhirtime import effective_time, format_instant
from wardsync.core.metrics import MetricsSink, NullMetrics
from wardsync.core.pokes import RESOURCE_DELETED
from wardsync.core.queries import VITALS_WINDOW, QueryKey, Search
from wardsync.core.resources import last_updated as _last_updated
from wardsync.core.store import ResourceStore
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.client import InvalidEntry, SearchResult
from wardsync.fhir.errors import FhirError

log = logging.getLogger(__name__)

MAX_CONCURRENT_PULLS = 4
SEARCH_PAGE_SIZE = 200
# Servers may make a write visible a little after stamping its lastUpdated; asking again for
# this much before the cursor costs a few repeated resources, which the store ignores.
CURSOR_OVERLAP_S = 1.0
# A time-series key forgets readings that left its window at most this often (each check
# reads every held reading's time).
SERIES_PRUNE_EVERY_S = 60.0


class Fetcher(Protocol):
    async def search(
        self, resource_type: str, params: Any, *, known: Callable[[str, str], bool] | None = None
    ) -> SearchResult: ...


# Admission order at the pull gate: lower first.
URGENT, FRESH, COLD = 0, 1, 2


@dataclass(order=True)
class _Waiter:
    priority: int  # URGENT, FRESH or COLD; lowered to URGENT in place by `promote`
    order: int
    future: asyncio.Future[None] = field(compare=False)
    holder: object = field(compare=False, default=None)


class PriorityGate:
    """At most `limit` pulls run at once; waiting urgent pulls are admitted first, then the
    incremental pulls of loaded keys (`fresh`), then cold first loads.

    Waiters are admitted by priority, then in arrival order. A waiter cancelled in the queue
    leaves a cancelled future that `release` skips; one cancelled in the same turn as it was
    admitted hands its slot straight on. Either way no slot is leaked.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a pull gate needs at least one slot, got {limit}")
        self._limit = limit
        self._active = 0
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()

    @property
    def active(self) -> int:
        """Slots in use."""
        return self._active

    @property
    def waiting(self) -> int:
        """Pulls queued for a slot (cancelled ones not counted)."""
        return sum(1 for w in self._waiters if not w.future.done())

    async def acquire(self, urgent: bool, *, holder: object = None, fresh: bool = False) -> None:
        """Wait for a slot; `holder` names the request so `promote` can find it; `fresh` says
        the key is already loaded (its pull is incremental), which goes before cold loads."""
        if self._active < self._limit and not self._waiters:
            self._active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        priority = URGENT if urgent else FRESH if fresh else COLD
        heapq.heappush(self._waiters, _Waiter(priority, next(self._order), fut, holder))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # admitted just as we were cancelled: pass the slot on
            raise

    def promote(self, holder: object) -> bool:
        """Make `holder`'s queued request urgent (a critical poke came while it waited)."""
        for waiter in self._waiters:
            if waiter.holder is holder and waiter.priority and not waiter.future.done():
                waiter.priority = URGENT
                heapq.heapify(self._waiters)
                return True
        return False

    def release(self) -> None:
        self._active -= 1
        while self._waiters and self._active < self._limit:
            fut = heapq.heappop(self._waiters).future
            if not fut.done():
                self._active += 1
                fut.set_result(None)


@dataclass
class QueryState:
    """What the Diagnostics inspector and the panels know about one open query."""

    key: QueryKey
    status: Literal["loading", "ok", "error"] = "loading"
    pulls: int = 0
    failures: int = 0
    last_ok_wall: float | None = None
    last_error: str = ""
    user_message: str = ""
    loading_since: float | None = None
    invalid: list[InvalidEntry] = field(default_factory=list)
    cursors: dict[int, datetime] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)
    pruned_at: float | None = None  # monotonic time of the last time-window check


def _instant(dt: datetime) -> str:
    return format_instant(dt, "microseconds")


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
        self._urgent = asyncio.Event()  # an urgent pull is wanted (cuts the debounce short)
        # Indices of the key's searches the next pull runs; None: all of them.
        self._pending: set[int] | None = set()
        # Held resources a RESOURCE_DELETED poke named: the next pull checks each is gone.
        self._gone: set[str] = set()
        self._published: tuple[str, str] | None = None
        self.leases = 0

    @property
    def closed(self) -> bool:
        """True once the last lease is gone or the cache is closed."""
        return self._owner.closed or self.leases <= 0

    def request(self, *, urgent: bool = False, searches: Iterable[int] | None = None,
                gone: str | None = None) -> None:
        """Mark the key stale: one pull follows, however many requests come first. It runs
        the key's searches numbered in `searches` (all of them when None) of every request,
        and checks whether `gone` ("Type/id", said to be deleted) still exists."""
        if gone is not None:
            self._gone.add(gone)
        if searches is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.update(searches)
        if urgent:
            self._urgent.set()
            self._owner.gate.promote(self)
        self._dirty.set()

    async def run(self) -> None:
        o = self._owner
        attempt = 0
        retrying = False
        while not self.closed:
            await self._dirty.wait()
            if not retrying:  # after a backoff the burst has had time to gather already
                await self._debounce()
            urgent = self._urgent.is_set()
            # A key that has loaded once pulls only what changed: it goes before cold loads.
            await o.gate.acquire(urgent, holder=self, fresh=self.state.last_ok_wall is not None)
            wanted: set[int] | None = None  # all searches, should the pull fail at once
            gone: set[str] = set()
            try:
                # Everything requested until now is answered by this pull, whose request is
                # sent after this point; a request during the pull gets exactly one more.
                urgent = urgent or self._urgent.is_set()
                self._urgent.clear()
                self._dirty.clear()
                wanted, self._pending = self._pending, set()
                gone, self._gone = self._gone, set()
                await self._pull_once(urgent, wanted, gone)
            except FhirError as exc:
                error: FhirError | None = exc
            except Exception as exc:
                # A bug must not end this key's freshness for good: log it, back off, retry.
                log.exception("pull %s failed unexpectedly", self.key.label())
                error = FhirError(f"unexpected {type(exc).__name__}")
            else:
                error = None
            finally:
                o.gate.release()
            if self.closed:  # re-check after the awaits: a closed key reports nothing
                return
            if error is None:
                attempt, retrying = 0, False
                o.report(None)
                continue
            attempt += 1
            self._failed(error)
            o.report(error)
            # The data is still stale: pull again after the backoff, as urgently as before,
            # running what this pull was to run and whatever was asked for meanwhile.
            if urgent:
                self._urgent.set()
            self._pending = (None if wanted is None or self._pending is None
                             else self._pending | wanted)
            self._gone |= gone
            self._dirty.set()
            retrying = True
            await o.timer.sleep(o.backoff.delay(attempt - 1))

    async def _debounce(self) -> None:
        """Let a burst of pokes coalesce into one pull, unless an urgent pull is wanted."""
        o = self._owner
        if o.debounce_s <= 0 or self._urgent.is_set():
            return
        loop = asyncio.get_running_loop()
        label = self.key.label()
        window = loop.create_task(o.timer.sleep(o.debounce_s), name=f"pull {label}: debounce")
        urgent = loop.create_task(self._urgent.wait(), name=f"pull {label}: urgent wait")
        try:
            done, _ = await asyncio.wait((window, urgent), return_when=asyncio.FIRST_COMPLETED)
        finally:
            window.cancel()
            urgent.cancel()
            await asyncio.gather(window, urgent, return_exceptions=True)
        if window in done:
            window.result()  # surface a failing timer instead of hiding it

    async def _pull_once(self, urgent: bool, wanted: set[int] | None = None,
                         gone: set[str] | None = None) -> None:
        o = self._owner
        st = self.state
        st.pulls += 1
        if st.loading_since is None:
            st.loading_since = o.timer.monotonic()
            o.publish_state(self)
        collected: list[dict[str, Any]] = []
        invalid: list[InvalidEntry] = []
        new_cursors: dict[int, datetime] = {}
        cutoff = o.series_cutoff(self.key)
        for i, search in enumerate(o.searches(self.key, cutoff)):
            if wanted is not None and i not in wanted:
                continue
            params = search.with_params(("_count", str(SEARCH_PAGE_SIZE)))
            incremental = self._incremental and search.incremental
            if incremental:
                # Oldest change first: if paging stops early (page limit), the cursor covers
                # exactly what arrived and the next pull continues from there.
                params.append(("_sort", "_lastUpdated"))
            cursor = st.cursors.get(i) if incremental else None
            if cursor is not None:
                since = cursor - timedelta(seconds=o.overlap_s)
                params.append(("_lastUpdated", f"gt{_instant(since)}"))
            result = await o.fetcher.search(search.resource_type, params, known=o.holds)
            collected.extend(result.resources)
            invalid.extend(result.invalid)
            # R4 search.html#_lastUpdated filters the matches only, never `_include`d ones.
            stamps = [t for t in map(_last_updated, [*result.matches, *result.unchanged])
                      if t is not None]
            if incremental and stamps:
                new_cursors[i] = max(stamps + ([cursor] if cursor else []))
        deleted = await self._deleted(gone or set(), collected)
        # Re-check after the awaits: a key closed meanwhile must not touch shared state.
        if self.closed:
            return
        # All or nothing: cursors move only with the results they describe.
        st.cursors.update(new_cursors)
        if deleted:
            o.drop(deleted)
        # An urgent poke that arrived while this pull was in flight may be about what it
        # brought (a critical report written just before its search ran): deliver it as
        # urgent now; the urgent request still gets its own pull right after.
        urgent = urgent or self._urgent.is_set()
        changed = o.store.apply(collected, urgent=urgent)
        arrived = {f"{r.get('resourceType')}/{r.get('id')}" for r in collected}
        st.refs.update(arrived)
        if cutoff is not None:
            self._forget_before(cutoff)
        # An entry re-sent (now valid, or invalid again) replaces its old error row.
        resent = arrived | {e.ref for e in invalid}
        st.invalid = [*(e for e in st.invalid if e.ref not in resent), *invalid]
        for ref in changed:
            o.metrics.emit(
                "pull_done", ref=ref, versionId=o.store.version(ref), key=self.key.label(),
                urgent=urgent,
            )
        st.status = "ok"
        st.last_ok_wall = o.timer.wall()
        st.last_error = st.user_message = ""
        st.loading_since = None
        o.publish_state(self)

    async def _deleted(self, gone: set[str], collected: list[dict[str, Any]]) -> list[str]:
        """Which of `gone` (named by RESOURCE_DELETED pokes) are deleted on the server: held
        here, not brought by this pull, and not found by `_id`. A resource found is added to
        `collected` (created again since: the store keeps the newer version)."""
        o = self._owner
        brought = {f"{r.get('resourceType')}/{r.get('id')}" for r in collected}
        deleted: list[str] = []
        for ref in sorted(gone):
            if ref in brought or o.store.get(ref) is None:
                continue
            rtype, _, rid = ref.partition("/")
            result = await o.fetcher.search(rtype, [("_id", rid)], known=o.holds)
            if result.matches or result.unchanged or result.invalid:
                collected.extend(result.matches)
            else:
                deleted.append(ref)
        return deleted

    def _forget_before(self, cutoff: datetime) -> None:
        """Drop held readings of this time series that are older than `cutoff`."""
        o, st = self._owner, self.state
        now = o.timer.monotonic()
        if st.pruned_at is not None and now - st.pruned_at < SERIES_PRUNE_EVERY_S:
            return
        st.pruned_at = now
        expired = set()
        for ref in st.refs:
            held = o.store.get(ref)
            moment = effective_time(held) if held is not None else None
            if moment is not None and moment < cutoff:
                expired.add(ref)
        if expired:
            st.refs -= expired
            o.forget(expired)

    def _failed(self, exc: FhirError) -> None:
        st = self.state
        st.failures += 1
        st.status = "error"
        st.last_error = str(exc)
        st.user_message = exc.user_message
        st.loading_since = None
        log.warning("pull %s failed: %s", self.key.label(), exc)
        self._owner.publish_state(self)

    def state_changed(self) -> bool:
        """True (once) if the status or message differs from the last one published."""
        now = (self.state.status, self.state.user_message)
        if now == self._published:
            return False
        self._published = now
        return True


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
        publish: Callable[[Event], None] | None = None,
        on_pull_result: Callable[[FhirError | None], None] | None = None,
        timer: Timer | None = None,
        metrics: MetricsSink | None = None,
        backoff: Backoff | None = None,
        debounce_s: float = PULL_DEBOUNCE_S,
        max_concurrent: int = MAX_CONCURRENT_PULLS,
        overlap_s: float = CURSOR_OVERLAP_S,
        series_window: timedelta | None = VITALS_WINDOW,
    ) -> None:
        self.fetcher = fetcher
        self.store = store
        self._publish = publish
        self._on_pull_result = on_pull_result
        self.timer: Timer = timer or SYSTEM_TIMER
        self.metrics = metrics or NullMetrics()
        self.backoff = backoff or Backoff(initial_s=0.5, factor=2.0, cap_s=30.0)
        self.debounce_s = debounce_s
        self.overlap_s = overlap_s
        self.series_window = series_window  # None: time-series keys keep everything
        self.gate = PriorityGate(max_concurrent)
        self._loops: dict[QueryKey, PullLoop] = {}
        self._tasks: dict[QueryKey, asyncio.Task[None]] = {}
        # Every loop task, including those of released keys that are cancelled but maybe not
        # finished yet: `aclose` cancels and awaits them all.
        self._owner = TaskOwner("query cache", logger=log, timer=self.timer)
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
            self._tasks[key] = self._owner.spawn(loop.run(), name=f"pull {key.label()}")
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
            self._tasks.pop(key).cancel()  # its owner awaits it on close
            # No panel shows this query any more: its data leaves memory too, unless another
            # open query holds it (a reopened query pulls it afresh).
            self.forget(loop.state.refs)

    def drop(self, refs: Iterable[str]) -> tuple[str, ...]:
        """`refs` were deleted on the server: out of the store and of every open query."""
        gone = set(refs)
        for loop in self._loops.values():
            loop.state.refs -= gone
        return self.store.remove(gone)

    def forget(self, refs: Iterable[str]) -> tuple[str, ...]:
        """Drop `refs` from the store, except those another open query still holds."""
        held = [loop.state.refs for loop in self._loops.values()]
        return self.store.remove([r for r in refs if not any(r in h for h in held)])

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
        """Mark every open key that `poke` touches dirty, for the searches of the key that a
        change to the poked resource's type can change; returns how many keys."""
        n = 0
        for key, loop in self._loops.items():
            if not key.touched_by(poke):
                continue
            touched = [i for i, s in enumerate(key.searches())
                       if s.touched_by(poke.resource_type)]
            gone = poke.ref if getattr(poke, "type", None) == RESOURCE_DELETED else None
            loop.request(urgent=urgent, searches=touched or None, gone=gone)
            n += 1
        return n

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

    def series_cutoff(self, key: QueryKey) -> datetime | None:
        """Where the window of a time-series key starts now (None: not windowed)."""
        if getattr(key, "series_param", None) is None or self.series_window is None:
            return None
        return datetime.fromtimestamp(self.timer.wall(), UTC) - self.series_window

    def searches(self, key: QueryKey, cutoff: datetime | None = None) -> tuple[Search, ...]:
        """`key`'s searches as its pull loop sends them (paging and cursor aside): a time
        series's searches carry the start of its window (`cutoff`, or the one of now)."""
        param: str | None = getattr(key, "series_param", None)
        cutoff = cutoff or self.series_cutoff(key)
        if param is None or cutoff is None:
            return key.searches()
        window = (param, f"ge{_instant(cutoff)}")
        return tuple(replace(s, params=(*s.params, window)) for s in key.searches())

    def holds(self, ref: str, version_id: str) -> bool:
        """True when the store already has exactly this version (no need to validate it)."""
        return self.store.version(ref) == version_id

    def report(self, error: FhirError | None) -> None:
        if self._on_pull_result is not None:
            self._on_pull_result(error)

    def publish_state(self, loop: PullLoop) -> None:
        """Announce `loop`'s state if its status or message changed since the last time."""
        if loop.state_changed() and self._publish is not None:
            st = loop.state
            self._publish(
                QueryStateChanged(key=loop.key.label(), state=st.status, error=st.user_message)
            )

    async def aclose(self) -> None:
        self.closed = True
        self._loops.clear()
        self._tasks.clear()
        await self._owner.aclose()
