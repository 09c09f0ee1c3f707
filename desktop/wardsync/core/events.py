"""The typed events carried by the in-process `EventBus`.

Events hold references, states and reason codes only, never clinical content, so logging an
event (or its type) can never leak patient data. An event is urgent when its class says so
or, for events whose urgency depends on content, when its `urgent` attribute is true; the
bus delivers urgent events at once instead of at the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from wardsync.core.connection_status import ConnectionStatus
from wardsync.core.pokes import Poke


class Event:
    """Base of all bus events. Subclasses override `urgent` (class or instance level)."""

    __slots__ = ()

    @property
    def urgent(self) -> bool:
        """Deliver at once rather than at the next batch (a field or property may override)."""
        return False


def is_urgent(event: object) -> bool:
    """True if `event` asks for immediate delivery."""
    return bool(getattr(event, "urgent", False))


@dataclass(frozen=True, slots=True)
class ResourcesChanged(Event):
    """These resources ("Observation/123") changed, appeared or were removed from the store."""

    refs: tuple[str, ...]
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionStatusChanged(Event):
    """The shared connection's displayed status changed."""

    status: ConnectionStatus


@dataclass(frozen=True, slots=True)
class PokeAccepted(Event):
    """A valid, non-duplicate poke arrived; urgent when the poke is."""

    poke: Poke

    @property
    def urgent(self) -> bool:
        return self.poke.is_urgent


@dataclass(frozen=True, slots=True)
class PokeRejectedEvent(Event):
    """A poke failed validation; `reason` is the `PokeRejected` reason code."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueryStateChanged(Event):
    """A query key's pull state changed (e.g. "loading", "ready", "error").

    `key` is the query's label; `error` is a short message without clinical content.
    """

    key: str
    state: str
    error: str | None = None
