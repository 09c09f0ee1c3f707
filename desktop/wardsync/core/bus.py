"""The in-process event bus: typed events, delivered in batches, urgent ones at once.

`publish` queues an event and asks the scheduler for one flush per batch: the Qt app passes
`loop.call_soon`, so a burst of pokes or store changes reaches each panel as a single call
on the next event-loop tick (one repaint, not hundreds). With no scheduler events are
delivered immediately, which is what headless code and most tests want. Urgent events (a
critical lab result) never wait for the tick: the queue is flushed with them right away, so
order is kept.

Each subscriber gets one call per flush with the list of its events in publish order. A
handler that raises is logged and counted, and never stops the other handlers or later
flushes. Subscribing or unsubscribing from inside a handler is safe: a new subscriber starts
with the next flush; a closed one receives nothing more, even later in the current flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from wardsync.core.events import Event, is_urgent

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], None]
Scheduler = Callable[[Callable[[], None]], Any]


class Subscription:
    """A handle on one subscription; `close()` (or leaving a `with` block) ends it."""

    __slots__ = ("_bus", "active", "event_types", "handler")

    def __init__(self, bus: EventBus, event_types: tuple[type, ...], handler: Handler) -> None:
        self._bus = bus
        self.event_types = event_types
        self.handler = handler
        self.active = True

    def close(self) -> None:
        """Stop delivery to this handler (idempotent)."""
        if self.active:
            self.active = False
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Delivers published events to the subscribers of their types (or base types)."""

    def __init__(self, schedule: Scheduler | None = None) -> None:
        self._schedule = schedule
        self._subs: list[Subscription] = []
        self._queue: list[Event] = []
        self._flush_scheduled = False
        self._flushing = False
        self._drain_again = False
        self.handler_errors = 0  # how many handler calls raised (for the diagnostics window)
        self.flushes = 0  # how many batches were delivered

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered."""
        return len(self._queue)

    def subscribe(self, event_types: type | Iterable[type], handler: Handler) -> Subscription:
        """Call `handler(events)` once per flush with the published events of `event_types`."""
        types = (event_types,) if isinstance(event_types, type) else tuple(event_types)
        if not types or not all(isinstance(t, type) for t in types):
            raise TypeError("event_types must be one event class or a non-empty iterable of them")
        sub = Subscription(self, types, handler)
        self._subs.append(sub)
        return sub

    def publish(self, event: Event) -> None:
        """Queue `event` for delivery: next flush, or immediately if urgent / unscheduled."""
        self._queue.append(event)
        immediate = self._schedule is None or is_urgent(event)
        if self._flushing:
            # A handler published: the running flush delivers it after the current batch
            # (immediate ones), or the next tick does, so a chatty handler cannot starve Qt.
            if immediate:
                self._drain_again = True
            else:
                self._request_flush()
            return
        if immediate:
            self.flush()
        else:
            self._request_flush()

    def flush(self) -> None:
        """Deliver everything queued now (also used on shutdown and by tests)."""
        if self._flushing:
            self._drain_again = True
            return
        self._flushing = True
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self._drain_again = False
                self._deliver(batch)
                if not self._drain_again:
                    break
        finally:
            self._flushing = False
            if self._queue and self._schedule is not None:
                self._request_flush()

    def _request_flush(self) -> None:
        if not self._flush_scheduled:
            assert self._schedule is not None
            self._flush_scheduled = True
            try:
                self._schedule(self._on_scheduled_flush)
            except BaseException:
                self._flush_scheduled = False  # so a later publish can try again
                raise

    def _on_scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def _deliver(self, batch: Sequence[Event]) -> None:
        self.flushes += 1
        for sub in list(self._subs):  # a snapshot: handlers may (un)subscribe
            if not sub.active:
                continue
            events = [e for e in batch if isinstance(e, sub.event_types)]
            if not events:
                continue
            try:
                sub.handler(events)
            except Exception:
                # A broken panel must not break the others; log type names only, since an
                # event's fields are references and the handler's state is unknown.
                self.handler_errors += 1
                log.exception(
                    "event handler %s failed on %d event(s) of type %s",
                    getattr(sub.handler, "__qualname__", type(sub.handler).__name__),
                    len(events),
                    ",".join(sorted({type(e).__name__ for e in events})),
                )

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
