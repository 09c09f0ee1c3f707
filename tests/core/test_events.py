"""Events: frozen, hashable, urgent only when they say so."""

from __future__ import annotations

import dataclasses

import pytest

from wardsync.core.connection_status import initial_status
from wardsync.core.events import (
    ConnectionStatusChanged,
    PokeAccepted,
    PokeRejectedEvent,
    QueryStateChanged,
    ResourcesChanged,
    is_urgent,
)
from wardsync.core.pokes import Poke


def poke(ptype: str, priority: str = "routine") -> Poke:
    return Poke(ptype, "DiagnosticReport", "dr-1", "1", "p-1", 3, priority)


def test_urgency_by_class_and_by_instance() -> None:
    assert not is_urgent(ResourcesChanged(("Observation/1",)))
    assert is_urgent(ResourcesChanged(("Observation/1",), urgent=True))
    assert is_urgent(PokeAccepted(poke("CRITICAL_LAB_RESULT", "urgent")))
    assert not is_urgent(PokeAccepted(poke("LAB_RESULT_READY")))
    assert not is_urgent(PokeRejectedEvent("bad_id"))
    assert not is_urgent(ConnectionStatusChanged(initial_status(0.0)))
    assert not is_urgent(QueryStateChanged("labs Patient/p-1", "error", "timeout"))
    assert not is_urgent(object())


def test_events_are_frozen_and_hashable() -> None:
    event = ResourcesChanged(("Observation/1",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.refs = ()  # type: ignore[misc]
    assert len({event, ResourcesChanged(("Observation/1",))}) == 1
